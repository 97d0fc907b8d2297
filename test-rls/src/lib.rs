//! A small Envoy global rate-limit service for tokengate's integration tests: the real
//! gRPC protocol (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, served
//! by tonic), per-client limits per minute, and a record of every call.

mod messages;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};

pub use messages::*;

const OK: i32 = 1;
const OVER_LIMIT: i32 = 2;
const MINUTE: i32 = 2;

/// One `ShouldRateLimit` call as the service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub domain: String,
    /// The descriptors' entries, `(key, value)`.
    pub entries: Vec<(String, String)>,
    pub hits_addend: u32,
}

#[derive(Default)]
struct State {
    /// Requests a minute per `client_id` descriptor value; others have no limit.
    limits: HashMap<String, u32>,
    /// Hits per (client id, minute).
    counts: HashMap<(String, u64), u32>,
    calls: Vec<Call>,
}

impl State {
    fn decide(&mut self, request: RateLimitRequest) -> RateLimitResponse {
        let entries: Vec<(String, String)> = request
            .descriptors
            .iter()
            .flat_map(|d| d.entries.iter().map(|e| (e.key.clone(), e.value.clone())))
            .collect();
        self.calls.push(Call {
            domain: request.domain,
            entries: entries.clone(),
            hits_addend: request.hits_addend,
        });
        let client = entries.iter().find(|(k, _)| k == "client_id").map(|(_, v)| v.clone());
        let Some((client, limit)) = client.and_then(|c| self.limits.get(&c).map(|l| (c, *l))) else {
            return RateLimitResponse {
                overall_code: OK,
                statuses: vec![DescriptorStatus { code: OK, ..Default::default() }],
            };
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let count = self.counts.entry((client, now / 60)).or_insert(0);
        *count += request.hits_addend.max(1);
        let code = if *count > limit { OVER_LIMIT } else { OK };
        let status = DescriptorStatus {
            code,
            current_limit: Some(RateLimit {
                name: "per client".into(),
                requests_per_unit: limit,
                unit: MINUTE,
            }),
            limit_remaining: limit.saturating_sub(*count),
            duration_until_reset: Some(Duration { seconds: (60 - now % 60) as i64, nanos: 0 }),
        };
        RateLimitResponse { overall_code: code, statuses: vec![status] }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tonic service: `ShouldRateLimit` only (what generated code would do, written out
/// for one method so no protoc is needed).
#[derive(Clone)]
struct RateLimitService(Shared);

impl NamedService for RateLimitService {
    const NAME: &'static str = "envoy.service.ratelimit.v3.RateLimitService";
}

struct ShouldRateLimit(Shared);

impl UnaryService<RateLimitRequest> for ShouldRateLimit {
    type Response = RateLimitResponse;
    type Future = BoxFuture<tonic::Response<RateLimitResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<RateLimitRequest>) -> Self::Future {
        let response = lock(&self.0).decide(request.into_inner());
        Box::pin(async move { Ok(tonic::Response::new(response)) })
    }
}

impl<B> Service<http::Request<B>> for RateLimitService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            if request.uri().path() != "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit" {
                return Ok(tonic::Status::unimplemented("only ShouldRateLimit").into_http());
            }
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(ShouldRateLimit(state), request).await)
        })
    }
}

/// A running service on a free loopback port; dropping it stops the service.
pub struct TestRls {
    port: u16,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRls {
    /// Starts the service with these limits: `(client id, requests a minute)`.
    pub fn start(limits: &[(&str, u32)]) -> std::io::Result<TestRls> {
        let state: Shared = Arc::new(Mutex::new(State {
            limits: limits.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let service = RateLimitService(state.clone());
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stop.await;
                    })
                    .await;
            });
        });
        Ok(TestRls { port, state, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Stops the service; its port refuses connections from then on.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestRls {
    fn drop(&mut self) {
        self.shut_down();
    }
}
