//! tokengate in front of a real OpenID provider (npm `oidc-provider`, `testbed::oidc`) that
//! checks DPoP proofs and binds tokens to client certificates, driven by a real client
//! library (`oauth4webapi`) and curl, over HTTPS with certificates made at test time.
//!
//! - DPoP works through tokengate: the request goes on through the route untouched, so the
//!   proof still names the URL the client called, and the provider accepts it.
//! - A client that authenticates with its certificate alone is served from the cache, per
//!   certificate: each certificate gets the token the provider bound to it.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::*;
use testbed::oidc::{self, OidcProvider};
use testbed::{Envoy, EnvoyOptions, workspace_root};

const SUBJECT: &str = "/O=tokengate/CN=mtls-app";

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokengate-oidc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Envoy with tokengate in front of `provider`, its token listener on HTTPS with the
/// certificates in `tls` (`server.*`, `ca.crt`); `template` when given.
fn envoy_for(provider: &OidcProvider, tls: &Path, plugin: Value, template: Option<PathBuf>) -> Envoy {
    let mut options = EnvoyOptions::new(plugin_config(plugin).to_string(), provider.port());
    options.listener_tls = Some(tls.to_path_buf());
    if let Some(template) = template {
        options.template = template;
    }
    Envoy::start(&options).unwrap_or_else(|e| panic!("Envoy did not start: {e}"))
}

fn upstream(extra: Value) -> Value {
    let mut upstream = json!({"cluster": "idp", "authority": "oidc.tokengate.test"});
    if let (Value::Object(u), Value::Object(e)) = (&mut upstream, extra) {
        u.extend(e);
    }
    json!({ "upstream": upstream })
}

/// How many token requests reached the provider.
fn token_requests(provider: &OidcProvider) -> usize {
    provider.log().lines().filter(|l| l.contains("\"/oauth/token\"")).count()
}

#[test]
fn a_dpop_proof_verifies_at_the_provider_through_tokengate() {
    if !oidc::node_available() {
        eprintln!("skipped: node is not installed");
        return;
    }
    let provider =
        OidcProvider::start(&json!([{"client_id": "dpop-app", "client_secret": "s3cret"}])).unwrap();
    let tls = dir("dpop");
    testbed::tls::write_listener_certificates(&tls, "tokengate DPoP test CA").unwrap();
    let envoy = envoy_for(&provider, &tls, upstream(json!({})), None);
    let url = format!("https://127.0.0.1:{}/oauth/token", envoy.listen_port());
    let ca = tls.join("ca.crt");

    let mut bound = Vec::new();
    for _ in 0..2 {
        let answer = oidc::dpop_token(&url, Some(&ca), "dpop-app", "s3cret", &[], false).unwrap();
        assert_eq!(answer["status"], 200, "{answer}\n{}", provider.log());
        assert_eq!(answer["body"]["token_type"], "DPoP", "{answer}");
        let token = answer["body"]["access_token"].as_str().unwrap().to_owned();
        let claims = oidc::jwt_payload(&token).unwrap();
        assert_eq!(claims["cnf"]["jkt"], answer["jkt"], "bound to the proof's key: {claims}");
        bound.push(token);
    }
    // Never from the cache: each proof is the client's own call.
    assert_ne!(bound[0], bound[1]);
    assert_eq!(token_requests(&provider), 2, "{}", provider.log());
    assert_eq!(envoy.stat("wasmcustom.tokengate_bypass_total").unwrap(), 2);
    assert_eq!(envoy.stat("wasmcustom.tokengate_hits_total").unwrap(), 0);
    // The provider really checks: a proof for another URL is refused, and the refusal
    // reaches the client as the provider gave it.
    let wrong = oidc::dpop_token(&url, Some(&ca), "dpop-app", "s3cret", &[], true).unwrap();
    assert_eq!(wrong["status"], 400, "{wrong}");
    assert_eq!(wrong["body"]["error"], "invalid_dpop_proof", "{wrong}");
}

/// `envoy/tokengate.yaml` with client certificates required (from `ca_bundle`) and passed
/// by Envoy in `x-forwarded-client-cert` (SANITIZE_SET with the certificate), as
/// docs/deployment.md tells.
fn template_with_client_certificates(ca_bundle: &Path) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("envoy/tokengate.yaml")).unwrap();
    let edited = text
        .replace(
            "          use_remote_address: true\n",
            "          use_remote_address: true\n          forward_client_cert_details: SANITIZE_SET\n          \
             set_current_client_cert_details: { cert: true }\n",
        )
        .replace(
            "              private_key: { filename: \"{{TLS_DIR}}/server.key\" }\n",
            &format!(
                "              private_key: {{ filename: \"{{{{TLS_DIR}}}}/server.key\" }}\n            \
                 validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n          \
                 require_client_certificate: true\n",
                ca_bundle.display()
            ),
        );
    assert!(edited.contains("SANITIZE_SET") && edited.contains("require_client_certificate"));
    let path = ca_bundle.with_file_name("envoy-mtls.yaml");
    std::fs::write(&path, edited).unwrap();
    path
}

/// A client-credentials request authenticated by the certificate alone, with curl; returns
/// the status, the cache header and the body.
fn post_with_certificate(
    url: &str,
    ca: &Path,
    client: &oidc::Certificates,
    forged: &[&str],
) -> (u16, String, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "30", "--cacert"]).arg(ca);
    cmd.arg("--cert").arg(&client.client_certificate).arg("--key").arg(&client.client_key);
    for header in forged {
        cmd.args(["-H", header]);
    }
    cmd.args(["-X", "POST", "-H", &format!("content-type: {FORM}")]);
    cmd.args(["--data-raw", "grant_type=client_credentials&client_id=mtls-app"]);
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let cache = text
        .lines()
        .find_map(|l| l.strip_prefix("x-tokengate-cache: "))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    let body =
        text.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, cache, body)
}

#[test]
fn a_certificate_bound_token_is_cached_per_certificate_and_served_to_it_only() {
    if !oidc::node_available() {
        eprintln!("skipped: node is not installed");
        return;
    }
    let dn = "CN=mtls-app,O=tokengate";
    let provider =
        OidcProvider::start(&json!([{"client_id": "mtls-app", "tls_client_auth_subject_dn": dn}])).unwrap();
    let tls = dir("mtls");
    testbed::tls::write_listener_certificates(&tls, "tokengate mTLS test CA").unwrap();
    // Two certificates of the same client (same subject), each from its own CA.
    let first = oidc::write_certificates(&tls.join("first"), SUBJECT).unwrap();
    let second = oidc::write_certificates(&tls.join("second"), SUBJECT).unwrap();
    let bundle = tls.join("client-cas.pem");
    let cas = [&first.ca, &second.ca].map(|ca| std::fs::read_to_string(ca).unwrap()).concat();
    std::fs::write(&bundle, cas).unwrap();
    let template = template_with_client_certificates(&bundle);
    let envoy =
        envoy_for(&provider, &tls, upstream(json!({"forward_client_certificate": true})), Some(template));
    let url = format!("https://127.0.0.1:{}/oauth/token", envoy.listen_port());
    let ca = tls.join("ca.crt");
    let thumbprint = |c: &oidc::Certificates| {
        oidc::certificate_thumbprint(&std::fs::read_to_string(&c.client_certificate).unwrap()).unwrap()
    };
    let bound_to = |body: &Value| {
        let claims = oidc::jwt_payload(body["access_token"].as_str().unwrap()).unwrap();
        claims["cnf"]["x5t#S256"].as_str().unwrap_or_default().to_owned()
    };
    // A client's own copies of the certificate headers never count.
    let forged = ["client-certificate: forged", "client-certificate-ca-verified: SUCCESS"];

    let (status, cache, miss) = post_with_certificate(&url, &ca, &first, &forged);
    assert_eq!((status, cache.as_str()), (200, "miss"), "{miss}\n{}", provider.log());
    assert_eq!(bound_to(&miss), thumbprint(&first));
    let (status, cache, hit) = post_with_certificate(&url, &ca, &first, &[]);
    assert_eq!((status, cache.as_str()), (200, "hit"), "{hit}");
    assert_eq!(hit["access_token"], miss["access_token"]);
    // Another certificate of the same client: its own token, bound to it.
    let (status, cache, other) = post_with_certificate(&url, &ca, &second, &forged);
    assert_eq!((status, cache.as_str()), (200, "miss"), "{other}\n{}", provider.log());
    assert_eq!(bound_to(&other), thumbprint(&second));
    assert_ne!(other["access_token"], miss["access_token"]);
    assert_eq!(token_requests(&provider), 2);
}
