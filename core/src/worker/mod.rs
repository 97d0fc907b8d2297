//! One worker's tokengate: the configuration, the key prefix, the index of served tokens,
//! the pending hits and the hub of keyed calls and waiters, in one handle; and the
//! per-request state machine ([`stream`]) the host drives with a handful of calls. The host
//! only translates callbacks: Envoy's events in, [`Step`]s and answers out.
//!
//! Stream events: [`Worker::on_request_headers`], [`Worker::on_request_body`],
//! [`Worker::on_response_headers`], [`Worker::on_stream_gone`]. Root events:
//! [`Worker::on_wake`] (dispatch keyed calls), [`Worker::on_tick`]. And one route for the
//! answer to every call dispatched, from the root or a stream: [`Worker::on_answer`]. Each
//! returns the answers for other streams.

mod hub;
mod stream;

use std::cell::{Cell, RefCell};
use std::time::Duration;

pub use crate::response::{HeaderEdits, ResponseStep};
pub use hub::{OnAnswer, Report, ReportRequest, StreamId};
pub use stream::{Step, Stream};

use crate::cache::LocalIndex;
use crate::cache::purge::purges;
use crate::config::Config;
use crate::fingerprint::Fingerprint;
use crate::flight::CallOutcome;
use crate::gate::{Answer, Gate, HttpReply, KeyedCall};
use crate::hit_tally::PendingHits;
use crate::host::Host;
use crate::response::Response;
use crate::store::{Change, Store};
use hub::Hub;

/// How often the host ticks the worker: waiters look for outcomes written by other
/// workers, pending hits are flushed to shared data.
pub const TICK: Duration = Duration::from_millis(crate::hit_tally::TICK_MS);

/// Operator requests (usage report, purge) are answered this long after they came: every
/// worker ticks at least twice meanwhile, on a busy host too.
pub const OPERATOR_WAIT_MS: u64 = 5 * TICK.as_millis() as u64;

/// Answers for other streams than the one in the callback: `(stream, response)`.
pub type Answers = Vec<(StreamId, Response)>;

/// What the answer to a dispatched call gives: a step for the stream in the callback (its
/// own rate-limit service call), and answers for other streams (a keyed call's waiters).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    pub step: Option<Step>,
    pub answers: Answers,
}

pub struct Worker {
    config: Config,
    /// Prefix of every shared-data key: the plugin name, so two plugins in one VM never
    /// read each other's entries.
    key_prefix: String,
    /// This worker's copies of tokens it served (see `cache::local`).
    local_index: RefCell<LocalIndex>,
    /// This worker's hits not yet counted in shared data (see `hit_tally`).
    pending_hits: RefCell<PendingHits>,
    hub: RefCell<Hub>,
    /// The purges this worker's index has applied (`cache::purge`).
    purges_seen: Cell<u64>,
}

impl Worker {
    pub fn new(config: Config, key_prefix: &str) -> Worker {
        let entries = config.cache.max_entries as usize;
        Worker {
            local_index: RefCell::new(LocalIndex::new(entries)),
            pending_hits: RefCell::new(PendingHits::new(entries)),
            config,
            key_prefix: key_prefix.to_owned(),
            hub: RefCell::default(),
            purges_seen: Cell::new(0),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The request flow with this worker's index and pending hits.
    fn gate<'a>(&'a self, host: &'a dyn Host) -> Gate<'a> {
        self.bare_gate(host).with_local_index(&self.local_index).with_pending_hits(&self.pending_hits)
    }

    /// The request flow without them: for answers that neither serve from the index nor
    /// count an arriving hit (calls, waiters, refusals).
    fn bare_gate<'a>(&'a self, host: &'a dyn Host) -> Gate<'a> {
        Gate::new(&self.config, host, &self.key_prefix)
    }

    /// Prepares shared data before the worker serves; `false` if it could not (it is then
    /// created on first use).
    pub fn prepare(&self, host: &dyn Host) -> bool {
        // Purges before this worker started concern no token it holds.
        self.purges_seen.set(purges(&Store::new(host, host, &self.key_prefix), &self.key_prefix));
        self.bare_gate(host).prepare()
    }

    /// A wake-up queue name of this worker's own (`<prefix>:wake:<n>`, `n` counted in shared
    /// data): Envoy gives a shared queue one consumer, so each worker registers its own.
    /// `None` when the count cannot be taken (calls then start on the tick).
    pub fn wake_queue_name(&self, host: &dyn Host) -> Option<String> {
        let store = Store::new(host, host, &self.key_prefix);
        let index = store.update(&crate::keys::workers(&self.key_prefix), &0u64.to_le_bytes(), |bytes| {
            let n = bytes.try_into().map_or(0, u64::from_le_bytes) + 1;
            Change::Write(n.to_le_bytes().to_vec(), n)
        });
        index.ok().map(|n| crate::keys::wake_queue(&self.key_prefix, n))
    }

    /// Empties this worker's index of served tokens when a client was purged since its
    /// last look (see `cache::purge`).
    fn apply_purges(&self, host: &dyn Host) {
        let count = purges(&Store::new(host, host, &self.key_prefix), &self.key_prefix);
        if count != self.purges_seen.replace(count) {
            self.local_index.borrow_mut().clear();
        }
    }

    /// Queues a keyed call for the root context and wakes it.
    fn submit(&self, host: &dyn Host, call: KeyedCall) {
        self.hub.borrow_mut().jobs.push(call);
        host.wake();
    }

    /// The root was woken: dispatches the queued keyed calls. A call that cannot be
    /// dispatched ends at once (its waiters get the failure).
    pub fn on_wake(&self, host: &dyn Host) -> Answers {
        let jobs = std::mem::take(&mut self.hub.borrow_mut().jobs);
        let mut answers = Answers::new();
        for job in jobs {
            match host.dispatch(&job.call) {
                Ok(token) => {
                    self.hub.borrow_mut().calls.push((token, OnAnswer::Keyed(Box::new(job))));
                }
                Err(e) => {
                    log::warn!("IdP call not dispatched: {e}");
                    let outcome = self.bare_gate(host).finish_call(&job, None);
                    answers.extend(self.answer_waiters(host, Some((&job.fingerprint, &outcome))));
                }
            }
        }
        answers
    }

    /// The answer to a call this worker dispatched (`reply` `None`: it failed), routed to
    /// what the call was dispatched for ([`OnAnswer`]). `stream` is the stream in the
    /// callback, when the answer came to one (Envoy answers a call in the context that made
    /// it). A token of no call of this worker (a late answer) gives nothing.
    pub fn on_answer(
        &self,
        host: &dyn Host,
        token: u32,
        reply: Option<&HttpReply>,
        trailers: &[(String, String)],
        stream: Option<&mut Stream>,
    ) -> Routed {
        let Some(then) = self.hub.borrow_mut().take_call(token, stream.as_ref().map(|s| s.id())) else {
            return Routed::default();
        };
        match (then, stream) {
            (OnAnswer::Keyed(job), _) => {
                let outcome = self.bare_gate(host).finish_call(&job, reply);
                Routed { step: None, answers: self.answer_waiters(host, Some((&job.fingerprint, &outcome))) }
            }
            (OnAnswer::RateLimit { .. }, Some(stream)) => Routed {
                step: Some(self.rate_limit_answered(host, stream, reply, trailers)),
                answers: Answers::new(),
            },
            (OnAnswer::RateLimit { .. }, None) => Routed::default(),
        }
    }

    /// The root context is going away (a configuration change drained its listener): its
    /// pending hits are flushed, and the keyed calls it made or was about to make are
    /// released, so requests waiting for them on any worker retake their keys at once.
    /// Their answers would reach no one.
    pub fn on_done(&self, host: &dyn Host) {
        // Hits not yet counted and leases not yet given back go to shared data first.
        let gate = self.gate(host);
        gate.flush_hits();
        let hub = self.hub.borrow();
        let in_flight = hub.calls.iter().filter_map(|(_, then)| match then {
            OnAnswer::Keyed(call) => Some(&**call),
            OnAnswer::RateLimit { .. } => None,
        });
        for call in hub.jobs.iter().chain(in_flight) {
            gate.release_call(call);
        }
    }

    /// The periodic tick: flushes pending hits, dispatches queued calls, answers waiters
    /// whose outcome another worker wrote (or whose deadline passed) and due usage reports.
    pub fn on_tick(&self, host: &dyn Host) -> Answers {
        if !self.pending_hits.borrow().is_empty() {
            self.gate(host).flush_hits();
        }
        self.apply_purges(host);
        let mut answers = Answers::new();
        if self.hub.borrow().is_idle() {
            return answers;
        }
        answers.extend(self.on_wake(host));
        answers.extend(self.answer_waiters(host, None));
        answers.extend(self.answer_reports(host));
        answers
    }

    /// Answers every waiter whose outcome is known; `known` is the outcome of a call this
    /// worker just finished, for its key's waiters.
    fn answer_waiters(&self, host: &dyn Host, known: Option<(&Fingerprint, &CallOutcome)>) -> Answers {
        let gate = self.bare_gate(host);
        let waiters = std::mem::take(&mut self.hub.borrow_mut().waiters);
        let mut answers = Answers::new();
        let mut still_waiting = Vec::with_capacity(waiters.len());
        for (stream, mut waiter) in waiters {
            let outcome = known.filter(|(fp, _)| **fp == waiter.fingerprint).map(|(_, o)| o);
            match gate.answer(&mut waiter, outcome) {
                Answer::Ready(response) => answers.push((stream, response)),
                Answer::Pending => still_waiting.push((stream, waiter)),
                // It retook a released call's key and owns the next call.
                Answer::Owns(call) => {
                    self.submit(host, *call);
                    still_waiting.push((stream, waiter));
                }
            }
        }
        self.hub.borrow_mut().waiters.extend(still_waiting);
        answers
    }

    /// The usage reports that have waited long enough.
    fn answer_reports(&self, host: &dyn Host) -> Answers {
        let now = host.now_ms();
        let due: Vec<_> = {
            let mut hub = self.hub.borrow_mut();
            let (due, waiting) =
                std::mem::take(&mut hub.reports).into_iter().partition(|(_, r)| r.due_ms <= now);
            hub.reports = waiting;
            due
        };
        let gate = self.bare_gate(host);
        due.into_iter()
            .map(|(stream, r)| match r.answer {
                Report::Usage { accept, accept_encoding, path } => {
                    (stream, gate.usage(accept.as_deref(), accept_encoding.as_deref(), &path))
                }
                Report::Purged(entries) => (stream, gate.purged(entries)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
