//! `rate_limit_service`: Envoy's global rate-limit protocol against a real gRPC service
//! (crate `test-rls`, tonic). The service decides every request with a client id, hits
//! included, for every Envoy that asks it; while it cannot answer, the local limiter does.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use mock_idp::MockIdp;
use serde_json::{Value, json};
use support::*;
use test_rls::{Call, TestRls};
use testbed::{Envoy, EnvoyOptions};

/// Envoy's own template with one more cluster: the rate-limit service (HTTP/2, gRPC), as
/// docs/fleet.md ("Limits across Envoys: the rate-limit service") shows it.
fn template_with_service(rls_port: u16) -> std::path::PathBuf {
    let template = std::fs::read_to_string(testbed::workspace_root().join("envoy/tokengate.yaml")).unwrap();
    let cluster = format!(
        "  - name: ratelimit
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {rls_port} }}
"
    );
    let path = std::env::temp_dir().join(format!("tokengate-rls-{}-{rls_port}.yaml", std::process::id()));
    std::fs::write(&path, format!("{template}{cluster}")).unwrap();
    path
}

fn envoy(config: &Value, idp: &MockIdp, rls_port: u16) -> Envoy {
    let mut options = EnvoyOptions::new(config.to_string(), idp.port());
    options.template = template_with_service(rls_port);
    let envoy = Envoy::start(&options).unwrap_or_else(|e| panic!("Envoy did not start: {e}"));
    // Envoy runs from its own rendered copy.
    let _ = std::fs::remove_file(&options.template);
    envoy
}

fn limit_headers(r: &testbed::Response) -> (Option<&str>, Option<&str>) {
    (r.header("x-ratelimit-limit"), r.header("x-ratelimit-remaining"))
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stats()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_service_decides_for_every_envoy_hits_included() {
    let rls = TestRls::start(&[("c1", 3)]).unwrap();
    let idp = MockIdp::start(mock_idp::Config {
        clients: vec![client("c1", "s1"), client("c2", "s2")],
        expires_in: 3600,
    })
    .unwrap();
    // Locally c1 could make 100 requests a minute; the service allows 3 across both Envoys.
    let config = plugin_config(json!({
        "rate_limit": {"default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "60s"}},
        "rate_limit_service": {"cluster": "ratelimit", "domain": "tokengate", "timeout": "1s"}
    }));
    let (a, b) = (envoy(&config, &idp, rls.port()), envoy(&config, &idp, rls.port()));
    let c1 = cc_form("c1", "s1", "api");
    let send = |e: &Envoy| post(e.listen_port(), "/oauth/token", Some(FORM), &[], c1.as_bytes());

    let first = send(&a);
    assert_eq!((first.status, cache_status(&first)), (200, "miss"));
    assert_eq!(limit_headers(&first), (Some("3"), Some("2")));
    let hit = send(&a);
    assert_eq!((hit.status, cache_status(&hit)), (200, "hit"));
    assert_eq!(limit_headers(&hit), (Some("3"), Some("1")));
    let other_envoy = send(&b);
    assert_eq!(other_envoy.status, 200);
    assert_eq!(limit_headers(&other_envoy), (Some("3"), Some("0")));
    // The fourth request, on either Envoy, is over the service's limit.
    let refused = send(&b);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(json_body(&refused)["error"], "too_many_requests");
    assert_eq!(limit_headers(&refused), (Some("3"), Some("0")));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(refused.header("x-tokengate-decision"), Some("rate_limited"));
    assert_eq!(send(&a).status, 429);
    assert_eq!(idp.token_calls(), 2, "one IdP call per Envoy, none for refused requests");

    // A client the service has no limit for is served, without limit headers.
    let c2 = post(a.listen_port(), "/oauth/token", Some(FORM), &[], cc_form("c2", "s2", "api").as_bytes());
    assert_eq!((c2.status, limit_headers(&c2)), (200, (None, None)));

    let calls = rls.calls();
    assert_eq!(calls.len(), 6);
    assert!(calls[..5].iter().all(|c| *c
        == Call {
            domain: "tokengate".into(),
            entries: vec![("client_id".into(), "c1".into())],
            hits_addend: 1
        }));
    assert_eq!(stat(&a, "tokengate_rate_limit_service_errors_total"), 0);
}

#[test]
fn while_the_service_is_down_the_local_limiter_decides_and_nothing_hangs() {
    let rls = TestRls::start(&[("c1", 100)]).unwrap();
    let idp =
        MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 }).unwrap();
    let config = plugin_config(json!({
        "rate_limit": {"default": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "60s"}},
        "rate_limit_service": {"cluster": "ratelimit", "timeout": "200ms"}
    }));
    let e = envoy(&config, &idp, rls.port());
    let c1 = cc_form("c1", "s1", "api");
    let send = || post(e.listen_port(), "/oauth/token", Some(FORM), &[], c1.as_bytes());

    let up = send();
    assert_eq!((up.status, limit_headers(&up)), (200, (Some("100"), Some("99"))), "the service decides");
    rls.stop();

    // Down: refused connections, answered by the local bucket (2 a minute, not yet spent).
    let started = Instant::now();
    let statuses: Vec<(u16, Option<String>)> = (0..3)
        .map(|_| {
            let r = send();
            (r.status, r.header("x-ratelimit-limit").map(str::to_owned))
        })
        .collect();
    assert_eq!(
        statuses,
        [(200, Some("2".into())), (200, Some("2".into())), (429, Some("2".into()))],
        "the local limiter decides"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(stat(&e, "tokengate_rate_limit_service_errors_total"), 3);
    assert_eq!(idp.token_calls(), 1);
}

#[test]
fn a_request_passed_on_after_the_services_answer_reaches_the_idp() {
    let rls = TestRls::start(&[("c1", 3)]).unwrap();
    let idp =
        MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 }).unwrap();
    let config = plugin_config(json!({
        "rate_limit_service": {"cluster": "ratelimit", "domain": "tokengate", "timeout": "1s"}
    }));
    let envoy = envoy(&config, &idp, rls.port());
    // Held while the service answers, then resumed on through the route to the IdP.
    let assertion =
        "grant_type=client_credentials&client_id=c1&client_assertion_type=jwt&client_assertion=eyJ";
    let r =
        post(envoy.listen_port(), "/oauth/token", Some(FORM), &[("x-custom", "kept")], assertion.as_bytes());
    assert_eq!((r.status, cache_status(&r)), (200, "bypass"), "{}", r.text());
    assert_eq!(limit_headers(&r), (Some("3"), Some("2")));
    assert_eq!(rls.calls().len(), 1);
    let requests = idp.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].headers.iter().any(|(n, v)| n == "x-custom" && v == "kept"));
}
