//! Single flight: at most one IdP call per cache key in flight across all workers. A
//! marker in shared data (`<prefix>:flight:<slot>`) names the key, a generation and a
//! deadline; the first request to find no live marker becomes the owner, the others wait
//! for the outcome the owner writes into the same record. A call that never returns, or an
//! owner whose VM died, cannot wedge the key: after the deadline the next request owns it.
//! An owner that goes away first (its root context deleted after a configuration change)
//! releases its calls: waiters see the release and retake the key at once.

use crate::codec::{Reader, Writer};
use crate::fingerprint::Fingerprint;
use crate::host::StoreError;
use crate::store::{Change, Store};

/// What one IdP call ended with, as waiters on every worker read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub status: u16,
    /// A valid token was stored in the cache: waiters read it from there.
    pub cached: bool,
    /// No answer (refused, reset, timed out, or Envoy's own plain-text 5xx).
    pub unreachable: bool,
    /// Relayed headers (lowercase names) and body, for answers that are not a cached token.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlightState {
    InFlight {
        deadline_ms: u64,
    },
    Done(CallOutcome),
    /// The owner went away before its call was answered: the next request owns the key.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightRecord {
    /// Hex fingerprint of the key the record is about.
    pub key: String,
    /// Counts the calls begun in this slot: tells one call's outcome from the next.
    pub generation: u64,
    pub state: FlightState,
}

/// How a request that needs the IdP relates to the calls in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// No call in flight for the key: this request makes it.
    Owner { generation: u64 },
    /// A call is in flight: wait for its outcome.
    Joined { generation: u64, deadline_ms: u64 },
    /// The slot is busy with another key's live call: call without coordination.
    Uncoordinated,
}

pub struct FlightTable<'a> {
    store: &'a Store<'a>,
    key_prefix: &'a str,
    slots: u32,
}

impl<'a> FlightTable<'a> {
    pub fn new(store: &'a Store<'a>, key_prefix: &'a str, slots: u32) -> FlightTable<'a> {
        FlightTable { store, key_prefix, slots: slots.max(1) }
    }

    fn slot_key(&self, fp: &Fingerprint) -> String {
        crate::keys::slot(self.key_prefix, crate::keys::FLIGHT, fp.word(2) % u64::from(self.slots))
    }

    /// Becomes the owner of the key's next call, or joins the live one.
    pub fn begin(&self, fp: &Fingerprint, now_ms: u64, deadline_ms: u64) -> Result<Begin, StoreError> {
        let hex = fp.to_hex();
        self.store.update(&self.slot_key(fp), b"", |bytes| {
            let record = decode(bytes);
            let generation = record.as_ref().map_or(0, |r| r.generation);
            if let Some(FlightRecord {
                key,
                generation,
                state: FlightState::InFlight { deadline_ms: live_until },
            }) = &record
                && *live_until > now_ms
            {
                return Change::Keep(if *key == hex {
                    Begin::Joined { generation: *generation, deadline_ms: *live_until }
                } else {
                    Begin::Uncoordinated
                });
            }
            let next = FlightRecord {
                key: hex.clone(),
                generation: generation.wrapping_add(1),
                state: FlightState::InFlight { deadline_ms },
            };
            Change::Write(encode(&next), Begin::Owner { generation: next.generation })
        })
    }

    /// Records the outcome of the owner's call, unless the slot has moved on.
    pub fn finish(&self, fp: &Fingerprint, generation: u64, outcome: CallOutcome) -> Result<(), StoreError> {
        self.end(fp, generation, FlightState::Done(outcome))
    }

    /// The owner of the call `generation` is going away without its answer: waiters
    /// retake the key instead of waiting for an outcome nobody will write.
    pub fn release(&self, fp: &Fingerprint, generation: u64) -> Result<(), StoreError> {
        self.end(fp, generation, FlightState::Released)
    }

    /// Ends the call `generation` of the key with `state`, unless the slot has moved on
    /// or the call already has its outcome.
    fn end(&self, fp: &Fingerprint, generation: u64, state: FlightState) -> Result<(), StoreError> {
        let hex = fp.to_hex();
        self.store.update(&self.slot_key(fp), b"", |bytes| match decode(bytes) {
            Some(record)
                if record.key == hex
                    && record.generation == generation
                    && !matches!(record.state, FlightState::Done(_)) =>
            {
                Change::Write(encode(&FlightRecord { state: state.clone(), ..record }), ())
            }
            _ => Change::Keep(()),
        })
    }

    /// The record of the key's slot, if it is about this key.
    pub fn read(&self, fp: &Fingerprint) -> Result<Option<FlightRecord>, StoreError> {
        let hex = fp.to_hex();
        let current = self.store.get(&self.slot_key(fp)).map_err(StoreError::Host)?;
        Ok(current.and_then(|(bytes, _)| decode(&bytes)).filter(|r| r.key == hex))
    }
}

/// Bumped when the layout changes: a record of another layout reads as an empty slot.
const FORMAT_VERSION: u8 = 1;
const IN_FLIGHT: u8 = 0;
const DONE: u8 = 1;
/// A state added without a new layout: an older module reads the record as an empty slot,
/// which is what a released call is to it too.
const RELEASED: u8 = 2;

fn encode(record: &FlightRecord) -> Vec<u8> {
    let mut out = Writer::new(FORMAT_VERSION, 128);
    out.bytes(record.key.as_bytes()).u64(record.generation);
    match &record.state {
        FlightState::InFlight { deadline_ms } => {
            out.u8(IN_FLIGHT).u64(*deadline_ms);
        }
        FlightState::Done(o) => {
            out.u8(DONE).u16(o.status).u8(u8::from(o.cached) | u8::from(o.unreachable) << 1);
            // An IdP answer has far fewer headers; more are dropped rather than miscounted.
            let headers = &o.headers[..o.headers.len().min(usize::from(u16::MAX))];
            out.u16(headers.len() as u16);
            for (name, value) in headers {
                out.bytes(name.as_bytes()).bytes(value.as_bytes());
            }
            out.bytes(o.body.as_bytes());
        }
        FlightState::Released => {
            out.u8(RELEASED);
        }
    }
    out.finish()
}

/// `None` for an empty slot or bytes of another layout.
fn decode(bytes: &[u8]) -> Option<FlightRecord> {
    let mut r = Reader::open(bytes, FORMAT_VERSION)?;
    let key = r.string()?;
    let generation = r.u64()?;
    let state = match r.u8()? {
        IN_FLIGHT => FlightState::InFlight { deadline_ms: r.u64()? },
        DONE => {
            let status = r.u16()?;
            let flags = r.u8()?;
            let count = r.u16()?;
            let mut headers = Vec::with_capacity(usize::from(count).min(64));
            for _ in 0..count {
                headers.push((r.string()?, r.string()?));
            }
            let body = r.string()?;
            FlightState::Done(CallOutcome {
                status,
                cached: flags & 1 != 0,
                unreachable: flags & 2 != 0,
                headers,
                body,
            })
        }
        RELEASED => FlightState::Released,
        _ => return None,
    };
    r.is_done().then_some(FlightRecord { key, generation, state })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn outcome(status: u16) -> CallOutcome {
        CallOutcome {
            status,
            cached: status == 200,
            unreachable: false,
            headers: vec![],
            body: String::new(),
        }
    }

    #[test]
    fn records_read_back_as_written_and_other_bytes_as_empty() {
        let done = CallOutcome {
            status: 429,
            cached: false,
            unreachable: true,
            headers: vec![("retry-after".into(), "7".into()), ("x-é".into(), String::new())],
            body: "{\"error\":\"too_many_requests\"}".into(),
        };
        for state in
            [FlightState::InFlight { deadline_ms: 12_345 }, FlightState::Done(done), FlightState::Released]
        {
            let record = FlightRecord { key: "ab".repeat(32), generation: u64::MAX, state };
            let bytes = encode(&record);
            assert_eq!(decode(&bytes), Some(record));
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
            }
            assert_eq!(decode(&[bytes.as_slice(), b"x"].concat()), None);
        }
        // A record of the earlier JSON layout is an empty slot, not an error.
        assert_eq!(decode(br#"{"key":"ab","generation":1,"state":{"InFlight":{"deadline_ms":5}}}"#), None);
    }

    #[test]
    fn one_owner_the_rest_join_until_it_finishes() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        let flights = FlightTable::new(&store, "tg", 64);
        let fp = Fingerprint([3; 32]);
        assert_eq!(flights.begin(&fp, 0, 5_000).unwrap(), Begin::Owner { generation: 1 });
        for _ in 0..10 {
            host.inject_cas_conflicts(1);
            assert_eq!(
                flights.begin(&fp, 10, 6_000).unwrap(),
                Begin::Joined { generation: 1, deadline_ms: 5_000 }
            );
        }
        flights.finish(&fp, 1, outcome(200)).unwrap();
        let record = flights.read(&fp).unwrap().unwrap();
        assert_eq!(record.state, FlightState::Done(outcome(200)));
        // After the outcome, the next miss owns a new call.
        assert_eq!(flights.begin(&fp, 20, 5_000).unwrap(), Begin::Owner { generation: 2 });
    }

    #[test]
    fn a_released_call_is_taken_over_at_once_and_only_its_own_generation_is_released() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        let flights = FlightTable::new(&store, "tg", 64);
        let fp = Fingerprint([5; 32]);
        assert_eq!(flights.begin(&fp, 0, 60_000).unwrap(), Begin::Owner { generation: 1 });
        flights.release(&fp, 7).unwrap();
        assert!(matches!(flights.read(&fp).unwrap().unwrap().state, FlightState::InFlight { .. }));
        flights.release(&fp, 1).unwrap();
        assert_eq!(flights.read(&fp).unwrap().unwrap().state, FlightState::Released);
        // Long before the deadline, the next request owns the key's next call.
        assert_eq!(flights.begin(&fp, 10, 60_000).unwrap(), Begin::Owner { generation: 2 });
        // A finished call is never released.
        flights.finish(&fp, 2, outcome(200)).unwrap();
        flights.release(&fp, 2).unwrap();
        assert_eq!(flights.read(&fp).unwrap().unwrap().state, FlightState::Done(outcome(200)));
    }

    #[test]
    fn an_expired_marker_is_taken_over_and_a_late_finish_is_ignored() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        let flights = FlightTable::new(&store, "tg", 64);
        let fp = Fingerprint([4; 32]);
        flights.begin(&fp, 0, 5_000).unwrap();
        assert_eq!(flights.begin(&fp, 5_000, 10_000).unwrap(), Begin::Owner { generation: 2 });
        flights.finish(&fp, 1, outcome(500)).unwrap();
        let record = flights.read(&fp).unwrap().unwrap();
        assert_eq!((record.generation, record.state), (2, FlightState::InFlight { deadline_ms: 10_000 }));
    }

    #[test]
    fn another_keys_live_call_in_the_slot_means_no_coordination() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        let flights = FlightTable::new(&store, "tg", 1);
        flights.begin(&Fingerprint([5; 32]), 0, 5_000).unwrap();
        assert_eq!(flights.begin(&Fingerprint([6; 32]), 1, 5_000).unwrap(), Begin::Uncoordinated);
        assert!(flights.read(&Fingerprint([6; 32])).unwrap().is_none());
    }
}

#[cfg(test)]
mod interleaving {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::host::fake::FakeHost;

    fn begin(host: &FakeHost) -> Result<Begin, StoreError> {
        let store = Store::new(host, host, "tg");
        FlightTable::new(&store, "tg", 64).begin(&Fingerprint([9; 32]), 0, 5_000)
    }

    /// Two workers miss the same cold key at once: whatever the interleaving of their host
    /// calls, exactly one owns the call. (Inside the creation lock the other worker would
    /// wait; this single thread cannot, so there it goes after.)
    #[test]
    fn exactly_one_owner_whatever_the_interleaving() {
        for nth in 0..6 {
            let host = FakeHost::new(0);
            let other: Rc<Cell<Option<Begin>>> = Rc::default();
            let seen = other.clone();
            host.interleave_before_set(nth, move |h| seen.set(begin(h).ok()));
            let mine = begin(&host).unwrap();
            host.clear_interleaving();
            let theirs = match other.get() {
                Some(b) => b,
                None => begin(&host).unwrap(),
            };
            let owners = [mine, theirs].iter().filter(|b| matches!(b, Begin::Owner { .. })).count();
            assert_eq!(owners, 1, "interleaved before set {nth}: {mine:?} / {theirs:?}");
        }
    }
}
