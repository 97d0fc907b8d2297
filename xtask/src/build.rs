//! `cargo xtask build`: the release `tokengate.wasm`.

use std::path::PathBuf;

use crate::{cmd, setup};

pub fn run() -> Result<PathBuf, String> {
    setup::run(testbed::DEFAULT_ENVOY_VERSION)?;
    wasm()
}

/// Builds the wasm only (setup already done).
pub fn wasm() -> Result<PathBuf, String> {
    cmd::step("build tokengate.wasm");
    cmd::run("cargo", &["build", "--release", "--target", "wasm32-wasip1", "-p", "tokengate"], &[])?;
    let wasm = testbed::workspace_root().join("target/wasm32-wasip1/release/tokengate.wasm");
    let size = std::fs::metadata(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?.len();
    println!("{} ({size} bytes)", wasm.display());
    Ok(wasm)
}
