//! Per-client rate limit and issuance quota in real Envoy with two workers: exact counts
//! across workers, the 429 answers and the rate-limit headers.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::thread;

use serde_json::json;
use support::*;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn five_per_minute_then_429_and_another_client_is_unaffected() {
    let config = plugin_config(json!({"rate_limit": {
        "default": {"max_tokens": 30, "tokens_per_fill": 30, "fill_interval": "60s"},
        "clients": {"c1": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "60s"}}
    }}));
    let stack = Stack::start(config, 3600);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = stack.post_form(&cc_form("c1", "s1", "a"));
        statuses.push(r.status);
        assert_eq!(header_u64(&r, "x-ratelimit-limit"), 5);
        assert!(r.header("ratelimit-policy").is_some() && r.header("ratelimit").is_some());
        if i < 5 {
            assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 4 - i);
        } else {
            assert_oauth_error(&r, 429, "too_many_requests");
            assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 0);
            let retry = header_u64(&r, "retry-after");
            assert!((1..=60).contains(&retry), "{retry}");
            let reset = header_u64(&r, "x-ratelimit-reset");
            let now = unix_now();
            assert!(reset >= now && reset <= now + 61, "{reset} vs {now}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let other = stack.post_form(&cc_form("c2", "s2", "a"));
    assert_eq!(other.status, 200);
    assert_eq!(header_u64(&other, "x-ratelimit-remaining"), 29);
    assert_eq!(stack.idp.token_calls(), 2);
}

#[test]
fn forty_concurrent_requests_of_a_client_limited_to_ten_give_exactly_ten() {
    let config = plugin_config(json!({"rate_limit": {
        "clients": {"c1": {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1h"}}
    }}));
    let stack = Stack::start(config, 3600);
    // The IdP answers slowly, so the requests find no token: each is charged when the
    // token comes (its credentials are proven only then; later ones are hits, charged at
    // once), and still exactly ten are admitted.
    stack.set_fault(fault_delay(300));
    let port = stack.port();
    let statuses: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|_| {
                s.spawn(move || {
                    post(port, "/oauth/token", Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes()).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30, "{statuses:?}");
    assert_eq!(stack.idp.token_calls(), 1);
}

#[test]
fn quota_of_two_per_day_blocks_the_third_audience_and_still_serves_hits() {
    let config = plugin_config(json!({"quota": {"default": {"tokens": 2, "window": "1d"}}}));
    let stack = Stack::start(config, 3600);
    for audience in ["a", "b"] {
        let r = stack.post_form(&cc_form("c1", "s1", audience));
        assert_eq!((r.status, cache_status(&r)), (200, "miss"));
        assert!(r.header("auth0-client-quota-limit").unwrap().starts_with("b=per_day;q=2;"));
    }
    let c = stack.post_form(&cc_form("c1", "s1", "c"));
    assert_oauth_error(&c, 429, "too_many_requests");
    let retry = header_u64(&c, "retry-after");
    assert!((1..=86_400).contains(&retry));
    assert!(c.header("auth0-client-quota-limit").unwrap().starts_with("b=per_day;q=2;r=0;t="));
    let a = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((a.status, cache_status(&a)), (200, "hit"));
    assert_eq!(stack.idp.token_calls(), 2);
    assert_eq!(stack.idp.calls_for_audience("c1", "c"), 0);
}

/// A large bucket is batched per worker (see `hit_tally`): hits from both workers are all
/// admitted and counted, and once the batches are given back the bucket is exact again.
#[test]
fn a_large_bucket_batched_per_worker_is_exact_once_the_batches_are_back() {
    let config = plugin_config(json!({
        "usage_path": "/tokengate/usage",
        "rate_limit": {"default": {"max_tokens": 100000, "tokens_per_fill": 100000, "fill_interval": "1h"}}
    }));
    let stack = Stack::start(config, 3600);
    assert_eq!(cache_status(&stack.post_form(&cc_form("c1", "s1", "a"))), "miss");
    let hits = 60;
    let answers: Vec<testbed::Response> = thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..hits / 4).map(|_| stack.post_form(&cc_form("c1", "s1", "a"))).collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    // Each answer counts what its worker sees: the other worker's batch (at most 64
    // tokens) may be missing from it, never more.
    for r in &answers {
        assert_eq!((r.status, cache_status(r)), (200, "hit"));
        let left = header_u64(r, "x-ratelimit-remaining");
        assert!(left < 100_000 && left >= 100_000 - 1 - hits - 64, "{left}");
    }
    // Batches live at most one 20 ms tick; then the bucket holds exactly what was spent.
    thread::sleep(std::time::Duration::from_millis(200));
    let next = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(header_u64(&next, "x-ratelimit-remaining"), 100_000 - 1 - hits - 1);
    let report: serde_json::Value =
        testbed::request("GET", stack.port(), "/tokengate/usage", &[], b"").unwrap().json().unwrap();
    let c1 = report["clients"].as_array().unwrap().iter().find(|c| c["client_id"] == "c1").unwrap().clone();
    assert_eq!((c1["requests"].as_u64(), c1["hits"].as_u64()), (Some(hits + 2), Some(hits + 1)), "{c1}");
}
