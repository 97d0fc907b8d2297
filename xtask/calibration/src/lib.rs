//! Two reference filters for `cargo xtask bench`, chosen by the plugin configuration:
//!
//! - `noop`: body callbacks that let everything pass (what loading any proxy-wasm filter
//!   costs a request);
//! - `bare_hit:<token JSON>`: the least a cache hit can do: read the body, count it with one
//!   CAS update in shared data, read the token with one shared-data get and answer with
//!   `send_http_response`.
//!
//! Built and trimmed like tokengate (same profile, same dropped callbacks, same
//! `wasm-opt`), so the rows differ only in what the filters do. On native targets the crate
//! is empty.

#[cfg(target_arch = "wasm32")]
mod filters;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filters::CalibrationRoot::default())
    });
}}
