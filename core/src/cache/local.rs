//! A per-worker index of tokens this worker has already served, so a repeated request is
//! answered without parsing, key derivation, a shared-data read or opening the sealed
//! token. It is keyed by a digest of the exact request (content type, Authorization header
//! and body: the secret included), so only the very same request finds an entry. The
//! shared cache stays the truth: an entry is only a copy of a token that was read from it,
//! never served past the floor or inside the refresh-ahead window (then the request takes
//! the full path, where refresh-ahead and other workers' newer tokens are seen).
//! Bounded: at most `capacity` entries; when full, expired entries go, then all of them.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::request::RequestHead;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHit {
    pub client_id: Option<String>,
    /// The token JSON without `expires_in`, opened.
    pub body_without_expiry: Vec<u8>,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Default)]
pub struct LocalIndex {
    entries: HashMap<[u8; 32], LocalHit>,
    capacity: usize,
}

impl LocalIndex {
    pub fn new(capacity: usize) -> LocalIndex {
        LocalIndex { entries: HashMap::new(), capacity }
    }

    /// The digest of the exact request: what the index is keyed by.
    pub fn digest(head: &RequestHead, body: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [head.content_type.as_deref(), head.authorization.as_deref()] {
            let part = part.unwrap_or_default().as_bytes();
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(body);
        hash.finalize().into()
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<&LocalHit> {
        self.entries.get(digest)
    }

    pub fn insert(&mut self, digest: [u8; 32], hit: LocalHit, now_ms: u64) {
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

    pub fn remove(&mut self, digest: &[u8; 32]) {
        self.entries.remove(digest);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        };
        let a = LocalIndex::digest(&head, b"client_id=c&client_secret=s1");
        let b = LocalIndex::digest(&head, b"client_id=c&client_secret=s2");
        assert_ne!(a, b);
        let basic = RequestHead { authorization: Some("Basic eA==".into()), ..head.clone() };
        assert_ne!(LocalIndex::digest(&basic, b"x"), LocalIndex::digest(&head, b"x"));
    }

    #[test]
    fn bounded_expired_first_then_everything() {
        let mut index = LocalIndex::new(2);
        index.insert([1; 32], hit(10), 0);
        index.insert([2; 32], hit(1_000), 0);
        index.insert([3; 32], hit(1_000), 50);
        assert_eq!(index.len(), 2);
        assert!(index.get(&[1; 32]).is_none(), "the expired entry went first");
        index.insert([4; 32], hit(1_000), 60);
        assert_eq!(index.len(), 1);
        assert!(LocalIndex::new(0).is_empty());
    }
}
