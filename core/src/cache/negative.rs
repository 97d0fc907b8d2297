//! The negative cache: an IdP `401`/`403` for one cache key, answered locally for
//! `cache.negative_ttl`, so a misconfigured client retrying in a loop costs the IdP one call
//! per interval. Kept in a table of its own, so refusals never evict good tokens.

use crate::cache::{SlotEntry, SlotTable};
use crate::codec::{Reader, Writer};
use crate::fingerprint::Fingerprint;

/// Refusal bodies larger than this are not remembered.
const MAX_BODY_BYTES: usize = 4096;
/// Format 2 adds the client tag; format 1 (no tag) is still read.
const FORMAT_VERSION: u8 = 2;
const FORMAT_WITHOUT_TAG: u8 = 1;
const HEADER_BYTES: usize = 1 + 32 + 8 + 8 + 2;

pub type NegativeTable<'a> = SlotTable<'a, NegativeEntry>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegativeEntry {
    pub fingerprint: Fingerprint,
    pub expires_at_ms: u64,
    /// Whose refusal it is (`cache::purge::client_tag`), so a purge finds it.
    pub client_tag: u64,
    pub status: u16,
    /// The IdP's JSON error body, relayed as it came.
    pub body: Vec<u8>,
}

impl NegativeEntry {
    /// A refusal worth remembering: `401` or `403` with a small body.
    pub fn from_refusal(
        fingerprint: Fingerprint,
        status: u16,
        body: &[u8],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Option<NegativeEntry> {
        let refusal = status == 401 || status == 403;
        (refusal && ttl_ms > 0 && body.len() <= MAX_BODY_BYTES).then(|| NegativeEntry {
            fingerprint,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
            client_tag: 0,
            status,
            body: body.to_vec(),
        })
    }

    pub fn live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

impl SlotEntry for NegativeEntry {
    const KIND: &'static str = crate::keys::NEGATIVE;

    fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    fn encode(&self) -> Vec<u8> {
        Writer::new(FORMAT_VERSION, HEADER_BYTES + self.body.len())
            .raw(&self.fingerprint.0)
            .u64(self.expires_at_ms)
            .u64(self.client_tag)
            .u16(self.status)
            .raw(&self.body)
            .finish()
    }

    fn decode(bytes: &[u8]) -> Option<NegativeEntry> {
        let (mut r, tagged) = match Reader::open(bytes, FORMAT_VERSION) {
            Some(r) => (r, true),
            None => (Reader::open(bytes, FORMAT_WITHOUT_TAG)?, false),
        };
        Some(NegativeEntry {
            fingerprint: Fingerprint(r.array()?),
            expires_at_ms: r.u64()?,
            client_tag: if tagged { r.u64()? } else { 0 },
            status: r.u16()?,
            body: r.rest().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_401_and_403_are_remembered() {
        let fp = Fingerprint([1; 32]);
        for status in [200, 400, 429, 500] {
            assert!(NegativeEntry::from_refusal(fp, status, b"{}", 0, 10_000).is_none());
        }
        let e = NegativeEntry::from_refusal(fp, 401, br#"{"error":"access_denied"}"#, 5, 10_000).unwrap();
        assert_eq!(NegativeEntry::decode(&e.encode()), Some(e.clone()));
        assert!(e.live(10_004) && !e.live(10_005));
        assert!(NegativeEntry::from_refusal(fp, 401, b"{}", 0, 0).is_none(), "negative_ttl 0 turns it off");
    }
}
