//! HTTP Basic client authentication headers: never a panic; an accepted header has a
//! client id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::request::parse_basic;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data)
        && let Ok(Some((id, _secret))) = parse_basic(Some(header))
    {
        assert!(!id.is_empty());
    }
});
