//! The request flow as an explicit state machine.
//!
//! [`Gate::handle`] turns a complete token request into a [`Plan`]: an answer now (hit,
//! negative, refusal, 429), a forwarded call the stream dispatches itself
//! ([`Outcome::AwaitIdp`], answered by [`Gate::complete_forward`]), or a wait for the shared
//! outcome of the key's single IdP call ([`Outcome::Wait`]); the call itself, when this
//! request owns it, is a [`KeyedCall`] the worker's root context dispatches, so it survives
//! the client going away. [`Gate::finish_call`] stores a call's outcome where every worker
//! sees it; [`Gate::answer`] turns it into each waiter's response.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::backoff::{IdpRecord, IdpState, RateLimitHeaders, deadline_ms, seconds_left};
use crate::cache::{
    CacheEntry, LocalHit, LocalIndex, NegativeEntry, NegativeTable, RequestDigest, TokenTable, render_token,
};
use crate::clients::{Admission, ClientTable, LimitState, Standing};
use crate::config::{BackoffScope, Config, QuotaRule};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proof::Refused;

use crate::fingerprint::{Fingerprint, Identity};
use crate::flight::{Begin, CallOutcome, FlightState, FlightTable};
use crate::hit_tally::PendingHits;
use crate::host::{Host, IdpCall, Metric, StoreError};
use crate::limits::QuotaDecision;
use crate::rate_limit_service::Verdict;
use crate::request::{RequestError, RequestHead, RequestKind, TokenRequest};
use crate::response::{CacheStatus, Decision, ErrorCode, Header, Response};
use crate::seal::{NONCE_BYTES, SealKey};
use crate::store::Store;

/// IdP response headers relayed to the client with its status and body.
const RELAYED_HEADERS: [&str; 4] =
    ["retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];
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
    /// A refresh-ahead call to dispatch in the background (the answer is already given).
    pub background: Option<KeyedCall>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Respond(Response),
    /// A forwarded (uncacheable) call in flight from the stream itself.
    AwaitIdp(PendingCall),
    /// Waiting for the key's IdP call; when `Waiter::call` is set, this request owns it.
    Wait(Box<Waiter>),
}

/// A forwarded IdP call in flight for one stream, keyed by the host's call token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall {
    pub token: u32,
    /// Rate-limit headers for the answer.
    pub limit_headers: Vec<Header>,
    pub client_id: Option<String>,
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
    /// The flight generation this call owns; `None` when it runs uncoordinated.
    pub generation: Option<u64>,
    pub call: IdpCall,
    pub started_ms: u64,
    /// Promoted to a trusted client when the IdP issues it a token.
    pub client_id: Option<String>,
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
    /// Credentials not yet proven: the request is charged to its client's bucket only
    /// when a token comes (refused then if the bucket is empty).
    pub charge_on_token: bool,
    /// The call to dispatch, when this request owns it.
    pub call: Option<KeyedCall>,
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
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn respond(response: Response) -> Plan {
    Plan { outcome: Outcome::Respond(response), background: None }
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

    /// Adds this worker's pending hits to their clients' shared records and gives back
    /// what its leases did not spend. Hits that could not be written (a host error) stay
    /// pending for the next flush.
    pub fn flush_hits(&self) {
        let Some(pending) = self.pending_hits else {
            return;
        };
        let drained = pending.borrow_mut().drain();
        let now = self.host.now_ms();
        for (client_id, tally, lease) in drained {
            let leftover = lease.and_then(|l| l.leftover());
            if tally.hits == 0 && leftover.is_none() {
                continue;
            }
            let rule = self.config.rate_limit.as_ref().and_then(|l| l.for_client(&client_id));
            let settled = self.on_client(&client_id, |table, create| {
                table.settle(&client_id, create, &tally, leftover, rule, now)
            });
            if settled.is_none() {
                pending.borrow_mut().restore(client_id, tally);
            }
        }
    }

    /// A hit from this worker's index: no parsing, key derivation, shared token read or
    /// unsealing. `None` sends the request down the full path.
    fn local_hit(&self, digest: &RequestDigest, now: u64) -> Option<Plan> {
        let index = self.local?;
        let (client_id, token) = {
            let entries = index.borrow();
            let hit = entries.get(digest)?;
            let remaining = hit.expires_at_ms.saturating_sub(now);
            let lifetime = hit.expires_at_ms.saturating_sub(hit.issued_at_ms);
            let ratio = self.config.cache.refresh_ahead_ratio;
            let floor = remaining < self.config.cache.min_remaining_ttl_ms.max(1000);
            // Inside the refresh window the full path runs, so refresh-ahead can start.
            if floor || (ratio > 0.0 && (remaining as f64) < ratio * lifetime as f64) {
                None
            } else {
                Some((hit.client_id.clone(), render_token(&hit.body_without_expiry, remaining / 1000)))
            }
        }?;
        self.host.add(Metric::Requests, 1);
        let client_id = client_id.as_deref();
        let limits = self.admit(client_id, now, Some(Decision::Hit), true);
        if limits.rate.is_some_and(|(_, d)| !d.allowed) {
            return Some(respond(self.rate_limited(client_id, &limits, now)));
        }
        let response = with_headers(Response::json(200, token, CacheStatus::Hit), &limits.headers(now));
        Some(respond(self.conclude(client_id, Decision::Hit, response, true)))
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
        Response { status: 200, headers, body, decision: None, client_id: None }
    }

    /// The answer to a body over `max_body_bytes`, sent as soon as it is seen.
    pub fn too_large(&self) -> Response {
        self.host.add(Metric::Requests, 1);
        self.conclude(
            None,
            Decision::BadRequest,
            refused(RequestError::too_large(self.config.max_body_bytes)),
            true,
        )
    }

    /// The answer to another method than `POST` on a token path: refused, never passed on.
    pub fn wrong_method(&self) -> Response {
        self.host.add(Metric::Requests, 1);
        let mut response = refused(RequestError::bad("token requests use POST"));
        response.push_header("allow", "POST".to_owned());
        self.conclude(None, Decision::BadRequest, response, true)
    }

    /// Handles a complete token request (`body` is all of it).
    pub fn handle(&self, head: &RequestHead, body: &[u8]) -> Plan {
        if body.len() > self.config.max_body_bytes {
            return respond(self.too_large());
        }
        // A DPoP request is never answered from a cache, this worker's index included.
        let digest =
            self.local.filter(|_| head.dpop.is_none()).map(|index| index.borrow().digest(head, body));
        let now = self.host.now_ms();
        if let Some(plan) = digest.and_then(|d| self.local_hit(&d, now)) {
            return plan;
        }
        self.host.add(Metric::Requests, 1);
        let request = match TokenRequest::parse(head, body) {
            Ok(request) => request,
            Err(e) => return respond(self.bad_request(e, now)),
        };
        let client_id = request.client_id.as_deref();
        if request.kind() == RequestKind::Forward {
            // Forwarded credentials are never proven beforehand (a refresh token or an
            // assertion is new each time): the bucket is read now and charged for a token.
            let limits = self.admit(client_id, now, None, false);
            let limit_headers = limits.headers(now);
            if limits.rate.is_some_and(|(_, d)| !d.allowed) {
                return respond(self.rate_limited(client_id, &limits, now));
            }
            let idp = self.idp_record();
            if let Some(until) = self.backoff_deadline(limits.backoff_until_ms, &idp, now) {
                return respond(self.backoff_refusal(client_id, until, &limit_headers, &idp, now));
            }
            let quota_spent_ms = match self.pay_for_call(client_id, &limits, false, now) {
                Ok(spent) => spent.map(|_| now),
                Err(refused) => {
                    let (refusal, decision) = refused.answer(now);
                    let refusal = with_headers(refusal, &limit_headers);
                    return respond(self.conclude(client_id, decision, refusal, false));
                }
            };
            let call = self.idp_call(head, body, None);
            self.host.add(Metric::IdpCalls, 1);
            return match self.host.dispatch(&call) {
                Ok(token) => Plan {
                    outcome: Outcome::AwaitIdp(PendingCall {
                        token,
                        limit_headers,
                        client_id: client_id.map(str::to_owned),
                        quota_spent_ms,
                        charge_on_token: self.global_rate.is_none(),
                    }),
                    background: None,
                },
                Err(_) => {
                    self.host.add(Metric::IdpErrors, 1);
                    if let (Some(id), Some(spent)) = (client_id, quota_spent_ms) {
                        self.give_back_quota(id, spent, now);
                    }
                    let r = with_headers(unavailable(CacheStatus::Bypass), &limit_headers);
                    respond(self.conclude(client_id, Decision::Bypass, r, true))
                }
            };
        }
        let identity = Identity::of(&request, &self.config.upstream);
        let (fp, key) = (identity.fingerprint, identity.seal_key);
        // A store that cannot be read is a miss, not an error: the IdP still answers.
        let cached = self.tokens().get(&fp).ok().flatten();
        let servable = cached.as_ref().filter(|e| e.servable(now, self.config.cache.min_remaining_ttl_ms));
        let hit = servable.and_then(|e| Some((e, e.open(&key)?)));
        let negative = match hit {
            Some(_) => None,
            None => self.negatives().get(&fp).ok().flatten().filter(|n| n.live(now)),
        };
        let expected = match (&hit, &negative) {
            (Some(_), _) => Some(Decision::Hit),
            (None, Some(_)) => Some(Decision::Negative),
            (None, None) => None,
        };
        // Proven credentials (a hit, or a key the IdP issued a token for in the window) are
        // charged now; a remembered refusal never is, and unproven ones when a token comes.
        let proven = hit.is_some() || (negative.is_none() && self.proven(&fp, now));
        // Hits and remembered refusals are counted with the admission: one write.
        let limits = self.admit(client_id, now, expected, proven);
        let limit_headers = limits.headers(now);
        if limits.rate.is_some_and(|(_, d)| !d.allowed) {
            return respond(self.rate_limited(client_id, &limits, now));
        }
        if let Some((entry, plain)) = hit {
            let token = render_token(&plain, entry.remaining_ms(now) / 1000);
            if let (Some(index), Some(digest)) = (self.local, digest) {
                let copy = LocalHit {
                    client_id: client_id.map(str::to_owned),
                    body_without_expiry: plain,
                    issued_at_ms: entry.issued_at_ms,
                    expires_at_ms: entry.expires_at_ms,
                };
                index.borrow_mut().insert(digest, copy, now);
            }
            let response = with_headers(Response::json(200, token, CacheStatus::Hit), &limit_headers);
            let background = if self.refresh_due(entry, now) {
                self.refresh(&identity, head, body, client_id, now)
            } else {
                None
            };
            let response = self.conclude(client_id, Decision::Hit, response, true);
            return Plan { outcome: Outcome::Respond(response), background };
        }
        if let Some(negative) = negative {
            let r = Response::json(negative.status, negative.body, CacheStatus::Negative);
            return respond(self.conclude(
                client_id,
                Decision::Negative,
                with_headers(r, &limit_headers),
                true,
            ));
        }
        // The IdP's back-pressure: no call while it asked for a pause, and none for a key
        // that still has a valid token while its last calls are kept in reserve.
        let idp = self.idp_record();
        let backoff = self.backoff_deadline(limits.backoff_until_ms, &idp, now);
        let reserve = backoff.is_none() && idp.in_reserve(self.config.upstream.reserve, now);
        if backoff.is_some() || reserve {
            if let Some(token) = stale_token(cached.as_ref(), &key, now) {
                if reserve {
                    self.host.add(Metric::IdpReserveHeld, 1);
                }
                let r = with_headers(Response::json(200, token, CacheStatus::Stale), &limit_headers);
                return respond(self.conclude(client_id, Decision::Stale, r, false));
            }
            if let Some(until) = backoff {
                return respond(self.backoff_refusal(client_id, until, &limit_headers, &idp, now));
            }
        }
        let deadline_ms = now.saturating_add(self.config.upstream.timeout_ms + WAIT_GRACE_MS);
        let begin = self.flights().begin(&fp, now, deadline_ms).unwrap_or(Begin::Uncoordinated);
        let mut waiter = Waiter {
            fingerprint: fp,
            seal_key: key,
            generation: None,
            deadline_ms,
            owner: false,
            limit_headers,
            client_id: client_id.map(str::to_owned),
            charge_on_token: !proven && self.global_rate.is_none(),
            call: None,
        };
        let generation = match begin {
            Begin::Joined { generation, deadline_ms } => {
                waiter.generation = Some(generation);
                waiter.deadline_ms = deadline_ms.saturating_add(WAIT_GRACE_MS);
                return Plan { outcome: Outcome::Wait(Box::new(waiter)), background: None };
            }
            Begin::Owner { generation } => {
                waiter.generation = Some(generation);
                // Another worker's call may have stored the key's token between this
                // request's read of the cache and its taking the flight: served, not
                // fetched again.
                let floor = self.config.cache.min_remaining_ttl_ms;
                if self.tokens().get(&fp).ok().flatten().is_some_and(|e| e.servable(now, floor)) {
                    self.release_flight(&fp, generation);
                    if let Some(response) = self.answer(&waiter, None) {
                        return respond(response);
                    }
                }
                Some(generation)
            }
            Begin::Uncoordinated => None,
        };
        let mut headers = std::mem::take(&mut waiter.limit_headers);
        let spent = match self.pay_for_call(client_id, &limits, proven, now) {
            Ok(spent) => spent,
            // A spent quota is answered below, where a token with lifetime left may still do.
            Err(Refused::Quota(rule, decision)) => Some((rule, decision)),
            Err(Refused::Unproven(refusal)) => {
                let refusal = with_headers(refusal, &headers);
                self.refuse_flight(&identity, generation, &refusal);
                return respond(self.conclude(client_id, Decision::RateLimited, refusal, false));
            }
        };
        if let Some((rule, decision)) = spent {
            // The quota header shows what is left after this call.
            headers.retain(|(n, _)| n != "auth0-client-quota-limit");
            headers.extend(
                LimitState { rate: None, quota: Some((rule, decision)), backoff_until_ms: None }.headers(now),
            );
            if !decision.allowed {
                let refusal = proof::quota_refusal(&rule, &decision, now);
                self.refuse_flight(&identity, generation, &refusal);
                let (response, decided) = match stale_token(cached.as_ref(), &key, now) {
                    Some(token) => (Response::json(200, token, CacheStatus::Stale), Decision::Stale),
                    None => (refusal, Decision::QuotaRejected),
                };
                return respond(self.conclude(client_id, decided, with_headers(response, &headers), false));
            }
        }
        waiter.call = Some(KeyedCall {
            fingerprint: fp,
            seal_key: key,
            generation,
            call: self.idp_call(head, body, Some(&fp)),
            started_ms: now,
            client_id: client_id.map(str::to_owned),
            quota_spent_ms: spent.map(|_| now),
        });
        waiter.owner = true;
        waiter.limit_headers = headers;
        Plan { outcome: Outcome::Wait(Box::new(waiter)), background: None }
    }

    /// Finishes a response: the decision and client for the access log, the stats, and the
    /// client's usage (unless `counted` already, with its admission).
    fn conclude(
        &self,
        client_id: Option<&str>,
        decision: Decision,
        response: Response,
        counted: bool,
    ) -> Response {
        self.host.add(metric_of(decision), 1);
        if !counted && let Some(id) = client_id {
            let now = self.host.now_ms();
            self.on_client(id, |table, create| table.tally(id, now, create, decision));
        }
        response.decided(decision, client_id)
    }

    fn idp_state(&self) -> IdpState<'_> {
        IdpState::new(&self.store, self.key_prefix)
    }

    /// What the IdP last said about its limits; a store that cannot be read says nothing.
    fn idp_record(&self) -> IdpRecord {
        self.idp_state().read().unwrap_or_default()
    }

    fn client_record(&self, client_id: &str) -> Option<crate::clients::ClientRecord> {
        [Standing::Trusted, Standing::Guest]
            .into_iter()
            .find_map(|standing| self.clients(standing).get(client_id).ok().flatten())
    }

    /// The back-off in force for a request: the client's own (`client_until`, from its
    /// record) and the IdP-wide one, whichever ends later.
    fn backoff_deadline(&self, client_until: Option<u64>, idp: &IdpRecord, now: u64) -> Option<u64> {
        let client = client_until.filter(|until| *until > now);
        client.into_iter().chain(idp.backing_off(now)).max()
    }

    /// Reads the IdP's rate-limit headers off an answer and, on a `429`, records the
    /// back-off (for the client, or for the whole IdP by configuration or when the request
    /// named no client). Returns the deadline of a back-off it recorded.
    fn observe_idp(&self, reply: &IdpReply, client_id: Option<&str>, now: u64) -> Option<u64> {
        let headers = RateLimitHeaders::parse(reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let until =
            (reply.status == 429).then(|| deadline_ms(&headers, now, self.config.upstream.max_backoff_ms));
        let per_client = match (self.config.upstream.backoff_scope, client_id) {
            (BackoffScope::Client, Some(id)) => Some(id),
            _ => None,
        };
        let upstream_until = until.filter(|_| per_client.is_none());
        let _ = self.idp_state().observe(&headers, now, upstream_until);
        if let (Some(until), Some(id)) = (until, per_client) {
            self.on_client(id, |table, create| table.back_off(id, now, create, until));
        }
        if until.is_some() {
            self.host.add(Metric::IdpBackoffStarted, 1);
        }
        until
    }

    /// The local `429` while the IdP asked for a back-off, with the client's own rate-limit
    /// headers, or else the IdP's last ones.
    fn backoff_refusal(
        &self,
        client_id: Option<&str>,
        until: u64,
        limit_headers: &[Header],
        idp: &IdpRecord,
        now: u64,
    ) -> Response {
        let mut r = Response::oauth_error(
            429,
            ErrorCode::TooManyRequests,
            "the identity provider asked for a pause in token requests; retry after the time given",
            CacheStatus::Bypass,
        );
        r.push_header("retry-after", seconds_left(until, now).to_string());
        if !limit_headers.iter().any(|(n, _)| n == "x-ratelimit-limit") {
            let idp_headers = [
                ("x-ratelimit-limit", idp.limit),
                ("x-ratelimit-remaining", idp.remaining),
                ("x-ratelimit-reset", idp.reset_s),
            ];
            for (name, value) in idp_headers {
                if let Some(value) = value {
                    r.push_header(name, value.to_string());
                }
            }
        }
        self.conclude(client_id, Decision::Backoff, with_headers(r, limit_headers), false)
    }

    /// The 429 for a client over its rate limit (counted with its admission).
    fn rate_limited(&self, client_id: Option<&str>, limits: &LimitState, now: u64) -> Response {
        self.rate_limit_refusal(client_id, limits, now, true)
    }

    /// The 429 for a client over its rate limit; `counted`: already in its usage.
    fn rate_limit_refusal(
        &self,
        client_id: Option<&str>,
        limits: &LimitState,
        now: u64,
        counted: bool,
    ) -> Response {
        let mut r = Response::oauth_error(
            429,
            ErrorCode::TooManyRequests,
            "rate limit exceeded for this client",
            CacheStatus::Bypass,
        );
        r.push_header("retry-after", limits.rate_retry_after(now).to_string());
        let r = with_headers(r, &limits.headers(now));
        self.conclude(client_id, Decision::RateLimited, r, counted)
    }

    fn clients(&self, standing: Standing) -> ClientTable<'_> {
        ClientTable::new(&self.store, self.key_prefix, standing, self.config.cache.max_entries)
    }

    /// A client named in the configuration is trusted from the start.
    fn configured(&self, client_id: &str) -> bool {
        self.config.rate_limit.as_ref().is_some_and(|l| l.clients.contains_key(client_id))
            || self.config.quota.as_ref().is_some_and(|l| l.clients.contains_key(client_id))
    }

    /// Runs `op` on the table holding the client: its trusted record if it has one (or is
    /// configured), else its guest record (created when missing). `None` when the store
    /// failed: limits then fail open for this request, rather than failing every client
    /// because of one host error.
    fn on_client<T>(
        &self,
        client_id: &str,
        op: impl Fn(&ClientTable<'_>, bool) -> Result<Option<T>, StoreError>,
    ) -> Option<T> {
        match op(&self.clients(Standing::Trusted), self.configured(client_id)) {
            Ok(Some(out)) => Some(out),
            Ok(None) => op(&self.clients(Standing::Guest), true).ok().flatten(),
            Err(_) => None,
        }
    }

    /// Counts the request for its client (and the decision already known, if any), taking
    /// from its rate-limit bucket.
    fn admit(
        &self,
        client_id: Option<&str>,
        now: u64,
        expected: Option<Decision>,
        charge: bool,
    ) -> LimitState {
        let limits = self.admit_locally(client_id, now, Admission { charge, count_request: true, expected });
        match self.global_rate {
            // The service decided the rate limit; the local bucket is the fallback only.
            Some(verdict) => LimitState { rate: verdict.rate, ..limits },
            None => limits,
        }
    }

    /// [`Gate::admit`] on the client's shared record; its bucket is left alone when the
    /// rate-limit service decided.
    fn admit_locally(&self, client_id: Option<&str>, now: u64, admission: Admission) -> LimitState {
        let Some(id) = client_id else {
            return LimitState::default();
        };
        let local_rate = self.config.rate_limit.as_ref().filter(|_| self.global_rate.is_none());
        let rate = local_rate.and_then(|l| l.for_client(id));
        let quota = self.config.quota.as_ref().and_then(|l| l.for_client(id));
        let arriving_hit =
            admission.charge && admission.count_request && admission.expected == Some(Decision::Hit);
        let pending = self.pending_hits.filter(|_| arriving_hit);
        if let Some(pending) = pending {
            let mut pending = pending.borrow_mut();
            // A hit under no limit needs no shared counter now: it is counted on the next flush.
            if rate.is_none() && quota.is_none() && pending.record(id, now) {
                return LimitState::default();
            }
            // A hit under limits spends this worker's lease while it lasts.
            if let Some(limits) = pending.spend_lease(id, now) {
                return limits;
            }
        }
        // A new lease gives back the previous one's leftover in the same write.
        let lease = pending.filter(|p| p.borrow().has_room(id)).map(|p| p.borrow_mut().end_lease(id));
        let admitted = self.on_client(id, |table, create| {
            table.admit_leasing(id, now, create, (rate, quota), admission, lease)
        });
        let Some((limits, lease)) = admitted else {
            return LimitState::default();
        };
        if let (Some(pending), Some(lease)) = (pending, lease) {
            pending.borrow_mut().hold(id, lease);
        }
        limits
    }

    /// Spends one unit of the client's quota for an IdP call: the rule and what is left,
    /// or `None` when no quota applies.
    fn spend_quota(&self, client_id: Option<&str>, now: u64) -> Option<(QuotaRule, QuotaDecision)> {
        let id = client_id?;
        let rule = *self.config.quota.as_ref().and_then(|l| l.for_client(id))?;
        let decision = self.on_client(id, |table, create| table.spend_quota(id, now, create, &rule))?;
        Some((rule, decision))
    }

    /// Ends a flight taken for a call that turned out not to be needed (the token is in
    /// the cache): whoever joined it reads the cache.
    fn release_flight(&self, fp: &Fingerprint, generation: u64) {
        let outcome = CallOutcome {
            status: 200,
            cached: true,
            unreachable: false,
            headers: Vec::new(),
            body: String::new(),
        };
        let _ = self.flights().finish(fp, generation, outcome);
    }

    /// Records a refusal given instead of the key's call as the call's outcome, so the
    /// requests waiting for it get the same answer.
    fn refuse_flight(&self, identity: &Identity, generation: Option<u64>, refusal: &Response) {
        let Some(generation) = generation else {
            return;
        };
        let outcome = CallOutcome {
            status: refusal.status,
            cached: false,
            unreachable: false,
            headers: refusal
                .headers
                .iter()
                .filter(|(n, _)| n == "content-type" || n == "retry-after")
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: self.seal_body(identity, &refusal.body),
        };
        let _ = self.flights().finish(&identity.fingerprint, generation, outcome);
    }

    /// A client the IdP just issued a token: counted, and a guest becomes a trusted
    /// client, limits and usage and all, out of reach of guest floods.
    fn issued(&self, client_id: &str, now: u64) {
        let trusted = self.clients(Standing::Trusted);
        if !matches!(trusted.get(client_id), Ok(Some(_))) {
            let guests = self.clients(Standing::Guest);
            if let Ok(Some(record)) = guests.get(client_id)
                && trusted.adopt(record, now).is_ok()
            {
                let _ = guests.remove(client_id);
            }
        }
        let window_ms = self.issuance_window_ms(client_id);
        self.on_client(client_id, |table, create| table.issued(client_id, now, create, window_ms));
    }

    /// Issued tokens are counted per quota window, or per day without a quota.
    fn issuance_window_ms(&self, client_id: &str) -> u64 {
        self.config.quota.as_ref().and_then(|l| l.for_client(client_id)).map_or(DAY_MS, |q| q.window_ms)
    }

    fn refresh_due(&self, entry: &CacheEntry, now: u64) -> bool {
        let ratio = self.config.cache.refresh_ahead_ratio;
        ratio > 0.0 && (entry.remaining_ms(now) as f64) < ratio * entry.lifetime_ms() as f64
    }

    /// One background refresh per key across workers: only the flight's new owner calls.
    fn refresh(
        &self,
        identity: &Identity,
        head: &RequestHead,
        body: &[u8],
        client_id: Option<&str>,
        now: u64,
    ) -> Option<KeyedCall> {
        let fp = identity.fingerprint;
        let idp = self.idp_record();
        let client_backoff = client_id.and_then(|id| self.client_record(id)).map(|r| r.backoff_until_ms);
        if self.backoff_deadline(client_backoff, &idp, now).is_some() {
            return None;
        }
        if idp.in_reserve(self.config.upstream.reserve, now) {
            self.host.add(Metric::IdpReserveHeld, 1);
            return None;
        }
        let deadline_ms = now.saturating_add(self.config.upstream.timeout_ms + WAIT_GRACE_MS);
        let Ok(Begin::Owner { generation }) = self.flights().begin(&fp, now, deadline_ms) else {
            return None;
        };
        // A refresh another worker finished after this hit read the cache: nothing to do.
        let current = self.tokens().get(&fp).ok().flatten();
        if current.is_some_and(|e| {
            e.servable(now, self.config.cache.min_remaining_ttl_ms) && !self.refresh_due(&e, now)
        }) {
            self.release_flight(&fp, generation);
            return None;
        }
        let spent = self.spend_quota(client_id, now);
        if let Some((rule, decision)) = spent
            && !decision.allowed
        {
            self.refuse_flight(identity, Some(generation), &proof::quota_refusal(&rule, &decision, now));
            return None;
        }
        Some(KeyedCall {
            fingerprint: fp,
            seal_key: identity.seal_key,
            generation: Some(generation),
            call: self.idp_call(head, body, Some(&fp)),
            started_ms: now,
            client_id: client_id.map(str::to_owned),
            quota_spent_ms: spent.map(|_| now),
        })
    }

    /// A fresh random nonce; `None` when the host has no randomness (nothing is sealed then).
    fn nonce(&self) -> Option<[u8; NONCE_BYTES]> {
        let mut nonce = [0u8; NONCE_BYTES];
        self.host.fill_random(&mut nonce).then_some(nonce)
    }

    /// A relayed body as stored in a flight record: sealed like tokens (a non-cacheable
    /// `200` still carries one), so shared data never holds it in the clear.
    fn seal_body(&self, identity: &Identity, body: &[u8]) -> String {
        self.nonce()
            .map(|nonce| BASE64.encode(identity.seal_key.seal(nonce, &identity.fingerprint.0, body)))
            .unwrap_or_default()
    }

    /// The original body, content type and Basic header, sent to `upstream.path`.
    fn idp_call(&self, head: &RequestHead, body: &[u8], cache_key: Option<&Fingerprint>) -> IdpCall {
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
        if let Some(proof) = &head.dpop {
            headers.push(("dpop".to_owned(), proof.clone()));
        }
        if let (Some(name), Some(fp)) = (&up.key_header, cache_key) {
            headers.push((name.clone(), fp.to_hex()));
        }
        IdpCall { cluster: up.cluster.clone(), headers, body: body.to_vec(), timeout_ms: up.timeout_ms }
    }

    /// Stores what a keyed call ended with — a token in the cache, a refusal in the
    /// negative cache, the outcome in the flight record — and returns the outcome.
    /// `reply` is `None` when the call failed (refused, reset, timed out).
    pub fn finish_call(&self, call: &KeyedCall, reply: Option<&IdpReply>) -> CallOutcome {
        let now = self.host.now_ms();
        self.host.add(Metric::IdpCalls, 1);
        let unreachable = || {
            self.host.add(Metric::IdpErrors, 1);
            if let (Some(id), Some(spent)) = (call.client_id.as_deref(), call.quota_spent_ms) {
                self.give_back_quota(id, spent, now);
            }
            unreachable_outcome()
        };
        let outcome = match reply {
            // Envoy answers for an IdP it cannot reach with a plain-text 5xx ("no healthy
            // upstream", "upstream connect error"): that is an unreachable IdP, not its answer.
            None => unreachable(),
            Some(r) if r.status >= 500 && !is_json(&r.body) => unreachable(),
            Some(r) => {
                let backoff = self.observe_idp(r, call.client_id.as_deref(), now);
                let identity = Identity { fingerprint: call.fingerprint, seal_key: call.seal_key };
                let entry = self.nonce().and_then(|nonce| {
                    CacheEntry::from_token_response(&identity, r.status, &r.body, call.started_ms, nonce)
                });
                // A token that could not be stored is still relayed to the waiters.
                let put = entry.map(|e| self.tokens().put(&e, now));
                if let Some(Ok(true)) = put {
                    self.host.add(Metric::CacheEntries, 1);
                }
                let cached = matches!(put, Some(Ok(_)));
                if r.status >= 500 || r.status == 429 {
                    self.host.add(Metric::IdpErrors, 1);
                }
                let issued = r.status == 200 && has_access_token(&r.body);
                if issued {
                    self.prove(&call.fingerprint, call.client_id.as_deref(), now);
                }
                match (issued, call.client_id.as_deref(), call.quota_spent_ms) {
                    (true, Some(id), _) => self.issued(id, now),
                    (false, Some(id), Some(spent)) => self.give_back_quota(id, spent, now),
                    _ => {}
                }
                if let Some(negative) = NegativeEntry::from_refusal(
                    call.fingerprint,
                    r.status,
                    &r.body,
                    now,
                    self.config.cache.negative_ttl_ms,
                ) {
                    let _ = self.negatives().put(&negative, now);
                }
                let relay = !cached && r.body.len() <= MAX_SHARED_BODY_BYTES;
                CallOutcome {
                    status: r.status,
                    cached,
                    unreachable: false,
                    headers: with_retry_after(relayed_headers(r), backoff, now),
                    body: if relay { self.seal_body(&identity, &r.body) } else { String::new() },
                }
            }
        };
        if let Some(generation) = call.generation {
            let _ = self.flights().finish(&call.fingerprint, generation, outcome.clone());
        }
        outcome
    }

    /// The response for a waiter, or `None` while its call is still in flight. `known` is
    /// the outcome when this worker made the call; otherwise it is read from shared data.
    pub fn answer(&self, waiter: &Waiter, known: Option<&CallOutcome>) -> Option<Response> {
        let now = self.host.now_ms();
        let label = if waiter.owner { CacheStatus::Miss } else { CacheStatus::Coalesced };
        let cached = self.tokens().get(&waiter.fingerprint).ok().flatten();
        let servable = cached.as_ref().filter(|e| e.servable(now, self.config.cache.min_remaining_ttl_ms));
        if let Some(token) = servable.and_then(|e| e.render(&waiter.seal_key, now)) {
            return Some(self.answer_token(waiter, Response::json(200, token, label), now));
        }
        let outcome = match known {
            Some(outcome) => Some(outcome.clone()),
            None => self.shared_outcome(waiter, now),
        };
        let stale = stale_token(cached.as_ref(), &waiter.seal_key, now);
        let response = match outcome {
            // A token just issued whose whole lifetime is below `min_remaining_ttl` is still
            // this call's answer, not a stale one.
            Some(outcome) if outcome.cached && stale.is_some() => {
                Response::json(200, stale.unwrap_or_default(), label)
            }
            Some(outcome) => {
                let body = open_body(&waiter.seal_key, &waiter.fingerprint, &outcome.body);
                outcome_response(&outcome, body, stale, label)
            }
            None if now >= waiter.deadline_ms => failure_response(None, Vec::new(), stale, label),
            None => return None,
        };
        if response.status == 200 {
            return Some(self.answer_token(waiter, response, now));
        }
        let decision = Decision::of(response.cache_status());
        Some(self.conclude(
            waiter.client_id.as_deref(),
            decision,
            with_headers(response, &waiter.limit_headers),
            false,
        ))
    }

    /// A waiter's answer with a token: a request with unproven credentials is charged to
    /// its client's bucket now, and refused if the bucket is empty.
    fn answer_token(&self, waiter: &Waiter, response: Response, now: u64) -> Response {
        let decision = Decision::of(response.cache_status());
        let client_id = waiter.client_id.as_deref();
        match client_id.filter(|_| waiter.charge_on_token) {
            Some(id) => {
                let limits = self.charge(id, now, decision);
                if limits.rate.is_some_and(|(_, d)| !d.allowed) {
                    return self.rate_limit_refusal(client_id, &limits, now, true);
                }
                self.conclude(client_id, decision, with_headers(response, &limits.headers(now)), true)
            }
            None => self.conclude(client_id, decision, with_headers(response, &waiter.limit_headers), false),
        }
    }

    /// The outcome of the waiter's call from the flight record. A record that moved on to
    /// another call (or key) means the outcome is lost: answered as unreachable.
    fn shared_outcome(&self, waiter: &Waiter, now: u64) -> Option<CallOutcome> {
        let generation = waiter.generation?;
        match self.flights().read(&waiter.fingerprint) {
            Ok(Some(record)) if record.generation == generation => match record.state {
                FlightState::Done(outcome) => Some(outcome),
                FlightState::InFlight { .. } => None,
            },
            Ok(_) if now < waiter.deadline_ms => Some(unreachable_outcome()),
            _ => None,
        }
    }

    /// The response for a forwarded call (never cached); `reply` is `None` when it failed.
    pub fn complete_forward(&self, pending: &PendingCall, reply: Option<&IdpReply>) -> Response {
        let now = self.host.now_ms();
        let response = match reply {
            Some(r) if r.status < 500 || is_json(&r.body) => {
                let backoff = self.observe_idp(r, pending.client_id.as_deref(), now);
                let headers = with_retry_after(relayed_headers(r), backoff, now);
                relay(r.status, &headers, r.body.clone(), CacheStatus::Bypass)
            }
            _ => {
                self.host.add(Metric::IdpErrors, 1);
                unavailable(CacheStatus::Bypass)
            }
        };
        let client_id = pending.client_id.as_deref();
        // Tokens from forwarded grants are issued (and billed) too: they keep their quota
        // unit and are charged to the bucket; a call without a token gives its unit back.
        let issued = response.status == 200 && has_access_token(&response.body);
        let Some(id) = client_id else {
            return self.conclude(None, Decision::Bypass, response, true);
        };
        if !issued {
            if let Some(spent) = pending.quota_spent_ms {
                self.give_back_quota(id, spent, now);
            }
            return self.conclude(
                client_id,
                Decision::Bypass,
                with_headers(response, &pending.limit_headers),
                true,
            );
        }
        self.issued(id, now);
        let headers = match pending.charge_on_token {
            // The token is issued and billed: it is delivered even from an empty bucket.
            true => self.charge(id, now, Decision::Bypass).headers(now),
            false => pending.limit_headers.clone(),
        };
        self.conclude(client_id, Decision::Bypass, with_headers(response, &headers), true)
    }
}

/// The answer an outcome gives a waiter: the token when one was stored; for a failed call
/// (unreachable, 5xx, 429) a token with any lifetime left (`stale`), else the failure;
/// otherwise the IdP's answer as it came.
fn outcome_response(
    outcome: &CallOutcome,
    body: Vec<u8>,
    stale: Option<Vec<u8>>,
    label: CacheStatus,
) -> Response {
    let failed = outcome.unreachable || outcome.status >= 500 || outcome.status == 429 || outcome.cached;
    if failed {
        return failure_response(Some(outcome), body, stale, label);
    }
    relay(outcome.status, &outcome.headers, body, label)
}

/// `stale` is a cached token with lifetime left, already opened.
fn failure_response(
    outcome: Option<&CallOutcome>,
    body: Vec<u8>,
    stale: Option<Vec<u8>>,
    label: CacheStatus,
) -> Response {
    if let Some(token) = stale {
        return Response::json(200, token, CacheStatus::Stale);
    }
    match outcome {
        Some(o) if !o.unreachable && !o.cached => relay(o.status, &o.headers, body, label),
        _ => unavailable(label),
    }
}

/// A cached token with at least a second left, even below `min_remaining_ttl`.
fn stale_token(cached: Option<&CacheEntry>, key: &SealKey, now: u64) -> Option<Vec<u8>> {
    cached.filter(|e| e.remaining_ms(now) >= 1000)?.render(key, now)
}

/// A relayed body from a flight record, opened with the waiter's key.
fn open_body(key: &SealKey, fp: &Fingerprint, stored: &str) -> Vec<u8> {
    BASE64.decode(stored).ok().and_then(|sealed| key.open(&fp.0, &sealed)).unwrap_or_default()
}

fn relay(status: u16, headers: &[(String, String)], body: Vec<u8>, label: CacheStatus) -> Response {
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map_or(Cow::Borrowed("application/json"), |(_, v)| Cow::Owned(v.clone()));
    let mut response = Response::with_content_type(status, content_type, body, label);
    for name in RELAYED_HEADERS {
        if let Some((_, value)) = headers.iter().find(|(n, _)| n == name) {
            response.push_header(name, value.clone());
        }
    }
    response
}

fn relayed_headers(reply: &IdpReply) -> Vec<(String, String)> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n == "content-type" || RELAYED_HEADERS.contains(&n.as_str()))
        .cloned()
        .collect()
}

/// The IdP's headers with `retry-after` set to the back-off it started, if any.
fn with_retry_after(
    mut headers: Vec<(String, String)>,
    backoff: Option<u64>,
    now: u64,
) -> Vec<(String, String)> {
    if let Some(until) = backoff {
        headers.retain(|(n, _)| n != "retry-after");
        headers.push(("retry-after".to_owned(), seconds_left(until, now).to_string()));
    }
    headers
}

fn unreachable_outcome() -> CallOutcome {
    CallOutcome { status: 503, cached: false, unreachable: true, headers: Vec::new(), body: String::new() }
}

fn has_access_token(body: &[u8]) -> bool {
    crate::cache::members(body).is_some_and(|m| crate::cache::string_member(&m, "access_token").is_some())
}

fn metric_of(decision: Decision) -> Metric {
    match decision {
        Decision::Hit => Metric::Hits,
        Decision::Miss => Metric::Misses,
        Decision::Coalesced => Metric::Coalesced,
        Decision::Stale => Metric::Stale,
        Decision::Negative => Metric::Negative,
        Decision::Bypass => Metric::Bypass,
        Decision::RateLimited => Metric::RateLimited,
        Decision::QuotaRejected => Metric::QuotaRejected,
        Decision::Backoff => Metric::IdpBackoffRejected,
        Decision::BadRequest => Metric::BadRequests,
    }
}

fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

fn with_headers(mut response: Response, headers: &[Header]) -> Response {
    response.headers.extend(headers.iter().cloned());
    response
}

fn refused(e: RequestError) -> Response {
    Response::oauth_error(e.status, ErrorCode::InvalidRequest, &e.description, CacheStatus::Bypass)
}

fn unavailable(label: CacheStatus) -> Response {
    Response::oauth_error(
        503,
        ErrorCode::TemporarilyUnavailable,
        "the identity provider could not be reached; try again later",
        label,
    )
}

mod global_rate;
mod proof;

#[cfg(test)]
mod tests;
