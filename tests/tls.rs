//! TLS on the hops that carry client secrets, with real handshakes (curl, OpenSSL) and
//! certificates made at test time (`testbed::tls`, rcgen): the production configuration's
//! HTTPS listener serves a miss and a hit and refuses plain HTTP; a fleet gateway requires
//! a client certificate from the fleet's CA (the edges' mutual TLS; `tests/fleet.rs` runs
//! the whole fleet over it).

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use support::*;
use testbed::{Envoy, EnvoyOptions, workspace_root};

/// What curl got: the status (0 when no HTTP exchange happened: a refused handshake) and
/// the response headers and body.
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `curl` over HTTPS, trusting only the test CA, with a client certificate if given.
fn curl(url: &str, resolve: Option<&str>, client_cert: Option<&str>, form: Option<&str>) -> Answer {
    let tls = testbed::tls::test_dir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "30", "--cacert"]).arg(tls.join("ca.crt"));
    if let Some(resolve) = resolve {
        cmd.args(["--resolve", resolve]);
    }
    if let Some(stem) = client_cert {
        cmd.arg("--cert")
            .arg(tls.join(format!("{stem}.crt")))
            .arg("--key")
            .arg(tls.join(format!("{stem}.key")));
    }
    if let Some(form) = form {
        cmd.args(["-X", "POST", "-H", &format!("content-type: {FORM}"), "--data-raw", form]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer { status, text }
}

/// envoy/auth0-production.yaml as shipped but for what only a test can change: free
/// loopback ports, the built module, the test certificates, and the mock IdP (plain HTTP)
/// in place of the Auth0 tenant.
fn production_config(idp_port: u16, admin_port: u16, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("envoy/auth0-production.yaml")).unwrap();
    let text = text
        .replace("/etc/envoy/tokengate.wasm", &testbed::wasm_path().display().to_string())
        .replace("/etc/envoy/tls", &testbed::tls::test_dir().unwrap().display().to_string());
    let mut config: Value = serde_yaml::from_str(&text).unwrap();
    config["admin"]["address"]["socket_address"]["port_value"] = Value::from(admin_port);
    for listener in config["static_resources"]["listeners"].as_sequence_mut().unwrap() {
        listener["address"]["socket_address"]["address"] = Value::from("127.0.0.1");
        listener["address"]["socket_address"]["port_value"] = Value::from(0);
    }
    let auth0 = &mut config["static_resources"]["clusters"][0];
    assert_eq!(auth0["name"], "auth0");
    auth0.as_mapping_mut().unwrap().remove("transport_socket");
    let endpoint = &mut auth0["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
    endpoint["socket_address"]["address"] = Value::from("127.0.0.1");
    endpoint["socket_address"]["port_value"] = Value::from(idp_port);
    let admin = config["static_resources"]["clusters"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "admin")
        .unwrap();
    admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] =
        Value::from(admin_port);
    let path = dir.join("auth0-production.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

#[test]
fn the_production_listener_serves_tokens_over_tls_only() {
    let idp =
        mock_idp::MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 })
            .unwrap();
    let dir = std::env::temp_dir().join(format!("tokengate-production-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut options = EnvoyOptions::new(String::new(), idp.port());
    options.template = production_config(idp.port(), admin_port, &dir);
    let envoy = Envoy::start(&options).unwrap_or_else(|e| panic!("the production config did not start: {e}"));
    let url = format!("https://127.0.0.1:{}/oauth/token", envoy.listen_port());
    let form = cc_form("c1", "s1", "https://api");

    let miss = curl(&url, None, None, Some(&form));
    assert_eq!((miss.status, miss.header("x-tokengate-cache")), (200, Some("miss")), "{}", miss.text);
    let hit = curl(&url, None, None, Some(&form));
    assert_eq!((hit.status, hit.header("x-tokengate-cache")), (200, Some("hit")), "{}", hit.text);
    assert_eq!(idp.token_calls(), 1);

    // Plain HTTP to the same port gets no answer: the secret is never read in clear.
    let plain = testbed::request(
        "POST",
        envoy.listen_port(),
        "/oauth/token",
        &[("content-type", FORM)],
        form.as_bytes(),
    );
    assert!(plain.is_err(), "plain HTTP was answered: {:?}", plain.map(|r| r.status));
    assert_eq!(idp.token_calls(), 1);

    // The stats are scraped on the metrics listener; nothing else of admin is reachable there.
    let listeners = testbed::get(envoy.admin_port(), "/listeners?format=json").unwrap().json().unwrap();
    let metrics_port = listeners["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "metrics_listener")
        .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
        .unwrap() as u16;
    let stats = testbed::get(metrics_port, "/stats/prometheus").unwrap();
    assert_eq!(stats.status, 200);
    assert!(String::from_utf8_lossy(&stats.body).contains("tokengate_hits_total"));
    assert_eq!(testbed::get(metrics_port, "/quitquitquit").unwrap().status, 404);
    assert_eq!(testbed::request("POST", metrics_port, "/stats/prometheus", &[], b"").unwrap().status, 404);

    // Both listeners run one filter definition, usage_path included: the report is served on
    // the loopback usage listener, and the public listener answers its path with a 404.
    let public = curl(
        &format!("https://127.0.0.1:{}/tokengate/usage?format=json", envoy.listen_port()),
        None,
        None,
        None,
    );
    assert_eq!(public.status, 404, "{}", public.text);
    assert!(!public.text.contains("c1"), "{}", public.text);
    let usage_port = listeners["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "usage_listener")
        .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
        .unwrap() as u16;
    let report = testbed::get(usage_port, "/tokengate/usage").unwrap();
    assert_eq!(report.status, 200, "{}", report.text());
    assert_eq!(report.json().unwrap()["clients"][0]["client_id"], "c1", "{}", report.text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fleet_gateway_lets_in_only_edges_with_the_fleets_client_certificate() {
    let idp =
        mock_idp::MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 })
            .unwrap();
    let mut options = EnvoyOptions::new(testbed::fleet_plugin("gateway").unwrap(), idp.port());
    options.template = workspace_root().join("envoy/fleet/gateway.yaml");
    let gateway = Envoy::start(&options).unwrap();
    let port = gateway.listen_port();
    let name = testbed::tls::GATEWAY_NAME;
    let resolve = format!("{name}:{port}:127.0.0.1");
    let health = format!("https://{name}:{port}/healthz");

    let edge = curl(&health, Some(&resolve), Some("edge"), None);
    assert_eq!(edge.status, 200, "an edge's certificate: {}", edge.text);
    let anonymous = curl(&health, Some(&resolve), None, None);
    assert_eq!(anonymous.status, 0, "no client certificate must not get in: {}", anonymous.text);
    let stranger = curl(&health, Some(&resolve), Some("stranger"), None);
    assert_eq!(stranger.status, 0, "a certificate from another CA must not get in: {}", stranger.text);

    // And what the edges send through it: a token request over mutual TLS.
    let token = format!("https://{name}:{port}/oauth/token");
    let miss = curl(&token, Some(&resolve), Some("edge"), Some(&cc_form("c1", "s1", "https://api")));
    assert_eq!((miss.status, miss.header("x-tokengate-cache")), (200, Some("miss")), "{}", miss.text);
    let refused = curl(&token, Some(&resolve), None, Some(&cc_form("c1", "s1", "https://api")));
    assert_eq!(refused.status, 0);
    assert_eq!(idp.token_calls(), 1);
}
