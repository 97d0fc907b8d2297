//! mock-idp: a stand-in for Auth0's `POST /oauth/token`, for tokengate's integration tests
//! (in-process, through [`MockIdp`]) and its demo (the `mock-idp` binary).
//!
//! It knows a list of clients and secrets, counts token calls per client and audience,
//! issues a distinct token per call, and injects faults: a delay, an error status, or a
//! connection dropped without an answer. Every other path answers a small JSON echo and is
//! recorded, so tests can check that non-token traffic passed through untouched.
//! Admin over HTTP (for the demo): `GET /__mock/calls`, `POST /__mock/fault`
//! (`{"delay_ms", "status", "refuse"}`), `POST /__mock/expires_in`, `POST /__mock/reset`.

mod http;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::http::{Reply, Request};

pub const TOKEN_PATH: &str = "/oauth/token";

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub clients: Vec<Client>,
    /// `expires_in` of issued tokens, in seconds.
    pub expires_in: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { clients: Vec::new(), expires_in: 86_400 }
    }
}

/// What the token endpoint does before (or instead of) answering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    pub delay: Duration,
    /// Answer this status with an Auth0-like error body.
    pub status: Option<u16>,
    /// Read the request, then close the connection without an answer.
    pub refuse: bool,
    /// With a `429`: `retry-after` as an HTTP-date this many seconds ahead, and no
    /// `x-ratelimit-*` headers.
    pub retry_after_date_in: Option<u64>,
}

/// Auth0's rate-limit headers, sent on every token answer while set (a `429` fault then
/// uses them too, with `retry-after` = `reset_in` seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    /// `x-ratelimit-reset` is now + this many seconds.
    pub reset_in: u64,
}

/// A request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// With the query string.
    pub path: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    secrets: HashMap<String, String>,
    expires_in: u64,
    /// Pads issued access tokens to at least this many bytes (real ones are ~1 KB).
    token_bytes: usize,
    fault: Fault,
    rate_limit: Option<RateLimit>,
    /// Sent on every token answer, faults included (Auth0's quota headers, say).
    extra_headers: Vec<(String, String)>,
    token_calls: u64,
    by_client: BTreeMap<String, u64>,
    by_client_audience: BTreeMap<(String, String), u64>,
    requests: Vec<Recorded>,
}

struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    issued: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server: take the data anyway.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running mock IdP; dropping it stops the server.
pub struct MockIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockIdp {
    /// Starts on a free loopback port.
    pub fn start(config: Config) -> io::Result<MockIdp> {
        MockIdp::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config)
    }

    pub fn start_on(addr: SocketAddr, config: Config) -> io::Result<MockIdp> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = State {
            secrets: config.clients.into_iter().map(|c| (c.id, c.secret)).collect(),
            expires_in: config.expires_in,
            ..State::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stopping: AtomicBool::new(false),
            issued: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new().name("mock-idp-accept".into()).spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn_shared = Arc::clone(&accept_shared);
                let _ = thread::Builder::new()
                    .name("mock-idp-conn".into())
                    .spawn(move || serve(stream, &conn_shared));
            }
        })?;
        Ok(MockIdp { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests to the token path, whatever their outcome.
    pub fn token_calls(&self) -> u64 {
        self.shared.state().token_calls
    }

    pub fn calls_for(&self, client_id: &str) -> u64 {
        self.shared.state().by_client.get(client_id).copied().unwrap_or(0)
    }

    /// `audience` "" counts calls without one.
    pub fn calls_for_audience(&self, client_id: &str, audience: &str) -> u64 {
        let key = (client_id.to_owned(), audience.to_owned());
        self.shared.state().by_client_audience.get(&key).copied().unwrap_or(0)
    }

    /// Every request received (admin paths excepted), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shared.state().fault = fault;
    }

    /// Sends these rate-limit headers on every token answer (`None`: none).
    pub fn set_rate_limit(&self, rate_limit: Option<RateLimit>) {
        self.shared.state().rate_limit = rate_limit;
    }

    /// Sends these headers on every token answer, faults included (empty: none).
    pub fn set_extra_headers(&self, headers: &[(&str, &str)]) {
        self.shared.state().extra_headers =
            headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    }

    pub fn set_expires_in(&self, seconds: u64) {
        self.shared.state().expires_in = seconds;
    }

    /// Pads issued access tokens to at least `bytes` (the benchmark uses real-sized ones).
    pub fn set_token_bytes(&self, bytes: usize) {
        self.shared.state().token_bytes = bytes;
    }

    pub fn reset_counts(&self) {
        let mut state = self.shared.state();
        state.token_calls = 0;
        state.by_client.clear();
        state.by_client_audience.clear();
        state.requests.clear();
    }

    /// The counts as JSON (also served at `GET /__mock/calls`).
    pub fn calls_json(&self) -> Value {
        calls_json(&self.shared.state())
    }
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn calls_json(state: &State) -> Value {
    let by_client_audience: BTreeMap<String, u64> =
        state.by_client_audience.iter().map(|((c, a), n)| (format!("{c}|{a}"), *n)).collect();
    json!({"token_calls": state.token_calls, "by_client": state.by_client, "by_client_audience": by_client_audience})
}

fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(reader_stream) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader_stream);
    let mut writer = stream;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let request = match http::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(_) => {
                let _ = http::write_reply(
                    &mut writer,
                    &token::error(400, "invalid_request", "malformed HTTP request"),
                    true,
                );
                return;
            }
        };
        let Some(reply) = handle(&request, shared) else {
            // Fault `refuse`: drop the connection without an answer.
            let _ = writer.shutdown(Shutdown::Both);
            return;
        };
        let close = request.wants_close();
        if http::write_reply(&mut writer, &reply, close).is_err() || close {
            return;
        }
    }
}

/// The reply for one request; `None` to drop the connection.
fn handle(request: &Request, shared: &Shared) -> Option<Reply> {
    if let Some(admin) = request.path().strip_prefix("/__mock/") {
        return Some(handle_admin(admin, request, shared));
    }
    let is_token = request.method == "POST" && request.path() == TOKEN_PATH;
    let mut reply = answer(request, shared)?;
    if is_token {
        reply.headers.extend(shared.state().extra_headers.iter().cloned());
    }
    let rate_limit = shared.state().rate_limit;
    if let (true, Some(limit)) = (is_token, rate_limit) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        reply
            .headers
            .retain(|(n, _)| !n.starts_with("x-ratelimit-") && (reply.status != 429 || n != "retry-after"));
        reply.headers.extend([
            ("x-ratelimit-limit".to_owned(), limit.limit.to_string()),
            ("x-ratelimit-remaining".to_owned(), limit.remaining.to_string()),
            ("x-ratelimit-reset".to_owned(), (now + limit.reset_in).to_string()),
        ]);
        if reply.status == 429 {
            reply.headers.push(("retry-after".to_owned(), limit.reset_in.to_string()));
        }
    }
    Some(reply)
}

fn answer(request: &Request, shared: &Shared) -> Option<Reply> {
    let fault = {
        let mut state = shared.state();
        state.requests.push(Recorded {
            method: request.method.clone(),
            path: request.target.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
        });
        if request.method != "POST" || request.path() != TOKEN_PATH {
            return Some(Reply::json(
                200,
                &json!({"backend": true, "method": request.method, "path": request.target}),
            ));
        }
        state.token_calls += 1;
        state.fault.clone()
    };
    let parsed = token::parse(request);
    if let Some(parsed) = &parsed
        && let Some(client_id) = &parsed.client_id
    {
        let mut state = shared.state();
        *state.by_client.entry(client_id.clone()).or_default() += 1;
        *state.by_client_audience.entry((client_id.clone(), parsed.audience().to_owned())).or_default() += 1;
    }
    if !fault.delay.is_zero() {
        thread::sleep(fault.delay);
    }
    if fault.refuse {
        return None;
    }
    if let Some(status) = fault.status {
        return Some(fault_reply(status, fault.retry_after_date_in));
    }
    let Some(parsed) = parsed else {
        return Some(token::error(400, "invalid_request", "could not read the request body"));
    };
    let (secrets, expires_in, token_bytes) = {
        let state = shared.state();
        (state.secrets.clone(), state.expires_in, state.token_bytes)
    };
    Some(token::answer(&parsed, &secrets, expires_in, || {
        let n = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let client = sanitize(parsed.client_id.as_deref().unwrap_or("anonymous"));
        let token = format!("mock.{client}.{}.{n}", sanitize(parsed.audience()));
        let padding = token_bytes.saturating_sub(token.len());
        format!("{token}{}", "x".repeat(padding))
    }))
}

fn fault_reply(status: u16, retry_after_date_in: Option<u64>) -> Reply {
    let code = match status {
        429 => "too_many_requests",
        401 => "access_denied",
        403 => "unauthorized_client",
        400..=499 => "invalid_request",
        _ => "server_error",
    };
    let mut reply = token::error(status, code, "injected fault");
    if let (429, Some(seconds)) = (status, retry_after_date_in) {
        let at = SystemTime::now() + Duration::from_secs(seconds);
        reply.headers.push(("retry-after".to_owned(), httpdate::fmt_http_date(at)));
        return reply;
    }
    if status == 429 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        reply.headers.extend([
            ("retry-after".to_owned(), "1".to_owned()),
            ("x-ratelimit-limit".to_owned(), "10".to_owned()),
            ("x-ratelimit-remaining".to_owned(), "0".to_owned()),
            ("x-ratelimit-reset".to_owned(), (now + 1).to_string()),
        ]);
    }
    reply
}

fn handle_admin(path: &str, request: &Request, shared: &Shared) -> Reply {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let mut state = shared.state();
    match (request.method.as_str(), path) {
        ("GET", "calls") => Reply::json(200, &calls_json(&state)),
        ("POST", "fault") => {
            state.fault = Fault {
                delay: Duration::from_millis(body["delay_ms"].as_u64().unwrap_or(0)),
                status: body["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
                refuse: body["refuse"].as_bool().unwrap_or(false),
                retry_after_date_in: body["retry_after_date_in"].as_u64(),
            };
            Reply::json(200, &json!({"ok": true}))
        }
        ("POST", "rate_limit") => {
            state.rate_limit =
                match (body["limit"].as_u64(), body["remaining"].as_u64(), body["reset_in"].as_u64()) {
                    (Some(limit), Some(remaining), Some(reset_in)) => {
                        Some(RateLimit { limit, remaining, reset_in })
                    }
                    _ => None,
                };
            Reply::json(200, &json!({"ok": true}))
        }
        ("POST", "headers") => {
            let pairs = body["headers"].as_array().cloned().unwrap_or_default();
            state.extra_headers = pairs
                .iter()
                .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned())))
                .collect();
            Reply::json(200, &json!({"ok": true}))
        }
        ("POST", "expires_in") => match body["expires_in"].as_u64() {
            Some(seconds) => {
                state.expires_in = seconds;
                Reply::json(200, &json!({"ok": true}))
            }
            None => token::error(400, "invalid_request", "expires_in must be a number"),
        },
        ("POST", "reset") => {
            state.token_calls = 0;
            state.by_client.clear();
            state.by_client_audience.clear();
            state.requests.clear();
            Reply::json(200, &json!({"ok": true}))
        }
        _ => token::error(404, "not_found", "unknown admin path"),
    }
}

/// Keeps token text to characters that need no escaping anywhere.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests;
