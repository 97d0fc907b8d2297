//! Step one of the configuration: the JSON document as serde sees it. Unknown fields and
//! wrong types are refused here; meaning (ranges, durations, paths) is checked in
//! `super::validate`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_token_paths")]
    pub token_paths: Vec<String>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    pub upstream: RawUpstream,
    #[serde(default)]
    pub cache: RawCache,
    pub rate_limit: Option<RawRateLimit>,
    pub rate_limit_service: Option<RawRateLimitService>,
    pub quota: Option<RawLimits<RawQuota>>,
    pub usage_path: Option<String>,
    #[serde(default = "default_usage_top_clients")]
    pub usage_top_clients: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub cluster: String,
    pub authority: String,
    #[serde(default = "default_upstream_path")]
    pub path: String,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default = "default_backoff_scope")]
    pub backoff_scope: String,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
    #[serde(default)]
    pub reserve: u64,
    pub key_header: Option<String>,
}

/// Envoy's global rate-limit service (gRPC `envoy.service.ratelimit.v3.RateLimitService`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitService {
    pub cluster: String,
    #[serde(default = "default_rate_limit_domain")]
    pub domain: String,
    #[serde(default = "default_rate_limit_timeout")]
    pub timeout: String,
}

fn default_rate_limit_domain() -> String {
    "tokengate".into()
}

fn default_rate_limit_timeout() -> String {
    "100ms".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub max_entries: u64,
    pub min_remaining_ttl: String,
    pub refresh_ahead_ratio: f64,
    pub negative_ttl: String,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: 10_000,
            min_remaining_ttl: "30s".into(),
            refresh_ahead_ratio: 0.1,
            negative_ttl: "10s".into(),
        }
    }
}

/// `default` applies to every client without an entry of its own in `clients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits<T> {
    pub default: Option<T>,
    /// In document order, repeats included (validation refuses them): no map code for it.
    #[serde(default = "Vec::new", deserialize_with = "crate::json_object::entries")]
    pub clients: Vec<(String, T)>,
}

/// `rate_limit`: the per-client buckets, and the buckets for IdP calls that credentials not
/// yet proven cause (see `Config::unproven`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub default: Option<RawBucket>,
    #[serde(default = "Vec::new", deserialize_with = "crate::json_object::entries")]
    pub clients: Vec<(String, RawBucket)>,
    pub unproven: Option<RawBucket>,
    pub unknown_clients: Option<RawBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub tokens: u64,
    pub window: String,
}

fn default_usage_top_clients() -> u64 {
    100
}

fn default_token_paths() -> Vec<String> {
    vec!["/oauth/token".into()]
}

fn default_max_body_bytes() -> u64 {
    8192
}

fn default_upstream_path() -> String {
    "/oauth/token".into()
}

fn default_timeout() -> String {
    "5s".into()
}

fn default_max_backoff() -> String {
    "60s".into()
}

fn default_backoff_scope() -> String {
    "client".into()
}
