use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

const COUNTER_KEY: &str = "calibration:hits";
const TOKEN_KEY: &str = "calibration:token";

#[derive(Clone, Copy, Default)]
enum Mode {
    #[default]
    Noop,
    BareHit,
}

#[derive(Default)]
pub struct CalibrationRoot {
    mode: Mode,
}

impl Context for CalibrationRoot {}

impl RootContext for CalibrationRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if config == b"noop" {
            self.mode = Mode::Noop;
            return true;
        }
        match config.strip_prefix(b"bare_hit:") {
            Some(token) => {
                self.mode = Mode::BareHit;
                hostcalls::set_shared_data(TOKEN_KEY, Some(token), None).is_ok()
            }
            None => false,
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CalibrationFilter { mode: self.mode }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct CalibrationFilter {
    mode: Mode,
}

impl Context for CalibrationFilter {}

impl HttpContext for CalibrationFilter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.mode {
            Mode::Noop => Action::Continue,
            Mode::BareHit if !end_of_stream => Action::Pause,
            Mode::BareHit => {
                let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten();
                if body.is_none_or(|b| b.is_empty()) {
                    return Action::Continue;
                }
                count_hit();
                let token =
                    hostcalls::get_shared_data(TOKEN_KEY).ok().and_then(|(v, _)| v).unwrap_or_default();
                let headers = vec![("content-type", "application/json"), ("cache-control", "no-store")];
                let _ = hostcalls::send_http_response(200, headers, Some(&token));
                Action::Pause
            }
        }
    }
}

/// One CAS update of a shared counter; a lost race is retried once, then dropped.
fn count_hit() {
    for _ in 0..2 {
        let (value, cas) = hostcalls::get_shared_data(COUNTER_KEY).unwrap_or((None, None));
        let n = value.and_then(|v| v.try_into().ok()).map_or(0, u64::from_le_bytes) + 1;
        if hostcalls::set_shared_data(COUNTER_KEY, Some(&n.to_le_bytes()), cas).is_ok() {
            return;
        }
    }
}
