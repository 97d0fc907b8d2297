//! Auth0's own token quotas in real Envoy (`--concurrency 2`): after an IdP answer whose
//! `auth0-client-quota-limit` or `auth0-organization-quota-limit` has a bucket with `r=0`,
//! that client's (or organization's) misses are answered `429` by tokengate, on any worker,
//! with Auth0's header passed on and no call to the IdP, until the bucket resets. Hits are
//! still served; other clients are untouched; malformed values are counted and ignored.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use mock_idp::Fault;
use serde_json::{Value, json};
use support::*;

const USAGE: &str = "/tokengate/usage";
const CLIENT: &str = "auth0-client-quota-limit";
const ORGANIZATION: &str = "auth0-organization-quota-limit";

fn stack(upstream_extra: Value) -> Stack {
    let mut upstream = json!({"cluster": "idp", "authority": "tenant.example.com", "timeout": "2s"});
    if let (Value::Object(u), Value::Object(e)) = (&mut upstream, upstream_extra) {
        u.extend(e);
    }
    Stack::start(plugin_config(json!({"usage_path": USAGE, "upstream": upstream})), 3600)
}

fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
}

fn holds(stack: &Stack) -> Vec<Value> {
    let report: Value = testbed::request("GET", stack.port(), USAGE, &[], b"").unwrap().json().unwrap();
    report["auth0_quota_holds"].as_array().cloned().unwrap_or_default()
}

/// A quota header value with each bucket's `t` left out, and the largest `t`.
fn buckets_and_reset(value: &str) -> (String, u64) {
    let mut max_t = 0;
    let parts = value.split([',', ';']).map(|part| match part.trim().strip_prefix("t=") {
        Some(t) => {
            max_t = max_t.max(t.parse::<u64>().unwrap());
            "t=".to_owned()
        }
        None => part.trim().to_owned(),
    });
    (parts.collect::<Vec<_>>().join(";"), max_t)
}

/// Six misses (`form(n)`) answered by tokengate itself: `429`, `retry-after`, and Auth0's
/// header passed on with its `t`s counted down (never above what Auth0 sent).
fn assert_held(stack: &Stack, form: impl Fn(usize) -> String, header: &str, value: &str, max_wait: u64) {
    let calls = stack.idp.token_calls();
    for n in 0..6 {
        let r = stack.post_form(&form(n));
        assert_eq!(r.status, 429, "request {n}: {}", r.text());
        assert_oauth_error(&r, 429, "too_many_requests");
        assert_eq!(r.header("x-tokengate-decision"), Some("auth0_quota"), "request {n}");
        let passed_on = r.header(header).unwrap_or_else(|| panic!("request {n}: no {header}"));
        let ((buckets, t), (sent, sent_t)) = (buckets_and_reset(passed_on), buckets_and_reset(value));
        assert_eq!(buckets, sent, "request {n}: Auth0's header passed on: {passed_on}");
        let left = header_u64(&r, "retry-after");
        assert!((1..=max_wait).contains(&left), "request {n}: retry-after {left}");
        assert!(t <= sent_t && t + 1 >= left.min(sent_t), "request {n}: t={t}, retry-after {left}");
    }
    assert_eq!(stack.idp.token_calls(), calls, "no call reached the IdP");
}

#[test]
fn a_200_with_one_spent_bucket_holds_that_clients_misses_on_every_worker_until_it_resets() {
    let stack = stack(json!({}));
    let quota = "b=per_hour;q=5;r=0;t=4";
    stack.idp.set_extra_headers(&[(CLIENT, quota)]);
    let first = stack.post_form(&cc_form("c1", "s1", "cached"));
    assert_eq!((first.status, cache_status(&first)), (200, "miss"));
    stack.idp.set_extra_headers(&[]);

    assert_held(&stack, |n| cc_form("c1", "s1", &format!("new-{n}")), CLIENT, quota, 4);
    assert_eq!(stat(&stack, "tokengate_auth0_quota_refusals_total"), 6);
    // The cached token is still served; another client still calls.
    let hit = stack.post_form(&cc_form("c1", "s1", "cached"));
    assert_eq!((hit.status, cache_status(&hit)), (200, "hit"));
    let other = stack.post_form(&cc_form("c2", "s2", "new-0"));
    assert_eq!((other.status, cache_status(&other)), (200, "miss"));
    // The report names the client and when it is free again.
    let held = holds(&stack);
    assert_eq!(
        (held.len(), &held[0]["kind"], &held[0]["name"]),
        (1, &json!("client"), &json!("c1")),
        "{held:?}"
    );
    assert!(held[0]["until"].is_u64());

    // After the reset the client's next miss reaches the IdP.
    std::thread::sleep(Duration::from_millis(4_300));
    let after = stack.post_form(&cc_form("c1", "s1", "new-9"));
    assert_eq!((after.status, cache_status(&after)), (200, "miss"), "{}", after.text());
    assert!(holds(&stack).is_empty());
}

#[test]
fn two_buckets_hold_by_the_spent_one_and_none_spent_holds_nothing() {
    let stack = stack(json!({}));
    let open = "b=per_hour;q=100;r=99;t=3000,b=per_day;q=1000;r=999;t=80000";
    stack.idp.set_extra_headers(&[(CLIENT, open)]);
    for n in 0..3 {
        let r = stack.post_form(&cc_form("c1", "s1", &format!("a{n}")));
        assert_eq!((r.status, cache_status(&r)), (200, "miss"), "nothing spent: request {n}");
    }
    let spent = "b=per_hour;q=100;r=42;t=3000,b=per_day;q=1000;r=0;t=80000";
    stack.idp.set_extra_headers(&[(CLIENT, spent)]);
    assert_eq!(stack.post_form(&cc_form("c1", "s1", "a9")).status, 200);
    stack.idp.set_extra_headers(&[]);
    assert_held(&stack, |n| cc_form("c1", "s1", &format!("b{n}")), CLIENT, spent, 80_000);
    let r = stack.post_form(&cc_form("c1", "s1", "b0"));
    assert!(header_u64(&r, "retry-after") > 79_000, "the per-day bucket's reset");
}

#[test]
fn an_auth0_429_with_a_spent_bucket_is_relayed_and_then_held_locally() {
    let stack = stack(json!({}));
    let quota = "b=per_day;q=10;r=0;t=40";
    stack.idp.set_extra_headers(&[(CLIENT, quota)]);
    stack.set_fault(Fault { status: Some(429), ..Fault::default() });
    let refused = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header(CLIENT), Some(quota), "Auth0's own 429 keeps its header");
    let calls = stack.idp.token_calls();
    stack.set_fault(Fault::default());
    stack.idp.set_extra_headers(&[]);
    // Auth0's quota outlasts its 1 s back-off: the misses stay local until `t`.
    std::thread::sleep(Duration::from_millis(1_200));
    assert_held(&stack, |n| cc_form("c1", "s1", &format!("b{n}")), CLIENT, quota, 40);
    assert_eq!(stack.idp.token_calls(), calls);
}

#[test]
fn a_spent_organization_quota_holds_every_client_naming_that_organization() {
    let stack = stack(json!({}));
    let quota = "b=per_day;q=50;r=0;t=60";
    stack.idp.set_extra_headers(&[(ORGANIZATION, quota)]);
    let first = stack.post_form(&format!("{}&organization=org_1", cc_form("c1", "s1", "a")));
    assert_eq!(first.status, 200, "{}", first.text());
    stack.idp.set_extra_headers(&[]);
    // Any client naming org_1, on either worker: held.
    let form = |n: usize| {
        let client = if n.is_multiple_of(2) { ("c2", "s2") } else { ("c1", "s1") };
        format!("{}&organization=org_1", cc_form(client.0, client.1, &format!("b{n}")))
    };
    assert_held(&stack, form, ORGANIZATION, quota, 60);
    // The same clients without that organization, or naming another, still call.
    for form in [cc_form("c2", "s2", "b0"), format!("{}&organization=org_2", cc_form("c2", "s2", "b1"))] {
        let r = stack.post_form(&form);
        assert_eq!((r.status, cache_status(&r)), (200, "miss"), "{form}");
    }
    let held = holds(&stack);
    assert_eq!((&held[0]["kind"], &held[0]["name"]), (&json!("organization"), &json!("org_1")), "{held:?}");
}

#[test]
fn malformed_values_are_counted_and_ignored() {
    let stack = stack(json!({}));
    let malformed = [
        "b=per_hour;q=5;r=0",
        "b=per_hour;q=5;r=zero;t=30",
        "garbage",
        "b=per_hour;q=5;r=0;t=30,",
        "b=per_hour;q=5;r=-1;t=30",
    ];
    for (n, value) in malformed.iter().enumerate() {
        stack.idp.set_extra_headers(&[(CLIENT, value), (ORGANIZATION, value)]);
        let r = stack.post_form(&format!("{}&organization=o", cc_form("c1", "s1", &format!("a{n}"))));
        assert_eq!((r.status, cache_status(&r)), (200, "miss"), "{value}: {}", r.text());
    }
    stack.idp.set_extra_headers(&[]);
    let r = stack.post_form(&format!("{}&organization=o", cc_form("c1", "s1", "z")));
    assert_eq!((r.status, cache_status(&r)), (200, "miss"), "never held");
    assert_eq!(stat(&stack, "tokengate_auth0_quota_malformed_total"), 2 * malformed.len() as u64);
    assert_eq!(stat(&stack, "tokengate_auth0_quota_refusals_total"), 0);
}

#[test]
fn ignore_mode_never_holds() {
    let stack = stack(json!({"auth0_quota": "ignore"}));
    stack.idp.set_extra_headers(&[(CLIENT, "b=per_hour;q=5;r=0;t=30")]);
    for n in 0..3 {
        let r = stack.post_form(&cc_form("c1", "s1", &format!("a{n}")));
        assert_eq!((r.status, cache_status(&r)), (200, "miss"), "request {n}");
    }
    assert!(holds(&stack).is_empty());
}
