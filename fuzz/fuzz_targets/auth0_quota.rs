//! Auth0's quota header values (`auth0-client-quota-limit`): never a panic; a spent bucket
//! holds for at most a day, never into the past.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::auth0_quota::spent_until_ms;

const NOW: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = std::str::from_utf8(data)
        && let Ok(Some(until)) = spent_until_ms(value, NOW)
    {
        assert!(until > NOW && until <= NOW + 86_400_000, "{value:?}: {until}");
    }
});
