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
    /// Keyed calls in flight, with the host's call token (a few at a time: a list, not a
    /// map, is one hash table less in the .wasm).
    pub calls: Vec<(u32, KeyedCall)>,
    /// Streams waiting for their key's outcome.
    pub waiters: Vec<(StreamId, Waiter)>,
    /// Operator requests (usage report, purge), answered once every worker has ticked.
    pub reports: Vec<(StreamId, ReportRequest)>,
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
    }

    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.waiters.is_empty() && self.reports.is_empty()
    }
}
