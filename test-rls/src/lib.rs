//! Envoy's global rate-limit service for tokengate's integration tests: the real protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) with Envoy's generated
//! types (`envoy-types`), served by tonic, and every decision made by Limitador — the
//! counting engine of Kuadrant's rate-limit service — from its own limits and counters.
//! Per client id a limit a minute; every call is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use limitador::RateLimiter;
use limitador::limit::{Context, Limit};

/// One `ShouldRateLimit` call as the service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub domain: String,
    /// The descriptors' entries, `(key, value)`.
    pub entries: Vec<(String, String)>,
    pub hits_addend: u32,
}

/// The window of every limit: requests a minute.
const WINDOW_SECONDS: u64 = 60;

struct State {
    limiter: RateLimiter,
    calls: Vec<Call>,
}

impl State {
    /// Limitador decides: the descriptors' entries are its context, the domain its
    /// namespace; a client without a limit matches none and is let through.
    fn decide(&mut self, request: RateLimitRequest) -> RateLimitResponse {
        let entries: Vec<(String, String)> = request
            .descriptors
            .iter()
            .flat_map(|d| d.entries.iter().map(|e| (e.key.clone(), e.value.clone())))
            .collect();
        self.calls.push(Call {
            domain: request.domain.clone(),
            entries: entries.clone(),
            hits_addend: request.hits_addend,
        });
        let context: Context = entries.into_iter().collect::<HashMap<String, String>>().into();
        let delta = u64::from(request.hits_addend.max(1));
        let checked =
            self.limiter.check_rate_limited_and_update(&request.domain.as_str().into(), &context, delta);
        let Ok(checked) = checked else {
            return RateLimitResponse { overall_code: Code::Unknown.into(), ..Default::default() };
        };
        let code = if checked.limited { Code::OverLimit } else { Code::Ok };
        let status = match checked.counters.first() {
            None => DescriptorStatus { code: Code::Ok.into(), ..Default::default() },
            Some(counter) => DescriptorStatus {
                code: code.into(),
                current_limit: Some(RateLimit {
                    name: "per client".into(),
                    requests_per_unit: u32::try_from(counter.max_value()).unwrap_or(u32::MAX),
                    unit: Unit::Minute.into(),
                }),
                limit_remaining: counter.remaining().and_then(|r| u32::try_from(r).ok()).unwrap_or(0),
                duration_until_reset: counter.expires_in().map(|left| Duration {
                    seconds: i64::try_from(left.as_secs().max(1)).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                ..Default::default()
            },
        };
        RateLimitResponse { overall_code: code.into(), statuses: vec![status], ..Default::default() }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The generated service trait, answered from the shared state.
struct Service(Shared);

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let response = lock(&self.0).decide(request.into_inner());
        Ok(tonic::Response::new(response))
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
    /// Starts the service with these Limitador limits, in every domain's namespace
    /// (`tokengate`): `(client id, requests a minute)`.
    pub fn start(limits: &[(&str, u32)]) -> std::io::Result<TestRls> {
        let limiter = RateLimiter::new(10_000);
        for (client_id, per_minute) in limits {
            let condition =
                format!("client_id == '{}'", client_id.replace('\\', "\\\\").replace('\'', "\\'"));
            let condition =
                condition.as_str().try_into().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            let variable = "client_id".try_into().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            let limit =
                Limit::new("tokengate", u64::from(*per_minute), WINDOW_SECONDS, [condition], [variable]);
            limiter.add_limit(limit);
        }
        let state: Shared = Arc::new(Mutex::new(State { limiter, calls: Vec::new() }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let service = RateLimitServiceServer::new(Service(state.clone()));
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
