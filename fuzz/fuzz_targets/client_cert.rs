//! `x-forwarded-client-cert` values: never a panic; a certificate is taken only when its own
//! DER digest is the connection's, and its header value fits Auth0's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::request::{MAX_CLIENT_CERTIFICATE_BYTES, verified_certificate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first 64 characters play the connection's digest, the rest the header.
    let (digest, xfcc) = text.split_at(text.char_indices().nth(64).map_or(text.len(), |(i, _)| i));
    if let Some(certificate) = verified_certificate(xfcc, digest) {
        assert!(certificate.header_value.len() <= MAX_CLIENT_CERTIFICATE_BYTES);
        assert!(xfcc.contains(&certificate.header_value));
    }
});
