//! The request flow as an explicit state machine.
//!
//! [`Gate::handle`] turns a complete token request into a [`Plan`]: an answer now (hit,
//! negative, refusal, 429), a request that goes on to the IdP through the route
//! ([`Outcome::Forward`], its answer amended by [`Gate::forward_answered`]), or a wait for the shared
//! outcome of the key's single IdP call ([`Outcome::Wait`]); the call itself, when this
//! request owns it, is a [`KeyedCall`] the worker's root context dispatches, so it survives
//! the client going away. [`Gate::finish_call`] stores a call's outcome where every worker
//! sees it; [`Gate::answer`] turns it into each waiter's response.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::backoff::{IdpRecord, IdpState, RateLimitHeaders, deadline_ms, seconds_left};
use crate::cache::{
    CacheEntry, LocalHit, LocalIndex, NegativeEntry, NegativeTable, RequestDigest, TokenTable,
    in_refresh_window, render_token,
};
use crate::clients::{Admission, ClientTable, Leasing, Standing};
use crate::config::{
    BackoffScope, CLIENT_CERTIFICATE_HEADER, CLIENT_CERTIFICATE_VERIFIED_HEADER, Config, QuotaRule,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proof::Refused;

use crate::decision::Decision;
use crate::fingerprint::{self, Fingerprint, Identity};
use crate::flight::{Begin, CallOutcome, FlightState, FlightTable};
use crate::hit_tally::PendingHits;
use crate::host::{Host, HttpCall, Metric, StoreError};
use crate::limits::{LimitState, QuotaDecision};
use crate::rate_limit_service::Verdict;
use crate::request::{RequestError, RequestHead, RequestKind, TokenRequest};
use crate::response::{ErrorCode, Header, HeaderEdits, Response, ResponseStep};
use crate::seal::{NONCE_BYTES, SealKey};
use crate::store::Store;

/// IdP response headers relayed to the client with its status and body. Not the IdP's
/// `x-ratelimit-*`: on tokengate's answers those describe the client's bucket at tokengate,
/// one meaning; the IdP's last are in the usage report.
/// Auth0's quota headers are relayed too (tokengate's own quota header replaces the
/// client one where a `quota` applies).
const RELAYED_HEADERS: [&str; 3] =
    ["retry-after", crate::auth0_quota::CLIENT_HEADER, crate::auth0_quota::ORGANIZATION_HEADER];
/// The IdP's rate-limit headers, taken off a forwarded request's answer for the same
/// reason (tokengate sets its own there).
const IDP_LIMIT_HEADERS: [&str; 5] =
    ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit", "ratelimit-policy"];
/// Waiters give up this long after the call's own deadline (the owner needs a moment to
/// write the outcome after Envoy's timeout fires).
const WAIT_GRACE_MS: u64 = 500;
/// Relayed bodies larger than this are not shared with waiters on other workers.
const MAX_SHARED_BODY_BYTES: usize = 16 * 1024;
const DAY_MS: u64 = 86_400_000;

pub struct Gate<'a> {
    config: &'a Config,
    host: &'a dyn Host,
    /// Prefix of every shared-data key (the plugin name).
    key_prefix: &'a str,
    store: Store<'a>,
    /// This worker's copies of tokens it served (see `cache::local`).
    local: Option<&'a RefCell<LocalIndex>>,
    /// This worker's hits not yet in shared data (see `hit_tally`).
    pending_hits: Option<&'a RefCell<PendingHits>>,
    /// The global rate-limit service's decision for this request (see `global_rate`).
    global_rate: Option<Verdict>,
}

/// What to do with a complete token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub outcome: Outcome,
    /// The IdP call this request starts, for the worker's root context to dispatch: its
    /// key's call when it owns it (`Outcome::Wait`), or a refresh-ahead in the background
    /// (the answer is already given). The one way out for a keyed call.
    pub call: Option<KeyedCall>,
}

/// What a waiting request gets when its key's outcome is looked at ([`Gate::answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ready(Response),
    /// The call is still in flight (or the waiter joined a later one).
    Pending,
    /// The waiter retook a released call's key and owns the next call: dispatch it; the
    /// waiter waits on.
    Owns(Box<KeyedCall>),
}

impl Answer {
    /// The response, when there is one.
    pub fn ready(self) -> Option<Response> {
        match self {
            Answer::Ready(response) => Some(response),
            Answer::Pending | Answer::Owns(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Respond(Response),
    /// A forwarded (uncacheable) request: it goes on down the filter chain to the IdP, as
    /// the route sends it.
    Forward(ForwardedRequest),
    /// Waiting for the key's IdP call (this request owns it when `Plan::call` is set).
    Wait(Box<Waiter>),
}

/// A forwarded request on its way to the IdP; its answer comes back through the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedRequest {
    /// Rate-limit headers for the answer.
    pub limit_headers: Vec<Header>,
    pub client_id: Option<String>,
    /// The `organization` the request named (Auth0's organization quota).
    pub organization: Option<String>,
    /// When a quota unit was spent for this call (given back if no token is issued).
    pub quota_spent_ms: Option<u64>,
    /// Charge the client's bucket when a token is issued (the credentials are proven then).
    pub charge_on_token: bool,
}

/// An IdP call for a cache key, dispatched by the worker's root context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCall {
    pub fingerprint: Fingerprint,
    /// Seals the token for the cache (held in this worker's memory only).
    pub seal_key: SealKey,
    /// The credentials a token proves (see `proof`).
    pub credential: Fingerprint,
    /// The flight generation this call owns; `None` when it runs uncoordinated.
    pub generation: Option<u64>,
    pub call: HttpCall,
    pub started_ms: u64,
    /// Promoted to a trusted client when the IdP issues it a token.
    pub client_id: Option<String>,
    /// The `organization` the request named (Auth0's organization quota).
    pub organization: Option<String>,
    /// When a quota unit was spent for this call (given back if no token is issued).
    pub quota_spent_ms: Option<u64>,
}

/// A request waiting for the outcome of its key's IdP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub fingerprint: Fingerprint,
    /// Opens the cached token (held in this worker's memory only).
    pub seal_key: SealKey,
    pub generation: Option<u64>,
    /// Give up (stale token or 503) after this.
    pub deadline_ms: u64,
    /// This request made the call (`miss`); the others are `coalesced`.
    pub owner: bool,
    pub limit_headers: Vec<Header>,
    pub client_id: Option<String>,
    pub organization: Option<String>,
    /// Credentials not yet proven: the request is charged to its client's bucket only
    /// when a token comes (refused then if the bucket is empty).
    pub charge_on_token: bool,
    /// The credentials a token for this request proves.
    pub credential: Fingerprint,
    /// The key's IdP call as this request would make it: made again if the call it waits
    /// for is released (see [`Gate::answer`]).
    pub request: HttpCall,
}

/// The IdP's answer to a dispatched call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Whether an answer's decision is already in its client's usage (counted in the same
/// write as its admission) or is to be counted as the answer is concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tally {
    AlreadyCounted,
    CountNow,
}

fn answer_now(response: Response) -> Plan {
    Plan { outcome: Outcome::Respond(response), call: None }
}

impl<'a> Gate<'a> {
    pub fn new(config: &'a Config, host: &'a dyn Host, key_prefix: &'a str) -> Gate<'a> {
        Gate {
            config,
            host,
            key_prefix,
            store: Store::new(host, host, key_prefix),
            local: None,
            pending_hits: None,
            global_rate: None,
        }
    }

    /// Serves repeated requests from this worker's index of tokens before the shared cache.
    pub fn with_local_index(mut self, index: &'a RefCell<LocalIndex>) -> Gate<'a> {
        self.local = Some(index);
        self
    }

    /// Counts hits of clients without limits in this worker first (flushed by
    /// [`Gate::flush_hits`]).
    pub fn with_pending_hits(mut self, pending: &'a RefCell<PendingHits>) -> Gate<'a> {
        self.pending_hits = Some(pending);
        self
    }

    /// The result of a shared-data write whose failure does not change the answer: counted
    /// in `tokengate_store_errors_total` when it failed.
    fn stored<T, E>(&self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(_) => {
                self.host.add(Metric::StoreErrors, 1);
                None
            }
        }
    }

    /// Prepares shared data once per worker, before it serves (from `on_configure`).
    pub fn prepare(&self) -> bool {
        self.store.prepare().is_ok()
    }

    fn tokens(&self) -> TokenTable<'_> {
        TokenTable::new(self.host, self.key_prefix, self.config.cache.max_entries)
    }

    fn negatives(&self) -> NegativeTable<'_> {
        NegativeTable::new(self.host, self.key_prefix, self.config.cache.max_entries)
    }

    fn flights(&self) -> FlightTable<'_> {
        FlightTable::new(&self.store, self.key_prefix, self.config.cache.max_entries)
    }

    /// The usage report for a `GET` on `usage_path`: JSON, or the page for a browser.
    pub fn usage(&self, accept: Option<&str>, accept_encoding: Option<&str>, path: &str) -> Response {
        let mut headers: Vec<Header> = vec![("cache-control".into(), "no-store".into())];
        let body = if crate::usage::wants_html(accept, accept_encoding, path) {
            headers.push(("content-type".into(), "text/html; charset=utf-8".into()));
            headers.push(("content-encoding".into(), "gzip".into()));
            crate::usage::PAGE_GZIP.to_vec()
        } else {
            headers.push(("content-type".into(), "application/json".into()));
            crate::usage::report(self.config, &self.store, self.key_prefix, self.host.now_ms())
        };
        headers.push(("vary".into(), "accept, accept-encoding".into()));
        headers.extend(crate::usage::SECURITY_HEADERS.iter().map(|(n, v)| ((*n).into(), (*v).into())));
        Response { status: 200, headers, body, cache: Decision::Bypass, decided: None }
    }

    /// The answer to a body over `max_body_bytes`, sent as soon as it is seen.
    pub fn too_large(&self) -> Response {
        self.host.add(Metric::Requests, 1);
        self.conclude(
            None,
            Decision::BadRequest,
            invalid_request(RequestError::too_large(self.config.max_body_bytes)),
            Tally::AlreadyCounted,
        )
    }

    /// The answer to a token request with trailers: refused, never passed on.
    pub fn with_trailers(&self) -> Response {
        self.host.add(Metric::Requests, 1);
        let error = RequestError::bad("token requests with trailers are not accepted");
        self.conclude(None, Decision::BadRequest, invalid_request(error), Tally::AlreadyCounted)
    }

    /// The answer to a request whose headers the host could not give: without its path,
    /// tokengate cannot tell a token request from another, so it is refused, never passed
    /// on uncounted.
    pub fn unreadable(&self) -> Response {
        self.host.add(Metric::Requests, 1);
        let description = "tokengate could not read this request; try again";
        let response =
            Response::oauth_error(503, ErrorCode::TemporarilyUnavailable, description, Decision::Bypass);
        self.conclude(None, Decision::Bypass, response, Tally::CountNow)
    }

    /// The answer to another method than `POST` on a token path: refused, never passed on.
    pub fn wrong_method(&self) -> Response {
        self.host.add(Metric::Requests, 1);
        let mut response = invalid_request(RequestError::bad("token requests use POST"));
        response.push_header("allow", "POST".to_owned());
        self.conclude(None, Decision::BadRequest, response, Tally::AlreadyCounted)
    }
}

// The request flow by concern: each file adds methods to `Gate`.
mod admission;
mod auth0_quota;
mod flow;
mod global_rate;
mod idp_call;
mod proof;
mod purge;
mod responses;
mod waiters;

use responses::*;

#[cfg(test)]
mod tests;
