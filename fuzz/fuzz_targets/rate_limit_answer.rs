//! The rate-limit service's answers: any bytes as the HTTP body of a gRPC call, never a
//! panic; an answer read as a verdict is consistent (refused means nothing remaining).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::rate_limit_service::{message_of, verdict};

fuzz_target!(|data: &[u8]| {
    let ok = [("grpc-status".to_owned(), "0".to_owned())];
    let message = message_of(200, &[], &ok, data).unwrap_or(data);
    if let Ok(v) = verdict(message, 1_700_000_000_000) {
        if let Some((rule, decision)) = v.rate {
            assert_eq!(decision.allowed, !v.over_limit);
            assert!(!v.over_limit || decision.remaining == 0);
            assert!(rule.fill_interval_ms > 0);
        }
    }
});
