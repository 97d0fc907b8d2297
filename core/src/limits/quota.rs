//! The per-client issuance quota: at most `tokens` IdP calls per fixed window aligned to
//! the Unix epoch (a `1d` window runs midnight to midnight UTC, as Auth0's daily quota).

use crate::config::QuotaRule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindow {
    pub start_ms: u64,
    /// IdP calls counted in this window.
    pub used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    pub allowed: bool,
    pub remaining: u64,
    /// When the window ends (ms since the epoch).
    pub reset_ms: u64,
}

pub fn window_start(rule: &QuotaRule, now_ms: u64) -> u64 {
    now_ms - now_ms % rule.window_ms.max(1)
}

impl QuotaWindow {
    /// The window `now_ms` falls in: this one, or a fresh one when it has ended.
    pub fn current(self, rule: &QuotaRule, now_ms: u64) -> QuotaWindow {
        let start_ms = window_start(rule, now_ms);
        if start_ms == self.start_ms { self } else { QuotaWindow { start_ms, used: 0 } }
    }

    /// Counts one IdP call if the quota allows it.
    pub fn spend(self, rule: &QuotaRule, now_ms: u64) -> (QuotaWindow, QuotaDecision) {
        let window = self.current(rule, now_ms);
        let allowed = window.used < rule.tokens;
        let after = QuotaWindow { used: window.used + u64::from(allowed), ..window };
        (after, after.decision(rule, allowed))
    }

    /// Gives back a unit spent at `spent_ms` for a call that issued no token, while the
    /// window it was spent in is still the current one.
    pub fn give_back(self, rule: &QuotaRule, spent_ms: u64, now_ms: u64) -> QuotaWindow {
        let window = self.current(rule, now_ms);
        if window.start_ms == window_start(rule, spent_ms) {
            QuotaWindow { used: window.used.saturating_sub(1), ..window }
        } else {
            window
        }
    }

    /// The quota as it stands, without spending (for headers on hits).
    pub fn peek(self, rule: &QuotaRule, now_ms: u64) -> QuotaDecision {
        let window = self.current(rule, now_ms);
        window.decision(rule, window.used < rule.tokens)
    }

    fn decision(self, rule: &QuotaRule, allowed: bool) -> QuotaDecision {
        QuotaDecision {
            allowed,
            remaining: rule.tokens.saturating_sub(self.used),
            reset_ms: self.start_ms.saturating_add(rule.window_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn a_unit_given_back_in_its_window_is_spendable_again_but_not_in_the_next() {
        let rule = QuotaRule { tokens: 1, window_ms: DAY };
        let now = 19_000 * DAY + 5_000;
        let (w, d) = QuotaWindow { start_ms: 0, used: 0 }.spend(&rule, now);
        assert!(d.allowed);
        assert!(!w.peek(&rule, now).allowed);
        let w = w.give_back(&rule, now, now + 10);
        assert!(w.peek(&rule, now + 10).allowed);
        // Spent yesterday, given back today: today's window is untouched.
        let (w, _) = QuotaWindow { start_ms: 0, used: 0 }.spend(&rule, now);
        let (w, _) = w.spend(&rule, now + DAY);
        assert_eq!(w.give_back(&rule, now, now + DAY).used, 1);
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let rule = QuotaRule { tokens: 2, window_ms: DAY };
        let now = 19_000 * DAY + 5_000;
        let w = QuotaWindow { start_ms: 0, used: 0 };
        let (w, d) = w.spend(&rule, now);
        assert_eq!((w.start_ms, d.allowed, d.remaining, d.reset_ms), (19_000 * DAY, true, 1, 19_001 * DAY));
        let (w, d) = w.spend(&rule, now + 1);
        assert_eq!((d.allowed, d.remaining), (true, 0));
        let (w, d) = w.spend(&rule, now + 2);
        assert_eq!((d.allowed, d.remaining), (false, 0));
        assert!(!w.peek(&rule, now + 3).allowed);
        // The next window starts fresh.
        let (_, d) = w.spend(&rule, 19_001 * DAY);
        assert_eq!((d.allowed, d.remaining), (true, 1));
    }

    #[test]
    fn zero_tokens_refuses_everything() {
        let rule = QuotaRule { tokens: 0, window_ms: DAY };
        let (_, d) = QuotaWindow { start_ms: 0, used: 0 }.spend(&rule, 5);
        assert!(!d.allowed);
    }

    proptest! {
        #[test]
        fn never_more_than_tokens_per_window(tokens in 0u64..20, window in 1u64..100_000, steps in proptest::collection::vec(0u64..10_000, 1..200)) {
            let rule = QuotaRule { tokens, window_ms: window };
            let mut now = 1_000_000u64;
            let mut w = QuotaWindow { start_ms: 0, used: 0 };
            let mut per_window = std::collections::HashMap::new();
            for step in steps {
                now += step;
                let (after, d) = w.spend(&rule, now);
                prop_assert!(d.reset_ms > now && d.reset_ms <= now + window);
                if d.allowed {
                    *per_window.entry(window_start(&rule, now)).or_insert(0u64) += 1;
                }
                w = after;
            }
            prop_assert!(per_window.values().all(|n| *n <= tokens));
        }
    }
}
