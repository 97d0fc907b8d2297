//! The token cache in real Envoy: one IdP call per key, hits that never reach the IdP,
//! `expires_in` counting down, the `min_remaining_ttl` floor.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::thread::sleep;
use std::time::Duration;

use serde_json::json;
use support::*;

#[test]
fn one_miss_then_forty_hits_cost_one_idp_call_per_audience() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let miss = stack.post_form(&cc_form("c1", "s1", "https://api.a"));
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(cache_status(&miss), "miss");
    assert_eq!(miss.header("cache-control"), Some("no-store"));
    assert_eq!(miss.header("pragma"), Some("no-cache"));
    let token = access_token(&miss);
    assert!(!token.is_empty());

    let mut last_expires_in = u64::MAX;
    for _ in 0..40 {
        let hit = stack.post_form(&cc_form("c1", "s1", "https://api.a"));
        assert_eq!(hit.status, 200);
        assert_eq!(cache_status(&hit), "hit");
        assert_eq!(hit.header("cache-control"), Some("no-store"));
        assert_eq!(hit.header("pragma"), Some("no-cache"));
        assert_eq!(hit.header("content-type"), Some("application/json"));
        let body = json_body(&hit);
        assert_eq!(body["access_token"], token.as_str());
        assert_eq!(body["token_type"], "Bearer");
        let expires_in = body["expires_in"].as_u64().expect("expires_in");
        assert!(expires_in <= last_expires_in && expires_in > 3590, "{expires_in}");
        last_expires_in = expires_in;
    }
    // Hits never reach the IdP, not even as a request begun and reset.
    assert_eq!(stack.idp.token_calls(), 1);
    assert_eq!(stack.idp.requests().len(), 1);

    let other = stack.post_form(&cc_form("c1", "s1", "https://api.b"));
    assert_eq!(cache_status(&other), "miss");
    assert_ne!(access_token(&other), token);
    assert_eq!(stack.idp.token_calls(), 2);
    assert_eq!(stack.idp.calls_for_audience("c1", "https://api.b"), 1);
}

#[test]
fn a_wrong_or_missing_secret_never_gets_the_cached_token() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let token = access_token(&stack.post_form(&cc_form("c1", "s1", "a")));
    for body in [
        cc_form("c1", "wrong", "a"),
        cc_form("c1", "", "a"),
        "grant_type=client_credentials&client_id=c1&audience=a".to_owned(),
        cc_form("c1", "s1%20", "a"),
    ] {
        let r = stack.post_form(&body);
        assert_eq!(r.status, 401, "{body}: {}", r.text());
        assert!(!r.text().contains(&token), "{body}");
    }
    let basic = format!("Basic {}", base64_of("c1:wrong"));
    let r = stack.post(Some(FORM), &[("authorization", &basic)], b"grant_type=client_credentials&audience=a");
    assert_eq!(r.status, 401);
    assert!(!r.text().contains(&token));
    // The right secret still hits.
    assert_eq!(cache_status(&stack.post_form(&cc_form("c1", "s1", "a"))), "hit");
}

#[test]
fn form_and_json_share_the_cache_and_basic_has_its_own() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let form = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((form.status, cache_status(&form)), (200, "miss"));
    let token = access_token(&form);

    let json_request =
        br#"{"grant_type":"client_credentials","client_id":"c1","client_secret":"s1","audience":"a"}"#;
    for content_type in [JSON, "application/json; charset=utf-8"] {
        let r = stack.post(Some(content_type), &[], json_request);
        assert_eq!((r.status, cache_status(&r)), (200, "hit"), "{content_type}");
        assert_eq!(access_token(&r), token);
    }
    // Basic credentials are keyed on the header as sent (raw and form-encoded secrets can
    // read alike yet differ to the IdP): their own key, then hits.
    let basic = format!("Basic {}", base64_of("c1:s1"));
    let r = stack.post(Some(FORM), &[("authorization", &basic)], b"grant_type=client_credentials&audience=a");
    assert_eq!((r.status, cache_status(&r)), (200, "miss"));
    let basic_token = access_token(&r);
    let r = stack.post(Some(FORM), &[("authorization", &basic)], b"grant_type=client_credentials&audience=a");
    assert_eq!((r.status, cache_status(&r)), (200, "hit"));
    assert_eq!(access_token(&r), basic_token);

    // Each works on its own too, as a miss the IdP answers.
    let r = stack.post(
        Some("application/json; charset=utf-8"),
        &[],
        br#"{"grant_type":"client_credentials","client_id":"c2","client_secret":"s2"}"#,
    );
    assert_eq!((r.status, cache_status(&r)), (200, "miss"), "{}", r.text());
    let basic = format!("Basic {}", base64_of("c2:s2"));
    let r = stack.post(Some(FORM), &[("authorization", &basic)], b"grant_type=client_credentials&audience=z");
    assert_eq!((r.status, cache_status(&r)), (200, "miss"), "{}", r.text());
    assert_eq!(stack.idp.token_calls(), 4);
}

#[test]
fn expires_in_counts_down_and_the_floor_forces_a_new_call() {
    let stack = Stack::start(plugin_config(json!({"cache": {"min_remaining_ttl": "1s"}})), 3);
    let first = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(cache_status(&first), "miss");
    sleep(Duration::from_millis(1000));
    let hit = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(cache_status(&hit), "hit");
    assert!(json_body(&hit)["expires_in"].as_u64().expect("expires_in") <= 2);
    sleep(Duration::from_millis(1600));
    let again = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(cache_status(&again), "miss");
    assert_ne!(access_token(&again), access_token(&first));
    assert_eq!(stack.idp.token_calls(), 2);
}

#[test]
fn other_grants_and_client_assertions_are_forwarded_and_never_cached() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let assertion = "grant_type=client_credentials&client_id=c1&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJSUzI1NiJ9.e30.sig";
    let refresh = "grant_type=refresh_token&client_id=c1&client_secret=s1&refresh_token=r1";
    for _ in 0..2 {
        for body in [assertion, refresh] {
            let r = stack.post_form(body);
            assert_eq!(r.status, 200, "{body}: {}", r.text());
            assert_eq!(cache_status(&r), "bypass");
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
    }
    assert_eq!(stack.idp.token_calls(), 4);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn max_ttl_caps_how_long_a_token_is_served_whatever_its_expires_in() {
    let config =
        plugin_config(json!({"cache": {"max_entries": 100, "min_remaining_ttl": "1s", "max_ttl": "4s"}}));
    let stack = Stack::start(config, 86_400);
    let started = std::time::Instant::now();
    let body = cc_form("c1", "s1", "a");
    let miss = stack.post_form(&body);
    assert_eq!((miss.status, cache_status(&miss)), (200, "miss"));
    let hit = stack.post_form(&body);
    // Served from the cache while the capped lifetime lasts (a day from the IdP, 4 s here).
    if started.elapsed() < Duration::from_secs(3) {
        assert_eq!(cache_status(&hit), "hit");
        assert!(json_body(&hit)["expires_in"].as_u64().unwrap() <= 4, "{}", hit.text());
    }
    sleep(Duration::from_secs(4).saturating_sub(started.elapsed()) + Duration::from_millis(200));
    let after = stack.post_form(&body);
    assert_eq!((after.status, cache_status(&after)), (200, "miss"), "past max_ttl the IdP is asked again");
    assert_eq!(stack.idp.token_calls(), 2);
}
