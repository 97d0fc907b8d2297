//! The IdP side in real Envoy: errors relayed with status and body, an unreachable or slow
//! IdP answered with `503 temporarily_unavailable` within `upstream.timeout`, never a hang.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use mock_idp::Fault;
use serde_json::json;
use support::*;

#[test]
fn idp_port_closed_is_503_within_the_timeout() {
    // A port that was free a moment ago: nothing listens there.
    let closed_port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let envoy = start_envoy(&plugin_config(json!({})), closed_port);
    for _ in 0..3 {
        let started = Instant::now();
        let r =
            post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes());
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert_oauth_error(&r, 503, "temporarily_unavailable");
        assert_eq!(cache_status(&r), "miss");
    }
}

#[test]
fn slow_idp_is_503_after_the_timeout_not_a_hang() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    stack.set_fault(fault_delay(4_000));
    let started = Instant::now();
    let r = stack.post_form(&cc_form("c1", "s1", "a"));
    let elapsed = started.elapsed();
    assert_oauth_error(&r, 503, "temporarily_unavailable");
    assert!(elapsed >= Duration::from_millis(1_900) && elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn idp_that_drops_the_connection_is_503() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    stack.set_fault(Fault { refuse: true, ..Fault::default() });
    let r = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_oauth_error(&r, 503, "temporarily_unavailable");
}

#[test]
fn idp_errors_are_relayed_with_their_status_and_body_and_not_cached() {
    // negative_ttl 0s: the 403 is not remembered (the negative cache has its own test).
    let config = plugin_config(json!({"cache": {"min_remaining_ttl": "1s", "negative_ttl": "0s"}}));
    let stack = Stack::start(config, 3600);
    // The 429 last: after it the client is held back until the IdP's reset (tests/backoff.rs).
    for status in [500u16, 403, 429] {
        stack.set_fault(Fault { status: Some(status), ..Fault::default() });
        let r = stack.post_form(&cc_form("c1", "s1", "a"));
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(cache_status(&r), "miss");
        assert!(json_body(&r)["error"].is_string());
    }
    stack.set_fault(Fault::default());
    let ok = stack.post_form(&cc_form("c2", "s2", "a"));
    assert_eq!((ok.status, cache_status(&ok)), (200, "miss"));
    assert_eq!(stack.idp.token_calls(), 4);
}

#[test]
fn the_idp_gets_the_configured_path_authority_and_the_original_body() {
    let config = plugin_config(json!({
        "upstream": {"cluster": "idp", "authority": "tenant.example.com", "path": "/oauth/token", "timeout": "2s", "key_header": "x-tokengate-key"}
    }));
    let stack = Stack::start(config, 3600);
    let body = br#"{"grant_type":"client_credentials","client_id":"c1","client_secret":"s1","audience":"a"}"#;
    stack.post(Some("application/json; charset=utf-8"), &[], body);
    let seen = stack.idp.requests();
    assert_eq!(seen.len(), 1);
    let header = |name: &str| seen[0].headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/oauth/token");
    assert_eq!(header("host").as_deref(), Some("tenant.example.com"));
    assert_eq!(header("content-type").as_deref(), Some("application/json; charset=utf-8"));
    assert_eq!(seen[0].body, body);
    let key = header("x-tokengate-key").unwrap_or_default();
    assert_eq!(key.len(), 64, "hex SHA-256 cache key: {key}");
}
