//! The cache key and the sealing key. Both come from HKDF-SHA256 over a canonical form of
//! everything that decides which token the IdP issues — the IdP itself, grant type, client
//! id, client secret and every parameter, with `scope` as a set. Two requests get the same
//! key exactly when the IdP would treat them alike, so a different secret can never reach
//! another's token. Only the cache key is ever stored; the secret and the sealing key are
//! not.

use std::fmt::Write as _;

use hkdf::Hkdf;
use sha2::Sha256;

use crate::config::Upstream;
use crate::request::TokenRequest;
use crate::seal::SealKey;

/// Domain separation: a new canonical form gets a new tag, never a silent collision.
const TAG: &[u8] = b"tokengate/fingerprint/v3";
/// Keys of requests with a client certificate: their own domain, so no choice of request
/// parameters can spell one.
const CERTIFICATE_TAG: &[u8] = b"tokengate/fingerprint/v3/certificate";
const CREDENTIAL_TAG: &[u8] = b"tokengate/credential/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// What a token request is, for the cache: where to find its token and how to open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub fingerprint: Fingerprint,
    pub seal_key: SealKey,
}

impl Identity {
    pub fn of(request: &TokenRequest, upstream: &Upstream) -> Identity {
        let canonical = canonical_form(request, upstream);
        let tag = if request.certificate.is_some() { CERTIFICATE_TAG } else { TAG };
        let hkdf = Hkdf::<Sha256>::new(Some(tag), &canonical);
        let (mut fingerprint, mut seal_key) = ([0u8; 32], [0u8; 32]);
        // 32-byte outputs are far below HKDF's limit: these expansions cannot fail.
        let _ = hkdf.expand(b"cache-key", &mut fingerprint);
        let _ = hkdf.expand(b"seal-key", &mut seal_key);
        Identity { fingerprint: Fingerprint(fingerprint), seal_key: SealKey(seal_key) }
    }
}

/// Proof is per credential, not per cache key: the IdP, the client id, how the client
/// authenticated and its secret (a Basic header as sent), and nothing it asked for. A
/// token issued for one audience proves the same credentials for every other. Computed
/// only for a request that may call the IdP (never for a hit).
pub fn credential(request: &TokenRequest, upstream: &Upstream) -> Fingerprint {
    let mut out = Vec::with_capacity(128);
    field(&mut out, "upstream.cluster", &upstream.cluster);
    field(&mut out, "upstream.authority", &upstream.authority);
    field(&mut out, "upstream.path", &upstream.path);
    field(&mut out, "client_id", request.client_id.as_deref().unwrap_or_default());
    let secret = request.client_secret.as_deref().filter(|s| !s.is_empty());
    match (&request.basic, secret, &request.certificate) {
        // Authenticated by the certificate alone (tls_client_auth), an empty Basic secret
        // included: proven per certificate.
        (_, None, Some(thumbprint)) => field_bytes(&mut out, b"tls_client_auth", thumbprint),
        (Some(decoded), _, _) => field_bytes(&mut out, b"client_secret_basic", decoded),
        (None, _, _) => field(&mut out, "client_secret_post", secret.unwrap_or_default()),
    }
    // HKDF as for the cache key (its code is in the module already; a plain digest is not).
    let mut credential = [0u8; 32];
    let _ = Hkdf::<Sha256>::new(Some(CREDENTIAL_TAG), &out).expand(b"credential", &mut credential);
    Fingerprint(credential)
}

/// A fingerprint of `input` in the domain `tag`, by the HKDF the cache keys use (one hash
/// routine in the module, not two).
#[inline(never)]
pub fn tagged(tag: &[u8], input: &[u8]) -> Fingerprint {
    let mut out = [0u8; 32];
    let _ = Hkdf::<Sha256>::new(Some(tag), input).expand(b"tokengate", &mut out);
    Fingerprint(out)
}

/// Length-prefixed fields in a fixed order, then every parameter sorted by name.
fn canonical_form(request: &TokenRequest, upstream: &Upstream) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // The IdP is part of the key: two tenants never share a token.
    field(&mut out, "upstream.cluster", &upstream.cluster);
    field(&mut out, "upstream.authority", &upstream.authority);
    field(&mut out, "upstream.path", &upstream.path);
    field(&mut out, "grant_type", &request.grant_type);
    field(&mut out, "client_id", request.client_id.as_deref().unwrap_or_default());
    field(&mut out, "client_secret", request.client_secret.as_deref().unwrap_or_default());
    // How the client authenticated, and a Basic header as sent (raw or form-encoded
    // credentials that read alike may differ to the IdP).
    match &request.basic {
        Some(decoded) => field_bytes(&mut out, b"client_secret_basic", decoded),
        None => field(&mut out, "client_secret_post", ""),
    }
    // A token may be bound to the certificate (`cnf` `x5t#S256`): it is another token.
    if let Some(thumbprint) = &request.certificate {
        field_bytes(&mut out, b"client_certificate", thumbprint);
    }
    // `SortedMap` order: parameters sorted by name, whatever order they came in.
    for (name, value) in &request.params {
        if name == "scope" {
            let scope = canonical_scope(value);
            if !scope.is_empty() {
                field(&mut out, name, &scope);
            }
        } else {
            field(&mut out, name, value);
        }
    }
    out
}

impl Fingerprint {
    pub fn of(request: &TokenRequest, upstream: &Upstream) -> Fingerprint {
        Identity::of(request, upstream).fingerprint
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// A 64-bit number taken from the digest, for slot addressing.
    pub fn word(&self, index: usize) -> u64 {
        let start = (index % 4) * 8;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[start..start + 8]);
        u64::from_le_bytes(bytes)
    }
}

/// Length-prefixed, so no choice of names and values can make two forms read alike.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    field_bytes(out, name.as_bytes(), value.as_bytes());
}

fn field_bytes(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for part in [name, value] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
}

/// A scope is a set of space-separated tokens (RFC 6749 §3.3): order and repeats do not
/// change what the IdP grants.
pub fn canonical_scope(scope: &str) -> String {
    // A heap sort: the standard sorts' instantiations cost ~10 KB of .wasm each.
    let mut tokens =
        scope.split_ascii_whitespace().collect::<std::collections::BinaryHeap<&str>>().into_sorted_vec();
    tokens.dedup();
    tokens.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth0Quota, BackoffScope, Upstream};
    use crate::request::{RequestHead, TokenRequest};

    fn upstream() -> Upstream {
        Upstream {
            cluster: "auth0".into(),
            authority: "t.us.auth0.com".into(),
            path: "/oauth/token".into(),
            timeout_ms: 5000,
            backoff_scope: BackoffScope::Client,
            auth0_quota: Auth0Quota::Obey,
            max_backoff_ms: 60_000,
            reserve: 0,
            key_header: None,
            client_ip_header: None,
            env_headers: Vec::new(),
            forward_client_certificate: false,
            owned_headers: Vec::new(),
        }
    }

    fn fp(body: &str) -> Fingerprint {
        let head = RequestHead {
            content_type: Some("application/x-www-form-urlencoded".into()),
            authorization: None,
            dpop: None,
            ..Default::default()
        };
        Fingerprint::of(&TokenRequest::parse(&head, body.as_bytes()).unwrap(), &upstream())
    }

    const BASE: &str = "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=a";

    fn credential_of(body: &str, authorization: Option<&str>) -> Fingerprint {
        let head = RequestHead {
            content_type: Some("application/x-www-form-urlencoded".into()),
            authorization: authorization.map(str::to_owned),
            dpop: None,
            ..Default::default()
        };
        credential(&TokenRequest::parse(&head, body.as_bytes()).unwrap(), &upstream())
    }

    #[test]
    fn a_credential_is_the_same_for_every_audience_and_scope_and_differs_by_secret_and_method() {
        let base = credential_of(BASE, None);
        for same in [
            "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=b&scope=read",
            "grant_type=client_credentials&client_id=c1&client_secret=s1&organization=o",
        ] {
            assert_eq!(credential_of(same, None), base, "{same}");
        }
        for other in [
            "grant_type=client_credentials&client_id=c1&client_secret=s2&audience=a",
            "grant_type=client_credentials&client_id=c2&client_secret=s1&audience=a",
        ] {
            assert_ne!(credential_of(other, None), base, "{other}");
        }
        // The same id and secret sent in a Basic header: another way to authenticate.
        let basic = credential_of("grant_type=client_credentials&audience=a", Some("Basic YzE6czE="));
        assert_ne!(basic, base);
        assert_eq!(basic, credential_of("grant_type=client_credentials&audience=b", Some("Basic YzE6czE=")));
        assert_ne!(base, fp(BASE), "never the cache key");
    }

    #[test]
    fn scope_order_and_repeats_do_not_matter() {
        assert_eq!(fp(&format!("{BASE}&scope=read+write")), fp(&format!("{BASE}&scope=write+read+read")));
        assert_eq!(fp(&format!("{BASE}&scope=read+write")), fp(&format!("{BASE}&scope=++write+++read+")));
        assert_ne!(fp(&format!("{BASE}&scope=read")), fp(&format!("{BASE}&scope=read+write")));
        assert_eq!(fp(BASE), fp(&format!("{BASE}&scope=+")));
    }

    #[test]
    fn parameter_order_does_not_matter() {
        assert_eq!(fp("audience=a&client_secret=s1&client_id=c1&grant_type=client_credentials"), fp(BASE));
    }

    #[test]
    fn same_json_and_form_request_share_a_key() {
        let head = RequestHead {
            content_type: Some("application/json".into()),
            authorization: None,
            dpop: None,
            ..Default::default()
        };
        let json =
            r#"{"grant_type":"client_credentials","client_id":"c1","client_secret":"s1","audience":"a"}"#;
        let r = TokenRequest::parse(&head, json.as_bytes()).unwrap();
        assert_eq!(Fingerprint::of(&r, &upstream()), fp(BASE));
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = fp(BASE);
        for other in [
            "grant_type=client_credentials&client_id=c1&client_secret=s2&audience=a",
            "grant_type=client_credentials&client_id=c2&client_secret=s1&audience=a",
            "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=b",
            "grant_type=client_credentials&client_id=c1&client_secret=s1",
            "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=a&organization=o",
            "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=a&x=",
        ] {
            assert_ne!(fp(other), base, "{other}");
        }
        let r = TokenRequest::parse(
            &RequestHead {
                content_type: Some("application/x-www-form-urlencoded".into()),
                authorization: None,
                dpop: None,
                ..Default::default()
            },
            BASE.as_bytes(),
        )
        .unwrap();
        let mut other_tenant = upstream();
        other_tenant.authority = "other.eu.auth0.com".into();
        assert_ne!(Fingerprint::of(&r, &other_tenant), base);
    }

    #[test]
    fn length_prefixes_prevent_shifted_boundaries() {
        // "ab"+"c" vs "a"+"bc" in adjacent fields.
        assert_ne!(
            fp("grant_type=client_credentials&client_id=ab&client_secret=c"),
            fp("grant_type=client_credentials&client_id=a&client_secret=bc")
        );
    }

    #[test]
    fn hex_is_64_lowercase_digits() {
        let hex = fp(BASE).to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
