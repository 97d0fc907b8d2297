//! One HTTP stream's state machine: headers → body → (rate-limit service) → the gate's
//! plan → an answer now, after the stream's own forwarded IdP call, or from the root
//! context once the key's call has an outcome. The token route's chain is tokengate →
//! buffer → router: the headers callback continues (a pause there would make Envoy
//! withhold the body), the body callback pauses until the body is complete.

use crate::config::Route;
use crate::gate::{IdpReply, Outcome, PendingCall, Plan};
use crate::host::{Host, Metric};
use crate::rate_limit_service::{self, Verdict};
use crate::request::RequestHead;
use crate::response::Response;

use super::{ReportRequest, StreamId, TICK, Worker};

/// Where a stream is.
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

pub struct Stream {
    id: StreamId,
    phase: Phase,
}

impl Stream {
    pub fn new(id: StreamId) -> Stream {
        Stream { id, phase: Phase::PassThrough }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }
}

/// What the host does after a stream callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let the request go on (not a token request, or its body is still coming).
    Continue,
    /// Hold the request: an answer comes later.
    Pause,
    /// Answer the request with this local reply; the stream is done.
    Respond(Response),
}

impl Worker {
    /// The request headers (names lowercase, as Envoy gives them).
    pub fn on_request_headers(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        headers: &[(String, String)],
        end_of_stream: bool,
    ) -> Step {
        let header = |wanted: &str| headers.iter().find(|(name, _)| name == wanted).map(|(_, v)| v.as_str());
        let (method, path) = (header(":method").unwrap_or_default(), header(":path").unwrap_or_default());
        if self.config.is_usage_request(method, path) {
            // Answered by the root once every worker has ticked, so hits still pending in
            // any worker (see `hit_tally`) are in the report.
            self.gate(host).flush_hits();
            let report = ReportRequest {
                due_ms: host.now_ms() + 2 * TICK.as_millis() as u64 + 5,
                accept: header("accept").map(str::to_owned),
                accept_encoding: header("accept-encoding").map(str::to_owned),
                path: path.to_owned(),
            };
            self.hub.borrow_mut().reports.push((stream.id, report));
            stream.phase = Phase::Waiting;
            return Step::Pause;
        }
        match self.config.route(method, path) {
            Route::Other => return Step::Continue,
            Route::TokenWrongMethod => return respond(stream, self.bare_gate(host).wrong_method()),
            Route::Token => {}
        }
        let head = RequestHead {
            content_type: header("content-type").map(str::to_owned),
            authorization: header("authorization").map(str::to_owned),
            dpop: header("dpop").map(str::to_owned),
        };
        let declared_length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        if declared_length.is_some_and(|length| length > self.config.max_body_bytes) {
            return respond(stream, self.bare_gate(host).too_large());
        }
        if end_of_stream {
            // No body callback will come: decide on the empty body now.
            return self.ask_or_decide(host, stream, head, Vec::new());
        }
        stream.phase = Phase::ReadingBody(head);
        Step::Continue
    }

    /// A part of the body has arrived (`body_size` bytes buffered so far); `read_body`
    /// reads it all, called once it is complete.
    pub fn on_request_body(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        body_size: usize,
        end_of_stream: bool,
        read_body: impl FnOnce() -> Vec<u8>,
    ) -> Step {
        match &stream.phase {
            Phase::ReadingBody(_) => {}
            Phase::Forwarded(_) | Phase::Waiting | Phase::AskingRateLimit { .. } => return Step::Pause,
            Phase::PassThrough => return Step::Continue,
        }
        if body_size > self.config.max_body_bytes {
            return respond(stream, self.bare_gate(host).too_large());
        }
        if !end_of_stream {
            return Step::Pause;
        }
        // The body is complete: the head moves out of the phase (the next one is set below).
        let Phase::ReadingBody(head) = std::mem::replace(&mut stream.phase, Phase::PassThrough) else {
            return Step::Continue;
        };
        self.ask_or_decide(host, stream, head, read_body())
    }

    /// The answer to a call the stream made itself: the rate-limit service's, or a
    /// forwarded IdP call's (`None`: the call failed). A late answer for a stream that has
    /// moved on gives `None`.
    pub fn on_call_answer(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        token: u32,
        reply: Option<&IdpReply>,
        trailers: &[(String, String)],
    ) -> Option<Response> {
        match &stream.phase {
            Phase::AskingRateLimit { token: asked, .. } if *asked == token => {
                match self.rate_limit_answered(host, stream, reply, trailers) {
                    Step::Respond(response) => Some(response),
                    Step::Continue | Step::Pause => None,
                }
            }
            Phase::Forwarded(pending) if pending.token == token => {
                let response = self.bare_gate(host).complete_forward(pending, reply);
                stream.phase = Phase::PassThrough;
                Some(response)
            }
            _ => None,
        }
    }

    /// The stream is gone: a waiter whose client went away leaves the hub. A hub busy right
    /// now keeps it; answering a stream that has gone away is a no-op for the host.
    pub fn on_stream_gone(&self, stream: &Stream) {
        if matches!(stream.phase, Phase::Waiting)
            && let Ok(mut hub) = self.hub.try_borrow_mut()
        {
            hub.forget(stream.id);
        }
    }

    /// The body is complete: with a global rate-limit service, ask it first; else decide.
    fn ask_or_decide(&self, host: &dyn Host, stream: &mut Stream, head: RequestHead, body: Vec<u8>) -> Step {
        if let Some(service) = &self.config.rate_limit_service
            && let Some(client_id) = self.gate(host).client_id_of(&head, &body)
        {
            match host.dispatch(&rate_limit_service::call(service, &client_id)) {
                Ok(token) => {
                    stream.phase = Phase::AskingRateLimit { token, head, body, client_id };
                    return Step::Pause;
                }
                Err(e) => {
                    log::warn!("rate limit service call not dispatched: {}", e.0);
                    host.add(Metric::RateLimitServiceErrors, 1);
                }
            }
        }
        self.decide(host, stream, &head, &body, None)
    }

    /// The rate-limit service's answer; a failed call (down, timed out, an error status, an
    /// answer that does not parse) leaves the decision to the local limiter.
    fn rate_limit_answered(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        reply: Option<&IdpReply>,
        trailers: &[(String, String)],
    ) -> Step {
        let Phase::AskingRateLimit { head, body, client_id, .. } =
            std::mem::replace(&mut stream.phase, Phase::PassThrough)
        else {
            return Step::Continue;
        };
        let now = host.now_ms();
        let verdict = reply.and_then(|reply| {
            let message =
                rate_limit_service::message_of(reply.status, &reply.headers, trailers, &reply.body)?;
            rate_limit_service::verdict(message, now).ok()
        });
        match verdict {
            Some(verdict) if verdict.over_limit => {
                respond(stream, self.bare_gate(host).over_global_limit(&client_id, &verdict))
            }
            _ => {
                if verdict.is_none() {
                    host.add(Metric::RateLimitServiceErrors, 1);
                }
                self.decide(host, stream, &head, &body, verdict)
            }
        }
    }

    /// The body is complete (and the rate-limit service has answered, if asked): answer
    /// now, or wait for the IdP.
    fn decide(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        head: &RequestHead,
        body: &[u8],
        global: Option<Verdict>,
    ) -> Step {
        let mut gate = self.gate(host);
        if let Some(verdict) = global {
            gate = gate.with_global_rate(verdict);
        }
        let Plan { outcome, background } = gate.handle(head, body);
        if let Some(call) = background {
            self.submit(host, call);
        }
        match outcome {
            Outcome::Respond(response) => respond(stream, response),
            Outcome::AwaitIdp(pending) => {
                stream.phase = Phase::Forwarded(pending);
                Step::Pause
            }
            Outcome::Wait(mut waiter) => {
                if let Some(call) = waiter.call.take() {
                    self.submit(host, call);
                }
                self.hub.borrow_mut().waiters.push((stream.id, *waiter));
                stream.phase = Phase::Waiting;
                Step::Pause
            }
        }
    }
}

/// The stream's answer now; it is done.
fn respond(stream: &mut Stream, response: Response) -> Step {
    stream.phase = Phase::PassThrough;
    Step::Respond(response)
}
