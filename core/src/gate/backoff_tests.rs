//! The IdP's back-pressure through the gate: `429` back-offs and the reserve.

use serde_json::json;

use super::*;
use crate::response::{CACHE_HEADER, DECISION_HEADER};

fn idp_429(reset_s: u64) -> HttpReply {
    HttpReply {
        status: 429,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-ratelimit-limit".into(), "30".into()),
            ("x-ratelimit-remaining".into(), "0".into()),
            ("x-ratelimit-reset".into(), reset_s.to_string()),
        ],
        body: br#"{"error":"too_many_requests","error_description":"Global limit has been reached"}"#
            .to_vec(),
    }
}

fn with_limits(mut reply: HttpReply, remaining: u64, reset_s: u64) -> HttpReply {
    reply.headers.extend([
        ("x-ratelimit-limit".into(), "30".into()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        ("x-ratelimit-reset".into(), reset_s.to_string()),
    ]);
    reply
}

fn client_body(client: &str, audience: &str) -> String {
    format!("grant_type=client_credentials&client_id={client}&client_secret=s-{client}&audience={audience}")
}

const RESET_S: u64 = T0 / 1000 + 3;

#[test]
fn a_429_stops_idp_calls_for_that_client_until_the_reset() {
    let host = FakeHost::new(T0);
    let config = config(json!({"usage_path": "/u"}));
    let gate = Gate::new(&config, &host, "tokengate");
    let cached = exchange(&gate, &form(), &body("s1", "cached"), Some(token_reply("tok-cached", 3600)));
    assert_eq!(cached.status, 200);
    let first = exchange(&gate, &form(), &body("s1", "a"), Some(idp_429(RESET_S)));
    assert_eq!((first.status, first.header("retry-after")), (429, Some("3")), "the IdP's 429, relayed");
    assert_eq!(host.calls().len(), 2);
    for (step_ms, audience) in [(0, "a"), (500, "b"), (900, "a"), (600, "b")] {
        host.advance_ms(step_ms);
        let r = exchange(&gate, &form(), &body("s1", audience), Some(token_reply("never", 3600)));
        assert_eq!(r.status, 429, "{audience}");
        assert_eq!(r.header(DECISION_HEADER), Some("idp_backoff"));
        let left: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3).contains(&left), "{left}");
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "the IdP's last word");
        assert_eq!(json_of(&r)["error"], "too_many_requests");
        // A cached token is still served.
        let hit = exchange(&gate, &form(), &body("s1", "cached"), None);
        assert_eq!(hit.header(CACHE_HEADER), Some("hit"));
    }
    assert_eq!(host.calls().len(), 2, "no IdP call during the back-off");
    // Another client is not held back (scope "client").
    let other = exchange(&gate, &form(), &client_body("c2", "a"), Some(token_reply("tok-c2", 3600)));
    assert_eq!(other.status, 200);
    // After the reset, the next request reaches the IdP.
    host.set_now_ms(RESET_S * 1000);
    let after = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-a", 3600)));
    assert_eq!((after.status, after.header(CACHE_HEADER)), (200, Some("miss")));
    assert_eq!(host.calls().len(), 4);
    assert_eq!(host.metric(Metric::IdpBackoffStarted), 1);
    assert_eq!(host.metric(Metric::IdpBackoffRejected), 4);
    let report = json_of(&gate.usage(None, None, "/u"));
    let c1 = report["clients"].as_array().unwrap().iter().find(|c| c["client_id"] == "c1").unwrap().clone();
    assert_eq!(c1["idp_backoff"], 4);
    assert_eq!(report["totals"]["idp_backoff"], 4);
    assert_eq!(report["idp"]["ratelimit_limit"], 30);
}

#[test]
fn upstream_scope_holds_every_client_back() {
    let host = FakeHost::new(T0);
    let config =
        config(json!({"upstream": {"cluster": "idp", "authority": "t", "backoff_scope": "upstream"}}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("s1", "a"), Some(idp_429(RESET_S)));
    let other = exchange(&gate, &form(), &client_body("c2", "a"), Some(token_reply("never", 3600)));
    assert_eq!((other.status, other.header(DECISION_HEADER)), (429, Some("idp_backoff")));
    // Forwarded grants call the IdP too: held back as well.
    let forwarded = exchange(&gate, &form(), "grant_type=password&username=u&password=p", None);
    assert_eq!(forwarded.status, 429);
    assert_eq!(host.calls().len(), 1);
    let report = json_of(&gate.usage(None, None, "/u"));
    assert_eq!(report["idp"]["backoff_until"], RESET_S);
}

#[test]
fn a_still_valid_token_is_served_stale_during_a_back_off() {
    let host = FakeHost::new(T0);
    let config = config(json!({"cache": {"min_remaining_ttl": "30s"}}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-a", 60)));
    host.advance_ms(40_000); // 20 s left: below the floor, the next request needs the IdP
    let limited = exchange(&gate, &form(), &body("s1", "a"), Some(idp_429(T0 / 1000 + 50)));
    assert_eq!((limited.status, limited.header(CACHE_HEADER)), (200, Some("stale")));
    let again = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("never", 60)));
    assert_eq!((again.status, again.header(CACHE_HEADER)), (200, Some("stale")));
    assert_eq!(json_of(&again)["access_token"], "tok-a");
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn the_reserve_keeps_the_last_calls_for_keys_without_a_token() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "upstream": {"cluster": "idp", "authority": "t", "reserve": 2},
        "cache": {"min_remaining_ttl": "30s", "refresh_ahead_ratio": 0.5}
    }));
    let gate = Gate::new(&config, &host, "tokengate");
    let reset = T0 / 1000 + 600;
    exchange(&gate, &form(), &body("s1", "a"), Some(with_limits(token_reply("tok-a", 100), 2, reset)));
    // Inside the refresh-ahead window: served, but no background refresh while in reserve.
    host.advance_ms(60_000);
    let plan = gate.handle(&form(), body("s1", "a").as_bytes());
    assert!(plan.call.is_none(), "no refresh in reserve");
    // Below the floor: the still-valid token instead of a call.
    host.advance_ms(20_000);
    let held = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("never", 100)));
    assert_eq!(held.header(CACHE_HEADER), Some("stale"));
    // A key without any token still gets a call.
    let fresh =
        exchange(&gate, &form(), &body("s1", "b"), Some(with_limits(token_reply("tok-b", 100), 1, reset)));
    assert_eq!(fresh.header(CACHE_HEADER), Some("miss"));
    assert_eq!(host.calls().len(), 2);
    assert_eq!(host.metric(Metric::IdpReserveHeld), 2);
    // Past the IdP's reset the reserve no longer applies.
    host.set_now_ms(reset * 1000 + 1);
    let c = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-a2", 100)));
    assert_eq!(c.header(CACHE_HEADER), Some("miss"));
}
