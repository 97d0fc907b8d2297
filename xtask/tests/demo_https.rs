//! `cargo xtask demo` serves HTTPS that a real OAuth client accepts unchanged: the demo is
//! started as a user starts it, and Python's `requests-oauthlib` (whose `oauthlib` raises
//! `InsecureTransportError` for a plain-HTTP token URL) gets a token, then the cached one,
//! from the `curl --cacert` line the demo printed, trusting only `target/demo/ca.crt`.
//! Plain HTTP on that port gets no token. `cargo xtask test` installs the client, pinned,
//! under `.tools/` (`testbed::REQUESTS_OAUTHLIB`).
//!
//! Its own test binary: it must not run beside `demo_signals.rs`, whose demos write
//! `target/demo/ca.crt` too (cargo runs test binaries one after another).

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Two fetches with the library's defaults but the CA, each printed as a JSON line with
/// the `x-tokengate-cache` header it was answered with; then the same fetch on `http://`.
const REQUESTS_OAUTHLIB: &str = r#"
import json, sys
from oauthlib.oauth2 import BackendApplicationClient, InsecureTransportError
from requests_oauthlib import OAuth2Session

url, ca, client_id, secret, audience = sys.argv[1:6]
answered = []
def record(response):
    answered.append(response.headers.get("x-tokengate-cache"))
    return response
session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
session.register_compliance_hook("access_token_response", record)
for _ in range(2):
    token = session.fetch_token(url, client_id=client_id, client_secret=secret,
                                audience=audience, verify=ca, timeout=60)
    print(json.dumps({"access_token": token["access_token"], "expires_in": token["expires_in"],
                      "cache": answered[-1]}))
try:
    session.fetch_token(url.replace("https://", "http://", 1), client_id=client_id,
                        client_secret=secret, audience=audience, timeout=60)
    print(json.dumps({"plain_http": "sent"}))
except InsecureTransportError:
    print(json.dumps({"plain_http": "refused"}))
"#;

/// The running demo; dropping it stops it as Ctrl-C would (it then stops Envoy and the
/// mock IdP), or kills it when it does not exit within 30 s.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cargo xtask demo` (on any free ports: another demo may hold 10000) from the
/// workspace root, and returns it with what it printed until Envoy was left running.
fn start_demo() -> (Demo, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .current_dir(testbed::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let demo = Demo(child);
    let (lines_tx, lines) = mpsc::channel();
    // Reads to the end, so the demo never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    });
    // It may build tokengate.wasm first: minutes on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let running = line.starts_with("Envoy keeps running");
                printed.push(line);
                if running {
                    return (demo, printed);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the demo did not start within 20 minutes:\n{}", printed.join("\n"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                drop(demo);
                panic!(
                    "the demo ended before Envoy was running:\n{}\n{}",
                    printed.join("\n"),
                    errors.join().unwrap_or_default()
                )
            }
        }
    }
}

/// The value after `flag` in `words` (`-d name=value` for `flag` = `name=`).
fn after<'a>(words: &[&'a str], flag: &str) -> &'a str {
    if let Some(form) = flag.strip_suffix('=') {
        let pair = words.iter().find(|w| w.starts_with(&format!("{form}="))).unwrap();
        return &pair[flag.len()..];
    }
    words[words.iter().position(|w| *w == flag).unwrap() + 1]
}

#[test]
fn a_real_oauth_client_gets_a_token_then_the_cached_one_from_the_demo_over_https_only() {
    let python_dir = testbed::requests_oauthlib_dir();
    assert!(
        python_dir.join("requests_oauthlib").is_dir(),
        "{} is missing: run `cargo xtask test` (it installs the client)",
        python_dir.display()
    );
    let (demo, printed) = start_demo();
    let all = printed.join("\n");

    // The line a user copies: the CA the demo made, the HTTPS URL, the credentials.
    let curl = printed.iter().find(|l| l.trim_start().starts_with("curl --cacert ")).unwrap_or_else(|| {
        panic!("the demo printed no `curl --cacert` line:\n{all}");
    });
    let words: Vec<&str> = curl.split_whitespace().collect();
    assert_eq!(after(&words, "--cacert"), "target/demo/ca.crt", "{curl}");
    let ca = testbed::workspace_root().join("target/demo/ca.crt");
    let url = *words.iter().find(|w| w.starts_with("https://127.0.0.1:")).unwrap_or_else(|| panic!("{curl}"));
    let port: u16 = url["https://127.0.0.1:".len()..].split('/').next().unwrap().parse().unwrap();
    assert_eq!(url, format!("https://127.0.0.1:{port}/oauth/token"));
    let (client_id, secret) = (after(&words, "client_id="), after(&words, "client_secret="));
    assert!(
        all.contains(&format!("client_id={client_id}")) && all.contains(&format!("client_secret={secret}")),
        "the demo lists the credentials it uses:\n{all}"
    );
    // "mock IdP on 127.0.0.1:P1, Envoy on https://127.0.0.1:P2 (admin http://127.0.0.1:P3)"
    let idp_port: u16 = printed
        .iter()
        .find_map(|l| l.strip_prefix("mock IdP on 127.0.0.1:"))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no mock IdP line:\n{all}"))
        .parse()
        .unwrap();
    let idp_calls = |audience: &str| {
        let calls = testbed::get(idp_port, "/__mock/calls").unwrap().json().unwrap();
        calls["by_client_audience"][format!("{client_id}|{audience}")].as_u64().unwrap_or(0)
    };

    // An audience the demo did not ask for: the library's first fetch is the miss.
    let audience = "https://api.example.com/requests-oauthlib";
    let output = Command::new("python3")
        .args(["-c", REQUESTS_OAUTHLIB, url])
        .arg(&ca)
        .args([client_id, secret, audience])
        .env("PYTHONPATH", &python_dir)
        .env_remove("OAUTHLIB_INSECURE_TRANSPORT")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "requests-oauthlib failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    let token = answers[0]["access_token"].as_str().unwrap();
    assert!(token.starts_with(&format!("mock.{client_id}.")), "{token}");
    assert_eq!(answers[0]["cache"], "miss", "{stdout}");
    assert_eq!(answers[1]["cache"], "hit", "the second fetch is served from the cache: {stdout}");
    assert_eq!(answers[1]["access_token"], token);
    assert_eq!(idp_calls(audience), 1, "one IdP call for two fetches");
    // The library would not even send the secret over plain HTTP.
    assert_eq!(answers[2]["plain_http"], "refused", "{stdout}");

    // Nor does plain HTTP on the demo's port get a token: no answer at all.
    let form = format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={secret}&audience={audience}"
    );
    let plain = testbed::post_form(port, "/oauth/token", &form, &[]);
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    assert_eq!(idp_calls(audience), 1);
    drop(demo);
}
