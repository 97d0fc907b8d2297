//! One HTTP stream. The token route's chain is tokengate -> buffer -> router: the headers
//! callback returns `Continue` (a `Pause` there would make Envoy withhold the body), the
//! body callback returns `Pause` until the body is complete, and then the stream is
//! answered locally (hit, refusal), after a forwarded IdP call, or by the root context once
//! its key's IdP call has an outcome.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use tokengate_core::cache::LocalIndex;
use tokengate_core::gate::{PendingCall, Plan};
use tokengate_core::request::RequestHead;
use tokengate_core::response::Response;
use tokengate_core::{Config, Gate, IdpReply, Outcome};

use crate::host::EnvoyHost;
use crate::hub::SharedHub;

/// Where a stream is in tokengate's state machine.
enum Phase {
    /// Not a token request (or already answered): everything passes.
    PassThrough,
    /// A token request whose body is being buffered.
    ReadingBody(RequestHead),
    /// A forwarded request waiting for its own IdP call.
    Forwarded(PendingCall),
    /// Registered with the hub; the root context answers.
    Waiting,
}

pub struct TokenFilter {
    context_id: u32,
    config: Option<Rc<Config>>,
    key_prefix: Rc<str>,
    hub: SharedHub,
    local_index: Rc<RefCell<LocalIndex>>,
    phase: Phase,
}

impl TokenFilter {
    pub fn new(
        context_id: u32,
        config: Option<Rc<Config>>,
        key_prefix: Rc<str>,
        hub: SharedHub,
        local_index: Rc<RefCell<LocalIndex>>,
    ) -> TokenFilter {
        TokenFilter { context_id, config, key_prefix, hub, local_index, phase: Phase::PassThrough }
    }

    fn request_header(name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
    }

    /// Sends `response` as the stream's local reply; the stream is then done.
    fn respond(&mut self, response: &Response) -> Action {
        self.phase = Phase::PassThrough;
        send_response(response);
        Action::Pause
    }

    /// The body is complete: answer now, or wait for the IdP.
    fn decide(&mut self, config: &Config, head: &RequestHead, body: &[u8]) -> Action {
        let gate = Gate::new(config, &EnvoyHost, &self.key_prefix).with_local_index(&self.local_index);
        let Plan { outcome, background } = gate.handle(head, body);
        if let Some(call) = background {
            self.hub.borrow_mut().submit(call);
        }
        match outcome {
            Outcome::Respond(response) => self.respond(&response),
            Outcome::AwaitIdp(pending) => {
                self.phase = Phase::Forwarded(pending);
                Action::Pause
            }
            Outcome::Wait(mut waiter) => {
                let mut hub = self.hub.borrow_mut();
                if let Some(call) = waiter.call.take() {
                    hub.submit(call);
                }
                hub.waiters.push((self.context_id, *waiter));
                self.phase = Phase::Waiting;
                Action::Pause
            }
        }
    }
}

/// Sends a local reply on the current (effective) stream, with tokengate's decision and
/// the client id in the stream's filter state for the access log
/// (`%FILTER_STATE(wasm.tokengate_decision:PLAIN)%`, `...wasm.tokengate_client...`).
pub fn send_response(response: &Response) {
    if let Some(decision) = response.decision {
        let _ = hostcalls::set_property(vec!["tokengate_decision"], Some(decision.as_str().as_bytes()));
    }
    if let Some(client_id) = &response.client_id {
        let _ = hostcalls::set_property(vec!["tokengate_client"], Some(client_id.as_bytes()));
    }
    let headers: Vec<(&str, &str)> = response.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(response.status), headers, Some(&response.body))
    {
        log::warn!("send_http_response failed: {status:?}");
    }
}

/// The IdP's answer in an `on_http_call_response` callback; `None` when the call failed
/// (no headers: refused, reset or timed out).
pub fn read_idp_reply(num_headers: usize, body_size: usize) -> Option<IdpReply> {
    if num_headers == 0 {
        return None;
    }
    let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).ok()?;
    let status = headers
        .iter()
        .find(|(name, _)| name == ":status")
        .and_then(|(_, value)| value.parse::<u16>().ok())?;
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    let headers = headers.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    Some(IdpReply { status, headers, body })
}

impl Context for TokenFilter {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _: usize) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let pending = match &self.phase {
            Phase::Forwarded(pending) if pending.token == token => pending.clone(),
            // A late answer for a stream that has moved on: nothing to do.
            _ => return,
        };
        let reply = read_idp_reply(num_headers, body_size);
        let response =
            Gate::new(&config, &EnvoyHost, &self.key_prefix).complete_forward(&pending, reply.as_ref());
        self.respond(&response);
    }
}

impl HttpContext for TokenFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let method = Self::request_header(":method").unwrap_or_default();
        let path = Self::request_header(":path").unwrap_or_default();
        if config.is_usage_request(&method, &path) {
            let accept = Self::request_header("accept");
            let response = Gate::new(&config, &EnvoyHost, &self.key_prefix).usage(accept.as_deref(), &path);
            return self.respond(&response);
        }
        if !config.is_token_request(&method, &path) {
            return Action::Continue;
        }
        // One host call for the three headers a token request needs (names come lowercase).
        let mut head = RequestHead::default();
        let mut declared_length = None;
        for (name, value) in hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default() {
            match name.as_str() {
                "content-type" => head.content_type = Some(value),
                "authorization" => head.authorization = Some(value),
                "content-length" => declared_length = value.parse::<usize>().ok(),
                _ => {}
            }
        }
        if declared_length.is_some_and(|length| length > config.max_body_bytes) {
            let response = Gate::new(&config, &EnvoyHost, &self.key_prefix).too_large();
            return self.respond(&response);
        }
        if end_of_stream {
            // No body callback will come: decide on the empty body now.
            return self.decide(&config, &head, &[]);
        }
        self.phase = Phase::ReadingBody(head);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let head = match &self.phase {
            Phase::ReadingBody(head) => head.clone(),
            Phase::Forwarded(_) | Phase::Waiting => return Action::Pause,
            Phase::PassThrough => return Action::Continue,
        };
        if body_size > config.max_body_bytes {
            let response = Gate::new(&config, &EnvoyHost, &self.key_prefix).too_large();
            return self.respond(&response);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.decide(&config, &head, &body)
    }

    fn on_log(&mut self) {
        // The stream is over: a waiter whose client went away leaves the hub.
        if matches!(self.phase, Phase::Waiting) {
            self.hub.borrow_mut().remove_waiter(self.context_id);
        }
    }
}
