//! One cached token and its expiry math. The stored JSON is the IdP's token response with
//! `expires_in` taken out, so a hit writes `{"expires_in":N,` in front of it and never
//! parses JSON on the hot path; it is sealed (see `seal`) with the requester's key, bound to
//! the entry's key and times.

use crate::cache::SlotEntry;
use crate::cache::token_json::{members, object_without, string_member};
use crate::codec::{Reader, Writer};
use crate::fingerprint::{Fingerprint, Identity};
use crate::json_object::Json;
use crate::seal::{NONCE_BYTES, SealKey};

/// Token responses larger than this are relayed but not cached (bounds the memory a slot
/// can hold; real access tokens are a few KB at most).
pub const MAX_CACHED_BODY_BYTES: usize = 16 * 1024;

/// Format 2 adds the client tag; format 1 (no tag) is still read, and purges cannot find it.
const FORMAT_VERSION: u8 = 2;
const FORMAT_WITHOUT_TAG: u8 = 1;
const HEADER_BYTES: usize = 1 + 32 + 8 + 8 + 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub fingerprint: Fingerprint,
    /// When the IdP call that issued the token started: the token cannot be older, so
    /// expiry counted from here is never later than the IdP's own.
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// Whose token it is (`cache::purge::client_tag`), so a purge finds it.
    pub client_tag: u64,
    /// The token response as a JSON object without `expires_in`, sealed.
    pub sealed_body: Vec<u8>,
}

impl CacheEntry {
    /// A cacheable token response: a 200 whose JSON object has a non-empty string
    /// `access_token` and a positive `expires_in` (seconds); `None` for anything else.
    pub fn from_token_response(
        identity: &Identity,
        status: u16,
        body: &[u8],
        issued_at_ms: u64,
        max_lifetime_ms: Option<u64>,
        nonce: [u8; NONCE_BYTES],
    ) -> Option<CacheEntry> {
        if status != 200 || body.len() > MAX_CACHED_BODY_BYTES {
            return None;
        }
        let members = members(body)?;
        if string_member(&members, "access_token").is_none_or(|t| t.is_empty()) {
            return None;
        }
        // A sender-constrained token is bound to one client's key: never anyone else's.
        if string_member(&members, "token_type").is_some_and(|t| t.eq_ignore_ascii_case("dpop")) {
            return None;
        }
        let (_, expires_in) = members.iter().find(|(n, _)| n == "expires_in")?;
        // from_slice, not from_str: every JSON read in the module uses one reader type, so
        // serde_json's parser is compiled once (each reader type is a copy in the .wasm).
        // A fractional number of seconds is cut to whole ones; a negative one ends up 0
        // (refused).
        let lifetime_s = match Json::parse(expires_in.get().as_bytes())? {
            Json::Unsigned(s) => s,
            Json::Float(s) if s.is_finite() => s as u64,
            Json::Negative(_) => 0,
            _ => return None,
        };
        if lifetime_s == 0 {
            return None;
        }
        // `cache.max_ttl`: served at most that long, whatever the IdP said.
        let lifetime_ms = lifetime_s.saturating_mul(1000).min(max_lifetime_ms.unwrap_or(u64::MAX));
        let expires_at_ms = issued_at_ms.saturating_add(lifetime_ms);
        let mut entry = CacheEntry {
            fingerprint: identity.fingerprint,
            issued_at_ms,
            expires_at_ms,
            client_tag: 0,
            sealed_body: Vec::new(),
        };
        let plain = object_without(&members, "expires_in");
        entry.sealed_body = identity.seal_key.seal(nonce, &entry.aad(), &plain);
        Some(entry)
    }

    /// Binds the sealed body to this entry's key and times: a body moved into another
    /// entry does not open.
    fn aad(&self) -> [u8; 48] {
        let mut aad = [0u8; 48];
        aad[..32].copy_from_slice(&self.fingerprint.0);
        aad[32..40].copy_from_slice(&self.issued_at_ms.to_le_bytes());
        aad[40..].copy_from_slice(&self.expires_at_ms.to_le_bytes());
        aad
    }

    pub fn lifetime_ms(&self) -> u64 {
        self.expires_at_ms.saturating_sub(self.issued_at_ms)
    }

    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms)
    }

    /// Whether a hit may serve this token: at least `min_remaining_ms` left, and never less
    /// than one whole second, so a client is never handed `expires_in: 0`.
    pub fn servable(&self, now_ms: u64, min_remaining_ms: u64) -> bool {
        self.remaining_ms(now_ms) >= min_remaining_ms.max(1000)
    }

    /// The token response for a hit: the stored JSON with `expires_in` = whole seconds left;
    /// `None` when `key` does not open it.
    pub fn render(&self, key: &SealKey, now_ms: u64) -> Option<Vec<u8>> {
        let rest = self.open(key)?;
        Some(render_token(&rest, self.remaining_ms(now_ms) / 1000))
    }

    /// The token JSON without `expires_in`; `None` when `key` does not open it.
    pub fn open(&self, key: &SealKey) -> Option<Vec<u8>> {
        key.open(&self.aad(), &self.sealed_body)
    }

    fn encode_entry(&self) -> Vec<u8> {
        Writer::new(FORMAT_VERSION, HEADER_BYTES + self.sealed_body.len())
            .raw(&self.fingerprint.0)
            .u64(self.issued_at_ms)
            .u64(self.expires_at_ms)
            .u64(self.client_tag)
            .raw(&self.sealed_body)
            .finish()
    }

    fn decode_entry(bytes: &[u8]) -> Option<CacheEntry> {
        let (mut r, tagged) = match Reader::open(bytes, FORMAT_VERSION) {
            Some(r) => (r, true),
            None => (Reader::open(bytes, FORMAT_WITHOUT_TAG)?, false),
        };
        Some(CacheEntry {
            fingerprint: Fingerprint(r.array()?),
            issued_at_ms: r.u64()?,
            expires_at_ms: r.u64()?,
            client_tag: if tagged { r.u64()? } else { 0 },
            sealed_body: r.rest().to_vec(),
        })
    }
}

/// Inside the refresh-ahead window: less than `ratio` of the lifetime left (`ratio` 0:
/// never). The one rule for a hit from the shared cache and one from a worker's index.
pub fn in_refresh_window(ratio: f64, remaining_ms: u64, lifetime_ms: u64) -> bool {
    ratio > 0.0 && (remaining_ms as f64) < ratio * lifetime_ms as f64
}

/// `{"expires_in":N,` + the rest of the token object (`rest` is a serialized JSON object).
pub fn render_token(rest: &[u8], seconds: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() + 24);
    out.extend_from_slice(b"{\"expires_in\":");
    out.extend_from_slice(seconds.to_string().as_bytes());
    if rest.len() > 2 {
        out.push(b',');
        out.extend_from_slice(&rest[1..]);
    } else {
        out.push(b'}');
    }
    out
}

impl SlotEntry for CacheEntry {
    const KIND: &'static str = crate::keys::TOKEN;

    fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    fn encode(&self) -> Vec<u8> {
        self.encode_entry()
    }

    fn decode(bytes: &[u8]) -> Option<CacheEntry> {
        CacheEntry::decode_entry(bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: Identity = Identity { fingerprint: Fingerprint([7; 32]), seal_key: SealKey([9; 32]) };

    fn entry(body: &str, issued_at_ms: u64) -> Option<CacheEntry> {
        CacheEntry::from_token_response(&ID, 200, body.as_bytes(), issued_at_ms, None, [3; 12])
    }

    #[test]
    fn only_valid_200_token_responses_are_cached() {
        let ok = r#"{"access_token":"t","token_type":"Bearer","expires_in":3600}"#;
        assert!(entry(ok, 0).is_some());
        assert!(CacheEntry::from_token_response(&ID, 201, ok.as_bytes(), 0, None, [3; 12]).is_none());
        for bad in [
            r#"{"token_type":"Bearer","expires_in":3600}"#,
            r#"{"access_token":5,"expires_in":3600}"#,
            r#"{"access_token":"","expires_in":3600}"#,
            r#"{"access_token":"t"}"#,
            r#"{"access_token":"t","expires_in":0}"#,
            r#"{"access_token":"t","expires_in":-5}"#,
            r#"{"access_token":"t","expires_in":"3600"}"#,
            r#"["access_token"]"#,
            "not json",
        ] {
            assert!(entry(bad, 0).is_none(), "{bad}");
        }
        let huge = format!(r#"{{"access_token":"{}","expires_in":60}}"#, "x".repeat(MAX_CACHED_BODY_BYTES));
        assert!(entry(&huge, 0).is_none());
    }

    #[test]
    fn hit_renders_whole_seconds_left() {
        let e = entry(r#"{"access_token":"t","token_type":"Bearer","expires_in":3}"#, 10_000).unwrap();
        assert_eq!(e.expires_at_ms, 13_000);
        let rendered: serde_json::Value =
            serde_json::from_slice(&e.render(&ID.seal_key, 11_000).unwrap()).unwrap();
        assert_eq!(rendered, serde_json::json!({"access_token":"t","token_type":"Bearer","expires_in":2}));
        let rendered: serde_json::Value =
            serde_json::from_slice(&e.render(&ID.seal_key, 11_001).unwrap()).unwrap();
        assert_eq!(rendered["expires_in"], 1);
    }

    #[test]
    fn renders_object_without_other_fields() {
        let mut e = entry(r#"{"access_token":"t","expires_in":3}"#, 0).unwrap();
        e.sealed_body = ID.seal_key.seal([1; 12], &e.aad(), b"{}");
        assert_eq!(e.render(&ID.seal_key, 0).unwrap(), br#"{"expires_in":3}"#);
    }

    #[test]
    fn the_stored_bytes_hold_no_token_and_only_the_right_key_opens_them() {
        let e = entry(r#"{"access_token":"eyJ-secret-token","expires_in":60}"#, 0).unwrap();
        let stored = e.encode();
        assert!(!stored.windows(16).any(|w| w == b"eyJ-secret-token"));
        assert!(e.render(&SealKey([1; 32]), 0).is_none());
        let mut moved = e.clone();
        moved.expires_at_ms += 1_000_000;
        assert!(moved.render(&ID.seal_key, 0).is_none(), "a body moved to other times does not open");
    }

    #[test]
    fn floor_of_min_remaining_ttl() {
        let e = entry(r#"{"access_token":"t","expires_in":3}"#, 0).unwrap();
        assert!(e.servable(1_000, 1_000));
        assert!(e.servable(2_000, 1_000));
        assert!(!e.servable(2_600, 1_000));
        // Never below one second, even with a zero floor.
        assert!(!e.servable(2_001, 0));
    }

    #[test]
    fn fractional_expires_in_rounds_down() {
        let e = entry(r#"{"access_token":"t","expires_in":2.9}"#, 0).unwrap();
        assert_eq!(e.lifetime_ms(), 2_000);
    }

    #[test]
    fn decode_refuses_foreign_bytes() {
        assert!(CacheEntry::decode(b"").is_none());
        assert!(CacheEntry::decode(&[9; 60]).is_none());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(issued in 0u64..u64::MAX / 2, life in 1u64..10_000_000, token in "[a-zA-Z0-9._-]{1,200}") {
            let body = format!(r#"{{"access_token":"{token}","expires_in":{life}}}"#);
            let e = entry(&body, issued).unwrap();
            prop_assert_eq!(CacheEntry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn expires_in_never_grows_and_never_exceeds_the_lifetime(
            issued in 0u64..1u64 << 50, life in 1u64..1_000_000, a in 0u64..2_000_000_000, b in 0u64..2_000_000_000,
        ) {
            let e = entry(&format!(r#"{{"access_token":"t","expires_in":{life}}}"#), issued).unwrap();
            let (early, late) = (issued + a.min(b), issued + a.max(b));
            let seconds = |now| -> u64 {
                let v: serde_json::Value = serde_json::from_slice(&e.render(&ID.seal_key, now).unwrap()).unwrap();
                v["expires_in"].as_u64().unwrap()
            };
            prop_assert!(seconds(late) <= seconds(early));
            prop_assert!(seconds(early) <= life);
            // A servable entry always shows at least the floor, in whole seconds.
            if e.servable(early, 30_000) {
                prop_assert!(seconds(early) >= 30);
            }
        }
    }
}
