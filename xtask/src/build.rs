//! `cargo xtask build`: the release `tokengate.wasm`.

use std::path::PathBuf;

use crate::{cmd, setup, trim};

pub fn run() -> Result<PathBuf, String> {
    setup::run(testbed::DEFAULT_ENVOY_VERSION)?;
    wasm()
}

/// Builds the wasm only (setup already done), without the exports of callbacks it does not
/// implement (see `trim`).
pub fn wasm() -> Result<PathBuf, String> {
    cmd::step("build tokengate.wasm");
    cmd::run("cargo", &["build", "--release", "--target", "wasm32-wasip1", "-p", "tokengate"], &[])?;
    let root = testbed::workspace_root();
    let wasm = root.join("target/wasm32-wasip1/release/tokengate.wasm");
    let removed = trim::unused_exports(&wasm, &root.join("src"))?;
    let size = std::fs::metadata(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?.len();
    println!("{} ({size} bytes; {removed} unused callback exports removed)", wasm.display());
    Ok(wasm)
}
