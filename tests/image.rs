//! The OCI image `cargo xtask image` writes (`target/oci/`, run by `cargo xtask test`):
//! pushed to a real registry on loopback (Debian's `docker-registry`) with a real client
//! (`skopeo`), pulled back, the module in it byte-identical to the build, and Envoy serving
//! a cache hit with the pulled module.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use testbed::{Envoy, EnvoyOptions, workspace_root};

struct Registry {
    child: Child,
    port: u16,
    _storage: TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tokengate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Registry {
    /// `docker-registry serve` on a free loopback port, storing in a temporary directory.
    fn start() -> Registry {
        let binary = Path::new("/usr/bin/docker-registry");
        assert!(binary.exists(), "docker-registry is missing: `cargo xtask test` installs it");
        let storage = TempDir::new("registry");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = storage.0.join("config.yml");
        let config_text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.0.join("data").display()
        );
        std::fs::write(&config, config_text).unwrap();
        let child = Command::new(binary)
            .args(["serve", &config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry { child, port, _storage: storage };
        // Ready when it accepts connections (polled, so a busy host only makes it slower).
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "registry did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn reference(&self, tag: &str) -> String {
        format!("docker://127.0.0.1:{}/platform/tokengate:{tag}", self.port)
    }
}

fn skopeo(args: &[&str]) -> String {
    let binary = Path::new("/usr/bin/skopeo");
    assert!(binary.exists(), "skopeo is missing: `cargo xtask test` installs it");
    let out = Command::new(binary).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The image layout's one manifest (for `tag`) and its digest.
fn manifest_of(layout: &Path, tag: &str) -> (Value, String) {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let digest = entry["digest"].as_str().unwrap().to_owned();
    (serde_json::from_slice(&blob(layout, &digest)).unwrap(), digest)
}

/// What Istio's fetcher does with the "compat" variant: the last layer, a tar+gzip, and
/// in it the file named `plugin.wasm`.
fn plugin_wasm(layout: &Path, manifest: &Value) -> Vec<u8> {
    let layer = manifest["layers"].as_array().unwrap().last().unwrap();
    assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let gz = blob(layout, layer["digest"].as_str().unwrap());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().file_name().is_some_and(|n| n == "plugin.wasm") {
            let mut module = Vec::new();
            entry.read_to_end(&mut module).unwrap();
            return module;
        }
    }
    panic!("no plugin.wasm in the layer")
}

fn built_layout() -> PathBuf {
    let layout = workspace_root().join("target/oci");
    assert!(layout.join("index.json").exists(), "run `cargo xtask image` first");
    layout
}

const TAG: &str = "0.1.0";

#[test]
fn the_image_is_tagged_with_the_crate_version_and_holds_the_built_module() {
    let (manifest, _) = manifest_of(&built_layout(), env!("CARGO_PKG_VERSION"));
    let module = plugin_wasm(&built_layout(), &manifest);
    assert!(module == std::fs::read(testbed::wasm_path()).unwrap(), "the image holds another build");
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
}

#[test]
fn pushed_to_a_registry_and_pulled_back_the_module_serves_a_hit_in_envoy() {
    let layout = built_layout();
    let (_, digest) = manifest_of(&layout, TAG);
    let registry = Registry::start();
    let reference = registry.reference(TAG);
    let source = format!("oci:{}:{TAG}", layout.display());
    skopeo(&["copy", "--quiet", "--dest-tls-verify=false", &source, &reference]);

    // The digest a WasmPlugin pins is the one the registry serves.
    let inspected: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", "--raw", &reference])).unwrap();
    let served_digest: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &reference])).unwrap();
    assert_eq!(served_digest["Digest"], digest, "the pushed manifest is the built one");
    assert_eq!(inspected["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");

    let pulled = TempDir::new("pulled");
    let destination = format!("oci:{}:{TAG}", pulled.0.display());
    skopeo(&["copy", "--quiet", "--src-tls-verify=false", &reference, &destination]);
    let (manifest, pulled_digest) = manifest_of(&pulled.0, TAG);
    assert_eq!(pulled_digest, digest);
    let module = plugin_wasm(&pulled.0, &manifest);
    assert!(module == std::fs::read(testbed::wasm_path()).unwrap(), "pulled module differs from the build");

    let wasm = pulled.0.join("plugin.wasm");
    std::fs::write(&wasm, &module).unwrap();
    let idp =
        mock_idp::MockIdp::start(mock_idp::Config { clients: vec![client("c1", "s1")], expires_in: 3600 })
            .unwrap();
    let mut options = EnvoyOptions::new(plugin_config(json!({})).to_string(), idp.port());
    options.wasm_path = wasm;
    let envoy =
        Envoy::start(&options).unwrap_or_else(|e| panic!("Envoy did not start with the pulled module: {e}"));
    let form = cc_form("c1", "s1", "https://api");
    let miss = post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], form.as_bytes());
    assert_eq!((miss.status, cache_status(&miss)), (200, "miss"));
    let hit = post(envoy.listen_port(), "/oauth/token", Some(FORM), &[], form.as_bytes());
    assert_eq!((hit.status, cache_status(&hit)), (200, "hit"));
    assert_eq!(access_token(&hit), access_token(&miss));
    assert_eq!(idp.token_calls(), 1);
}
