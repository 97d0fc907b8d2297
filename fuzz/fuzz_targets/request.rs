//! Whole token requests (content type, Authorization header, body) through parsing,
//! classification and the cache key: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::config::Config;
use tokengate_core::fingerprint::Fingerprint;
use tokengate_core::request::{RequestHead, TokenRequest};

const CONTENT_TYPES: [&str; 5] = [
    "application/x-www-form-urlencoded",
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded; charset=latin1",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Bytes up to the first NUL are the Authorization header (when they are text).
    let (authorization, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (std::str::from_utf8(&rest[..at]).ok().map(str::to_owned), &rest[at + 1..]),
        None => (None, rest),
    };
    let head = RequestHead {
        content_type: CONTENT_TYPES.get(usize::from(selector) % 6).map(|c| (*c).to_owned()),
        authorization,
        dpop: (selector & 0x80 != 0).then(|| "proof".to_owned()),
        ..Default::default()
    };
    if let Ok(request) = TokenRequest::parse(&head, body) {
        let _ = request.kind();
        assert!(request.client_id.as_ref().is_none_or(|id| id.len() <= 256));
        let config = Config::from_json(br#"{"upstream": {"cluster": "idp", "authority": "idp.example"}}"#);
        if let Ok(config) = config {
            let _ = Fingerprint::of(&request, &config.upstream);
        }
    }
});
