//! Everything shipped for users is checked, not just written: every Envoy configuration
//! passes `envoy --mode validate` (which also loads tokengate.wasm and its plugin
//! configuration), the docker compose file passes static checks. The Istio manifests are
//! checked in `istio.rs`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

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
    validate_with(name, config, &testbed::envoy_binary());
}

/// `validate` with this Envoy binary (`support::envoy_with_env`: with environment variables).
fn validate_with(name: &str, config: &str, envoy: &Path) {
    let wasm = testbed::wasm_path();
    assert!(wasm.exists(), "build tokengate.wasm first (cargo xtask build)");
    let tls = testbed::tls::test_dir().unwrap();
    let config = config
        .replace(WASM_IN_CONTAINER, &wasm.display().to_string())
        .replace(TLS_IN_CONTAINER, &tls.display().to_string());
    let file = std::env::temp_dir().join(format!("tokengate-validate-{}-{name}", std::process::id()));
    fs::write(&file, config).unwrap();
    let result = testbed::validate(&file, envoy);
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
    // Its Wasm VM reads the custom domain's cname-api-key from Envoy's environment.
    let custom_domain = read(CUSTOM_DOMAIN);
    let envoy = cname_api_key_envoy();
    validate_with("auth0-custom-domain.yaml", &custom_domain, &envoy);
    let mut with_certificates: Value = serde_yaml::from_str(&custom_domain).unwrap();
    support::with_client_certificates(&mut with_certificates, Path::new("/etc/envoy/tls/ca.crt"));
    validate_with(
        "auth0-custom-domain-mtls.yaml",
        &serde_yaml::to_string(&with_certificates).unwrap(),
        &envoy,
    );
    checked.push(root.join(CUSTOM_DOMAIN));
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

/// The production configurations: the canonical tenant domain and the custom domain.
const PRODUCTION: &str = "envoy/auth0-production.yaml";
const CUSTOM_DOMAIN: &str = "envoy/auth0-custom-domain.yaml";

/// The test value of the custom domain's key, and an Envoy that has it in its environment.
const CNAME_API_KEY: &str = "cname-api-key-for-tests";

fn cname_api_key_envoy() -> PathBuf {
    support::envoy_with_env("cname", &[("AUTH0_CNAME_API_KEY", CNAME_API_KEY)])
}

#[test]
fn the_production_configurations_hold_tokengates_filter_once_and_serve_the_report_on_loopback_only() {
    for file in [PRODUCTION, CUSTOM_DOMAIN] {
        let text = read(file);
        // One copy in the file: the usage listener names the token listener's filter (a YAML
        // alias), so the two can never drift apart.
        assert_eq!(
            text.matches("google.protobuf.StringValue").count(),
            1,
            "{file}: the plugin configuration is written twice"
        );
        assert_eq!((text.matches("- &plugin").count(), text.matches("- *plugin").count()), (1, 1), "{file}");
        let configs = plugin_configs(&text);
        let [token, usage] = &configs[..] else { panic!("{file}: {configs:?}") };
        assert_eq!(
            token, usage,
            "{file}: the alias did not give the usage listener the token listener's filter"
        );
        let usage_path = token["usage_path"].as_str().expect("usage_path is set");
        // On the public listener Envoy answers the usage path and everything under it (the
        // purge) itself, tokengate switched off there (tokengate matches usage_path and
        // `<usage_path>/purge` exactly, before any `?`; Envoy's prefix match covers both).
        let yaml: Value = serde_yaml::from_str(&text).unwrap();
        let public = &yaml["static_resources"]["listeners"][0];
        assert_eq!(public["name"], "token_listener", "{file}");
        let report = &routes(public)[0];
        assert_eq!(
            report["match"]["path_separated_prefix"].as_str(),
            Some(usage_path),
            "{file}: the first route must be the usage path's, with what is under it"
        );
        assert_eq!(report["direct_response"]["status"].as_u64(), Some(404), "{file}");
        assert_eq!(
            report["typed_per_filter_config"]["envoy.filters.http.wasm"]["disabled"],
            Value::Bool(true),
            "{file}"
        );
        let listener = &yaml["static_resources"]["listeners"][1];
        assert_eq!(listener["name"], "usage_listener", "{file}");
        assert_eq!(listener["address"]["socket_address"]["address"], "127.0.0.1", "{file}");
        // The purge reads a form body: on the loopback listener its route buffers it.
        let purge_path = format!("{usage_path}/purge");
        let purge = routes(listener).into_iter().find(|r| r["match"]["path"].as_str() == Some(&purge_path));
        let purge =
            purge.unwrap_or_else(|| panic!("{file}: no route for {purge_path} on the usage listener"));
        assert_eq!(
            purge["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"],
            Value::Bool(false),
            "{file}: the purge route does not buffer"
        );
        // What tokengate passes on through the token route reaches the IdP it calls itself,
        // with the same Host.
        let token_paths = token["token_paths"].as_array().unwrap();
        let token_routes: Vec<Value> = routes(public)
            .into_iter()
            .filter(|r| token_paths.iter().any(|p| p.as_str() == r["match"]["path"].as_str()))
            .collect();
        assert_eq!(token_routes.len(), 1, "{file}");
        let route = &token_routes[0]["route"];
        assert_eq!(route["cluster"].as_str(), token["upstream"]["cluster"].as_str(), "{file}");
        assert_eq!(route["host_rewrite_literal"].as_str(), token["upstream"]["authority"].as_str(), "{file}");
    }
}

/// The routes of a listener's first filter chain.
fn routes(listener: &Value) -> Vec<Value> {
    listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .as_sequence()
        .unwrap()
        .clone()
}

/// A listener's HTTP filters, the plugin's configuration left out.
fn chain(listener: &Value) -> Vec<Value> {
    let mut filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_sequence()
        .unwrap()
        .clone();
    for filter in &mut filters {
        if let Some(config) = filter["typed_config"]["config"].as_mapping_mut() {
            config.remove("configuration");
            if let Some(vm) = config.get_mut("vm_config").and_then(Value::as_mapping_mut) {
                vm.remove("environment_variables");
            }
        }
    }
    filters
}

#[test]
fn the_custom_domain_configuration_has_the_production_filter_chain_and_buffers_the_token_route_only() {
    let production: Value = serde_yaml::from_str(&read(PRODUCTION)).unwrap();
    let custom: Value = serde_yaml::from_str(&read(CUSTOM_DOMAIN)).unwrap();
    for n in 0..2 {
        let (a, b) =
            (&production["static_resources"]["listeners"][n], &custom["static_resources"]["listeners"][n]);
        assert_eq!(chain(a), chain(b), "listener {n}: the custom domain's filter chain is not production's");
    }
    let filters = chain(&custom["static_resources"]["listeners"][0]);
    let names: Vec<&str> = filters.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["envoy.filters.http.wasm", "envoy.filters.http.buffer", "envoy.filters.http.router"]);
    assert_eq!(filters[1]["disabled"], Value::Bool(true), "the buffer is on for every route");
    let token_paths = plugin_configs(&read(CUSTOM_DOMAIN))[0]["token_paths"].clone();
    for route in routes(&custom["static_resources"]["listeners"][0]) {
        let buffered =
            route["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] == Value::Bool(false);
        let path = route["match"]["path"].as_str().unwrap_or_default();
        let token_route = token_paths.as_array().unwrap().iter().any(|p| p == path);
        assert_eq!(buffered, token_route, "{route:?}");
    }
}

#[test]
fn the_custom_domain_configuration_calls_the_origin_as_auth0_documents_with_the_key_from_the_environment() {
    let text = read(CUSTOM_DOMAIN);
    let yaml: Value = serde_yaml::from_str(&text).unwrap();
    let plugin = &plugin_configs(&text)[0];
    let upstream = &plugin["upstream"];
    let origin = upstream["authority"].as_str().unwrap();
    assert!(origin.ends_with(".edge.tenants.us.auth0.com"), "{origin}: not an origin domain name");
    // The origin cluster: the address, SNI and certificate check all name the origin.
    let clusters = yaml["static_resources"]["clusters"].as_sequence().unwrap();
    let cluster = clusters.iter().find(|c| c["name"] == upstream["cluster"].as_str().unwrap()).unwrap();
    let endpoint = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
    assert_eq!(endpoint["socket_address"]["address"].as_str(), Some(origin));
    assert_eq!(endpoint["socket_address"]["port_value"].as_u64(), Some(443));
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"].as_str(), Some(origin));
    assert_eq!(tls["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"], "TLSv1_2");
    let san = &tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["matcher"]["exact"].as_str(), Some(origin));
    // Every route to Auth0 goes to that cluster with the origin as Host, as tokengate's own
    // calls do: what tokengate passes on and what it sends itself arrive alike.
    let listener = &yaml["static_resources"]["listeners"][0];
    let forwarding: Vec<Value> = routes(listener).into_iter().filter(|r| r["route"].is_mapping()).collect();
    assert_eq!(forwarding.len(), 2, "the token route and every other path");
    for route in &forwarding {
        assert_eq!(route["route"]["cluster"].as_str(), upstream["cluster"].as_str(), "{route:?}");
        assert_eq!(route["route"]["host_rewrite_literal"].as_str(), Some(origin), "{route:?}");
    }
    // The client's address as Envoy determined it, in the header the custom domain names.
    let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["use_remote_address"], Value::Bool(true));
    assert_eq!(upstream["client_ip_header"], "true-client-ip");
    // The key: named by env_headers, visible to the VM, and set by Envoy on every other path.
    assert_eq!(upstream["env_headers"], serde_json::json!({"cname-api-key": "AUTH0_CNAME_API_KEY"}));
    let vm = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["config"]
        ["vm_config"];
    let visible: Vec<&str> = vm["environment_variables"]["host_env_keys"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let other = forwarding.iter().find(|r| r["match"]["prefix"] == "/").unwrap();
    let added: Vec<(&str, &str)> = other["request_headers_to_add"]
        .as_sequence()
        .unwrap()
        .iter()
        .inspect(|h| assert_eq!(h["append_action"], "OVERWRITE_IF_EXISTS_OR_ADD", "{h:?}"))
        .map(|h| (h["header"]["key"].as_str().unwrap(), h["header"]["value"].as_str().unwrap()))
        .collect();
    for (header, variable) in upstream["env_headers"].as_object().unwrap() {
        let variable = variable.as_str().unwrap();
        assert!(visible.contains(&variable), "{variable} is not in host_env_keys");
        let value = format!("%ENVIRONMENT({variable})%");
        assert!(added.contains(&(header.as_str(), value.as_str())), "the \"/\" route does not set {header}");
    }
    assert!(added.contains(&("true-client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")), "{added:?}");
    let removed: Vec<&str> = other["request_headers_to_remove"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(removed, ["client-certificate", "client-certificate-ca-verified", "auth0-forwarded-for"]);
    // The listener comment names each step `support::with_client_certificates` takes.
    for step in [
        "require_client_certificate: true",
        "validation_context: { trusted_ca: { filename: /etc/envoy/tls/client-ca.crt } }",
        "forward_client_cert_details: SANITIZE_SET",
        "set_current_client_cert_details: { cert: true }",
        "\"forward_client_certificate\": true",
        "\"%DOWNSTREAM_PEER_CERT%\"",
        "client-certificate-ca-verified \"SUCCESS\"",
    ] {
        assert!(text.contains(step), "{CUSTOM_DOMAIN}: the mTLS comment no longer says {step:?}");
    }
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
