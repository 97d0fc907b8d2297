//! Who burns the quota, in real Envoy: the per-client usage report (JSON and page), the
//! Envoy stats, and the decision in the access log.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::*;

const USAGE: &str = "/tokengate/usage";

fn usage_config() -> Value {
    plugin_config(json!({
        "rate_limit": {"default": {"max_tokens": 50, "tokens_per_fill": 50, "fill_interval": "60s"},
                       "clients": {"c3": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "60s"}}},
        "quota": {"default": {"tokens": 100, "window": "1d"}},
        "usage_path": USAGE
    }))
}

/// A mix of clients: c1 (two audiences, hits), c2 (a wrong secret twice, then right), c3
/// (rate limited).
fn drive_mix(stack: &Stack) {
    let expect = |body: String, status: u16, cache: &str| {
        let r = stack.post_form(&body);
        assert_eq!((r.status, cache_status(&r)), (status, cache), "{body}: {}", r.text());
    };
    expect(cc_form("c1", "s1", "a"), 200, "miss");
    expect(cc_form("c1", "s1", "a"), 200, "hit");
    expect(cc_form("c1", "s1", "a"), 200, "hit");
    expect(cc_form("c1", "s1", "b"), 200, "miss");
    expect(cc_form("c2", "wrong", "a"), 401, "miss");
    expect(cc_form("c2", "wrong", "a"), 401, "negative");
    expect(cc_form("c2", "s2", "a"), 200, "miss");
    expect(cc_form("c3", "s3", "a"), 200, "miss");
    expect(cc_form("c3", "s3", "a"), 200, "hit");
    expect(cc_form("c3", "s3", "a"), 429, "bypass");
    expect(cc_form("c3", "s3", "a"), 429, "bypass");
}

fn start() -> Stack {
    Stack::start_with(
        usage_config(),
        vec![client("c1", "s1"), client("c2", "s2"), client("c3", "s3")],
        3600,
        "info",
    )
}

fn row<'a>(report: &'a Value, client_id: &str) -> &'a Value {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["client_id"] == client_id)
        .unwrap_or_else(|| panic!("no row for {client_id}: {report}"))
}

fn prometheus_value(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name} not in /stats/prometheus:\n{text}"))
}

#[test]
fn usage_report_counts_each_client_exactly_and_matches_the_envoy_stats() {
    let stack = start();
    drive_mix(&stack);
    let report = testbed::request("GET", stack.port(), USAGE, &[], b"").unwrap();
    assert_eq!(report.status, 200);
    assert_eq!(report.header("content-type"), Some("application/json"));
    let report = report.json().unwrap();

    let c1 = row(&report, "c1");
    assert_eq!(
        (&c1["requests"], &c1["hits"], &c1["misses"], &c1["tokens_issued"], &c1["tokens_saved"]),
        (&json!(4), &json!(2), &json!(2), &json!(2), &json!(2))
    );
    assert_eq!(c1["trusted"], true);
    assert_eq!(c1["limits"]["quota"]["tokens"], 100);
    let c2 = row(&report, "c2");
    assert_eq!(
        (&c2["requests"], &c2["misses"], &c2["negative"], &c2["tokens_issued"], &c2["tokens_issued_total"]),
        (&json!(3), &json!(1), &json!(1), &json!(1), &json!(1))
    );
    // The IdP's 401 for the wrong secret has its own count, not a miss.
    assert_eq!(c2["rejected"], 1);
    let c3 = row(&report, "c3");
    assert_eq!(
        (&c3["requests"], &c3["hits"], &c3["rate_limited"], &c3["tokens_issued"]),
        (&json!(4), &json!(1), &json!(2), &json!(1))
    );
    assert_eq!(c3["limits"]["rate_limit"]["max_tokens"], 2);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(c3["last_seen"].as_u64().unwrap().abs_diff(now) < 30);
    // Sorted by tokens issued: c1 (2) first.
    assert_eq!(report["clients"][0]["client_id"], "c1");
    assert_eq!(report["totals"]["requests"], 11);
    assert_eq!(report["totals"]["tokens_issued"], 4);
    assert_eq!(stack.idp.token_calls(), 5);

    let prometheus =
        testbed::request("GET", stack.envoy.admin_port(), "/stats/prometheus", &[], b"").unwrap().text();
    for (name, value) in [
        ("tokengate_requests_total", 11),
        ("tokengate_hits_total", 3),
        ("tokengate_misses_total", 4),
        ("tokengate_rejected_total", 1),
        ("tokengate_unproven_total", 0),
        ("tokengate_negative_total", 1),
        ("tokengate_rate_limited_total", 2),
        ("tokengate_idp_calls_total", 5),
        ("tokengate_quota_rejected_total", 0),
        ("tokengate_bad_requests_total", 0),
        ("tokengate_cache_entries", 4),
    ] {
        assert_eq!(prometheus_value(&prometheus, name), value, "{name}");
    }
}

#[test]
fn the_access_log_shows_the_decision_and_client_but_no_secret() {
    let stack = start();
    drive_mix(&stack);
    // Envoy flushes the access log every 100 ms (testbed's --file-flush-interval-msec).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = stack.envoy.log();
    let access: Vec<&str> = log.lines().filter(|l| l.contains("tokengate_decision=")).collect();
    assert!(access.iter().any(|l| l.contains("tokengate_decision=hit client_id=c1")), "{access:#?}");
    assert!(access.iter().any(|l| l.contains("tokengate_decision=rate_limited client_id=c3")), "{access:#?}");
    assert!(access.iter().any(|l| l.contains("tokengate_decision=negative client_id=c2")), "{access:#?}");
    for secret in ["s1", "s2", "s3", "wrong"] {
        assert!(
            !access
                .iter()
                .any(|l| l.contains(&format!("={secret} ")) || l.contains(secret) && l.contains("secret"))
        );
    }
}

#[test]
fn the_usage_page_renders_each_clients_row_in_a_browser() {
    let stack = start();
    drive_mix(&stack);
    // An organization whose Auth0 quota is spent (Auth0's 429: no token, the shares stay):
    // the page lists it.
    stack.idp.set_extra_headers(&[("auth0-organization-quota-limit", "b=per_day;q=5;r=0;t=600")]);
    stack.set_fault(mock_idp::Fault { status: Some(429), ..mock_idp::Fault::default() });
    let org = stack.post_form(&format!("{}&organization=org_9", cc_form("c2", "s2", "z")));
    assert_eq!(org.status, 429, "{}", org.text());
    stack.set_fault(mock_idp::Fault::default());
    stack.idp.set_extra_headers(&[]);
    let browser = [("accept", "text/html,*/*;q=0.8"), ("accept-encoding", "gzip, deflate")];
    let page = testbed::request("GET", stack.port(), USAGE, &browser, b"").unwrap();
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("content-encoding"), Some("gzip"));
    assert_eq!(page.body[..2], [0x1f, 0x8b], "gzip bytes");
    // The page may run only its own script and style, and no site may frame it.
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // Without gzip (curl without --compressed), the JSON.
    let plain = testbed::request("GET", stack.port(), USAGE, &[("accept", "text/html")], b"").unwrap();
    assert_eq!(plain.header("content-type"), Some("application/json"));
    assert_eq!(plain.header("x-content-type-options"), Some("nosniff"));

    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(chromium.exists(), "Chromium is missing: `cargo xtask test` installs it");
    let artifacts = testbed::workspace_root().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("usage-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("http://127.0.0.1:{}{USAGE}", stack.port());
    let profile = std::env::temp_dir().join(format!("tokengate-chromium-{}", std::process::id()));
    let run = |extra: &[String]| {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--virtual-time-budget=5000", "--window-size=1280,720"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom".to_owned()]);
    run(&[format!("--screenshot={}", screenshot.display())]);
    let _ = std::fs::remove_dir_all(&profile);

    let cells = |client: &str| -> Vec<String> {
        let start = dom
            .find(&format!("data-client=\"{client}\""))
            .unwrap_or_else(|| panic!("no row for {client}:\n{dom}"));
        let row = &dom[start..start + dom[start..].find("</tr>").unwrap()];
        row.split("<td").skip(1).map(|cell| strip_tags(cell.split_once('>').unwrap().1)).collect()
    };
    let c1 = cells("c1");
    assert_eq!((c1[0].as_str(), c1[1].as_str(), c1[2].as_str()), ("c1", "2", "50.0 %"), "{c1:?}");
    assert_eq!((c1[4].as_str(), c1[5].as_str(), c1[6].as_str()), ("4", "2", "2"), "{c1:?}");
    let c3 = cells("c3");
    assert_eq!((c3[1].as_str(), c3[4].as_str(), c3[7].as_str()), ("1", "4", "2"), "{c3:?}");
    assert!(dom.find("data-client=\"c1\"") < dom.find("data-client=\"c3\""), "sorted by tokens issued");
    let hold = dom
        .find("data-hold=\"organization\"")
        .map(|at| strip_tags(&dom[at..at + dom[at..].find("</li>").unwrap()]));
    assert!(hold.as_deref().is_some_and(|h| h.contains("organization org_9 until")), "{hold:?}\n{dom}");
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot");
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}
