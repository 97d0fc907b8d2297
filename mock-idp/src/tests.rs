use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

fn idp() -> MockIdp {
    MockIdp::start(Config { clients: vec![Client { id: "c1".into(), secret: "s1".into() }], expires_in: 60 })
        .unwrap()
}

/// Sends one request with `connection: close`; returns (status, body) or None on no answer.
fn send(
    idp: &MockIdp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(idp.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[test]
fn issues_distinct_tokens_and_counts_per_client_and_audience() {
    let idp = idp();
    let body = "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=https%3A%2F%2Fa";
    let (status, first) = send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(first["expires_in"], 60);
    assert_eq!(first["token_type"], "Bearer");
    let (_, second) = send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap();
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(idp.token_calls(), 2);
    assert_eq!(idp.calls_for("c1"), 2);
    assert_eq!(idp.calls_for_audience("c1", "https://a"), 2);
    assert_eq!(idp.calls_json()["by_client"]["c1"], 2);
}

#[test]
fn json_and_basic_authentication() {
    let idp = idp();
    let json_body = r#"{"grant_type":"client_credentials","client_id":"c1","client_secret":"s1"}"#;
    let (status, _) =
        send(&idp, "POST", "/oauth/token", &[("content-type", "application/json; charset=utf-8")], json_body)
            .unwrap();
    assert_eq!(status, 200);
    let basic = ("authorization", "Basic YzE6czE="); // c1:s1
    let (status, _) =
        send(&idp, "POST", "/oauth/token", &[FORM, basic], "grant_type=client_credentials").unwrap();
    assert_eq!(status, 200);
    assert_eq!(idp.calls_for_audience("c1", ""), 2);
}

#[test]
fn wrong_secret_and_unknown_client_are_401() {
    let idp = idp();
    for body in [
        "grant_type=client_credentials&client_id=c1&client_secret=no",
        "grant_type=client_credentials&client_id=zz&client_secret=s1",
    ] {
        let (status, reply) = send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap();
        assert_eq!(status, 401);
        assert_eq!(reply["error"], "access_denied");
    }
}

#[test]
fn faults_delay_status_and_refuse() {
    let idp = idp();
    let body = "grant_type=client_credentials&client_id=c1&client_secret=s1";
    idp.set_fault(Fault { delay: Duration::from_millis(300), ..Fault::default() });
    let started = std::time::Instant::now();
    assert_eq!(send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap().0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    idp.set_fault(Fault { status: Some(503), ..Fault::default() });
    let (status, reply) = send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap();
    assert_eq!((status, reply["error"].as_str()), (503, Some("server_error")));
    idp.set_fault(Fault { refuse: true, ..Fault::default() });
    assert!(send(&idp, "POST", "/oauth/token", &[FORM], body).is_none());
    assert_eq!(idp.token_calls(), 3);
}

#[test]
fn other_paths_are_recorded_and_echoed() {
    let idp = idp();
    let (status, reply) = send(&idp, "GET", "/api/x?y=1", &[("x-probe", "1")], "").unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply["path"], "/api/x?y=1");
    let seen = idp.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.contains(&("x-probe".into(), "1".into())));
    assert_eq!(idp.token_calls(), 0);
}

#[test]
fn admin_endpoints() {
    let idp = idp();
    send(&idp, "POST", "/__mock/expires_in", &[], r#"{"expires_in":5}"#).unwrap();
    let body = "grant_type=client_credentials&client_id=c1&client_secret=s1";
    assert_eq!(send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap().1["expires_in"], 5);
    send(&idp, "POST", "/__mock/fault", &[], r#"{"status":429}"#).unwrap();
    assert_eq!(send(&idp, "POST", "/oauth/token", &[FORM], body).unwrap().0, 429);
    let (_, calls) = send(&idp, "GET", "/__mock/calls", &[], "").unwrap();
    assert_eq!(calls["token_calls"], 2);
    send(&idp, "POST", "/__mock/reset", &[], "").unwrap();
    assert_eq!(idp.token_calls(), 0);
    assert!(idp.requests().is_empty());
}

/// The raw answer (head and body) to a token request.
fn raw_token_answer(idp: &MockIdp) -> String {
    let body = "grant_type=client_credentials&client_id=c1&client_secret=s1";
    let mut stream = TcpStream::connect(idp.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST /oauth/token HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
        FORM.1,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    raw.to_ascii_lowercase()
}

#[test]
fn rate_limit_headers_on_every_answer_and_a_429_that_says_when() {
    let idp = idp();
    assert!(!raw_token_answer(&idp).contains("x-ratelimit-limit"));
    send(&idp, "POST", "/__mock/rate_limit", &[], r#"{"limit":30,"remaining":2,"reset_in":3}"#).unwrap();
    let ok = raw_token_answer(&idp);
    assert!(
        ok.starts_with("http/1.1 200")
            && ok.contains("x-ratelimit-limit: 30")
            && ok.contains("x-ratelimit-remaining: 2")
    );
    idp.set_fault(Fault { status: Some(429), ..Fault::default() });
    let limited = raw_token_answer(&idp);
    assert!(limited.starts_with("http/1.1 429") && limited.contains("retry-after: 3"), "{limited}");
    assert_eq!(limited.matches("retry-after").count(), 1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let reset: u64 =
        limited.split("x-ratelimit-reset: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
    assert!((now + 2..=now + 3).contains(&reset), "{reset} vs {now}");
    idp.set_rate_limit(None);
    assert!(!raw_token_answer(&idp).contains("x-ratelimit-remaining: 2"));
}
