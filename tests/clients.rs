//! Real OAuth clients that nobody here wrote, against tokengate in real Envoy: the official
//! Auth0 Python SDK (`auth0-python`, JSON body with `"organization": null`) and Node.js's
//! `simple-oauth2` (Basic credentials, form body). Each gets a token on a miss, the same
//! token from the cache on the next call, and the IdP sees one call. `cargo xtask test`
//! installs both, pinned, under `.tools/`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

/// Runs `program` with `args` and parses what it printed last as JSON.
fn run_client(program: &str, args: &[&str], env: (&str, &Path)) -> Vec<Value> {
    assert!(
        env.1.exists(),
        "{} is missing: run `cargo xtask test` (it installs the clients)",
        env.1.display()
    );
    let output = Command::new(program)
        .args(args)
        .env(env.0, env.1)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{program} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

fn assert_one_miss_then_a_hit(stack: &Stack, answers: &[Value], client_id: &str) {
    assert_eq!(answers.len(), 2, "{answers:?}");
    let token = answers[0]["access_token"].as_str().unwrap();
    assert!(token.starts_with(&format!("mock.{client_id}.")), "{token}");
    assert_eq!(answers[1]["access_token"], token, "the second call is served from the cache");
    assert!(answers[1]["expires_in"].as_u64().unwrap() <= 3600);
    assert_eq!(stack.idp.calls_for(client_id), 1);
}

const AUTH0_PYTHON: &str = r#"
import json, sys
from auth0.authentication import GetToken
get_token = GetToken(sys.argv[1], sys.argv[2], client_secret=sys.argv[3], protocol="http")
for _ in range(2):
    print(json.dumps(get_token.client_credentials("https://api.example.com")))
"#;

#[test]
fn the_official_auth0_python_sdk_gets_a_token_then_the_cached_one() {
    let stack = Stack::start(plugin_config(json!({})), 3600);
    let domain = format!("127.0.0.1:{}", stack.port());
    let dir = testbed::auth0_python_dir();
    let answers = run_client("python3", &["-c", AUTH0_PYTHON, &domain, "c1", "s1"], ("PYTHONPATH", &dir));
    assert_one_miss_then_a_hit(&stack, &answers, "c1");
    // It sent JSON with a null organization, which tokengate read as absent.
    let sent = &stack.idp.requests()[0];
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["organization"], Value::Null);
    assert!(body.as_object().unwrap().contains_key("organization"));
}

const SIMPLE_OAUTH2: &str = r#"
const { ClientCredentials } = require("simple-oauth2");
const [port, id, secret] = process.argv.slice(1);
const client = new ClientCredentials({
  client: { id, secret },
  auth: { tokenHost: `http://127.0.0.1:${port}`, tokenPath: "/oauth/token" },
});
(async () => {
  for (let i = 0; i < 2; i++) {
    const token = await client.getToken({ audience: "https://api.example.com" });
    console.log(JSON.stringify(token.token));
  }
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[test]
fn node_simple_oauth2_with_basic_credentials_gets_a_token_then_the_cached_one() {
    // A secret that must be form-encoded in the Basic header (RFC 6749 §2.3.1).
    let stack =
        Stack::start_with(plugin_config(json!({})), vec![client("node-app", "s3cr+t/=%")], 3600, "info");
    let port = stack.port().to_string();
    let modules = testbed::simple_oauth2_dir().join("node_modules");
    let answers =
        run_client("node", &["-e", SIMPLE_OAUTH2, &port, "node-app", "s3cr+t/=%"], ("NODE_PATH", &modules));
    assert_one_miss_then_a_hit(&stack, &answers, "node-app");
    let sent = &stack.idp.requests()[0];
    assert!(
        sent.headers.iter().any(|(n, v)| n == "authorization" && v.starts_with("Basic ")),
        "{:?}",
        sent.headers
    );
}
