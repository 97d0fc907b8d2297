//! `cargo xtask build`: the release `tokengate.wasm`.

use std::path::{Path, PathBuf};

use crate::{cmd, setup, trim};

/// The Wasm features rustc's `wasm32-wasip1` target emits (LLVM's generic CPU), which the
/// stripped module no longer declares; V8 in every supported Envoy has them all.
const WASM_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-bulk-memory-opt",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// `cargo xtask build`: the build tools (not Envoy), then the module.
pub fn run() -> Result<PathBuf, String> {
    setup::build_tools()?;
    wasm()
}

/// Builds the wasm only (setup already done): without the exports of callbacks it does not
/// implement (see `trim`), then through binaryen's `wasm-opt -O3`.
pub fn wasm() -> Result<PathBuf, String> {
    cmd::step("build tokengate.wasm");
    module("tokengate", "tokengate", "src")
}

/// The bench's reference filters (`xtask/calibration`), built the same way as tokengate.
pub fn calibration() -> Result<PathBuf, String> {
    cmd::step("build the bench's reference filters");
    module("tokengate-calibration", "tokengate_calibration", "xtask/calibration/src")
}

fn module(package: &str, file_stem: &str, sources: &str) -> Result<PathBuf, String> {
    cmd::run("cargo", &["build", "--release", "--target", "wasm32-wasip1", "-p", package], &[])?;
    let root = testbed::workspace_root();
    let wasm = root.join(format!("target/wasm32-wasip1/release/{file_stem}.wasm"));
    let removed = trim::unused_exports(&wasm, &root.join(sources))?;
    // Cargo relinks only when something changed; a module already optimized is left as is.
    let stamp = wasm.with_extension("wasm.optimized");
    // Without wasm-opt (setup said so) the module stays as linked.
    if setup::wasm_opt().exists() && std::fs::read_to_string(&stamp).ok() != Some(identity_of(&wasm)?) {
        let linked = size_of(&wasm)?;
        optimize(&wasm)?;
        println!("wasm-opt: {linked} -> {} bytes", size_of(&wasm)?);
        std::fs::write(&stamp, identity_of(&wasm)?).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    println!("{} ({} bytes; {removed} unused callback exports removed)", wasm.display(), size_of(&wasm)?);
    Ok(wasm)
}

/// Size and modification time: what tells a freshly linked module from the optimized one.
fn identity_of(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let modified = meta.modified().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("{} {modified:?}", meta.len()))
}

/// `wasm-opt -O3` in place. Run after `trim`, so the code only the dropped callbacks reached
/// is removed too. -O3, not -Os/-Oz: a cache hit is measured slower at any size setting
/// (docs/performance.md, "Size"), while -O3 is ~80 KB smaller and no slower than LLVM's output alone.
/// `--merge-similar-functions` then folds functions that differ only in constants (the
/// monomorphized serde and CAS-loop copies): ~6.6 KB; `--reorder-functions` numbers the
/// most-called functions first, so most calls take a one-byte index: ~3.3 KB. The hit was
/// measured no slower after either.
fn optimize(wasm: &Path) -> Result<(), String> {
    let wasm_opt = setup::wasm_opt().display().to_string();
    let path = wasm.display().to_string();
    let mut args =
        vec!["-O3", "--merge-similar-functions", "--reorder-functions", path.as_str(), "-o", path.as_str()];
    args.extend_from_slice(WASM_FEATURES);
    cmd::run(&wasm_opt, &args, &[])
}

fn size_of(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| format!("{}: {e}", path.display()))
}
