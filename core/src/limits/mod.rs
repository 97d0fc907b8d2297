//! Per-client limits: the request rate limit (token bucket), the issuance quota (fixed
//! windows), and the headers that report them.

mod bucket;
mod headers;
mod quota;

pub use bucket::{Bucket, BucketDecision};
pub use headers::seconds_until;
pub use quota::{QuotaDecision, QuotaWindow, window_start};
