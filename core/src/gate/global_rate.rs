//! The global rate-limit service's decision in the request flow (see `rate_limit_service`):
//! the worker's stream asks the service with the request's client id (`worker::stream`),
//! then either the 429 is answered here or [`Gate::handle`] runs with the service's decision
//! in place of the local bucket.

use crate::host::Metric;
use crate::limits::LimitState;
use crate::rate_limit_service::Verdict;
use crate::request::{RequestHead, TokenRequest};
use crate::response::Response;

use super::{Gate, Tally};

impl<'a> Gate<'a> {
    /// The service decided this request's rate limit: [`Gate::handle`] does not take from
    /// the local bucket, and reports the service's limit in the headers.
    pub fn with_global_rate(mut self, verdict: Verdict) -> Gate<'a> {
        self.global_rate = Some(verdict);
        self
    }

    /// The client id the service is asked about: from this worker's index for a request
    /// seen before, else parsed. `None` (no client id, or a request that does not parse)
    /// needs no service call: `handle` answers it.
    pub fn client_id_of(&self, head: &RequestHead, body: &[u8]) -> Option<String> {
        if let Some(index) = self.local {
            let index = index.borrow();
            if let Some(hit) = index.get(&index.digest(head, body)) {
                return hit.client_id.clone();
            }
        }
        TokenRequest::parse(head, body).ok()?.client_id
    }

    /// The 429 for a request the service refused, counted for its client.
    pub fn over_global_limit(&self, client_id: &str, verdict: &Verdict) -> Response {
        let now = self.host.now_ms();
        self.host.add(Metric::Requests, 1);
        let limits = LimitState { rate: verdict.rate, ..LimitState::default() };
        self.rate_limit_refusal(Some(client_id), &limits, now, Tally::CountNow)
    }
}
