//! tokengate, the proxy-wasm filter. This crate is the thin host layer: it implements
//! `tokengate-core`'s host traits over `proxy_wasm::hostcalls` and translates Envoy's
//! callbacks into the events of the core's `Worker` (one per worker thread) and their
//! steps back into Envoy actions. Everything that decides an answer lives in the core.
//!
//! On native targets the crate holds only its translations over plain data (`translate`,
//! tested natively), so the integration tests under `tests/` can link without the
//! proxy-wasm host imports.

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod translate;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    // A panic aborts the VM (panic = "abort"); say so at critical level first. The message
    // is the panic's own text, which never holds request data.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Critical, &format!("tokengate panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::TokengateRoot::new(context_id))
    });
}}
