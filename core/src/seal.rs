//! Tokens sealed at rest. Envoy's shared data is readable by every plugin in the same VM
//! id, so a cached token is stored encrypted (ChaCha20-Poly1305) under a key derived
//! (HKDF-SHA256) from the same canonical request the cache key comes from — client secret
//! included. Only a request presenting the right secret derives the key that opens it; the
//! cache key itself (another HKDF output) does not reveal the sealing key.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

pub const NONCE_BYTES: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealKey(pub(crate) [u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material never reaches a log line.
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.0))
    }

    /// `nonce || ciphertext || tag`. The nonce must be fresh (random) for every seal.
    pub fn seal(&self, nonce: [u8; NONCE_BYTES], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let sealed =
            self.cipher().encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext, or `None` when the key or the associated data is wrong or the bytes
    /// were tampered with.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce).ok()?;
        self.cipher().decrypt(&nonce, Payload { msg: ciphertext, aad }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let key = SealKey([7; 32]);
        let sealed = key.seal([1; 12], b"aad", b"token");
        assert_eq!(key.open(b"aad", &sealed).as_deref(), Some(&b"token"[..]));
        assert!(!sealed.windows(5).any(|w| w == b"token"));
        assert_eq!(SealKey([8; 32]).open(b"aad", &sealed), None, "wrong key");
        assert_eq!(key.open(b"other", &sealed), None, "wrong associated data");
        let mut tampered = sealed.clone();
        tampered[14] ^= 1;
        assert_eq!(key.open(b"aad", &tampered), None);
        assert_eq!(key.open(b"aad", &sealed[..5]), None);
        assert_eq!(format!("{key:?}"), "SealKey(..)");
    }
}
