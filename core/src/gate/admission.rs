//! Client admission: the request bucket and the issuance quota of a client id, shared by
//! every worker (`ClientTable`), and the 429s they give.

use super::*;

impl Gate<'_> {
    pub(super) fn client_record(&self, client_id: &str) -> Option<crate::clients::ClientRecord> {
        [Standing::Trusted, Standing::Guest]
            .into_iter()
            .find_map(|standing| self.clients(standing).get(client_id).ok().flatten())
    }

    /// The 429 for a client over its rate limit (counted with its admission).
    pub(super) fn rate_limited(&self, client_id: Option<&str>, limits: &LimitState, now: u64) -> Response {
        self.rate_limit_refusal(client_id, limits, now, Tally::AlreadyCounted)
    }

    /// The 429 for a client over its rate limit.
    pub(super) fn rate_limit_refusal(
        &self,
        client_id: Option<&str>,
        limits: &LimitState,
        now: u64,
        tally: Tally,
    ) -> Response {
        let mut r = Response::oauth_error(
            429,
            ErrorCode::TooManyRequests,
            "rate limit exceeded for this client",
            Decision::Bypass,
        );
        r.push_header("retry-after", limits.rate_retry_after(now).to_string());
        let r = with_headers(r, &limits.headers(now));
        self.conclude(client_id, Decision::RateLimited, r, tally)
    }

    pub(super) fn clients(&self, standing: Standing) -> ClientTable<'_> {
        ClientTable::new(&self.store, self.key_prefix, standing, self.config.cache.max_entries)
    }

    /// A client named in the configuration is trusted from the start.
    pub(super) fn configured(&self, client_id: &str) -> bool {
        self.config.rate_limit.as_ref().is_some_and(|l| l.clients.contains_key(client_id))
            || self.config.quota.as_ref().is_some_and(|l| l.clients.contains_key(client_id))
    }

    /// Runs `op` on the table holding the client: its trusted record if it has one (or is
    /// configured), else its guest record (created when missing). `None` when the store
    /// failed: limits then fail open for this request, rather than failing every client
    /// because of one host error.
    pub(super) fn on_client<T>(
        &self,
        client_id: &str,
        op: impl Fn(&ClientTable<'_>, bool) -> Result<Option<T>, StoreError>,
    ) -> Option<T> {
        match self.stored(op(&self.clients(Standing::Trusted), self.configured(client_id)))? {
            Some(out) => Some(out),
            None => self.stored(op(&self.clients(Standing::Guest), true)).flatten(),
        }
    }

    /// Counts the request for its client (and the decision already known, if any), taking
    /// from its rate-limit bucket.
    pub(super) fn admit(
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
    pub(super) fn admit_locally(
        &self,
        client_id: Option<&str>,
        now: u64,
        admission: Admission,
    ) -> LimitState {
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
        let leasing = match pending.filter(|p| p.borrow().has_room(id)) {
            Some(p) => Leasing::Renew { leftover: p.borrow_mut().end_lease(id) },
            None => Leasing::None,
        };
        let admitted = self.on_client(id, |table, create| {
            table.admit_leasing(id, now, create, (rate, quota), admission, leasing)
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
    pub(super) fn spend_quota(
        &self,
        client_id: Option<&str>,
        now: u64,
    ) -> Option<(QuotaRule, QuotaDecision)> {
        let id = client_id?;
        let rule = *self.config.quota.as_ref().and_then(|l| l.for_client(id))?;
        let decision = self.on_client(id, |table, create| table.spend_quota(id, now, create, &rule))?;
        Some((rule, decision))
    }

    /// A client the IdP just issued a token: counted, and a guest becomes a trusted
    /// client, limits and usage and all, out of reach of guest floods.
    pub(super) fn issued(&self, client_id: &str, now: u64) {
        let trusted = self.clients(Standing::Trusted);
        if !matches!(trusted.get(client_id), Ok(Some(_))) {
            let guests = self.clients(Standing::Guest);
            if let Ok(Some(record)) = guests.get(client_id)
                && self.stored(trusted.adopt(record, now)).is_some()
            {
                self.stored(guests.remove(client_id));
            }
        }
        let window_ms = self.issuance_window_ms(client_id);
        self.on_client(client_id, |table, create| table.issued(client_id, now, create, window_ms));
    }

    /// Issued tokens are counted per quota window, or per day without a quota.
    pub(super) fn issuance_window_ms(&self, client_id: &str) -> u64 {
        self.config.quota.as_ref().and_then(|l| l.for_client(client_id)).map_or(DAY_MS, |q| q.window_ms)
    }
}
