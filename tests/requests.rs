//! Which requests tokengate handles, and how it refuses the ones it cannot read: every bad
//! input gets an OAuth error JSON, none reaches the IdP, and Envoy keeps serving.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::*;

#[test]
fn ten_kinds_of_malformed_request_get_4xx_oauth_errors_and_never_reach_the_idp() {
    let stack = Stack::start(plugin_config(json!({"max_body_bytes": 1024})), 3600);
    let deep = format!("{{\"grant_type\":{}\"x\"{}}}", "[".repeat(400), "]".repeat(400));
    let oversize = format!("{}&x={}", cc_form("c1", "s1", "a"), "y".repeat(2000));
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("bad JSON", Some(JSON), b"{\"grant_type\": \"client_credentials\",".to_vec(), 400),
        ("JSON not an object", Some(JSON), b"[\"client_credentials\"]".to_vec(), 400),
        ("wrong content type", Some("text/plain"), cc_form("c1", "s1", "a").into_bytes(), 400),
        ("no content type", None, cc_form("c1", "s1", "a").into_bytes(), 400),
        ("over-size body", Some(FORM), oversize.into_bytes(), 413),
        (
            "bad percent-encoding",
            Some(FORM),
            b"grant_type=client_credentials&client_id=c1%zz&client_secret=s1".to_vec(),
            400,
        ),
        ("binary", Some(FORM), vec![0, 159, 146, 150, 255, 10, 13, 0, 1], 400),
        ("empty", Some(FORM), Vec::new(), 400),
        (
            "no client id",
            Some(FORM),
            b"grant_type=client_credentials&client_secret=s1&audience=a".to_vec(),
            400,
        ),
        ("deeply nested JSON", Some(JSON), deep.into_bytes(), 400),
    ];
    for (name, content_type, body, status) in cases {
        let r = stack.post(content_type, &[], &body);
        assert_oauth_error(&r, status, "invalid_request");
        assert_eq!(cache_status(&r), "bypass", "{name}");
    }
    let conflicting = stack.post(
        Some(FORM),
        &[("authorization", "Basic YzE6czE=")], // c1:s1
        b"grant_type=client_credentials&client_id=c2",
    );
    assert_oauth_error(&conflicting, 400, "invalid_request");
    assert_eq!(stack.idp.token_calls(), 0);
    assert!(stack.idp.requests().is_empty());
    // Envoy keeps serving.
    let ok = stack.post_form(&cc_form("c1", "s1", "a"));
    assert_eq!((ok.status, cache_status(&ok)), (200, "miss"));
}

#[test]
fn oversize_body_without_content_length_is_refused_while_streaming() {
    let stack = Stack::start(plugin_config(json!({"max_body_bytes": 1024})), 3600);
    let chunks: [&[u8]; 3] = [b"grant_type=client_credentials&x=", &[b'a'; 800], &[b'b'; 800]];
    let (status, body) = post_chunked(stack.port(), "/oauth/token", FORM, &chunks);
    assert_eq!(status, 413, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(stack.idp.token_calls(), 0);
}

#[test]
fn other_paths_reach_the_route_upstream_untouched_and_other_methods_on_the_token_path_are_refused() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let get =
        testbed::request("GET", stack.port(), "/api/things?x=1", &[("x-probe", "get")], b"").expect("answer");
    assert_eq!(get.status, 200);
    assert_eq!(get.header("x-tokengate-cache"), None);
    let body = cc_form("c1", "s1", "a");
    let other = post(stack.port(), "/api/things", Some(FORM), &[("x-probe", "post")], body.as_bytes());
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-tokengate-cache"), None);
    // Another method on the token path would reach the IdP uncounted: refused.
    for method in ["GET", "PUT"] {
        let r = testbed::request(
            method,
            stack.port(),
            "/oauth/token?x=1",
            &[("content-type", FORM)],
            body.as_bytes(),
        )
        .expect("answer");
        assert_oauth_error(&r, 400, "invalid_request");
    }

    let seen = stack.idp.requests();
    assert_eq!(seen.len(), 2);
    let header =
        |i: usize, name: &str| seen[i].headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/api/things?x=1"));
    assert_eq!(header(0, "x-probe").as_deref(), Some("get"));
    assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", "/api/things"));
    assert_eq!(seen[1].body, body.as_bytes());
    assert_eq!(header(1, "x-probe").as_deref(), Some("post"));
}

#[test]
fn token_path_match_ignores_the_query_string() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let r = post(stack.port(), "/oauth/token?tenant=x", Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes());
    assert_eq!(cache_status(&r), "miss");
    let r = post(stack.port(), "/oauth/token", Some(FORM), &[], cc_form("c1", "s1", "a").as_bytes());
    assert_eq!(cache_status(&r), "hit");
}
