//! The request flow: a complete token request to a [`Plan`] (`handle`), this worker's
//! index of served tokens (`local_hit`), and the bookkeeping every answer ends with
//! (`conclude`, `flush_hits`).

use super::*;

impl Gate<'_> {
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
    pub(super) fn local_hit(&self, digest: &RequestDigest, now: u64) -> Option<Plan> {
        let index = self.local?;
        let (client_id, token) = {
            let entries = index.borrow();
            let hit = entries.get(digest)?;
            let remaining = hit.expires_at_ms.saturating_sub(now);
            let lifetime = hit.expires_at_ms.saturating_sub(hit.issued_at_ms);
            let floor = remaining < self.config.cache.min_remaining_ttl_ms.max(1000);
            // Inside the refresh window the full path runs, so refresh-ahead can start.
            if floor || in_refresh_window(self.config.cache.refresh_ahead_ratio, remaining, lifetime) {
                None
            } else {
                Some((hit.client_id.clone(), render_token(&hit.body_without_expiry, remaining / 1000)))
            }
        }?;
        self.host.add(Metric::Requests, 1);
        let client_id = client_id.as_deref();
        let limits = self.admit(client_id, now, Some(Decision::Hit), true);
        if limits.rate_refused() {
            return Some(answer_now(self.rate_limited(client_id, &limits, now)));
        }
        let response = with_headers(Response::json(200, token, Decision::Hit), &limits.headers(now));
        Some(answer_now(self.conclude(client_id, Decision::Hit, response, Tally::AlreadyCounted)))
    }

    /// Handles a complete token request (`body` is all of it).
    pub fn handle(&self, head: &RequestHead, body: &[u8]) -> Plan {
        if body.len() > self.config.max_body_bytes {
            return answer_now(self.too_large());
        }
        // A DPoP request is never answered from a cache, this worker's index included; nor
        // one with a client certificate (its key holds the certificate, checked below).
        let digest = self
            .local
            .filter(|_| head.dpop.is_none() && head.forwarded_client_cert.is_none())
            .map(|index| index.borrow().digest(head, body));
        let now = self.host.now_ms();
        if let Some(plan) = digest.and_then(|d| self.local_hit(&d, now)) {
            return plan;
        }
        self.host.add(Metric::Requests, 1);
        let request = match TokenRequest::parse(head, body) {
            Ok(request) => request,
            Err(e) => return answer_now(self.bad_request(e, now)),
        };
        let client_id = request.client_id.as_deref();
        let organization = request.params.get("organization").map(String::as_str);
        if request.kind() == RequestKind::Forward {
            return self.forward(client_id, organization, now);
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
        // Proven credentials (a hit, or credentials the IdP issued a token to in the window,
        // for any audience or scope) are charged now; a remembered refusal never is, and
        // unproven ones when a token comes.
        let credential = match (&hit, &negative) {
            (None, None) => Some(fingerprint::credential(&request, &self.config.upstream)),
            _ => None,
        };
        let proven = hit.is_some() || credential.is_some_and(|c| self.proven(&c, now));
        // Hits and remembered refusals are counted with the admission: one write.
        let limits = self.admit(client_id, now, expected, proven);
        let limit_headers = limits.headers(now);
        if limits.rate_refused() {
            return answer_now(self.rate_limited(client_id, &limits, now));
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
            let response = with_headers(Response::json(200, token, Decision::Hit), &limit_headers);
            let background = if self.refresh_due(entry, now) {
                self.refresh(
                    &identity,
                    fingerprint::credential(&request, &self.config.upstream),
                    head,
                    body,
                    (client_id, organization),
                    now,
                )
            } else {
                None
            };
            let response = self.conclude(client_id, Decision::Hit, response, Tally::AlreadyCounted);
            return Plan { outcome: Outcome::Respond(response), call: background };
        }
        if let Some(negative) = negative {
            let r = Response::json(negative.status, negative.body, Decision::Negative);
            return answer_now(self.conclude(
                client_id,
                Decision::Negative,
                with_headers(r, &limit_headers),
                Tally::AlreadyCounted,
            ));
        }
        // Auth0 said this client's or organization's token quota is spent: no call until it resets.
        if let Some(hold) = self.auth0_hold(client_id, organization, now) {
            return answer_now(self.auth0_quota_refusal(client_id, &hold, &limit_headers, now));
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
                let r = with_headers(Response::json(200, token, Decision::Stale), &limit_headers);
                return answer_now(self.conclude(client_id, Decision::Stale, r, Tally::CountNow));
            }
            if let Some(until) = backoff {
                return answer_now(self.backoff_refusal(client_id, until, &limit_headers, &idp, now));
            }
        }
        // Set: this request is neither a hit nor a remembered refusal.
        let credential =
            credential.unwrap_or_else(|| fingerprint::credential(&request, &self.config.upstream));
        let miss = KeyedMiss {
            head,
            body,
            identity: &identity,
            credential,
            client_id,
            organization,
            limits: &limits,
            limit_headers,
            proven,
            cached: cached.as_ref(),
        };
        self.call_for_key(miss, now)
    }

    /// A forwarded request (another grant, a client assertion, DPoP): never cached; it goes
    /// on to the IdP as the route sends it, every header the client sent included, so a
    /// DPoP proof still names the URL it is checked against.
    fn forward(&self, client_id: Option<&str>, organization: Option<&str>, now: u64) -> Plan {
        // Forwarded credentials are never proven beforehand (a refresh token or an
        // assertion is new each time): the bucket is read now and charged for a token.
        let limits = self.admit(client_id, now, None, false);
        let limit_headers = limits.headers(now);
        if limits.rate_refused() {
            return answer_now(self.rate_limited(client_id, &limits, now));
        }
        if let Some(hold) = self.auth0_hold(client_id, organization, now) {
            return answer_now(self.auth0_quota_refusal(client_id, &hold, &limit_headers, now));
        }
        let idp = self.idp_record();
        if let Some(until) = self.backoff_deadline(limits.backoff_until_ms, &idp, now) {
            return answer_now(self.backoff_refusal(client_id, until, &limit_headers, &idp, now));
        }
        let quota_spent_ms = match self.pay_for_call(client_id, &limits, false, now) {
            Ok(spent) => spent.map(|_| now),
            Err(refused) => {
                let (refusal, decision) = refused.answer(&limit_headers, now);
                return answer_now(self.conclude(client_id, decision, refusal, Tally::CountNow));
            }
        };
        // It goes on to the IdP through the route (see `forward_answered`).
        self.host.add(Metric::IdpCalls, 1);
        Plan {
            outcome: Outcome::Forward(ForwardedRequest {
                limit_headers,
                client_id: client_id.map(str::to_owned),
                organization: organization.map(str::to_owned),
                quota_spent_ms,
                charge_on_token: self.global_rate.is_none(),
            }),
            call: None,
        }
    }

    /// A request that needs the IdP for its key: joins the key's call in flight, or owns
    /// the next one (after the unproven bucket and the quota allow it).
    fn call_for_key(&self, miss: KeyedMiss<'_>, now: u64) -> Plan {
        let KeyedMiss {
            head,
            body,
            identity,
            credential,
            client_id,
            organization,
            limits,
            limit_headers,
            proven,
            cached,
        } = miss;
        let (fp, key) = (identity.fingerprint, identity.seal_key);
        let deadline_ms = self.wait_deadline(now);
        // A flight that cannot be taken (counted): the call is made uncoordinated.
        let begin = self.stored(self.flights().begin(&fp, now, deadline_ms)).unwrap_or(Begin::Uncoordinated);
        let request = self.idp_call(head, body, Some(&fp));
        let mut waiter = Waiter {
            fingerprint: fp,
            seal_key: key,
            generation: None,
            deadline_ms,
            owner: false,
            limit_headers,
            client_id: client_id.map(str::to_owned),
            organization: organization.map(str::to_owned),
            charge_on_token: !proven && self.global_rate.is_none(),
            credential,
            request,
        };
        let generation = match begin {
            Begin::Joined { generation, deadline_ms } => {
                waiter.generation = Some(generation);
                waiter.deadline_ms = deadline_ms.saturating_add(WAIT_GRACE_MS);
                return Plan { outcome: Outcome::Wait(Box::new(waiter)), call: None };
            }
            Begin::Owner { generation } => {
                waiter.generation = Some(generation);
                // Another worker's call may have stored the key's token between this
                // request's read of the cache and its taking the flight: served, not
                // fetched again.
                let floor = self.config.cache.min_remaining_ttl_ms;
                if self.tokens().get(&fp).ok().flatten().is_some_and(|e| e.servable(now, floor)) {
                    self.release_flight(&fp, generation);
                    if let Answer::Ready(response) = self.answer(&mut waiter, None) {
                        return answer_now(response);
                    }
                }
                Some(generation)
            }
            Begin::Uncoordinated => None,
        };
        let mut headers = std::mem::take(&mut waiter.limit_headers);
        let spent = match self.pay_for_call(client_id, limits, proven, now) {
            Ok(spent) => spent,
            // A spent quota is answered below, where a token with lifetime left may still do.
            Err(Refused::Quota(rule, decision)) => Some((rule, decision)),
            Err(refused @ Refused::Unproven(..)) => {
                let (refusal, decision) = refused.answer(&headers, now);
                self.refuse_flight(identity, generation, &refusal);
                return answer_now(self.conclude(client_id, decision, refusal, Tally::CountNow));
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
                self.refuse_flight(identity, generation, &refusal);
                let (response, decided) = match stale_token(cached, &key, now) {
                    Some(token) => (Response::json(200, token, Decision::Stale), Decision::Stale),
                    None => (refusal, Decision::QuotaRejected),
                };
                return answer_now(self.conclude(
                    client_id,
                    decided,
                    with_headers(response, &headers),
                    Tally::CountNow,
                ));
            }
        }
        let call = waiter.keyed_call(generation, now, spent.map(|_| now));
        waiter.owner = true;
        waiter.limit_headers = headers;
        Plan { outcome: Outcome::Wait(Box::new(waiter)), call: Some(call) }
    }

    /// Finishes a response: the decision and client for the access log, the stats, and the
    /// client's usage (unless already counted with its admission).
    pub(super) fn conclude(
        &self,
        client_id: Option<&str>,
        decision: Decision,
        response: Response,
        tally: Tally,
    ) -> Response {
        self.host.add(decision.metric(), 1);
        if tally == Tally::CountNow
            && let Some(id) = client_id
        {
            let now = self.host.now_ms();
            self.on_client(id, |table, create| table.tally(id, now, create, decision));
        }
        response.decided(decision, client_id)
    }
}

/// A request that needs the IdP for its key, as [`Gate::handle`] leaves it to
/// `call_for_key`: what it sent, who it is, and what was decided about it so far.
struct KeyedMiss<'r> {
    head: &'r RequestHead,
    body: &'r [u8],
    identity: &'r Identity,
    /// The credentials a token for this request proves.
    credential: Fingerprint,
    client_id: Option<&'r str>,
    /// The `organization` the request named (Auth0's organization quota).
    organization: Option<&'r str>,
    limits: &'r LimitState,
    limit_headers: Vec<Header>,
    /// Its credentials were proven: charged already, not when a token comes.
    proven: bool,
    /// The key's cache entry, servable or not (a stale token when the quota is spent).
    cached: Option<&'r CacheEntry>,
}
