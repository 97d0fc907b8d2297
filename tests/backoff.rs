//! The IdP's back-pressure in real Envoy (`--concurrency 2`): after the IdP's `429`, no
//! request of that client reaches it until its `x-ratelimit-reset`, on any worker; cached
//! tokens are still served.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use mock_idp::{Fault, RateLimit};
use serde_json::{Value, json};
use support::*;

const USAGE: &str = "/tokengate/usage";

fn usage(stack: &Stack) -> Value {
    testbed::request("GET", stack.port(), USAGE, &[], b"").unwrap().json().unwrap()
}

fn stat(stack: &Stack, name: &str) -> u64 {
    let text =
        testbed::request("GET", stack.envoy.admin_port(), "/stats/prometheus", &[], b"").unwrap().text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn one_idp_429_holds_the_client_back_on_every_worker_until_the_reset() {
    let stack = Stack::start(plugin_config(json!({"usage_path": USAGE})), 3600);
    let cached = stack.post_form(&cc_form("c1", "s1", "cached"));
    assert_eq!((cached.status, cache_status(&cached)), (200, "miss"));
    let calls_before = stack.idp.token_calls();

    stack.idp.set_rate_limit(Some(RateLimit { limit: 30, remaining: 0, reset_in: 3 }));
    stack.set_fault(Fault { status: Some(429), ..Fault::default() });
    for n in 0..7 {
        let audience = if n % 2 == 0 { "a" } else { "b" };
        let r = stack.post_form(&cc_form("c1", "s1", audience));
        assert_eq!(r.status, 429, "request {n}: {}", r.text());
        assert_eq!(json_body(&r)["error"], "too_many_requests");
        let left: u64 = r.header("retry-after").expect("retry-after").parse().unwrap();
        assert!((1..=3).contains(&left), "request {n}: retry-after {left}");
        // The cached token is served throughout.
        let hit = stack.post_form(&cc_form("c1", "s1", "cached"));
        assert_eq!((hit.status, cache_status(&hit)), (200, "hit"));
        assert_eq!(access_token(&hit), access_token(&cached));
    }
    assert_eq!(stack.idp.token_calls() - calls_before, 1, "7 requests, one IdP call");

    let report = usage(&stack);
    let c1 = report["clients"].as_array().unwrap().iter().find(|c| c["client_id"] == "c1").unwrap().clone();
    assert_eq!(c1["idp_backoff"], 6, "{c1}");
    assert_eq!(report["idp"]["ratelimit_limit"], 30);
    assert_eq!(report["idp"]["ratelimit_remaining"], 0);
    assert!(report["idp"]["ratelimit_reset"].is_u64());
    assert_eq!(stat(&stack, "tokengate_idp_backoff_started_total"), 1);
    assert_eq!(stat(&stack, "tokengate_idp_backoff_rejected_total"), 6);

    // After the reset the next request reaches the IdP and is served.
    stack.set_fault(Fault::default());
    stack.idp.set_rate_limit(None);
    std::thread::sleep(Duration::from_millis(3_200));
    let after = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((after.status, cache_status(&after)), (200, "miss"), "{}", after.text());
    assert_eq!(stack.idp.token_calls() - calls_before, 2);
}

#[test]
fn upstream_scope_holds_every_client_back() {
    let config = plugin_config(json!({
        "upstream": {"cluster": "idp", "authority": "idp.example", "timeout": "2s", "backoff_scope": "upstream"}
    }));
    let stack = Stack::start(config, 3600);
    stack.idp.set_rate_limit(Some(RateLimit { limit: 30, remaining: 0, reset_in: 2 }));
    stack.set_fault(Fault { status: Some(429), ..Fault::default() });
    assert_eq!(stack.post_form(&cc_form("c1", "s1", "a")).status, 429);
    let other = stack.post_form(&cc_form("c2", "s2", "a"));
    assert_eq!(other.status, 429);
    assert_eq!(other.header("x-tokengate-decision"), Some("idp_backoff"));
    assert_eq!(stack.idp.token_calls(), 1);
}
