//! Everything shipped for users is checked, not just written: every Envoy configuration
//! passes `envoy --mode validate` (which also loads tokengate.wasm and its plugin
//! configuration), the docker compose file and the Istio manifests pass static checks.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;
use testbed::{Vars, workspace_root};
use tokengate_core::Config;

const WASM_IN_CONTAINER: &str = "/etc/envoy/tokengate.wasm";

fn read(path: &str) -> String {
    fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Validates `config` with the built `.wasm` in place of the container path.
fn validate(name: &str, config: &str) {
    let wasm = testbed::wasm_path();
    assert!(wasm.exists(), "build tokengate.wasm first (cargo xtask build)");
    let config = config.replace(WASM_IN_CONTAINER, &wasm.display().to_string());
    let file = std::env::temp_dir().join(format!("tokengate-validate-{}-{name}", std::process::id()));
    fs::write(&file, config).unwrap();
    let result = testbed::validate(&file, &testbed::envoy_binary());
    let _ = fs::remove_file(&file);
    if let Err(log) = result {
        panic!("{name} does not validate:\n{log}");
    }
}

/// A template rendered for loopback with the container's `.wasm` path (`validate` swaps in
/// the built one).
fn rendered(template: &str, plugin_config: String) -> String {
    let vars = Vars {
        bind_address: "127.0.0.1".into(),
        idp_host: "127.0.0.1".into(),
        admin_port: 0,
        listen_port: 0,
        idp_port: 9,
        wasm_path: PathBuf::from(WASM_IN_CONTAINER),
        plugin_config,
    };
    testbed::render_config(template, &vars).unwrap()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
    found
}

#[test]
fn every_shipped_envoy_configuration_validates() {
    let root = workspace_root();
    let mut checked = Vec::new();
    validate("tokengate.yaml", &rendered(&read("envoy/tokengate.yaml"), read("envoy/demo-plugin.json")));
    checked.push(root.join("envoy/tokengate.yaml"));
    for path in [
        "envoy/compose/envoy.yaml",
        "envoy/auth0-production.yaml",
        "envoy/fleet/compose/edge.yaml",
        "envoy/fleet/compose/gateway.yaml",
    ] {
        validate(&path.replace('/', "-"), &read(path));
        checked.push(root.join(path));
    }
    let gateways = [("127.0.0.1".to_owned(), 10001), ("127.0.0.1".to_owned(), 10002)];
    for role in ["edge", "gateway"] {
        let path = format!("envoy/fleet/{role}.yaml");
        let template = testbed::with_gateways(&read(&path), &gateways);
        validate(&format!("fleet-{role}.yaml"), &rendered(&template, testbed::fleet_plugin(role).unwrap()));
        checked.push(root.join(path));
    }
    checked.push(root.join("envoy/fleet/docker-compose.yaml"));
    for shipped in yaml_files(&root.join("envoy")) {
        assert!(checked.contains(&shipped), "{} is shipped but not validated here", shipped.display());
    }
}

#[test]
fn the_fleet_compose_configurations_are_the_rendered_templates() {
    for (path, rendered) in testbed::fleet_compose_configs().unwrap() {
        assert!(read(&path) == rendered, "{path} is out of date: run `cargo xtask compose-config`");
    }
}

#[test]
fn the_fleet_compose_file_runs_three_edges_and_two_gateways_on_the_rendered_configs() {
    let mut compose: Value = serde_yaml::from_str(&read("envoy/fleet/docker-compose.yaml")).unwrap();
    // The services share their settings through YAML merge keys (<<), some nested.
    for _ in 0..3 {
        compose.apply_merge().unwrap();
    }
    let services = compose["services"].as_mapping().unwrap();
    let image = format!("envoyproxy/envoy:v{}", testbed::DEFAULT_ENVOY_VERSION);
    let mut roles = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if name == "mock-idp" {
            let dockerfile = service["build"]["dockerfile"].as_str().unwrap();
            assert_eq!(service["build"]["context"].as_str(), Some("../.."));
            assert!(workspace_root().join(dockerfile).exists());
            continue;
        }
        assert_eq!(service["image"].as_str(), Some(image.as_str()), "{name}");
        let volumes: Vec<String> = service["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let role = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        assert!(
            volumes.contains(&format!("./compose/{role}.yaml:/etc/envoy/envoy.yaml:ro")),
            "{name}: {volumes:?}"
        );
        assert!(
            volumes.contains(&format!(
                "../../target/wasm32-wasip1/release/tokengate.wasm:{WASM_IN_CONTAINER}:ro"
            )),
            "{name}: {volumes:?}"
        );
        roles.push(role.to_owned());
    }
    roles.sort();
    assert_eq!(roles, ["edge", "edge", "edge", "gateway", "gateway"]);
    // The edges' ring lists the gateway services; the gateways call the mock IdP service.
    let edge = read("envoy/fleet/compose/edge.yaml");
    assert!(
        edge.contains("address: gateway-1, port_value: 10000")
            && edge.contains("address: gateway-2, port_value: 10000")
    );
    assert!(read("envoy/fleet/compose/gateway.yaml").contains("address: mock-idp, port_value: 9090"));
}

#[test]
fn the_compose_envoy_configuration_is_the_rendered_template() {
    assert!(
        read(testbed::COMPOSE_CONFIG) == testbed::compose_config().unwrap(),
        "{} is out of date: run `cargo xtask compose-config`",
        testbed::COMPOSE_CONFIG
    );
}

#[test]
fn the_compose_file_mounts_what_exists_and_pins_the_tested_envoy() {
    let compose: Value = serde_yaml::from_str(&read("docker-compose.yaml")).unwrap();
    let envoy = &compose["services"]["envoy"];
    assert_eq!(
        envoy["image"].as_str(),
        Some(format!("envoyproxy/envoy:v{}", testbed::DEFAULT_ENVOY_VERSION).as_str())
    );
    let command: Vec<&str> =
        envoy["command"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    let config_in_container = command[command.iter().position(|a| *a == "-c").unwrap() + 1];
    let mut mounted = Vec::new();
    for volume in envoy["volumes"].as_sequence().unwrap() {
        let spec = volume.as_str().unwrap();
        let mut parts = spec.split(':');
        let (host, container) = (parts.next().unwrap(), parts.next().unwrap());
        let host = host.trim_start_matches("./");
        let build_output = host == "target/wasm32-wasip1/release/tokengate.wasm";
        assert!(
            build_output || workspace_root().join(host).exists(),
            "{host} is mounted but is neither in the repo nor a build output"
        );
        mounted.push((host.to_owned(), container.to_owned()));
    }
    assert!(
        mounted.contains(&(testbed::COMPOSE_CONFIG.to_owned(), config_in_container.to_owned())),
        "{mounted:?}"
    );
    assert!(
        mounted.iter().any(|(h, c)| h.ends_with("tokengate.wasm") && c == WASM_IN_CONTAINER),
        "{mounted:?}"
    );
    // The mock IdP service is what the Envoy configuration calls.
    let idp = &compose["services"]["mock-idp"];
    let dockerfile = idp["build"]["dockerfile"].as_str().unwrap();
    assert!(workspace_root().join(dockerfile).exists());
    assert!(read(testbed::COMPOSE_CONFIG).contains("address: mock-idp, port_value: 9090"));
    let idp_command: Vec<&str> =
        idp["command"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(idp_command.contains(&"0.0.0.0:9090"), "{idp_command:?}");
}

fn documents(path: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(path)).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_istio_manifests_fit_together_and_tokengate_accepts_the_plugin_config() {
    let docs: Vec<Value> = [
        "deploy/istio/wasmplugin.yaml",
        "deploy/istio/envoyfilter-buffer.yaml",
        "deploy/istio/auth0-egress.yaml",
        "deploy/istio/gateway-routes.yaml",
    ]
    .iter()
    .flat_map(|p| documents(p))
    .collect();
    let plugin = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugin["spec"]["phase"], "AUTHN");
    let plugin_config = serde_json::to_string(&plugin["spec"]["pluginConfig"]).unwrap();
    let config =
        Config::from_json(plugin_config.as_bytes()).unwrap_or_else(|e| panic!("pluginConfig refused: {e}"));

    let entry = of_kind(&docs, "ServiceEntry");
    let host = entry["spec"]["hosts"][0].as_str().unwrap();
    assert_eq!(config.upstream.cluster, format!("outbound|443||{host}"));
    assert_eq!(config.upstream.authority, host);
    assert_eq!(of_kind(&docs, "DestinationRule")["spec"]["host"].as_str(), Some(host));
    assert_eq!(
        of_kind(&docs, "DestinationRule")["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"],
        "SIMPLE"
    );

    let patches = of_kind(&docs, "EnvoyFilter")["spec"]["configPatches"].clone();
    let insert = patches.as_sequence().unwrap().iter().find(|p| p["applyTo"] == "HTTP_FILTER").unwrap();
    assert_eq!(insert["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    assert_eq!(insert["patch"]["value"]["name"], "envoy.filters.http.buffer");
    assert_eq!(insert["patch"]["value"]["disabled"], true);
    let route_patch = patches.as_sequence().unwrap().iter().find(|p| p["applyTo"] == "HTTP_ROUTE").unwrap();
    let route_name = route_patch["match"]["routeConfiguration"]["vhost"]["route"]["name"].as_str().unwrap();
    assert_eq!(
        route_patch["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"],
        false
    );

    // The route the buffer is switched on for is the token route.
    let routes = of_kind(&docs, "VirtualService")["spec"]["http"].clone();
    let token_route = routes.as_sequence().unwrap().iter().find(|r| r["name"] == route_name).unwrap();
    let path = token_route["match"][0]["uri"]["exact"].as_str().unwrap();
    assert!(config.token_paths.iter().any(|p| p == path), "{path} is not a token path");
}
