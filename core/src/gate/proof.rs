//! Who pays for a request (README, "Who pays for a request"): knowing a client id is
//! not enough to spend that client's limits. Credentials are proven when the IdP issued a
//! token for their exact cache key (kept in the `proven` table for the issuance window);
//! proven requests are charged to the client's bucket at once, unproven ones only when the
//! IdP's token comes. The IdP calls unproven credentials cause spend buckets of their own:
//! one per client id (`rate_limit.unproven`) and one shared by client ids the IdP never
//! issued a token to (`rate_limit.unknown_clients`). A quota unit is spent per call and
//! given back when the call issues no token.

use crate::cache::{ProvenEntry, SlotTable};
use crate::clients::{Admission, Standing};
use crate::config::{BucketRule, QuotaRule};
use crate::decision::Decision;
use crate::fingerprint::Fingerprint;
use crate::limits::LimitState;
use crate::limits::{Bucket, BucketDecision, QuotaDecision, seconds_until};
use crate::request::RequestError;
use crate::response::{ErrorCode, Response};
use crate::store::Change;

use super::{Gate, refused, with_headers};

/// Why an IdP call was not made (see [`Gate::pay_for_call`]).
pub(super) enum Refused {
    /// The client's quota is spent.
    Quota(QuotaRule, QuotaDecision),
    /// An unproven bucket is empty: its 429.
    Unproven(Response),
}

impl Refused {
    /// The 429 and the decision it is counted as.
    pub(super) fn answer(self, now: u64) -> (Response, Decision) {
        match self {
            Refused::Quota(rule, d) => (quota_refusal(&rule, &d, now), Decision::QuotaRejected),
            Refused::Unproven(refusal) => (refusal, Decision::RateLimited),
        }
    }
}

impl Gate<'_> {
    fn proven_keys(&self) -> SlotTable<'_, ProvenEntry> {
        SlotTable::new(self.host, self.key_prefix, self.config.cache.max_entries)
    }

    /// Whether the IdP issued a token for this cache key within the issuance window.
    pub(super) fn proven(&self, fp: &Fingerprint, now: u64) -> bool {
        matches!(self.proven_keys().get(fp), Ok(Some(entry)) if entry.live(now))
    }

    /// The IdP issued a token for this key: its credentials are proven for the window.
    pub(super) fn prove(&self, fp: &Fingerprint, client_id: Option<&str>, now: u64) {
        let window_ms = client_id.map_or(super::DAY_MS, |id| self.issuance_window_ms(id));
        let entry = ProvenEntry { fingerprint: *fp, expires_at_ms: now.saturating_add(window_ms) };
        self.stored(self.proven_keys().put(&entry, now));
    }

    /// Charges a request whose credentials were just proven (a token came) to its
    /// client's bucket; the request itself was counted when it arrived.
    pub(super) fn charge(&self, client_id: &str, now: u64, decision: Decision) -> LimitState {
        let admission = Admission { charge: true, count_request: false, expected: Some(decision) };
        self.admit_locally(Some(client_id), now, admission)
    }

    /// Gives back the quota unit a call spent at `spent_ms` and issued no token for.
    pub(super) fn give_back_quota(&self, client_id: &str, spent_ms: u64, now: u64) {
        let Some(rule) = self.config.quota.as_ref().and_then(|l| l.for_client(client_id)) else {
            return;
        };
        self.on_client(client_id, |table, _| table.give_back_quota(client_id, now, rule, spent_ms));
    }

    /// Spends what an IdP call costs before it is made: nothing while the quota is spent
    /// (a call it refuses costs no unproven call); for unproven credentials a call from the
    /// client id's unproven bucket and, for an id the IdP never issued a token to, from the
    /// shared one; then a quota unit. `Ok` holds the quota after the unit, when one applies.
    pub(super) fn pay_for_call(
        &self,
        client_id: Option<&str>,
        limits: &LimitState,
        proven: bool,
        now: u64,
    ) -> Result<Option<(QuotaRule, QuotaDecision)>, Refused> {
        if let Some((rule, d)) = limits.quota.filter(|(_, d)| !d.allowed) {
            return Err(Refused::Quota(rule, d));
        }
        let unproven = self.config.unproven.filter(|_| !proven);
        let per_client = unproven.map(|u| u.per_client);
        let quota_rule = client_id.and_then(|id| self.config.quota.as_ref()?.for_client(id).copied());
        // The client's unproven call and quota unit: one write of its record.
        let spend = client_id
            .filter(|_| per_client.is_some() || quota_rule.is_some())
            .and_then(|id| {
                self.on_client(id, |table, create| {
                    table.spend_call(id, now, create, per_client.as_ref(), quota_rule.as_ref())
                })
            })
            .unwrap_or_default();
        if let Some(d) = spend.unproven.filter(|d| !d.allowed) {
            return Err(Refused::Unproven(unproven_refusal(&d, now)));
        }
        let spent = quota_rule.zip(spend.quota);
        if let Some(shared) = unproven.filter(|_| client_id.is_none_or(|id| !self.known(id)))
            && let Some(d) = self.take_unknown_clients(&shared.unknown_clients, now).filter(|d| !d.allowed)
        {
            if let (Some(id), Some((_, quota))) = (client_id, spent)
                && quota.allowed
            {
                self.give_back_quota(id, now, now);
            }
            return Err(Refused::Unproven(unproven_refusal(&d, now)));
        }
        match spent {
            Some((rule, d)) if !d.allowed => Err(Refused::Quota(rule, d)),
            spent => Ok(spent),
        }
    }

    /// Configured, or issued a token by the IdP (a trusted client record).
    fn known(&self, client_id: &str) -> bool {
        self.configured(client_id) || matches!(self.clients(Standing::Trusted).get(client_id), Ok(Some(_)))
    }

    /// One call from the bucket shared by unknown client ids; `None` when the store failed.
    fn take_unknown_clients(&self, rule: &BucketRule, now: u64) -> Option<BucketDecision> {
        let key = crate::keys::unknown_clients(self.key_prefix);
        self.store
            .update(&key, &[], |bytes| {
                let bucket = Bucket::from_bytes(bytes).unwrap_or_else(|| Bucket::full(rule, now));
                let (after, decision) = bucket.take(rule, now);
                Change::Write(after.to_bytes().to_vec(), decision)
            })
            .ok()
    }

    /// The `400` for a request that does not parse, with its client's rate-limit headers
    /// when the client id was read (nothing is charged).
    pub(super) fn bad_request(&self, e: RequestError, now: u64) -> Response {
        let client_id = e.client_id.clone();
        let headers = match client_id.as_deref() {
            Some(id) => self.admit(Some(id), now, Some(Decision::BadRequest), false).headers(now),
            None => Vec::new(),
        };
        self.conclude(client_id.as_deref(), Decision::BadRequest, with_headers(refused(e), &headers), true)
    }
}

/// The 429 for a spent quota.
pub(super) fn quota_refusal(rule: &QuotaRule, decision: &QuotaDecision, now: u64) -> Response {
    let mut r = Response::oauth_error(
        429,
        ErrorCode::TooManyRequests,
        &format!("token quota of {} per window spent for this client", rule.tokens),
        Decision::Bypass,
    );
    r.push_header("retry-after", seconds_until(now, decision.reset_ms).max(1).to_string());
    r
}

fn unproven_refusal(decision: &BucketDecision, now: u64) -> Response {
    let mut r = Response::oauth_error(
        429,
        ErrorCode::TooManyRequests,
        "too many token requests with credentials the identity provider has not accepted yet",
        Decision::Bypass,
    );
    r.push_header("retry-after", seconds_until(now, decision.next_fill_ms).max(1).to_string());
    r
}
