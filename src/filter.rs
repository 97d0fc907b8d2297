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
use tokengate_core::config::Route;
use tokengate_core::gate::{PendingCall, Plan};
use tokengate_core::hit_tally::PendingHits;
use tokengate_core::host::{Clock, Dispatcher, Metric, Metrics};
use tokengate_core::rate_limit_service::{self, Verdict};
use tokengate_core::request::RequestHead;
use tokengate_core::response::Response;
use tokengate_core::{Config, Gate, Outcome};

use crate::host::{EnvoyHost, read_idp_reply, send_response};
use crate::hub::{ReportRequest, SharedHub, TICK};

/// Where a stream is in tokengate's state machine.
enum Phase {
    /// Not a token request (or already answered): everything passes.
    PassThrough,
    /// A token request whose body is being buffered.
    ReadingBody(RequestHead),
    /// A complete token request waiting for the global rate-limit service's answer.
    AskingRateLimit { token: u32, head: RequestHead, body: Vec<u8>, client_id: String },
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
    pending_hits: Rc<RefCell<PendingHits>>,
    phase: Phase,
}

impl TokenFilter {
    pub fn new(
        context_id: u32,
        config: Option<Rc<Config>>,
        key_prefix: Rc<str>,
        hub: SharedHub,
        local_index: Rc<RefCell<LocalIndex>>,
        pending_hits: Rc<RefCell<PendingHits>>,
    ) -> TokenFilter {
        TokenFilter {
            context_id,
            config,
            key_prefix,
            hub,
            local_index,
            pending_hits,
            phase: Phase::PassThrough,
        }
    }

    /// Sends `response` as the stream's local reply; the stream is then done.
    fn respond(&mut self, response: &Response) -> Action {
        self.phase = Phase::PassThrough;
        send_response(response);
        Action::Pause
    }

    /// The body is complete: with a global rate-limit service, ask it first; else decide.
    fn ask_or_decide(&mut self, config: &Config, head: RequestHead, body: Vec<u8>) -> Action {
        if let Some(service) = &config.rate_limit_service {
            let gate = Gate::new(config, &EnvoyHost, &self.key_prefix).with_local_index(&self.local_index);
            if let Some(client_id) = gate.client_id_of(&head, &body) {
                match EnvoyHost.dispatch(&rate_limit_service::call(service, &client_id)) {
                    Ok(token) => {
                        self.phase = Phase::AskingRateLimit { token, head, body, client_id };
                        return Action::Pause;
                    }
                    Err(e) => {
                        log::warn!("rate limit service call not dispatched: {}", e.0);
                        EnvoyHost.add(Metric::RateLimitServiceErrors, 1);
                    }
                }
            }
        }
        self.decide(config, &head, &body, None)
    }

    /// The body is complete (and the rate-limit service has answered, if asked): answer
    /// now, or wait for the IdP.
    fn decide(
        &mut self,
        config: &Config,
        head: &RequestHead,
        body: &[u8],
        global: Option<Verdict>,
    ) -> Action {
        let mut gate = Gate::new(config, &EnvoyHost, &self.key_prefix)
            .with_local_index(&self.local_index)
            .with_pending_hits(&self.pending_hits);
        if let Some(verdict) = global {
            gate = gate.with_global_rate(verdict);
        }
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

    /// The rate-limit service's answer to this stream's call; a failed call (down, timed
    /// out, an error status, an answer that does not parse) leaves the decision to the
    /// local limiter.
    fn rate_limit_answered(
        &mut self,
        config: &Config,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let Phase::AskingRateLimit { head, body, client_id, .. } =
            std::mem::replace(&mut self.phase, Phase::PassThrough)
        else {
            return;
        };
        let now = EnvoyHost.now_ms();
        let trailers = match num_trailers {
            0 => Vec::new(),
            _ => hostcalls::get_map(MapType::HttpCallResponseTrailers).unwrap_or_default(),
        };
        let verdict = read_idp_reply(num_headers, body_size).and_then(|reply| {
            let message =
                rate_limit_service::message_of(reply.status, &reply.headers, &trailers, &reply.body)?;
            rate_limit_service::verdict(message, now).ok()
        });
        match verdict {
            Some(verdict) if verdict.over_limit => {
                let response =
                    Gate::new(config, &EnvoyHost, &self.key_prefix).over_global_limit(&client_id, &verdict);
                self.respond(&response);
            }
            _ => {
                if verdict.is_none() {
                    EnvoyHost.add(Metric::RateLimitServiceErrors, 1);
                }
                self.decide(config, &head, &body, verdict);
            }
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
        let Some(config) = self.config.clone() else {
            return;
        };
        if matches!(&self.phase, Phase::AskingRateLimit { token: t, .. } if *t == token) {
            self.rate_limit_answered(&config, num_headers, body_size, num_trailers);
            return;
        }
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
        // One host call for every header: each call that returns data costs Envoy a call
        // back into the VM to allocate, the most expensive step of a hit.
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        let header = |wanted: &str| headers.iter().find(|(name, _)| name == wanted).map(|(_, v)| v.as_str());
        let (method, path) = (header(":method").unwrap_or_default(), header(":path").unwrap_or_default());
        if config.is_usage_request(method, path) {
            // Answered by the root once every worker has ticked, so hits still pending in
            // any worker (see `hit_tally`) are in the report.
            Gate::new(&config, &EnvoyHost, &self.key_prefix)
                .with_pending_hits(&self.pending_hits)
                .flush_hits();
            let due_ms = EnvoyHost.now_ms() + 2 * TICK.as_millis() as u64 + 5;
            let report = ReportRequest {
                due_ms,
                accept: header("accept").map(str::to_owned),
                accept_encoding: header("accept-encoding").map(str::to_owned),
                path: path.to_owned(),
            };
            self.hub.borrow_mut().reports.push((self.context_id, report));
            self.phase = Phase::Waiting;
            return Action::Pause;
        }
        match config.route(method, path) {
            Route::Other => return Action::Continue,
            Route::TokenWrongMethod => {
                let response = Gate::new(&config, &EnvoyHost, &self.key_prefix).wrong_method();
                return self.respond(&response);
            }
            Route::Token => {}
        }
        let head = RequestHead {
            content_type: header("content-type").map(str::to_owned),
            authorization: header("authorization").map(str::to_owned),
            dpop: header("dpop").map(str::to_owned),
        };
        let declared_length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        if declared_length.is_some_and(|length| length > config.max_body_bytes) {
            let response = Gate::new(&config, &EnvoyHost, &self.key_prefix).too_large();
            return self.respond(&response);
        }
        if end_of_stream {
            // No body callback will come: decide on the empty body now.
            return self.ask_or_decide(&config, head, Vec::new());
        }
        self.phase = Phase::ReadingBody(head);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        match &self.phase {
            Phase::ReadingBody(_) => {}
            Phase::Forwarded(_) | Phase::Waiting | Phase::AskingRateLimit { .. } => return Action::Pause,
            Phase::PassThrough => return Action::Continue,
        }
        if body_size > config.max_body_bytes {
            let response = Gate::new(&config, &EnvoyHost, &self.key_prefix).too_large();
            return self.respond(&response);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        // The body is complete: the head moves out of the phase (`decide` sets the next one).
        let Phase::ReadingBody(head) = std::mem::replace(&mut self.phase, Phase::PassThrough) else {
            return Action::Continue;
        };
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.ask_or_decide(&config, head, body)
    }
}

/// The stream is gone (the SDK drops its context in `on_delete`): a waiter whose client went
/// away leaves the hub. Not `on_log`: the build drops that export, one VM entry less per
/// request (xtask/src/trim.rs). A hub busy right now keeps the waiter; answering a stream
/// that has gone away is a no-op.
impl Drop for TokenFilter {
    fn drop(&mut self) {
        if matches!(self.phase, Phase::Waiting)
            && let Ok(mut hub) = self.hub.try_borrow_mut()
        {
            hub.remove_waiter(self.context_id);
        }
    }
}
