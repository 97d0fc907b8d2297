//! Answering the requests that wait for a key's IdP call, from the outcome the call's owner
//! stored (or the token cache, or a stale token at the deadline).

use super::*;

impl Gate<'_> {
    /// The response for a waiter, or [`Answer::Pending`] while its call is still in flight.
    /// `known` is the outcome when this worker made the call; otherwise it is read from
    /// shared data.
    ///
    /// A call released by its owner (its root context went away) is retaken: the waiter
    /// joins the key's next call, or makes it ([`Answer::Owns`], to dispatch).
    pub fn answer(&self, waiter: &mut Waiter, known: Option<&CallOutcome>) -> Answer {
        let now = self.host.now_ms();
        let label = if waiter.owner { Decision::Miss } else { Decision::Coalesced };
        let cached = self.tokens().get(&waiter.fingerprint).ok().flatten();
        let servable = cached.as_ref().filter(|e| e.servable(now, self.config.cache.min_remaining_ttl_ms));
        if let Some(token) = servable.and_then(|e| e.render(&waiter.seal_key, now)) {
            return Answer::Ready(self.answer_token(waiter, Response::json(200, token, label), now));
        }
        let outcome = match known {
            Some(outcome) => Some(outcome.clone()),
            None => match self.shared_outcome(waiter, now) {
                Shared::Done(outcome) => Some(outcome),
                Shared::Pending => None,
                Shared::Retake => return self.retake(waiter, now),
            },
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
            None => return Answer::Pending,
        };
        if response.status == 200 {
            return Answer::Ready(self.answer_token(waiter, response, now));
        }
        // The IdP refused this request's own call: counted apart from the misses.
        let decision = match response.cached_as() {
            Decision::Miss if matches!(response.status, 401 | 403) => Decision::Rejected,
            decision => decision,
        };
        Answer::Ready(self.conclude(
            waiter.client_id.as_deref(),
            decision,
            with_headers(response, &waiter.limit_headers),
            Tally::CountNow,
        ))
    }

    /// A waiter's answer with a token: a request with unproven credentials is charged to
    /// its client's bucket now, and refused if the bucket is empty.
    pub(super) fn answer_token(&self, waiter: &Waiter, response: Response, now: u64) -> Response {
        let decision = response.cached_as();
        let client_id = waiter.client_id.as_deref();
        match client_id.filter(|_| waiter.charge_on_token) {
            Some(id) => {
                let limits = self.charge(id, now, decision);
                if limits.rate_refused() {
                    return self.rate_limit_refusal(client_id, &limits, now, Tally::AlreadyCounted);
                }
                self.conclude(
                    client_id,
                    decision,
                    with_headers(response, &limits.headers(now)),
                    Tally::AlreadyCounted,
                )
            }
            None => self.conclude(
                client_id,
                decision,
                with_headers(response, &waiter.limit_headers),
                Tally::CountNow,
            ),
        }
    }

    /// What the flight record of the waiter's key says. The record may have moved on to a
    /// later call of the same key (another waiter retook a released call): its outcome is
    /// this key's too, and a later call in flight is joined. A slot another key has taken
    /// means the outcome is lost: answered as unreachable.
    fn shared_outcome(&self, waiter: &Waiter, now: u64) -> Shared {
        let Some(generation) = waiter.generation else {
            return Shared::Pending;
        };
        match self.flights().read(&waiter.fingerprint) {
            Ok(Some(record)) => match record.state {
                FlightState::Done(outcome) => Shared::Done(outcome),
                FlightState::InFlight { .. } if record.generation == generation => Shared::Pending,
                FlightState::InFlight { .. } | FlightState::Released => Shared::Retake,
            },
            Ok(None) if now < waiter.deadline_ms => Shared::Done(unreachable_outcome()),
            _ => Shared::Pending,
        }
    }

    /// The waiter's call was released (or the key moved on to a later call): it joins the
    /// key's call in flight, or makes the next one. That call spends a quota unit of its
    /// own (the IdP may have issued a token for the released one); a spent quota is the
    /// waiter's answer.
    fn retake(&self, waiter: &mut Waiter, now: u64) -> Answer {
        let deadline_ms = self.wait_deadline(now);
        let generation = match self.stored(self.flights().begin(&waiter.fingerprint, now, deadline_ms)) {
            Some(Begin::Joined { generation, deadline_ms }) => {
                waiter.generation = Some(generation);
                waiter.deadline_ms = deadline_ms.saturating_add(WAIT_GRACE_MS);
                return Answer::Pending;
            }
            Some(Begin::Owner { generation }) => Some(generation),
            Some(Begin::Uncoordinated) | None => None,
        };
        let client_id = waiter.client_id.as_deref();
        let spent = self.spend_quota(client_id, now);
        if let Some((rule, decision)) = spent.filter(|(_, d)| !d.allowed) {
            // Released again: the other waiters retake it, and each meets the spent quota.
            if let Some(generation) = generation {
                self.stored(self.flights().release(&waiter.fingerprint, generation));
            }
            let refusal = with_headers(proof::quota_refusal(&rule, &decision, now), &waiter.limit_headers);
            return Answer::Ready(self.conclude(
                client_id,
                Decision::QuotaRejected,
                refusal,
                Tally::CountNow,
            ));
        }
        waiter.generation = generation;
        waiter.deadline_ms = deadline_ms;
        waiter.owner = true;
        Answer::Owns(Box::new(waiter.keyed_call(generation, now, spent.map(|_| now))))
    }
}

/// What the flight record says about a waiter's call.
enum Shared {
    Pending,
    Done(CallOutcome),
    /// Released, or moved on to a later call of the key: see [`Gate::retake`].
    Retake,
}

impl Waiter {
    /// The key's call as this request makes it, owning flight `generation`.
    pub(super) fn keyed_call(
        &self,
        generation: Option<u64>,
        now: u64,
        quota_spent_ms: Option<u64>,
    ) -> KeyedCall {
        KeyedCall {
            fingerprint: self.fingerprint,
            seal_key: self.seal_key,
            credential: self.credential,
            generation,
            call: self.request.clone(),
            started_ms: now,
            client_id: self.client_id.clone(),
            organization: self.organization.clone(),
            quota_spent_ms,
        }
    }
}
