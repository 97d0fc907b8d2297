//! `cargo xtask sizing`: Envoy's memory as a function of `cache.max_entries` and the worker
//! count, measured. For each worker count and table size it starts Envoy with tokengate in
//! front of the mock IdP (loopback only), fills the cache with `max_entries` keys of as many
//! distinct clients (each key fetched once, then hit once on every worker, so every worker's
//! index of served tokens holds a copy), then twice as many keys more (other audiences of
//! the same clients: the two-choice tables fill to their size, and no further), and prints
//! Envoy's resident memory (`VmRSS`) and its C++ heap (`server.memory_allocated`,
//! `server.memory_heap_size`) before, when full and past full. Shared data (the tables)
//! lives on Envoy's heap, once per Envoy; each worker's Wasm VM has its own linear memory
//! (its index), which shows in the RSS but not on the heap: the RSS difference between one
//! and two workers is what a worker adds. About three minutes on a busy 2-core VM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mock_idp::{Client, Config, MockIdp};
use serde_json::json;
use testbed::{Envoy, EnvoyOptions};

use crate::{build, cmd, setup};

/// The tables' sizes measured (`cache.max_entries`).
const SIZES: [u32; 2] = [1_000, 10_000];
/// Envoy's `--concurrency` values measured.
const WORKERS: [u32; 2] = [1, 2];
/// Access tokens padded to about the size of Auth0's (a signed JWT of ~1 KB).
const TOKEN_BYTES: usize = 1_000;
const SECRET: &str = "sizing-secret";
const FORM: &str = "application/x-www-form-urlencoded";
const MIB: f64 = 1024.0 * 1024.0;
/// Envoy's stats flush interval here (`server.memory_*` are read on a flush).
const FLUSH: Duration = Duration::from_millis(500);

fn client_id(n: u32) -> String {
    format!("sizing-client-{n:05}")
}

fn form(n: u32, audience: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={}&client_secret={SECRET}&audience={audience}",
        client_id(n)
    )
}

/// The production shape: a rate limit and a quota, so every client record carries its
/// buckets and quota window. The unknown-clients bucket is opened wide: every key here is
/// a client the IdP has not issued a token to yet.
fn plugin_config(max_entries: u32) -> String {
    let wide = json!({"max_tokens": 1_000_000, "tokens_per_fill": 1_000_000, "fill_interval": "1s"});
    json!({
        "upstream": {"cluster": "idp", "authority": "sizing.idp", "timeout": "5s"},
        "cache": {"max_entries": max_entries, "min_remaining_ttl": "30s"},
        "rate_limit": {
            "default": {"max_tokens": 1000, "tokens_per_fill": 1000, "fill_interval": "60s"},
            "unproven": wide,
            "unknown_clients": wide
        },
        "quota": {"default": {"tokens": 1000, "window": "1d"}}
    })
    .to_string()
}

/// Envoy's memory at one moment.
#[derive(Clone, Copy)]
struct Sample {
    rss: u64,
    allocated: u64,
    heap: u64,
    /// `tokengate_cache_entries`: token slots in use.
    cache_entries: u64,
}

struct Row {
    workers: u32,
    entries: u32,
    vms: u64,
    before: Sample,
    /// After `max_entries` keys, each hit on every worker.
    full: Sample,
    /// After `3 x max_entries` keys: the tables at their bound.
    past: Sample,
    /// Bytes of the first `max_entries` token responses.
    token_bytes: u64,
    store_errors: u64,
}

impl Row {
    /// Growth from `before` to `at`, per slot of the table.
    fn per_slot(&self, at: &Sample, field: fn(&Sample) -> u64) -> f64 {
        field(at).saturating_sub(field(&self.before)) as f64 / f64::from(self.entries)
    }
}

pub fn run() -> Result<(), String> {
    setup::envoy(testbed::DEFAULT_ENVOY_VERSION)?;
    build::run()?;
    cmd::step("start the mock IdP");
    let largest = SIZES.iter().copied().max().unwrap_or(0);
    let idp = MockIdp::start(Config {
        clients: (0..largest).map(|n| Client { id: client_id(n), secret: SECRET.into() }).collect(),
        expires_in: 86_400,
    })
    .map_err(|e| format!("mock IdP: {e}"))?;
    idp.set_token_bytes(TOKEN_BYTES);
    let started = Instant::now();
    let mut rows = Vec::new();
    for workers in WORKERS {
        for entries in SIZES {
            cmd::step(&format!("--concurrency {workers}, cache.max_entries {entries}"));
            let row = measure(&idp, workers, entries)?;
            print_row(&row);
            rows.push(row);
        }
    }
    cmd::step(&format!("summary ({:.0} s)", started.elapsed().as_secs_f64()));
    summary(&rows);
    Ok(())
}

fn measure(idp: &MockIdp, workers: u32, entries: u32) -> Result<Row, String> {
    let mut options = EnvoyOptions::new(plugin_config(entries), idp.port());
    options.concurrency = workers;
    options.log_level = "warn".into();
    options.template = template()?;
    let envoy = Envoy::start(&options)?;
    let mut connections = one_per_worker(&envoy, workers)?;
    // Warm-up on one key: connection buffers, allocator arenas, the VMs' first requests.
    for _ in 0..20 {
        for connection in &mut connections {
            connection.post(&form(0, "warm-up"))?;
        }
    }
    let before = sample(&envoy)?;
    // `max_entries` keys, each fetched once and hit on every worker: every worker's index
    // of served tokens is full.
    let mut token_bytes = 0u64;
    for n in 0..entries {
        let body = form(n, "https://api.example.com");
        let miss = connections[0].post(&body)?;
        if miss.status != 200 {
            return Err(format!("key {n}: {} {}", miss.status, miss.cache));
        }
        token_bytes += miss.body_bytes as u64;
        for connection in &mut connections {
            let hit = connection.post(&body)?;
            if (hit.status, hit.cache.as_str()) != (200, "hit") {
                return Err(format!("key {n} again: {} {}", hit.status, hit.cache));
            }
        }
    }
    let full = sample(&envoy)?;
    // Two keys per client more (other audiences), fetched once: two-choice slots fill up
    // to the table's size, and no further.
    for audience in ["https://second.example.com", "https://third.example.com"] {
        for n in 0..entries {
            let miss = connections[0].post(&form(n, audience))?;
            if miss.status != 200 {
                return Err(format!("key {n} ({audience}): {} {}", miss.status, miss.cache));
            }
        }
    }
    let past = sample(&envoy)?;
    let stats = envoy.stats()?;
    Ok(Row {
        workers,
        entries,
        vms: stat(&stats, "wasm.envoy.wasm.runtime.v8.active").unwrap_or(0),
        before,
        full,
        past,
        token_bytes,
        store_errors: stat(&stats, "wasmcustom.tokengate_store_errors_total").unwrap_or(0),
    })
}

/// Envoy's template with a short stats flush: `server.memory_*` are updated on each flush
/// (every 5 s by default).
fn template() -> Result<std::path::PathBuf, String> {
    let source = testbed::workspace_root().join("envoy/tokengate.yaml");
    let text = std::fs::read_to_string(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    let dir = testbed::workspace_root().join("target/sizing");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, format!("stats_flush_interval: {}s\n{text}", FLUSH.as_secs_f64()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Envoy's memory once its stats were flushed (and the workers' ticks wrote what they hold).
fn sample(envoy: &Envoy) -> Result<Sample, String> {
    std::thread::sleep(FLUSH * 3);
    let stats = envoy.stats()?;
    let field = |name: &str| stat(&stats, name).ok_or_else(|| format!("no {name} in Envoy's /stats"));
    Ok(Sample {
        rss: envoy.resident_bytes()?,
        allocated: field("server.memory_allocated")?,
        heap: field("server.memory_heap_size")?,
        cache_entries: field("wasmcustom.tokengate_cache_entries")?,
    })
}

/// A value of Envoy's admin `/stats` text (`name: value` lines).
fn stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

fn print_row(row: &Row) {
    let columns = |what: &str, field: fn(&Sample) -> u64| {
        println!(
            "  {what:<24} {:>6} MiB before {:>6} MiB full (+{:.0} B/slot) {:>6} MiB past full (+{:.0} B/slot)",
            mib(field(&row.before)),
            mib(field(&row.full)),
            row.per_slot(&row.full, field),
            mib(field(&row.past)),
            row.per_slot(&row.past, field),
        );
    };
    columns("RSS (VmRSS)", |s| s.rss);
    columns("server.memory_allocated", |s| s.allocated);
    columns("server.memory_heap_size", |s| s.heap);
    println!(
        "  token slots in use (tokengate_cache_entries): {} full, {} past full, of {}; token responses \
         {} bytes on average; tokengate_store_errors_total {}; Wasm VMs {}",
        row.full.cache_entries,
        row.past.cache_entries,
        row.entries,
        row.token_bytes / u64::from(row.entries.max(1)),
        row.store_errors,
        row.vms
    );
}

fn summary(rows: &[Row]) {
    println!(
        "{:>7} {:>11} {:>10} {:>10} {:>10} {:>14} {:>14} {:>14}",
        "workers",
        "max_entries",
        "RSS before",
        "RSS full",
        "RSS past",
        "RSS/slot",
        "heap/slot",
        "RSS/slot past"
    );
    for row in rows {
        println!(
            "{:>7} {:>11} {:>6} MiB {:>6} MiB {:>6} MiB {:>8.0} bytes {:>8.0} bytes {:>8.0} bytes",
            row.workers,
            row.entries,
            mib(row.before.rss),
            mib(row.full.rss),
            mib(row.past.rss),
            row.per_slot(&row.full, |s| s.rss),
            row.per_slot(&row.full, |s| s.allocated),
            row.per_slot(&row.past, |s| s.rss),
        );
    }
    println!(
        "full: max_entries keys of as many clients, each hit on every worker; past: 3 x max_entries keys.\n\
         RSS/slot: Envoy's whole growth per slot of max_entries; heap/slot: server.memory_allocated's\n\
         growth, Envoy's C++ heap, where shared data lives (the workers' Wasm memory is not on it)."
    );
    for entries in SIZES {
        let at = |workers: u32| rows.iter().find(|r| (r.workers, r.entries) == (workers, entries));
        let (Some(one), Some(two)) = (at(1), at(2)) else {
            continue;
        };
        println!(
            "max_entries {entries}: shared data (heap past full, per Envoy) {:.0} bytes per slot; \
             a worker (RSS past full, 2 workers minus 1) {:.0} bytes per slot",
            two.per_slot(&two.past, |s| s.allocated),
            two.per_slot(&two.past, |s| s.rss) - one.per_slot(&one.past, |s| s.rss)
        );
    }
}

/// Keep-alive connections to the token listener, one accepted by each worker (Envoy's
/// per-worker listener stats tell which), so a hit on each reaches every worker's index.
fn one_per_worker(envoy: &Envoy, workers: u32) -> Result<Vec<Connection>, String> {
    let port = envoy.listen_port();
    let mut chosen: Vec<Option<Connection>> = (0..workers).map(|_| None).collect();
    for _attempt in 0..64 {
        if chosen.iter().all(Option::is_some) {
            break;
        }
        let before = worker_connections(envoy, workers)?;
        let connection = Connection::open(port)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let after = worker_connections(envoy, workers)?;
            if let Some(worker) = (0..workers as usize).find(|w| after[*w] > before[*w]) {
                if chosen[worker].is_none() {
                    chosen[worker] = Some(connection);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let chosen: Vec<Connection> = chosen.into_iter().flatten().collect();
    match chosen.len() == workers as usize {
        true => Ok(chosen),
        false => Err(format!("no connection was accepted by each of the {workers} workers")),
    }
}

/// Active connections per worker of the token listener (the only listener on 127.0.0.1;
/// its stats are named by the configured address, port 0 here).
fn worker_connections(envoy: &Envoy, workers: u32) -> Result<Vec<u64>, String> {
    let stats = envoy.stats()?;
    let active = |worker: u32| {
        let suffix = format!(".worker_{worker}.downstream_cx_active: ");
        stats.lines().filter(|l| l.starts_with("listener.127.0.0.1_")).find_map(|l| {
            let (_, value) = l.split_once(&suffix)?;
            value.trim().parse::<u64>().ok()
        })
    };
    Ok((0..workers).map(|w| active(w).unwrap_or(0)).collect())
}

/// What the measurement reads of an answer.
struct Answer {
    status: u16,
    cache: String,
    body_bytes: usize,
}

/// One keep-alive HTTP/1.1 connection (tokengate's answers carry `content-length`).
struct Connection {
    stream: TcpStream,
    port: u16,
}

impl Connection {
    fn open(port: u16) -> Result<Connection, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Connection { stream, port })
    }

    fn post(&mut self, body: &str) -> Result<Answer, String> {
        let request = format!(
            "POST /oauth/token HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: {FORM}\r\ncontent-length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::with_capacity(2048);
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or("an answer without content-length")?;
                if raw.len() >= end + 4 + length {
                    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let cache = header("x-tokengate-cache").unwrap_or_default();
                    return Ok(Answer { status, cache, body_bytes: length });
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the connection closed".into()),
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}
