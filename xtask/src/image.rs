//! `cargo xtask image`: the built module as an OCI image layout at `target/oci/`, tagged with
//! the crate version, in the form Istio's WasmPlugin fetcher takes (its "compat" variant:
//! one `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`) — the same
//! form the `Dockerfile` gives with Docker. Byte-for-byte reproducible: fixed tar metadata,
//! no gzip timestamp, so the same module always has the same digest.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{build, cmd};

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn run() -> Result<(), String> {
    let wasm = build::run()?;
    let written = write(&wasm)?;
    println!(
        "{} (tag {}, manifest digest sha256:{})\npush: skopeo copy oci:{}:{} docker://REGISTRY/tokengate:{}\n\
         pin:  WasmPlugin `url: oci://REGISTRY/tokengate:{}` with `sha256: {}`",
        written.dir.display(),
        written.tag,
        written.manifest_digest,
        written.dir.display(),
        written.tag,
        written.tag,
        written.tag,
        written.manifest_digest
    );
    Ok(())
}

pub struct Written {
    pub dir: PathBuf,
    pub tag: String,
    /// Hex SHA-256 of the manifest: what a WasmPlugin's `sha256` pins.
    pub manifest_digest: String,
}

/// Writes `target/oci/` afresh for `wasm`.
pub fn write(wasm: &Path) -> Result<Written, String> {
    cmd::step("OCI image layout (target/oci)");
    let root = testbed::workspace_root();
    let dir = root.join("target/oci");
    let tag = crate_version(&root)?;
    let module = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let put = |bytes: &[u8]| -> Result<(String, usize), String> {
        let digest = hex_sha256(bytes);
        let path = blobs.join(&digest);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((digest, bytes.len()))
    };

    let tar = plugin_tar(&module)?;
    let (layer_digest, layer_size) = put(&gzip(&tar)?)?;
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex_sha256(&tar))]},
    });
    let (config_digest, config_size) = put(&to_bytes(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": LAYER, "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
        "annotations": {"org.opencontainers.image.title": "tokengate", "org.opencontainers.image.version": tag},
    });
    let (manifest_digest, manifest_size) = put(&to_bytes(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    let write_file = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    write_file("index.json", &to_bytes(&index)?)?;
    write_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(Written { dir, tag, manifest_digest })
}

/// A tar with one entry, `plugin.wasm`, whose metadata does not depend on the build machine.
fn plugin_tar(module: &[u8]) -> Result<Vec<u8>, String> {
    let mut header = tar::Header::new_ustar();
    header.set_path("plugin.wasm").map_err(|e| e.to_string())?;
    header.set_size(module.len() as u64);
    header.set_mode(0o444);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, module).map_err(|e| e.to_string())?;
    builder.into_inner().map_err(|e| e.to_string())
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

fn to_bytes(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `tokengate` package's version in the workspace's `Cargo.toml`: the image's tag.
fn crate_version(root: &Path) -> Result<String, String> {
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).map_err(|e| format!("Cargo.toml: {e}"))?;
    let package = manifest.split("\n[package]").nth(1).ok_or("Cargo.toml has no [package]")?;
    package
        .lines()
        .find_map(|line| line.strip_prefix("version = \"").and_then(|rest| rest.strip_suffix('"')))
        .map(str::to_owned)
        .ok_or_else(|| "no version in Cargo.toml's [package]".to_owned())
}
