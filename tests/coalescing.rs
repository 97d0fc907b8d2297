//! One IdP call per key across Envoy's workers, refresh-ahead, serve-stale and the negative
//! cache, in real Envoy with two workers.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::thread::{self, sleep};
use std::time::Duration;

use mock_idp::Fault;
use serde_json::json;
use support::*;

#[test]
fn sixty_concurrent_cold_requests_for_one_key_cost_one_idp_call() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    stack.set_fault(fault_delay(600));
    let port = stack.port();
    let answers: Vec<(u16, String, String)> = thread::scope(|s| {
        let handles: Vec<_> = (0..60)
            .map(|_| {
                s.spawn(move || {
                    let r = post(port, "/oauth/token", Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes());
                    (r.status, cache_status(&r).to_owned(), access_token(&r))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|(status, _, _)| *status == 200), "{answers:?}");
    let tokens: HashSet<&String> = answers.iter().map(|(_, _, t)| t).collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(stack.idp.token_calls(), 1);
    let misses = answers.iter().filter(|(_, c, _)| c == "miss").count();
    assert_eq!(misses, 1, "{answers:?}");
    assert!(answers.iter().all(|(_, c, _)| ["miss", "coalesced", "hit"].contains(&c.as_str())));
}

#[test]
fn refresh_ahead_keeps_serving_hits_and_calls_the_idp_once() {
    let config = plugin_config(json!({"cache": {"min_remaining_ttl": "1s", "refresh_ahead_ratio": 0.5}}));
    let stack = Stack::start(config, 4);
    let first = access_token(&stack.post_form(&cc_form("c1", "s1", "a")));
    sleep(Duration::from_millis(2_500));
    for _ in 0..5 {
        let r = stack.post_form(&cc_form("c1", "s1", "a"));
        assert_eq!((r.status, cache_status(&r)), (200, "hit"));
    }
    sleep(Duration::from_millis(300));
    assert_eq!(stack.idp.token_calls(), 2);
    let later = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(cache_status(&later), "hit");
    assert_ne!(access_token(&later), first);
    assert_eq!(stack.idp.token_calls(), 2);
}

#[test]
fn a_failing_idp_serves_the_cached_token_as_stale_else_503() {
    let config = plugin_config(json!({"cache": {"min_remaining_ttl": "2s"}}));
    let stack = Stack::start(config, 4);
    let token = access_token(&stack.post_form(&cc_form("c1", "s1", "a")));
    sleep(Duration::from_millis(2_200)); // 1.8 s left: below the floor, so the IdP is asked
    stack.set_fault(Fault { status: Some(500), ..Fault::default() });
    let r = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((r.status, cache_status(&r)), (200, "stale"));
    assert_eq!(access_token(&r), token);
    stack.set_fault(Fault { refuse: true, ..Fault::default() });
    let r = stack.post_form(&cc_form("c1", "s1", "b"));
    assert_oauth_error(&r, 503, "temporarily_unavailable");
}

#[test]
fn a_wrong_secret_repeated_twenty_times_costs_one_idp_call() {
    let stack = Stack::start(
        plugin_config(json!({"cache": {"min_remaining_ttl": "1s", "negative_ttl": "10s"}})),
        3600,
    );
    for i in 0..20 {
        let r = stack.post_form(&cc_form("c1", "wrong", "a"));
        assert_eq!(r.status, 401);
        assert_eq!(cache_status(&r), if i == 0 { "miss" } else { "negative" });
        assert_eq!(json_body(&r)["error"], "access_denied");
    }
    assert_eq!(stack.idp.token_calls(), 1);
    // The right secret is not affected.
    assert_eq!(stack.post_form(&cc_form("c1", "s1", "a")).status, 200);
}

#[test]
fn clients_that_disconnect_while_waiting_do_not_break_the_others() {
    use std::io::Write;
    use std::net::TcpStream;

    let stack = Stack::start(plugin_config(json!({})), 3600);
    stack.set_fault(fault_delay(800));
    let port = stack.port();
    let body = cc_form("c1", "s1", "a");
    // The first request (the call's owner) and two more go away while the call runs.
    let request = format!(
        "POST /oauth/token HTTP/1.1\r\nhost: x\r\ncontent-type: {FORM}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut leavers = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        leavers.push(stream);
        sleep(Duration::from_millis(50));
    }
    let answers: Vec<(u16, String)> = thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    let r = post(port, "/oauth/token", Some(FORM), &[], body.as_bytes());
                    (r.status, access_token(&r))
                })
            })
            .collect();
        sleep(Duration::from_millis(200));
        drop(leavers);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    let tokens: HashSet<&String> = answers.iter().map(|(_, t)| t).collect();
    assert_eq!(tokens.len(), 1);
    // The owner left, yet its call went on and its token serves everyone: one IdP call.
    assert_eq!(stack.idp.token_calls(), 1);
    assert_eq!(cache_status(&stack.post_form(&body)), "hit");
}
