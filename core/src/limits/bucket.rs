//! The per-client request rate limit: a token bucket in Envoy's own words (`max_tokens`,
//! `tokens_per_fill` every `fill_interval`). Fills are discrete, on a grid that starts when
//! the bucket is first used, so every worker computes the same state from the same record.

use crate::config::BucketRule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub tokens: u64,
    /// Time of the last fill on the grid (ms since the epoch).
    pub last_fill_ms: u64,
}

/// What one request did to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDecision {
    pub allowed: bool,
    /// Tokens left after this request.
    pub remaining: u64,
    /// When the next token arrives (ms since the epoch); `now` when the bucket is full.
    pub next_fill_ms: u64,
}

impl Bucket {
    pub fn full(rule: &BucketRule, now_ms: u64) -> Bucket {
        Bucket { tokens: rule.max_tokens, last_fill_ms: now_ms }
    }

    /// The bucket with every fill up to `now_ms` applied, read against `rule` as it is
    /// now: a balance above its maximum (a limit lowered by a configuration change) is
    /// clamped at once. A clock that went backwards adds nothing.
    pub fn refilled(self, rule: &BucketRule, now_ms: u64) -> Bucket {
        let interval = rule.fill_interval_ms.max(1);
        let fills = now_ms.saturating_sub(self.last_fill_ms) / interval;
        if fills == 0 {
            return Bucket { tokens: self.tokens.min(rule.max_tokens), ..self };
        }
        Bucket {
            tokens: self
                .tokens
                .saturating_add(fills.saturating_mul(rule.tokens_per_fill))
                .min(rule.max_tokens),
            last_fill_ms: self.last_fill_ms.saturating_add(fills.saturating_mul(interval)),
        }
    }

    /// The bucket as a shared-data value (tokens, last fill; little-endian).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.last_fill_ms.to_le_bytes());
        out
    }

    /// `None` for bytes that are not a bucket (a value just created empty).
    pub fn from_bytes(bytes: &[u8]) -> Option<Bucket> {
        let mut r = crate::codec::Reader(bytes);
        Some(Bucket { tokens: r.u64()?, last_fill_ms: r.u64()? })
    }

    /// What [`Bucket::take`] would decide, taking nothing: for requests charged only once
    /// their credentials are proven.
    pub fn peek(self, rule: &BucketRule, now_ms: u64) -> BucketDecision {
        let bucket = self.refilled(rule, now_ms);
        bucket.decision(rule, bucket.tokens > 0, now_ms)
    }

    /// Takes one token if there is one.
    pub fn take(self, rule: &BucketRule, now_ms: u64) -> (Bucket, BucketDecision) {
        let bucket = self.refilled(rule, now_ms);
        let allowed = bucket.tokens > 0;
        let after = Bucket { tokens: bucket.tokens.saturating_sub(u64::from(allowed)), ..bucket };
        (after, after.decision(rule, allowed, now_ms))
    }

    /// The decision with this bucket as what is left.
    fn decision(self, rule: &BucketRule, allowed: bool, now_ms: u64) -> BucketDecision {
        let next_fill_ms = if self.tokens >= rule.max_tokens {
            now_ms
        } else {
            self.last_fill_ms.saturating_add(rule.fill_interval_ms)
        };
        BucketDecision { allowed, remaining: self.tokens, next_fill_ms }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RULE: BucketRule = BucketRule { max_tokens: 5, tokens_per_fill: 5, fill_interval_ms: 60_000 };

    #[test]
    fn a_lowered_maximum_clamps_the_balance_at_once() {
        let thirty = BucketRule { max_tokens: 30, tokens_per_fill: 30, fill_interval_ms: 60_000 };
        let (bucket, _) = Bucket::full(&thirty, 1_000).take(&thirty, 1_000);
        assert_eq!(bucket.tokens, 29);
        // The same record read against a limit of 5, within the same fill interval.
        assert_eq!(bucket.peek(&RULE, 2_000).remaining, 5);
        let (after, d) = bucket.take(&RULE, 2_000);
        assert_eq!((d.allowed, d.remaining, after.tokens), (true, 4, 4));
    }

    #[test]
    fn five_per_minute_allows_five_then_refuses_until_the_fill() {
        let mut bucket = Bucket::full(&RULE, 1_000);
        for expected_remaining in (0..5).rev() {
            let (b, d) = bucket.take(&RULE, 2_000);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            bucket = b;
        }
        let (b, d) = bucket.take(&RULE, 3_000);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.next_fill_ms, 61_000);
        let (_, d) = b.take(&RULE, 61_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn partial_fills_and_the_cap() {
        let rule = BucketRule { max_tokens: 10, tokens_per_fill: 2, fill_interval_ms: 1_000 };
        let empty = Bucket { tokens: 0, last_fill_ms: 0 };
        assert_eq!(empty.refilled(&rule, 999).tokens, 0);
        assert_eq!(empty.refilled(&rule, 1_000).tokens, 2);
        assert_eq!(empty.refilled(&rule, 3_500), Bucket { tokens: 6, last_fill_ms: 3_000 });
        assert_eq!(empty.refilled(&rule, 1_000_000).tokens, 10);
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let bucket = Bucket { tokens: 1, last_fill_ms: 10_000 };
        assert_eq!(bucket.refilled(&RULE, 0), bucket);
    }

    proptest! {
        /// Over any sequence of requests, allowed ≤ max_tokens + fills × tokens_per_fill.
        #[test]
        fn never_allows_more_than_the_rule(
            max in 1u64..50, per_fill in 1u64..50, interval in 1u64..10_000,
            steps in proptest::collection::vec(0u64..5_000, 1..300),
        ) {
            let rule = BucketRule { max_tokens: max, tokens_per_fill: per_fill, fill_interval_ms: interval };
            let start = 1_000_000u64;
            let mut now = start;
            let mut bucket = Bucket::full(&rule, now);
            let mut allowed = 0u64;
            for step in steps {
                now += step;
                let (b, d) = bucket.take(&rule, now);
                prop_assert!(d.remaining <= max);
                prop_assert!(d.next_fill_ms >= now);
                prop_assert!(d.next_fill_ms <= now + interval);
                allowed += u64::from(d.allowed);
                bucket = b;
            }
            let fills = (now - start) / interval;
            prop_assert!(allowed <= max + fills * per_fill);
        }

        /// Whatever a record holds (written under another configuration), it is read
        /// within the current maximum.
        #[test]
        fn any_balance_reads_within_the_current_maximum(
            tokens in 0u64..1_000, last in 0u64..100_000, max in 1u64..50, at in 0u64..200_000,
        ) {
            let rule = BucketRule { max_tokens: max, tokens_per_fill: 1, fill_interval_ms: 60_000 };
            let bucket = Bucket { tokens, last_fill_ms: last };
            prop_assert!(bucket.peek(&rule, at).remaining <= max);
            prop_assert!(bucket.take(&rule, at).1.remaining < max);
        }

        /// A refused request changes nothing but the fill bookkeeping.
        #[test]
        fn a_refusal_costs_nothing(per_fill in 1u64..10, interval in 1u64..10_000, at in 0u64..100_000) {
            let rule = BucketRule { max_tokens: 3, tokens_per_fill: per_fill, fill_interval_ms: interval };
            let empty = Bucket { tokens: 0, last_fill_ms: 0 };
            let (after, d) = empty.take(&rule, at);
            if !d.allowed {
                prop_assert_eq!(after, empty.refilled(&rule, at));
            }
        }
    }
}
