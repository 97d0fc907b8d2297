//! Request paths: never a panic; the normal form starts with `/`, holds no empty, `.` or
//! `..` segment and no `;`, `\\` or upper-case ASCII, and normalizing it again (when it
//! had no escapes) changes nothing; a path that needs no normalizing is its own normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::request::{needs_normalizing, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalize_path(path);
    assert!(normal.starts_with(b"/"));
    assert!(!normal.iter().any(|b| *b == b';' || *b == b'\\' || b.is_ascii_uppercase()));
    if normal.len() > 1 {
        for segment in normal[1..].split(|b| *b == b'/') {
            assert!(!segment.is_empty() && segment != b"." && segment != b"..", "{normal:?}");
        }
    }
    if !path.contains('%') {
        let again = normalize_path(&String::from_utf8_lossy(&normal));
        assert_eq!(again, normal);
    }
    if !needs_normalizing(path) {
        assert_eq!(path.split(['?', '#']).next().unwrap_or_default().as_bytes(), normal.as_slice());
    }
});
