//! The plugin configuration in two steps: `raw` (serde, unknown fields refused, defaults)
//! then [`Config::from_json`] validates meaning and yields the typed configuration. Every
//! refusal is a [`ConfigError`] naming the field, so `on_configure` can log one line.

mod duration;
mod edge;
mod raw;

use std::fmt;

use crate::sorted::SortedMap;

pub use duration::parse_duration_ms;
pub use edge::{
    CLIENT_CERTIFICATE_HEADER, CLIENT_CERTIFICATE_VERIFIED_HEADER, DEFAULT_CLIENT_IP_HEADER, EnvValue,
};
use edge::{env_headers, own_header_name};

use crate::request::{needs_normalizing, normalize_path};

/// The longest `upstream.max_backoff` accepted.
const MAX_BACKOFF_LIMIT_MS: u64 = 3_600_000;
use raw::{Json, RawBucket, RawConfig, RawLimits, RawQuota, RawRateLimit, RawRateLimitService};

/// Largest accepted `max_body_bytes`: Envoy's default per-connection buffer limit (1 MiB).
pub const MAX_BODY_BYTES_LIMIT: u64 = 1 << 20;
/// Largest accepted `cache.max_entries`.
pub const MAX_ENTRIES_LIMIT: u64 = 1_000_000;
/// Longest accepted `upstream.timeout`.
pub const MAX_UPSTREAM_TIMEOUT_MS: u64 = 60_000;
/// Longest accepted `rate_limit_service.timeout`: every request waits for the service.
pub const MAX_RATE_LIMIT_SERVICE_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Request paths (query string ignored) whose `POST`s tokengate handles.
    pub token_paths: Vec<String>,
    pub max_body_bytes: usize,
    pub upstream: Upstream,
    pub cache: CacheConfig,
    /// Per-client request rate limit; `None` = off.
    pub rate_limit: Option<Limits<BucketRule>>,
    /// IdP calls for credentials not yet proven (with `rate_limit`; `None` = off).
    pub unproven: Option<UnprovenLimits>,
    /// Envoy's global rate-limit service, asked first for every request with a client id;
    /// `rate_limit` is then the fallback while the service cannot answer. `None` = off.
    pub rate_limit_service: Option<RateLimitService>,
    /// Per-client issuance quota; `None` = off.
    pub quota: Option<Limits<QuotaRule>>,
    /// Path of the usage report (`GET`); `None` = off.
    pub usage_path: Option<String>,
    /// How many clients the usage report lists (the most requests first).
    pub usage_top_clients: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Envoy cluster the IdP calls are dispatched to.
    pub cluster: String,
    /// `:authority` of the IdP calls, e.g. `your-tenant.us.auth0.com`.
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub backoff_scope: BackoffScope,
    /// Whether a spent Auth0 quota (`auth0-*-quota-limit` with `r=0`) holds calls back.
    pub auth0_quota: Auth0Quota,
    /// The longest back-off an IdP `429` can impose (absurd resets are clamped to it).
    pub max_backoff_ms: u64,
    /// When the IdP's `x-ratelimit-remaining` is at or below this (0 = off), its last calls
    /// are kept for keys without any cached token: no refresh-ahead, and a key with a token
    /// still valid gets that token (`stale`) instead of a call.
    pub reserve: u64,
    /// When set, every IdP call carries this header with the hex cache-key fingerprint.
    pub key_header: Option<String>,
    /// Carries the client's address on every IdP call; `None` = not sent.
    pub client_ip_header: Option<String>,
    /// Headers every IdP call carries, with values read from the VM's environment.
    pub env_headers: Vec<(String, EnvValue)>,
    /// IdP calls carry the client certificate Envoy verified (`client-certificate`).
    pub forward_client_certificate: bool,
    /// Request headers only tokengate may set on the way to the IdP: a client's copies
    /// are removed from every token request.
    pub owned_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    /// Envoy cluster (HTTP/2) of the service.
    pub cluster: String,
    /// The rate-limit domain of tokengate's descriptors (`client_id`).
    pub domain: String,
    /// How long a request waits for the service before the local limiter decides.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffScope {
    Client,
    Upstream,
}

/// `upstream.auth0_quota`: `"obey"` holds a client's (or organization's) misses back while
/// Auth0 says its quota is spent; `"ignore"` for quotas Auth0 only logs (`enforce: false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth0Quota {
    Obey,
    Ignore,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub max_entries: u32,
    pub min_remaining_ttl_ms: u64,
    pub refresh_ahead_ratio: f64,
    pub negative_ttl_ms: u64,
    /// A token is served at most this long after it was issued (`None`: its `expires_in`).
    pub max_ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits<T> {
    pub default: Option<T>,
    pub clients: SortedMap<T>,
}

impl<T> Limits<T> {
    /// The rule for `client_id`: its own entry, else the default.
    pub fn for_client(&self, client_id: &str) -> Option<&T> {
        self.clients.get(client_id).or(self.default.as_ref())
    }
}

/// A token bucket in Envoy's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRule {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval_ms: u64,
}

/// Limits on the IdP calls that unproven credentials cause: a secret the IdP has not yet
/// issued a token for (guessing, typos, a cold client), or a forwarded grant. Someone who
/// knows a client id but not its secret spends these, never the client's own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnprovenLimits {
    /// Per client id (`rate_limit.unproven`); requests coalesced onto one call spend once.
    pub per_client: BucketRule,
    /// Shared by every client id the IdP has never issued a token to and the
    /// configuration does not name (`rate_limit.unknown_clients`): what a flood of
    /// invented ids can make the IdP do.
    pub unknown_clients: BucketRule,
}

/// `rate_limit.unproven` when not set: 10 IdP calls a minute per client id.
pub const DEFAULT_UNPROVEN: BucketRule =
    BucketRule { max_tokens: 10, tokens_per_fill: 10, fill_interval_ms: 60_000 };
/// `rate_limit.unknown_clients` when not set: 60 IdP calls a minute for all unknown ids.
pub const DEFAULT_UNKNOWN_CLIENTS: BucketRule =
    BucketRule { max_tokens: 60, tokens_per_fill: 60, fill_interval_ms: 60_000 };

/// At most `tokens` IdP calls per fixed window aligned to the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRule {
    pub tokens: u64,
    pub window_ms: u64,
}

/// Why a configuration was refused: the dotted path of the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

/// Which of a field's two words a value is (the two enum-valued fields).
enum Either {
    First,
    Second,
}
use Either::{First, Second};

fn either(field: &str, value: &str, [first, second]: [&str; 2]) -> Result<Either, ConfigError> {
    match value {
        v if v == first => Ok(First),
        v if v == second => Ok(Second),
        other => Err(refuse(field, format!("{other:?} must be \"{first}\" or \"{second}\""))),
    }
}

fn duration(field: &str, text: &str) -> Result<u64, ConfigError> {
    parse_duration_ms(text).map_err(|reason| refuse(field, reason))
}

fn positive_duration(field: &str, text: &str) -> Result<u64, ConfigError> {
    match duration(field, text)? {
        0 => Err(refuse(field, "must be longer than 0")),
        ms => Ok(ms),
    }
}

fn request_path(field: &str, path: &str) -> Result<String, ConfigError> {
    if !path.starts_with('/') {
        return Err(refuse(field, format!("{path:?} must start with '/'")));
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(field, format!("{path:?} must be a plain path (no query, no spaces)")));
    }
    Ok(path.to_owned())
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let valid =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(refuse(field, format!("{name:?} must be a lowercase HTTP header name")))
    }
}

fn non_empty(field: &str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() { Err(refuse(field, "must not be empty")) } else { Ok(value.to_owned()) }
}

impl Config {
    /// Parses and validates the plugin configuration (the filter's `configuration` string),
    /// in an environment without variables.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        Config::from_json_with_env(json, &|_| None)
    }

    /// As [`Config::from_json`], with `env` reading the VM's environment variables
    /// (`upstream.env_headers`).
    pub fn from_json_with_env(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // Only a document that is not JSON fails here: it has no field to name.
        let doc: Json = serde_json::from_slice(json).map_err(|e| refuse("configuration", e.to_string()))?;
        let raw = RawConfig::read(&doc)?;
        Config::validate(raw, env)
    }

    fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        if raw.token_paths.is_empty() {
            return Err(refuse("token_paths", "must list at least one path"));
        }
        let token_paths = raw
            .token_paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                request_path(&format!("token_paths[{i}]"), p)
                    .map(|p| String::from_utf8_lossy(&normalize_path(&p)).into_owned())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(refuse("max_body_bytes", format!("must be between 1 and {MAX_BODY_BYTES_LIMIT}")));
        }
        let up = raw.upstream;
        let timeout_ms = positive_duration("upstream.timeout", &up.timeout)?;
        if timeout_ms > MAX_UPSTREAM_TIMEOUT_MS {
            return Err(refuse("upstream.timeout", "must be at most 60s"));
        }
        let key_header =
            up.key_header.as_deref().map(|h| own_header_name("upstream.key_header", h)).transpose()?;
        let client_ip_header = up
            .client_ip_header
            .as_deref()
            .map(|h| own_header_name("upstream.client_ip_header", h))
            .transpose()?;
        if client_ip_header.is_some() && client_ip_header == key_header {
            return Err(refuse("upstream.key_header", "is upstream.client_ip_header"));
        }
        let env_headers = env_headers(up.env_headers, env)?;
        let other_options = [client_ip_header.as_ref(), key_header.as_ref()];
        if let Some((name, _)) = env_headers.iter().find(|(n, _)| other_options.contains(&Some(n))) {
            return Err(refuse(
                format!("upstream.env_headers.{name}"),
                "is upstream.client_ip_header or upstream.key_header",
            ));
        }
        let named: Vec<String> = [DEFAULT_CLIENT_IP_HEADER, CLIENT_CERTIFICATE_HEADER]
            .into_iter()
            .chain([CLIENT_CERTIFICATE_VERIFIED_HEADER])
            .map(str::to_owned)
            .chain(client_ip_header.clone())
            .chain(key_header.clone())
            .chain(env_headers.iter().map(|(name, _)| name.clone()))
            .collect();
        // Each name once (the default client_ip_header is also always owned): a client's copy
        // is removed with one host call.
        let mut owned_headers: Vec<String> = Vec::with_capacity(named.len());
        for name in named {
            if !owned_headers.contains(&name) {
                owned_headers.push(name);
            }
        }
        let upstream = Upstream {
            cluster: non_empty("upstream.cluster", &up.cluster)?,
            authority: non_empty("upstream.authority", &up.authority)?,
            path: request_path("upstream.path", &up.path)?,
            timeout_ms,
            backoff_scope: match either("upstream.backoff_scope", &up.backoff_scope, ["client", "upstream"])?
            {
                First => BackoffScope::Client,
                Second => BackoffScope::Upstream,
            },
            auth0_quota: match either("upstream.auth0_quota", &up.auth0_quota, ["obey", "ignore"])? {
                First => Auth0Quota::Obey,
                Second => Auth0Quota::Ignore,
            },
            max_backoff_ms: {
                let ms = positive_duration("upstream.max_backoff", &up.max_backoff)?;
                if !(1_000..=MAX_BACKOFF_LIMIT_MS).contains(&ms) {
                    return Err(refuse("upstream.max_backoff", "must be between 1s and 1h"));
                }
                ms
            },
            reserve: up.reserve,
            key_header,
            client_ip_header,
            env_headers,
            forward_client_certificate: up.forward_client_certificate,
            owned_headers,
        };
        let c = raw.cache;
        if c.max_entries == 0 || c.max_entries > MAX_ENTRIES_LIMIT {
            return Err(refuse("cache.max_entries", format!("must be between 1 and {MAX_ENTRIES_LIMIT}")));
        }
        if !(0.0..1.0).contains(&c.refresh_ahead_ratio) {
            return Err(refuse("cache.refresh_ahead_ratio", "must be at least 0 and below 1"));
        }
        let cache = CacheConfig {
            max_entries: c.max_entries as u32,
            min_remaining_ttl_ms: duration("cache.min_remaining_ttl", &c.min_remaining_ttl)?,
            refresh_ahead_ratio: c.refresh_ahead_ratio,
            negative_ttl_ms: duration("cache.negative_ttl", &c.negative_ttl)?,
            max_ttl_ms: c.max_ttl.as_deref().map(|t| positive_duration("cache.max_ttl", t)).transpose()?,
        };
        if cache.max_ttl_ms.is_some_and(|max| max <= cache.min_remaining_ttl_ms) {
            return Err(refuse("cache.max_ttl", "must be longer than cache.min_remaining_ttl"));
        }
        let (rate_limit, unproven) = match raw.rate_limit {
            None => (None, None),
            Some(RawRateLimit { default, clients, unproven, unknown_clients }) => {
                let per_client = limits("rate_limit", RawLimits { default, clients }, bucket_rule)?;
                let bucket = |field: &str, raw: Option<RawBucket>, default: BucketRule| {
                    raw.map_or(Ok(default), |r| bucket_rule(field, r))
                };
                let unproven = UnprovenLimits {
                    per_client: bucket("rate_limit.unproven", unproven, DEFAULT_UNPROVEN)?,
                    unknown_clients: bucket(
                        "rate_limit.unknown_clients",
                        unknown_clients,
                        DEFAULT_UNKNOWN_CLIENTS,
                    )?,
                };
                (Some(per_client), Some(unproven))
            }
        };
        let rate_limit_service = raw.rate_limit_service.map(rate_limit_service).transpose()?;
        let quota = raw.quota.map(|l| limits("quota", l, quota_rule)).transpose()?;
        let usage_path = raw.usage_path.as_deref().map(|p| request_path("usage_path", p)).transpose()?;
        // The report's path, and the purge's under it: neither may be a token path.
        if let Some(path) = &usage_path
            && [path.clone(), format!("{path}/purge")]
                .iter()
                .any(|path| token_paths.iter().any(|p| p.as_bytes() == normalize_path(path)))
        {
            return Err(refuse("usage_path", "must differ from every token path (with /purge too)"));
        }
        if raw.usage_top_clients == 0 || raw.usage_top_clients > 10_000 {
            return Err(refuse("usage_top_clients", "must be between 1 and 10000"));
        }
        Ok(Config {
            usage_top_clients: raw.usage_top_clients as usize,
            token_paths,
            max_body_bytes: raw.max_body_bytes as usize,
            upstream,
            cache,
            rate_limit,
            unproven,
            rate_limit_service,
            quota,
            usage_path,
        })
    }

    /// Whether this is a request for the usage report.
    pub fn is_usage_request(&self, method: &str, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        method == "GET" && self.usage_path.as_deref() == Some(path)
    }

    /// `<usage_path>/purge` (any method: other methods than `POST` are refused there).
    pub fn is_purge_path(&self, path: &str) -> bool {
        let plain = path.split_once('?').map_or(path, |(p, _)| p);
        self.usage_path.as_deref().and_then(|usage| plain.strip_prefix(usage)) == Some("/purge")
    }

    /// How tokengate treats a request with this method and `:path`: a path that normalizes
    /// to a token path is a token request whatever its spelling (see `request::path`).
    pub fn route(&self, method: &str, path: &str) -> Route {
        let token_path = if needs_normalizing(path) {
            let normal = normalize_path(path);
            self.token_paths.iter().any(|p| p.as_bytes() == normal)
        } else {
            let plain = path.split(['?', '#']).next().unwrap_or_default();
            self.token_paths.iter().any(|p| p == plain)
        };
        match (token_path, method == "POST") {
            (false, _) => Route::Other,
            (true, true) => Route::Token,
            (true, false) => Route::TokenWrongMethod,
        }
    }
}

/// What a request is to tokengate (see [`Config::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Passes through untouched.
    Other,
    /// A `POST` to a token path: handled.
    Token,
    /// Another method on a token path: refused, never passed through.
    TokenWrongMethod,
}

fn limits<R, T>(
    field: &str,
    raw: RawLimits<R>,
    rule: impl Fn(&str, R) -> Result<T, ConfigError>,
) -> Result<Limits<T>, ConfigError> {
    let default = raw.default.map(|r| rule(&format!("{field}.default"), r)).transpose()?;
    let mut clients = SortedMap::new();
    for (id, r) in raw.clients {
        let parsed = rule(&format!("{field}.clients.{id}"), r)?;
        if id.is_empty() {
            return Err(refuse(format!("{field}.clients"), "a client id must not be empty"));
        }
        if let Err((id, _)) = clients.insert_new(id, parsed) {
            return Err(refuse(format!("{field}.clients.{id}"), "the client id is listed twice"));
        }
    }
    Ok(Limits { default, clients })
}

fn rate_limit_service(raw: RawRateLimitService) -> Result<RateLimitService, ConfigError> {
    let timeout_ms = positive_duration("rate_limit_service.timeout", &raw.timeout)?;
    if timeout_ms > MAX_RATE_LIMIT_SERVICE_TIMEOUT_MS {
        return Err(refuse("rate_limit_service.timeout", "must be at most 5s"));
    }
    Ok(RateLimitService {
        cluster: non_empty("rate_limit_service.cluster", &raw.cluster)?,
        domain: non_empty("rate_limit_service.domain", &raw.domain)?,
        timeout_ms,
    })
}

fn bucket_rule(field: &str, raw: RawBucket) -> Result<BucketRule, ConfigError> {
    if raw.max_tokens == 0 {
        return Err(refuse(format!("{field}.max_tokens"), "must be at least 1"));
    }
    if raw.tokens_per_fill == 0 {
        return Err(refuse(format!("{field}.tokens_per_fill"), "must be at least 1"));
    }
    Ok(BucketRule {
        max_tokens: raw.max_tokens,
        tokens_per_fill: raw.tokens_per_fill,
        fill_interval_ms: positive_duration(&format!("{field}.fill_interval"), &raw.fill_interval)?,
    })
}

fn quota_rule(field: &str, raw: RawQuota) -> Result<QuotaRule, ConfigError> {
    Ok(QuotaRule {
        tokens: raw.tokens,
        window_ms: positive_duration(&format!("{field}.window"), &raw.window)?,
    })
}

#[cfg(test)]
mod tests;
