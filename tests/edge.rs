//! Auth0's customer edge, in real Envoy (docs/deployment.md): requests tokengate does not
//! answer go on through the route untouched; every IdP call carries the client's address
//! Envoy determined and the headers of `upstream.env_headers`, and never a client's copy
//! of a header tokengate owns. DPoP through tokengate against a real OpenID provider that
//! checks proofs is in `tests/oidc.rs`; client certificates in `tests/tls.rs`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use mock_idp::{MockIdp, Recorded};
use serde_json::{Value, json};
use support::*;
use testbed::{Envoy, EnvoyOptions, workspace_root};

const ASSERTION: &str = "grant_type=client_credentials&client_id=c1&audience=a\
                         &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
                         &client_assertion=eyJhbGciOiJSUzI1NiJ9.e30.sig";
const KEY: &str = "cname-key-0123456789";

/// Every value of header `name` in a request the IdP received.
fn values<'a>(request: &'a Recorded, name: &str) -> Vec<&'a str> {
    request.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

/// A form POST to Envoy's plain listener with curl, from loopback address `from` (so the
/// client's address differs from the one Envoy and the IdP use).
fn post_from(port: u16, from: &str, form: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "20", "--interface", from, "-X", "POST"]);
    cmd.args(["-H", &format!("content-type: {FORM}"), "--data-raw", form]);
    for header in headers {
        cmd.args(["-H", header]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}/oauth/token")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

/// `envoy/tokengate.yaml` with `edit` applied, written where Envoy reads it.
fn template_with(name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("envoy/tokengate.yaml")).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit applies");
    let path = std::env::temp_dir().join(format!("tokengate-edge-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, edited).unwrap();
    path
}

/// The Wasm VM gets `variables` (vm_config.environment_variables.key_values).
fn with_vm_env(text: String, variables: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = variables.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    text.replace(
        "                  vm_id: tokengate\n",
        &format!(
            "                  vm_id: tokengate\n                  environment_variables: {{ key_values: {{ {} }} }}\n",
            pairs.join(", ")
        ),
    )
}

/// The connection manager's `use_remote_address` / `xff_num_trusted_hops`.
fn with_trusted_hops(text: String, hops: u32) -> String {
    text.replace(
        "          use_remote_address: true\n",
        &format!("          use_remote_address: true\n          xff_num_trusted_hops: {hops}\n"),
    )
}

fn start(config: Value, idp: &MockIdp, template: Option<std::path::PathBuf>) -> Envoy {
    let mut options = EnvoyOptions::new(config.to_string(), idp.port());
    if let Some(template) = template {
        options.template = template;
    }
    Envoy::start(&options).unwrap_or_else(|e| panic!("Envoy did not start: {e}"))
}

fn idp() -> MockIdp {
    MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 }).unwrap()
}

#[test]
fn a_forwarded_request_reaches_the_idp_with_every_header_the_client_sent() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let sent = [
        ("user-agent", "client-library/1.2"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("x-custom", "kept"),
        ("dpop", "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig"),
    ];
    let r = stack.post(Some(FORM), &sent, ASSERTION.as_bytes());
    assert_eq!((r.status, cache_status(&r)), (200, "bypass"), "{}", r.text());
    let requests = stack.idp.requests();
    assert_eq!(requests.len(), 1);
    let at_idp = &requests[0];
    for (name, value) in sent {
        assert_eq!(values(at_idp, name), [value], "{name}: {:?}", at_idp.headers);
    }
    // The route's `:authority` handling (none here): the client's, not `upstream.authority`.
    assert_eq!(values(at_idp, "host"), [format!("127.0.0.1:{}", stack.port()).as_str()]);
    assert_eq!(at_idp.path, "/oauth/token");
    assert_eq!(at_idp.body, ASSERTION.as_bytes(), "the body as sent");
    // Envoy's router added what it adds to any request it forwards.
    assert_eq!(values(at_idp, "x-forwarded-proto"), ["http"]);
    // The IdP's answer reaches the client with tokengate's headers.
    assert_eq!(r.header("x-tokengate-decision"), Some("bypass"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(json_body(&r)["access_token"].is_string());
}

#[test]
fn every_idp_call_carries_the_clients_address_and_never_the_clients_own_value() {
    let idp = idp();
    let envoy = start(plugin_config(json!({})), &idp, None);
    let forged = ["auth0-forwarded-for: 6.6.6.6", "x-forwarded-for: 6.6.6.6"];
    let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", &cc_form("c1", "s1", "a"), &forged);
    assert_eq!(status, 200, "{text}");
    let (status, text) = post_from(envoy.listen_port(), "127.0.0.6", ASSERTION, &forged);
    assert_eq!(status, 200, "{text}");
    let requests = idp.requests();
    assert_eq!(requests.len(), 2, "a keyed call, then a forwarded request");
    // The keyed call carries the address of the request that caused it, the forwarded one
    // its own; no port.
    assert_eq!(values(&requests[0], "auth0-forwarded-for"), ["127.0.0.5"]);
    assert_eq!(values(&requests[0], "x-forwarded-for"), ["127.0.0.5"]);
    assert_eq!(values(&requests[1], "auth0-forwarded-for"), ["127.0.0.6"]);
    // The forwarded request's X-Forwarded-For is Envoy's (use_remote_address: it appends
    // the peer), not tokengate's.
    assert_eq!(values(&requests[1], "x-forwarded-for"), ["6.6.6.6,127.0.0.6"]);
}

#[test]
fn the_address_honours_the_connection_managers_trusted_hops() {
    let idp = idp();
    let template = template_with("hops", |t| with_trusted_hops(t, 1));
    let envoy = start(plugin_config(json!({})), &idp, Some(template));
    // One trusted proxy in front: the client is the last address it appended.
    let via_proxy = ["x-forwarded-for: 203.0.113.9", "auth0-forwarded-for: 6.6.6.6"];
    let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", &cc_form("c1", "s1", "a"), &via_proxy);
    assert_eq!(status, 200, "{text}");
    let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", ASSERTION, &via_proxy);
    assert_eq!(status, 200, "{text}");
    for request in idp.requests() {
        assert_eq!(values(&request, "auth0-forwarded-for"), ["203.0.113.9"], "{:?}", request.headers);
    }
}

#[test]
fn another_header_or_none_and_a_clients_copy_still_never_passes() {
    let idp = idp();
    let forged = ["auth0-forwarded-for: 6.6.6.6", "true-client-ip: 6.6.6.6"];
    let config = plugin_config(json!({"upstream": {
        "cluster": "idp", "authority": "tenant.example.com", "client_ip_header": "true-client-ip"}}));
    let envoy = start(config, &idp, None);
    for form in [cc_form("c1", "s1", "a"), ASSERTION.to_owned()] {
        let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", &form, &forged);
        assert_eq!(status, 200, "{text}");
    }
    drop(envoy);
    let config = plugin_config(json!({"upstream": {
        "cluster": "idp", "authority": "tenant.example.com", "client_ip_header": null}}));
    let envoy = start(config, &idp, None);
    for form in [cc_form("c1", "s1", "b"), ASSERTION.to_owned()] {
        let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", &form, &forged);
        assert_eq!(status, 200, "{text}");
    }
    let requests = idp.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests[..2] {
        assert_eq!(values(request, "true-client-ip"), ["127.0.0.5"], "{:?}", request.headers);
        assert!(values(request, "auth0-forwarded-for").is_empty(), "{:?}", request.headers);
    }
    for request in &requests[2..] {
        assert!(values(request, "auth0-forwarded-for").is_empty(), "{:?}", request.headers);
    }
    // Then `true-client-ip` is not tokengate's: its own call has none, and a forwarded
    // request keeps what the route gives it.
    assert!(values(&requests[2], "true-client-ip").is_empty());
    assert_eq!(values(&requests[3], "true-client-ip"), ["6.6.6.6"]);
}

#[test]
fn env_headers_reach_the_idp_on_every_call_and_nowhere_else() {
    let idp = idp();
    let template = template_with("env", |t| with_vm_env(t, &[("AUTH0_CNAME_API_KEY", KEY)]));
    let config = plugin_config(json!({
        "upstream": {"cluster": "idp", "authority": "tenant.example.com",
                     "env_headers": {"cname-api-key": "AUTH0_CNAME_API_KEY"}},
        "usage_path": "/tokengate/usage"
    }));
    let mut options = EnvoyOptions::new(config.to_string(), idp.port());
    options.template = template;
    let envoy = Envoy::start(&options).unwrap_or_else(|e| panic!("Envoy did not start: {e}"));
    let forged = ["cname-api-key: chosen-by-the-client"];
    let miss =
        post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes());
    assert_eq!(cache_status(&miss), "miss");
    let port = envoy.listen_port();
    let (status, text) = post_from(port, "127.0.0.1", &cc_form("c1", "s1", "b"), &forged);
    assert_eq!(status, 200, "{text}");
    let (status, text) = post_from(port, "127.0.0.1", ASSERTION, &forged);
    assert_eq!(status, 200, "{text}");
    let requests = idp.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(values(request, "cname-api-key"), [KEY], "{:?}", request.headers);
    }
    // Never in a log line, a stat or the usage report. (Envoy's own debug log prints every
    // header it forwards, as it does a client's Basic credentials: keep it off in production.)
    let usage = testbed::get(port, "/tokengate/usage").unwrap();
    assert_eq!(usage.status, 200);
    assert!(!usage.text().contains(KEY));
    assert!(!envoy.stats().unwrap().contains(KEY));
    assert!(!envoy.log().contains(KEY), "the key is in Envoy's log");
}

#[test]
fn a_missing_or_empty_variable_refuses_the_configuration_without_its_value() {
    let config = plugin_config(json!({"upstream": {"cluster": "idp", "authority": "a",
        "env_headers": {"cname-api-key": "AUTH0_CNAME_API_KEY"}}}));
    for (name, variables) in [("missing", vec![("OTHER", "x")]), ("empty", vec![("AUTH0_CNAME_API_KEY", "")])]
    {
        let mut options = EnvoyOptions::new(config.to_string(), 9);
        options.template = template_with(name, |t| with_vm_env(t, &variables));
        let log = match Envoy::start(&options) {
            Ok(envoy) => panic!("{name}: Envoy started:\n{}", envoy.log()),
            Err(log) => log,
        };
        assert!(
            log.contains(
                "configuration rejected: upstream.env_headers.cname-api-key: environment variable \
                 AUTH0_CNAME_API_KEY is missing or empty"
            ),
            "{name}: {log}"
        );
    }
}

#[test]
fn the_key_header_is_tokengates_own_on_every_call() {
    let idp = idp();
    let config = plugin_config(json!({"upstream": {
        "cluster": "idp", "authority": "tenant.example.com", "key_header": "x-tokengate-key"}}));
    let envoy = start(config, &idp, None);
    let forged = ["x-tokengate-key: chosen-by-the-client"];
    let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", &cc_form("c1", "s1", "a"), &forged);
    assert_eq!(status, 200, "{text}");
    let (status, text) = post_from(envoy.listen_port(), "127.0.0.5", ASSERTION, &forged);
    assert_eq!(status, 200, "{text}");
    let requests = idp.requests();
    assert_eq!(requests.len(), 2);
    // tokengate's call carries the cache key (64 hex digits); the request it passed on none.
    let key = values(&requests[0], "x-tokengate-key");
    assert!(key.len() == 1 && key[0].len() == 64 && key[0].bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
    assert!(values(&requests[1], "x-tokengate-key").is_empty(), "{:?}", requests[1].headers);
}

#[test]
fn a_request_passed_on_to_an_unreachable_idp_gets_a_503_in_the_oauth_shape() {
    // Nothing listens on the IdP's port: Envoy's router answers for it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let envoy = start_envoy(&plugin_config(json!({})), closed);
    let r = post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], ASSERTION.as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    assert_oauth_error(&r, 503, "temporarily_unavailable");
    assert_eq!(r.header("x-tokengate-decision"), Some("bypass"));
    assert_eq!(envoy.stat("wasmcustom.tokengate_idp_errors_total").unwrap(), 1);
}

#[test]
fn an_idp_429_to_a_request_passed_on_starts_the_back_off() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    stack.set_fault(mock_idp::Fault { status: Some(429), ..mock_idp::Fault::default() });
    let first = stack.post_form(ASSERTION);
    assert_eq!(first.status, 429, "{}", first.text());
    assert!(first.header("retry-after").is_some());
    // Within the back-off the next one is answered here, the IdP not asked.
    stack.set_fault(mock_idp::Fault::default());
    let second = stack.post_form(ASSERTION);
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.header("x-tokengate-decision"), Some("idp_backoff"));
    assert_eq!(stack.idp.requests().len(), 1);
}

#[test]
fn a_header_value_that_is_not_utf8_is_read_not_a_crash() {
    use std::os::unix::ffi::OsStrExt;
    let stack = Stack::start(plugin_config(json!({})), 3600);
    for path in ["/oauth/token", "/other"] {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-X", "POST"]);
        cmd.args(["-H", &format!("content-type: {FORM}"), "--data-raw", &cc_form("c1", "s1", "a"), "-H"]);
        cmd.arg(std::ffi::OsStr::from_bytes(b"x-odd: caf\xe9\xff"));
        let out = cmd.arg(format!("http://127.0.0.1:{}{path}", stack.port())).output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        // The token request is answered; another path reaches the IdP (whatever it says).
        let expected_ok =
            if path == "/oauth/token" { status == "200" } else { !status.starts_with(['0', '5']) };
        assert!(expected_ok, "{path}: {status}");
    }
    assert!(!stack.envoy.log().contains("panicked"), "{}", stack.envoy.log());
}
