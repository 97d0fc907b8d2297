//! tokengate's core: everything that decides how a token request is answered, with no
//! proxy-wasm dependency. The host (Envoy, or [`host::fake::FakeHost`] in tests) is reached
//! only through the traits in [`host`].

pub mod auth0_quota;
pub mod backoff;
pub mod cache;
pub mod clients;
pub mod codec;
pub mod config;
pub mod decision;
pub mod fingerprint;
pub mod flight;
pub mod gate;
pub mod hit_tally;
pub mod host;
pub mod json_object;
pub mod keys;
pub mod limits;
pub mod rate_limit_service;
pub mod request;
pub mod response;
pub mod seal;
pub mod sorted;
pub mod store;
pub mod usage;
pub mod worker;

pub use config::Config;
pub use gate::{Answer, ForwardedRequest, Gate, HttpReply, KeyedCall, Outcome, Plan, Waiter};
pub use worker::{HeaderEdits, ResponseStep, Step, Stream, Worker};
