//! Attacks and fidelity in real Envoy (issue 17): someone who knows a client id but not its
//! secret cannot cut that client off; DPoP is never downgraded to bearer; no spelling of the
//! token path gets past the filter; forwarded grants respect the quota; raw Basic
//! credentials, JSON nulls and HTTP-date back-offs are read as the IdP reads them.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mock_idp::Fault;
use serde_json::{Value, json};
use support::*;

/// c1 may make 3 requests an hour and have 3 tokens issued a day.
fn tight_limits() -> Value {
    plugin_config(json!({
        "rate_limit": {"clients": {"c1": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1h"}}},
        "quota": {"clients": {"c1": {"tokens": 3, "window": "1d"}}}
    }))
}

#[test]
fn wrong_secrets_for_a_client_id_cost_the_real_client_nothing() {
    let stack = Stack::start(tight_limits(), 3600);
    for i in 0..3 {
        let r = stack.post_form(&cc_form("c1", &format!("guess-{i}"), "a"));
        assert_oauth_error_or_idp(&r, 401);
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 3, "a rejected request is not charged");
    }
    // With the demo's numbers this was a 429 for a minute, and the quota gone for a day.
    let real = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((real.status, cache_status(&real)), (200, "miss"), "{}", real.text());
    assert_eq!(header_u64(&real, "x-ratelimit-remaining"), 2);
    let quota = real.header("auth0-client-quota-limit").unwrap();
    assert!(quota.contains(";q=3;r=2;"), "{quota}");
    // Two more new audiences: the quota is the real client's own to spend.
    for audience in ["b", "c"] {
        assert_eq!(stack.post_form(&cc_form("c1", "s1", audience)).status, 200);
    }
}

#[test]
fn proof_is_per_credential_and_an_unproven_refusal_names_itself() {
    let config = plugin_config(json!({"usage_path": "/tokengate/usage", "rate_limit": {
        "default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1h"},
        "unproven": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1h"}}}));
    let stack = Stack::start(config, 3600);
    // A service with the right secret asks for more audiences than the unproven bucket
    // holds: the first token proves its credentials for every other audience.
    for i in 0..11 {
        let r = stack.post_form(&cc_form("c1", "s1", &format!("https://api-{i}.example.com")));
        assert_eq!((r.status, cache_status(&r)), (200, "miss"), "audience #{i}: {}", r.text());
    }
    // Guesses spend the unproven bucket (its first call was the real client's).
    for i in 0..2 {
        let r = stack.post_form(&cc_form("c1", &format!("guess-{i}"), "a"));
        assert_oauth_error_or_idp(&r, 401);
        assert_eq!(r.header("x-tokengate-decision"), Some("rejected"), "the IdP's own 401");
    }
    let refused = stack.post_form(&cc_form("c1", "guess-2", "a"));
    assert_oauth_error(&refused, 429, "too_many_requests");
    assert_eq!(refused.header("x-tokengate-decision"), Some("unproven"));
    let description = json_body(&refused)["error_description"].as_str().unwrap().to_owned();
    assert!(description.contains("rate_limit.unproven"), "{description}");
    assert_eq!(header_u64(&refused, "x-ratelimit-limit"), 3, "the unproven bucket's, not the client's 100");
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining"), 0);
    assert!(refused.header("ratelimit-policy").unwrap().starts_with("\"unproven\";q=3;"));
    assert!(header_u64(&refused, "retry-after") >= 1);
    // The real client is not refused because of the guesses.
    let real = stack.post_form(&cc_form("c1", "s1", "https://api-11.example.com"));
    assert_eq!((real.status, cache_status(&real)), (200, "miss"), "{}", real.text());
    assert_eq!(header_u64(&real, "x-ratelimit-limit"), 100);

    let report = testbed::request("GET", stack.port(), "/tokengate/usage", &[], b"").unwrap().json().unwrap();
    let c1 = report["clients"].as_array().unwrap().iter().find(|r| r["client_id"] == "c1").unwrap().clone();
    assert_eq!(
        (&c1["unproven"], &c1["rejected"], &c1["rate_limited"]),
        (&json!(1), &json!(2), &json!(0)),
        "{c1}"
    );
    let stats = stack.envoy.stats().unwrap();
    for (name, value) in [("tokengate_unproven_total", 1), ("tokengate_rejected_total", 2)] {
        let line = format!("wasmcustom.{name}: {value}");
        assert!(stats.lines().any(|l| l == line), "no {line:?} in the stats");
    }
}

/// The IdP's own 401 relayed (a JSON body with `error`).
fn assert_oauth_error_or_idp(r: &testbed::Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(json_body(r)["error"].as_str().is_some(), "{}", r.text());
}

#[test]
fn guessing_secrets_is_held_back_while_proven_credentials_keep_their_token() {
    let config = plugin_config(json!({"rate_limit": {
        "default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1h"},
        "unproven": {"max_tokens": 4, "tokens_per_fill": 4, "fill_interval": "1h"}}}));
    let stack = Stack::start(config, 3600);
    let real = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(real.status, 200);
    let statuses: Vec<u16> =
        (0..10).map(|i| stack.post_form(&cc_form("c1", &format!("guess-{i}"), "a")).status).collect();
    // The real client's first call was one of the 4 unproven calls.
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    assert_eq!(stack.idp.calls_for("c1"), 4);
    let hit = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((hit.status, cache_status(&hit)), (200, "hit"));
    assert_eq!(access_token(&hit), access_token(&real));
}

#[test]
fn a_flood_of_invented_client_ids_makes_a_bounded_number_of_idp_calls() {
    let config = plugin_config(json!({"rate_limit": {
        "default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1h"},
        "unknown_clients": {"max_tokens": 20, "tokens_per_fill": 20, "fill_interval": "1h"}}}));
    let stack = Stack::start(config, 3600);
    let real = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(real.status, 200);
    let mut refused = 0;
    for i in 0..100 {
        let r = stack.post_form(&cc_form(&format!("invented-{i}"), "x", "a"));
        match r.status {
            401 => {}
            429 => refused += 1,
            other => panic!("{other}: {}", r.text()),
        }
    }
    // The real client's first call was one of the 20: the IdP had not issued it a token yet.
    assert_eq!(refused, 81);
    assert_eq!(stack.idp.token_calls(), 20);
    // A client the IdP already knows is not held back by the flood.
    assert_eq!(stack.post_form(&cc_form("c1", "s1", "b")).status, 200);
}

#[test]
fn dpop_requests_are_forwarded_with_their_proof_never_cached_either_way() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let bearer = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((bearer.status, cache_status(&bearer)), (200, "miss"));
    // With a proof: never the cached bearer token, always the IdP, the header passed on.
    for _ in 0..2 {
        let r = stack.post(
            Some(FORM),
            &[("dpop", "eyJ0eXAiOiJkcG9wK2p3dCJ9.proof.sig")],
            cc_form("c1", "s1", "a").as_bytes(),
        );
        assert_eq!((r.status, cache_status(&r)), (200, "bypass"), "{}", r.text());
        assert_eq!(json_body(&r)["token_type"], "DPoP");
        assert_ne!(access_token(&r), access_token(&bearer));
    }
    assert_eq!(stack.idp.token_calls(), 3);
    let forwarded =
        stack.idp.requests().into_iter().filter(|r| r.headers.iter().any(|(n, _)| n == "dpop")).count();
    assert_eq!(forwarded, 2, "the proof reaches the IdP");
    // The bound token was stored nowhere: a bearer request still gets the bearer token.
    let hit = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((cache_status(&hit), access_token(&hit)), ("hit", access_token(&bearer)));
    let fresh = stack.post_form(&cc_form("c2", "s2", "a"));
    assert_eq!(json_body(&fresh)["token_type"], "Bearer");
}

#[test]
fn every_spelling_of_the_token_path_is_a_token_request_never_passed_through() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let first = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(cache_status(&first), "miss");
    for variant in [
        "/oauth/token/",
        "//oauth/token",
        "/OAUTH/TOKEN",
        "/oauth/./token",
        "/oauth/x/../token",
        "/oauth%2Ftoken",
        "/oauth%2ftoken",
        "/oauth/token;x=1",
        "/oauth/token%20",
        "/%20/oauth/token",
        "/oauth/token?x=1",
    ] {
        let r = post(stack.port(), variant, Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes());
        assert_eq!((r.status, cache_status(&r)), (200, "hit"), "{variant}: {}", r.text());
    }
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        for path in ["/oauth/token", "/OAuth/Token/"] {
            let r = testbed::request(
                method,
                stack.port(),
                path,
                &[("content-type", FORM)],
                cc_form("c1", "s1", "a").as_bytes(),
            )
            .unwrap();
            assert_oauth_error(&r, 400, "invalid_request");
            assert_eq!(r.header("allow"), Some("POST"));
        }
    }
    // Nothing reached the IdP but the one token call, on its own path.
    let requests = stack.idp.requests();
    assert_eq!(requests.len(), 1, "{:?}", requests.iter().map(|r| &r.path).collect::<Vec<_>>());
    assert_eq!(requests[0].path, "/oauth/token");
    // Other paths still pass through untouched.
    let other = testbed::request("GET", stack.port(), "/oauth/tokens", &[], b"").unwrap();
    assert_eq!(json_body(&other)["backend"], true);
}

#[test]
fn forwarded_grants_spend_the_quota_and_are_refused_once_it_is_spent() {
    let config = plugin_config(json!({"quota": {"clients": {"c1": {"tokens": 3, "window": "1d"}}}}));
    let stack = Stack::start(config, 3600);
    let jwt = "grant_type=client_credentials&client_id=c1&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJ.x.y";
    let refresh = "grant_type=refresh_token&client_id=c1&client_secret=s1&refresh_token=r1";
    for body in [jwt, refresh] {
        let r = stack.post_form(body);
        assert_eq!((r.status, cache_status(&r)), (200, "bypass"), "{}", r.text());
    }
    let cached = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(cached.status, 200);
    assert!(cached.header("auth0-client-quota-limit").unwrap().contains(";r=0;"));
    let calls = stack.idp.token_calls();
    for body in [jwt, jwt, refresh] {
        let r = stack.post_form(body);
        assert_oauth_error(&r, 429, "too_many_requests");
        assert!(header_u64(&r, "retry-after") > 0);
        assert!(r.header("auth0-client-quota-limit").unwrap().contains(";r=0;"), "{:?}", r.headers);
    }
    assert_eq!(stack.idp.token_calls(), calls, "over quota, no forwarded call reaches the IdP");
}

#[test]
fn auth0_sdk_shapes_json_nulls_and_raw_basic_credentials_are_read_as_the_idp_reads_them() {
    let clients = vec![client("c1", "s1"), client("raw-client", "50%off")];
    let stack = Stack::start_with(plugin_config(json!({})), clients, 3600, "info");
    // auth0-python sends `"organization": null`.
    let body = br#"{"client_id":"c1","client_secret":"s1","audience":"a","grant_type":"client_credentials","organization":null}"#;
    let r = stack.post(Some(JSON), &[], body);
    assert_eq!((r.status, cache_status(&r)), (200, "miss"), "{}", r.text());
    assert_eq!(cache_status(&stack.post(Some(JSON), &[], body)), "hit");
    // `requests`' HTTPBasicAuth sends the secret raw, not form-encoded.
    let basic = format!("Basic {}", STANDARD.encode("raw-client:50%off"));
    let headers = [("authorization", basic.as_str())];
    let r = stack.post(Some(FORM), &headers, b"grant_type=client_credentials&audience=a");
    assert_eq!((r.status, cache_status(&r)), (200, "miss"), "{}", r.text());
    let again = stack.post(Some(FORM), &headers, b"grant_type=client_credentials&audience=a");
    assert_eq!((cache_status(&again), access_token(&again)), ("hit", access_token(&r)));
    // Read alike, sent apart: the form-encoded header is another key, never the raw one's token.
    let encoded = format!("Basic {}", STANDARD.encode("raw-client:50%25off"));
    let other =
        stack.post(Some(FORM), &[("authorization", &encoded)], b"grant_type=client_credentials&audience=a");
    assert_ne!(cache_status(&other), "hit");
}

#[test]
fn long_client_ids_and_known_clients_bad_requests_get_oauth_errors_with_headers() {
    let stack = Stack::start(tight_limits(), 3600);
    let long = stack.post_form(&cc_form(&"x".repeat(300), "s", "a"));
    assert_oauth_error(&long, 400, "invalid_request");
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:s", "y".repeat(5_000))));
    let long_basic = stack.post(Some(FORM), &[("authorization", &basic)], b"grant_type=client_credentials");
    assert_oauth_error(&long_basic, 400, "invalid_request");
    let missing_grant = stack.post_form("client_id=c1&client_secret=s1&audience=a");
    assert_oauth_error(&missing_grant, 400, "invalid_request");
    assert_eq!(header_u64(&missing_grant, "x-ratelimit-limit"), 3);
    let tab = stack.post_form("grant_type=client_credentials&client_id=c1&client_secret=s%091");
    assert_oauth_error(&tab, 400, "invalid_request");
    assert!(json_body(&tab)["error_description"].as_str().unwrap().contains("tab"));
    assert_eq!(stack.idp.token_calls(), 0);
}

#[test]
fn an_http_date_retry_after_from_the_idp_is_honoured() {
    let stack = Stack::start(
        plugin_config(json!({"upstream": {
        "cluster": "idp", "authority": "tenant.example.com", "timeout": "2s", "max_backoff": "60s"}})),
        3600,
    );
    stack.set_fault(Fault { status: Some(429), retry_after_date_in: Some(30), ..Fault::default() });
    let first = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(first.status, 429);
    stack.set_fault(Fault::default());
    let held = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_oauth_error(&held, 429, "too_many_requests");
    let retry = header_u64(&held, "retry-after");
    assert!((25..=31).contains(&retry), "retry-after {retry}: the date, not the 1 s fallback");
    assert_eq!(stack.idp.token_calls(), 1);
}
