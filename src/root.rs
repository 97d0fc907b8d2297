//! The root context, one per worker: reads the plugin configuration into the core's
//! `Worker`, hands it to every HTTP stream, and translates the worker-wide callbacks (tick,
//! wake-up queue, keyed IdP answers) into the core's root events, sending the answers they
//! give to the streams they name. Waiters are answered when this worker's call returns, and
//! on a short tick for calls made by other workers (an Envoy shared queue has one consumer,
//! so a tick is the simple way to notice another worker's outcome).

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use tokengate_core::worker::{Answers, TICK};
use tokengate_core::{Config, Worker};

use crate::filter::TokenFilter;
use crate::host::{EnvoyHost, read_http_reply, send_answers, set_wake_queue};

pub struct TokengateRoot {
    context_id: u32,
    worker: Option<Rc<Worker>>,
}

impl TokengateRoot {
    pub fn new(context_id: u32) -> TokengateRoot {
        TokengateRoot { context_id, worker: None }
    }

    /// Registers this worker's wake-up queue under a name of its own.
    fn register_queue(worker: &Worker) {
        let Some(name) = worker.wake_queue_name(&EnvoyHost) else {
            return;
        };
        match hostcalls::register_shared_queue(&name) {
            Ok(id) => set_wake_queue(id),
            Err(status) => log::warn!("no wake-up queue ({status:?}); calls start on the tick"),
        }
    }

    fn send(&self, answers: Answers) {
        send_answers(answers, self.context_id);
    }
}

/// The plugin is going away (its listener drained after a configuration change, or the VM
/// is stopping): Envoy deletes the root context, and the calls it has in flight are released
/// for the requests that wait on them, on any worker. Done on drop, in `proxy_on_delete`:
/// exporting `proxy_on_done` would cost every stream a trip into the VM (`xtask/src/trim.rs`).
impl Drop for TokengateRoot {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.on_done(&EnvoyHost);
        }
    }
}

impl Context for TokengateRoot {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _: usize) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        // The root dispatches keyed calls only: their answers come here (and go to the
        // worker's one route, like every answer).
        let reply = read_http_reply(num_headers, body_size);
        self.send(worker.on_answer(&EnvoyHost, token, reply.as_ref(), &[], None).answers);
    }
}

impl RootContext for TokengateRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        // Envoy gives a new configuration a new root context; it configures an existing
        // one again only with the configuration it already has (a plugin's key includes
        // it). The running worker is kept: replacing it would strand the streams and calls
        // it holds, and refusing would mark the whole plugin failed.
        if self.worker.is_some() {
            log::warn!("configured again: the running worker is kept");
            return true;
        }
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        // `upstream.env_headers` reads the VM's environment (`vm_config.environment_variables`).
        let config = match Config::from_json_with_env(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                log::error!("configuration rejected: {e}");
                return false;
            }
        };
        // Every shared-data key starts with the plugin name: two plugins in one VM never
        // read each other's entries.
        let name = hostcalls::get_property(vec!["plugin_name"])
            .ok()
            .flatten()
            .and_then(|n| String::from_utf8(n).ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "tokengate".to_owned());
        let worker = Worker::new(config, &name);
        if !worker.prepare(&EnvoyHost) {
            log::warn!("shared data not prepared; it is created on first use");
        }
        crate::host::define_metrics();
        Self::register_queue(&worker);
        self.worker = Some(Rc::new(worker));
        if hostcalls::set_tick_period(TICK).is_err() {
            log::warn!("no tick: waiters on other workers' calls answer at their deadline");
        }
        log::info!("configuration accepted");
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {}
        if let Some(worker) = self.worker.clone() {
            self.send(worker.on_wake(&EnvoyHost));
        }
    }

    fn on_tick(&mut self) {
        if let Some(worker) = self.worker.clone() {
            self.send(worker.on_tick(&EnvoyHost));
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`; without a configuration (Envoy would not have started the
        // plugin) the filter refuses every request (`Response::unconfigured`).
        Some(Box::new(TokenFilter::new(context_id, self.worker.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
