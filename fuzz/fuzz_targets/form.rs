//! Form bodies: never a panic; what is accepted decodes to clean UTF-8 text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::request::parse_form;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse_form(data) {
        for (name, value) in pairs {
            assert!(!name.is_empty());
            assert!(!name.chars().chain(value.chars()).any(char::is_control));
        }
    }
});
