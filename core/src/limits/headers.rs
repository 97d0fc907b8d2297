//! The rate-limit headers every handled response carries (docs/headers.md):
//! Auth0's `x-ratelimit-*` (reset as a Unix timestamp), the IETF draft's `ratelimit-policy`
//! and `ratelimit`, and Auth0's `auth0-client-quota-limit` where a quota applies.

use super::BucketDecision;
use super::LimitState;
use crate::config::{BucketRule, QuotaRule};
use crate::response::Header;

/// Whole seconds from `now_ms` until `at_ms`, rounded up.
pub fn seconds_until(now_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000)
}

/// Auth0's bucket name for a quota window: `per_hour`, `per_day`, else `per_<n>s`.
fn quota_bucket(rule: &QuotaRule) -> std::borrow::Cow<'static, str> {
    match rule.window_ms {
        3_600_000 => "per_hour".into(),
        86_400_000 => "per_day".into(),
        ms => format!("per_{}s", ms.div_ceil(1000)).into(),
    }
}

/// A bucket's headers, its policy named `policy` in the IETF form: Auth0's
/// `x-ratelimit-*` (the reset as a Unix timestamp), `ratelimit-policy` and `ratelimit`.
pub fn bucket_headers(policy: &str, rule: &BucketRule, d: &BucketDecision, now_ms: u64) -> Vec<Header> {
    let reset_in = seconds_until(now_ms, d.next_fill_ms);
    let window = rule.fill_interval_ms.div_ceil(1000);
    vec![
        ("x-ratelimit-limit".into(), rule.max_tokens.to_string().into()),
        ("x-ratelimit-remaining".into(), d.remaining.to_string().into()),
        ("x-ratelimit-reset".into(), (now_ms / 1000 + reset_in).to_string().into()),
        ("ratelimit-policy".into(), format!("\"{policy}\";q={};w={window}", rule.max_tokens).into()),
        ("ratelimit".into(), format!("\"{policy}\";r={};t={reset_in}", d.remaining).into()),
    ]
}

impl LimitState {
    pub fn headers(&self, now_ms: u64) -> Vec<Header> {
        let mut headers: Vec<Header> = match &self.rate {
            Some((rule, d)) => bucket_headers("client", rule, d, now_ms),
            None => Vec::new(),
        };
        if let Some((rule, d)) = &self.quota {
            headers.push((
                "auth0-client-quota-limit".into(),
                format!(
                    "b={};q={};r={};t={}",
                    quota_bucket(rule),
                    rule.tokens,
                    d.remaining,
                    seconds_until(now_ms, d.reset_ms)
                )
                .into(),
            ));
        }
        headers
    }

    /// `retry-after` for a request the rate limit refused: seconds until the next fill.
    pub fn rate_retry_after(&self, now_ms: u64) -> u64 {
        self.rate.map_or(1, |(_, d)| seconds_until(now_ms, d.next_fill_ms).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::QuotaDecision;

    #[test]
    fn spec_formats() {
        let now = 1_700_000_000_000;
        let state = LimitState {
            rate: Some((
                BucketRule { max_tokens: 30, tokens_per_fill: 30, fill_interval_ms: 60_000 },
                BucketDecision { allowed: true, remaining: 12, next_fill_ms: now + 39_500 },
            )),
            quota: Some((
                QuotaRule { tokens: 1000, window_ms: 86_400_000 },
                QuotaDecision { allowed: true, remaining: 997, reset_ms: now + 43_200_000 },
            )),
            backoff_until_ms: None,
        };
        let headers = state.headers(now);
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_ref());
        assert_eq!(get("x-ratelimit-limit"), Some("30"));
        assert_eq!(get("x-ratelimit-remaining"), Some("12"));
        assert_eq!(get("x-ratelimit-reset"), Some("1700000040"));
        assert_eq!(get("ratelimit-policy"), Some("\"client\";q=30;w=60"));
        assert_eq!(get("ratelimit"), Some("\"client\";r=12;t=40"));
        assert_eq!(get("auth0-client-quota-limit"), Some("b=per_day;q=1000;r=997;t=43200"));
        assert_eq!(state.rate_retry_after(now), 40);
    }

    #[test]
    fn no_limits_no_headers() {
        assert!(LimitState::default().headers(0).is_empty());
    }
}
