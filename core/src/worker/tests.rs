//! The worker's state machine natively, against the fake host: streams as Envoy would
//! drive them, the root context's wake-ups, ticks and keyed answers, the rate-limit
//! service step and the waiters.

use serde_json::{Value, json};

use super::*;
use crate::host::Metric;
use crate::host::fake::FakeHost;
use crate::response::CACHE_HEADER;

const T0: u64 = 1_700_000_000_000;
const FORM: &str = "application/x-www-form-urlencoded";

fn worker(extra: Value) -> Worker {
    let mut doc = json!({
        "upstream": {"cluster": "idp", "authority": "tenant.example", "timeout": "5s"},
        "cache": {"min_remaining_ttl": "1s"},
        "usage_path": "/usage"
    });
    if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
        d.extend(e);
    }
    Worker::new(Config::from_json(doc.to_string().as_bytes()).unwrap(), "tg")
}

fn headers(method: &str, path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), method.into()),
        (":path".into(), path.into()),
        ("content-type".into(), FORM.into()),
    ]
}

fn form(secret: &str) -> Vec<u8> {
    format!("grant_type=client_credentials&client_id=c1&client_secret={secret}&audience=a").into_bytes()
}

/// A token request as Envoy delivers it: headers, then the whole body.
fn request(worker: &Worker, host: &FakeHost, stream: &mut Stream, body: Vec<u8>) -> Step {
    let step = worker.on_request_headers(host, stream, &headers("POST", "/oauth/token"), false);
    assert!(matches!(step, Step::Continue | Step::Pass(_)), "the headers go on to the buffer filter");
    let size = body.len();
    worker.on_request_body(host, stream, size, true, move || body)
}

/// Is `token` one of the worker's keyed calls in flight?
fn is_keyed_call(worker: &Worker, token: u32) -> bool {
    worker.hub.borrow().calls.iter().any(|(t, then)| *t == token && matches!(then, OnAnswer::Keyed(_)))
}

fn token_reply(token: &str) -> HttpReply {
    HttpReply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})
            .to_string()
            .into_bytes(),
    }
}

fn cache_of(response: &Response) -> &str {
    response.header(CACHE_HEADER).unwrap_or_default()
}

fn access_token(response: &Response) -> String {
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    body["access_token"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_miss_and_a_coalesced_request_wait_for_one_keyed_call_and_the_next_is_a_hit() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let (mut first, mut second) = (Stream::new(1), Stream::new(2));
    assert_eq!(request(&worker, &host, &mut first, form("s1")), Step::Pause);
    assert_eq!(host.wakes(), 1, "the root is woken to dispatch the call");
    assert_eq!(request(&worker, &host, &mut second, form("s1")), Step::Pause);
    assert!(host.calls().is_empty(), "streams never dispatch keyed calls themselves");

    assert!(worker.on_wake(&host).is_empty());
    assert_eq!(host.calls().len(), 1);
    let token = host.calls().len() as u32;
    assert!(is_keyed_call(&worker, token));
    let answers = worker.on_answer(&host, token, Some(&token_reply("tok-1")), &[], None).answers;
    let by_stream: Vec<(StreamId, &str, String)> =
        answers.iter().map(|(s, r)| (*s, cache_of(r), access_token(r))).collect();
    assert_eq!(by_stream, [(1, "miss", "tok-1".into()), (2, "coalesced", "tok-1".into())]);
    assert!(!is_keyed_call(&worker, token));

    let mut third = Stream::new(3);
    let Step::Respond(hit) = request(&worker, &host, &mut third, form("s1")) else { panic!("not answered") };
    assert_eq!((cache_of(&hit), access_token(&hit)), ("hit", "tok-1".into()));
    assert_eq!(host.calls().len(), 1);
}

#[test]
fn a_waiter_whose_client_went_away_gets_no_answer_and_the_others_do() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let (mut gone, mut stays) = (Stream::new(1), Stream::new(2));
    request(&worker, &host, &mut gone, form("s1"));
    request(&worker, &host, &mut stays, form("s1"));
    worker.on_stream_gone(&host, &gone);
    worker.on_wake(&host);
    let answers = worker.on_answer(&host, 1, Some(&token_reply("tok-1")), &[], None).answers;
    assert_eq!(answers.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_keyed_call_that_cannot_be_dispatched_answers_its_waiters_at_once() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let mut stream = Stream::new(7);
    request(&worker, &host, &mut stream, form("s1"));
    host.fail_dispatch(true);
    let answers = worker.on_wake(&host);
    assert_eq!(answers.len(), 1);
    assert_eq!((answers[0].0, answers[0].1.status), (7, 503));
}

#[test]
fn a_waiter_on_another_workers_call_is_answered_on_the_tick() {
    let host = FakeHost::new(T0);
    let (owner, other) = (worker(json!({})), worker(json!({})));
    let (mut a, mut b) = (Stream::new(1), Stream::new(2));
    request(&owner, &host, &mut a, form("s1"));
    // The other worker's request finds the key's call in flight: it waits on shared data.
    assert_eq!(request(&other, &host, &mut b, form("s1")), Step::Pause);
    owner.on_wake(&host);
    assert!(other.on_tick(&host).is_empty(), "still in flight");
    let owners = owner.on_answer(&host, 1, Some(&token_reply("tok-9")), &[], None).answers;
    assert_eq!(owners.len(), 1);
    let answers = other.on_tick(&host);
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].0, cache_of(&answers[0].1), access_token(&answers[0].1)),
        (2, "coalesced", "tok-9".into())
    );
    assert_eq!(host.calls().len(), 1);
}

#[test]
fn a_forwarded_request_goes_on_and_its_answer_gets_tokengates_headers() {
    let (host, worker) = (
        FakeHost::new(T0),
        worker(
            json!({"rate_limit": {"default": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "60s"}}}),
        ),
    );
    host.set_downstream_address(Some("192.0.2.7:40000"));
    let mut stream = Stream::new(4);
    let body =
        b"grant_type=client_credentials&client_id=c1&client_assertion_type=jwt&client_assertion=eyJ".to_vec();
    // The headers go on with the client's address in Auth0's header.
    let expected = vec![("auth0-forwarded-for".to_owned(), Some("192.0.2.7".to_owned()))];
    let step = worker.on_request_headers(&host, &mut stream, &headers("POST", "/oauth/token"), false);
    assert_eq!(step, Step::Pass(expected));
    // Then the request itself, with no call of tokengate's own.
    assert_eq!(worker.on_request_body(&host, &mut stream, body.len(), true, move || body), Step::Continue);
    assert!(host.calls().is_empty());
    assert!(stream.awaits_idp_answer());
    let idp_answer = [
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-ratelimit-limit".to_owned(), "1000".to_owned()),
    ];
    let ResponseStep::Amend { remove, set } = worker.on_response_headers(&host, &mut stream, &idp_answer)
    else {
        panic!("the IdP's answer is amended");
    };
    assert!(remove.contains(&"x-ratelimit-limit"), "the IdP's limits are not the client's");
    let set_value = |name: &str| set.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_string());
    assert_eq!(set_value(CACHE_HEADER).as_deref(), Some("bypass"));
    assert_eq!(set_value("x-ratelimit-limit").as_deref(), Some("5"), "the client's own bucket");
    assert_eq!(set_value("x-ratelimit-remaining").as_deref(), Some("4"), "charged for the token");
    assert!(!stream.awaits_idp_answer());
    assert_eq!(worker.on_response_headers(&host, &mut stream, &idp_answer), ResponseStep::Continue);
    // A local reply or another route's response is not tokengate's.
    assert_eq!(worker.on_response_headers(&host, &mut Stream::new(5), &idp_answer), ResponseStep::Continue);
}

#[test]
fn a_forwarded_request_to_an_unreachable_idp_gets_a_503_in_the_oauth_shape() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let mut stream = Stream::new(4);
    let body = b"grant_type=refresh_token&client_id=c1&refresh_token=r".to_vec();
    assert_eq!(request(&worker, &host, &mut stream, body), Step::Continue);
    let router_reply =
        [(":status".to_owned(), "503".to_owned()), ("content-type".to_owned(), "text/plain".to_owned())];
    let ResponseStep::Replace(response) = worker.on_response_headers(&host, &mut stream, &router_reply)
    else {
        panic!("replaced");
    };
    assert_eq!(response.status, 503);
    assert_eq!(serde_json::from_slice::<Value>(&response.body).unwrap()["error"], "temporarily_unavailable");
    assert_eq!(host.metric(Metric::IdpErrors), 1);
}

#[test]
fn other_requests_pass_and_refusals_are_answered_from_the_headers() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let mut stream = Stream::new(1);
    assert_eq!(worker.on_request_headers(&host, &mut stream, &headers("GET", "/api"), true), Step::Continue);
    assert_eq!(worker.on_request_body(&host, &mut stream, 10, true, Vec::new), Step::Continue);
    let Step::Respond(wrong) =
        worker.on_request_headers(&host, &mut Stream::new(2), &headers("GET", "/OAUTH/token/"), true)
    else {
        panic!("a token path variant is refused")
    };
    assert_eq!((wrong.status, wrong.header("allow")), (400, Some("POST")));
    let mut large = headers("POST", "/oauth/token");
    large.push(("content-length".into(), "100000".into()));
    let Step::Respond(too_large) = worker.on_request_headers(&host, &mut Stream::new(3), &large, false)
    else {
        panic!("a declared length over the limit is refused")
    };
    assert_eq!(too_large.status, 413);
}

#[test]
fn a_usage_report_waits_for_every_worker_to_tick() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let mut hit = Stream::new(1);
    request(&worker, &host, &mut hit, form("s1"));
    worker.on_wake(&host);
    worker.on_answer(&host, 1, Some(&token_reply("tok-1")), &[], None);
    let mut report = Stream::new(9);
    assert_eq!(worker.on_request_headers(&host, &mut report, &headers("GET", "/usage"), true), Step::Pause);
    assert!(worker.on_tick(&host).is_empty(), "not before every worker has ticked");
    host.advance_ms(OPERATOR_WAIT_MS);
    let answers = worker.on_tick(&host);
    assert_eq!(answers.len(), 1);
    let body: Value = serde_json::from_slice(&answers[0].1.body).unwrap();
    assert_eq!((answers[0].0, body["totals"]["misses"].as_u64()), (9, Some(1)));
}

/// A gRPC answer of the rate-limit service: `overall_code`, one status with a limit of
/// `limit` a minute and `remaining` left.
fn rls_reply(code: u64, limit: u64, remaining: u64) -> HttpReply {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let field = |out: &mut Vec<u8>, number: u64, bytes: &[u8]| {
        varint(out, number << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    };
    let mut rate = Vec::new();
    varint(&mut rate, 1 << 3);
    varint(&mut rate, limit);
    varint(&mut rate, 2 << 3);
    varint(&mut rate, 2);
    let mut status = Vec::new();
    varint(&mut status, 1 << 3);
    varint(&mut status, code);
    field(&mut status, 2, &rate);
    varint(&mut status, 3 << 3);
    varint(&mut status, remaining);
    let mut message = Vec::new();
    varint(&mut message, 1 << 3);
    varint(&mut message, code);
    field(&mut message, 2, &status);
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    HttpReply { status: 200, headers: vec![("grpc-status".into(), "0".into())], body }
}

fn with_service() -> Worker {
    worker(json!({
        "rate_limit": {"default": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "60s"}},
        "rate_limit_service": {"cluster": "ratelimit", "timeout": "1s"}
    }))
}

#[test]
fn the_rate_limit_service_is_asked_first_and_its_over_limit_is_a_429() {
    let (host, worker) = (FakeHost::new(T0), with_service());
    let mut stream = Stream::new(1);
    assert_eq!(request(&worker, &host, &mut stream, form("s1")), Step::Pause);
    assert_eq!(host.calls()[0].cluster, "ratelimit");
    let Step::Respond(response) = worker
        .on_answer(&host, 1, Some(&rls_reply(2, 3, 0)), &[], Some(&mut stream))
        .step
        .unwrap_or(Step::Pause)
    else {
        panic!("answered");
    };
    assert_eq!((response.status, response.header("x-tokengate-decision")), (429, Some("rate_limited")));
    assert_eq!(response.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(host.calls().len(), 1, "no IdP call for a refused request");
}

#[test]
fn under_the_services_limit_the_request_goes_on_with_the_services_headers() {
    let (host, worker) = (FakeHost::new(T0), with_service());
    let mut stream = Stream::new(1);
    request(&worker, &host, &mut stream, form("s1"));
    assert_eq!(
        worker
            .on_answer(&host, 1, Some(&rls_reply(1, 3, 2)), &[], Some(&mut stream))
            .step
            .unwrap_or(Step::Pause),
        Step::Pause,
        "now waiting"
    );
    worker.on_wake(&host);
    let answers = worker.on_answer(&host, 2, Some(&token_reply("tok-1")), &[], None).answers;
    let response = &answers[0].1;
    assert_eq!((response.status, cache_of(response)), (200, "miss"));
    assert_eq!(
        (response.header("x-ratelimit-limit"), response.header("x-ratelimit-remaining")),
        (Some("3"), Some("2"))
    );
    assert_eq!(host.metric(Metric::RateLimitServiceErrors), 0);
}

#[test]
fn a_failed_or_unreadable_service_answer_leaves_the_decision_to_the_local_bucket() {
    let (host, worker) = (FakeHost::new(T0), with_service());
    for (stream_id, reply) in [(1, None), (2, Some(HttpReply { status: 503, headers: vec![], body: vec![] }))]
    {
        let mut stream = Stream::new(stream_id);
        request(&worker, &host, &mut stream, form("s1"));
        let token = host.calls().len() as u32;
        worker.on_answer(&host, token, reply.as_ref(), &[], Some(&mut stream)).step.unwrap_or(Step::Pause);
    }
    assert_eq!(host.metric(Metric::RateLimitServiceErrors), 2);
    worker.on_wake(&host);
    let idp_call = host.calls().len() as u32;
    let answers = worker.on_answer(&host, idp_call, Some(&token_reply("tok-1")), &[], None).answers;
    assert_eq!(answers.len(), 2, "both decided locally: a miss and a coalesced request");
    assert_eq!(answers[0].1.header("x-ratelimit-limit"), Some("100"));
}

#[test]
fn a_service_that_cannot_be_called_is_counted_and_the_local_bucket_decides_at_once() {
    let (host, worker) = (FakeHost::new(T0), with_service());
    host.fail_dispatch(true);
    let mut stream = Stream::new(1);
    assert_eq!(request(&worker, &host, &mut stream, form("s1")), Step::Pause, "waiting for the IdP call");
    assert_eq!(host.metric(Metric::RateLimitServiceErrors), 1);
}

#[test]
fn a_root_that_goes_away_releases_its_call_and_its_waiters_on_other_roots_retake_the_key_once() {
    // Three roots on one shared store: the old configuration's (going away), and two of the
    // new one (two workers).
    let host = FakeHost::new(T0);
    let (old, new, other) = (worker(json!({})), worker(json!({})), worker(json!({})));
    let mut first = Stream::new(1);
    assert_eq!(request(&old, &host, &mut first, form("s1")), Step::Pause);
    old.on_wake(&host);
    assert_eq!(host.calls().len(), 1, "the old root's call is in flight");
    let mut waiting = [Stream::new(2), Stream::new(3), Stream::new(4)];
    for (i, stream) in waiting.iter_mut().enumerate() {
        let root = if i == 2 { &other } else { &new };
        assert_eq!(request(root, &host, stream, form("s1")), Step::Pause);
    }
    assert!(new.on_tick(&host).is_empty() && other.on_tick(&host).is_empty());
    assert_eq!(host.calls().len(), 1, "all three wait for the old root's call");

    // The old root is deleted, with its worker, before its answer comes: the answer would
    // reach no one.
    old.on_done(&host);
    drop(old);
    host.advance_ms(20);
    for _ in 0..3 {
        assert!(new.on_tick(&host).is_empty() && other.on_tick(&host).is_empty());
    }
    assert_eq!(
        host.calls().len(),
        2,
        "one waiter retook the key, long before the deadline; the others joined"
    );
    let token = host.calls().len() as u32;
    let owner = if is_keyed_call(&new, token) { &new } else { &other };
    let mut answers = owner.on_answer(&host, token, Some(&token_reply("tok-2")), &[], None).answers;
    host.advance_ms(20);
    answers.extend(new.on_tick(&host));
    answers.extend(other.on_tick(&host));
    answers.sort_by_key(|(stream, _)| *stream);
    let seen: Vec<(StreamId, u16, String)> =
        answers.iter().map(|(s, r)| (*s, r.status, access_token(r))).collect();
    assert_eq!(seen, [2, 3, 4].map(|s| (s, 200, "tok-2".to_owned())).to_vec());
    let misses = answers.iter().filter(|(_, r)| cache_of(r) == "miss").count();
    assert_eq!(misses, 1, "one made the call, the others coalesced onto it");
}

#[test]
fn a_token_request_ended_by_trailers_is_refused_never_let_through() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let mut stream = Stream::new(9);
    worker.on_request_headers(&host, &mut stream, &headers("POST", "/oauth/token"), false);
    assert_eq!(worker.on_request_body(&host, &mut stream, 10, false, Vec::new), Step::Pause);
    let Step::Respond(refused) = worker.on_request_trailers(&host, &mut stream) else {
        panic!("refused");
    };
    assert_eq!(refused.status, 400);
    assert!(host.calls().is_empty());
    // Another request's trailers are not tokengate's.
    let mut other = Stream::new(10);
    worker.on_request_headers(&host, &mut other, &headers("POST", "/api"), false);
    assert_eq!(worker.on_request_trailers(&host, &mut other), Step::Continue);
}

mod client_certificates {
    use sha2::{Digest, Sha256};

    use super::*;

    /// A PEM whose DER bytes differ by `n` (the digest covers the DER, whatever it holds).
    fn pem(n: u8) -> String {
        use base64::Engine;
        let der = [0x30, 0x82, 0x01, n, 1, 2, 3, 4, 5, 6, 7, 8];
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    fn digest_hex(n: u8) -> String {
        use base64::Engine;
        let pem = pem(n);
        let body = pem.lines().nth(1).unwrap();
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn xfcc(n: u8) -> String {
        let encoded: String = pem(n).bytes().map(|b| format!("%{b:02X}")).collect();
        format!("Hash={};Cert=\"{encoded}\"", digest_hex(n))
    }

    /// A request authenticated by its certificate alone, over a connection that presented
    /// certificate `presented`, with Envoy's `x-forwarded-client-cert` for certificate `sent`.
    fn cert_request(worker: &Worker, host: &FakeHost, id: u32, presented: u8, sent: u8) -> (Stream, Step) {
        host.set_peer_certificate_digest(Some(&digest_hex(presented)));
        let mut stream = Stream::new(id);
        let mut headers = headers("POST", "/oauth/token");
        headers.push(("x-forwarded-client-cert".into(), xfcc(sent)));
        worker.on_request_headers(host, &mut stream, &headers, false);
        let body = b"grant_type=client_credentials&client_id=c1&audience=a".to_vec();
        let step = worker.on_request_body(host, &mut stream, body.len(), true, move || body);
        (stream, step)
    }

    fn mtls_worker() -> Worker {
        worker(json!({"upstream": {"cluster": "idp", "authority": "tenant.example",
                                    "forward_client_certificate": true}}))
    }

    #[test]
    fn each_certificate_gets_its_own_key_and_its_call_carries_it() {
        let (host, worker) = (FakeHost::new(T0), mtls_worker());
        assert_eq!(cert_request(&worker, &host, 1, 1, 1).1, Step::Pause, "a miss for certificate 1");
        worker.on_wake(&host);
        let call = &host.calls()[0];
        let header = |name: &str| call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let sent: String = pem(1).bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(header("client-certificate"), Some(sent), "the PEM, URL-encoded, as Envoy gave it");
        assert_eq!(header("client-certificate-ca-verified").as_deref(), Some("SUCCESS"));
        let answered = worker.on_answer(&host, 1, Some(&token_reply("bound-to-1")), &[], None).answers;
        assert_eq!(cache_of(&answered[0].1), "miss");
        // The same certificate again: a hit. Twice, so the worker's index had its chance.
        for id in [2, 3] {
            let (_, step) = cert_request(&worker, &host, id, 1, 1);
            let Step::Respond(hit) = step else { panic!("answered from the cache") };
            assert_eq!((cache_of(&hit), access_token(&hit)), ("hit", "bound-to-1".into()));
        }
        // Another certificate, the same body: never certificate 1's token.
        assert_eq!(cert_request(&worker, &host, 4, 2, 2).1, Step::Pause, "a miss for certificate 2");
        assert_eq!(host.calls().len(), 1, "its own call, not yet dispatched");
    }

    #[test]
    fn a_certificate_that_is_not_the_connections_is_not_taken() {
        let (host, worker) = (FakeHost::new(T0), mtls_worker());
        // The header names certificate 1, the connection presented certificate 2: no
        // certificate, and a request without a secret is passed on, uncached.
        let (stream, step) = cert_request(&worker, &host, 1, 2, 1);
        assert_eq!(step, Step::Continue);
        assert!(stream.awaits_idp_answer());
        // No certificate presented at all: the same.
        host.set_peer_certificate_digest(None);
        let mut stream = Stream::new(2);
        let mut headers = headers("POST", "/oauth/token");
        headers.push(("x-forwarded-client-cert".into(), xfcc(1)));
        headers.push(("client-certificate".into(), "forged".into()));
        let Step::Pass(edits) = worker.on_request_headers(&host, &mut stream, &headers, false) else {
            panic!("the client's copy is removed");
        };
        assert!(edits.contains(&("client-certificate".to_owned(), None)), "{edits:?}");
        assert!(!edits.iter().any(|(n, v)| n == "client-certificate" && v.is_some()), "{edits:?}");
    }
}

/// A token request of `client` with these extra form parameters.
fn client_form(client: &str, extra: &str) -> Vec<u8> {
    format!("grant_type=client_credentials&client_id={client}&client_secret=s&audience=a{extra}").into_bytes()
}

/// Dispatches the worker's queued keyed call and answers it with `reply`.
fn answer_call(worker: &Worker, host: &FakeHost, reply: HttpReply) -> Answers {
    worker.on_wake(host);
    let token = host.calls().len() as u32;
    worker.on_answer(host, token, Some(&reply), &[], None).answers
}

fn with_header(mut reply: HttpReply, name: &str, value: &str) -> HttpReply {
    reply.headers.push((name.into(), value.into()));
    reply
}

fn responded(step: Step) -> Response {
    match step {
        Step::Respond(response) => response,
        other => panic!("expected an answer now, got {other:?}"),
    }
}

#[test]
fn a_spent_auth0_client_quota_holds_that_clients_misses_until_it_resets() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let quota = "b=per_hour;q=5;r=0;t=30";
    request(&worker, &host, &mut Stream::new(1), client_form("c1", ""));
    answer_call(&worker, &host, with_header(token_reply("tok-1"), "auth0-client-quota-limit", quota));
    // A miss of the same client (another audience): answered here, no call.
    host.advance_ms(2_000);
    let other_audience = client_form("c1", "&scope=read");
    let refusal = responded(request(&worker, &host, &mut Stream::new(2), other_audience.clone()));
    assert_eq!((refusal.status, refusal.header("retry-after")), (429, Some("28")));
    assert_eq!(refusal.header("auth0-client-quota-limit"), Some("b=per_hour;q=5;r=0;t=28"), "counted down");
    assert_eq!(refusal.header("x-tokengate-decision"), Some("auth0_quota"));
    assert_eq!(host.calls().len(), 1);
    assert_eq!(host.metric(Metric::Auth0QuotaRefusals), 1);
    // Its hit is served; another client calls.
    let hit = responded(request(&worker, &host, &mut Stream::new(3), client_form("c1", "")));
    assert_eq!(cache_of(&hit), "hit");
    assert_eq!(request(&worker, &host, &mut Stream::new(4), client_form("c2", "")), Step::Pause);
    answer_call(&worker, &host, token_reply("tok-2"));
    // After the reset the client calls again.
    host.advance_ms(28_000);
    assert_eq!(request(&worker, &host, &mut Stream::new(5), other_audience), Step::Pause);
}

#[test]
fn a_spent_organization_quota_holds_every_client_naming_it() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    request(&worker, &host, &mut Stream::new(1), client_form("c1", "&organization=org_1"));
    let spent = "b=per_day;q=100;r=0;t=600,b=per_hour;q=10;r=3;t=60";
    let reply =
        with_header(HttpReply { status: 429, ..token_reply("x") }, "auth0-organization-quota-limit", spent);
    let answers = answer_call(&worker, &host, reply);
    assert_eq!(
        answers[0].1.header("auth0-organization-quota-limit"),
        Some(spent),
        "relayed with Auth0's 429"
    );
    let refusal =
        responded(request(&worker, &host, &mut Stream::new(2), client_form("c2", "&organization=org_1")));
    assert_eq!((refusal.status, refusal.header("retry-after")), (429, Some("600")));
    assert_eq!(refusal.header("auth0-organization-quota-limit"), Some(spent));
    // The same clients without that organization, or naming another, still call.
    assert_eq!(request(&worker, &host, &mut Stream::new(3), client_form("c2", "")), Step::Pause);
    answer_call(&worker, &host, token_reply("tok-2"));
    assert_eq!(
        request(&worker, &host, &mut Stream::new(4), client_form("c2", "&organization=org_2")),
        Step::Pause
    );
}

#[test]
fn malformed_auth0_quota_headers_are_counted_and_ignored_and_ignore_mode_never_holds() {
    for (config, value, held) in [
        (json!({}), "b=per_hour;q=5;r=zero;t=30", false),
        (
            json!({"upstream": {"cluster": "idp", "authority": "t", "auth0_quota": "ignore"}}),
            "b=per_hour;q=5;r=0;t=30",
            false,
        ),
        (json!({}), "b=per_hour;q=5;r=0;t=30", true),
    ] {
        let (host, worker) = (FakeHost::new(T0), worker(config));
        request(&worker, &host, &mut Stream::new(1), client_form("c1", ""));
        answer_call(&worker, &host, with_header(token_reply("tok-1"), "auth0-client-quota-limit", value));
        let step = request(&worker, &host, &mut Stream::new(2), client_form("c1", "&scope=x"));
        assert_eq!(matches!(step, Step::Respond(_)), held, "{value}");
        let malformed = host.metric(Metric::Auth0QuotaMalformed);
        assert_eq!(malformed, i64::from(value.contains("zero")), "{value}");
    }
}

#[test]
fn a_purge_drops_the_clients_tokens_on_every_worker_and_answers_after_their_ticks() {
    let host = FakeHost::new(T0);
    let (a, b) = (worker(json!({})), worker(json!({})));
    a.prepare(&host);
    b.prepare(&host);
    request(&a, &host, &mut Stream::new(1), client_form("c1", ""));
    answer_call(&a, &host, token_reply("tok-1"));
    request(&a, &host, &mut Stream::new(2), client_form("c2", ""));
    answer_call(&a, &host, token_reply("tok-2"));
    // Both workers hold c1's token in their own index.
    for w in [&a, &b] {
        for n in 0..2 {
            assert_eq!(
                cache_of(&responded(request(w, &host, &mut Stream::new(10 + n), client_form("c1", "")))),
                "hit"
            );
        }
    }
    let mut purge = Stream::new(20);
    assert_eq!(
        b.on_request_headers(&host, &mut purge, &headers("POST", "/usage/purge"), false),
        Step::Continue
    );
    let body = b"client_id=c1".to_vec();
    assert_eq!(b.on_request_body(&host, &mut purge, body.len(), true, || body), Step::Pause);
    assert!(b.on_tick(&host).is_empty(), "not before every worker has ticked");
    a.on_tick(&host);
    host.advance_ms(OPERATOR_WAIT_MS);
    let answers = b.on_tick(&host);
    assert_eq!((answers[0].0, answers[0].1.status), (20, 200));
    assert_eq!(serde_json::from_slice::<Value>(&answers[0].1.body).unwrap(), json!({"purged": 1}));
    assert_eq!(host.metric(Metric::Purged), 1);
    // c1 is a miss on both workers; c2 is still a hit.
    for w in [&a, &b] {
        assert_eq!(request(w, &host, &mut Stream::new(30), client_form("c1", "")), Step::Pause);
        assert_eq!(
            cache_of(&responded(request(w, &host, &mut Stream::new(31), client_form("c2", "")))),
            "hit"
        );
    }
}

#[test]
fn a_purge_takes_post_with_a_client_id() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let get = responded(worker.on_request_headers(
        &host,
        &mut Stream::new(1),
        &headers("GET", "/usage/purge"),
        true,
    ));
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));
    let empty = responded(worker.on_request_headers(
        &host,
        &mut Stream::new(2),
        &headers("POST", "/usage/purge"),
        true,
    ));
    assert_eq!(empty.status, 400);
    let mut stream = Stream::new(3);
    worker.on_request_headers(&host, &mut stream, &headers("POST", "/usage/purge?x=1"), false);
    let refused = responded(worker.on_request_body(&host, &mut stream, 5, true, || b"who=1".to_vec()));
    assert_eq!(refused.status, 400);
    assert_eq!(
        worker.on_request_headers(&host, &mut Stream::new(4), &headers("POST", "/usage/purge/x"), true),
        Step::Continue,
        "only the exact path"
    );
}

#[test]
fn a_refusal_of_wrong_credentials_never_holds_the_client_even_with_a_spent_bucket() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    request(&worker, &host, &mut Stream::new(1), client_form("c1", ""));
    let refusal = HttpReply { status: 401, ..token_reply("x") };
    answer_call(&worker, &host, with_header(refusal, "auth0-client-quota-limit", "b=per_day;q=5;r=0;t=600"));
    assert_eq!(request(&worker, &host, &mut Stream::new(2), client_form("c1", "&scope=x")), Step::Pause);
}

#[test]
fn a_request_whose_headers_cannot_be_read_is_refused_never_passed_through() {
    let (host, worker) = (FakeHost::new(T0), worker(json!({})));
    let r = responded(worker.on_unreadable_request(&host, &mut Stream::new(1)));
    assert_eq!(r.status, 503);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(host.calls().is_empty());
    assert_eq!(host.metric(Metric::Requests), 1);
}

#[test]
fn each_worker_names_a_wake_up_queue_of_its_own() {
    let host = FakeHost::new(T0);
    let (a, b) = (worker(json!({})), worker(json!({})));
    let (first, second) = (a.wake_queue_name(&host).unwrap(), b.wake_queue_name(&host).unwrap());
    assert_eq!((first.as_str(), second.as_str()), ("tg:wake:1", "tg:wake:2"));
    host.fail_writes(true);
    assert_eq!(worker(json!({})).wake_queue_name(&host), None);
}

#[test]
fn every_answer_goes_to_what_its_call_was_dispatched_for_and_late_ones_to_nothing() {
    let (host, service) = (FakeHost::new(T0), with_service());
    let (mut asking, mut other) = (Stream::new(1), Stream::new(2));
    assert_eq!(request(&service, &host, &mut asking, form("s1")), Step::Pause);
    // A token no call of this worker has: nothing, for any stream.
    assert_eq!(service.on_answer(&host, 99, None, &[], Some(&mut asking)), Routed::default());
    // The service's answer offered to another stream is not that stream's: nothing, and
    // the call stays the asking stream's.
    assert_eq!(
        service.on_answer(&host, 1, Some(&rls_reply(1, 3, 2)), &[], Some(&mut other)),
        Routed::default()
    );
    // The asking stream gets it: under the service's limit, its request goes on.
    assert!(service.on_answer(&host, 1, Some(&rls_reply(1, 3, 2)), &[], Some(&mut asking)).step.is_some());
    // A stream that went away takes its call with it: a late answer finds nothing.
    let mut gone = Stream::new(4);
    assert_eq!(request(&service, &host, &mut gone, form("s3")), Step::Pause);
    let call = host.calls().len() as u32;
    service.on_stream_gone(&host, &gone);
    assert!(!service.hub.borrow().calls.iter().any(|(t, _)| *t == call), "the call left with its stream");
    assert_eq!(
        service.on_answer(&host, call, Some(&rls_reply(1, 3, 2)), &[], Some(&mut gone)),
        Routed::default()
    );
    // A keyed call's answer goes to the key's waiters, whichever context it came to.
    let mut waiting = Stream::new(3);
    let keyed = worker(json!({}));
    request(&keyed, &host, &mut waiting, form("s2"));
    keyed.on_wake(&host);
    let token = host.calls().len() as u32;
    let routed = keyed.on_answer(&host, token, Some(&token_reply("tok")), &[], None);
    assert_eq!((routed.step, routed.answers.len(), routed.answers[0].0), (None, 1, 3));
}
