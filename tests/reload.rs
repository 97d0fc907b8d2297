//! A configuration change on a running Envoy, made the way config management makes it: the
//! listener file is replaced by an atomic rename and Envoy's filesystem LDS watch picks it
//! up. Limits follow the new configuration at once, and a root context that goes away with
//! a call in flight (a drain shorter than the IdP's answer) does not strand the requests
//! waiting for that call.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use mock_idp::MockIdp;
use serde_json::{Value, json};
use support::*;
use testbed::{Envoy, EnvoyOptions};

/// Envoy with its listener from a watched file, draining a replaced listener for 1 s.
fn start(config: &Value, idp: &MockIdp) -> Envoy {
    let mut options = EnvoyOptions::new(config.to_string(), idp.port());
    options.lds = true;
    options.extra_args = vec!["--drain-time-s".into(), "1".into()];
    Envoy::start(&options)
        .unwrap_or_else(|e| panic!("Envoy did not start (run `cargo xtask build` first): {e}"))
}

fn idp() -> MockIdp {
    MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 }).unwrap()
}

fn rate_limit(max_tokens: u64) -> Value {
    plugin_config(json!({"rate_limit": {"clients": {"c1": {
        "max_tokens": max_tokens, "tokens_per_fill": max_tokens, "fill_interval": "1h"}}}}))
}

#[test]
fn a_lowered_rate_limit_applies_at_once_after_a_listener_swap() {
    let idp = idp();
    let mut envoy = start(&rate_limit(30), &idp);
    let body = cc_form("c1", "s1", "a");
    for i in 0..7 {
        let r = post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 29 - i);
    }
    // 23 left of 30; the new configuration allows 5 an hour.
    envoy.swap_plugin_config(&rate_limit(5).to_string()).unwrap();
    let after: Vec<testbed::Response> =
        (0..8).map(|_| post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], body.as_bytes())).collect();
    let first = &after[0];
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(header_u64(first, "x-ratelimit-limit"), 5);
    assert_eq!(header_u64(first, "x-ratelimit-remaining"), 4, "the balance of 23 was clamped to 5");
    let allowed = after.iter().filter(|r| r.status == 200).count();
    assert_eq!(allowed, 5, "statuses: {:?}", after.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(after.iter().all(|r| header_u64(r, "x-ratelimit-remaining") <= 4));
    assert_eq!(idp.token_calls(), 1, "every other request was a hit");
}

#[test]
fn a_short_drain_releases_the_call_in_flight_and_its_waiters_retake_the_key() {
    let idp = idp();
    // The IdP answers in 8 s, well inside the 20 s timeout; the old listener drains in 1 s,
    // so its root context is deleted long before the answer, even on a busy host.
    idp.set_fault(fault_delay(8_000));
    // The new configuration differs in a field that leaves the key's flight slot where it
    // was (`cache.max_entries` would move it).
    let config = |negative_ttl: &str| {
        plugin_config(json!({
            "upstream": {"cluster": "idp", "authority": "tenant.example.com", "timeout": "20s"},
            "cache": {"max_entries": 1000, "min_remaining_ttl": "1s", "negative_ttl": negative_ttl}
        }))
    };
    let mut envoy = start(&config("10s"), &idp);
    let port = envoy.listen_port();
    let body = cc_form("c1", "s1", "a");
    let first = {
        let body = body.clone();
        std::thread::spawn(move || {
            testbed::request("POST", port, "/oauth/token", &[("content-type", FORM)], body.as_bytes())
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while idp.token_calls() == 0 {
        assert!(std::time::Instant::now() < deadline, "the first request never reached the IdP");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new configuration while the old one's call is in flight; the next requests (on the
    // new configuration, on either worker) wait for that call, whose root context is then
    // deleted.
    envoy.swap_plugin_config(&config("11s").to_string()).unwrap();
    // A connection accepted while the workers switch listeners can be reset before any
    // filter sees it (seen once in CI, never with tokengate's answer): a client retries it.
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let headers = [("content-type", FORM)];
                let attempt = || testbed::request("POST", port, "/oauth/token", &headers, body.as_bytes());
                attempt()
                    .or_else(|_| {
                        std::thread::sleep(Duration::from_millis(200));
                        attempt()
                    })
                    .expect("Envoy answers")
            })
        })
        .collect();
    let answers: Vec<testbed::Response> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!access_token(r).is_empty());
    }
    let misses = answers.iter().filter(|r| cache_status(r) == "miss").count();
    assert_eq!(misses, 1, "one retook the key and made the call, the others coalesced onto it");
    assert_eq!(idp.token_calls(), 2, "the released call, and the one that replaced it");
    // The first request's connection went with the drained listener; whatever it got,
    // it was not left hanging.
    let _ = first.join();
    let log = envoy.log();
    assert!(!log.contains("configuration rejected"), "{log}");
}
