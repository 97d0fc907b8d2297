//! Who pays for a request (see `proof`): an attacker who knows a client id but not its
//! secret costs that client nothing.

use serde_json::json;

use super::*;

fn denied() -> HttpReply {
    HttpReply {
        status: 401,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":"access_denied","error_description":"Unauthorized"}"#.to_vec(),
    }
}

fn header_u64(r: &Response, name: &str) -> u64 {
    r.header(name).unwrap_or_else(|| panic!("no {name}: {:?}", r.headers)).parse().unwrap()
}

/// Rate limit 3 an hour and a quota of 3 a day for c1.
fn tight() -> Config {
    config(json!({
        "rate_limit": {"clients": {"c1": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1h"}}},
        "quota": {"clients": {"c1": {"tokens": 3, "window": "1d"}}}
    }))
}

#[test]
fn wrong_secrets_spend_neither_the_clients_bucket_nor_its_quota() {
    let host = FakeHost::new(T0);
    let config = tight();
    let gate = Gate::new(&config, &host, "tokengate");
    for i in 0..5 {
        let r = exchange(&gate, &form(), &body(&format!("wrong-{i}"), "a"), Some(denied()));
        assert_eq!(r.status, 401);
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 3, "a refusal is not charged");
    }
    // The same wrong secret again is answered from the negative cache, also free.
    let again = exchange(&gate, &form(), &body("wrong-0", "a"), None);
    assert_eq!(again.header(CACHE_HEADER), Some("negative"));
    let right = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600)));
    assert_eq!(right.status, 200, "{:?}", String::from_utf8_lossy(&right.body));
    assert_eq!(header_u64(&right, "x-ratelimit-remaining"), 2);
    assert_eq!(right.header("auth0-client-quota-limit").map(|q| q.contains(";r=2;")), Some(true));
}

#[test]
fn proven_credentials_are_not_refused_for_someone_elses_unproven_calls() {
    let host = FakeHost::new(T0);
    let config = tight();
    let gate = Gate::new(&config, &host, "tokengate");
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600))).status, 200);
    // The attacker empties c1's unproven bucket (10 calls a minute by default).
    let mut refused = 0;
    for i in 0..12 {
        let r = exchange(&gate, &form(), &body(&format!("guess-{i}"), "a"), Some(denied()));
        if r.status == 429 {
            refused += 1;
            assert!(header_u64(&r, "retry-after") >= 1);
        }
    }
    assert_eq!(refused, 3, "10 unproven calls a minute, the first of them was the real client's");
    let calls = host.calls().len();
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!((hit.status, hit.header(CACHE_HEADER)), (200, Some("hit")));
    assert_eq!(host.calls().len(), calls);
}

#[test]
fn a_proven_key_whose_token_expired_is_fetched_again_despite_guessing() {
    let host = FakeHost::new(T0);
    let config = tight();
    let gate = Gate::new(&config, &host, "tokengate");
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 60))).status, 200);
    for i in 0..12 {
        exchange(&gate, &form(), &body(&format!("guess-{i}"), "a"), Some(denied()));
    }
    host.advance_ms(61_000);
    for i in 12..24 {
        exchange(&gate, &form(), &body(&format!("guess-{i}"), "a"), Some(denied()));
    }
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok-2", 60)));
    assert_eq!((r.status, r.header(CACHE_HEADER)), (200, Some("miss")));
}

#[test]
fn cold_waiters_are_charged_when_the_token_comes_exactly_n_admitted() {
    let host = FakeHost::new(T0);
    let config = config(json!({"rate_limit": {"clients": {
        "c1": {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1h"}}}}));
    let gate = Gate::new(&config, &host, "tokengate");
    let (mut owner, call) = expect_call(&gate, &form(), &body("s1", "a"));
    let mut waiters: Vec<Waiter> = (0..39).map(|_| expect_wait(&gate, &form(), &body("s1", "a"))).collect();
    assert!(owner.charge_on_token && waiters.iter().all(|w| w.charge_on_token));
    let outcome = gate.finish_call(call.as_ref().unwrap(), Some(&token_reply("tok", 3600)));
    let mut statuses = vec![gate.answer(&mut owner, Some(&outcome)).ready().unwrap().status];
    statuses.extend(waiters.iter_mut().map(|w| gate.answer(w, None).ready().unwrap().status));
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30, "{statuses:?}");
}

#[test]
fn a_call_answered_without_a_token_gives_its_quota_unit_back() {
    let host = FakeHost::new(T0);
    let config = config(json!({"quota": {"clients": {"c1": {"tokens": 1, "window": "1d"}}}}));
    let gate = Gate::new(&config, &host, "tokengate");
    let failed = HttpReply { status: 500, headers: vec![], body: br#"{"error":"server_error"}"#.to_vec() };
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(failed)).status, 500);
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), None).status, 503, "unreachable");
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600))).status, 200);
    let spent = exchange(&gate, &form(), &body("s1", "b"), Some(token_reply("tok-b", 3600)));
    assert_eq!(spent.status, 429, "the one unit went to the token issued");
}

#[test]
fn forwarded_grants_spend_the_quota_and_are_refused_over_it() {
    let host = FakeHost::new(T0);
    let config = config(json!({"quota": {"clients": {"c1": {"tokens": 2, "window": "1d"}}}}));
    let gate = Gate::new(&config, &host, "tokengate");
    let refresh = "grant_type=refresh_token&client_id=c1&refresh_token=r1";
    let jwt = "grant_type=client_credentials&client_id=c1&client_assertion_type=x&client_assertion=eyJ";
    assert_eq!(exchange(&gate, &form(), refresh, Some(denied())).status, 401, "no token: unit back");
    assert_eq!(exchange(&gate, &form(), refresh, Some(token_reply("t1", 3600))).status, 200);
    let second = exchange(&gate, &form(), jwt, Some(token_reply("t2", 3600)));
    assert_eq!(second.status, 200);
    let calls = host.calls().len();
    for over in [refresh, jwt] {
        let r = exchange(&gate, &form(), over, Some(token_reply("t3", 3600)));
        assert_eq!(r.status, 429);
        assert_eq!(json_of(&r)["error"], "too_many_requests");
        assert!(r.header("auth0-client-quota-limit").is_some_and(|q| q.contains(";r=0;")), "{:?}", r.headers);
    }
    assert_eq!(host.calls().len(), calls, "over quota, no IdP call");
    // A cacheable request is refused by the same quota.
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("t4", 3600))).status, 429);
}

#[test]
fn invented_client_ids_share_one_bucket_of_idp_calls() {
    let host = FakeHost::new(T0);
    let config = config(json!({"rate_limit": {
        "default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1m"},
        "unknown_clients": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "1m"}}}));
    let gate = Gate::new(&config, &host, "tokengate");
    // c1 is known once the IdP issued it a token.
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600))).status, 200);
    let statuses: Vec<u16> = (0..20)
        .map(|i| {
            let invented = format!("grant_type=client_credentials&client_id=x{i}&client_secret=s");
            exchange(&gate, &form(), &invented, Some(denied())).status
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 16, "{statuses:?}");
    // A known client's new audience is not held back by the flood.
    assert_eq!(exchange(&gate, &form(), &body("s1", "b"), Some(token_reply("tok-b", 3600))).status, 200);
}

#[test]
fn dpop_requests_are_forwarded_with_their_proof_and_never_touch_the_cache() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let dpop = RequestHead { dpop: Some("eyJ.proof.sig".into()), ..form() };
    // A bearer token in the cache is never served to a DPoP request.
    assert_eq!(exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("bearer", 3600))).status, 200);
    let bound = HttpReply {
        status: 200,
        headers: vec![],
        body: json!({"access_token": "bound", "token_type": "DPoP", "expires_in": 3600})
            .to_string()
            .into_bytes(),
    };
    let r = exchange(&gate, &dpop, &body("s1", "a"), Some(bound.clone()));
    assert_eq!(r.header(CACHE_HEADER), Some("bypass"));
    assert_eq!(json_of(&r)["access_token"], "bound");
    // It went on through the route with every header the client sent, its proof included.
    assert_eq!(host.calls().len(), 1, "no keyed call for it");
    // A DPoP-bound token is never stored, even if the IdP sent one without a proof.
    let r = exchange(&gate, &form(), &body("s1", "z"), Some(bound));
    assert_eq!(r.header(CACHE_HEADER), Some("miss"));
    let again = exchange(&gate, &form(), &body("s1", "z"), Some(token_reply("bearer-z", 3600)));
    assert_eq!(again.header(CACHE_HEADER), Some("miss"), "the bound token was not cached");
}

#[test]
fn a_bad_request_from_a_known_client_carries_its_rate_limit_headers() {
    let host = FakeHost::new(T0);
    let config = tight();
    let gate = Gate::new(&config, &host, "tokengate");
    let r = exchange(&gate, &form(), "client_id=c1&client_secret=s1", None);
    assert_eq!(r.status, 400);
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 3);
}

#[test]
fn credentials_proven_once_are_proven_for_every_audience() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "rate_limit": {"default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1m"}}
    }));
    let gate = Gate::new(&config, &host, "tokengate");
    // The real client fetches a token for one audience; an attacker then empties c1's
    // unproven bucket (10 calls a minute).
    assert_eq!(exchange(&gate, &form(), &body("s1", "a0"), Some(token_reply("t0", 3600))).status, 200);
    for i in 0..12 {
        exchange(&gate, &form(), &body(&format!("guess-{i}"), "a0"), Some(denied()));
    }
    // Other audiences with the proven secret: each a miss, none refused.
    for i in 1..=12 {
        let audience = format!("a{i}");
        let r = exchange(&gate, &form(), &body("s1", &audience), Some(token_reply("t", 3600)));
        assert_eq!((r.status, r.header(CACHE_HEADER)), (200, Some("miss")), "audience {audience}");
    }
}

#[test]
fn eleven_audiences_at_start_up_are_not_refused_as_unproven() {
    let host = FakeHost::new(T0);
    // Unproven credentials may cause 10 IdP calls a minute (the default).
    let config = config(json!({
        "rate_limit": {"default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1m"}}
    }));
    let gate = Gate::new(&config, &host, "tokengate");
    for i in 0..11 {
        let audience = format!("https://api-{i}.example.com");
        let r = exchange(&gate, &form(), &body("s1", &audience), Some(token_reply("t", 3600)));
        assert_eq!(r.status, 200, "audience #{i}: {}", String::from_utf8_lossy(&r.body));
    }
}

#[test]
fn an_unproven_refusal_names_itself_with_its_own_bucket_and_count() {
    let host = FakeHost::new(T0);
    let config = config(json!({
        "usage_path": "/tokengate/usage",
        "rate_limit": {
            "clients": {"c1": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1h"}},
            "unproven": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "1m"}
        }
    }));
    let gate = Gate::new(&config, &host, "tokengate");
    for i in 0..2 {
        let r = exchange(&gate, &form(), &body(&format!("guess-{i}"), "a"), Some(denied()));
        assert_eq!(r.header(crate::response::DECISION_HEADER), Some("rejected"), "the IdP's own 401");
        assert_eq!(r.header(CACHE_HEADER), Some("miss"), "it called the IdP");
    }
    let r = exchange(&gate, &form(), &body("guess-2", "a"), Some(denied()));
    assert_eq!(r.status, 429);
    assert_eq!(r.header(crate::response::DECISION_HEADER), Some("unproven"));
    let description = json_of(&r)["error_description"].as_str().unwrap().to_owned();
    assert!(description.contains("rate_limit.unproven"), "{description}");
    assert_eq!(header_u64(&r, "x-ratelimit-limit"), 2, "the unproven bucket's limit, not the client's 3");
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 0);
    assert!(r.header("ratelimit-policy").unwrap().starts_with("\"unproven\";q=2;w=60"));
    assert_eq!(r.headers.iter().filter(|(n, _)| n == "x-ratelimit-limit").count(), 1);
    let row = usage_of_c1(&gate);
    assert_eq!((row["unproven"].as_u64(), row["rejected"].as_u64()), (Some(1), Some(2)), "{row}");
    assert_eq!((row["rate_limited"].as_u64(), row["misses"].as_u64()), (Some(0), Some(0)), "{row}");
    assert_eq!(host.metric(Metric::Unproven), 1);
    assert_eq!(host.metric(Metric::Rejected), 2);
}

#[test]
fn credentials_the_idp_refuses_again_are_no_longer_proven() {
    let host = FakeHost::new(T0);
    let config = tight();
    let gate = Gate::new(&config, &host, "tokengate");
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(token_reply("tok", 3600)));
    assert_eq!((r.status, header_u64(&r, "x-ratelimit-remaining")), (200, 2));
    // The secret is rotated at the IdP: the next call with it is proven, charged, refused.
    let r = exchange(&gate, &form(), &body("s1", "b"), Some(denied()));
    assert_eq!((r.status, header_u64(&r, "x-ratelimit-remaining")), (401, 1));
    // From now on it is unproven: refused by the IdP without costing the client anything.
    for audience in ["c", "d", "e"] {
        let r = exchange(&gate, &form(), &body("s1", audience), Some(denied()));
        assert_eq!((r.status, header_u64(&r, "x-ratelimit-remaining")), (401, 1), "{audience}");
    }
}
