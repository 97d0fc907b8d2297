use super::proto::{put_bytes_field, put_varint_field};
use super::*;
use crate::config::RateLimitService;

fn message(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out);
    out
}

/// A `RateLimitResponse` with one status: `code`, limit `per_unit` per `unit`, `remaining`,
/// reset in `reset_s` seconds.
fn response(code: u64, limit: Option<(u64, u64)>, remaining: u64, reset_s: Option<u64>) -> Vec<u8> {
    let status = message(|s| {
        put_varint_field(s, 1, code);
        if let Some((per_unit, unit)) = limit {
            let current = message(|c| {
                put_bytes_field(c, 3, b"per client");
                put_varint_field(c, 1, per_unit);
                put_varint_field(c, 2, unit);
            });
            put_bytes_field(s, 2, &current);
        }
        put_varint_field(s, 3, remaining);
        if let Some(seconds) = reset_s {
            put_bytes_field(s, 4, &message(|d| put_varint_field(d, 1, seconds)));
        }
    });
    message(|m| {
        put_varint_field(m, 1, code);
        put_bytes_field(m, 2, &status);
        // A field this reader does not know (raw_body): skipped.
        put_bytes_field(m, 5, b"ignored");
    })
}

#[test]
fn request_is_the_protobuf_encoding_of_one_client_id_descriptor() {
    let bytes = request("tokengate", "c1");
    let expected: &[u8] = &[
        0x0a, 9, b't', b'o', b'k', b'e', b'n', b'g', b'a', b't', b'e', // domain
        0x12, 17, // descriptors[0]
        0x0a, 15, // entries[0]
        0x0a, 9, b'c', b'l', b'i', b'e', b'n', b't', b'_', b'i', b'd', 0x12, 2, b'c', b'1', //
        0x18, 1, // hits_addend
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn the_call_is_a_grpc_request_to_the_service_cluster() {
    let service = RateLimitService { cluster: "rls".into(), domain: "tokengate".into(), timeout_ms: 100 };
    let call = call(&service, "c1");
    assert_eq!(call.cluster, "rls");
    assert_eq!(call.timeout_ms, 100);
    let header = |name: &str| call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(header(":path"), Some("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"));
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(header("content-type"), Some("application/grpc"));
    assert_eq!(header("te"), Some("trailers"));
    assert_eq!(header("grpc-timeout"), Some("100m"));
    let message = request("tokengate", "c1");
    assert_eq!(call.body[..5], [0, 0, 0, 0, message.len() as u8]);
    assert_eq!(call.body[5..], message[..]);
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn the_answer_is_the_framed_message_when_grpc_status_is_0() {
    let framed = [0, 0, 0, 0, 2, 0x08, 0x01];
    let ok = pairs(&[("grpc-status", "0")]);
    assert_eq!(message_of(200, &[], &ok, &framed), Some(&framed[5..]));
    // A trailers-only answer carries the status in the headers.
    assert_eq!(message_of(200, &ok, &[], &framed), Some(&framed[5..]));
    // Errors, resets, compressed or truncated messages are no answer.
    assert_eq!(message_of(200, &[], &pairs(&[("grpc-status", "14")]), &framed), None);
    assert_eq!(message_of(503, &[], &ok, &framed), None);
    assert_eq!(message_of(200, &[], &[], &framed), None);
    assert_eq!(message_of(200, &[], &ok, &[1, 0, 0, 0, 2, 0x08, 0x01]), None);
    assert_eq!(message_of(200, &[], &ok, &[0, 0, 0, 0, 9, 0x08]), None);
    assert_eq!(message_of(200, &[], &ok, &[0, 0]), None);
}

#[test]
fn ok_with_a_limit_gives_the_headers_numbers() {
    let now = 1_700_000_000_000;
    let v = verdict(&response(CODE_OK, Some((30, 2)), 12, Some(40)), now).unwrap();
    assert_eq!(
        v,
        Verdict {
            over_limit: false,
            rate: Some((
                BucketRule { max_tokens: 30, tokens_per_fill: 30, fill_interval_ms: 60_000 },
                BucketDecision { allowed: true, remaining: 12, next_fill_ms: now + 40_000 }
            ))
        }
    );
}

#[test]
fn over_limit_is_refused_with_nothing_remaining() {
    let v = verdict(&response(CODE_OVER_LIMIT, Some((2, 2)), 0, Some(17)), 0).unwrap();
    assert!(v.over_limit);
    let (rule, decision) = v.rate.unwrap();
    assert_eq!(
        (rule.max_tokens, decision.allowed, decision.remaining, decision.next_fill_ms),
        (2, false, 0, 17_000)
    );
}

#[test]
fn without_a_reset_the_unit_is_the_wait() {
    let v = verdict(&response(CODE_OVER_LIMIT, Some((5, 3)), 0, None), 1_000).unwrap();
    assert_eq!(v.rate.unwrap().1.next_fill_ms, 1_000 + 3_600_000);
}

#[test]
fn ok_without_a_limit_for_the_client_has_no_headers() {
    let bare = message(|m| put_varint_field(m, 1, CODE_OK));
    assert_eq!(verdict(&bare, 0), Ok(Verdict { over_limit: false, rate: None }));
}

#[test]
fn unknown_code_and_garbage_are_errors() {
    assert!(verdict(&message(|m| put_varint_field(m, 1, 0)), 0).is_err());
    assert!(verdict(&[], 0).is_err(), "an empty message has code UNKNOWN");
    assert!(verdict(&[0x0a, 200, 1], 0).is_err());
    assert!(verdict(&response(CODE_OK, Some((1, 99)), 0, None), 0).is_err(), "an unknown unit");
}
