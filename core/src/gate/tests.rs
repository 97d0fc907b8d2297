use serde_json::{Value, json};

use super::*;
use crate::host::fake::FakeHost;
use crate::response::CACHE_HEADER;

#[path = "backoff_tests.rs"]
mod backoff_tests;
#[path = "proof_tests.rs"]
mod proof_tests;

const FORM: &str = "application/x-www-form-urlencoded";
const T0: u64 = 1_700_000_000_000;

fn config(extra: Value) -> Config {
    let mut doc = json!({
        "upstream": {"cluster": "idp", "authority": "tenant.example", "timeout": "5s"},
        "cache": {"min_remaining_ttl": "1s"}
    });
    if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
        d.extend(e);
    }
    Config::from_json(doc.to_string().as_bytes()).unwrap()
}

fn form() -> RequestHead {
    RequestHead { content_type: Some(FORM.into()), authorization: None, dpop: None, ..Default::default() }
}

fn body(secret: &str, audience: &str) -> String {
    format!("grant_type=client_credentials&client_id=c1&client_secret={secret}&audience={audience}")
}

fn token_reply(token: &str, expires_in: u64) -> HttpReply {
    HttpReply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})
            .to_string()
            .into_bytes(),
    }
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

/// Sends a request as the wasm layer would: a forwarded call completes with `reply`; a
/// keyed call is dispatched (recorded by the fake host) and finished with `reply`.
fn exchange(gate: &Gate, head: &RequestHead, body: &str, reply: Option<HttpReply>) -> Response {
    let Plan { outcome, call } = gate.handle(head, body.as_bytes());
    match outcome {
        Outcome::Respond(r) => r,
        Outcome::Forward(pending) => through_route(gate, &pending, reply),
        Outcome::Wait(mut waiter) => {
            let call = call.expect("a lone request owns its call");
            run_call(gate, &call, reply.as_ref());
            let outcome = gate.finish_call(&call, reply.as_ref());
            gate.answer(&mut waiter, Some(&outcome)).ready().expect("answered once the call is done")
        }
    }
}

/// A forwarded request's answer as the client gets it: the IdP's (`None`: Envoy's router
/// could not reach it and answers a plain-text 503) amended by tokengate.
fn through_route(gate: &Gate, pending: &ForwardedRequest, reply: Option<HttpReply>) -> Response {
    let reply = reply.unwrap_or(HttpReply {
        status: 503,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"no healthy upstream".to_vec(),
    });
    let mut seen = reply.headers.clone();
    seen.push((":status".into(), reply.status.to_string()));
    match gate.forward_answered(pending, &seen) {
        ResponseStep::Replace(response) => response,
        ResponseStep::Amend { remove, set } => {
            let kept = reply.headers.into_iter().filter(|(name, _)| {
                !remove.contains(&name.as_str()) && !set.iter().any(|(set_name, _)| set_name == name)
            });
            let mut headers: Vec<Header> = kept.map(|(n, v)| (n.into(), v.into())).collect();
            headers.extend(set);
            Response {
                status: reply.status,
                headers,
                body: reply.body,
                cache: Decision::Bypass,
                decided: None,
            }
        }
        ResponseStep::Continue => panic!("a forwarded request's answer is tokengate's"),
    }
}

/// Records a keyed call as dispatched (the root context does this in Envoy).
fn run_call(gate: &Gate, call: &KeyedCall, _reply: Option<&HttpReply>) {
    let _ = gate.host.dispatch(&call.call);
}

fn expect_wait(gate: &Gate, head: &RequestHead, body: &str) -> Waiter {
    expect_call(gate, head, body).0
}

/// A request that waits for its key's call, and that call when this request owns it.
fn expect_call(gate: &Gate, head: &RequestHead, body: &str) -> (Waiter, Option<KeyedCall>) {
    let plan = gate.handle(head, body.as_bytes());
    match plan.outcome {
        Outcome::Wait(w) => (*w, plan.call),
        other => panic!("not waiting: {other:?}"),
    }
}

#[test]
fn miss_then_hits_serve_the_same_token_with_shrinking_expires_in() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let miss = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    assert_eq!(miss.status, 200);
    assert_eq!(miss.header(CACHE_HEADER), Some("miss"));
    assert_eq!(json_of(&miss)["access_token"], "tok-1");
    let mut last = u64::MAX;
    for _ in 0..40 {
        host.advance_ms(700);
        let hit = exchange(&gate, &form(), &body("s1", "a"), None);
        assert_eq!(hit.header(CACHE_HEADER), Some("hit"));
        assert_eq!(hit.header("cache-control"), Some("no-store"));
        assert_eq!(hit.header("pragma"), Some("no-cache"));
        let v = json_of(&hit);
        assert_eq!(v["access_token"], "tok-1");
        assert_eq!(v["token_type"], "Bearer");
        let expires_in = v["expires_in"].as_u64().unwrap();
        assert!(expires_in <= last);
        last = expires_in;
    }
    assert_eq!(last, 3600 - 28);
    assert_eq!(host.calls().len(), 1);
    // A second audience is a second key.
    let other = exchange(&gate, &form(), &body("s1", "b"), Some(token_reply("tok-2", 3600)));
    assert_eq!(other.header(CACHE_HEADER), Some("miss"));
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn wrong_or_missing_secret_never_gets_the_cached_token() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("right", "a"), Some(token_reply("tok-1", 3600)));
    let denied = HttpReply {
        status: 401,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":"access_denied","error_description":"Unauthorized"}"#.to_vec(),
    };
    let wrong = exchange(&gate, &form(), &body("wrong", "a"), Some(denied.clone()));
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header(CACHE_HEADER), Some("miss"));
    assert_eq!(json_of(&wrong)["error"], "access_denied");
    let missing =
        exchange(&gate, &form(), "grant_type=client_credentials&client_id=c1&audience=a", Some(denied));
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header(CACHE_HEADER), Some("bypass"));
    // Two keyed calls; the request without a secret went on through the route.
    assert_eq!((host.calls().len(), host.metric(Metric::IdpCalls)), (2, 3));
}

#[test]
fn shared_data_holds_no_secret_and_no_token_in_the_clear() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("sup3r-s3cret", "a"), Some(token_reply("tok-1", 3600)));
    // A 200 that cannot be cached (no expires_in) still carries a token; its outcome is
    // shared with waiters on other workers through the flight record.
    exchange(
        &gate,
        &form(),
        &body("sup3r-s3cret", "b"),
        Some(HttpReply {
            status: 200,
            headers: vec![],
            body: br#"{"access_token":"tok-uncacheable"}"#.to_vec(),
        }),
    );
    let stored = String::from_utf8_lossy(&host.stored_bytes()).into_owned();
    for clear in ["sup3r-s3cret", "tok-1", "tok-uncacheable", "access_token"] {
        assert!(!stored.contains(clear), "{clear} is stored in the clear");
    }
    assert!(host.keys().iter().all(|k| k.starts_with("tokengate:") && !k.contains("c1")));
}

#[test]
fn token_below_the_floor_is_fetched_again() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 3)));
    host.advance_ms(1_000);
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(hit.header(CACHE_HEADER), Some("hit"));
    assert!(json_of(&hit)["expires_in"].as_u64().unwrap() <= 2);
    host.advance_ms(1_600);
    let again = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-2", 3)));
    assert_eq!(again.header(CACHE_HEADER), Some("miss"));
    assert_eq!(json_of(&again)["access_token"], "tok-2");
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn expiry_counts_from_when_the_call_started() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let (_, call) = expect_call(&gate, &form(), &body("s1", "a"));
    host.advance_ms(2_000); // a slow IdP
    gate.finish_call(call.as_ref().unwrap(), Some(&token_reply("tok-1", 10)));
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(json_of(&hit)["expires_in"], 8);
}

#[test]
fn only_valid_200_token_responses_are_cached() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let no_expiry = HttpReply { status: 200, headers: vec![], body: br#"{"access_token":"x"}"#.to_vec() };
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(no_expiry));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600)));
    assert_eq!(host.calls().len(), 2);
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), None).header(CACHE_HEADER), Some("hit"));
}

#[test]
fn idp_errors_are_relayed_with_status_body_and_retry_after_and_one_meaning_of_rate_limit_headers() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let reply = HttpReply {
        status: 429,
        headers: vec![
            ("content-type".into(), "application/json; charset=utf-8".into()),
            ("retry-after".into(), "7".into()),
            ("x-ratelimit-reset".into(), "1700000007".into()),
        ],
        body: br#"{"error":"too_many_requests","error_description":"slow down"}"#.to_vec(),
    };
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(reply.clone()));
    assert_eq!(r.status, 429);
    assert_eq!(r.body, reply.body);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(r.header("retry-after"), Some("7"));
    // The IdP's x-ratelimit-* are the tenant's, not this client's: they go to the usage
    // report, never beside (or instead of) the client's own.
    assert_eq!(r.header("x-ratelimit-reset"), None);
    let limited = self::config(
        json!({"rate_limit": {"default": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "1m"}}}),
    );
    let limited_gate = Gate::new(&limited, &host, "other");
    let r =
        exchange(&limited_gate, &form(), &body("s1", "b"), Some(HttpReply { status: 400, ..reply.clone() }));
    assert_eq!(r.status, 400);
    let resets: Vec<&str> =
        r.headers.iter().filter(|(n, _)| n == "x-ratelimit-reset").map(|(_, v)| v.as_ref()).collect();
    assert_eq!(resets, vec![(T0 / 1000).to_string().as_str()], "the client's bucket only (full: now)");
    // A JSON 5xx from the IdP is its answer, relayed (once the 429's back-off is over).
    host.advance_ms(8_000);
    let r = exchange(
        &gate,
        &form(),
        &body("s1", "a"),
        Some(HttpReply { status: 500, headers: vec![], body: br#"{"error":"server_error"}"#.to_vec() }),
    );
    assert_eq!(r.status, 500);
}

#[test]
fn unreachable_idp_is_503_temporarily_unavailable() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    for reply in [
        None,
        Some(HttpReply { status: 503, headers: vec![], body: b"no healthy upstream".to_vec() }),
        Some(HttpReply {
            status: 503,
            headers: vec![],
            body: b"upstream connect error or disconnect/reset before headers".to_vec(),
        }),
    ] {
        let r = exchange(&gate, &form(), &body("s1", "a"), reply);
        assert_eq!(r.status, 503);
        assert_eq!(json_of(&r)["error"], "temporarily_unavailable");
        assert_eq!(r.header(CACHE_HEADER), Some("miss"));
    }
    host.fail_dispatch(true);
    let r = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(r.status, 503);
    assert_eq!(host.calls().len(), 3);
}

#[test]
fn forwarded_grants_are_never_cached() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let assertion =
        "grant_type=client_credentials&client_id=c1&client_assertion_type=jwt&client_assertion=eyJ";
    for _ in 0..2 {
        let r = exchange(&gate, &form(), assertion, Some(token_reply("tok", 3600)));
        assert_eq!(r.header(CACHE_HEADER), Some("bypass"));
        let r = exchange(
            &gate,
            &form(),
            "grant_type=refresh_token&refresh_token=r",
            Some(token_reply("tok", 3600)),
        );
        assert_eq!(r.header(CACHE_HEADER), Some("bypass"));
    }
    // Each went on to the IdP through the route, none as a call of tokengate's own.
    assert_eq!((host.calls().len(), host.metric(Metric::IdpCalls)), (0, 4));
    assert!(!host.keys().iter().any(|k| k.contains(":token:")), "nothing cached");
}

#[test]
fn bad_requests_get_oauth_errors_and_never_reach_the_idp() {
    let host = FakeHost::new(T0);
    let config = config(json!({"max_body_bytes": 64}));
    let gate = Gate::new(&config, &host, "tokengate");
    let r = exchange(&gate, &form(), &"a".repeat(65), None);
    assert_eq!(r.status, 413);
    assert_eq!(json_of(&r)["error"], "invalid_request");
    let r = exchange(&gate, &form(), "grant_type=client_credentials&client_id=%zz", None);
    assert_eq!(r.status, 400);
    assert_eq!(json_of(&r)["error"], "invalid_request");
    assert_eq!(r.header(CACHE_HEADER), Some("bypass"));
    assert!(host.calls().is_empty());
}

#[test]
fn idp_call_carries_the_original_request() {
    let host = FakeHost::new(T0);
    let config = config(
        json!({"upstream": {"cluster": "idp", "authority": "tenant.example", "path": "/token", "timeout": "2s", "key_header": "x-tokengate-key"}}),
    );
    let gate = Gate::new(&config, &host, "tokengate");
    let head = RequestHead {
        content_type: Some("application/json; charset=utf-8".into()),
        authorization: Some("Basic YzE6czE=".into()),
        dpop: None,
        ..Default::default()
    };
    let json_body = r#"{"grant_type":"client_credentials","audience":"a"}"#;
    let (waiter, keyed) = expect_call(&gate, &head, json_body);
    let call = &keyed.as_ref().unwrap().call;
    assert_eq!(call.cluster, "idp");
    assert_eq!(call.timeout_ms, 2000);
    assert_eq!(call.body, json_body.as_bytes());
    let header = |n: &str| call.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(header(":path"), Some("/token"));
    assert_eq!(header(":authority"), Some("tenant.example"));
    assert_eq!(header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(header("authorization"), Some("Basic YzE6czE="));
    assert_eq!(header("x-tokengate-key"), Some(waiter.fingerprint.to_hex()).as_deref());
}

// ---- limits, coalescing, refresh-ahead, serve-stale, negative cache (issue 3) ----

#[test]
fn concurrent_misses_make_one_call_and_the_others_are_coalesced() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let (mut owner, call) = expect_call(&gate, &form(), &body("s1", "a"));
    assert!(owner.owner && call.is_some());
    let joined: Vec<(Waiter, Option<KeyedCall>)> =
        (0..5).map(|_| expect_call(&gate, &form(), &body("s1", "a"))).collect();
    assert!(joined.iter().all(|(w, call)| !w.owner && call.is_none()));
    let mut waiters: Vec<Waiter> = joined.into_iter().map(|(w, _)| w).collect();
    // Still in flight: nobody is answered yet.
    assert_eq!(gate.answer(&mut waiters[0], None), Answer::Pending);
    let outcome = gate.finish_call(call.as_ref().unwrap(), Some(&token_reply("tok-1", 3600)));
    let first = gate.answer(&mut owner, Some(&outcome)).ready().unwrap();
    assert_eq!(first.header(CACHE_HEADER), Some("miss"));
    for w in &mut waiters {
        let r = gate.answer(w, None).ready().unwrap();
        assert_eq!(r.header(CACHE_HEADER), Some("coalesced"));
        assert_eq!(json_of(&r)["access_token"], "tok-1");
    }
}

/// Another worker's call for the key finishes between this request's read of the cache
/// and its taking the flight (before any of its writes): the token it stored is served,
/// never fetched a second time.
#[test]
fn a_call_finished_between_the_cache_read_and_the_flight_is_not_made_again() {
    for nth in 0..12 {
        let host = FakeHost::new(T0);
        let config = config(json!({}));
        let gate = Gate::new(&config, &host, "tokengate");
        // The client's record exists: the interleaving lands in this request's own writes.
        exchange(&gate, &form(), &body("s1", "b"), Some(token_reply("tok-b", 3600)));
        let other_config = config.clone();
        host.interleave_before_set(nth, move |other| {
            let gate = Gate::new(&other_config, other, "tokengate");
            // Interleaved after this request took the flight, the other one joins it instead.
            let plan = gate.handle(&form(), body("s1", "a").as_bytes());
            if let (Outcome::Wait(_), Some(call)) = (&plan.outcome, &plan.call) {
                run_call(&gate, call, None);
                gate.finish_call(call, Some(&token_reply("tok-a", 3600)));
            }
        });
        let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-a2", 3600)));
        host.clear_interleaving();
        assert_eq!(r.status, 200, "interleaved before set {nth}");
        let calls_for_a = host.calls().iter().filter(|c| c.body.ends_with(b"audience=a")).count();
        assert_eq!(calls_for_a, 1, "interleaved before set {nth}: {:?}", r.header(CACHE_HEADER));
        let token = json_of(&r)["access_token"].as_str().unwrap().to_owned();
        assert!(token == "tok-a" || token == "tok-a2", "interleaved before set {nth}");
    }
}

/// The same for refresh-ahead: a refresh another worker finished after this hit read the
/// cache is not made again.
#[test]
fn a_refresh_finished_between_the_cache_read_and_the_flight_is_not_made_again() {
    for nth in 0..8 {
        let host = FakeHost::new(T0);
        let config = config(json!({"cache": {"min_remaining_ttl": "1s", "refresh_ahead_ratio": 0.5}}));
        let gate = Gate::new(&config, &host, "tokengate");
        exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 100)));
        host.advance_ms(60_000);
        let other_config = config.clone();
        host.interleave_before_set(nth, move |other| {
            let gate = Gate::new(&other_config, other, "tokengate");
            if let Some(call) = gate.handle(&form(), body("s1", "a").as_bytes()).call {
                run_call(&gate, &call, None);
                gate.finish_call(&call, Some(&token_reply("tok-2", 100)));
            }
        });
        let plan = gate.handle(&form(), body("s1", "a").as_bytes());
        host.clear_interleaving();
        assert!(matches!(plan.outcome, Outcome::Respond(ref r) if r.status == 200), "{nth}");
        let refreshes = host.calls().len() - 1 + usize::from(plan.call.is_some());
        assert_eq!(refreshes, 1, "interleaved before set {nth}");
    }
}

#[test]
fn waiters_share_an_idp_refusal_and_it_is_remembered() {
    let host = FakeHost::new(T0);
    let config = config(json!({"cache": {"min_remaining_ttl": "1s", "negative_ttl": "10s"}}));
    let gate = Gate::new(&config, &host, "tokengate");
    let (_, owner_call) = expect_call(&gate, &form(), &body("bad", "a"));
    let mut waiter = expect_wait(&gate, &form(), &body("bad", "a"));
    let denied = HttpReply {
        status: 401,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":"access_denied","error_description":"Unauthorized"}"#.to_vec(),
    };
    gate.finish_call(owner_call.as_ref().unwrap(), Some(&denied));
    let r = gate.answer(&mut waiter, None).ready().unwrap();
    assert_eq!((r.status, r.header(CACHE_HEADER)), (401, Some("coalesced")));
    assert_eq!(json_of(&r)["error"], "access_denied");
    // Twenty retries within negative_ttl: answered locally.
    for _ in 0..20 {
        host.advance_ms(100);
        let r = exchange(&gate, &form(), &body("bad", "a"), None);
        assert_eq!((r.status, r.header(CACHE_HEADER)), (401, Some("negative")));
    }
    host.advance_ms(9_000);
    let r = exchange(&gate, &form(), &body("bad", "a"), Some(denied));
    assert_eq!(r.header(CACHE_HEADER), Some("miss"));
}

#[test]
fn a_waiter_gives_up_at_the_deadline_with_503() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let _owner = expect_wait(&gate, &form(), &body("s1", "a"));
    let mut waiter = expect_wait(&gate, &form(), &body("s1", "a"));
    host.advance_ms(5_000);
    assert_eq!(gate.answer(&mut waiter, None), Answer::Pending);
    host.advance_ms(1_000);
    let r = gate.answer(&mut waiter, None).ready().unwrap();
    assert_eq!((r.status, r.header(CACHE_HEADER)), (503, Some("coalesced")));
    // The abandoned flight does not wedge the key: the next request owns a new call.
    assert!(expect_wait(&gate, &form(), &body("s1", "a")).owner);
}

#[test]
fn rate_limit_allows_five_then_429_and_other_clients_are_unaffected() {
    let host = FakeHost::new(T0);
    let config = config(
        json!({"rate_limit": {"default": {"max_tokens": 30, "tokens_per_fill": 30, "fill_interval": "60s"},
        "clients": {"c1": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "60s"}}}}),
    );
    let gate = Gate::new(&config, &host, "tokengate");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600)));
        statuses.push(r.status);
        if i == 7 {
            assert_eq!(json_of(&r)["error"], "too_many_requests");
            assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
            assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry));
            let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
            assert!(reset > T0 / 1000 && reset <= T0 / 1000 + 60);
            assert_eq!(r.header("ratelimit-policy"), Some("\"client\";q=5;w=60"));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let other = "grant_type=client_credentials&client_id=c2&client_secret=s2";
    let r = exchange(&gate, &form(), other, Some(token_reply("tok2", 3600)));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29"));
    // After the fill interval c1 is served again (from the cache).
    host.advance_ms(60_000);
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), None).header(CACHE_HEADER), Some("hit"));
}

#[test]
fn quota_of_two_blocks_the_third_audience_but_serves_cached_tokens() {
    let host = FakeHost::new(T0);
    let config = config(json!({"quota": {"default": {"tokens": 2, "window": "1d"}}}));
    let gate = Gate::new(&config, &host, "tokengate");
    for audience in ["a", "b"] {
        let r = exchange(&gate, &form(), &body("s1", audience), Some(token_reply(audience, 3600)));
        assert_eq!(r.status, 200);
    }
    let r = exchange(&gate, &form(), &body("s1", "c"), Some(token_reply("c", 3600)));
    assert_eq!(r.status, 429);
    assert_eq!(json_of(&r)["error"], "too_many_requests");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 86_400);
    assert!(r.header("auth0-client-quota-limit").unwrap().starts_with("b=per_day;q=2;r=0;t="));
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!((hit.status, hit.header(CACHE_HEADER)), (200, Some("hit")));
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn refresh_ahead_serves_the_hit_and_starts_one_background_call() {
    let host = FakeHost::new(T0);
    let config = config(json!({"cache": {"min_remaining_ttl": "1s", "refresh_ahead_ratio": 0.5}}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("old", 4)));
    host.advance_ms(1_000);
    let early = gate.handle(&form(), body("s1", "a").as_bytes());
    assert!(early.call.is_none());
    host.advance_ms(1_500);
    let due = gate.handle(&form(), body("s1", "a").as_bytes());
    let background = due.call.expect("a refresh starts");
    let Outcome::Respond(hit) = due.outcome else { panic!("hit expected") };
    assert_eq!(
        (hit.header(CACHE_HEADER), json_of(&hit)["access_token"].as_str()),
        (Some("hit"), Some("old"))
    );
    // While it runs, other hits start no second refresh.
    for _ in 0..3 {
        let d = gate.handle(&form(), body("s1", "a").as_bytes());
        assert!(d.call.is_none());
    }
    gate.finish_call(&background, Some(&token_reply("new", 4)));
    let later = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(json_of(&later)["access_token"], "new");
}

#[test]
fn idp_failure_serves_a_token_with_lifetime_left_as_stale() {
    let host = FakeHost::new(T0);
    let config = config(json!({"cache": {"min_remaining_ttl": "30s"}}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 60)));
    host.advance_ms(40_000); // 20 s left: below the floor, so the IdP is asked
    let failing = HttpReply { status: 500, headers: vec![], body: br#"{"error":"server_error"}"#.to_vec() };
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(failing));
    assert_eq!((r.status, r.header(CACHE_HEADER)), (200, Some("stale")));
    assert_eq!(json_of(&r)["access_token"], "tok");
    let r = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(r.header(CACHE_HEADER), Some("stale"));
    // Another key with nothing cached: 503.
    let r = exchange(&gate, &form(), &body("s1", "zzz"), None);
    assert_eq!(r.status, 503);
}

// ---- hostile traffic (issue 4) ----

fn table_of(key: &str) -> &str {
    key.split(':').nth(1).unwrap_or_default()
}

/// Made-up clients and secrets, each asking once and refused by the IdP: every shared-data
/// table stays within its slot count, and a real client's token and limits survive.
#[test]
fn a_flood_of_bogus_identities_leaves_every_table_bounded() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "cache": {"max_entries": 64, "min_remaining_ttl": "1s"},
        "rate_limit": {"default": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "1h"}},
        "quota": {"default": {"tokens": 100, "window": "1d"}}
    }));
    let gate = Gate::new(&config, &host, "tokengate");
    let real = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("real-token", 3600)));
    assert_eq!(real.header("x-ratelimit-remaining"), Some("4"));
    let denied = HttpReply { status: 401, headers: vec![], body: br#"{"error":"access_denied"}"#.to_vec() };
    for i in 0..20_000u32 {
        let bogus = format!("grant_type=client_credentials&client_id=bogus-{i}&client_secret=guess-{i}");
        let decision = gate.handle(&form(), bogus.as_bytes());
        if let (Outcome::Wait(_), Some(call)) = (&decision.outcome, &decision.call) {
            gate.finish_call(call, Some(&denied));
        }
        if i % 97 == 0 {
            host.advance_ms(1);
        }
    }
    assert_tables_bounded(&host, 64);
    // The real client's token is still a hit, and its bucket was not reset by the flood.
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(
        (hit.header(CACHE_HEADER), json_of(&hit)["access_token"].as_str()),
        (Some("hit"), Some("real-token"))
    );
    assert_eq!(hit.header("x-ratelimit-remaining"), Some("3"));
}

/// Every table holds at most `slots` keys (plus the two single bookkeeping keys).
fn assert_tables_bounded(host: &FakeHost, slots: usize) {
    let keys = host.keys();
    let mut per_table: std::collections::BTreeMap<&str, usize> = Default::default();
    for key in &keys {
        *per_table.entry(table_of(key)).or_default() += 1;
    }
    for (table, count) in &per_table {
        let bound = if ["create-lock", "workers"].contains(table) { 1 } else { slots };
        assert!(*count <= bound, "{table}: {count} keys");
    }
}

/// A million distinct identities through every table: the key space never grows past the
/// slot count.
#[test]
fn a_million_identities_fit_in_the_configured_slots() {
    use crate::cache::{CacheEntry, NegativeEntry, NegativeTable, TokenTable};
    use crate::clients::{ClientTable, Standing};
    use crate::flight::FlightTable;
    use crate::seal::SealKey;
    use crate::store::Store;

    const SLOTS: u32 = 1000;
    let host = FakeHost::new(T0);
    let store = Store::new(&host, &host, "tokengate");
    let tokens = TokenTable::new(&host, "tokengate", SLOTS);
    let negatives = NegativeTable::new(&host, "tokengate", SLOTS);
    let flights = FlightTable::new(&store, "tokengate", SLOTS);
    let guests = ClientTable::new(&store, "tokengate", Standing::Guest, SLOTS);
    let rule = crate::config::BucketRule { max_tokens: 5, tokens_per_fill: 5, fill_interval_ms: 60_000 };
    for i in 0..1_000_000u64 {
        let mut fp = [0u8; 32];
        fp[..8].copy_from_slice(&i.to_le_bytes());
        fp[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        fp[16..24].copy_from_slice(&i.rotate_left(29).to_le_bytes());
        let identity =
            crate::fingerprint::Identity { fingerprint: Fingerprint(fp), seal_key: SealKey([1; 32]) };
        let now = T0 + i;
        let token = format!(r#"{{"access_token":"t{i}","expires_in":60}}"#);
        let entry =
            CacheEntry::from_token_response(&identity, 200, token.as_bytes(), now, None, [2; 12]).unwrap();
        tokens.put(&entry, now).unwrap();
        let negative = NegativeEntry::from_refusal(identity.fingerprint, 401, b"{}", now, 10_000).unwrap();
        negatives.put(&negative, now).unwrap();
        if let Ok(crate::flight::Begin::Owner { generation }) =
            flights.begin(&identity.fingerprint, now, now + 5)
        {
            let outcome = crate::flight::CallOutcome {
                status: 401,
                cached: false,
                unreachable: false,
                headers: vec![],
                body: String::new(),
            };
            flights.finish(&identity.fingerprint, generation, outcome).unwrap();
        }
        guests.admit(&format!("client-{i}"), now, true, (Some(&rule), None), None).unwrap();
    }
    assert_tables_bounded(&host, SLOTS as usize);
}

/// A configured client is trusted from its first request: guests never evict it.
#[test]
fn configured_clients_keep_their_limits_under_a_flood_of_guests() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "cache": {"max_entries": 4, "min_remaining_ttl": "1s"},
        "rate_limit": {"default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1h"},
                       "clients": {"c1": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1h"}}}
    }));
    let gate = Gate::new(&config, &host, "tokengate");
    let denied = HttpReply { status: 401, headers: vec![], body: b"{}".to_vec() };
    for _ in 0..3 {
        let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600)));
        assert_eq!(r.status, 200);
    }
    for i in 0..10_000 {
        host.advance_ms(1);
        exchange(
            &gate,
            &form(),
            &format!("grant_type=client_credentials&client_id=g{i}&client_secret=x"),
            Some(denied.clone()),
        );
    }
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(denied));
    assert_eq!(r.status, 429, "c1's spent bucket must not be reset by guests");
}

// ---- the per-worker index (issue 8) ----

#[test]
fn repeated_requests_are_served_from_the_worker_index_and_count_the_same() {
    use std::cell::RefCell;

    use crate::cache::LocalIndex;

    let host = FakeHost::new(T0);
    let config = config(
        json!({"rate_limit": {"default": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1h"}}}),
    );
    let index = RefCell::new(LocalIndex::new(100));
    let gate = Gate::new(&config, &host, "tokengate").with_local_index(&index);
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    assert!(index.borrow().is_empty(), "a miss does not fill the index");
    let first_hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(index.borrow().len(), 1, "a shared-cache hit fills it");
    host.advance_ms(1_500);
    let indexed = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(indexed.header(CACHE_HEADER), Some("hit"));
    assert_eq!(json_of(&indexed)["access_token"], json_of(&first_hit)["access_token"]);
    assert_eq!(json_of(&indexed)["expires_in"], 3598);
    // The rate limit still counts indexed hits.
    let limited = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(limited.status, 429);
    // A wrong secret never matches an indexed request (here it is also over the limit).
    let denied = HttpReply { status: 401, headers: vec![], body: b"{}".to_vec() };
    let wrong = exchange(&gate, &form(), &body("s2", "a"), Some(denied));
    assert!(!String::from_utf8_lossy(&wrong.body).contains("tok-1"));
    assert_eq!(host.metric(crate::host::Metric::Hits), 2);
    assert_eq!(host.metric(crate::host::Metric::Requests), 5);
}

#[test]
fn a_token_shorter_than_the_floor_is_still_the_callers_answer() {
    let host = FakeHost::new(T0);
    let config = config(json!({"cache": {"min_remaining_ttl": "30s"}}));
    let gate = Gate::new(&config, &host, "tokengate");
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("short", 10)));
    assert_eq!((r.status, r.header(CACHE_HEADER)), (200, Some("miss")));
    assert_eq!(json_of(&r)["access_token"], "short");
}

/// The usage row of client `c1` in the report.
fn usage_of_c1(gate: &Gate) -> Value {
    let report = json_of(&gate.usage(None, None, "/tokengate/usage"));
    let row =
        report["clients"].as_array().and_then(|rows| rows.iter().find(|r| r["client_id"] == "c1").cloned());
    row.unwrap_or_else(|| json!({"hits": 0}))
}

#[test]
fn hits_without_limits_wait_in_the_worker_until_the_flush() {
    let host = FakeHost::new(T0);
    let config = config(json!({"usage_path": "/tokengate/usage"}));
    let index = RefCell::new(LocalIndex::new(100));
    let pending = RefCell::new(PendingHits::new(100));
    let gate = Gate::new(&config, &host, "tokengate").with_local_index(&index).with_pending_hits(&pending);
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    let writes = host.writes();
    for _ in 0..5 {
        let hit = exchange(&gate, &form(), &body("s1", "a"), None);
        assert_eq!(hit.header(CACHE_HEADER), Some("hit"));
    }
    // Every hit was answered without writing shared data... (the first one, a shared-cache
    // hit, fills the index: still no write).
    assert_eq!(host.writes(), writes, "no shared write per hit");
    assert_eq!(usage_of_c1(&gate)["hits"], 0);
    // ...and the flush adds them all, with one write.
    gate.flush_hits();
    assert_eq!(host.writes(), writes + 1);
    let row = usage_of_c1(&gate);
    assert_eq!((row["hits"].as_u64(), row["requests"].as_u64()), (Some(5), Some(6)));
    assert!(pending.borrow().is_empty());
    assert_eq!(host.metric(crate::host::Metric::Hits), 5, "stats are never deferred");
}

#[test]
fn hits_under_a_quota_are_counted_at_once_then_from_a_snapshot_until_the_flush() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "usage_path": "/tokengate/usage",
        "quota": {"default": {"tokens": 100, "window": "1d"}}
    }));
    let pending = RefCell::new(PendingHits::new(100));
    let gate = Gate::new(&config, &host, "tokengate").with_pending_hits(&pending);
    exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    let quota = hit.header("auth0-client-quota-limit").map(str::to_owned);
    assert!(quota.is_some(), "the quota header comes from the record");
    assert_eq!(usage_of_c1(&gate)["hits"], 1, "the first hit is counted with its read");
    let writes = host.writes();
    let again = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(again.header("auth0-client-quota-limit").map(str::to_owned), quota);
    assert_eq!(host.writes(), writes, "the next hit within a tick reuses what was read");
    gate.flush_hits();
    assert_eq!(usage_of_c1(&gate)["hits"], 2);
}

/// Two workers (two gates with their own pending state) on one shared store.
fn two_workers<'a>(
    config: &'a Config,
    host: &'a FakeHost,
    pending: &'a [RefCell<PendingHits>; 2],
) -> [Gate<'a>; 2] {
    [0, 1].map(|w| Gate::new(config, host, "tokengate").with_pending_hits(&pending[w]))
}

fn remaining(r: &Response) -> Option<u64> {
    r.header("x-ratelimit-remaining").and_then(|v| v.parse().ok())
}

#[test]
fn a_small_bucket_stays_exact_request_by_request_across_workers() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "rate_limit": {"default": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "60s"}}
    }));
    let pending = [RefCell::new(PendingHits::new(100)), RefCell::new(PendingHits::new(100))];
    let workers = two_workers(&config, &host, &pending);
    let miss = exchange(&workers[0], &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    assert_eq!(remaining(&miss), Some(4));
    let answers: Vec<(u16, Option<u64>)> = (0..6)
        .map(|i| exchange(&workers[i % 2], &form(), &body("s1", "a"), None))
        .map(|r| (r.status, remaining(&r)))
        .collect();
    assert_eq!(
        answers,
        [(200, Some(3)), (200, Some(2)), (200, Some(1)), (200, Some(0)), (429, Some(0)), (429, Some(0))]
    );
}

#[test]
fn a_large_bucket_is_leased_per_worker_and_counts_every_request_exactly() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "usage_path": "/tokengate/usage",
        "rate_limit": {"default": {"max_tokens": 10000, "tokens_per_fill": 10000, "fill_interval": "60s"}}
    }));
    let pending = [RefCell::new(PendingHits::new(100)), RefCell::new(PendingHits::new(100))];
    let workers = two_workers(&config, &host, &pending);
    exchange(&workers[0], &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    let writes = host.writes();
    let mut last = [u64::MAX; 2];
    for i in 0..300 {
        let r = exchange(&workers[i % 2], &form(), &body("s1", "a"), None);
        assert_eq!(r.status, 200);
        let left = remaining(&r).unwrap();
        assert!(left < last[i % 2], "each worker's remaining goes down");
        last[i % 2] = left;
        if i % 40 == 39 {
            host.advance_ms(25); // past a lease's life: the next hit takes a new one
        }
    }
    assert!(host.writes() - writes < 30, "{} shared writes for 300 hits", host.writes() - writes);
    for gate in &workers {
        gate.flush_hits();
    }
    // Every token not spent went back: the bucket holds 10000 - 1 miss - 300 hits.
    let table = workers[0].clients(Standing::Trusted);
    let rule = config.rate_limit.as_ref().and_then(|l| l.for_client("c1")).copied().unwrap();
    let state = table
        .admit("c1", crate::host::Clock::now_ms(&host), false, (Some(&rule), None), None)
        .unwrap()
        .unwrap();
    assert_eq!(state.rate.unwrap().1.remaining, 10_000 - 301 - 1);
    // Requests: the miss, 300 hits and the check above.
    let row = usage_of_c1(&workers[0]);
    assert_eq!((row["requests"].as_u64(), row["hits"].as_u64()), (Some(302), Some(300)));
}

#[test]
fn a_hit_carries_its_decision_and_client_for_the_access_log() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let miss = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 3600)));
    assert_eq!(miss.header(crate::response::DECISION_HEADER), Some("miss"));
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(hit.header(crate::response::DECISION_HEADER), Some("hit"));
    assert_eq!(hit.header(crate::response::CLIENT_HEADER), Some("c1"));
}

/// The global rate-limit service's OK with a limit of 100 a minute, 42 left, reset in 30 s.
fn service_ok(now: u64) -> crate::rate_limit_service::Verdict {
    use crate::config::BucketRule;
    use crate::limits::BucketDecision;
    crate::rate_limit_service::Verdict {
        over_limit: false,
        rate: Some((
            BucketRule { max_tokens: 100, tokens_per_fill: 100, fill_interval_ms: 60_000 },
            BucketDecision { allowed: true, remaining: 42, next_fill_ms: now + 30_000 },
        )),
    }
}

#[test]
fn the_rate_limit_services_decision_replaces_the_local_bucket() {
    let host = FakeHost::new(T0);
    // Locally c1 may make one request a minute; the service allows more.
    let config = config(
        json!({"rate_limit": {"default": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "60s"}}}),
    );
    let index = RefCell::new(LocalIndex::new(100));
    for n in 0..3 {
        let gate =
            Gate::new(&config, &host, "tokengate").with_local_index(&index).with_global_rate(service_ok(T0));
        assert_eq!(gate.client_id_of(&form(), body("s1", "a").as_bytes()).as_deref(), Some("c1"));
        let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600)));
        assert_eq!(r.status, 200, "request {n}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("42"));
        assert_eq!(r.header("ratelimit"), Some("\"client\";r=42;t=30"));
    }
    // The local bucket was not spent: without the service (it is down) the one request
    // a minute is still there.
    let local = Gate::new(&config, &host, "tokengate");
    assert_eq!(exchange(&local, &form(), &body("s1", "a"), None).status, 200);
    assert_eq!(exchange(&local, &form(), &body("s1", "a"), None).status, 429);
}

#[test]
fn a_request_the_service_refuses_is_429_with_its_reset_and_counted() {
    use crate::config::BucketRule;
    use crate::limits::BucketDecision;
    let host = FakeHost::new(T0);
    let config = config(json!({"usage_path": "/usage"}));
    let gate = Gate::new(&config, &host, "tokengate");
    let verdict = crate::rate_limit_service::Verdict {
        over_limit: true,
        rate: Some((
            BucketRule { max_tokens: 2, tokens_per_fill: 2, fill_interval_ms: 60_000 },
            BucketDecision { allowed: false, remaining: 0, next_fill_ms: T0 + 17_000 },
        )),
    };
    let r = gate.over_global_limit("c1", &verdict);
    assert_eq!((r.status, json_of(&r)["error"].as_str()), (429, Some("too_many_requests")));
    assert_eq!(r.header("retry-after"), Some("17"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-tokengate-decision"), Some("rate_limited"));
    let usage: Value = serde_json::from_slice(&gate.usage(None, None, "/usage").body).unwrap();
    let row = &usage["clients"][0];
    assert_eq!((row["client_id"].as_str(), row["rate_limited"].as_u64()), (Some("c1"), Some(1)));
    // Requests without a client id are not the service's to decide.
    assert_eq!(gate.client_id_of(&form(), b"grant_type=client_credentials"), None);
    assert_eq!(gate.client_id_of(&form(), b"%zz"), None);
}

#[test]
fn a_token_that_cannot_be_stored_is_still_answered_and_the_failed_write_is_counted() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let (mut waiter, call) = expect_call(&gate, &form(), &body("s1", "a"));
    let call = call.unwrap();
    run_call(&gate, &call, None);
    // Every write from here on fails: the token, the outcome.
    host.fail_writes(true);
    let outcome = gate.finish_call(&call, Some(&token_reply("tok-1", 3600)));
    let answer = gate.answer(&mut waiter, Some(&outcome)).ready().unwrap();
    assert_eq!((answer.status, json_of(&answer)["access_token"].clone()), (200, json!("tok-1")));
    assert!(host.metric(Metric::StoreErrors) >= 1, "the lost writes are counted");
    assert_eq!(host.metric(Metric::CacheEntries), 0);
    // Nothing was cached: the next request calls the IdP again.
    host.fail_writes(false);
    assert!(matches!(gate.handle(&form(), body("s1", "a").as_bytes()).outcome, Outcome::Wait(_)));
}

#[test]
fn max_ttl_caps_how_long_a_token_is_served_and_refresh_ahead_follows_the_cap() {
    let host = FakeHost::new(T0);
    let config = config(json!({"cache": {"min_remaining_ttl": "1s", "max_ttl": "60s",
                                        "refresh_ahead_ratio": 0.1}}));
    let gate = Gate::new(&config, &host, "tokengate");
    let miss = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-1", 86_400)));
    assert_eq!(miss.header(CACHE_HEADER), Some("miss"));
    host.advance_ms(10_000);
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(hit.header(CACHE_HEADER), Some("hit"));
    assert_eq!(json_of(&hit)["expires_in"], 50, "the capped lifetime's seconds left");
    // The last tenth of the capped lifetime: served, and one refresh starts.
    host.advance_ms(45_000);
    let due = gate.handle(&form(), body("s1", "a").as_bytes());
    assert!(due.call.is_some(), "refresh-ahead against the capped lifetime");
    assert!(matches!(due.outcome, Outcome::Respond(ref r) if r.header(CACHE_HEADER) == Some("hit")));
    // Past the cap (and below the floor): a miss, whatever expires_in the IdP gave.
    host.advance_ms(5_000);
    let plan = gate.handle(&form(), body("s1", "a").as_bytes());
    assert!(!matches!(plan.outcome, Outcome::Respond(ref r) if r.header(CACHE_HEADER) == Some("hit")));
}

#[test]
fn a_flight_that_cannot_be_taken_is_counted_and_the_call_goes_uncoordinated() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    host.fail_writes(true);
    let (waiter, call) = expect_call(&gate, &form(), &body("s1", "a"));
    assert_eq!(waiter.generation, None, "uncoordinated");
    assert!(call.is_some(), "the call is still made");
    // The client record's count and the flight: both writes lost, both counted.
    assert_eq!(host.metric(Metric::StoreErrors), 2);
}

#[test]
fn an_unknown_clients_bucket_that_cannot_be_written_is_counted() {
    let host = FakeHost::new(T0);
    let config = config(json!({"rate_limit": {"default": {"max_tokens": 5, "tokens_per_fill": 5,
                                                          "fill_interval": "60s"}}}));
    let gate = Gate::new(&config, &host, "tokengate");
    host.fail_writes(true);
    let before = host.metric(Metric::StoreErrors);
    let _ = gate.handle(&form(), body("s1", "a").as_bytes());
    let lost = host.metric(Metric::StoreErrors) - before;
    host.fail_writes(false);
    let gate_ok = Gate::new(&config, &host, "tokengate");
    let _ = gate_ok.handle(&form(), body("s2", "b").as_bytes());
    assert!(
        host.keys().iter().any(|k| k.ends_with(":unknown-clients")),
        "the bucket is written when it can be"
    );
    // Every write of the miss lost and counted, the unknown-clients bucket's among them
    // (it was the one not counted: 3).
    assert_eq!(lost, 4, "every lost write counted");
}
