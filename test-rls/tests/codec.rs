//! tokengate's hand-written rate-limit-service codec (`tokengate_core::rate_limit_service`,
//! kept in the module for its size) against the types generated from Envoy's own
//! `rls.proto` (`envoy-types`): every request tokengate encodes decodes to what it means,
//! byte for byte what the generated encoder writes; every answer the generated encoder
//! writes, unknown fields included, reads as what it says.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{DescriptorStatus, RateLimit};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use proptest::prelude::*;
use prost::Message;
use tokengate_core::rate_limit_service::{self, Verdict};

const NOW_MS: u64 = 1_700_000_000_000;
const DAY: u64 = 86_400_000;
const UNIT_MS: [u64; 8] = [0, 1_000, 60_000, 3_600_000, DAY, 30 * DAY, 365 * DAY, 7 * DAY];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_request_decodes_with_the_generated_types_and_encodes_back_to_the_same_bytes(
        // Never empty: the configuration refuses an empty domain (proto3 would leave the
        // field out, where this codec writes it empty: the same message, other bytes).
        domain in "\\PC{1,40}",
        client_id in "\\PC{1,256}",
    ) {
        let ours = rate_limit_service::request(&domain, &client_id);
        let decoded = RateLimitRequest::decode(ours.as_slice()).unwrap();
        let expected = RateLimitRequest {
            domain: domain.clone(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry { key: "client_id".into(), value: client_id.clone() }],
                ..Default::default()
            }],
            hits_addend: 1,
        };
        prop_assert_eq!(&decoded, &expected);
        prop_assert_eq!(expected.encode_to_vec(), ours);
    }

    #[test]
    fn every_answer_the_generated_types_write_reads_as_what_it_says(
        overall_code in prop_oneof![Just(0i32), Just(1), Just(2), 3i32..10],
        limit in proptest::option::of((0u32..100_000, 0i32..9)),
        remaining in 0u32..100_000,
        reset in proptest::option::of((-5i64..100_000, -1i32..1_000_000_000)),
        more_statuses in 0usize..3,
        with_headers in any::<bool>(),
    ) {
        let status = DescriptorStatus {
            code: overall_code,
            current_limit: limit.map(|(requests_per_unit, unit)| RateLimit {
                name: "per client".into(),
                requests_per_unit,
                unit,
            }),
            limit_remaining: remaining,
            duration_until_reset: reset.map(|(seconds, nanos)| Duration { seconds, nanos }),
            ..Default::default()
        };
        // Fields tokengate does not read (more statuses, headers to add) are skipped.
        let headers = if with_headers {
            vec![HeaderValue { key: "x-rl".into(), value: "1".into(), ..Default::default() }]
        } else {
            vec![]
        };
        let response = RateLimitResponse {
            overall_code,
            statuses: std::iter::once(status).chain((0..more_statuses).map(|_| DescriptorStatus::default())).collect(),
            response_headers_to_add: headers,
            ..Default::default()
        };
        let bytes = response.encode_to_vec();
        let read = rate_limit_service::verdict(&bytes, NOW_MS);
        match overall_code {
            1 | 2 => {}
            _ => {
                prop_assert!(read.is_err(), "an undecided answer: {read:?}");
                return Ok(());
            }
        }
        let over_limit = overall_code == 2;
        match limit {
            Some((_, unit)) if UNIT_MS.get(unit as usize).is_none_or(|ms| *ms == 0) => {
                prop_assert!(read.is_err(), "unit {unit}: {read:?}");
            }
            None => prop_assert_eq!(read.unwrap(), Verdict { over_limit, rate: None }),
            Some((requests_per_unit, unit)) => {
                let Verdict { over_limit: read_over, rate } = read.unwrap();
                prop_assert_eq!(read_over, over_limit);
                let (rule, decision) = rate.unwrap();
                prop_assert_eq!(rule.max_tokens, u64::from(requests_per_unit));
                prop_assert_eq!(rule.fill_interval_ms, UNIT_MS[unit as usize]);
                prop_assert_eq!(decision.allowed, !over_limit);
                prop_assert_eq!(decision.remaining, if over_limit { 0 } else { u64::from(remaining) });
                let reset_ms = match reset {
                    None => UNIT_MS[unit as usize],
                    Some((seconds, nanos)) => {
                        u64::try_from(seconds).unwrap_or(0) * 1000 + u64::try_from(nanos).unwrap_or(0) / 1_000_000
                    }
                };
                prop_assert_eq!(decision.next_fill_ms, NOW_MS + reset_ms);
            }
        }
    }
}

#[test]
fn the_grpc_frame_around_a_generated_answer_is_read() {
    let message = RateLimitResponse { overall_code: 1, ..Default::default() }.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let trailers = vec![("grpc-status".to_owned(), "0".to_owned())];
    assert_eq!(rate_limit_service::message_of(200, &[], &trailers, &body), Some(message.as_slice()));
    assert_eq!(rate_limit_service::message_of(200, &[], &[], &body), None, "no grpc-status");
}
