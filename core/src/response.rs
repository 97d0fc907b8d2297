//! Responses tokengate sends itself: OAuth error JSON in the shape the IdP uses, token
//! responses, and the headers every handled response carries.

use std::borrow::Cow;

use serde::Serialize;

use crate::decision::Decision;

/// `x-tokengate-cache`: how a handled request was answered.
pub const CACHE_HEADER: &str = "x-tokengate-cache";
/// tokengate's decision (`hit`, ..., `rate_limited`, `quota_rejected`, `bad_request`), for
/// the access log (`%RESP(x-tokengate-decision)%`).
pub const DECISION_HEADER: &str = "x-tokengate-decision";
/// The client id the decision was made for (percent-encoded where a header cannot carry
/// it), for the access log. The caller sent it, so it tells the caller nothing new.
pub const CLIENT_HEADER: &str = "x-tokengate-client";

/// `value` as a header value: visible ASCII is kept, every other byte (and `%`) is
/// percent-encoded, so a client id can never break or add a header line.
pub fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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

/// A response header: lowercase name and value. Most are constants, and a `Cow` keeps those
/// from being copied into a new allocation on every response (a hit builds about ten).
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// Changes to a request's headers on its way to the IdP: `None` removes the header.
pub type HeaderEdits = Vec<(String, Option<String>)>;

/// What the host does with a response's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStep {
    /// Not tokengate's: as it is.
    Continue,
    /// The IdP's answer to a forwarded request goes to the client with its status and body:
    /// these headers removed, then these set (replacing any of the same name).
    Amend { remove: &'static [&'static str], set: Vec<Header> },
    /// Answered with this local reply instead (the IdP could not be reached).
    Replace(Response),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// How the cache took part, kept as a value to the end; `x-tokengate-cache` is written
    /// from it at the edge ([`Response::edge_headers`]).
    pub cache: Decision,
    /// What was decided and for which client (header-safe), once the answer is concluded:
    /// `x-tokengate-decision` and `x-tokengate-client` at the edge.
    pub decided: Option<(Decision, Option<String>)>,
}

impl Response {
    /// A JSON body with the headers every handled response carries (RFC 6749 §5.1:
    /// token responses and errors are never cached by intermediaries).
    pub fn json(status: u16, body: Vec<u8>, cache: Decision) -> Response {
        Response::with_content_type(status, "application/json", body, cache)
    }

    pub fn with_content_type(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: Vec<u8>,
        cache: Decision,
    ) -> Response {
        Response {
            status,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("cache-control".into(), "no-store".into()),
                ("pragma".into(), "no-cache".into()),
            ],
            body,
            cache,
            decided: None,
        }
    }

    /// `{"error": code, "error_description": description}`.
    pub fn oauth_error(status: u16, code: ErrorCode, description: &str, cache: Decision) -> Response {
        #[derive(Serialize)]
        struct OAuthError<'a> {
            error: &'a str,
            error_description: &'a str,
        }
        let error = OAuthError { error: code.as_str(), error_description: description };
        // Two strings always serialize.
        let body = serde_json::to_vec(&error).unwrap_or_default();
        Response::json(status, body, cache)
    }

    /// The answer of a filter that has no configuration (a plugin Envoy started without
    /// one): every request refused, none passed on unfiltered.
    pub fn unconfigured() -> Response {
        let description = "tokengate has no configuration";
        Response::oauth_error(503, ErrorCode::TemporarilyUnavailable, description, Decision::Bypass)
    }

    /// How the cache took part, as the response was made (`Bypass` for refusals).
    pub fn cached_as(&self) -> Decision {
        self.cache
    }

    /// A header as the client gets it (tokengate's own, written at the edge, included).
    pub fn header(&self, name: &str) -> Option<&str> {
        if let Some((_, value)) = self.headers.iter().find(|(n, _)| n == name) {
            return Some(value);
        }
        let (decision, client) = self.decided.as_ref()?;
        match name {
            CACHE_HEADER => Some(self.cache.cache_header()),
            DECISION_HEADER => Some(decision.as_str()),
            CLIENT_HEADER => client.as_deref(),
            _ => None,
        }
    }

    /// Every header as the client gets it: the response's own, then, once the answer is
    /// concluded, tokengate's (`x-tokengate-cache`, `-decision`, `-client`), written here
    /// and only here from the values.
    pub fn edge_headers(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(self.headers.len() + 3);
        out.extend(self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
        if let Some((decision, client)) = &self.decided {
            out.push((CACHE_HEADER, self.cache.cache_header()));
            out.push((DECISION_HEADER, decision.as_str()));
            if let Some(id) = client {
                out.push((CLIENT_HEADER, id));
            }
        }
        out
    }

    pub fn push_header(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) {
        self.headers.push((name.into(), value.into()));
    }

    /// Records the decision and the client on the response, for the access log.
    pub fn decided(mut self, decision: Decision, client_id: Option<&str>) -> Response {
        self.decided = Some((decision, client_id.map(header_safe)));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_cannot_break_a_header_line() {
        assert_eq!(header_safe("svc-a_1.b"), "svc-a_1.b");
        assert_eq!(header_safe("a\r\nx-evil: 1"), "a%0D%0Ax-evil:%201");
        assert_eq!(header_safe("100%"), "100%25");
        assert_eq!(header_safe("é"), "%C3%A9");
    }

    #[test]
    fn a_decided_response_carries_decision_and_client() {
        let r = Response::json(200, b"{}".to_vec(), Decision::Hit).decided(Decision::Hit, Some("c 1"));
        assert_eq!(r.header(DECISION_HEADER), Some("hit"));
        assert_eq!(r.header(CLIENT_HEADER), Some("c%201"));
        let r = Response::json(400, b"{}".to_vec(), Decision::Bypass).decided(Decision::BadRequest, None);
        assert_eq!(r.header(CLIENT_HEADER), None);
    }

    #[test]
    fn error_shape() {
        let r =
            Response::oauth_error(400, ErrorCode::InvalidRequest, "missing \"grant_type\"", Decision::Bypass);
        assert_eq!(r.status, 400);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_request", "error_description": "missing \"grant_type\""})
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        // tokengate's own headers are written at the edge, once the answer is concluded.
        assert_eq!(r.header(CACHE_HEADER), None);
        let r = r.decided(Decision::BadRequest, Some("c1"));
        let edge: Vec<(&str, &str)> = r.edge_headers().into_iter().skip(3).collect();
        assert_eq!(edge, [(CACHE_HEADER, "bypass"), (DECISION_HEADER, "bad_request"), (CLIENT_HEADER, "c1")]);
        assert!(
            r.headers.iter().all(|(n, _)| !n.starts_with("x-tokengate-")),
            "never in the headers themselves"
        );
    }
}
