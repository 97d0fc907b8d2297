//! One HTTP stream: Envoy's stream callbacks translated into the core's stream events
//! (`tokengate_core::worker`), and the core's steps back into Envoy actions.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType, Status};
use tokengate_core::response::Response;
use tokengate_core::{ResponseStep, Step, Stream, Worker};

use crate::abi;
use crate::host::{
    EnvoyHost, amend_response_headers, edit_request_headers, header_map, read_http_reply, send_answers,
    send_response,
};
use crate::translate::action_of;

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

/// An Envoy action for a step: a local reply is sent now, header changes are made now.
fn act(step: Step) -> Action {
    let action = action_of(&step);
    match step {
        Step::Pass(edits) => edit_request_headers(&edits),
        Step::Respond(response) => send_response(&response),
        Step::Continue | Step::Pause => {}
    }
    action
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
        let reply = read_http_reply(num_headers, body_size);
        let trailers = match num_trailers {
            0 => Vec::new(),
            // Unreadable trailers: the rate-limit service's answer does not parse, and the
            // local limiter decides.
            _ => header_map(MapType::HttpCallResponseTrailers).unwrap_or_default(),
        };
        // The stream is held while its call runs: it goes on (resumed) or is answered.
        let routed = worker.on_answer(&EnvoyHost, token, reply.as_ref(), &trailers, Some(&mut self.stream));
        send_answers(routed.answers, self.stream.id());
        let Some(step) = routed.step else {
            return;
        };
        let resume = matches!(step, Step::Continue);
        act(step);
        if resume {
            let status = abi::continue_request();
            if status != Status::Ok {
                log::warn!("request not resumed: {status:?}");
            }
        }
    }
}

impl HttpContext for TokenFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Fails closed: without a configuration, or without the request's headers, tokengate
        // cannot tell a token request from another, and none may pass uncounted.
        let Some(worker) = &self.worker else {
            return act(Step::Respond(Response::unconfigured()));
        };
        // One host call for every header: each call that returns data costs Envoy a call
        // back into the VM to allocate, the most expensive step of a hit.
        match header_map(MapType::HttpRequestHeaders) {
            Ok(headers) => {
                act(worker.on_request_headers(&EnvoyHost, &mut self.stream, &headers, end_of_stream))
            }
            Err(status) => {
                log::warn!("request headers unreadable ({status:?}): refused");
                act(worker.on_unreadable_request(&EnvoyHost, &mut self.stream))
            }
        }
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

    /// Called only for a request with trailers (HTTP/2).
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(worker) = &self.worker else {
            return Action::Continue;
        };
        act(worker.on_request_trailers(&EnvoyHost, &mut self.stream))
    }

    /// Only the IdP's answer to a forwarded request is read; every other response (a hit's
    /// local reply among them) costs no host call.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.as_ref().filter(|_| self.stream.awaits_idp_answer()) else {
            return Action::Continue;
        };
        // Unreadable: as an answer without headers (Envoy's own, a 502 to the client).
        let headers = header_map(MapType::HttpResponseHeaders).unwrap_or_default();
        match worker.on_response_headers(&EnvoyHost, &mut self.stream, &headers) {
            ResponseStep::Continue => Action::Continue,
            ResponseStep::Amend { remove, set } => {
                amend_response_headers(remove, &set);
                Action::Continue
            }
            ResponseStep::Replace(response) => {
                send_response(&response);
                Action::Pause
            }
        }
    }
}

/// The stream is gone (the SDK drops its context in `on_delete`). Not `on_log`: the build
/// drops that export, one VM entry less per request (xtask/src/trim.rs).
impl Drop for TokenFilter {
    fn drop(&mut self) {
        if let Some(worker) = &self.worker {
            worker.on_stream_gone(&EnvoyHost, &self.stream);
        }
    }
}
