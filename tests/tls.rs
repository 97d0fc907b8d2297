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
    curl_with(url, resolve, client_cert, form, &[])
}

/// `curl` with these request headers (`name: value`) too.
fn curl_with(
    url: &str,
    resolve: Option<&str>,
    client_cert: Option<&str>,
    form: Option<&str>,
    headers: &[&str],
) -> Answer {
    let tls = testbed::tls::test_dir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "30", "--cacert"]).arg(tls.join("ca.crt"));
    for header in headers {
        cmd.args(["-H", header]);
    }
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

/// A production configuration (`file`, under `envoy/`) as shipped but for what only a test
/// can change: free loopback ports, the built module, the test certificates, and the mock
/// IdP (plain HTTP) in place of Auth0 (the cluster `idp_cluster`); then `edit`.
fn loopback_config(
    file: &str,
    idp_cluster: &str,
    idp_port: u16,
    admin_port: u16,
    dir: &Path,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("envoy").join(file)).unwrap();
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
    assert_eq!(auth0["name"], idp_cluster);
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
    edit(&mut config);
    let path = dir.join(file);
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// envoy/auth0-production.yaml on loopback (`loopback_config`).
fn production_config(idp_port: u16, admin_port: u16, dir: &Path) -> PathBuf {
    loopback_config("auth0-production.yaml", "auth0", idp_port, admin_port, dir, |_| ())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_production_listener_serves_tokens_over_tls_only() {
    let idp =
        mock_idp::MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 })
            .unwrap();
    let dir = std::env::temp_dir().join(format!("tokengate-production-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut options = EnvoyOptions::new(String::new(), idp.port());
    options.template = production_config(idp.port(), free_port(), &dir);
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

/// The custom domain's key in the tests' Envoy environment (`AUTH0_CNAME_API_KEY`).
const CNAME_API_KEY: &str = "cname-api-key-for-tests";

/// What a client sends in the headers tokengate and the route own: none of it may reach
/// Auth0.
const FORGED: [&str; 4] = [
    "cname-api-key: forged-key",
    "true-client-ip: 203.0.113.7",
    "client-certificate: forged-certificate",
    "client-certificate-ca-verified: SUCCESS",
];

/// envoy/auth0-custom-domain.yaml on loopback (`loopback_config`), `edit`ed, started with
/// the key in Envoy's environment; and the origin domain name it calls.
fn start_custom_domain(
    idp: &mock_idp::MockIdp,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> (Envoy, String) {
    std::fs::create_dir_all(dir).unwrap();
    let mut options = EnvoyOptions::new(String::new(), idp.port());
    options.template =
        loopback_config("auth0-custom-domain.yaml", "auth0_origin", idp.port(), free_port(), dir, edit);
    options.envoy_binary = envoy_with_env(name, &[("AUTH0_CNAME_API_KEY", CNAME_API_KEY)]);
    let mut config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&options.template).unwrap()).unwrap();
    let (plugin, _) = wasm_plugin_config(&mut config["static_resources"]["listeners"][0]);
    let origin = plugin["upstream"]["authority"].as_str().unwrap().to_owned();
    let envoy =
        Envoy::start(&options).unwrap_or_else(|e| panic!("the custom-domain config did not start: {e}"));
    (envoy, origin)
}

/// The values of header `name` in a request the mock IdP recorded.
fn values<'a>(request: &'a mock_idp::Recorded, name: &str) -> Vec<&'a str> {
    request.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

/// `%XX` sequences decoded (a URL-encoded PEM, as Auth0 takes a client certificate).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Needs `upstream.client_ip_header` and `upstream.env_headers` in tokengate.
#[test]
fn the_custom_domain_proxy_sends_auth0_the_key_the_client_address_and_the_origin_host_on_every_path() {
    let idp =
        mock_idp::MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 })
            .unwrap();
    let dir = std::env::temp_dir().join(format!("tokengate-custom-domain-{}", std::process::id()));
    let (envoy, origin) = start_custom_domain(&idp, &dir, "custom-domain", |_| ());
    let base = format!("https://127.0.0.1:{}", envoy.listen_port());
    let url = format!("{base}/oauth/token");
    let form = cc_form("c1", "s1", "https://api");

    // tokengate's own call, then a hit: one request reaches Auth0.
    let miss = curl_with(&url, None, None, Some(&form), &FORGED);
    assert_eq!((miss.status, miss.header("x-tokengate-cache")), (200, Some("miss")), "{}", miss.text);
    let hit = curl_with(&url, None, None, Some(&form), &FORGED);
    assert_eq!((hit.status, hit.header("x-tokengate-cache")), (200, Some("hit")), "{}", hit.text);
    assert_eq!(idp.token_calls(), 1);
    // A DPoP request is passed on through the route, its proof untouched.
    let dpop =
        curl_with(&url, None, None, Some(&form), &[FORGED.as_slice(), &["DPoP: proof-for-tests"]].concat());
    assert_eq!((dpop.status, dpop.header("x-tokengate-cache")), (200, Some("bypass")), "{}", dpop.text);
    assert!(dpop.text.contains("\"token_type\":\"DPoP\""), "{}", dpop.text);
    // Any other path of the custom domain: Envoy's route sets the same headers.
    let discovery = curl_with(&format!("{base}/.well-known/openid-configuration"), None, None, None, &FORGED);
    assert_eq!(discovery.status, 200, "{}", discovery.text);

    let requests = idp.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/oauth/token", "/oauth/token", "/.well-known/openid-configuration"]);
    assert_eq!(values(&requests[1], "dpop"), ["proof-for-tests"]);
    for request in &requests {
        let path = &request.path;
        assert_eq!(values(request, "host"), [origin.as_str()], "{path}: Host is not the origin domain name");
        assert_eq!(values(request, "cname-api-key"), [CNAME_API_KEY], "{path}");
        assert_eq!(values(request, "true-client-ip"), ["127.0.0.1"], "{path}");
        for header in ["client-certificate", "client-certificate-ca-verified"] {
            assert!(values(request, header).is_empty(), "{path}: a client's {header} reached Auth0");
        }
    }
    // The key is never logged.
    assert!(!envoy.log().contains(CNAME_API_KEY), "Envoy's log holds the key");
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Needs `upstream.forward_client_certificate` (and the two fields above) in tokengate.
#[test]
fn with_client_certificates_the_custom_domain_proxy_sends_auth0_the_leaf_envoy_verified() {
    let idp =
        mock_idp::MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 })
            .unwrap();
    let tls = testbed::tls::test_dir().unwrap();
    let dir = std::env::temp_dir().join(format!("tokengate-custom-domain-mtls-{}", std::process::id()));
    let (envoy, origin) = start_custom_domain(&idp, &dir, "custom-domain-mtls", |config| {
        with_client_certificates(config, &tls.join("ca.crt"));
    });
    let base = format!("https://127.0.0.1:{}", envoy.listen_port());
    let url = format!("{base}/oauth/token");
    let assertion = "grant_type=client_credentials&client_id=c1&audience=https://api&client_assertion_type=\
                     urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=a.b.c";

    // No certificate, or one from another CA: no TLS session, nothing reaches Auth0.
    assert_eq!(curl(&url, None, None, Some(assertion)).status, 0);
    assert_eq!(curl(&url, None, Some("stranger"), Some(assertion)).status, 0);
    assert_eq!(idp.requests().len(), 0);

    // A client assertion (passed on through the route), a request authenticated by its
    // certificate alone (tokengate's own call), and another path.
    let passed = curl_with(&url, None, Some("edge"), Some(assertion), &FORGED);
    assert_eq!((passed.status, passed.header("x-tokengate-cache")), (200, Some("bypass")), "{}", passed.text);
    let certificate_only = "grant_type=client_credentials&client_id=c1&audience=https://api";
    let keyed = curl_with(&url, None, Some("edge"), Some(certificate_only), &FORGED);
    assert_ne!(keyed.status, 0, "{}", keyed.text);
    let userinfo = curl_with(&format!("{base}/userinfo"), None, Some("edge"), None, &FORGED);
    assert_eq!(userinfo.status, 200, "{}", userinfo.text);

    let leaf = std::fs::read_to_string(tls.join("edge.crt")).unwrap();
    let requests = idp.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/oauth/token", "/oauth/token", "/userinfo"]);
    for request in &requests {
        let path = &request.path;
        assert_eq!(values(request, "host"), [origin.as_str()], "{path}");
        assert_eq!(values(request, "cname-api-key"), [CNAME_API_KEY], "{path}");
        let certificate = values(request, "client-certificate");
        assert_eq!(certificate.len(), 1, "{path}: {certificate:?}");
        assert!(!certificate[0].contains('\n') && !certificate[0].contains(' '), "{path}: not URL-encoded");
        assert_eq!(percent_decoded(certificate[0]).trim(), leaf.trim(), "{path}: not the client's leaf");
        assert_eq!(values(request, "client-certificate-ca-verified"), ["SUCCESS"], "{path}");
    }
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}
