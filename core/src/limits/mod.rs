//! Per-client limits: the request rate limit (token bucket) and the issuance quota
//! (fixed windows).

mod bucket;
mod quota;

pub use bucket::{Bucket, BucketDecision};
pub use quota::{QuotaDecision, QuotaWindow, window_start};
