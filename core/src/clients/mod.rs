//! Per-client state in shared data: the rules that change a client's record — its
//! rate-limit bucket, its unproven bucket, its quota window, its back-off and its usage —
//! each one CAS update of the record (`table`: where records live and how they change), so
//! counts are exact across workers.

use crate::config::{BucketRule, QuotaRule};
use crate::decision::Decision;
use crate::hit_tally::{HitTally, LEASE_MS, Lease, lease_size};
use crate::host::StoreError;
use crate::limits::{Bucket, BucketDecision, LimitState, QuotaDecision, QuotaWindow};

mod record;
mod table;

use record::window_start_of;
pub use record::{ClientRecord, Usage};
use table::Missing;
pub use table::{ClientTable, Standing};

/// What [`ClientTable::spend_call`] took: each decision when its rule applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallSpend {
    pub unproven: Option<BucketDecision>,
    pub quota: Option<QuotaDecision>,
}

/// How [`ClientTable::admit_leasing`] treats one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Take a token from the bucket (proven credentials); otherwise only read it.
    pub charge: bool,
    /// Count the request in the client's usage (not again when it was counted on arrival).
    pub count_request: bool,
    /// The decision the request gets if the rate limit lets it through, counted with it.
    pub expected: Option<Decision>,
}

/// Whether an admission also takes a lease for this worker's next hits (see `hit_tally`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leasing {
    None,
    /// Take a new lease, giving back what the previous one left: its tokens and the fill
    /// they were taken on.
    Renew {
        leftover: Option<(u64, u64)>,
    },
}

impl ClientTable<'_> {
    #[cfg(test)]
    /// Counts one request: takes a token from the client's bucket (when a rate limit
    /// applies) and reads its quota (when one applies). `None` when the client has no
    /// record here and `create` is false. `expected` is the decision the request gets if
    /// the rate limit lets it through (known already for hits and remembered refusals),
    /// counted in the same write.
    pub fn admit(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        rules: (Option<&BucketRule>, Option<&QuotaRule>),
        expected: Option<Decision>,
    ) -> Result<Option<LimitState>, StoreError> {
        let admission = Admission { charge: true, count_request: true, expected };
        Ok(self
            .admit_leasing(client_id, now_ms, create, rules, admission, Leasing::None)?
            .map(|(state, _)| state))
    }

    /// [`ClientTable::admit`], and with [`Leasing::Renew`], when the request is admitted far
    /// from the limit, takes a [`Lease`] for this worker's next hits in the same write (see
    /// `hit_tally`), giving back the leftover of this worker's previous lease.
    pub fn admit_leasing(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        rules: (Option<&BucketRule>, Option<&QuotaRule>),
        admission: Admission,
        leasing: Leasing,
    ) -> Result<Option<(LimitState, Option<Lease>)>, StoreError> {
        let Admission { charge, count_request, expected } = admission;
        let (lease, leftover) = match leasing {
            Leasing::None => (false, None),
            Leasing::Renew { leftover } => (charge, leftover),
        };
        let (rate, quota) = rules;
        self.modify(client_id, now_ms, Missing::fresh_if(create), |record| {
            let mut state = LimitState::default();
            let mut shared = LimitState::default();
            let mut leased = (0, 0);
            if let Some(rule) = rate {
                let bucket = record
                    .bucket
                    .map_or_else(|| Bucket::full(rule, now_ms), |b| give_back(b, rule, now_ms, leftover));
                let (mut after, decision) =
                    if charge { bucket.take(rule, now_ms) } else { (bucket, bucket.peek(rule, now_ms)) };
                let extra = if lease && decision.allowed { lease_size(after.tokens) } else { 0 };
                after.tokens -= extra;
                record.bucket = Some(after);
                state.rate = Some((*rule, decision));
                shared.rate = Some((*rule, BucketDecision { remaining: after.tokens, ..decision }));
                leased = (extra, after.last_fill_ms);
            }
            if let Some(rule) = quota {
                let window = record.quota.unwrap_or(QuotaWindow { start_ms: 0, used: 0 });
                state.quota = Some((*rule, window.peek(rule, now_ms)));
                shared.quota = state.quota;
            }
            state.backoff_until_ms = (record.backoff_until_ms > now_ms).then_some(record.backoff_until_ms);
            shared.backoff_until_ms = state.backoff_until_ms;
            if count_request {
                record.usage.requests = record.usage.requests.saturating_add(1);
            }
            match (state.rate, expected) {
                (Some((_, d)), _) if !d.allowed => record.usage.count(Decision::RateLimited),
                (_, Some(decision)) => record.usage.count(decision),
                _ => {}
            }
            // A lease that could serve a hit: tokens for a rate limit, or (quota only) the
            // record's snapshot.
            let useful = match state.rate {
                Some((_, d)) => d.allowed && leased.0 > 0,
                None => true,
            };
            let lease = (lease && useful).then(|| Lease {
                tokens: leased.0,
                limits: shared,
                last_fill_ms: leased.1,
                valid_until_ms: shared
                    .rate
                    .map_or(u64::MAX, |(_, d)| d.next_fill_ms)
                    .min(now_ms.saturating_add(LEASE_MS)),
            });
            (state, lease)
        })
    }

    /// What an IdP call costs the client, in one write: a call from its unproven bucket
    /// (`unproven`, for credentials not proven yet), then, unless that bucket was empty, a
    /// unit of its quota (`quota`). `None` when the client has no record and `create` is
    /// false.
    pub fn spend_call(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        unproven: Option<&BucketRule>,
        quota: Option<&QuotaRule>,
    ) -> Result<Option<CallSpend>, StoreError> {
        self.modify(client_id, now_ms, Missing::fresh_if(create), |record| {
            let mut spend = CallSpend::default();
            if let Some(rule) = unproven {
                let bucket = record.unproven.unwrap_or_else(|| Bucket::full(rule, now_ms));
                let (after, decision) = bucket.take(rule, now_ms);
                record.unproven = Some(after);
                spend.unproven = Some(decision);
                if !decision.allowed {
                    return spend;
                }
            }
            if let Some(rule) = quota {
                let window = record.quota.unwrap_or(QuotaWindow { start_ms: 0, used: 0 });
                let (after, decision) = window.spend(rule, now_ms);
                record.quota = Some(after);
                spend.quota = Some(decision);
            }
            spend
        })
    }

    /// Gives back the quota unit of a call (spent at `spent_ms`) that issued no token.
    pub fn give_back_quota(
        &self,
        client_id: &str,
        now_ms: u64,
        rule: &QuotaRule,
        spent_ms: u64,
    ) -> Result<Option<()>, StoreError> {
        self.modify(client_id, now_ms, Missing::Skip, |record| {
            if let Some(window) = record.quota {
                record.quota = Some(window.give_back(rule, spent_ms, now_ms));
            }
        })
    }

    /// Counts a decision made after admission (a miss, a coalesced answer, ...).
    pub fn tally(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        decision: Decision,
    ) -> Result<Option<()>, StoreError> {
        self.modify(client_id, now_ms, Missing::fresh_if(create), |record| record.usage.count(decision))
    }

    /// Adds hits counted by one worker since its last flush, and gives back the tokens
    /// its lease did not spend (`leftover`: tokens and the fill they were taken on) while
    /// the bucket is still on that fill; after a fill they are dropped, so a lease never
    /// makes the bucket admit more than it would have.
    pub fn settle(
        &self,
        client_id: &str,
        create: bool,
        tally: &HitTally,
        leftover: Option<(u64, u64)>,
        rule: Option<&BucketRule>,
        now_ms: u64,
    ) -> Result<Option<()>, StoreError> {
        self.modify(client_id, tally.last_seen_ms, Missing::fresh_if(create), |record| {
            record.usage.requests = record.usage.requests.saturating_add(tally.hits);
            record.usage.decisions.count(Decision::Hit, tally.hits);
            if let (Some(_), Some(rule), Some(bucket)) = (leftover, rule, record.bucket) {
                record.bucket = Some(give_back(bucket, rule, now_ms, leftover));
            }
        })
    }

    /// Records that the IdP answered the client `429`: no call for it before `until_ms` (a
    /// later deadline never shortens).
    pub fn back_off(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        until_ms: u64,
    ) -> Result<Option<()>, StoreError> {
        self.modify(client_id, now_ms, Missing::fresh_if(create), |record| {
            record.backoff_until_ms = record.backoff_until_ms.max(until_ms);
        })
    }

    /// Counts a token the IdP issued for the client; `window_ms` is the counting window.
    pub fn issued(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        window_ms: u64,
    ) -> Result<Option<()>, StoreError> {
        self.modify(client_id, now_ms, Missing::fresh_if(create), |record| {
            let usage = &mut record.usage;
            let start = window_start_of(window_ms, now_ms);
            if usage.issued_window_start_ms != start {
                usage.issued_window_start_ms = start;
                usage.issued_window = 0;
            }
            usage.issued_window = usage.issued_window.saturating_add(1);
            usage.issued_total = usage.issued_total.saturating_add(1);
        })
    }

    /// Counts one IdP call against the client's quota, if the quota allows it. `None` when
    /// the client has no record here and `create` is false.
    pub fn spend_quota(
        &self,
        client_id: &str,
        now_ms: u64,
        create: bool,
        rule: &QuotaRule,
    ) -> Result<Option<QuotaDecision>, StoreError> {
        Ok(self.spend_call(client_id, now_ms, create, None, Some(rule))?.and_then(|spend| spend.quota))
    }
}

/// The bucket at `now_ms` with a lease's `leftover` (tokens, the fill they were taken on)
/// back in it, while it is still on that fill; after a fill they are dropped, so a lease
/// never makes the bucket admit more than it would have.
fn give_back(bucket: Bucket, rule: &BucketRule, now_ms: u64, leftover: Option<(u64, u64)>) -> Bucket {
    let bucket = bucket.refilled(rule, now_ms);
    match leftover {
        Some((tokens, last_fill_ms)) if bucket.last_fill_ms == last_fill_ms => {
            Bucket { tokens: bucket.tokens.saturating_add(tokens).min(rule.max_tokens), ..bucket }
        }
        _ => bucket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DecisionCounts;
    use crate::host::fake::FakeHost;
    use crate::store::Store;

    const RATE: BucketRule = BucketRule { max_tokens: 5, tokens_per_fill: 5, fill_interval_ms: 60_000 };
    const QUOTA: QuotaRule = QuotaRule { tokens: 2, window_ms: 86_400_000 };

    const CHARGE: Admission = Admission { charge: true, count_request: true, expected: None };

    /// 10,000 tokens, 10 more every second.
    const BIG: BucketRule = BucketRule { max_tokens: 10_000, tokens_per_fill: 10, fill_interval_ms: 1_000 };

    fn remaining_after_one(table: &ClientTable<'_>, now: u64) -> u64 {
        let state = table.admit("c1", now, true, (Some(&BIG), None), None).unwrap().unwrap();
        state.rate.unwrap().1.remaining
    }

    /// A trusted-client table on a fresh fake host at time 0.
    fn with_table(test: impl FnOnce(&ClientTable<'_>)) {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        test(&ClientTable::new(&store, "tg", Standing::Trusted, 16));
    }

    #[test]
    fn a_lease_is_taken_in_the_same_write_and_its_leftover_given_back_on_the_same_fill() {
        with_table(|table| {
            let (state, lease) = table
                .admit_leasing("c1", 0, true, (Some(&BIG), None), CHARGE, Leasing::Renew { leftover: None })
                .unwrap()
                .unwrap();
            let lease = lease.unwrap();
            // This request sees what a single bucket would say; the shared record holds the rest.
            assert_eq!(state.rate.unwrap().1.remaining, 9_999);
            assert_eq!(lease.tokens, 64);
            assert_eq!(lease.limits.rate.unwrap().1.remaining, 9_999 - 64);
            assert_eq!(lease.valid_until_ms, LEASE_MS, "at most one tick");
            let tally = HitTally { hits: 0, last_seen_ms: 0 };
            table.settle("c1", true, &tally, Some((64, lease.last_fill_ms)), Some(&BIG), 500).unwrap();
            assert_eq!(remaining_after_one(table, 500), 9_998, "nothing lost");
        });
    }

    #[test]
    fn a_leftover_from_before_a_fill_is_dropped_never_over_admitting() {
        with_table(|table| {
            let (_, lease) = table
                .admit_leasing("c1", 0, true, (Some(&BIG), None), CHARGE, Leasing::Renew { leftover: None })
                .unwrap()
                .unwrap();
            let lease = lease.unwrap();
            let tally = HitTally { hits: 0, last_seen_ms: 0 };
            table.settle("c1", true, &tally, lease.leftover(), Some(&BIG), 1_500).unwrap();
            // 9935 + one fill of 10, without the 64 leftover.
            assert_eq!(remaining_after_one(table, 1_500), 9_944);
        });
    }

    #[test]
    fn no_lease_near_the_limit_or_when_refused() {
        with_table(|table| {
            for _ in 0..5 {
                let (_, lease) = table
                    .admit_leasing(
                        "c1",
                        0,
                        true,
                        (Some(&RATE), None),
                        CHARGE,
                        Leasing::Renew { leftover: None },
                    )
                    .unwrap()
                    .unwrap();
                assert_eq!(lease, None, "a small bucket is taken one request at a time");
            }
            let (state, lease) = table
                .admit_leasing("c1", 0, true, (Some(&RATE), None), CHARGE, Leasing::Renew { leftover: None })
                .unwrap()
                .unwrap();
            assert!(!state.rate.unwrap().1.allowed);
            assert_eq!(lease, None);
        });
    }

    #[test]
    fn record_round_trip() {
        let r = ClientRecord {
            client_id: "c1".into(),
            last_seen_ms: 7,
            bucket: Some(Bucket { tokens: 3, last_fill_ms: 5 }),
            unproven: Some(Bucket { tokens: 8, last_fill_ms: 6 }),
            quota: Some(QuotaWindow { start_ms: 0, used: 9 }),
            backoff_until_ms: 1_234,
            usage: Usage {
                requests: 12,
                decisions: DecisionCounts([9, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0]),
                issued_window: 2,
                ..Usage::default()
            },
        };
        assert_eq!(ClientRecord::decode(&r.encode()), Some(r));
        assert_eq!(ClientRecord::decode(&[]), None);
        assert_eq!(ClientRecord::decode(&[1, 200, 0]), None);
    }

    #[test]
    fn five_per_minute_exactly_across_cas_conflicts() {
        let host = FakeHost::new(1_000_000);
        let store = Store::new(&host, &host, "tg");
        let table = ClientTable::new(&store, "tg", Standing::Trusted, 100);
        let mut allowed = 0;
        for i in 0..8 {
            host.inject_cas_conflicts(i % 3);
            let state = table.admit("c1", 1_000_000, true, (Some(&RATE), None), None).unwrap().unwrap();
            let (_, d) = state.rate.unwrap();
            allowed += u32::from(d.allowed);
        }
        assert_eq!(allowed, 5);
        // Another client is unaffected.
        assert!(
            table
                .admit("c2", 1_000_000, true, (Some(&RATE), None), None)
                .unwrap()
                .unwrap()
                .rate
                .unwrap()
                .1
                .allowed
        );
    }

    #[test]
    fn quota_counts_only_spent_calls() {
        let host = FakeHost::new(1_000_000);
        let store = Store::new(&host, &host, "tg");
        let table = ClientTable::new(&store, "tg", Standing::Trusted, 100);
        for _ in 0..5 {
            let state = table.admit("c1", 1_000_000, true, (None, Some(&QUOTA)), None).unwrap().unwrap();
            assert_eq!(state.quota.unwrap().1.remaining, 2, "admission does not spend");
        }
        assert!(table.spend_quota("c1", 1_000_000, true, &QUOTA).unwrap().unwrap().allowed);
        assert!(table.spend_quota("c1", 1_000_001, true, &QUOTA).unwrap().unwrap().allowed);
        let refused = table.spend_quota("c1", 1_000_002, true, &QUOTA).unwrap().unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.reset_ms, 86_400_000);
        assert_eq!(table.get("c1").unwrap().unwrap().quota.unwrap().used, 2);
    }

    #[test]
    fn an_empty_unproven_bucket_spends_no_quota_and_both_are_one_write() {
        let host = FakeHost::new(1_000_000);
        let store = Store::new(&host, &host, "tg");
        let table = ClientTable::new(&store, "tg", Standing::Trusted, 16);
        let one = BucketRule { max_tokens: 1, tokens_per_fill: 1, fill_interval_ms: 60_000 };
        table.admit("c1", 1_000_000, true, (None, Some(&QUOTA)), None).unwrap();
        let writes = host.writes();
        let first = table.spend_call("c1", 1_000_000, true, Some(&one), Some(&QUOTA)).unwrap().unwrap();
        assert_eq!(host.writes(), writes + 1, "the unproven call and the quota unit in one write");
        assert!(first.unproven.unwrap().allowed && first.quota.unwrap().allowed);
        let second = table.spend_call("c1", 1_000_001, true, Some(&one), Some(&QUOTA)).unwrap().unwrap();
        assert!(!second.unproven.unwrap().allowed);
        assert_eq!(second.quota, None, "refused: no quota unit taken");
        assert_eq!(table.get("c1").unwrap().unwrap().quota.unwrap().used, 1);
    }

    #[test]
    fn a_full_table_replaces_the_client_seen_least_recently() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        let table = ClientTable::new(&store, "tg", Standing::Trusted, 2);
        table.admit("old", 1, true, (Some(&RATE), None), None).unwrap();
        table.admit("new", 2, true, (Some(&RATE), None), None).unwrap();
        table.admit("newest", 3, true, (Some(&RATE), None), None).unwrap();
        assert!(table.get("old").unwrap().is_none());
        assert!(table.get("new").unwrap().is_some());
        assert!(table.get("newest").unwrap().is_some());
    }
}

#[cfg(test)]
mod interleaving {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::host::fake::FakeHost;
    use crate::store::Store;

    const RATE: BucketRule = BucketRule { max_tokens: 10, tokens_per_fill: 10, fill_interval_ms: 3_600_000 };

    fn admit(host: &FakeHost) -> Result<bool, StoreError> {
        let store = Store::new(host, host, "tg");
        let table = ClientTable::new(&store, "tg", Standing::Trusted, 16);
        Ok(table
            .admit("c1", 1_000, true, (Some(&RATE), None), None)?
            .and_then(|s| s.rate)
            .is_some_and(|(_, d)| d.allowed))
    }

    /// Another worker admits the same client between any two of this worker's writes,
    /// including while the record is first created: no request is lost or counted twice.
    /// (Inside the creation lock the other worker would wait; this single thread cannot,
    /// so there it goes after.)
    #[test]
    fn racing_workers_never_lose_or_double_count_a_request() {
        for nth in 0..8 {
            for prior in 0..2u64 {
                let host = FakeHost::new(1_000);
                for _ in 0..prior {
                    assert!(admit(&host).unwrap());
                }
                let done = Rc::new(Cell::new(0u64));
                let counted = done.clone();
                host.interleave_before_set(nth, move |other| {
                    for _ in 0..2 {
                        if admit(other).unwrap_or(false) {
                            counted.set(counted.get() + 1);
                        }
                    }
                });
                assert!(admit(&host).unwrap());
                host.clear_interleaving();
                while done.get() < 2 {
                    assert!(admit(&host).unwrap());
                    done.set(done.get() + 1);
                }
                let store = Store::new(&host, &host, "tg");
                let record =
                    ClientTable::new(&store, "tg", Standing::Trusted, 16).get("c1").unwrap().unwrap();
                assert_eq!(
                    record.bucket.unwrap().tokens,
                    10 - 3 - prior,
                    "interleaved before set {nth}, {prior} earlier"
                );
            }
        }
    }
}
