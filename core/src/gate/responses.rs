//! Building answers: relayed IdP replies, refusals, 503s, and the stats of each decision.

use super::*;

/// The answer an outcome gives a waiter: the token when one was stored; for a failed call
/// (unreachable, 5xx, 429) a token with any lifetime left (`stale`), else the failure;
/// otherwise the IdP's answer as it came.
pub(super) fn outcome_response(
    outcome: &CallOutcome,
    body: Vec<u8>,
    stale: Option<Vec<u8>>,
    label: Decision,
) -> Response {
    let failed = outcome.unreachable || outcome.status >= 500 || outcome.status == 429 || outcome.cached;
    if failed {
        return failure_response(Some(outcome), body, stale, label);
    }
    relay(outcome.status, &outcome.headers, body, label)
}

/// `stale` is a cached token with lifetime left, already opened.
pub(super) fn failure_response(
    outcome: Option<&CallOutcome>,
    body: Vec<u8>,
    stale: Option<Vec<u8>>,
    label: Decision,
) -> Response {
    if let Some(token) = stale {
        return Response::json(200, token, Decision::Stale);
    }
    match outcome {
        Some(o) if !o.unreachable && !o.cached => relay(o.status, &o.headers, body, label),
        _ => unavailable(label),
    }
}

/// A cached token with at least a second left, even below `min_remaining_ttl`.
pub(super) fn stale_token(cached: Option<&CacheEntry>, key: &SealKey, now: u64) -> Option<Vec<u8>> {
    cached.filter(|e| e.remaining_ms(now) >= 1000)?.render(key, now)
}

/// A relayed body from a flight record, opened with the waiter's key.
pub(super) fn open_body(key: &SealKey, fp: &Fingerprint, stored: &str) -> Vec<u8> {
    BASE64.decode(stored).ok().and_then(|sealed| key.open(&fp.0, &sealed)).unwrap_or_default()
}

pub(super) fn relay(status: u16, headers: &[(String, String)], body: Vec<u8>, label: Decision) -> Response {
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map_or(Cow::Borrowed("application/json"), |(_, v)| Cow::Owned(v.clone()));
    let mut response = Response::with_content_type(status, content_type, body, label);
    for name in RELAYED_HEADERS {
        if let Some((_, value)) = headers.iter().find(|(n, _)| n == name) {
            response.push_header(name, value.clone());
        }
    }
    response
}

pub(super) fn relayed_headers(reply: &HttpReply) -> Vec<(String, String)> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n == "content-type" || RELAYED_HEADERS.contains(&n.as_str()))
        .cloned()
        .collect()
}

/// The IdP's headers with `retry-after` set to the back-off it started, if any.
pub(super) fn with_retry_after(
    mut headers: Vec<(String, String)>,
    backoff: Option<u64>,
    now: u64,
) -> Vec<(String, String)> {
    if let Some(until) = backoff {
        headers.retain(|(n, _)| n != "retry-after");
        headers.push(("retry-after".to_owned(), seconds_left(until, now).to_string()));
    }
    headers
}

pub(super) fn unreachable_outcome() -> CallOutcome {
    CallOutcome { status: 503, cached: false, unreachable: true, headers: Vec::new(), body: String::new() }
}

pub(super) fn has_access_token(body: &[u8]) -> bool {
    crate::cache::members(body).is_some_and(|m| crate::cache::string_member(&m, "access_token").is_some())
}

/// Envoy answers for an IdP it cannot reach (no healthy upstream, a connect error, a
/// timeout) with a plain-text 5xx: that is an unreachable IdP, not its answer. The one rule
/// for keyed calls (by their body) and forwarded requests (by their content type).
pub(super) fn made_by_envoy(status: u16, json: bool) -> bool {
    status >= 500 && !json
}

pub(super) fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// `headers` set on `response`, replacing any of the same name (tokengate's own quota
/// header wins over one relayed from the IdP).
pub(super) fn with_headers(mut response: Response, headers: &[Header]) -> Response {
    response.headers.retain(|(n, _)| !headers.iter().any(|(m, _)| m == n));
    response.headers.extend(headers.iter().cloned());
    response
}

pub(super) fn invalid_request(e: RequestError) -> Response {
    Response::oauth_error(e.status, ErrorCode::InvalidRequest, &e.description, Decision::Bypass)
}

pub(super) fn unavailable(label: Decision) -> Response {
    Response::oauth_error(
        503,
        ErrorCode::TemporarilyUnavailable,
        "the identity provider could not be reached; try again later",
        label,
    )
}
