//! Per-client limits: the request rate limit (token bucket), the issuance quota (fixed
//! windows), and the headers that report them.

mod bucket;
mod headers;
mod quota;

pub use bucket::{Bucket, BucketDecision};
pub use headers::{bucket_headers, seconds_until};
pub use quota::{QuotaDecision, QuotaWindow, window_start};

use crate::config::{BucketRule, QuotaRule};

/// What the limits said about one request, for its headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitState {
    pub rate: Option<(BucketRule, BucketDecision)>,
    pub quota: Option<(QuotaRule, QuotaDecision)>,
    /// The client's IdP back-off deadline, when one is in force.
    pub backoff_until_ms: Option<u64>,
}

impl LimitState {
    /// The request is over its client's rate limit (the `429 rate_limited` rule).
    pub fn rate_refused(&self) -> bool {
        self.rate.is_some_and(|(_, d)| !d.allowed)
    }
}
