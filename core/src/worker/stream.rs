//! One HTTP stream's state machine: headers → body → (rate-limit service) → the gate's
//! plan → an answer now, after the stream's own forwarded IdP call, or from the root
//! context once the key's call has an outcome. The token route's chain is tokengate →
//! buffer → router: the headers callback continues (a pause there would make Envoy
//! withhold the body), the body callback pauses until the body is complete.

use crate::config::Route;
use crate::gate::{ForwardedRequest, HttpReply, Outcome, Plan};
use crate::host::{Host, Metric};
use crate::rate_limit_service::{self, Verdict};
use crate::request::{RequestHead, address_without_port, verified_certificate};
use crate::response::{HeaderEdits, Response, ResponseStep};

use super::{OPERATOR_WAIT_MS, OnAnswer, Report, ReportRequest, StreamId, Worker};

/// Where a stream is.
enum Phase {
    /// Not a token request (or already answered): everything passes.
    PassThrough,
    /// A token request whose body is being buffered.
    ReadingBody(RequestHead),
    /// A complete token request waiting for the global rate-limit service's answer.
    AskingRateLimit { head: RequestHead, body: Vec<u8>, client_id: String },
    /// `POST <usage_path>/purge` whose form body is being buffered.
    ReadingPurge,
    /// A forwarded request gone on to the IdP through the route: its answer comes back
    /// through the filter ([`Worker::on_response_headers`]).
    Forwarded(ForwardedRequest),
    /// Waiting for its key's IdP call, registered with the hub; the root context answers.
    Waiting,
    /// An operator's request (the usage report, a purge), registered with the hub; the root
    /// context answers once every worker has ticked.
    Operator,
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

    /// Whether the response headers concern tokengate: the IdP's answer to a forwarded
    /// request (every other response, a hit's local reply included, is left alone).
    pub fn awaits_idp_answer(&self) -> bool {
        matches!(self.phase, Phase::Forwarded(_))
    }
}

/// What the host does after a stream callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let the request go on (not a token request, or its body is still coming).
    Continue,
    /// Let the request go on with these changes to its headers (given by the headers
    /// callback only: Envoy takes them there).
    Pass(HeaderEdits),
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
            let report = Report::Usage {
                accept: header("accept").map(str::to_owned),
                accept_encoding: header("accept-encoding").map(str::to_owned),
                path: path.to_owned(),
            };
            return self.answer_after_ticks(host, stream, report);
        }
        if self.config.is_purge_path(path) {
            return match (method, end_of_stream) {
                ("POST", false) => {
                    stream.phase = Phase::ReadingPurge;
                    Step::Continue
                }
                ("POST", true) => respond(stream, self.bare_gate(host).purge_refused()),
                _ => respond(stream, self.bare_gate(host).purge_wrong_method()),
            };
        }
        match self.config.route(method, path) {
            Route::Other => return Step::Continue,
            Route::TokenWrongMethod => return respond(stream, self.bare_gate(host).wrong_method()),
            Route::Token => {}
        }
        let upstream = &self.config.upstream;
        let forwarded_client_cert =
            header("x-forwarded-client-cert").filter(|_| upstream.forward_client_certificate);
        let head = RequestHead {
            content_type: header("content-type").map(str::to_owned),
            authorization: header("authorization").map(str::to_owned),
            dpop: header("dpop").map(str::to_owned),
            certificate: forwarded_client_cert.and_then(|xfcc| {
                host.peer_certificate_digest().and_then(|digest| verified_certificate(xfcc, &digest))
            }),
            forwarded_client_cert: forwarded_client_cert.map(str::to_owned),
            client_address: upstream
                .client_ip_header
                .as_ref()
                .and_then(|_| host.downstream_address())
                .map(|address| address_without_port(&address).to_owned()),
        };
        // Envoy takes changes to the request's headers only here, before they move on, so
        // what tokengate sets on the way to the IdP is set now on every token request (a
        // request answered here never reaches the IdP): a client's copies removed, then
        // the client's address, `env_headers` and the client certificate set.
        let mut edits: HeaderEdits = upstream
            .owned_headers
            .iter()
            .filter(|name| header(name).is_some())
            .map(|name| (name.clone(), None))
            .collect();
        edits.extend(self.bare_gate(host).forward_edits(&head));
        let declared_length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        if declared_length.is_some_and(|length| length > self.config.max_body_bytes) {
            return respond(stream, self.bare_gate(host).too_large());
        }
        if end_of_stream {
            // No body callback will come: decide on the empty body now.
            return match self.ask_or_decide(host, stream, head, Vec::new()) {
                Step::Continue => Step::Pass(edits),
                step => step,
            };
        }
        stream.phase = Phase::ReadingBody(head);
        if edits.is_empty() { Step::Continue } else { Step::Pass(edits) }
    }

    /// The host could not give the request's headers: refused (`503`), never passed on.
    pub fn on_unreadable_request(&self, host: &dyn Host, stream: &mut Stream) -> Step {
        respond(stream, self.bare_gate(host).unreadable())
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
        let purge = match &stream.phase {
            Phase::ReadingBody(_) => false,
            Phase::ReadingPurge => true,
            Phase::Waiting | Phase::Operator | Phase::AskingRateLimit { .. } => return Step::Pause,
            Phase::Forwarded(_) | Phase::PassThrough => return Step::Continue,
        };
        if body_size > self.config.max_body_bytes {
            let gate = self.bare_gate(host);
            return respond(stream, if purge { gate.purge_refused() } else { gate.too_large() });
        }
        if !end_of_stream {
            return Step::Pause;
        }
        // The body is complete: the head moves out of the phase (the next one is set below).
        let body = read_body();
        match std::mem::replace(&mut stream.phase, Phase::PassThrough) {
            Phase::ReadingBody(head) => self.ask_or_decide(host, stream, head, body),
            _ => self.purge(host, stream, &body),
        }
    }

    /// Request trailers (HTTP/2): a token request's body ended without `end_of_stream` on its
    /// last part, so the body callback never decided it. Refused, never let through: Envoy
    /// would send the held body on to the IdP uncounted.
    pub fn on_request_trailers(&self, host: &dyn Host, stream: &mut Stream) -> Step {
        match stream.phase {
            Phase::ReadingBody(_) => respond(stream, self.bare_gate(host).with_trailers()),
            Phase::ReadingPurge => respond(stream, self.bare_gate(host).purge_refused()),
            _ => Step::Continue,
        }
    }

    /// The response headers (lowercase names, `:status` among them); only a forwarded
    /// request's answer is tokengate's (see [`Stream::awaits_idp_answer`]).
    pub fn on_response_headers(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        headers: &[(String, String)],
    ) -> ResponseStep {
        let Phase::Forwarded(forwarded) = std::mem::replace(&mut stream.phase, Phase::PassThrough) else {
            return ResponseStep::Continue;
        };
        self.bare_gate(host).forward_answered(&forwarded, headers)
    }

    /// The stream is gone: a waiter whose client went away leaves the hub (a hub busy right
    /// now keeps it; answering a stream that has gone away is a no-op for the host); a
    /// request passed on to the IdP that ended before its answer gives its quota unit back.
    pub fn on_stream_gone(&self, host: &dyn Host, stream: &Stream) {
        match &stream.phase {
            // A call of its own in flight (the rate-limit service's) leaves with it too.
            Phase::Waiting | Phase::Operator | Phase::AskingRateLimit { .. } => {
                if let Ok(mut hub) = self.hub.try_borrow_mut() {
                    hub.forget(stream.id);
                }
            }
            Phase::Forwarded(forwarded) => self.bare_gate(host).forward_abandoned(forwarded),
            _ => {}
        }
    }

    /// Registers an operator request with the hub, answered by the root once every worker
    /// has ticked.
    fn answer_after_ticks(&self, host: &dyn Host, stream: &mut Stream, answer: Report) -> Step {
        let report = ReportRequest { due_ms: host.now_ms() + OPERATOR_WAIT_MS, answer };
        self.hub.borrow_mut().reports.push((stream.id, report));
        stream.phase = Phase::Operator;
        Step::Pause
    }

    /// The purge's complete form body: `client_id=<id>`. The client's entries go from
    /// shared data and this worker's index now; the answer waits until every worker has
    /// ticked, and so emptied its own index.
    fn purge(&self, host: &dyn Host, stream: &mut Stream, body: &[u8]) -> Step {
        let gate = self.gate(host);
        let client_id = crate::request::parse_form(body)
            .ok()
            .and_then(|pairs| pairs.into_iter().find(|(name, _)| name == "client_id"))
            .map(|(_, id)| id)
            .filter(|id| !id.is_empty());
        let Some(client_id) = client_id else {
            return respond(stream, gate.purge_refused());
        };
        match gate.purge(&client_id) {
            Ok(entries) => self.answer_after_ticks(host, stream, Report::Purged(entries)),
            Err(_) => respond(stream, gate.purge_failed()),
        }
    }

    /// The body is complete: with a global rate-limit service, ask it first; else decide.
    fn ask_or_decide(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        mut head: RequestHead,
        body: Vec<u8>,
    ) -> Step {
        if let Some(xfcc) = &head.forwarded_client_cert {
            head.certificate =
                host.peer_certificate_digest().and_then(|digest| verified_certificate(xfcc, &digest));
        }
        if let Some(service) = &self.config.rate_limit_service
            && let Some(client_id) = self.gate(host).client_id_of(&head, &body)
        {
            match host.dispatch(&rate_limit_service::call(service, &client_id)) {
                Ok(token) => {
                    // Its answer comes back to this stream ([`Worker::on_answer`]).
                    self.hub.borrow_mut().calls.push((token, OnAnswer::RateLimit { stream: stream.id }));
                    stream.phase = Phase::AskingRateLimit { head, body, client_id };
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
    /// answer that does not parse) leaves the decision to the local limiter. A stream that
    /// has moved on gives `Pause` (nothing to do).
    pub(super) fn rate_limit_answered(
        &self,
        host: &dyn Host,
        stream: &mut Stream,
        reply: Option<&HttpReply>,
        trailers: &[(String, String)],
    ) -> Step {
        let phase = std::mem::replace(&mut stream.phase, Phase::PassThrough);
        let Phase::AskingRateLimit { head, body, client_id } = phase else {
            stream.phase = phase;
            return Step::Pause;
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
        let Plan { outcome, call } = gate.handle(head, body);
        if let Some(call) = call {
            self.submit(host, call);
        }
        match outcome {
            Outcome::Respond(response) => respond(stream, response),
            Outcome::Forward(forwarded) => {
                // On to the IdP through the route, with the headers set in `on_request_headers`.
                stream.phase = Phase::Forwarded(forwarded);
                Step::Continue
            }
            Outcome::Wait(waiter) => {
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
