//! A fixed table of slots in shared data. Each fingerprint has two candidate slots
//! (two-choice hashing): a lookup reads at most two keys, and two keys colliding in one
//! slot do not evict each other, which a single slot per key would do on every request.
//! Replacement: the key's own slot, then an empty one, then an expired one, then the one
//! that expires first. The full fingerprint inside the value tells a collision from a hit.

use std::marker::PhantomData;

use crate::cache::CacheEntry;
use crate::fingerprint::Fingerprint;
use crate::host::{HostError, SharedStore, StoreError};

/// Conditional writes are retried this many times when another worker wrote in between.
const CAS_ATTEMPTS: u32 = 4;

/// What a slot table stores: an entry for one fingerprint, valid until it expires.
pub trait SlotEntry: Sized {
    /// The table's name in shared-data keys (`<prefix>:<KIND>:<slot>`).
    const KIND: &'static str;
    fn fingerprint(&self) -> &Fingerprint;
    fn expires_at_ms(&self) -> u64;
    fn encode(&self) -> Vec<u8>;
    /// `None` for bytes that are not an entry of this kind (the slot counts as empty).
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// Where a table's entries live: `count` shared-data keys `<prefix>:<table>:<n>`
/// (`crate::keys`), and for each entry two candidates picked by two words of its hash.
/// Every slot table uses it: the caches here and the client tables (`crate::clients`).
#[derive(Debug, Clone, Copy)]
pub struct Slots<'a> {
    prefix: &'a str,
    table: &'static str,
    count: u32,
}

impl<'a> Slots<'a> {
    pub fn new(prefix: &'a str, table: &'static str, count: u32) -> Slots<'a> {
        Slots { prefix, table, count: count.max(1) }
    }

    /// The two candidate slots of an entry whose hash gives these two words (distinct
    /// whenever the table has two slots).
    pub fn candidates(&self, first_word: u64, second_word: u64) -> [String; 2] {
        let count = u64::from(self.count);
        let first = first_word % count;
        let mut second = second_word % count;
        if second == first {
            second = (first + 1) % count;
        }
        [first, second].map(|slot| crate::keys::slot(self.prefix, self.table, slot))
    }

    /// Every slot's key (for reports that read the whole table).
    pub fn every(&self) -> impl Iterator<Item = String> + '_ {
        (0..u64::from(self.count)).map(|slot| crate::keys::slot(self.prefix, self.table, slot))
    }
}

pub struct SlotTable<'a, E> {
    store: &'a dyn SharedStore,
    slots: Slots<'a>,
    entry: PhantomData<E>,
}

/// The shared token cache.
pub type TokenTable<'a> = SlotTable<'a, CacheEntry>;

impl<'a, E: SlotEntry> SlotTable<'a, E> {
    pub fn new(store: &'a dyn SharedStore, key_prefix: &'a str, slots: u32) -> SlotTable<'a, E> {
        SlotTable { store, slots: Slots::new(key_prefix, E::KIND, slots), entry: PhantomData }
    }

    fn slot_keys(&self, fp: &Fingerprint) -> [String; 2] {
        self.slots.candidates(fp.word(0), fp.word(1))
    }

    /// The entry for `fp`, expired or not (the caller decides what it may serve).
    pub fn get(&self, fp: &Fingerprint) -> Result<Option<E>, HostError> {
        for key in self.slot_keys(fp) {
            if let Some((bytes, _)) = self.store.get(&key)?
                && let Some(entry) = E::decode(&bytes).filter(|e| e.fingerprint() == fp)
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Every entry in the table, expired or not (for reports; a slot that cannot be read
    /// is skipped).
    pub fn entries(&self) -> Vec<E> {
        let values = self.slots.every().filter_map(|key| self.store.get(&key).ok().flatten());
        values.filter_map(|(bytes, _)| E::decode(&bytes)).collect()
    }

    /// Empties every slot whose entry `doomed` picks (`cache::purge`); returns how many.
    /// A slot another worker wrote meanwhile is read again (bounded retries).
    pub fn remove_where(&self, doomed: &dyn Fn(&E) -> bool) -> Result<u64, StoreError> {
        remove_from_slots(self.store, &self.slots, &|bytes| E::decode(bytes).is_some_and(|e| doomed(&e)))
    }

    /// Stores `entry`, replacing by the rule above; bounded retries under contention.
    /// `true` when it took a slot that was empty (the table holds one entry more).
    pub fn put(&self, entry: &E, now_ms: u64) -> Result<bool, StoreError> {
        let slot_of = |bytes: &[u8]| E::decode(bytes).map(|e| (*e.fingerprint(), e.expires_at_ms()));
        put_in_slots(
            self.store,
            &self.slot_keys(entry.fingerprint()),
            entry.fingerprint(),
            &entry.encode(),
            now_ms,
            &slot_of,
        )
    }
}

/// [`SlotTable::remove_where`] for every kind of entry: one copy in the .wasm.
fn remove_from_slots(
    store: &dyn SharedStore,
    slots: &Slots<'_>,
    doomed: &dyn Fn(&[u8]) -> bool,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for key in slots.every() {
        for attempt in 1..=CAS_ATTEMPTS {
            let Some((bytes, cas)) = store.get(&key).map_err(StoreError::Host)? else {
                break;
            };
            if !doomed(&bytes) {
                break;
            }
            match store.set(&key, &[], Some(cas)) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(StoreError::CasMismatch) if attempt < CAS_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Reads the fingerprint and expiry of a slot's value (`None`: not an entry, an empty slot).
type SlotOf = dyn Fn(&[u8]) -> Option<(Fingerprint, u64)>;

/// [`SlotTable::put`] for every kind of entry: one copy of the CAS loop in the .wasm.
/// `slot_of` reads the fingerprint and expiry of a slot's value.
fn put_in_slots(
    store: &dyn SharedStore,
    keys: &[String; 2],
    fp: &Fingerprint,
    value: &[u8],
    now_ms: u64,
    slot_of: &SlotOf,
) -> Result<bool, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let mut candidates = Vec::with_capacity(2);
        for key in keys {
            let current = store.get(key).map_err(StoreError::Host)?;
            let rank = match &current {
                None => Rank::Empty,
                Some((bytes, _)) => match slot_of(bytes) {
                    None => Rank::Empty,
                    Some((other, _)) if other == *fp => Rank::Same,
                    Some((_, expires_at_ms)) if expires_at_ms <= now_ms => Rank::Expired,
                    Some((_, expires_at_ms)) => Rank::Live(expires_at_ms),
                },
            };
            candidates.push((rank, key, current.map(|(_, cas)| cas)));
        }
        let Some((rank, key, cas)) = candidates.into_iter().min_by_key(|(rank, _, _)| *rank) else {
            return Ok(false);
        };
        match store.set(key, value, cas) {
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok(rank == Rank::Empty),
        }
    }
    Err(StoreError::CasMismatch)
}

/// Which slot to take: lower is better; among live entries, the one expiring first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Same,
    Empty,
    Expired,
    Live(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn entry(fp_byte: u8, expires_at_ms: u64) -> CacheEntry {
        let mut fp = [0u8; 32];
        fp[0] = fp_byte;
        fp[8] = fp_byte.wrapping_mul(31);
        CacheEntry {
            fingerprint: Fingerprint(fp),
            issued_at_ms: 0,
            expires_at_ms,
            client_tag: 0,
            sealed_body: b"sealed".to_vec(),
        }
    }

    #[test]
    fn put_then_get() {
        let host = FakeHost::new(0);
        let table = TokenTable::new(&host, "tg", 100);
        let e = entry(1, 5_000);
        table.put(&e, 0).unwrap();
        assert_eq!(table.get(&e.fingerprint).unwrap(), Some(e));
        assert_eq!(table.get(&entry(2, 0).fingerprint).unwrap(), None);
    }

    #[test]
    fn memory_is_bounded_by_the_slot_count() {
        let host = FakeHost::new(0);
        let table = TokenTable::new(&host, "tg", 8);
        for i in 0..=255u8 {
            table.put(&entry(i, 10_000 + u64::from(i)), 0).unwrap();
        }
        assert!(host.keys().len() <= 8, "{:?}", host.keys());
    }

    #[test]
    fn two_keys_in_one_slot_both_stay() {
        let host = FakeHost::new(0);
        let table = TokenTable::new(&host, "tg", 1);
        // With one slot the two candidates are the same key; with two slots both fit.
        let table2 = TokenTable::new(&host, "tg2", 2);
        let (a, b) = (entry(1, 10_000), entry(2, 10_000));
        table2.put(&a, 0).unwrap();
        table2.put(&b, 0).unwrap();
        assert!(table2.get(&a.fingerprint).unwrap().is_some());
        assert!(table2.get(&b.fingerprint).unwrap().is_some());
        table.put(&a, 0).unwrap();
        assert!(table.get(&a.fingerprint).unwrap().is_some());
    }

    #[test]
    fn replaces_expired_before_live_and_earliest_expiry_first() {
        let host = FakeHost::new(0);
        let table = TokenTable::new(&host, "tg", 2);
        let (early, late) = (entry(1, 5_000), entry(2, 9_000));
        table.put(&early, 0).unwrap();
        table.put(&late, 0).unwrap();
        let newcomer = entry(3, 20_000);
        table.put(&newcomer, 1_000).unwrap();
        assert!(table.get(&early.fingerprint).unwrap().is_none(), "the earliest expiry goes");
        assert!(table.get(&late.fingerprint).unwrap().is_some());
        // Now `late` has expired: it is replaced before the live newcomer.
        let fourth = entry(4, 30_000);
        table.put(&fourth, 9_500).unwrap();
        assert!(table.get(&late.fingerprint).unwrap().is_none());
        assert!(table.get(&newcomer.fingerprint).unwrap().is_some());
    }

    #[test]
    fn same_key_is_updated_in_place() {
        let host = FakeHost::new(0);
        let table = TokenTable::new(&host, "tg", 2);
        table.put(&entry(1, 5_000), 0).unwrap();
        table.put(&entry(2, 6_000), 0).unwrap();
        let renewed = entry(1, 50_000);
        table.put(&renewed, 0).unwrap();
        assert_eq!(table.get(&renewed.fingerprint).unwrap(), Some(renewed));
        assert!(table.get(&entry(2, 0).fingerprint).unwrap().is_some());
    }

    #[test]
    fn retries_cas_conflicts_then_gives_up() {
        let host = FakeHost::new(0);
        let table = TokenTable::new(&host, "tg", 2);
        table.put(&entry(1, 5_000), 0).unwrap();
        table.put(&entry(2, 5_000), 0).unwrap();
        host.inject_cas_conflicts(2);
        table.put(&entry(3, 9_000), 0).unwrap();
        assert!(table.get(&entry(3, 0).fingerprint).unwrap().is_some());
        host.inject_cas_conflicts(100);
        assert_eq!(table.put(&entry(4, 9_000), 0), Err(StoreError::CasMismatch));
    }
}
