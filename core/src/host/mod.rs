//! What the core needs from its host, as small traits. The wasm crate implements them over
//! `proxy_wasm::hostcalls`; [`fake::FakeHost`] implements them in memory for tests.

pub mod fake;

use std::fmt;

/// A host call failed (the host's status, as text for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since the `cas` was read: read again and retry.
    CasMismatch,
    Host(HostError),
}

/// Envoy's shared data: one map per VM id, common to every worker thread. Compare-and-swap
/// follows Envoy's rules: `set` with the cas last read succeeds only if nobody wrote since
/// (else [`StoreError::CasMismatch`]); `set` without a cas overwrites; a key that does not
/// exist yet is created whatever cas is given. Keys are never evicted.
pub trait SharedStore {
    /// The value and its cas, or `None` when the key does not exist.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// An HTTP call to the IdP, dispatched asynchronously (`dispatch_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub cluster: String,
    /// Pseudo-headers (`:method`, `:path`, `:authority`) first, then regular headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

pub trait Dispatcher {
    /// Starts the call; the answer arrives later, keyed by the returned token.
    fn dispatch(&self, call: &HttpCall) -> Result<u32, HostError>;
    /// Wakes this worker's root context soon (Envoy: its shared queue), so a keyed call is
    /// dispatched before the next tick.
    fn wake(&self);
}

/// Random bytes, for nonces.
pub trait Entropy {
    /// `false` when no randomness could be had (then nothing is sealed or cached).
    fn fill_random(&self, buf: &mut [u8]) -> bool;
}

/// The downstream connection of the stream in the current callback (Envoy: properties).
pub trait Connection {
    /// The client's address as Envoy determined it (`source.address`: after
    /// `use_remote_address` / `xff_num_trusted_hops`), with its port.
    fn downstream_address(&self) -> Option<String>;
    /// Hex SHA-256 of the client certificate Envoy verified on this connection.
    fn peer_certificate_digest(&self) -> Option<String>;
    /// In a response callback: whether the response came from the upstream (`Some(false)`:
    /// Envoy made it itself; `None`: Envoy cannot say).
    fn answered_by_upstream(&self) -> Option<bool>;
}

/// tokengate's Envoy stats (proxy-wasm metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Requests,
    Hits,
    Misses,
    Coalesced,
    Stale,
    Negative,
    Bypass,
    IdpCalls,
    IdpErrors,
    RateLimited,
    QuotaRejected,
    BadRequests,
    /// Requests whose own IdP call the IdP refused (`401`/`403`).
    Rejected,
    /// Requests refused by the unproven-credentials limit (`rate_limit.unproven`).
    Unproven,
    /// IdP `429`s that started (or extended) a back-off.
    IdpBackoffStarted,
    /// Requests answered `429` locally during an IdP back-off.
    IdpBackoffRejected,
    /// IdP calls held back by `upstream.reserve` (refreshes skipped, still-valid tokens served).
    IdpReserveHeld,
    /// Requests the global rate-limit service did not decide (unreachable, timed out, an
    /// answer that does not parse): the local limiter decided them.
    RateLimitServiceErrors,
    /// Shared-data writes that failed (a host error, or CAS retries used up): the answer
    /// was still given, but what it should have recorded was lost.
    StoreErrors,
    /// Gauge: token slots in use.
    CacheEntries,
    /// Requests answered `429` locally because Auth0 said a quota is spent.
    Auth0QuotaRefusals,
    /// Auth0 quota headers that could not be read (ignored).
    Auth0QuotaMalformed,
    /// Cached tokens and remembered refusals dropped by `POST <usage_path>/purge`.
    Purged,
}

impl Metric {
    pub const ALL: [Metric; 23] = [
        Metric::Requests,
        Metric::Hits,
        Metric::Misses,
        Metric::Coalesced,
        Metric::Stale,
        Metric::Negative,
        Metric::Bypass,
        Metric::IdpCalls,
        Metric::IdpErrors,
        Metric::RateLimited,
        Metric::QuotaRejected,
        Metric::BadRequests,
        Metric::Rejected,
        Metric::Unproven,
        Metric::IdpBackoffStarted,
        Metric::IdpBackoffRejected,
        Metric::IdpReserveHeld,
        Metric::RateLimitServiceErrors,
        Metric::StoreErrors,
        Metric::CacheEntries,
        Metric::Auth0QuotaRefusals,
        Metric::Auth0QuotaMalformed,
        Metric::Purged,
    ];

    /// The metric's position in `ALL`: hosts keep their stat ids in an array, not a map.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stat's name (Envoy shows it as `wasmcustom.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "tokengate_requests_total",
            Metric::Hits => "tokengate_hits_total",
            Metric::Misses => "tokengate_misses_total",
            Metric::Coalesced => "tokengate_coalesced_total",
            Metric::Stale => "tokengate_stale_total",
            Metric::Negative => "tokengate_negative_total",
            Metric::Bypass => "tokengate_bypass_total",
            Metric::IdpCalls => "tokengate_idp_calls_total",
            Metric::IdpErrors => "tokengate_idp_errors_total",
            Metric::RateLimited => "tokengate_rate_limited_total",
            Metric::QuotaRejected => "tokengate_quota_rejected_total",
            Metric::BadRequests => "tokengate_bad_requests_total",
            Metric::Rejected => "tokengate_rejected_total",
            Metric::Unproven => "tokengate_unproven_total",
            Metric::IdpBackoffStarted => "tokengate_idp_backoff_started_total",
            Metric::IdpBackoffRejected => "tokengate_idp_backoff_rejected_total",
            Metric::IdpReserveHeld => "tokengate_idp_reserve_held_total",
            Metric::RateLimitServiceErrors => "tokengate_rate_limit_service_errors_total",
            Metric::StoreErrors => "tokengate_store_errors_total",
            Metric::CacheEntries => "tokengate_cache_entries",
            Metric::Auth0QuotaRefusals => "tokengate_auth0_quota_refusals_total",
            Metric::Auth0QuotaMalformed => "tokengate_auth0_quota_malformed_total",
            Metric::Purged => "tokengate_purged_total",
        }
    }

    pub fn is_gauge(self) -> bool {
        self == Metric::CacheEntries
    }
}

/// Envoy stats, shared by all workers.
pub trait Metrics {
    fn add(&self, metric: Metric, delta: i64);
}

/// Everything the request path needs from the host.
pub trait Host: SharedStore + Clock + Dispatcher + Entropy + Metrics + Connection {}

impl<T: SharedStore + Clock + Dispatcher + Entropy + Metrics + Connection> Host for T {}

#[cfg(test)]
mod tests {
    use super::Metric;

    #[test]
    fn a_metrics_index_is_its_position_in_all() {
        for (position, metric) in Metric::ALL.iter().enumerate() {
            assert_eq!(metric.index(), position, "{}", metric.name());
        }
    }
}
