//! Plugin configurations: never a panic; a refusal always names a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Config::from_json(data) {
        assert!(!e.field.is_empty());
    }
});
