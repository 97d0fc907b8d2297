use serde_json::{Value, json};

use super::*;
use crate::host::fake::FakeHost;
use crate::response::CACHE_HEADER;

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
    RequestHead {
        content_type: Some(FORM.into()),
        authorization: None,
    }
}

fn body(secret: &str, audience: &str) -> String {
    format!("grant_type=client_credentials&client_id=c1&client_secret={secret}&audience={audience}")
}

fn token_reply(token: &str, expires_in: u64) -> IdpReply {
    IdpReply {
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

/// Sends a request; when it needs the IdP, answers with `reply`.
fn exchange(gate: &Gate, head: &RequestHead, body: &str, reply: Option<IdpReply>) -> Response {
    match gate.handle(head, body.as_bytes()) {
        Outcome::Respond(r) => r,
        Outcome::AwaitIdp(pending) => gate.complete(&pending, reply),
    }
}

fn expect_pending(gate: &Gate, head: &RequestHead, body: &str) -> PendingCall {
    match gate.handle(head, body.as_bytes()) {
        Outcome::AwaitIdp(p) => p,
        Outcome::Respond(r) => panic!("answered locally: {r:?}"),
    }
}

#[test]
fn miss_then_hits_serve_the_same_token_with_shrinking_expires_in() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let miss = exchange(
        &gate,
        &form(),
        &body("s1", "a"),
        Some(token_reply("tok-1", 3600)),
    );
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
    let other = exchange(
        &gate,
        &form(),
        &body("s1", "b"),
        Some(token_reply("tok-2", 3600)),
    );
    assert_eq!(other.header(CACHE_HEADER), Some("miss"));
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn wrong_or_missing_secret_never_gets_the_cached_token() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(
        &gate,
        &form(),
        &body("right", "a"),
        Some(token_reply("tok-1", 3600)),
    );
    let denied = IdpReply {
        status: 401,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":"access_denied","error_description":"Unauthorized"}"#.to_vec(),
    };
    let wrong = exchange(&gate, &form(), &body("wrong", "a"), Some(denied.clone()));
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header(CACHE_HEADER), Some("miss"));
    assert_eq!(json_of(&wrong)["error"], "access_denied");
    let missing = exchange(
        &gate,
        &form(),
        "grant_type=client_credentials&client_id=c1&audience=a",
        Some(denied),
    );
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header(CACHE_HEADER), Some("bypass"));
    assert_eq!(host.calls().len(), 3);
}

#[test]
fn the_stored_value_holds_neither_secret_nor_a_key_derived_name() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(
        &gate,
        &form(),
        &body("sup3r-s3cret", "a"),
        Some(token_reply("tok-1", 3600)),
    );
    let stored = String::from_utf8_lossy(&host.stored_bytes()).into_owned();
    assert!(!stored.contains("sup3r-s3cret"));
    assert!(
        host.keys()
            .iter()
            .all(|k| k.starts_with("tokengate:token:"))
    );
}

#[test]
fn token_below_the_floor_is_fetched_again() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    exchange(
        &gate,
        &form(),
        &body("s1", "a"),
        Some(token_reply("tok-1", 3)),
    );
    host.advance_ms(1_000);
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(hit.header(CACHE_HEADER), Some("hit"));
    assert!(json_of(&hit)["expires_in"].as_u64().unwrap() <= 2);
    host.advance_ms(1_600);
    let again = exchange(
        &gate,
        &form(),
        &body("s1", "a"),
        Some(token_reply("tok-2", 3)),
    );
    assert_eq!(again.header(CACHE_HEADER), Some("miss"));
    assert_eq!(json_of(&again)["access_token"], "tok-2");
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn expiry_counts_from_when_the_call_started() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let pending = expect_pending(&gate, &form(), &body("s1", "a"));
    host.advance_ms(2_000); // a slow IdP
    gate.complete(&pending, Some(token_reply("tok-1", 10)));
    let hit = exchange(&gate, &form(), &body("s1", "a"), None);
    assert_eq!(json_of(&hit)["expires_in"], 8);
}

#[test]
fn only_valid_200_token_responses_are_cached() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let no_expiry = IdpReply {
        status: 200,
        headers: vec![],
        body: br#"{"access_token":"x"}"#.to_vec(),
    };
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(no_expiry));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    exchange(
        &gate,
        &form(),
        &body("s1", "a"),
        Some(token_reply("tok", 3600)),
    );
    assert_eq!(host.calls().len(), 2);
    assert_eq!(
        exchange(&gate, &form(), &body("s1", "a"), None).header(CACHE_HEADER),
        Some("hit")
    );
}

#[test]
fn idp_errors_are_relayed_with_status_body_and_rate_limit_headers() {
    let host = FakeHost::new(T0);
    let config = config(json!({}));
    let gate = Gate::new(&config, &host, "tokengate");
    let reply = IdpReply {
        status: 429,
        headers: vec![
            (
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ),
            ("retry-after".into(), "7".into()),
            ("x-ratelimit-reset".into(), "1700000007".into()),
        ],
        body: br#"{"error":"too_many_requests","error_description":"slow down"}"#.to_vec(),
    };
    let r = exchange(&gate, &form(), &body("s1", "a"), Some(reply.clone()));
    assert_eq!(r.status, 429);
    assert_eq!(r.body, reply.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-ratelimit-reset"), Some("1700000007"));
    // A JSON 5xx from the IdP is its answer, relayed.
    let r = exchange(
        &gate,
        &form(),
        &body("s1", "a"),
        Some(IdpReply {
            status: 500,
            headers: vec![],
            body: br#"{"error":"server_error"}"#.to_vec(),
        }),
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
        Some(IdpReply {
            status: 503,
            headers: vec![],
            body: b"no healthy upstream".to_vec(),
        }),
        Some(IdpReply {
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
    assert_eq!(host.calls().len(), 4);
    assert!(host.keys().is_empty());
}

#[test]
fn bad_requests_get_oauth_errors_and_never_reach_the_idp() {
    let host = FakeHost::new(T0);
    let config = config(json!({"max_body_bytes": 64}));
    let gate = Gate::new(&config, &host, "tokengate");
    let r = exchange(&gate, &form(), &"a".repeat(65), None);
    assert_eq!(r.status, 413);
    assert_eq!(json_of(&r)["error"], "invalid_request");
    let r = exchange(
        &gate,
        &form(),
        "grant_type=client_credentials&client_id=%zz",
        None,
    );
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
    };
    let json_body = r#"{"grant_type":"client_credentials","audience":"a"}"#;
    let pending = expect_pending(&gate, &head, json_body);
    let calls = host.calls();
    let call = &calls[0];
    assert_eq!(call.cluster, "idp");
    assert_eq!(call.timeout_ms, 2000);
    assert_eq!(call.body, json_body.as_bytes());
    let header = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(header(":path"), Some("/token"));
    assert_eq!(header(":authority"), Some("tenant.example"));
    assert_eq!(
        header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(header("authorization"), Some("Basic YzE6czE="));
    assert_eq!(
        header("x-tokengate-key"),
        pending.cache_key.map(|k| k.to_hex()).as_deref()
    );
}
