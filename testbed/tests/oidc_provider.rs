//! The OpenID harness (`testbed::oidc`) on its own, without Envoy: the real provider issues
//! JWT access tokens to a secret client; binds a DPoP client's token to its key (`cnf.jkt`)
//! and refuses a proof for another URL; binds an mTLS client's token to the certificate the
//! edge passed on (`cnf.x5t#S256`) and refuses one the edge did not verify. Certificates
//! are made with openssl at test time. Skips only when `node` is missing; the pinned npm
//! packages (`cargo xtask test` installs them) and openssl must be there.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::{Value, json};
use testbed::oidc::{self, OidcProvider};

const SECRET_CLIENT: &str = "secret-app";
const SECRET: &str = "s3cr+t/=%";
const MTLS_CLIENT: &str = "mtls-app";
/// `MTLS_CLIENT`'s registered subject, RFC 4514 (most specific first).
const MTLS_SUBJECT_DN: &str = "CN=mtls-app,O=tokengate";
/// The same name in openssl's `-subj` order.
const MTLS_SUBJECT: &str = "/O=tokengate/CN=mtls-app";
/// A client registered for another subject than the certificate's.
const OTHER_MTLS_CLIENT: &str = "other-mtls-app";

fn clients() -> Value {
    json!([
        {"client_id": SECRET_CLIENT, "client_secret": SECRET},
        {"client_id": MTLS_CLIENT, "tls_client_auth_subject_dn": MTLS_SUBJECT_DN},
        {"client_id": OTHER_MTLS_CLIENT, "tls_client_auth_subject_dn": "CN=someone-else"},
    ])
}

fn node_available() -> bool {
    if oidc::node_available() {
        return true;
    }
    eprintln!("skipped: `node` is not installed (the OpenID harness runs on Node.js)");
    false
}

/// A fresh directory with the openssl-made certificates, removed on drop.
struct CertificateDir {
    dir: PathBuf,
    made: oidc::Certificates,
}

impl CertificateDir {
    fn new(test: &str) -> CertificateDir {
        let dir = std::env::temp_dir().join(format!("tokengate-oidc-certs-{test}-{}", std::process::id()));
        let made = oidc::write_certificates(&dir, MTLS_SUBJECT).unwrap();
        CertificateDir { dir, made }
    }
}

impl Drop for CertificateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", oidc::encode_uri_component(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn a_secret_client_gets_a_jwt_access_token() {
    if !node_available() {
        return;
    }
    let provider = OidcProvider::start(&clients()).unwrap();
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", SECRET_CLIENT),
        ("client_secret", SECRET),
        ("scope", "read"),
    ]);
    let answer = testbed::post_form(provider.port(), oidc::TOKEN_PATH, &body, &[]).unwrap();
    assert_eq!(answer.status, 200, "{}\n{}", answer.text(), provider.log());
    let token = answer.json().unwrap();
    assert_eq!((&token["token_type"], &token["scope"]), (&json!("Bearer"), &json!("read")), "{token}");
    let claims = oidc::jwt_payload(token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!((&claims["client_id"], &claims["aud"]), (&json!(SECRET_CLIENT), &json!(oidc::RESOURCE)));
    assert!(claims.get("cnf").is_none(), "a bearer token is bound to nothing: {claims}");

    let wrong =
        form(&[("grant_type", "client_credentials"), ("client_id", SECRET_CLIENT), ("client_secret", "no")]);
    let refused = testbed::post_form(provider.port(), oidc::TOKEN_PATH, &wrong, &[]).unwrap();
    assert_eq!((refused.status, &refused.json().unwrap()["error"]), (401, &json!("invalid_client")));
}

#[test]
fn a_dpop_client_gets_a_token_bound_to_its_key_and_a_proof_for_another_url_is_refused() {
    if !node_available() {
        return;
    }
    let certificates = CertificateDir::new("dpop");
    let made = &certificates.made;
    let provider = OidcProvider::start_https(&clients(), &made.server_certificate, &made.server_key).unwrap();
    let url = provider.token_url();

    let answer = oidc::dpop_token(&url, Some(&made.ca), SECRET_CLIENT, SECRET, &[("scope", "read")], false)
        .unwrap_or_else(|e| panic!("{e}\n{}", provider.log()));
    assert_eq!(answer["status"], 200, "{answer}\n{}", provider.log());
    assert!(answer.get("error").is_none(), "oauth4webapi refused the answer: {answer}");
    assert_eq!(answer["body"]["token_type"], "DPoP", "{answer}");
    let claims = oidc::jwt_payload(answer["body"]["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["cnf"], json!({"jkt": answer["jkt"]}), "{claims}");
    assert!(answer["jkt"].as_str().is_some_and(|jkt| jkt.len() == 43), "{answer}");

    let refused = oidc::dpop_token(&url, Some(&made.ca), SECRET_CLIENT, SECRET, &[], true).unwrap();
    assert_eq!(
        (&refused["status"], &refused["body"]["error"]),
        (&json!(400), &json!("invalid_dpop_proof")),
        "{refused}\n{}",
        provider.log()
    );
    assert_eq!(refused["body"]["error_description"], "DPoP proof htu mismatch", "{refused}");
}

#[test]
fn an_mtls_client_gets_a_token_bound_to_the_certificate_the_edge_verified() {
    if !node_available() {
        return;
    }
    let certificates = CertificateDir::new("mtls");
    let pem = std::fs::read_to_string(&certificates.made.client_certificate).unwrap();
    let provider = OidcProvider::start(&clients()).unwrap();
    let header = oidc::encode_uri_component(&pem);
    let request = |client_id: &str, headers: &[(&str, &str)]| {
        let body = form(&[("grant_type", "client_credentials"), ("client_id", client_id)]);
        testbed::post_form(provider.port(), oidc::TOKEN_PATH, &body, headers).unwrap()
    };

    let verified = [("client-certificate", header.as_str()), ("client-certificate-ca-verified", "SUCCESS")];
    let answer = request(MTLS_CLIENT, &verified);
    assert_eq!(answer.status, 200, "{}\n{}", answer.text(), provider.log());
    let token = answer.json().unwrap();
    assert_eq!(token["token_type"], "Bearer", "{token}");
    let claims = oidc::jwt_payload(token["access_token"].as_str().unwrap()).unwrap();
    let thumbprint = oidc::certificate_thumbprint(&pem).unwrap();
    assert_eq!(claims["cnf"], json!({"x5t#S256": thumbprint}), "{claims}");

    let unverified: [&[(&str, &str)]; 3] = [
        &[("client-certificate", header.as_str())],
        &[("client-certificate", header.as_str()), ("client-certificate-ca-verified", "FAILED:unknown CA")],
        &[("client-certificate-ca-verified", "SUCCESS")],
    ];
    for headers in unverified {
        let refused = request(MTLS_CLIENT, headers);
        assert_eq!(
            (refused.status, &refused.json().unwrap()["error"]),
            (401, &json!("invalid_client")),
            "{headers:?}: {}\n{}",
            refused.text(),
            provider.log()
        );
    }
    let refused = request(OTHER_MTLS_CLIENT, &verified);
    assert_eq!((refused.status, &refused.json().unwrap()["error"]), (401, &json!("invalid_client")));
}
