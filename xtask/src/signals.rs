//! Stopping what `demo` and `fleet` started: Ctrl-C (SIGINT), `kill` (SIGTERM) and a closed
//! terminal or `tmux kill-session` (SIGHUP) all end the wait, so the Envoys and the mock IdP
//! are dropped (killed) instead of outliving the command and holding its ports. Envoy itself
//! ignores SIGHUP, so without this a closed terminal left it listening.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once a stop signal arrived.
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Takes over the three signals. Call before starting anything: a signal that came
    /// while Envoy starts would otherwise end the process with Envoy left running.
    pub fn install() -> Result<StopSignal, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The `termination` feature adds SIGTERM and SIGHUP to SIGINT.
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .map_err(|e| format!("cannot handle stop signals: {e}"))?;
        Ok(StopSignal(stop))
    }

    pub fn arrived(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits until a stop signal arrives (`true`) or `still_running` says no (`false`).
    pub fn wait(&self, mut still_running: impl FnMut() -> bool) -> bool {
        while still_running() {
            if self.arrived() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.arrived()
    }
}
