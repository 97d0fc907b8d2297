//! `POST <usage_path>/purge` in real Envoy (`--concurrency 2`): the client's cached tokens
//! and remembered refusals go from shared data and from both workers' indexes of served
//! tokens, so its next request is a miss wherever it lands; other clients keep theirs.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::*;

const USAGE: &str = "/tokengate/usage";
const PURGE: &str = "/tokengate/usage/purge";

fn purge(stack: &Stack, body: &str) -> testbed::Response {
    post(stack.port(), PURGE, Some(FORM), &[], body.as_bytes())
}

fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
}

#[test]
fn a_purge_drops_the_clients_tokens_and_refusals_on_every_worker_and_no_one_elses() {
    let stack = Stack::start(plugin_config(json!({"usage_path": USAGE})), 3600);
    let (c1, c2) = (cc_form("c1", "s1", "a"), cc_form("c2", "s2", "a"));
    for form in [&c1, &c2] {
        assert_eq!(cache_status(&stack.post_form(form)), "miss");
    }
    // A remembered refusal of c1 (a wrong secret).
    let wrong = cc_form("c1", "wrong", "a");
    assert_eq!(stack.post_form(&wrong).status, 401);
    assert_eq!(cache_status(&stack.post_form(&wrong)), "negative");
    // Each request is a new connection: with two workers, both serve c1 from their index.
    for _ in 0..8 {
        assert_eq!(cache_status(&stack.post_form(&c1)), "hit");
    }
    let calls = (stack.idp.calls_for("c1"), stack.idp.calls_for("c2"));

    let r = purge(&stack, "client_id=c1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap(), json!({"purged": 2}), "the token and the refusal");
    assert_eq!(stat(&stack, "tokengate_purged_total"), 2);

    // c1: one miss, then hits again; the wrong secret reaches the IdP again. c2: hits.
    let after = stack.post_form(&c1);
    assert_eq!((after.status, cache_status(&after)), (200, "miss"), "{}", after.text());
    for _ in 0..6 {
        assert_eq!(cache_status(&stack.post_form(&c1)), "hit");
        assert_eq!(cache_status(&stack.post_form(&c2)), "hit");
    }
    assert_eq!(cache_status(&stack.post_form(&wrong)), "miss");
    assert_eq!((stack.idp.calls_for("c1"), stack.idp.calls_for("c2")), (calls.0 + 2, calls.1));

    // Nothing left of c1 to purge.
    assert_eq!(purge(&stack, "client_id=c2").json().unwrap(), json!({"purged": 1}));
    assert_eq!(purge(&stack, "client_id=nobody").json().unwrap(), json!({"purged": 0}));
}

#[test]
fn a_purge_takes_post_with_a_client_id() {
    let stack = Stack::start(plugin_config(json!({"usage_path": USAGE})), 3600);
    assert_eq!(cache_status(&stack.post_form(&cc_form("c1", "s1", "a"))), "miss");
    for method in ["GET", "PUT", "DELETE"] {
        let r = testbed::request(method, stack.port(), PURGE, &[], b"").unwrap();
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{method}");
        assert_oauth_error(&r, 405, "invalid_request");
    }
    for body in ["", "client=c1", "client_id=", "%zz"] {
        let r = purge(&stack, body);
        assert_oauth_error(&r, 400, "invalid_request");
    }
    assert_eq!(cache_status(&stack.post_form(&cc_form("c1", "s1", "a"))), "hit", "nothing was purged");
    assert_eq!(stat(&stack, "tokengate_purged_total"), 0);
}

#[test]
fn without_usage_path_there_is_no_purge() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    assert_eq!(cache_status(&stack.post_form(&cc_form("c1", "s1", "a"))), "miss");
    let r = purge(&stack, "client_id=c1");
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(cache_status(&stack.post_form(&cc_form("c1", "s1", "a"))), "hit");
}
