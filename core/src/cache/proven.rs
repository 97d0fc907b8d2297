//! Proven credentials: credential fingerprints (client id, how it authenticated, the
//! secret; `fingerprint::credential`) the IdP issued a token to, remembered for the client's
//! issuance window (the quota window, else a day), and forgotten when the IdP refuses them.
//! A request whose credentials are here is charged to its client's bucket at once, like a
//! hit, for any audience or scope; every other one is charged only when the IdP's token
//! arrives, so requests with a wrong secret never spend the real client's limits. Only the
//! IdP can add an entry here; a table of its own, so floods never evict it.

use crate::cache::SlotEntry;
use crate::codec::{Reader, Writer};
use crate::fingerprint::Fingerprint;

const FORMAT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEntry {
    pub fingerprint: Fingerprint,
    pub expires_at_ms: u64,
}

impl ProvenEntry {
    pub fn live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

impl SlotEntry for ProvenEntry {
    const KIND: &'static str = crate::keys::PROVEN;

    fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    fn encode(&self) -> Vec<u8> {
        Writer::new(FORMAT_VERSION, 32 + 8).raw(&self.fingerprint.0).u64(self.expires_at_ms).finish()
    }

    fn decode(bytes: &[u8]) -> Option<ProvenEntry> {
        let mut r = Reader::open(bytes, FORMAT_VERSION)?;
        Some(ProvenEntry { fingerprint: Fingerprint(r.array()?), expires_at_ms: r.u64()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let e = ProvenEntry { fingerprint: Fingerprint([7; 32]), expires_at_ms: 10 };
        assert_eq!(ProvenEntry::decode(&e.encode()), Some(e.clone()));
        assert!(e.live(9) && !e.live(10));
        assert_eq!(ProvenEntry::decode(&[2]), None);
    }
}
