//! One worker's coordination point, owned by its root context and shared with its HTTP
//! streams: the keyed IdP calls to dispatch and in flight, and the streams waiting for an
//! outcome. IdP calls for cache keys are dispatched by the root context, not the stream
//! that needed them, so a client that goes away neither cancels the call nor loses the
//! token for everyone else.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use tokengate_core::gate::{KeyedCall, Waiter};

/// How often the root context looks for outcomes written by other workers and flushes
/// pending hits to shared data.
pub const TICK: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Hub {
    /// This worker's own wake-up queue (registered by its root context).
    pub queue_id: Option<u32>,
    /// Keyed calls to dispatch at the root's next callback.
    pub jobs: Vec<KeyedCall>,
    /// Keyed calls in flight, by the host's call token.
    pub calls: HashMap<u32, KeyedCall>,
    /// Streams waiting for their key's outcome, by HTTP context id.
    pub waiters: Vec<(u32, Waiter)>,
    /// Usage-report requests, answered once every worker has flushed its pending hits.
    pub reports: Vec<(u32, ReportRequest)>,
}

/// A usage-report request waiting for its answer.
pub struct ReportRequest {
    /// When every worker has ticked (and flushed its hits) since the request came.
    pub due_ms: u64,
    pub accept: Option<String>,
    pub accept_encoding: Option<String>,
    pub path: String,
}

pub type SharedHub = Rc<RefCell<Hub>>;

impl Hub {
    /// Queues a call for the root context and wakes it through this worker's queue
    /// (without a queue the root's tick picks the call up).
    pub fn submit(&mut self, call: KeyedCall) {
        self.jobs.push(call);
        if let Some(queue) = self.queue_id
            && hostcalls::enqueue_shared_queue(queue, Some(b"")).is_err()
        {
            log::debug!("wake-up queue unavailable; the next tick dispatches");
        }
    }

    pub fn remove_waiter(&mut self, context_id: u32) {
        self.waiters.retain(|(id, _)| *id != context_id);
        self.reports.retain(|(id, _)| *id != context_id);
    }
}
