//! IdP token responses: never a panic; an object read as members is written back (without
//! `expires_in`, as the cache stores it) as JSON that reads back with the same members.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::cache::{members, object_without};

fuzz_target!(|data: &[u8]| {
    if let Some(read) = members(data) {
        let written = object_without(&read, "expires_in");
        let kept: Vec<_> =
            read.iter().filter(|(n, _)| n != "expires_in").map(|(n, v)| (n, v.get())).collect();
        let again = members(&written);
        assert!(again.is_some(), "the written object does not read back");
        let again = again.unwrap_or_default();
        let again: Vec<_> = again.iter().map(|(n, v)| (n, v.get())).collect();
        assert_eq!(kept, again);
    }
});
