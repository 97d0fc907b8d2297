//! `cargo xtask test`: everything CI runs, stopping at the first failure.

use crate::{build, cmd, fuzz, image, setup};

/// Seconds per fuzz target in the test run (`cargo xtask fuzz` runs longer).
const FUZZ_SECONDS: u64 = 10;

/// The size budget of the optimized module (docs/performance.md, "Size"): over it, the run fails.
const WASM_BUDGET_BYTES: u64 = 400_000;

pub fn run(envoy_version: &str) -> Result<(), String> {
    let envoy = setup::run(envoy_version)?;
    setup::test_tools()?;
    cmd::step("fmt");
    cmd::run("cargo", &["fmt", "--all", "--", "--check"], &[])?;
    cmd::step("clippy (native)");
    cmd::run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    cmd::step("clippy (wasm32-wasip1)");
    cmd::run(
        "cargo",
        &[
            "clippy",
            "-p",
            "tokengate",
            "-p",
            "tokengate-calibration",
            "--target",
            "wasm32-wasip1",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    let wasm = build::wasm()?;
    let size = std::fs::metadata(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?.len();
    if size > WASM_BUDGET_BYTES {
        return Err(format!("tokengate.wasm is {size} bytes, over the {WASM_BUDGET_BYTES}-byte budget"));
    }
    image::write(&wasm)?;
    cmd::step(&format!("tests (unit, and integration against Envoy {envoy_version})"));
    let envoy_text = envoy.display().to_string();
    let wasm_text = wasm.display().to_string();
    cmd::run(
        "cargo",
        &["test", "--workspace", "--no-fail-fast"],
        &[("TOKENGATE_ENVOY", &envoy_text), ("TOKENGATE_WASM", &wasm_text)],
    )?;
    fuzz::run(FUZZ_SECONDS, &[])?;
    cmd::step("all checks passed");
    Ok(())
}
