//! An in-memory host for tests: a shared store with Envoy's CAS rules (and injectable CAS
//! conflicts), a settable clock, and a dispatcher that records calls.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Work "another worker" does between two host calls of the code under test.
type Interleaved = Box<dyn FnOnce(&FakeHost)>;

use super::{
    Clock, Connection, Dispatcher, Entropy, HostError, HttpCall, Metric, Metrics, SharedStore, StoreError,
};

#[derive(Default)]
pub struct FakeHost {
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    now_ms: Cell<u64>,
    calls: RefCell<Vec<HttpCall>>,
    /// The next N conditional sets fail with a CAS mismatch, as if another worker wrote.
    conflicts: Cell<u32>,
    /// Dispatches fail (as when the cluster does not exist).
    dispatch_fails: Cell<bool>,
    /// Every set fails with a host error (as when shared data is out of memory).
    writes_fail: Cell<bool>,
    /// Wake-ups asked for so far.
    wakes: Cell<u32>,
    /// Runs just before the set with this index (counted from when it was armed).
    interleaved: RefCell<Option<(u32, Interleaved)>>,
    sets_seen: Cell<u32>,
    /// Successful sets so far.
    writes: Cell<u32>,
    metrics: RefCell<HashMap<Metric, i64>>,
    /// The current stream's client address and verified certificate digest.
    downstream_address: RefCell<Option<String>>,
    peer_certificate_digest: RefCell<Option<String>>,
}

impl FakeHost {
    pub fn new(now_ms: u64) -> FakeHost {
        let host = FakeHost::default();
        host.now_ms.set(now_ms);
        host
    }

    /// The next streams come from this address (with a port, as Envoy gives it).
    pub fn set_downstream_address(&self, address: Option<&str>) {
        *self.downstream_address.borrow_mut() = address.map(str::to_owned);
    }

    /// The next streams' connections presented a certificate with this digest (hex).
    pub fn set_peer_certificate_digest(&self, digest: Option<&str>) {
        *self.peer_certificate_digest.borrow_mut() = digest.map(str::to_owned);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }

    pub fn set_now_ms(&self, ms: u64) {
        self.now_ms.set(ms);
    }

    /// Every IdP call dispatched so far.
    pub fn calls(&self) -> Vec<HttpCall> {
        self.calls.borrow().clone()
    }

    /// How many times the root context was asked to wake.
    pub fn wakes(&self) -> u32 {
        self.wakes.get()
    }

    /// From now on every write to shared data fails with a host error (`false`: they work).
    pub fn fail_writes(&self, fail: bool) {
        self.writes_fail.set(fail);
    }

    pub fn inject_cas_conflicts(&self, count: u32) {
        self.conflicts.set(count);
    }

    /// Runs `work` (another worker's requests) just before the `nth` next `set` (0 = the
    /// very next one) executes, as a second thread would between two host calls.
    pub fn interleave_before_set(&self, nth: u32, work: impl FnOnce(&FakeHost) + 'static) {
        self.sets_seen.set(0);
        *self.interleaved.borrow_mut() = Some((nth, Box::new(work)));
    }

    /// The value of one stat.
    pub fn metric(&self, metric: Metric) -> i64 {
        self.metrics.borrow().get(&metric).copied().unwrap_or(0)
    }

    /// How many writes to shared data succeeded so far.
    pub fn writes(&self) -> u32 {
        self.writes.get()
    }

    /// Drops interleaved work that has not run yet.
    pub fn clear_interleaving(&self) {
        self.interleaved.borrow_mut().take();
    }

    pub fn fail_dispatch(&self, fail: bool) {
        self.dispatch_fails.set(fail);
    }

    /// Every key in the store (what Envoy would hold in memory).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.data.borrow().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Every stored byte, for checking that no secret or token is kept in the clear.
    pub fn stored_bytes(&self) -> Vec<u8> {
        self.data.borrow().values().flat_map(|(v, _)| v.clone()).collect()
    }
}

impl SharedStore for FakeHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(self.data.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let seen = self.sets_seen.get();
        self.sets_seen.set(seen + 1);
        let due = matches!(&*self.interleaved.borrow(), Some((nth, _)) if *nth == seen);
        let pending = if due { self.interleaved.borrow_mut().take() } else { None };
        if let Some((_, work)) = pending {
            work(self);
        }
        if self.writes_fail.get() {
            return Err(StoreError::Host(HostError("writes fail (test)".into())));
        }
        let mut data = self.data.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, data.get(key)) {
            if self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                return Err(StoreError::CasMismatch);
            }
            if cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(next);
        data.insert(key.to_owned(), (value.to_vec(), next));
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }
}

impl Clock for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
}

impl Metrics for FakeHost {
    fn add(&self, metric: Metric, delta: i64) {
        *self.metrics.borrow_mut().entry(metric).or_default() += delta;
    }
}

/// Distinct, not random: enough for unique nonces in tests.
impl Entropy for FakeHost {
    fn fill_random(&self, buf: &mut [u8]) -> bool {
        let n = self.next_cas.get().wrapping_add(0x9e37_79b9);
        self.next_cas.set(n);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (n.rotate_left(i as u32 * 5) as u8) ^ i as u8;
        }
        true
    }
}

impl Dispatcher for FakeHost {
    fn dispatch(&self, call: &HttpCall) -> Result<u32, HostError> {
        if self.dispatch_fails.get() {
            return Err(HostError("BadArgument".into()));
        }
        let mut calls = self.calls.borrow_mut();
        calls.push(call.clone());
        Ok(calls.len() as u32)
    }

    fn wake(&self) {
        self.wakes.set(self.wakes.get() + 1);
    }
}

impl Connection for FakeHost {
    fn downstream_address(&self) -> Option<String> {
        self.downstream_address.borrow().clone()
    }

    fn peer_certificate_digest(&self) -> Option<String> {
        self.peer_certificate_digest.borrow().clone()
    }

    fn answered_by_upstream(&self) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_envoy_rules() {
        let host = FakeHost::new(0);
        // Creating a key succeeds whatever cas is given.
        host.set("k", b"1", Some(77)).unwrap();
        let (_, cas) = host.get("k").unwrap().unwrap();
        // A stale cas is a mismatch; the current one wins; none overwrites.
        host.set("k", b"2", Some(cas)).unwrap();
        assert_eq!(host.set("k", b"3", Some(cas)), Err(StoreError::CasMismatch));
        host.set("k", b"4", None).unwrap();
        assert_eq!(host.get("k").unwrap().unwrap().0, b"4");
    }

    #[test]
    fn injected_conflicts_hit_conditional_sets_only() {
        let host = FakeHost::new(0);
        host.set("k", b"1", None).unwrap();
        host.inject_cas_conflicts(1);
        let (_, cas) = host.get("k").unwrap().unwrap();
        assert_eq!(host.set("k", b"2", Some(cas)), Err(StoreError::CasMismatch));
        host.set("k", b"2", Some(cas)).unwrap();
    }
}
