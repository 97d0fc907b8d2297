//! Step one of the configuration: the JSON document read into plain structs, defaults
//! filled in. Unknown fields, repeated fields, missing fields and wrong types are refused
//! here, each naming its field's path; meaning (ranges, durations, paths) is checked in
//! `super::validate`.
//!
//! The document is parsed once into a [`Json`] tree (one serde visitor) and read by hand:
//! a derived deserializer per struct cost ~30 KB of .wasm for code that runs once per
//! configuration.

use super::{ConfigError, refuse};
pub use crate::json_object::Json;

/// What a value is, for "invalid type" refusals.
trait Kind {
    fn kind(&self) -> &'static str;
}

impl Kind for Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Unsigned(_) | Json::Negative(_) | Json::Float(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

fn invalid_type(path: &str, found: &Json, expected: &str) -> ConfigError {
    refuse(path, format!("invalid type: {}, expected {expected}", found.kind()))
}

fn string(path: &str, value: &Json) -> Result<String, ConfigError> {
    match value {
        Json::String(s) => Ok(s.clone()),
        other => Err(invalid_type(path, other, "a string")),
    }
}

fn unsigned(path: &str, value: &Json) -> Result<u64, ConfigError> {
    match value {
        Json::Unsigned(n) => Ok(*n),
        Json::Negative(_) | Json::Float(_) => {
            Err(refuse(path, "invalid value: a number, expected a whole number at least 0"))
        }
        other => Err(invalid_type(path, other, "a whole number at least 0")),
    }
}

fn float(path: &str, value: &Json) -> Result<f64, ConfigError> {
    match value {
        Json::Unsigned(n) => Ok(*n as f64),
        Json::Negative(n) => Ok(*n as f64),
        Json::Float(n) => Ok(*n),
        other => Err(invalid_type(path, other, "a number")),
    }
}

fn boolean(path: &str, value: &Json) -> Result<bool, ConfigError> {
    match value {
        Json::Bool(b) => Ok(*b),
        other => Err(invalid_type(path, other, "true or false")),
    }
}

/// An object's members by name, `path` naming it in refusals; a member not in the
/// object's list of fields is refused first (a misspelt field is named as unknown, not
/// as the missing one it was meant to be).
struct Fields<'a> {
    path: String,
    members: Vec<(&'a str, &'a Json)>,
}

impl<'a> Fields<'a> {
    fn of(path: &str, value: &'a Json, known: &[&str]) -> Result<Fields<'a>, ConfigError> {
        let Json::Object(members) = value else {
            let shown = if path.is_empty() { "configuration" } else { path };
            return Err(invalid_type(shown, value, "an object"));
        };
        let mut fields = Fields { path: path.to_owned(), members: Vec::with_capacity(members.len()) };
        for (name, value) in members {
            if !known.contains(&name.as_str()) {
                return Err(refuse(fields.at(name), format!("unknown field `{name}`")));
            }
            if fields.members.iter().any(|(seen, _)| *seen == name) {
                return Err(refuse(fields.at(name), format!("duplicate field `{name}`")));
            }
            fields.members.push((name, value));
        }
        Ok(fields)
    }

    /// The path of member `name`.
    fn at(&self, name: &str) -> String {
        match (self.path.is_empty(), name.is_empty()) {
            // A member named "" at the top: the refusal still names something.
            (true, true) => "configuration".to_owned(),
            (true, false) => name.to_owned(),
            (false, _) => format!("{}.{name}", self.path),
        }
    }

    /// Member `name` read with `read`, `None` when absent (`null` is a wrong type).
    fn take<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&str, &'a Json) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(at) = self.members.iter().position(|(n, _)| *n == name) else {
            return Ok(None);
        };
        let (_, value) = self.members.remove(at);
        read(&self.at(name), value).map(Some)
    }

    /// An optional member: absent or `null` is `None`.
    fn optional<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&str, &'a Json) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        match self.is_null(name) {
            true => self.take(name, |_, _| Ok(None)).map(Option::flatten),
            false => self.take(name, read),
        }
    }

    /// Member `name`, which must be there.
    fn require<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&str, &'a Json) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.take(name, read)? {
            Some(value) => Ok(value),
            None => {
                let shown = if self.path.is_empty() { "configuration" } else { &self.path };
                Err(refuse(shown, format!("missing field `{name}`")))
            }
        }
    }

    /// Whether member `name` is there as `null` (not only absent).
    fn is_null(&self, name: &str) -> bool {
        self.members.iter().any(|(n, v)| *n == name && **v == Json::Null)
    }
}

/// An object's members in document order, repeats included, each read with `read`.
fn entries<T>(
    path: &str,
    value: &Json,
    read: impl Fn(&str, &Json) -> Result<T, ConfigError>,
) -> Result<Vec<(String, T)>, ConfigError> {
    let Json::Object(members) = value else {
        return Err(invalid_type(path, value, "an object"));
    };
    members.iter().map(|(name, v)| Ok((name.clone(), read(&format!("{path}.{name}"), v)?))).collect()
}

const CONFIG_FIELDS: [&str; 9] = [
    "token_paths",
    "max_body_bytes",
    "upstream",
    "cache",
    "rate_limit",
    "rate_limit_service",
    "quota",
    "usage_path",
    "usage_top_clients",
];
const UPSTREAM_FIELDS: [&str; 12] = [
    "cluster",
    "authority",
    "path",
    "timeout",
    "backoff_scope",
    "max_backoff",
    "reserve",
    "key_header",
    "client_ip_header",
    "env_headers",
    "forward_client_certificate",
    "auth0_quota",
];
const RATE_LIMIT_SERVICE_FIELDS: [&str; 3] = ["cluster", "domain", "timeout"];
const CACHE_FIELDS: [&str; 5] =
    ["max_entries", "min_remaining_ttl", "refresh_ahead_ratio", "negative_ttl", "max_ttl"];
const LIMITS_FIELDS: [&str; 2] = ["default", "clients"];
const RATE_LIMIT_FIELDS: [&str; 4] = ["default", "clients", "unproven", "unknown_clients"];
const BUCKET_FIELDS: [&str; 3] = ["max_tokens", "tokens_per_fill", "fill_interval"];
const QUOTA_FIELDS: [&str; 2] = ["tokens", "window"];

#[derive(Debug)]
pub struct RawConfig {
    pub token_paths: Vec<String>,
    pub max_body_bytes: u64,
    pub upstream: RawUpstream,
    pub cache: RawCache,
    pub rate_limit: Option<RawRateLimit>,
    pub rate_limit_service: Option<RawRateLimitService>,
    pub quota: Option<RawLimits<RawQuota>>,
    pub usage_path: Option<String>,
    pub usage_top_clients: u64,
}

impl RawConfig {
    pub fn read(doc: &Json) -> Result<RawConfig, ConfigError> {
        let mut f = Fields::of("", doc, &CONFIG_FIELDS)?;
        let token_paths = f.take("token_paths", |path, v| match v {
            Json::Array(items) => {
                items.iter().enumerate().map(|(i, item)| string(&format!("{path}[{i}]"), item)).collect()
            }
            other => Err(invalid_type(path, other, "an array of strings")),
        })?;
        let raw = RawConfig {
            token_paths: token_paths.unwrap_or_else(|| vec!["/oauth/token".into()]),
            max_body_bytes: f.take("max_body_bytes", unsigned)?.unwrap_or(8192),
            upstream: f.require("upstream", RawUpstream::read)?,
            cache: f.take("cache", RawCache::read)?.unwrap_or_default(),
            rate_limit: f.optional("rate_limit", RawRateLimit::read)?,
            rate_limit_service: f.optional("rate_limit_service", RawRateLimitService::read)?,
            quota: f.optional("quota", |path, v| RawLimits::read(path, v, RawQuota::read))?,
            usage_path: f.optional("usage_path", string)?,
            usage_top_clients: f.take("usage_top_clients", unsigned)?.unwrap_or(100),
        };
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawUpstream {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: String,
    pub backoff_scope: String,
    pub max_backoff: String,
    pub reserve: u64,
    pub key_header: Option<String>,
    /// Absent: the default header; `null`: none.
    pub client_ip_header: Option<String>,
    /// Header name to environment variable name, in document order.
    pub env_headers: Vec<(String, String)>,
    pub forward_client_certificate: bool,
    pub auth0_quota: String,
}

impl RawUpstream {
    fn read(path: &str, value: &Json) -> Result<RawUpstream, ConfigError> {
        let mut f = Fields::of(path, value, &UPSTREAM_FIELDS)?;
        let no_client_ip_header = f.is_null("client_ip_header");
        let client_ip_header = f.optional("client_ip_header", string)?;
        let raw = RawUpstream {
            cluster: f.require("cluster", string)?,
            authority: f.require("authority", string)?,
            path: f.take("path", string)?.unwrap_or_else(|| "/oauth/token".into()),
            timeout: f.take("timeout", string)?.unwrap_or_else(|| "5s".into()),
            backoff_scope: f.take("backoff_scope", string)?.unwrap_or_else(|| "client".into()),
            auth0_quota: f.take("auth0_quota", string)?.unwrap_or_else(|| "obey".into()),
            max_backoff: f.take("max_backoff", string)?.unwrap_or_else(|| "60s".into()),
            reserve: f.take("reserve", unsigned)?.unwrap_or(0),
            key_header: f.optional("key_header", string)?,
            client_ip_header: match no_client_ip_header {
                true => None,
                false => Some(client_ip_header.unwrap_or_else(|| super::DEFAULT_CLIENT_IP_HEADER.into())),
            },
            env_headers: f.take("env_headers", |p, v| entries(p, v, string))?.unwrap_or_default(),
            forward_client_certificate: f.take("forward_client_certificate", boolean)?.unwrap_or(false),
        };
        Ok(raw)
    }
}

/// Envoy's global rate-limit service (gRPC `envoy.service.ratelimit.v3.RateLimitService`).
#[derive(Debug)]
pub struct RawRateLimitService {
    pub cluster: String,
    pub domain: String,
    pub timeout: String,
}

impl RawRateLimitService {
    fn read(path: &str, value: &Json) -> Result<RawRateLimitService, ConfigError> {
        let mut f = Fields::of(path, value, &RATE_LIMIT_SERVICE_FIELDS)?;
        let raw = RawRateLimitService {
            cluster: f.require("cluster", string)?,
            domain: f.take("domain", string)?.unwrap_or_else(|| "tokengate".into()),
            timeout: f.take("timeout", string)?.unwrap_or_else(|| "100ms".into()),
        };
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawCache {
    pub max_entries: u64,
    pub min_remaining_ttl: String,
    pub refresh_ahead_ratio: f64,
    pub negative_ttl: String,
    pub max_ttl: Option<String>,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: 10_000,
            min_remaining_ttl: "30s".into(),
            refresh_ahead_ratio: 0.1,
            negative_ttl: "10s".into(),
            max_ttl: None,
        }
    }
}

impl RawCache {
    fn read(path: &str, value: &Json) -> Result<RawCache, ConfigError> {
        let mut f = Fields::of(path, value, &CACHE_FIELDS)?;
        let default = RawCache::default();
        let raw = RawCache {
            max_entries: f.take("max_entries", unsigned)?.unwrap_or(default.max_entries),
            min_remaining_ttl: f.take("min_remaining_ttl", string)?.unwrap_or(default.min_remaining_ttl),
            refresh_ahead_ratio: f.take("refresh_ahead_ratio", float)?.unwrap_or(default.refresh_ahead_ratio),
            negative_ttl: f.take("negative_ttl", string)?.unwrap_or(default.negative_ttl),
            max_ttl: f.optional("max_ttl", string)?,
        };
        Ok(raw)
    }
}

/// `default` applies to every client without an entry of its own in `clients`.
#[derive(Debug)]
pub struct RawLimits<T> {
    pub default: Option<T>,
    /// In document order, repeats included (validation refuses them).
    pub clients: Vec<(String, T)>,
}

impl<T> RawLimits<T> {
    fn read(
        path: &str,
        value: &Json,
        rule: impl Fn(&str, &Json) -> Result<T, ConfigError>,
    ) -> Result<RawLimits<T>, ConfigError> {
        let mut f = Fields::of(path, value, &LIMITS_FIELDS)?;
        let raw = RawLimits {
            default: f.optional("default", &rule)?,
            clients: f.take("clients", |p, v| entries(p, v, &rule))?.unwrap_or_default(),
        };
        Ok(raw)
    }
}

/// `rate_limit`: the per-client buckets, and the buckets for IdP calls that credentials not
/// yet proven cause (see `Config::unproven`).
#[derive(Debug)]
pub struct RawRateLimit {
    pub default: Option<RawBucket>,
    pub clients: Vec<(String, RawBucket)>,
    pub unproven: Option<RawBucket>,
    pub unknown_clients: Option<RawBucket>,
}

impl RawRateLimit {
    fn read(path: &str, value: &Json) -> Result<RawRateLimit, ConfigError> {
        let mut f = Fields::of(path, value, &RATE_LIMIT_FIELDS)?;
        let raw = RawRateLimit {
            default: f.optional("default", RawBucket::read)?,
            clients: f.take("clients", |p, v| entries(p, v, RawBucket::read))?.unwrap_or_default(),
            unproven: f.optional("unproven", RawBucket::read)?,
            unknown_clients: f.optional("unknown_clients", RawBucket::read)?,
        };
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawBucket {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: String,
}

impl RawBucket {
    fn read(path: &str, value: &Json) -> Result<RawBucket, ConfigError> {
        let mut f = Fields::of(path, value, &BUCKET_FIELDS)?;
        let raw = RawBucket {
            max_tokens: f.require("max_tokens", unsigned)?,
            tokens_per_fill: f.require("tokens_per_fill", unsigned)?,
            fill_interval: f.require("fill_interval", string)?,
        };
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawQuota {
    pub tokens: u64,
    pub window: String,
}

impl RawQuota {
    fn read(path: &str, value: &Json) -> Result<RawQuota, ConfigError> {
        let mut f = Fields::of(path, value, &QUOTA_FIELDS)?;
        let raw = RawQuota { tokens: f.require("tokens", unsigned)?, window: f.require("window", string)? };
        Ok(raw)
    }
}
