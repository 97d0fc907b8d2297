//! The request flow as an explicit state machine. [`Gate::handle`] turns a complete token
//! request into either a response or one dispatched IdP call ([`Outcome::AwaitIdp`]);
//! [`Gate::complete`] turns that call's answer (or its failure) into the response, caching
//! a valid token on the way.

use crate::cache::{CacheEntry, TokenTable};
use crate::config::Config;
use crate::fingerprint::Fingerprint;
use crate::host::{Host, IdpCall};
use crate::request::{RequestError, RequestHead, RequestKind, TokenRequest};
use crate::response::{CacheStatus, ErrorCode, Response};

/// IdP response headers relayed to the client with its status and body.
const RELAYED_HEADERS: [&str; 4] = [
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

pub struct Gate<'a> {
    config: &'a Config,
    host: &'a dyn Host,
    /// Prefix of every shared-data key (the plugin name).
    key_prefix: &'a str,
}

/// What to do with a complete token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Respond(Response),
    /// An IdP call is in flight; [`Gate::complete`] answers when it returns.
    AwaitIdp(PendingCall),
}

/// An IdP call in flight for one request, keyed by the host's call token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall {
    pub token: u32,
    /// The cache key when the answer may be cached; `None` for forwarded requests.
    pub cache_key: Option<Fingerprint>,
    pub started_ms: u64,
}

/// The IdP's answer to a dispatched call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpReply {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl IdpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<'a> Gate<'a> {
    pub fn new(config: &'a Config, host: &'a dyn Host, key_prefix: &'a str) -> Gate<'a> {
        Gate {
            config,
            host,
            key_prefix,
        }
    }

    fn table(&self) -> TokenTable<'a> {
        TokenTable::new(self.host, self.key_prefix, self.config.cache.max_entries)
    }

    /// The answer to a body over `max_body_bytes`, sent as soon as it is seen.
    pub fn too_large(&self) -> Response {
        refused(RequestError::too_large(self.config.max_body_bytes))
    }

    /// Handles a complete token request (`body` is all of it).
    pub fn handle(&self, head: &RequestHead, body: &[u8]) -> Outcome {
        if body.len() > self.config.max_body_bytes {
            return Outcome::Respond(self.too_large());
        }
        let request = match TokenRequest::parse(head, body) {
            Ok(request) => request,
            Err(e) => return Outcome::Respond(refused(e)),
        };
        let now = self.host.now_ms();
        let cache_key = match request.kind() {
            RequestKind::Forward => None,
            RequestKind::Cacheable => {
                let fp = Fingerprint::of(&request, &self.config.upstream);
                // A store that cannot be read is a miss, not an error: the IdP still answers.
                if let Ok(Some(entry)) = self.table().get(&fp)
                    && entry.servable(now, self.config.cache.min_remaining_ttl_ms)
                {
                    return Outcome::Respond(Response::json(
                        200,
                        entry.render(now),
                        CacheStatus::Hit,
                    ));
                }
                Some(fp)
            }
        };
        let call = self.idp_call(head, body, cache_key.as_ref());
        match self.host.dispatch(&call) {
            Ok(token) => Outcome::AwaitIdp(PendingCall {
                token,
                cache_key,
                started_ms: now,
            }),
            Err(_) => Outcome::Respond(unavailable(status_of(cache_key.as_ref()))),
        }
    }

    /// The original body, content type and Basic header, sent to `upstream.path`.
    fn idp_call(
        &self,
        head: &RequestHead,
        body: &[u8],
        cache_key: Option<&Fingerprint>,
    ) -> IdpCall {
        let up = &self.config.upstream;
        let mut headers = vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), up.path.clone()),
            (":authority".to_owned(), up.authority.clone()),
            ("accept".to_owned(), "application/json".to_owned()),
        ];
        if let Some(content_type) = &head.content_type {
            headers.push(("content-type".to_owned(), content_type.clone()));
        }
        if let Some(authorization) = &head.authorization {
            headers.push(("authorization".to_owned(), authorization.clone()));
        }
        if let (Some(name), Some(fp)) = (&up.key_header, cache_key) {
            headers.push((name.clone(), fp.to_hex()));
        }
        IdpCall {
            cluster: up.cluster.clone(),
            headers,
            body: body.to_vec(),
            timeout_ms: up.timeout_ms,
        }
    }

    /// The response for a finished IdP call; `reply` is `None` when the call failed
    /// (connection refused, reset, or `upstream.timeout` passed).
    pub fn complete(&self, pending: &PendingCall, reply: Option<IdpReply>) -> Response {
        let status = status_of(pending.cache_key.as_ref());
        let Some(reply) = reply else {
            return unavailable(status);
        };
        // Envoy answers for an IdP it cannot reach with a plain-text 5xx ("no healthy
        // upstream", "upstream connect error"): that is an unreachable IdP, not its answer.
        let json_body = serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body).is_ok();
        if reply.status >= 500 && !json_body {
            return unavailable(status);
        }
        if let Some(fp) = pending.cache_key
            && let Some(entry) =
                CacheEntry::from_token_response(fp, reply.status, &reply.body, pending.started_ms)
        {
            // A token that could not be stored is still the client's answer.
            let _ = self.table().put(&entry, self.host.now_ms());
        }
        let content_type = reply.header("content-type").unwrap_or("application/json");
        let mut response =
            Response::with_content_type(reply.status, content_type, reply.body.clone(), status);
        for name in RELAYED_HEADERS {
            if let Some(value) = reply.header(name) {
                response.push_header(name, value.to_owned());
            }
        }
        response
    }
}

fn status_of(cache_key: Option<&Fingerprint>) -> CacheStatus {
    if cache_key.is_some() {
        CacheStatus::Miss
    } else {
        CacheStatus::Bypass
    }
}

fn refused(e: RequestError) -> Response {
    Response::oauth_error(
        e.status,
        ErrorCode::InvalidRequest,
        &e.description,
        CacheStatus::Bypass,
    )
}

fn unavailable(status: CacheStatus) -> Response {
    Response::oauth_error(
        503,
        ErrorCode::TemporarilyUnavailable,
        "the identity provider could not be reached; try again later",
        status,
    )
}

#[cfg(test)]
mod tests;
