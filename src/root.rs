//! The root context, one per worker: reads and validates the plugin configuration, hands
//! it to every HTTP stream, and runs this worker's keyed IdP calls and waiters (see
//! `hub`). Waiters are answered when this worker's call returns, and on a short tick for
//! calls made by other workers (an Envoy shared queue has one consumer, so a tick is the
//! simple way to notice another worker's outcome).

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use tokengate_core::cache::LocalIndex;
use tokengate_core::flight::CallOutcome;
use tokengate_core::gate::Waiter;
use tokengate_core::hit_tally::PendingHits;
use tokengate_core::keys;
use tokengate_core::response::Response;
use tokengate_core::store::{Change, Store};
use tokengate_core::{Config, Gate};

use crate::filter::TokenFilter;
use crate::host::{EnvoyHost, read_idp_reply, send_response};
use crate::hub::{SharedHub, TICK};

pub struct TokengateRoot {
    context_id: u32,
    config: Option<Rc<Config>>,
    /// Prefix of every shared-data key: the plugin name, so two plugins in one VM never
    /// read each other's entries.
    key_prefix: Rc<str>,
    hub: SharedHub,
    /// This worker's copies of tokens it served, shared by its streams.
    local_index: Rc<RefCell<LocalIndex>>,
    /// This worker's hits not yet counted in shared data, flushed every tick.
    pending_hits: Rc<RefCell<PendingHits>>,
}

impl TokengateRoot {
    pub fn new(context_id: u32) -> TokengateRoot {
        TokengateRoot {
            context_id,
            config: None,
            key_prefix: Rc::from("tokengate"),
            hub: SharedHub::default(),
            local_index: Rc::default(),
            pending_hits: Rc::default(),
        }
    }

    /// Registers this worker's wake-up queue under a name of its own.
    fn register_queue(&self) {
        let store = Store::new(&EnvoyHost, &EnvoyHost, &self.key_prefix);
        let counter_key = keys::workers(&self.key_prefix);
        let index = store.update(&counter_key, &0u64.to_le_bytes(), |bytes| {
            let n = bytes.try_into().map(u64::from_le_bytes).unwrap_or(0) + 1;
            Change::Write(n.to_le_bytes().to_vec(), n)
        });
        let Ok(index) = index else {
            return;
        };
        match hostcalls::register_shared_queue(&keys::wake_queue(&self.key_prefix, index)) {
            Ok(id) => self.hub.borrow_mut().queue_id = Some(id),
            Err(status) => log::warn!("no wake-up queue ({status:?}); calls start on the tick"),
        }
    }

    fn dispatch_jobs(&self, config: &Config) {
        let jobs = std::mem::take(&mut self.hub.borrow_mut().jobs);
        let gate = Gate::new(config, &EnvoyHost, &self.key_prefix);
        for job in jobs {
            match tokengate_core::host::Dispatcher::dispatch(&EnvoyHost, &job.call) {
                Ok(token) => {
                    self.hub.borrow_mut().calls.insert(token, job);
                }
                Err(e) => {
                    log::warn!("IdP call not dispatched: {e}");
                    let outcome = gate.finish_call(&job, None);
                    self.answer_waiters(config, Some((&job.fingerprint, &outcome)));
                }
            }
        }
    }

    /// Answers every waiter whose outcome is known; `known` is the outcome of a call this
    /// worker just finished, for its key's waiters.
    fn answer_waiters(
        &self,
        config: &Config,
        known: Option<(&tokengate_core::fingerprint::Fingerprint, &CallOutcome)>,
    ) {
        let gate = Gate::new(config, &EnvoyHost, &self.key_prefix);
        let waiters = std::mem::take(&mut self.hub.borrow_mut().waiters);
        let mut still_waiting: Vec<(u32, Waiter)> = Vec::with_capacity(waiters.len());
        for (context_id, waiter) in waiters {
            let outcome = known.filter(|(fp, _)| **fp == waiter.fingerprint).map(|(_, o)| o);
            match gate.answer(&waiter, outcome) {
                Some(response) => self.answer_stream(context_id, &response),
                None => still_waiting.push((context_id, waiter)),
            }
        }
        // Streams added while answering (none today) are kept too.
        self.hub.borrow_mut().waiters.extend(still_waiting);
    }

    /// Answers the usage-report requests that have waited long enough.
    fn answer_reports(&self, config: &Config) {
        let gate = Gate::new(config, &EnvoyHost, &self.key_prefix);
        let now = tokengate_core::host::Clock::now_ms(&EnvoyHost);
        let due: Vec<_> = {
            let mut hub = self.hub.borrow_mut();
            let (due, waiting) =
                std::mem::take(&mut hub.reports).into_iter().partition(|(_, r)| r.due_ms <= now);
            hub.reports = waiting;
            due
        };
        for (context_id, report) in due {
            self.answer_stream(
                context_id,
                &gate.usage(report.accept.as_deref(), report.accept_encoding.as_deref(), &report.path),
            );
        }
    }

    /// Sends `response` on another context's stream; a stream that has gone away is skipped.
    fn answer_stream(&self, context_id: u32, response: &Response) {
        if hostcalls::set_effective_context(context_id).is_ok() {
            send_response(response);
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl Context for TokengateRoot {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _: usize) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(job) = self.hub.borrow_mut().calls.remove(&token) else {
            return;
        };
        let reply = read_idp_reply(num_headers, body_size);
        let outcome = Gate::new(&config, &EnvoyHost, &self.key_prefix).finish_call(&job, reply.as_ref());
        self.answer_waiters(&config, Some((&job.fingerprint, &outcome)));
    }
}

impl RootContext for TokengateRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("configuration rejected: {e}");
                return false;
            }
        };
        let name = hostcalls::get_property(vec!["plugin_name"])
            .ok()
            .flatten()
            .and_then(|n| String::from_utf8(n).ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "tokengate".to_owned());
        self.key_prefix = Rc::from(name.as_str());
        if !Gate::new(&config, &EnvoyHost, &self.key_prefix).prepare() {
            log::warn!("shared data not prepared; it is created on first use");
        }
        self.local_index = Rc::new(RefCell::new(LocalIndex::new(config.cache.max_entries as usize)));
        self.pending_hits = Rc::new(RefCell::new(PendingHits::new(config.cache.max_entries as usize)));
        self.config = Some(Rc::new(config));
        crate::host::define_metrics();
        self.register_queue();
        if hostcalls::set_tick_period(TICK).is_err() {
            log::warn!("no tick: waiters on other workers' calls answer at their deadline");
        }
        log::info!("configuration accepted");
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {}
        if let Some(config) = self.config.clone() {
            self.dispatch_jobs(&config);
        }
    }

    fn on_tick(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        if !self.pending_hits.borrow().is_empty() {
            Gate::new(&config, &EnvoyHost, &self.key_prefix)
                .with_pending_hits(&self.pending_hits)
                .flush_hits();
        }
        let (jobs, waiters, reports) = {
            let hub = self.hub.borrow();
            (!hub.jobs.is_empty(), !hub.waiters.is_empty(), !hub.reports.is_empty())
        };
        if jobs {
            self.dispatch_jobs(&config);
        }
        if waiters {
            self.answer_waiters(&config, None);
        }
        if reports {
            self.answer_reports(&config);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`; without a configuration (Envoy would not have started the
        // plugin) the filter passes everything through.
        Some(Box::new(TokenFilter::new(
            context_id,
            self.config.clone(),
            self.key_prefix.clone(),
            self.hub.clone(),
            self.local_index.clone(),
            self.pending_hits.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
