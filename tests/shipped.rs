//! Everything shipped for users is checked, not just written: every Envoy configuration
//! passes `envoy --mode validate` (which also loads tokengate.wasm and its plugin
//! configuration), the docker compose file passes static checks. The Istio manifests are
//! checked in `istio.rs`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use testbed::{Vars, workspace_root};

const WASM_IN_CONTAINER: &str = "/etc/envoy/tokengate.wasm";
const TLS_IN_CONTAINER: &str = "/etc/envoy/tls";

fn read(path: &str) -> String {
    fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Validates `config` with the built `.wasm` and certificates made for the test in place of
/// the container paths.
fn validate(name: &str, config: &str) {
    let wasm = testbed::wasm_path();
    assert!(wasm.exists(), "build tokengate.wasm first (cargo xtask build)");
    let tls = testbed::tls::test_dir().unwrap();
    let config = config
        .replace(WASM_IN_CONTAINER, &wasm.display().to_string())
        .replace(TLS_IN_CONTAINER, &tls.display().to_string());
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
        tls_dir: PathBuf::from(TLS_IN_CONTAINER),
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
fn every_shipped_wasm_filter_sets_its_failure_policy() {
    let mut files = yaml_files(&workspace_root().join("envoy"));
    files.retain(|f| !f.ends_with("docker-compose.yaml"));
    assert!(files.len() >= 7);
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let filters = text.matches("envoy.extensions.filters.http.wasm.v3.Wasm").count();
        let policies = text.matches("failure_policy: FAIL_RELOAD").count();
        assert!(
            filters > 0 && policies == filters,
            "{}: {filters} Wasm filters, {policies} FAIL_RELOAD",
            file.display()
        );
    }
}

/// The plugin configurations of a config's Wasm filters, in order.
fn plugin_configs(config: &str) -> Vec<serde_json::Value> {
    let yaml: Value = serde_yaml::from_str(config).unwrap();
    let mut found = Vec::new();
    for listener in yaml["static_resources"]["listeners"].as_sequence().unwrap() {
        for filter in
            listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].as_sequence().unwrap()
        {
            if filter["name"] == "envoy.filters.http.wasm" {
                let text = filter["typed_config"]["config"]["configuration"]["value"].as_str().unwrap();
                found.push(serde_json::from_str(text).unwrap());
            }
        }
    }
    found
}

#[test]
fn the_production_configuration_holds_tokengates_filter_once_and_serves_the_report_on_loopback_only() {
    let text = read("envoy/auth0-production.yaml");
    // One copy in the file: the usage listener names the token listener's filter (a YAML
    // alias), so the two can never drift apart.
    assert_eq!(
        text.matches("google.protobuf.StringValue").count(),
        1,
        "the plugin configuration is written twice"
    );
    assert_eq!((text.matches("- &plugin").count(), text.matches("- *plugin").count()), (1, 1));
    let configs = plugin_configs(&text);
    let [token, usage] = &configs[..] else { panic!("{configs:?}") };
    assert_eq!(token, usage, "the alias did not give the usage listener the token listener's filter");
    let usage_path = token["usage_path"].as_str().expect("usage_path is set");
    // On the public listener Envoy answers the usage path itself, tokengate switched off there
    // (tokengate matches usage_path exactly, before any `?`, as Envoy's `path` match does).
    let yaml: Value = serde_yaml::from_str(&text).unwrap();
    let public = &yaml["static_resources"]["listeners"][0];
    assert_eq!(public["name"], "token_listener");
    let routes = public["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
        ["routes"]
        .as_sequence()
        .unwrap();
    let report = &routes[0];
    assert_eq!(
        report["match"]["path"].as_str(),
        Some(usage_path),
        "the first route must be the usage path's"
    );
    assert_eq!(report["direct_response"]["status"].as_u64(), Some(404));
    assert_eq!(report["typed_per_filter_config"]["envoy.filters.http.wasm"]["disabled"], Value::Bool(true));
    let listener = &yaml["static_resources"]["listeners"][1];
    assert_eq!(listener["name"], "usage_listener");
    assert_eq!(listener["address"]["socket_address"]["address"], "127.0.0.1");
}

#[test]
fn the_fleet_compose_configurations_are_the_rendered_templates() {
    for (path, rendered) in testbed::fleet_compose_configs().unwrap() {
        assert!(read(&path) == rendered, "{path} is out of date: run `cargo xtask compose-config`");
    }
}

#[test]
fn the_compose_envoy_configuration_is_the_rendered_template() {
    assert!(
        read(testbed::COMPOSE_CONFIG) == testbed::compose_config().unwrap(),
        "{} is out of date: run `cargo xtask compose-config`",
        testbed::COMPOSE_CONFIG
    );
}

/// The Dockerfile's stages: name -> (base image, its lines).
fn dockerfile_stages() -> Vec<(String, String, Vec<String>)> {
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    for line in read("Dockerfile").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(from) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = from.split_whitespace().collect();
            let name = if words.len() == 3 && words[1] == "AS" { words[2] } else { "" };
            stages.push((name.to_owned(), words[0].to_owned(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(line.to_owned());
        }
    }
    stages
}

fn stage<'a>(stages: &'a [(String, String, Vec<String>)], name: &str) -> &'a (String, String, Vec<String>) {
    stages.iter().find(|s| s.0 == name).unwrap_or_else(|| panic!("no Dockerfile stage {name}"))
}

/// A Debian image's release: `rust:1.95-slim-bookworm` and `debian:bookworm-slim` give
/// `bookworm`.
fn debian_release(image: &str) -> Option<&str> {
    ["bookworm", "trixie", "bullseye"].into_iter().find(|r| image.contains(r))
}

#[test]
fn the_dockerfile_builds_the_module_image_and_runs_binaries_on_the_release_they_were_built_on() {
    let stages = dockerfile_stages();
    // A plain `docker build .` gives the module image: the last stage, from scratch, with
    // the module where Istio's fetcher looks for it.
    let (_, base, lines) = stages.last().unwrap();
    assert_eq!(base, "scratch");
    assert_eq!(lines, &["COPY --from=module /tokengate.wasm /plugin.wasm"]);
    assert!(stage(&stages, "module").2.iter().any(|l| l.contains("cargo xtask build")));
    // The Envoy stage is the official image at the tested version, with the module.
    let envoy = stage(&stages, "envoy");
    assert_eq!(envoy.1, format!("envoyproxy/envoy:v{}", testbed::DEFAULT_ENVOY_VERSION));
    assert!(envoy.2.contains(&format!("COPY --from=module /tokengate.wasm {WASM_IN_CONTAINER}")));
    assert_eq!(stage(&stages, "envoy-fleet").1, "envoy");
    assert_eq!(stage(&stages, "envoy-demo").1, "envoy");
    assert!(
        stage(&stages, "envoy-demo").2.contains(&format!("COPY --from=demo-certs /tls {TLS_IN_CONTAINER}"))
    );
    assert!(stage(&stages, "demo-certs").2.iter().any(|l| l == "RUN sh /make-demo-certs.sh /tls"));
    assert!(
        stage(&stages, "envoy-fleet").2.contains(&format!("COPY --from=fleet-certs /tls {TLS_IN_CONTAINER}"))
    );
    // A binary runs on the Debian release it was built on (glibc).
    for (name, base, lines) in &stages {
        for line in lines {
            let Some(from) = line.strip_prefix("COPY --from=").and_then(|l| l.split_whitespace().next())
            else {
                continue;
            };
            let source = stage(&stages, from);
            if let (Some(built), Some(runs)) = (debian_release(&source.1), debian_release(base)) {
                assert_eq!(built, runs, "stage {name} ({base}) runs what {from} ({}) built", source.1);
            }
        }
    }
    let ignored = read(".dockerignore");
    for path in ["target/", ".tools/", ".git/"] {
        assert!(ignored.lines().any(|l| l.trim() == path), ".dockerignore lacks {path}");
    }
}

/// Every service has a health check, waits for its dependencies to be healthy, mounts only
/// files that are in the repository and is built from a Dockerfile stage that exists.
fn check_compose(path: &str, context_prefix: &str) -> serde_yaml::Mapping {
    let mut compose: Value = serde_yaml::from_str(&read(path)).unwrap();
    // Services share settings through YAML merge keys (<<), some nested.
    for _ in 0..3 {
        compose.apply_merge().unwrap();
    }
    let services = compose["services"].as_mapping().unwrap().clone();
    let stages = dockerfile_stages();
    let dir = Path::new(path).parent().unwrap();
    for (name, service) in &services {
        let name = name.as_str().unwrap();
        assert!(service["healthcheck"]["test"].is_sequence(), "{path}: {name} has no healthcheck");
        if let Some(depends) = service["depends_on"].as_mapping() {
            for (on, how) in depends {
                assert_eq!(how["condition"], "service_healthy", "{path}: {name} -> {on:?}");
                assert!(services[on]["healthcheck"].is_mapping(), "{path}: {on:?}");
            }
        } else {
            assert!(service["depends_on"].is_null(), "{path}: {name}: depends_on without conditions");
        }
        assert_eq!(service["build"]["context"].as_str(), Some(context_prefix), "{path}: {name}");
        assert!(service["build"]["dockerfile"].is_null(), "{path}: {name}: the root Dockerfile");
        stage(&stages, service["build"]["target"].as_str().unwrap());
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            let file = workspace_root().join(dir).join(host);
            assert!(file.is_file(), "{path}: {name} mounts {host}, which is not a file in the repository");
        }
    }
    services
}

#[test]
fn the_compose_file_needs_only_docker_and_starts_in_order() {
    let services = check_compose("docker-compose.yaml", ".");
    let envoy = &services["envoy"];
    // The official Envoy image with the module and the demo's certificates.
    assert_eq!(envoy["build"]["target"], "envoy-demo");
    let command: Vec<&str> =
        envoy["command"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    let config_in_container = command[command.iter().position(|a| *a == "-c").unwrap() + 1];
    assert_eq!(
        envoy["volumes"][0].as_str(),
        Some(format!("./{}:{config_in_container}:ro", testbed::COMPOSE_CONFIG).as_str())
    );
    // The mock IdP service is what the Envoy configuration calls.
    let idp = &services["mock-idp"];
    assert_eq!(idp["build"]["target"], "mock-idp");
    assert!(read(testbed::COMPOSE_CONFIG).contains("address: mock-idp, port_value: 9090"));
    let idp_command: Vec<&str> =
        idp["command"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(idp_command.contains(&"0.0.0.0:9090"), "{idp_command:?}");

    // The token listener, published on the host's 127.0.0.1:10000, speaks HTTPS with the
    // certificate the image holds (the Dockerfile's demo-certs stage).
    assert!(envoy["ports"].as_sequence().unwrap().iter().any(|p| p == "127.0.0.1:10000:10000"));
    let config: Value = serde_yaml::from_str(&read(testbed::COMPOSE_CONFIG)).unwrap();
    let listener = &config["static_resources"]["listeners"][0];
    assert_eq!(listener["address"]["socket_address"]["port_value"], 10000);
    let tls = &listener["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(
        tls["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
    );
    let certificate = &tls["common_tls_context"]["tls_certificates"][0];
    assert_eq!(certificate["certificate_chain"]["filename"], format!("{TLS_IN_CONTAINER}/server.crt"));
    assert_eq!(certificate["private_key"]["filename"], format!("{TLS_IN_CONTAINER}/server.key"));
}

/// `envoy/make-demo-certs.sh`, which the Dockerfile runs for docker compose, makes the
/// files the token listener names, for `localhost` and `127.0.0.1`, readable by the Envoy
/// image's unprivileged user; and Envoy serves HTTPS with them that a client trusting only
/// that `ca.crt` accepts.
#[test]
fn the_compose_demos_certificates_are_made_by_its_script_and_serve_https() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tokengate-make-demo-certs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let script = workspace_root().join("envoy/make-demo-certs.sh");
    let out = std::process::Command::new("sh").arg(&script).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let template = read("envoy/tokengate.yaml");
    for file in template.split("{{TLS_DIR}}/").skip(1).map(|rest| rest.split('"').next().unwrap()) {
        let mode =
            fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")).permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{file} is not readable by Envoy's user: {mode:o}");
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3, "ca.crt, server.crt, server.key and nothing else");
    for check in [["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"]] {
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(dir.join("ca.crt"))
            .args(check)
            .arg(dir.join("server.crt"))
            .output()
            .unwrap();
        assert!(verify.status.success(), "{check:?}: {}", String::from_utf8_lossy(&verify.stdout));
    }

    let mut options = testbed::EnvoyOptions::new(read("envoy/demo-plugin.json"), 9);
    options.listener_tls = Some(dir.clone());
    let envoy = testbed::Envoy::start(&options).unwrap();
    let usage =
        testbed::https_request(&dir.join("ca.crt"), "GET", envoy.listen_port(), "/tokengate/usage", &[], b"");
    assert_eq!(usage.map(|r| r.status), Ok(200));
    assert!(testbed::get(envoy.listen_port(), "/tokengate/usage").is_err(), "plain HTTP was answered");
    drop(envoy);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_fleet_compose_file_runs_three_edges_and_two_gateways_on_the_rendered_configs() {
    let services = check_compose("envoy/fleet/docker-compose.yaml", "../..");
    let mut roles = Vec::new();
    for (name, service) in &services {
        let name = name.as_str().unwrap();
        if name == "mock-idp" {
            continue;
        }
        assert_eq!(service["build"]["target"], "envoy-fleet", "{name}");
        let role = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        assert_eq!(
            service["volumes"][0].as_str(),
            Some(format!("./compose/{role}.yaml:/etc/envoy/envoy.yaml:ro").as_str())
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
fn the_compose_fleets_certificates_are_made_by_its_script_and_verify() {
    let dir = std::env::temp_dir().join(format!("tokengate-make-certs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let script = workspace_root().join("envoy/fleet/make-certs.sh");
    let out = std::process::Command::new("sh").arg(&script).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every certificate file the fleet's templates name exists, and nothing else of the CA.
    for role in ["edge", "gateway"] {
        let template = read(&format!("envoy/fleet/{role}.yaml"));
        for file in template.split("{{TLS_DIR}}/").skip(1).map(|rest| rest.split('"').next().unwrap()) {
            assert!(dir.join(file).is_file(), "{role}.yaml names {file}, which make-certs.sh does not make");
        }
    }
    assert!(!dir.join("ca.key").exists(), "the CA key is left next to the certificates");
    for leaf in ["edge", "gateway"] {
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.join("ca.crt"))
            .arg(dir.join(format!("{leaf}.crt")))
            .output()
            .unwrap();
        assert!(verify.status.success(), "{leaf}: {}", String::from_utf8_lossy(&verify.stdout));
    }
    let _ = fs::remove_dir_all(&dir);
}
