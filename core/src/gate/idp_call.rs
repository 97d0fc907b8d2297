//! The IdP call's lifecycle: building it, refreshing ahead of expiry, storing its outcome
//! where every worker sees it (`finish_call`), forwarded calls (`complete_forward`), and
//! the IdP's back-pressure.

use super::*;
use crate::cache::purge::client_tag;

impl Gate<'_> {
    pub(super) fn idp_state(&self) -> IdpState<'_> {
        IdpState::new(&self.store, self.key_prefix)
    }

    /// What the IdP last said about its limits; a store that cannot be read says nothing.
    pub(super) fn idp_record(&self) -> IdpRecord {
        self.idp_state().read().unwrap_or_default()
    }

    /// The back-off in force for a request: the client's own (`client_until`, from its
    /// record) and the IdP-wide one, whichever ends later.
    pub(super) fn backoff_deadline(
        &self,
        client_until: Option<u64>,
        idp: &IdpRecord,
        now: u64,
    ) -> Option<u64> {
        let client = client_until.filter(|until| *until > now);
        client.into_iter().chain(idp.backing_off(now)).max()
    }

    /// Reads the IdP's rate-limit headers off an answer and, on a `429`, records the
    /// back-off (for the client, or for the whole IdP by configuration or when the request
    /// named no client). Returns the deadline of a back-off it recorded.
    pub(super) fn observe_idp(&self, reply: &HttpReply, client_id: Option<&str>, now: u64) -> Option<u64> {
        let headers = RateLimitHeaders::parse(reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let until =
            (reply.status == 429).then(|| deadline_ms(&headers, now, self.config.upstream.max_backoff_ms));
        let per_client = match (self.config.upstream.backoff_scope, client_id) {
            (BackoffScope::Client, Some(id)) => Some(id),
            _ => None,
        };
        let upstream_until = until.filter(|_| per_client.is_none());
        self.stored(self.idp_state().observe(&headers, now, upstream_until));
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
    pub(super) fn backoff_refusal(
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
            Decision::Bypass,
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
        self.conclude(client_id, Decision::Backoff, with_headers(r, limit_headers), Tally::CountNow)
    }

    /// Ends a flight taken for a call that turned out not to be needed (the token is in
    /// the cache): whoever joined it reads the cache.
    pub(super) fn release_flight(&self, fp: &Fingerprint, generation: u64) {
        let outcome = CallOutcome {
            status: 200,
            cached: true,
            unreachable: false,
            headers: Vec::new(),
            body: String::new(),
        };
        self.stored(self.flights().finish(fp, generation, outcome));
    }

    /// This worker goes away before the call's answer comes: its waiters, on any worker,
    /// retake the key at once instead of waiting for its deadline.
    pub fn release_call(&self, call: &KeyedCall) {
        if let Some(generation) = call.generation {
            self.stored(self.flights().release(&call.fingerprint, generation));
        }
    }

    /// Records a refusal given instead of the key's call as the call's outcome, so the
    /// requests waiting for it get the same answer.
    pub(super) fn refuse_flight(&self, identity: &Identity, generation: Option<u64>, refusal: &Response) {
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
        self.stored(self.flights().finish(&identity.fingerprint, generation, outcome));
    }

    pub(super) fn refresh_due(&self, entry: &CacheEntry, now: u64) -> bool {
        in_refresh_window(self.config.cache.refresh_ahead_ratio, entry.remaining_ms(now), entry.lifetime_ms())
    }

    /// When a request waiting for a call made `now` gives up: the call's own deadline, and
    /// a moment for its owner to write the outcome after Envoy's timeout fires.
    pub(super) fn wait_deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.config.upstream.timeout_ms + WAIT_GRACE_MS)
    }

    /// One background refresh per key across workers: only the flight's new owner calls.
    pub(super) fn refresh(
        &self,
        identity: &Identity,
        credential: Fingerprint,
        head: &RequestHead,
        body: &[u8],
        (client_id, organization): (Option<&str>, Option<&str>),
        now: u64,
    ) -> Option<KeyedCall> {
        let fp = identity.fingerprint;
        let idp = self.idp_record();
        let client_backoff = client_id.and_then(|id| self.client_record(id)).map(|r| r.backoff_until_ms);
        let held = self.auth0_hold(client_id, organization, now).is_some();
        if held || self.backoff_deadline(client_backoff, &idp, now).is_some() {
            return None;
        }
        if idp.in_reserve(self.config.upstream.reserve, now) {
            self.host.add(Metric::IdpReserveHeld, 1);
            return None;
        }
        let deadline_ms = self.wait_deadline(now);
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
            credential,
            generation: Some(generation),
            call: self.idp_call(head, body, Some(&fp)),
            started_ms: now,
            client_id: client_id.map(str::to_owned),
            organization: organization.map(str::to_owned),
            quota_spent_ms: spent.map(|_| now),
        })
    }

    /// A fresh random nonce; `None` when the host has no randomness (nothing is sealed then).
    pub(super) fn nonce(&self) -> Option<[u8; NONCE_BYTES]> {
        let mut nonce = [0u8; NONCE_BYTES];
        self.host.fill_random(&mut nonce).then_some(nonce)
    }

    /// A relayed body as stored in a flight record: sealed like tokens (a non-cacheable
    /// `200` still carries one), so shared data never holds it in the clear.
    pub(super) fn seal_body(&self, identity: &Identity, body: &[u8]) -> String {
        self.nonce()
            .map(|nonce| BASE64.encode(identity.seal_key.seal(nonce, &identity.fingerprint.0, body)))
            .unwrap_or_default()
    }

    /// The original body, content type and Basic header, sent to `upstream.path`.
    pub(super) fn idp_call(
        &self,
        head: &RequestHead,
        body: &[u8],
        cache_key: Option<&Fingerprint>,
    ) -> HttpCall {
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
        // The address of the request that caused the call; in a fleet the gateway takes it
        // from `x-forwarded-for` (its edges are its only, trusted, hop).
        if let Some(address) = head.client_address.clone() {
            if up.client_ip_header.as_deref() != Some("x-forwarded-for") {
                headers.push(("x-forwarded-for".to_owned(), address.clone()));
            }
            if let Some(name) = &up.client_ip_header {
                headers.push((name.clone(), address));
            }
        }
        headers.extend(self.edge_headers(head));
        HttpCall { cluster: up.cluster.clone(), headers, body: body.to_vec(), timeout_ms: up.timeout_ms }
    }

    /// The headers of `upstream.env_headers` and the verified client certificate, which
    /// every IdP call carries, keyed or forwarded.
    fn edge_headers(&self, head: &RequestHead) -> Vec<(String, String)> {
        let up = &self.config.upstream;
        let mut headers: Vec<(String, String)> =
            up.env_headers.iter().map(|(name, value)| (name.clone(), value.0.clone())).collect();
        if let Some(certificate) = head.certificate.as_ref().filter(|_| up.forward_client_certificate) {
            headers.push((CLIENT_CERTIFICATE_HEADER.to_owned(), certificate.header_value.clone()));
            headers.push((CLIENT_CERTIFICATE_VERIFIED_HEADER.to_owned(), "SUCCESS".to_owned()));
        }
        headers
    }

    /// What tokengate sets on a request that goes on to the IdP through the route.
    pub fn forward_edits(&self, head: &RequestHead) -> HeaderEdits {
        let address = head.client_address.clone();
        let ip_header = self.config.upstream.client_ip_header.clone();
        ip_header
            .zip(address)
            .into_iter()
            .chain(self.edge_headers(head))
            .map(|(name, value)| (name, Some(value)))
            .collect()
    }

    /// Stores what a keyed call ended with — a token in the cache, a refusal in the
    /// negative cache, the outcome in the flight record — and returns the outcome.
    /// `reply` is `None` when the call failed (refused, reset, timed out).
    pub fn finish_call(&self, call: &KeyedCall, reply: Option<&HttpReply>) -> CallOutcome {
        let now = self.host.now_ms();
        self.host.add(Metric::IdpCalls, 1);
        let unreachable = || {
            self.host.add(Metric::IdpErrors, 1);
            self.settle_issuance(call.client_id.as_deref(), false, call.quota_spent_ms, now);
            unreachable_outcome()
        };
        let outcome = match reply {
            None => unreachable(),
            Some(r) if made_by_envoy(r.status, is_json(&r.body)) => unreachable(),
            Some(r) => {
                let backoff = self.observe_idp(r, call.client_id.as_deref(), now);
                self.observe_auth0_quota(
                    r.status,
                    &r.headers,
                    call.client_id.as_deref(),
                    call.organization.as_deref(),
                    now,
                );
                let identity = Identity { fingerprint: call.fingerprint, seal_key: call.seal_key };
                let entry = self.nonce().and_then(|nonce| {
                    let max_lifetime = self.config.cache.max_ttl_ms;
                    CacheEntry::from_token_response(
                        &identity,
                        r.status,
                        &r.body,
                        call.started_ms,
                        max_lifetime,
                        nonce,
                    )
                    .map(|e| CacheEntry { client_tag: client_tag(call.client_id.as_deref()), ..e })
                });
                // A token that could not be stored is still relayed to the waiters.
                let put = entry.and_then(|e| self.stored(self.tokens().put(&e, now)));
                if put == Some(true) {
                    self.host.add(Metric::CacheEntries, 1);
                }
                let cached = put.is_some();
                if r.status >= 500 || r.status == 429 {
                    self.host.add(Metric::IdpErrors, 1);
                }
                let issued = r.status == 200 && has_access_token(&r.body);
                if issued {
                    self.prove(&call.credential, call.client_id.as_deref(), now);
                } else if matches!(r.status, 401 | 403) {
                    self.unprove(&call.credential, now);
                }
                self.settle_issuance(call.client_id.as_deref(), issued, call.quota_spent_ms, now);
                if let Some(negative) = NegativeEntry::from_refusal(
                    call.fingerprint,
                    r.status,
                    &r.body,
                    now,
                    self.config.cache.negative_ttl_ms,
                ) {
                    let negative =
                        NegativeEntry { client_tag: client_tag(call.client_id.as_deref()), ..negative };
                    self.stored(self.negatives().put(&negative, now));
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
            self.stored(self.flights().finish(&call.fingerprint, generation, outcome.clone()));
        }
        outcome
    }

    /// A request passed on to the IdP whose client went away before the answer: the client
    /// got nothing, so its quota unit is given back (else anyone who knows a client id
    /// could spend its quota with refused requests they never wait for).
    pub fn forward_abandoned(&self, pending: &ForwardedRequest) {
        let now = self.host.now_ms();
        self.settle_issuance(pending.client_id.as_deref(), false, pending.quota_spent_ms, now);
    }

    /// What the end of an IdP call means for its client, keyed or forwarded: a token issued
    /// is counted (and keeps its quota unit); anything else gives the unit back.
    fn settle_issuance(&self, client_id: Option<&str>, issued: bool, quota_spent_ms: Option<u64>, now: u64) {
        match (client_id, issued, quota_spent_ms) {
            (Some(id), true, _) => self.issued(id, now),
            (Some(id), false, Some(spent)) => self.give_back_quota(id, spent, now),
            _ => {}
        }
    }

    /// The IdP's answer to a forwarded request, as its headers come back through the
    /// filter: the back-off it asks for, the quota unit kept for a token (a `200`) or
    /// given back, the client's bucket charged; the client gets the answer with
    /// tokengate's headers. An unreachable IdP (Envoy's plain-text 5xx: no healthy
    /// upstream, connect error, timeout) is answered `503` in the OAuth shape.
    pub fn forward_answered(&self, pending: &ForwardedRequest, headers: &[(String, String)]) -> ResponseStep {
        let now = self.host.now_ms();
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok())
            .unwrap_or(502);
        let reply = HttpReply { status, headers: headers.to_vec(), body: Vec::new() };
        // Not the IdP's answer when Envoy made it (no upstream, a timeout, a later filter's
        // local reply); where Envoy cannot say, a 5xx that is not JSON is Envoy's.
        let unreachable = match self.host.answered_by_upstream() {
            Some(from_upstream) => !from_upstream,
            None => made_by_envoy(status, reply.header("content-type").is_some_and(|t| t.contains("json"))),
        };
        let response = if unreachable {
            self.host.add(Metric::IdpErrors, 1);
            unavailable(Decision::Bypass)
        } else {
            let backoff = self.observe_idp(&reply, pending.client_id.as_deref(), now);
            let organization = pending.organization.as_deref();
            self.observe_auth0_quota(status, headers, pending.client_id.as_deref(), organization, now);
            relay(
                status,
                &with_retry_after(relayed_headers(&reply), backoff, now),
                Vec::new(),
                Decision::Bypass,
            )
        };
        let client_id = pending.client_id.as_deref();
        // Tokens from forwarded grants are issued (and billed) too: they keep their quota
        // unit and are charged to the bucket; an answer without a token gives its unit back.
        let issued = status == 200;
        self.settle_issuance(client_id, issued, pending.quota_spent_ms, now);
        let headers = match client_id {
            None => Vec::new(),
            // The token is issued and billed: it is delivered even from an empty bucket.
            Some(id) if issued && pending.charge_on_token => {
                self.charge(id, now, Decision::Bypass).headers(now)
            }
            Some(_) => pending.limit_headers.clone(),
        };
        let response = self.conclude(
            client_id,
            Decision::Bypass,
            with_headers(response, &headers),
            Tally::AlreadyCounted,
        );
        match unreachable {
            true => ResponseStep::Replace(response),
            false => {
                let set = response.edge_headers().into_iter();
                let set = set.map(|(n, v)| (n.to_owned().into(), v.to_owned().into())).collect();
                ResponseStep::Amend { remove: &IDP_LIMIT_HEADERS, set }
            }
        }
    }
}
