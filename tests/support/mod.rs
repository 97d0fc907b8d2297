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
