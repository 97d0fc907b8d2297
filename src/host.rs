//! tokengate-core's host traits over `proxy_wasm::hostcalls`, which return `Result` for the
//! statuses they expect (the SDK's trait defaults unwrap, so they are not used); the calls
//! Envoy may refuse with another status on the data path (header changes, local replies,
//! resuming a request) go through `abi`, and header maps are read as bytes, so neither
//! becomes a panic. And the stream-level translations: a core `Response` to a local reply,
//! an IdP answer to a core `HttpReply`.

use std::cell::{Cell, RefCell};
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;

use crate::abi;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use tokengate_core::HttpReply;

use crate::translate::{header_pairs, http_reply};
use tokengate_core::host::{
    Clock, Connection, Dispatcher, Entropy, HostError, HttpCall, Metric, Metrics, SharedStore, StoreError,
};
use tokengate_core::response::{Header, Response};

/// Envoy, as seen from one context.
pub struct EnvoyHost;

fn host_error(call: &str, status: Status) -> HostError {
    HostError(format!("{call}: {status:?}"))
}

impl SharedStore for EnvoyHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        match hostcalls::get_shared_data(key) {
            // An empty value comes back as no bytes with a cas: it exists.
            Ok((value, Some(cas))) => Ok(Some((value.unwrap_or_default(), cas))),
            Ok((_, None)) => Ok(None),
            Err(status) => Err(host_error("get_shared_data", status)),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Host(host_error("set_shared_data", status))),
        }
    }
}

impl Clock for EnvoyHost {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }
}

impl Dispatcher for EnvoyHost {
    fn dispatch(&self, call: &HttpCall) -> Result<u32, HostError> {
        let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            Some(&call.body),
            vec![],
            std::time::Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| host_error("dispatch_http_call", status))
    }

    /// Enqueues on this worker's own queue (without one, the root's tick dispatches).
    fn wake(&self) {
        if let Some(queue) = WAKE_QUEUE.with(Cell::get)
            && hostcalls::enqueue_shared_queue(queue, Some(b"")).is_err()
        {
            log::debug!("wake-up queue unavailable; the next tick dispatches");
        }
    }
}

thread_local! {
    /// This worker's wake-up queue, registered by its root context.
    static WAKE_QUEUE: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Sets the queue `wake` enqueues on.
pub fn set_wake_queue(queue: u32) {
    WAKE_QUEUE.with(|q| q.set(Some(queue)));
}

/// A property of the current stream as text; `None` when Envoy has none (or a host error).
fn text_property(path: Vec<&str>) -> Option<String> {
    hostcalls::get_property(path).ok().flatten().and_then(|bytes| String::from_utf8(bytes).ok())
}

impl Connection for EnvoyHost {
    fn downstream_address(&self) -> Option<String> {
        text_property(vec!["source", "address"])
    }

    fn peer_certificate_digest(&self) -> Option<String> {
        text_property(vec!["connection", "sha256_peer_certificate_digest"]).filter(|d| !d.is_empty())
    }

    /// `response.code_details` is `via_upstream` for an answer the upstream sent.
    fn answered_by_upstream(&self) -> Option<bool> {
        text_property(vec!["response", "code_details"]).map(|details| details == "via_upstream")
    }
}

impl Entropy for EnvoyHost {
    /// WASI `random_get`, which Envoy serves from its own secure random source.
    fn fill_random(&self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }
}

thread_local! {
    /// Ids of tokengate's stats in this VM (each worker defines the same names, so they
    /// are the same Envoy stats).
    static METRIC_IDS: RefCell<[Option<u32>; Metric::ALL.len()]> = const { RefCell::new([None; Metric::ALL.len()]) };
}

/// Defines tokengate's stats; call once per VM, from `on_configure`.
pub fn define_metrics() {
    for metric in Metric::ALL {
        let kind = if metric.is_gauge() { MetricType::Gauge } else { MetricType::Counter };
        match hostcalls::define_metric(kind, metric.name()) {
            Ok(id) => METRIC_IDS.with(|ids| ids.borrow_mut()[metric.index()] = Some(id)),
            Err(status) => log::warn!("stat {} not defined: {status:?}", metric.name()),
        }
    }
}

impl Metrics for EnvoyHost {
    fn add(&self, metric: Metric, delta: i64) {
        if let Some(id) = METRIC_IDS.with(|ids| ids.borrow().get(metric.index()).copied().flatten()) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }
}

/// Sends each answer on its stream, then returns to the context `back_to`; a stream that
/// has gone away is skipped.
pub fn send_answers(answers: Vec<(u32, Response)>, back_to: u32) {
    for (stream, response) in answers {
        if hostcalls::set_effective_context(stream).is_ok() {
            send_response(&response);
        }
        let _ = hostcalls::set_effective_context(back_to);
    }
}

/// Sends a local reply on the current (effective) stream. The decision and client id
/// travel as response headers (`x-tokengate-decision`, `x-tokengate-client`) for the access
/// log: two filter-state properties cost a hit about 5 µs of Envoy CPU, headers nothing
/// measurable.
pub fn send_response(response: &Response) {
    let headers = response.edge_headers();
    let status = abi::send_local_response(u32::from(response.status), &headers, &response.body);
    if status != Status::Ok {
        log::warn!("send_http_response failed: {status:?}");
    }
}

/// A header map of the current stream; `Err` when the host could not give it (the caller
/// fails closed). Values are read as bytes: the SDK's `get_map` panics on a value that is
/// not UTF-8, which a client (or an IdP) may send.
pub fn header_map(map: MapType) -> Result<Vec<(String, String)>, Status> {
    hostcalls::get_map_bytes(map).map(header_pairs)
}

/// Changes the current stream's request headers (`None` removes one).
pub fn edit_request_headers(edits: &[(String, Option<String>)]) {
    edit_headers(MapType::HttpRequestHeaders, edits.iter().map(|(n, v)| (n.as_str(), v.as_deref())));
}

/// Removes, then sets, response headers of the current stream.
pub fn amend_response_headers(remove: &[&str], set: &[Header]) {
    let removals = remove.iter().map(|name| (*name, None));
    edit_headers(
        MapType::HttpResponseHeaders,
        removals.chain(set.iter().map(|(n, v)| (n.as_ref(), Some(v.as_ref())))),
    );
}

fn edit_headers<'a>(map: MapType, edits: impl Iterator<Item = (&'a str, Option<&'a str>)>) {
    for (name, value) in edits {
        let status = match value {
            Some(v) => abi::replace_header(map, name, v),
            None => abi::remove_header(map, name),
        };
        if status != Status::Ok {
            log::warn!("header {name} not changed: {status:?}");
        }
    }
}

/// The IdP's answer in an `on_http_call_response` callback; `None` when the call failed
/// (no headers: refused, reset or timed out).
pub fn read_http_reply(num_headers: usize, body_size: usize) -> Option<HttpReply> {
    if num_headers == 0 {
        return None;
    }
    let headers = header_map(MapType::HttpCallResponseHeaders).ok()?;
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    http_reply(headers, body)
}
