//! Responses tokengate sends itself: OAuth error JSON in the shape the IdP uses, token
//! responses, and the headers every handled response carries.

use serde_json::json;

/// `x-tokengate-cache`: how a handled request was answered.
pub const CACHE_HEADER: &str = "x-tokengate-cache";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// This request called the IdP.
    Miss,
    /// Waited for another request's IdP call.
    Coalesced,
    /// The IdP failed; a still-valid cached token was served.
    Stale,
    /// A remembered IdP refusal.
    Negative,
    /// Not cacheable (other grants, client assertions, refused requests).
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Stale => "stale",
            CacheStatus::Negative => "negative",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// What tokengate decided for one request: the cache status, or why it was refused. Goes
/// to Envoy's access log, the stats and the per-client usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Hit,
    Miss,
    Coalesced,
    Stale,
    Negative,
    Bypass,
    RateLimited,
    QuotaRejected,
    BadRequest,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Hit => "hit",
            Decision::Miss => "miss",
            Decision::Coalesced => "coalesced",
            Decision::Stale => "stale",
            Decision::Negative => "negative",
            Decision::Bypass => "bypass",
            Decision::RateLimited => "rate_limited",
            Decision::QuotaRejected => "quota_rejected",
            Decision::BadRequest => "bad_request",
        }
    }

    pub fn of(status: CacheStatus) -> Decision {
        match status {
            CacheStatus::Hit => Decision::Hit,
            CacheStatus::Miss => Decision::Miss,
            CacheStatus::Coalesced => Decision::Coalesced,
            CacheStatus::Stale => Decision::Stale,
            CacheStatus::Negative => Decision::Negative,
            CacheStatus::Bypass => Decision::Bypass,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    TooManyRequests,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For the access log: what was decided, and for which client.
    pub decision: Option<Decision>,
    pub client_id: Option<String>,
}

impl Response {
    /// A JSON body with the headers every handled response carries (RFC 6749 §5.1:
    /// token responses and errors are never cached by intermediaries).
    pub fn json(status: u16, body: Vec<u8>, cache: CacheStatus) -> Response {
        Response::with_content_type(status, "application/json", body, cache)
    }

    pub fn with_content_type(status: u16, content_type: &str, body: Vec<u8>, cache: CacheStatus) -> Response {
        Response {
            status,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("cache-control".into(), "no-store".into()),
                ("pragma".into(), "no-cache".into()),
                (CACHE_HEADER.into(), cache.as_str().into()),
            ],
            body,
            decision: None,
            client_id: None,
        }
    }

    /// `{"error": code, "error_description": description}`.
    pub fn oauth_error(status: u16, code: ErrorCode, description: &str, cache: CacheStatus) -> Response {
        let body = json!({"error": code.as_str(), "error_description": description}).to_string();
        Response::json(status, body.into_bytes(), cache)
    }

    /// The cache status this response carries.
    pub fn cache_status(&self) -> CacheStatus {
        match self.header(CACHE_HEADER) {
            Some("hit") => CacheStatus::Hit,
            Some("miss") => CacheStatus::Miss,
            Some("coalesced") => CacheStatus::Coalesced,
            Some("stale") => CacheStatus::Stale,
            Some("negative") => CacheStatus::Negative,
            _ => CacheStatus::Bypass,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn push_header(&mut self, name: &str, value: String) {
        self.headers.push((name.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shape() {
        let r = Response::oauth_error(
            400,
            ErrorCode::InvalidRequest,
            "missing \"grant_type\"",
            CacheStatus::Bypass,
        );
        assert_eq!(r.status, 400);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"error": "invalid_request", "error_description": "missing \"grant_type\""}));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        assert_eq!(r.header(CACHE_HEADER), Some("bypass"));
    }
}
