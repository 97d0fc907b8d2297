//! A per-worker index of tokens this worker has already served, so a repeated request is
//! answered without parsing, key derivation, a shared-data read or opening the sealed
//! token. It is keyed by a digest of the exact request (content type, Authorization header
//! and body: the secret included), so only the very same request finds an entry. The
//! digest is 128 bits of SipHash-1-3 under two random keys drawn per worker: a keyed hash
//! nobody outside the worker can aim a collision at, several times cheaper in the VM than
//! SHA-256 (which the shared cache's key derivation still uses), and the index never holds
//! a secret. The
//! shared cache stays the truth: an entry is only a copy of a token that was read from it,
//! never served past the floor or inside the refresh-ahead window (then the request takes
//! the full path, where refresh-ahead and other workers' newer tokens are seen).
//! Bounded: at most `capacity` entries; when full, expired entries go, then all of them.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use crate::request::RequestHead;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHit {
    pub client_id: Option<String>,
    /// The token JSON without `expires_in`, opened.
    pub body_without_expiry: Vec<u8>,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// A request's key in the index: a keyed hash, already uniform, so the map uses it as is.
pub type RequestDigest = u128;

#[derive(Debug, Default)]
pub struct LocalIndex {
    entries: HashMap<RequestDigest, LocalHit, BuildHasherDefault<DigestHasher>>,
    capacity: usize,
    /// Two independent random SipHash keys: 2 x 64 bits of digest.
    keys: (RandomState, RandomState),
}

impl LocalIndex {
    pub fn new(capacity: usize) -> LocalIndex {
        LocalIndex { entries: HashMap::default(), capacity, keys: (RandomState::new(), RandomState::new()) }
    }

    /// The digest of the exact request: what the index is keyed by.
    pub fn digest(&self, head: &RequestHead, body: &[u8]) -> RequestDigest {
        let half = |key: &RandomState| {
            let mut hasher = key.build_hasher();
            for part in [head.content_type.as_deref(), head.authorization.as_deref()] {
                let part = part.unwrap_or_default().as_bytes();
                hasher.write_u64(part.len() as u64);
                hasher.write(part);
            }
            hasher.write(body);
            hasher.finish()
        };
        u128::from(half(&self.keys.0)) << 64 | u128::from(half(&self.keys.1))
    }

    pub fn get(&self, digest: &RequestDigest) -> Option<&LocalHit> {
        self.entries.get(digest)
    }

    pub fn insert(&mut self, digest: RequestDigest, hit: LocalHit, now_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, e| e.expires_at_ms > now_ms);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(digest, hit);
    }

    pub fn remove(&mut self, digest: &RequestDigest) {
        self.entries.remove(digest);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Hashes a [`RequestDigest`] for the map: its low 64 bits, already a keyed hash.
#[derive(Debug, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; fold anything else in, in case.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(expires_at_ms: u64) -> LocalHit {
        LocalHit { client_id: None, body_without_expiry: b"{}".to_vec(), issued_at_ms: 0, expires_at_ms }
    }

    #[test]
    fn a_different_secret_is_a_different_key() {
        let head = RequestHead {
            content_type: Some("application/x-www-form-urlencoded".into()),
            authorization: None,
            dpop: None,
            ..Default::default()
        };
        let index = LocalIndex::new(8);
        let a = index.digest(&head, b"client_id=c&client_secret=s1");
        let b = index.digest(&head, b"client_id=c&client_secret=s2");
        assert_ne!(a, b);
        assert_eq!(a, index.digest(&head, b"client_id=c&client_secret=s1"), "stable within a worker");
        let basic = RequestHead { authorization: Some("Basic eA==".into()), ..head.clone() };
        assert_ne!(index.digest(&basic, b"x"), index.digest(&head, b"x"));
        // The length prefix keeps the parts apart: "ab" + "" is not "a" + "b".
        let split = RequestHead {
            content_type: Some("a".into()),
            authorization: Some("b".into()),
            dpop: None,
            ..Default::default()
        };
        let joined = RequestHead {
            content_type: Some("ab".into()),
            authorization: None,
            dpop: None,
            ..Default::default()
        };
        assert_ne!(index.digest(&split, b""), index.digest(&joined, b""));
    }

    #[test]
    fn each_worker_draws_its_own_keys() {
        let head = RequestHead::default();
        assert_ne!(LocalIndex::new(1).digest(&head, b"x"), LocalIndex::new(1).digest(&head, b"x"));
    }

    #[test]
    fn bounded_expired_first_then_everything() {
        let mut index = LocalIndex::new(2);
        index.insert(1, hit(10), 0);
        index.insert(2, hit(1_000), 0);
        index.insert(3, hit(1_000), 50);
        assert_eq!(index.len(), 2);
        assert!(index.get(&1).is_none(), "the expired entry went first");
        index.insert(4, hit(1_000), 60);
        assert_eq!(index.len(), 1);
        assert!(LocalIndex::new(0).is_empty());
    }
}
