//! Exact read-modify-write on Envoy's shared data.
//!
//! Envoy's compare-and-swap protects only keys that exist: a `set` on a missing key always
//! succeeds, whatever cas it carries. Two workers that both find a key missing and both
//! create it would lose one's update. So a key is created only under the creation lock
//! (one pre-created key, taken with CAS): inside it, "still missing?" and "create" happen
//! together; every later change is a CAS update of an existing key, retried a bounded
//! number of times.

use crate::host::{Clock, HostError, SharedStore, StoreError};

/// CAS retries before an update gives up (each retry means another worker wrote).
pub const CAS_ATTEMPTS: u32 = 64;
/// How long a worker waits for a held creation lock before giving up (the request then
/// goes on uncoordinated). The holder does two host calls inside it, but on a loaded host
/// its thread can be descheduled for milliseconds: a count of reads alone gave up too soon
/// (a fleet test on a busy 2-core VM saw a key fetched twice).
const LOCK_WAIT_MS: u64 = 250;
/// Reads of a held lock before giving up whatever the clock says (a clock that does not
/// move must not spin forever).
const LOCK_SPINS: u32 = 1_000_000;
/// A held lock older than this is abandoned (its holder crashed).
const LOCK_LEASE_MS: u64 = 1_000;

/// What an update function decides after reading the current value.
pub enum Change<T> {
    /// Write this value (CAS) and return `T`.
    Write(Vec<u8>, T),
    /// Leave the value as it is and return `T`.
    Keep(T),
}

pub struct Store<'a> {
    store: &'a dyn SharedStore,
    clock: &'a dyn Clock,
    lock_key: String,
}

impl<'a> Store<'a> {
    pub fn new(store: &'a dyn SharedStore, clock: &'a dyn Clock, key_prefix: &str) -> Store<'a> {
        Store { store, clock, lock_key: crate::keys::create_lock(key_prefix) }
    }

    /// Creates the creation lock if missing. Call once per worker before serving (from
    /// `on_configure`): then the lock itself is never created while requests run.
    pub fn prepare(&self) -> Result<(), StoreError> {
        if self.store.get(&self.lock_key).map_err(StoreError::Host)?.is_none() {
            self.store.set(&self.lock_key, &free_lock(), None)?;
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        self.store.get(key)
    }

    /// The shared data itself (for slot tables).
    pub fn shared(&self) -> &'a dyn SharedStore {
        self.store
    }

    /// The value of `key` and its cas, creating it as `initial` first if it is missing, so
    /// that a following [`Store::write`] with that cas is a real compare-and-swap.
    pub fn read_or_create(&self, key: &str, initial: &[u8]) -> Result<(Vec<u8>, u32), StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some(found) = self.store.get(key).map_err(StoreError::Host)? {
                return Ok(found);
            }
            self.create(key, initial)?;
        }
        Err(StoreError::CasMismatch)
    }

    /// Compare-and-swap with a cas from [`Store::read_or_create`].
    pub fn write(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.store.set(key, value, Some(cas))
    }

    /// Reads `key` (created as `initial` if missing), lets `change` decide, and writes the
    /// result with CAS, retrying from a fresh read when another worker wrote in between.
    pub fn update<T>(
        &self,
        key: &str,
        initial: &[u8],
        mut change: impl FnMut(&[u8]) -> Change<T>,
    ) -> Result<T, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((current, cas)) = self.store.get(key).map_err(StoreError::Host)? else {
                self.create(key, initial)?;
                continue;
            };
            match change(&current) {
                Change::Keep(out) => return Ok(out),
                Change::Write(value, out) => match self.store.set(key, &value, Some(cas)) {
                    Ok(()) => return Ok(out),
                    Err(StoreError::CasMismatch) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        Err(StoreError::CasMismatch)
    }

    /// Creates `key` as `initial` unless it exists, under the creation lock.
    fn create(&self, key: &str, initial: &[u8]) -> Result<(), StoreError> {
        let give_up_at = self.clock.now_ms().saturating_add(LOCK_WAIT_MS);
        for _ in 0..LOCK_SPINS {
            let lock = self.store.get(&self.lock_key).map_err(StoreError::Host)?;
            let now = self.clock.now_ms();
            if now > give_up_at {
                break;
            }
            let cas = match &lock {
                // Not prepared (a test, or a host that lost it): create it, then take it.
                None => {
                    self.store.set(&self.lock_key, &free_lock(), None)?;
                    continue;
                }
                Some((value, cas)) if lock_free(value, now) => *cas,
                Some(_) => continue,
            };
            match self.store.set(&self.lock_key, &held_lock(now), Some(cas)) {
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let created = match self.store.get(key) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => self.store.set(key, initial, None),
                Err(e) => Err(StoreError::Host(e)),
            };
            // Released whatever happened; a held lock would only expire after its lease.
            let released = self.store.set(&self.lock_key, &free_lock(), None);
            return created.and(released);
        }
        Err(StoreError::CasMismatch)
    }
}

fn free_lock() -> Vec<u8> {
    0u64.to_le_bytes().to_vec()
}

/// A held lock stores its expiry.
fn held_lock(now_ms: u64) -> Vec<u8> {
    now_ms.saturating_add(LOCK_LEASE_MS).to_le_bytes().to_vec()
}

fn lock_free(value: &[u8], now_ms: u64) -> bool {
    let expiry = value.try_into().map(u64::from_le_bytes).unwrap_or(0);
    expiry <= now_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn counter(store: &Store, key: &str) -> u64 {
        store
            .update(key, &0u64.to_le_bytes(), |v| {
                let n = v.try_into().map(u64::from_le_bytes).unwrap_or(0) + 1;
                Change::Write(n.to_le_bytes().to_vec(), n)
            })
            .unwrap()
    }

    #[test]
    fn creates_then_updates() {
        let host = FakeHost::new(1_000);
        let store = Store::new(&host, &host, "tg");
        store.prepare().unwrap();
        assert_eq!(counter(&store, "tg:n"), 1);
        assert_eq!(counter(&store, "tg:n"), 2);
        assert_eq!(host.keys(), vec!["tg:create-lock", "tg:n"]);
    }

    #[test]
    fn retries_through_cas_conflicts_and_counts_exactly() {
        let host = FakeHost::new(1_000);
        let store = Store::new(&host, &host, "tg");
        counter(&store, "tg:n");
        host.inject_cas_conflicts(10);
        assert_eq!(counter(&store, "tg:n"), 2);
        host.inject_cas_conflicts(CAS_ATTEMPTS + 1);
        assert!(store.update("tg:n", b"", |_| Change::Write(vec![], ())).is_err());
    }

    #[test]
    fn keep_writes_nothing() {
        let host = FakeHost::new(1_000);
        let store = Store::new(&host, &host, "tg");
        counter(&store, "tg:n");
        let seen = store.update("tg:n", b"", |v| Change::Keep(v.to_vec())).unwrap();
        assert_eq!(seen, 1u64.to_le_bytes());
    }

    #[test]
    fn a_held_lock_is_waited_for_and_an_abandoned_one_taken_over() {
        let host = FakeHost::new(1_000);
        let store = Store::new(&host, &host, "tg");
        // A holder that died: its lease ran out, so creation proceeds.
        host.set("tg:create-lock", &held_lock(0), None).unwrap();
        assert_eq!(counter(&store, "tg:n"), 1);
        // A live holder that never releases: creation gives up instead of spinning forever,
        // after LOCK_SPINS reads with a clock that does not move...
        host.set("tg:create-lock", &held_lock(1_000), None).unwrap();
        assert!(store.update("tg:m", b"", |_| Change::Keep(())).is_err());
        // ...and after LOCK_WAIT_MS with one that does.
        let ticking = TickingClock(std::cell::Cell::new(1_000));
        let store = Store::new(&host, &ticking, "tg");
        assert!(store.update("tg:m", b"", |_| Change::Keep(())).is_err());
        let waited = ticking.0.get() - 1_000;
        assert!((LOCK_WAIT_MS..LOCK_WAIT_MS + 5).contains(&waited), "waited {waited} ms");
    }

    /// A clock that advances 1 ms per reading.
    struct TickingClock(std::cell::Cell<u64>);

    impl Clock for TickingClock {
        fn now_ms(&self) -> u64 {
            let now = self.0.get();
            self.0.set(now + 1);
            now
        }
    }
}
