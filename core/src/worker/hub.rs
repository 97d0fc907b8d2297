//! One worker's coordination point: the keyed IdP calls to dispatch and in flight, and the
//! streams waiting for an outcome or a usage report. Keyed calls are dispatched from the
//! worker's root context, not the stream that needed them, so a client that goes away
//! neither cancels the call nor loses the token for everyone else.

use crate::gate::{KeyedCall, Waiter};

/// A stream's id: the host's HTTP context id.
pub type StreamId = u32;

#[derive(Default)]
pub struct Hub {
    /// Keyed calls to dispatch at the root's next callback.
    pub jobs: Vec<KeyedCall>,
    /// Every call in flight, with the host's call token and what to do with its answer
    /// (a few at a time: a list, not a map, is one hash table less in the .wasm).
    pub calls: Vec<(u32, OnAnswer)>,
    /// Streams waiting for their key's outcome.
    pub waiters: Vec<(StreamId, Waiter)>,
    /// Operator requests (usage report, purge), answered once every worker has ticked.
    pub reports: Vec<(StreamId, ReportRequest)>,
}

/// What to do with a dispatched call's answer, recorded when the call is dispatched;
/// [`super::Worker::on_answer`] is the one place that routes an answer to it.
pub enum OnAnswer {
    /// A keyed call (dispatched by the root context): store its outcome where every worker
    /// sees it, and answer the key's waiters on this worker.
    Keyed(Box<KeyedCall>),
    /// The rate-limit service's verdict on the request of this stream (which dispatched
    /// it and waits for it in `Phase::AskingRateLimit`).
    RateLimit { stream: StreamId },
}

/// An operator request waiting for its answer.
pub struct ReportRequest {
    /// When every worker has ticked since the request came: flushed its pending hits (a
    /// report), dropped a purged client's tokens from its index (a purge).
    pub due_ms: u64,
    pub answer: Report,
}

pub enum Report {
    Usage {
        accept: Option<String>,
        accept_encoding: Option<String>,
        path: String,
    },
    /// A purge done: how many entries went.
    Purged(u64),
}

impl Hub {
    pub fn forget(&mut self, stream: StreamId) {
        self.waiters.retain(|(id, _)| *id != stream);
        self.reports.retain(|(id, _)| *id != stream);
        self.calls.retain(|(_, then)| !matches!(then, OnAnswer::RateLimit { stream: s } if *s == stream));
    }

    /// The call with this token, taken off the list when its answer is for the context it
    /// came to: a keyed call's anywhere, a stream's call only on that stream (`stream`).
    /// `None`: not one of this worker's, already answered, or another stream's.
    pub fn take_call(&mut self, token: u32, stream: Option<StreamId>) -> Option<OnAnswer> {
        let at = self.calls.iter().position(|(t, then)| {
            *t == token
                && match then {
                    OnAnswer::Keyed(_) => true,
                    OnAnswer::RateLimit { stream: asking } => stream == Some(*asking),
                }
        })?;
        Some(self.calls.swap_remove(at).1)
    }

    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.waiters.is_empty() && self.reports.is_empty()
    }
}
