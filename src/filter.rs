//! One HTTP stream: Envoy's stream callbacks translated into the core's stream events
//! (`tokengate_core::worker`), and the core's steps back into Envoy actions.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use tokengate_core::{Step, Stream, Worker};

use crate::host::{EnvoyHost, read_idp_reply, send_response};

pub struct TokenFilter {
    /// `None` before a configuration was accepted: everything passes.
    worker: Option<Rc<Worker>>,
    stream: Stream,
}

impl TokenFilter {
    pub fn new(context_id: u32, worker: Option<Rc<Worker>>) -> TokenFilter {
        TokenFilter { worker, stream: Stream::new(context_id) }
    }
}

/// An Envoy action for a step: a local reply is sent now.
fn act(step: Step) -> Action {
    match step {
        Step::Continue => Action::Continue,
        Step::Pause => Action::Pause,
        Step::Respond(response) => {
            send_response(&response);
            Action::Pause
        }
    }
}

impl Context for TokenFilter {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let Some(worker) = &self.worker else {
            return;
        };
        let reply = read_idp_reply(num_headers, body_size);
        let trailers = match num_trailers {
            0 => Vec::new(),
            _ => hostcalls::get_map(MapType::HttpCallResponseTrailers).unwrap_or_default(),
        };
        if let Some(response) =
            worker.on_call_answer(&EnvoyHost, &mut self.stream, token, reply.as_ref(), &trailers)
        {
            send_response(&response);
        }
    }
}

impl HttpContext for TokenFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(worker) = &self.worker else {
            return Action::Continue;
        };
        // One host call for every header: each call that returns data costs Envoy a call
        // back into the VM to allocate, the most expensive step of a hit.
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        act(worker.on_request_headers(&EnvoyHost, &mut self.stream, &headers, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(worker) = &self.worker else {
            return Action::Continue;
        };
        let read_body = || {
            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        act(worker.on_request_body(&EnvoyHost, &mut self.stream, body_size, end_of_stream, read_body))
    }
}

/// The stream is gone (the SDK drops its context in `on_delete`). Not `on_log`: the build
/// drops that export, one VM entry less per request (xtask/src/trim.rs).
impl Drop for TokenFilter {
    fn drop(&mut self) {
        if let Some(worker) = &self.worker {
            worker.on_stream_gone(&self.stream);
        }
    }
}
