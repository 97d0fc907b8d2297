//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs each cargo-fuzz target (libFuzzer, on
//! the nightly toolchain) for a bounded time, seeded from `fuzz/corpus/<target>` (kept in
//! the repo) into a working corpus under `target/fuzz-corpus/`. Fails on the first crash.

use std::process::Command;
use std::time::Instant;

use crate::cmd;

pub const TARGETS: [&str; 10] = [
    "form",
    "json",
    "basic",
    "request",
    "config",
    "token_response",
    "rate_limit_answer",
    "path",
    "client_cert",
    "auth0_quota",
];

/// Installs cargo-fuzz when missing; nightly must be on the machine.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    cmd::run("cargo", &["install", "cargo-fuzz", "--locked"], &[])
}

pub fn run(seconds: u64, targets: &[String]) -> Result<(), String> {
    cmd::step(&format!("fuzz ({seconds} s per target)"));
    ensure_cargo_fuzz()?;
    let root = testbed::workspace_root();
    let chosen: Vec<&str> =
        if targets.is_empty() { TARGETS.to_vec() } else { targets.iter().map(String::as_str).collect() };
    for target in chosen {
        let work = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let seeds = root.join("fuzz/corpus").join(target);
        let started = Instant::now();
        let output = Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .output()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?".to_owned(), |n| n.trim().to_owned());
        let line = format!(
            "{target:<8} {runs:>12} runs in {:>5.0} s  {}",
            started.elapsed().as_secs_f64(),
            if output.status.success() { "no crash" } else { "CRASH" }
        );
        println!("{line}");
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("fuzz target {target} failed:\n{}", tail.join("\n")));
        }
    }
    Ok(())
}
