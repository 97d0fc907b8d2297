//! This worker's hits not yet added to their clients' shared records, and the admission it
//! took ahead for them. A hit for a client without rate limit or quota needs no shared
//! counter to be answered, so its count waits here and is added with one CAS per client on
//! the root's next tick (every 20 ms) instead of a shared read and write per hit. The usage
//! report waits out a tick before it reads, so it still shows every hit. Bounded: when full,
//! hits are counted in shared data at once.
//!
//! A hit for a client with limits takes a token from the client's shared bucket with CAS.
//! When that bucket is far from empty, the same CAS takes a few more tokens (a [`Lease`]),
//! and this worker's next hits for the client spend them without touching shared data until
//! the next flush, which gives back what is left. Tokens are taken before they are spent,
//! so the workers together never admit more than the bucket holds; near the limit (fewer
//! than [`LEASE_MIN_AVAILABLE`] tokens left) every request goes to the shared bucket, so
//! small limits are exact request by request.

use std::collections::HashMap;

use crate::limits::LimitState;

/// A bucket with fewer tokens than this left is taken from one request at a time: limits of
/// up to 1000 requests per window are exact request by request, `x-ratelimit-remaining`
/// included.
pub const LEASE_MIN_AVAILABLE: u64 = 1_000;
/// A lease takes at most this share of the tokens left (1/16) ...
const LEASE_SHARE: u64 = 16;
/// ... and at most this many.
const LEASE_MAX: u64 = 64;
/// How often the host ticks each worker (`worker::TICK`), flushing its pending hits and
/// giving back what its leases did not spend.
pub const TICK_MS: u64 = 20;
/// A lease is spent for at most one tick: it is given back on the next.
pub const LEASE_MS: u64 = TICK_MS;

/// How many tokens to lease when `available` are left in the shared bucket after this
/// request's own.
pub fn lease_size(available: u64) -> u64 {
    if available < LEASE_MIN_AVAILABLE { 0 } else { (available / LEASE_SHARE).min(LEASE_MAX) }
}

/// Hits of one client since the last flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HitTally {
    pub hits: u64,
    pub last_seen_ms: u64,
}

/// Admission taken ahead from a client's shared record for this worker's next hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Bucket tokens still held (0 for a client with a quota and no rate limit).
    pub tokens: u64,
    /// The limits as the shared record stood after the lease was taken; the rate's
    /// `remaining` is what was left in shared data, without the leased tokens.
    pub limits: LimitState,
    /// The bucket's last fill when the lease was taken: leftover tokens go back only while
    /// the bucket is still on that fill (after a fill they are dropped, never over-admitted).
    pub last_fill_ms: u64,
    /// Spent until then at the latest (the next fill, or [`LEASE_MS`]).
    pub valid_until_ms: u64,
}

impl Lease {
    /// The leftover tokens to give back to the bucket at a flush, with the fill they were
    /// taken on.
    pub fn leftover(&self) -> Option<(u64, u64)> {
        (self.tokens > 0 && self.limits.rate.is_some()).then_some((self.tokens, self.last_fill_ms))
    }
}

#[derive(Debug, Default)]
struct Pending {
    tally: HitTally,
    lease: Option<Lease>,
}

#[derive(Debug, Default)]
pub struct PendingHits {
    by_client: HashMap<String, Pending>,
    capacity: usize,
}

impl PendingHits {
    /// Holds at most `capacity` distinct clients between flushes.
    pub fn new(capacity: usize) -> PendingHits {
        PendingHits { by_client: HashMap::new(), capacity }
    }

    /// Room for `client_id` (known, or a free place).
    pub fn has_room(&self, client_id: &str) -> bool {
        self.by_client.len() < self.capacity || self.by_client.contains_key(client_id)
    }

    /// Counts one hit; `false` when the table is full (count it in shared data instead).
    pub fn record(&mut self, client_id: &str, now_ms: u64) -> bool {
        if !self.has_room(client_id) {
            return false;
        }
        let Some(pending) = place(&mut self.by_client, client_id) else {
            return false;
        };
        pending.tally.hits = pending.tally.hits.saturating_add(1);
        pending.tally.last_seen_ms = pending.tally.last_seen_ms.max(now_ms);
        true
    }

    /// A hit admitted from the client's lease, counted: the limits it reports, or `None`
    /// when there is no lease to spend (then the shared bucket decides).
    pub fn spend_lease(&mut self, client_id: &str, now_ms: u64) -> Option<LimitState> {
        let pending = self.by_client.get_mut(client_id)?;
        let lease = pending.lease.as_mut().filter(|l| now_ms < l.valid_until_ms)?;
        let mut limits = lease.limits;
        if let Some((_, decision)) = &mut limits.rate {
            lease.tokens = lease.tokens.checked_sub(1)?;
            decision.remaining = decision.remaining.saturating_add(lease.tokens);
        }
        pending.tally.hits = pending.tally.hits.saturating_add(1);
        pending.tally.last_seen_ms = pending.tally.last_seen_ms.max(now_ms);
        Some(limits)
    }

    /// Ends the client's lease (spent or past its time): its leftover, to give back.
    pub fn end_lease(&mut self, client_id: &str) -> Option<(u64, u64)> {
        self.by_client.get_mut(client_id)?.lease.take()?.leftover()
    }

    /// Keeps `lease` for the client's next hits; `false` when the table is full (the caller
    /// must not have taken tokens then: see [`PendingHits::has_room`]).
    pub fn hold(&mut self, client_id: &str, lease: Lease) -> bool {
        if !self.has_room(client_id) {
            return false;
        }
        place(&mut self.by_client, client_id).map(|p| p.lease = Some(lease)).is_some()
    }

    /// Puts back a drained tally whose flush failed (the table held it before the drain,
    /// so this stays within the bound). Its lease is not put back: those tokens are lost
    /// to the bucket, which can only under-admit.
    pub fn restore(&mut self, client_id: String, tally: HitTally) {
        let pending = self.by_client.entry(client_id).or_default();
        pending.tally.hits = pending.tally.hits.saturating_add(tally.hits);
        pending.tally.last_seen_ms = pending.tally.last_seen_ms.max(tally.last_seen_ms);
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Everything counted and leased so far; the table is empty afterwards.
    pub fn drain(&mut self) -> Vec<(String, HitTally, Option<Lease>)> {
        self.by_client.drain().map(|(id, p)| (id, p.tally, p.lease)).collect()
    }
}

/// The client's place, made if missing, without allocating when it is there.
fn place<'m>(map: &'m mut HashMap<String, Pending>, client_id: &str) -> Option<&'m mut Pending> {
    if !map.contains_key(client_id) {
        map.insert(client_id.to_owned(), Pending::default());
    }
    map.get_mut(client_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_client_and_drains() {
        let mut pending = PendingHits::new(8);
        assert!(pending.record("a", 10));
        assert!(pending.record("a", 30));
        assert!(pending.record("b", 20));
        let mut drained = pending.drain();
        drained.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            drained,
            vec![
                ("a".to_owned(), HitTally { hits: 2, last_seen_ms: 30 }, None),
                ("b".to_owned(), HitTally { hits: 1, last_seen_ms: 20 }, None)
            ]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn a_full_table_refuses_new_clients_but_counts_known_ones() {
        let mut pending = PendingHits::new(2);
        assert!(pending.record("a", 1));
        assert!(pending.record("b", 1));
        assert!(!pending.record("c", 1));
        assert!(pending.record("a", 2));
        assert_eq!(pending.drain().len(), 2);
        assert!(pending.record("c", 3));
    }

    fn lease(tokens: u64, shared_remaining: u64) -> Lease {
        use crate::config::BucketRule;
        use crate::limits::BucketDecision;
        let rule = BucketRule { max_tokens: 1_000, tokens_per_fill: 1_000, fill_interval_ms: 60_000 };
        let decision = BucketDecision { allowed: true, remaining: shared_remaining, next_fill_ms: 60_000 };
        Lease {
            tokens,
            limits: LimitState { rate: Some((rule, decision)), ..LimitState::default() },
            last_fill_ms: 0,
            valid_until_ms: 100,
        }
    }

    #[test]
    fn a_lease_is_spent_token_by_token_reporting_what_a_single_bucket_would() {
        let mut pending = PendingHits::new(4);
        assert_eq!(pending.spend_lease("a", 10), None, "nothing leased yet");
        assert!(pending.hold("a", lease(3, 900)));
        // The request that took the lease saw 903 left; the next ones see 902, 901, 900.
        let remaining: Vec<u64> = (0..4)
            .map_while(|_| pending.spend_lease("a", 10))
            .map(|l| l.rate.map_or(0, |(_, d)| d.remaining))
            .collect();
        assert_eq!(remaining, [902, 901, 900]);
        let drained = pending.drain();
        assert_eq!(drained[0].1.hits, 3);
        assert_eq!(drained[0].2.and_then(|l| l.leftover()), None, "all spent");
    }

    #[test]
    fn a_lease_ends_at_its_deadline_and_gives_back_its_leftover() {
        let mut pending = PendingHits::new(4);
        assert!(pending.hold("a", lease(5, 900)));
        assert!(pending.spend_lease("a", 99).is_some());
        assert_eq!(pending.spend_lease("a", 100), None, "past valid_until_ms");
        let drained = pending.drain();
        assert_eq!(drained[0].2.and_then(|l| l.leftover()), Some((4, 0)));
    }

    #[test]
    fn leases_only_far_from_the_limit() {
        assert_eq!(lease_size(0), 0);
        assert_eq!(lease_size(LEASE_MIN_AVAILABLE - 1), 0);
        assert_eq!(lease_size(LEASE_MIN_AVAILABLE), LEASE_MIN_AVAILABLE / LEASE_SHARE);
        assert_eq!(lease_size(1_000_000), LEASE_MAX);
        assert!(!PendingHits::new(0).hold("a", lease(1, 1)), "bounded");
    }
}
