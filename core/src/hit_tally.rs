//! This worker's hits not yet added to their clients' shared records. A hit for a client
//! without rate limit or quota needs no shared counter to be answered, so its count waits
//! here and is added with one CAS per client on the root's next tick (every 20 ms) instead
//! of a shared read and write per hit. The usage report waits out a tick before it reads,
//! so it still shows every hit. Bounded: when full, hits are counted in shared data at once.

use std::collections::HashMap;

/// Hits of one client since the last flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HitTally {
    pub hits: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Default)]
pub struct PendingHits {
    by_client: HashMap<String, HitTally>,
    capacity: usize,
}

impl PendingHits {
    /// Holds at most `capacity` distinct clients between flushes.
    pub fn new(capacity: usize) -> PendingHits {
        PendingHits { by_client: HashMap::new(), capacity }
    }

    /// Counts one hit; `false` when the table is full (count it in shared data instead).
    pub fn record(&mut self, client_id: &str, now_ms: u64) -> bool {
        if !self.by_client.contains_key(client_id) {
            if self.by_client.len() >= self.capacity {
                return false;
            }
            self.by_client.insert(client_id.to_owned(), HitTally::default());
        }
        let Some(tally) = self.by_client.get_mut(client_id) else {
            return false;
        };
        tally.hits = tally.hits.saturating_add(1);
        tally.last_seen_ms = tally.last_seen_ms.max(now_ms);
        true
    }

    /// Puts back a drained tally whose flush failed (the table held it before the drain,
    /// so this stays within the bound).
    pub fn restore(&mut self, client_id: String, tally: HitTally) {
        let entry = self.by_client.entry(client_id).or_default();
        entry.hits = entry.hits.saturating_add(tally.hits);
        entry.last_seen_ms = entry.last_seen_ms.max(tally.last_seen_ms);
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Everything counted so far; the table is empty afterwards.
    pub fn drain(&mut self) -> Vec<(String, HitTally)> {
        self.by_client.drain().collect()
    }
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
                ("a".to_owned(), HitTally { hits: 2, last_seen_ms: 30 }),
                ("b".to_owned(), HitTally { hits: 1, last_seen_ms: 20 })
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
}
