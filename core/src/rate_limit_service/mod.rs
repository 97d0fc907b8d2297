//! Envoy's global rate-limit protocol (`envoy.service.ratelimit.v3.RateLimitService`), the
//! one Envoy's own rate-limit filter speaks and Lyft's ratelimit or Kuadrant's Limitador
//! serve: one unary `ShouldRateLimit` call per handled request with a client id, descriptor
//! `client_id=<id>` in the configured domain. The service's answer becomes the request's
//! rate-limit decision and headers, in place of the local bucket; when the service cannot
//! answer, the local bucket decides.
//!
//! The call is a gRPC request sent with `dispatch_http_call` to the service's HTTP/2
//! cluster (the same bytes on the wire as `dispatch_grpc_call`): the Rust SDK's gRPC
//! callback dispatch alone costs 6.4 KB of .wasm, while an HTTP call reuses the callback
//! every IdP call already takes. [`call`] builds it, [`message_of`] unwraps the answer.

mod proto;

use proto::{DecodeError, Value, fields, put_bytes_field, put_varint_field};

use crate::config::{BucketRule, RateLimitService};
use crate::host::HttpCall;
use crate::limits::BucketDecision;

/// The method's HTTP/2 path (`/<package>.<service>/<method>`).
pub const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// The descriptor key tokengate sends (configure the service's limits under it).
pub const DESCRIPTOR_KEY: &str = "client_id";

/// `RateLimitResponse.Code`.
const CODE_OK: u64 = 1;
const CODE_OVER_LIMIT: u64 = 2;

/// The unary gRPC call asking about one request of `client_id`.
pub fn call(service: &RateLimitService, client_id: &str) -> HttpCall {
    let message = request(&service.domain, client_id);
    // gRPC's length-prefixed message: not compressed, big-endian length.
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let header = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    HttpCall {
        cluster: service.cluster.clone(),
        headers: vec![
            header(":method", "POST"),
            header(":path", PATH),
            header(":authority", &service.cluster),
            header("content-type", "application/grpc"),
            header("te", "trailers"),
            header("grpc-timeout", &format!("{}m", service.timeout_ms)),
        ],
        body,
        timeout_ms: service.timeout_ms,
    }
}

/// The `RateLimitResponse` message of a call's HTTP answer: status 200, `grpc-status` 0
/// (in the trailers, or in the headers of a trailers-only answer) and one uncompressed
/// length-prefixed message. `None` for anything else (an error, a reset, a timeout).
pub fn message_of<'a>(
    status: u16,
    headers: &[(String, String)],
    trailers: &[(String, String)],
    body: &'a [u8],
) -> Option<&'a [u8]> {
    // Header names arrive lowercase (HTTP/2).
    let grpc_status =
        |map: &[(String, String)]| map.iter().find(|(name, _)| name == "grpc-status").map(|(_, v)| v == "0");
    if status != 200 || grpc_status(trailers).or_else(|| grpc_status(headers)) != Some(true) {
        return None;
    }
    let (prefix, message) = body.split_at_checked(5)?;
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    (prefix[0] == 0 && length == message.len()).then_some(message)
}

/// `RateLimitRequest { domain, descriptors: [{entries: [{client_id: <id>}]}], hits_addend: 1 }`.
pub fn request(domain: &str, client_id: &str) -> Vec<u8> {
    let mut entry = Vec::new();
    put_bytes_field(&mut entry, 1, DESCRIPTOR_KEY.as_bytes());
    put_bytes_field(&mut entry, 2, client_id.as_bytes());
    let mut descriptor = Vec::new();
    put_bytes_field(&mut descriptor, 1, &entry);
    let mut message = Vec::new();
    put_bytes_field(&mut message, 1, domain.as_bytes());
    put_bytes_field(&mut message, 2, &descriptor);
    put_varint_field(&mut message, 3, 1);
    message
}

/// The service's decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub over_limit: bool,
    /// The limit that applied, as tokengate's bucket words (for the rate-limit headers and
    /// `retry-after`); `None` when the service has no limit for this client.
    pub rate: Option<(BucketRule, BucketDecision)>,
}

/// Reads a `RateLimitResponse`. An `UNKNOWN` overall code is an error: the service did not
/// decide, so the local limiter does.
pub fn verdict(response: &[u8], now_ms: u64) -> Result<Verdict, DecodeError> {
    let mut code = 0;
    let mut first_status = None;
    for field in fields(response) {
        match field? {
            (1, Value::Varint(c)) => code = c,
            (2, Value::Bytes(status)) if first_status.is_none() => first_status = Some(status),
            _ => {}
        }
    }
    let over_limit = match code {
        CODE_OK => false,
        CODE_OVER_LIMIT => true,
        _ => return Err(DecodeError),
    };
    let rate = match first_status {
        Some(status) => limit_of(status, over_limit, now_ms)?,
        None => None,
    };
    Ok(Verdict { over_limit, rate })
}

/// A `DescriptorStatus`'s `current_limit`, `limit_remaining` and `duration_until_reset`.
fn limit_of(
    status: &[u8],
    over_limit: bool,
    now_ms: u64,
) -> Result<Option<(BucketRule, BucketDecision)>, DecodeError> {
    let (mut limit, mut remaining, mut reset_ms) = (None, 0, None);
    for field in fields(status) {
        match field? {
            (2, Value::Bytes(current)) => limit = Some(rate_limit(current)?),
            (3, Value::Varint(r)) => remaining = r,
            (4, Value::Bytes(duration)) => reset_ms = Some(duration_ms(duration)?),
            _ => {}
        }
    }
    let Some((requests_per_unit, unit_ms)) = limit else {
        return Ok(None);
    };
    let rule = BucketRule {
        max_tokens: requests_per_unit,
        tokens_per_fill: requests_per_unit,
        fill_interval_ms: unit_ms,
    };
    let decision = BucketDecision {
        allowed: !over_limit,
        remaining: if over_limit { 0 } else { remaining },
        next_fill_ms: now_ms.saturating_add(reset_ms.unwrap_or(unit_ms)),
    };
    Ok(Some((rule, decision)))
}

/// `RateLimit { requests_per_unit, unit }`: the count and the unit in milliseconds.
fn rate_limit(message: &[u8]) -> Result<(u64, u64), DecodeError> {
    let (mut requests, mut unit) = (0, 0);
    for field in fields(message) {
        match field? {
            (1, Value::Varint(n)) => requests = n,
            (2, Value::Varint(u)) => unit = u,
            _ => {}
        }
    }
    const DAY: u64 = 86_400_000;
    // `RateLimitResponse.RateLimit.Unit`: SECOND = 1, MINUTE, HOUR, DAY, MONTH, YEAR, WEEK = 7.
    const UNIT_MS: [u64; 8] = [0, 1_000, 60_000, 3_600_000, DAY, 30 * DAY, 365 * DAY, 7 * DAY];
    match UNIT_MS.get(unit as usize) {
        Some(&unit_ms) if unit_ms > 0 => Ok((requests, unit_ms)),
        _ => Err(DecodeError),
    }
}

/// `google.protobuf.Duration` in milliseconds (negative durations count as none).
fn duration_ms(message: &[u8]) -> Result<u64, DecodeError> {
    let (mut seconds, mut nanos) = (0u64, 0u64);
    for field in fields(message) {
        match field? {
            // int64 and int32 as varints: a negative value has its top bit set.
            (1, Value::Varint(s)) if (s as i64) >= 0 => seconds = s,
            (2, Value::Varint(n)) if (n as i64) >= 0 => nanos = n,
            _ => {}
        }
    }
    Ok(seconds.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

#[cfg(test)]
mod tests;
