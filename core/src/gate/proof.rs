//! Who pays for a request (docs/behaviour.md, "Who pays for a request"): knowing a client
//! id is not enough to spend that client's limits. Credentials are proven when the IdP
//! issued a token to them, for any audience or scope: the `proven` table holds their
//! credential fingerprint (client id, how it authenticated, the secret) for the issuance
//! window. Proven requests are charged to the client's bucket at once, unproven ones only when the
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
use crate::limits::{Bucket, BucketDecision, QuotaDecision, bucket_headers, seconds_until};
use crate::request::RequestError;
use crate::response::{ErrorCode, Header, Response};
use crate::store::Change;

use super::{Gate, Tally, invalid_request, with_headers};

/// Why an IdP call was not made (see [`Gate::pay_for_call`]).
pub(super) enum Refused {
    /// The client's quota is spent.
    Quota(QuotaRule, QuotaDecision),
    /// A bucket of IdP calls for unproven credentials is empty: the client id's
    /// (`rate_limit.unproven`) or the one unknown client ids share.
    Unproven(UnprovenBucket, BucketRule, BucketDecision),
}

/// Which unproven-credentials bucket refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnprovenBucket {
    /// `rate_limit.unproven`: the client id's own.
    PerClient,
    /// `rate_limit.unknown_clients`: shared by client ids the IdP never issued a token to.
    UnknownClients,
}

impl Refused {
    /// The 429 and the decision it is counted as. A spent quota carries the client's
    /// rate-limit headers; an unproven refusal carries its own bucket's instead, so it is
    /// never mistaken for the client's rate limit.
    pub(super) fn answer(self, client_headers: &[Header], now: u64) -> (Response, Decision) {
        match self {
            Refused::Quota(rule, d) => {
                (with_headers(quota_refusal(&rule, &d, now), client_headers), Decision::QuotaRejected)
            }
            Refused::Unproven(bucket, rule, d) => {
                (unproven_refusal(bucket, &rule, &d, now), Decision::Unproven)
            }
        }
    }
}

impl Gate<'_> {
    fn proven_keys(&self) -> SlotTable<'_, ProvenEntry> {
        SlotTable::new(self.host, self.key_prefix, self.config.cache.max_entries)
    }

    /// Whether the IdP issued a token to these credentials (a credential fingerprint)
    /// within the issuance window.
    pub(super) fn proven(&self, credential: &Fingerprint, now: u64) -> bool {
        matches!(self.proven_keys().get(credential), Ok(Some(entry)) if entry.live(now))
    }

    /// The IdP refused these credentials (`401`/`403`: a secret since rotated, say): no
    /// longer proven, so requests with them spend the unproven bucket, never the client's.
    pub(super) fn unprove(&self, credential: &Fingerprint, now: u64) {
        if self.proven(credential, now) {
            let expired = ProvenEntry { fingerprint: *credential, expires_at_ms: now };
            self.stored(self.proven_keys().put(&expired, now));
        }
    }

    /// The IdP issued a token to these credentials: proven for the window, whatever
    /// audience or scope they ask for next.
    pub(super) fn prove(&self, credential: &Fingerprint, client_id: Option<&str>, now: u64) {
        let window_ms = client_id.map_or(super::DAY_MS, |id| self.issuance_window_ms(id));
        let entry = ProvenEntry { fingerprint: *credential, expires_at_ms: now.saturating_add(window_ms) };
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
        if let (Some(rule), Some(d)) = (per_client, spend.unproven.filter(|d| !d.allowed)) {
            return Err(Refused::Unproven(UnprovenBucket::PerClient, rule, d));
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
            return Err(Refused::Unproven(UnprovenBucket::UnknownClients, shared.unknown_clients, d));
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

    /// One call from the bucket shared by unknown client ids; `None` when the store failed
    /// (counted).
    fn take_unknown_clients(&self, rule: &BucketRule, now: u64) -> Option<BucketDecision> {
        let key = crate::keys::unknown_clients(self.key_prefix);
        self.stored(self.store.update(&key, &[], |bytes| {
            let bucket = Bucket::from_bytes(bytes).unwrap_or_else(|| Bucket::full(rule, now));
            let (after, decision) = bucket.take(rule, now);
            Change::Write(after.to_bytes().to_vec(), decision)
        }))
    }

    /// The `400` for a request that does not parse, with its client's rate-limit headers
    /// when the client id was read (nothing is charged).
    pub(super) fn bad_request(&self, e: RequestError, now: u64) -> Response {
        let client_id = e.client_id.clone();
        let headers = match client_id.as_deref() {
            Some(id) => self.admit(Some(id), now, Some(Decision::BadRequest), false).headers(now),
            None => Vec::new(),
        };
        self.conclude(
            client_id.as_deref(),
            Decision::BadRequest,
            with_headers(invalid_request(e), &headers),
            Tally::AlreadyCounted,
        )
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

/// The 429 of an empty unproven-credentials bucket: it names its limit and carries that
/// bucket's rate-limit headers.
fn unproven_refusal(bucket: UnprovenBucket, rule: &BucketRule, d: &BucketDecision, now: u64) -> Response {
    // The policy is named after its configuration field.
    let policy = match bucket {
        UnprovenBucket::PerClient => "unproven",
        UnprovenBucket::UnknownClients => "unknown_clients",
    };
    let mut r = Response::oauth_error(
        429,
        ErrorCode::TooManyRequests,
        &format!(
            "unproven-credentials limit (rate_limit.{policy}) reached: the identity provider has not accepted these credentials yet"
        ),
        Decision::Bypass,
    );
    r.push_header("retry-after", seconds_until(now, d.next_fill_ms).max(1).to_string());
    with_headers(r, &bucket_headers(policy, rule, d, now))
}
