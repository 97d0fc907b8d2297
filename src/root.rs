//! The root context: reads and validates the plugin configuration once, then hands it to
//! every HTTP stream.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use tokengate_core::Config;

use crate::filter::TokenFilter;

#[derive(Default)]
pub struct TokengateRoot {
    config: Option<Rc<Config>>,
    /// Prefix of every shared-data key: the plugin name, so two plugins in one VM never
    /// read each other's entries.
    key_prefix: Rc<str>,
}

impl Context for TokengateRoot {}

impl RootContext for TokengateRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                let name = hostcalls::get_property(vec!["plugin_name"])
                    .ok()
                    .flatten()
                    .and_then(|n| String::from_utf8(n).ok())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "tokengate".to_owned());
                self.key_prefix = Rc::from(name.as_str());
                log::info!("configuration accepted");
                true
            }
            Err(e) => {
                log::error!("configuration rejected: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`; without a configuration (Envoy would not have started the
        // plugin) the filter passes everything through.
        Some(Box::new(TokenFilter::new(
            self.config.clone(),
            self.key_prefix.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
