//! JSON bodies: never a panic, whatever the nesting; what is accepted is a flat object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::request::parse_json;

fuzz_target!(|data: &[u8]| {
    let _ = parse_json(data);
});
