//! Shared by the integration tests: a mock IdP and a real Envoy running the built
//! `tokengate.wasm` (crate `testbed`), on free loopback ports, stopped on drop.

#![allow(dead_code)]

use std::time::Duration;

use mock_idp::{Client, Fault, MockIdp};
use serde_json::{Value, json};
use testbed::{Envoy, EnvoyOptions, Response};

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

/// The plugin configuration the tests start from; `patch` replaces top-level fields.
pub fn plugin_config(patch: Value) -> Value {
    let mut config = json!({
        "token_paths": ["/oauth/token"],
        "upstream": {"cluster": "idp", "authority": "tenant.example.com", "timeout": "2s"},
        "cache": {"max_entries": 1000, "min_remaining_ttl": "1s"}
    });
    if let (Value::Object(c), Value::Object(p)) = (&mut config, patch) {
        c.extend(p);
    }
    config
}

pub struct Stack {
    pub idp: MockIdp,
    pub envoy: Envoy,
}

impl Stack {
    /// Mock IdP with clients c1/s1 and c2/s2 (tokens for `expires_in` seconds), and Envoy
    /// with tokengate configured by `config`.
    pub fn start(config: Value, expires_in: u64) -> Stack {
        Stack::start_with(config, vec![client("c1", "s1"), client("c2", "s2")], expires_in, "info")
    }

    /// A mock IdP with these clients, and Envoy at this log level.
    pub fn start_with(config: Value, clients: Vec<Client>, expires_in: u64, log_level: &str) -> Stack {
        let idp = MockIdp::start(mock_idp::Config { clients, expires_in }).expect("mock IdP starts");
        let mut options = EnvoyOptions::new(config.to_string(), idp.port());
        options.log_level = log_level.to_owned();
        let envoy = match Envoy::start(&options) {
            Ok(envoy) => envoy,
            Err(e) => panic!("Envoy did not start (run `cargo xtask build` first): {e}"),
        };
        Stack { idp, envoy }
    }

    pub fn port(&self) -> u16 {
        self.envoy.listen_port()
    }

    pub fn post(&self, content_type: Option<&str>, extra: &[(&str, &str)], body: &[u8]) -> Response {
        post(self.port(), "/oauth/token", content_type, extra, body)
    }

    pub fn post_form(&self, body: &str) -> Response {
        self.post(Some(FORM), &[], body.as_bytes())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.idp.set_fault(fault);
    }
}

pub fn client(id: &str, secret: &str) -> Client {
    Client { id: id.into(), secret: secret.into() }
}

pub fn start_envoy(config: &Value, idp_port: u16) -> Envoy {
    let options = EnvoyOptions::new(config.to_string(), idp_port);
    match Envoy::start(&options) {
        Ok(envoy) => envoy,
        Err(e) => panic!("Envoy did not start (run `cargo xtask build` first): {e}"),
    }
}

pub fn post(
    port: u16,
    path: &str,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    testbed::request("POST", port, path, &headers, body).expect("Envoy answers")
}

pub fn cc_form(client_id: &str, secret: &str, audience: &str) -> String {
    format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}&audience={audience}")
}

pub fn json_body(r: &Response) -> Value {
    r.json().unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.text()))
}

/// A header that must be there, as a number.
pub fn header_u64(r: &Response, name: &str) -> u64 {
    r.header(name).unwrap_or_else(|| panic!("no {name}: {:?}", r.headers)).parse().unwrap_or(u64::MAX)
}

pub fn cache_status(r: &Response) -> &str {
    r.header("x-tokengate-cache").unwrap_or("<none>")
}

pub fn access_token(r: &Response) -> String {
    json_body(r)["access_token"].as_str().unwrap_or_default().to_owned()
}

/// Asserts an OAuth error answer: status, JSON `error`, and the no-store headers.
pub fn assert_oauth_error(r: &Response, status: u16, error: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = json_body(r);
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
}

pub fn fault_delay(ms: u64) -> Fault {
    Fault { delay: Duration::from_millis(ms), ..Fault::default() }
}

/// POSTs a body in HTTP/1.1 chunks (no content-length); returns the status and body text.
pub fn post_chunked(port: u16, path: &str, content_type: &str, chunks: &[&[u8]]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write");
    for chunk in chunks {
        // The server may answer (and close) before the last chunk: ignore write errors.
        let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = stream.write_all(chunk);
        let _ = stream.write_all(b"\r\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    // A chunked answer: keep the JSON object between the first '{' and the last '}'.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => body[start..=end].to_owned(),
        _ => body,
    };
    (status, body)
}

/// An Envoy binary that runs with these environment variables: a shell script that exports
/// them and `exec`s `testbed::envoy_binary()` (same process, so stopping it stops Envoy).
/// For configurations whose Wasm VM reads `vm_config.environment_variables.host_env_keys`.
pub fn envoy_with_env(name: &str, vars: &[(&str, &str)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut script = String::from("#!/bin/sh\n");
    for (key, value) in vars {
        script.push_str(&format!("export {key}={}\n", quote(value)));
    }
    script.push_str(&format!("exec {} \"$@\"\n", quote(&testbed::envoy_binary().display().to_string())));
    let path = std::env::temp_dir().join(format!("tokengate-envoy-env-{}-{name}.sh", std::process::id()));
    std::fs::write(&path, script).expect("write the Envoy wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the Envoy wrapper");
    path
}

/// The plugin configuration (JSON) of the first Wasm filter of a listener's first filter
/// chain, and a mutable handle on its text.
pub fn wasm_plugin_config(listener: &mut serde_yaml::Value) -> (Value, &mut serde_yaml::Value) {
    let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_sequence_mut()
        .expect("http_filters");
    let filter = filters.iter_mut().find(|f| f["name"] == "envoy.filters.http.wasm").expect("a Wasm filter");
    let text = &mut filter["typed_config"]["config"]["configuration"]["value"];
    let config = serde_json::from_str(text.as_str().expect("configuration text")).expect("JSON");
    (config, text)
}

/// `envoy/auth0-custom-domain.yaml` with client certificates switched on the way its
/// listener comment says (the four steps), trusting `client_ca` for client certificates.
/// `tests/shipped.rs` checks the comment still names each step.
pub fn with_client_certificates(config: &mut serde_yaml::Value, client_ca: &std::path::Path) {
    use serde_yaml::Value as Yaml;
    let listener = &mut config["static_resources"]["listeners"][0];
    assert_eq!(listener["name"], "token_listener");
    // 1. The listener requires a certificate and checks it against the clients' CA.
    let tls = &mut listener["filter_chains"][0]["transport_socket"]["typed_config"];
    tls["require_client_certificate"] = Yaml::Bool(true);
    tls["common_tls_context"]["validation_context"] =
        serde_yaml::from_str(&format!("trusted_ca: {{ filename: {} }}", client_ca.display())).expect("YAML");
    // 2. The connection manager sets x-forwarded-client-cert with the verified certificate.
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["forward_client_cert_details"] = Yaml::from("SANITIZE_SET");
    hcm["set_current_client_cert_details"] = serde_yaml::from_str("{ cert: true }").expect("YAML");
    // 3. tokengate forwards it.
    let (mut plugin, text) = wasm_plugin_config(listener);
    plugin["upstream"]["forward_client_certificate"] = json!(true);
    *text = Yaml::from(serde_json::to_string_pretty(&plugin).expect("JSON"));
    // 4. Every other path carries it too.
    let routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"]
        .as_sequence_mut()
        .expect("routes");
    let other = routes.iter_mut().find(|r| r["match"]["prefix"] == "/").expect("the \"/\" route");
    other["request_headers_to_remove"] = serde_yaml::from_str("[auth0-forwarded-for]").expect("YAML");
    let added = other["request_headers_to_add"].as_sequence_mut().expect("request_headers_to_add");
    for (key, value) in
        [("client-certificate", "%DOWNSTREAM_PEER_CERT%"), ("client-certificate-ca-verified", "SUCCESS")]
    {
        added.push(
            serde_yaml::from_str(&format!(
                "{{ header: {{ key: {key}, value: \"{value}\" }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}"
            ))
            .expect("YAML"),
        );
    }
}
