//! Takes the proxy-wasm callbacks tokengate does not implement out of the module's exports.
//!
//! The Rust SDK exports every `proxy_on_*` callback, and Envoy (proxy-wasm-cpp-host) calls
//! each one the module exports; one it does not export is skipped in C++. Every call is a
//! trip into the VM, and a cache hit made four of them for nothing: the local reply's
//! response headers and body, then `on_log` and `on_done`. Without those exports a hit
//! enters the VM four times fewer (measured with `cargo xtask bench --compare`, see
//! docs/performance.md).
//!
//! The build refuses to drop a callback whose trait method the filter implements, so a
//! later `fn on_http_response_headers` in `src/` cannot be silently lost.

use std::path::Path;

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{ExternalKind, Parser, Payload};

/// Callbacks removed from the exports, with the SDK trait methods they would call.
pub const UNUSED_CALLBACKS: &[(&str, &[&str])] = &[
    ("proxy_on_response_body", &["on_http_response_body"]),
    ("proxy_on_response_trailers", &["on_http_response_trailers"]),
    ("proxy_on_log", &["on_log"]),
    ("proxy_on_done", &["on_done"]),
    ("proxy_on_new_connection", &["on_new_connection"]),
    ("proxy_on_downstream_data", &["on_downstream_data"]),
    ("proxy_on_downstream_connection_close", &["on_downstream_close"]),
    ("proxy_on_upstream_data", &["on_upstream_data"]),
    ("proxy_on_upstream_connection_close", &["on_upstream_close"]),
    ("proxy_on_foreign_function", &["on_foreign_function"]),
    ("proxy_on_grpc_receive_initial_metadata", &["on_grpc_stream_initial_metadata"]),
    ("proxy_on_grpc_receive", &["on_grpc_stream_message", "on_grpc_call_response"]),
    ("proxy_on_grpc_receive_trailing_metadata", &["on_grpc_stream_trailing_metadata"]),
    ("proxy_on_grpc_close", &["on_grpc_stream_close", "on_grpc_call_response"]),
];

/// Rewrites `wasm` in place without the unused callbacks' exports. Idempotent.
pub fn unused_exports(wasm: &Path, sources: &Path) -> Result<usize, String> {
    check_not_implemented(sources)?;
    let bytes = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let (trimmed, removed) =
        without_exports(&bytes, |name| UNUSED_CALLBACKS.iter().any(|(n, _)| *n == name))?;
    if removed > 0 {
        std::fs::write(wasm, trimmed).map_err(|e| format!("{}: {e}", wasm.display()))?;
    }
    Ok(removed)
}

/// Fails when a source file under `sources` (recursively) defines a trait method whose
/// callback is dropped.
fn check_not_implemented(sources: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(sources).map_err(|e| format!("{}: {e}", sources.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            check_not_implemented(&path)?;
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (export, methods) in UNUSED_CALLBACKS {
            if let Some(method) = methods.iter().find(|m| text.contains(&format!("fn {m}("))) {
                return Err(format!(
                    "{} implements {method}, but the build drops its export {export}: take it out of \
                     xtask/src/trim.rs UNUSED_CALLBACKS",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// The module without the function exports `drop` names, and how many were dropped. Every
/// other section is copied byte for byte.
fn without_exports(bytes: &[u8], drop: impl Fn(&str) -> bool) -> Result<(Vec<u8>, usize), String> {
    let mut module = Module::new();
    let mut removed = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a wasm module: {e}"))?;
        if let Payload::ExportSection(reader) = &payload {
            let mut exports = ExportSection::new();
            for export in reader.clone() {
                let export = export.map_err(|e| e.to_string())?;
                if export.kind == ExternalKind::Func && drop(export.name) {
                    removed += 1;
                    continue;
                }
                exports.export(export.name, export_kind(export.kind)?, export.index);
            }
            module.section(&exports);
        } else if let Some((id, range)) = payload.as_section() {
            let data = usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(start, end)| bytes.get(start..end))
                .ok_or("section out of bounds")?;
            module.section(&RawSection { id, data });
        }
    }
    Ok((module.finish(), removed))
}

fn export_kind(kind: ExternalKind) -> Result<ExportKind, String> {
    Ok(match kind {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
        other => return Err(format!("unexpected export kind {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module exporting two functions and its memory.
    fn module() -> Vec<u8> {
        use wasm_encoder::{CodeSection, Function, FunctionSection, MemorySection, MemoryType, TypeSection};
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        functions.function(0);
        functions.function(0);
        let mut memory = MemorySection::new();
        memory.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut exports = ExportSection::new();
        exports.export("proxy_on_log", ExportKind::Func, 0);
        exports.export("proxy_on_request_headers", ExportKind::Func, 1);
        exports.export("memory", ExportKind::Memory, 0);
        let mut code = CodeSection::new();
        for _ in 0..2 {
            let mut f = Function::new([]);
            f.instructions().end();
            code.function(&f);
        }
        let mut m = Module::new();
        m.section(&types).section(&functions).section(&memory).section(&exports).section(&code);
        m.finish()
    }

    fn exports(bytes: &[u8]) -> Vec<String> {
        let mut names = vec![];
        for payload in Parser::new(0).parse_all(bytes) {
            if let Ok(Payload::ExportSection(reader)) = payload {
                names.extend(reader.into_iter().flatten().map(|e| e.name.to_owned()));
            }
        }
        names
    }

    #[test]
    fn drops_only_the_named_callbacks_and_keeps_a_valid_module() {
        let (trimmed, removed) = without_exports(&module(), |n| n == "proxy_on_log").unwrap();
        assert_eq!(removed, 1);
        assert_eq!(exports(&trimmed), ["proxy_on_request_headers", "memory"]);
        wasmparser::validate(&trimmed).unwrap();
        let (again, removed) = without_exports(&trimmed, |n| n == "proxy_on_log").unwrap();
        assert_eq!((removed, again), (0, trimmed), "idempotent");
    }

    #[test]
    fn refuses_to_drop_a_callback_the_filter_implements() {
        let dir = std::env::temp_dir().join(format!("trim-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("filter.rs"), "fn on_http_request_body(&mut self) {}").unwrap();
        assert!(check_not_implemented(&dir).is_ok());
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("nested/filter.rs"), "fn on_http_response_body(&mut self) {}").unwrap();
        let err = check_not_implemented(&dir).unwrap_err();
        assert!(err.contains("proxy_on_response_body"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
