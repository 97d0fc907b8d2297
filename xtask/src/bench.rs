//! `cargo xtask bench [--seconds N] [--rounds N]`: every row runs on loopback at the same
//! time (Envoy `--concurrency 1`, buffer filter before the router in every Envoy row), and
//! wrk (1 thread, 32 connections, POST with a form body unless said otherwise) drives each
//! row in turn for a few seconds, round after round, so drift hits all rows alike. Prints
//! requests/s (median of the rounds), p50, p99 and the ratio to the baseline, and writes
//! `target/bench/results.json` and `target/bench/chart.svg`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mock_idp::{Client, Config, MockIdp};
use serde_json::{Value, json};
use testbed::{Envoy, EnvoyOptions};

use crate::{build, cmd, setup};

const CLIENT: &str = "bench-client";
const SECRET: &str = "bench-secret-0123456789";
/// Bytes of the access tokens the mock IdP issues (a real Auth0 token is about this size).
const TOKEN_BYTES: usize = 700;
const KEYS_IN_ROTATION: usize = 10_000;

fn form_body(audience: &str) -> String {
    format!("grant_type=client_credentials&client_id={CLIENT}&client_secret={SECRET}&audience={audience}")
}

/// How wrk builds its requests.
enum Load {
    /// The same request every time.
    Fixed { content_type: &'static str, authorization: Option<String>, body: String },
    /// `audience=aud-<n>` for n in 1..=keys, in rotation.
    Rotating { keys: usize },
    /// A new audience every request (always a miss).
    Distinct,
}

struct Row {
    name: &'static str,
    label: &'static str,
    port: u16,
    /// The Envoy serving the row, whose CPU time per request is measured.
    pid: Option<u32>,
    load: Load,
    rounds: Vec<Measure>,
}

#[derive(Clone, Copy)]
struct Measure {
    rps: f64,
    /// Envoy CPU time (user + system) per request, in µs; NaN when not measured.
    cpu_us: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Keeps nginx alive while the bench runs.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `only`: the rows to drive (the baseline always runs); a partial run skips the
/// 10,000-key warm-up unless its row is named, and the RSS measurement.
/// `compare`: another build of the filter, driven as one more single-key hit row in the same
/// rounds (A/B of a change without the drift between separate runs).
pub fn run(
    seconds: u64,
    rounds: usize,
    only: Option<Vec<String>>,
    compare: Option<PathBuf>,
) -> Result<(), String> {
    let wanted = |name: &str| name == "baseline" || only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    setup::envoy(testbed::DEFAULT_ENVOY_VERSION)?;
    build::run()?;
    ensure_tools()?;
    cmd::step("start the rows");
    let dir = testbed::workspace_root().join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let idp = MockIdp::start(Config {
        clients: vec![Client { id: CLIENT.into(), secret: SECRET.into() }],
        expires_in: 86_400,
    })
    .map_err(|e| e.to_string())?;
    idp.set_token_bytes(TOKEN_BYTES);

    let plugin = |extra: Value| -> String {
        let mut config = json!({
            "upstream": {"cluster": "idp", "authority": "bench.idp", "timeout": "5s"},
            "cache": {"max_entries": 20_000, "min_remaining_ttl": "30s"}
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
            c.extend(e);
        }
        config.to_string()
    };
    let envoy_on =
        |concurrency: u32, template: Option<&str>, plugin_config: String| -> Result<Envoy, String> {
            let mut options = EnvoyOptions::new(plugin_config, idp.port());
            options.concurrency = concurrency;
            options.log_level = "warn".into();
            if let Some(template) = template {
                let path = dir.join(template);
                fs::write(&path, template_text(template)).map_err(|e| e.to_string())?;
                options.template = path;
            }
            Envoy::start(&options)
        };
    let envoy_with = |template: Option<&str>, plugin_config: String| envoy_on(1, template, plugin_config);
    let started = Instant::now();
    let tokengate = envoy_with(None, plugin(json!({})))?;
    let first_hit = time_to_first_hit(&tokengate, started)?;
    let limited = envoy_with(
        None,
        plugin(json!({
            "rate_limit": {"default": {"max_tokens": 1_000_000_000u64, "tokens_per_fill": 1_000_000_000u64, "fill_interval": "1s"}},
            "quota": {"default": {"tokens": 1_000_000_000u64, "window": "1d"}}
        })),
    )?;
    let miss_path = envoy_with(None, plugin(json!({})))?;
    let compared = match &compare {
        Some(wasm) => {
            let mut options = EnvoyOptions::new(plugin(json!({})), idp.port());
            options.concurrency = 1;
            options.log_level = "warn".into();
            options.wasm_path = wasm.clone();
            let envoy = Envoy::start(&options)?;
            post(envoy.listen_port(), "application/x-www-form-urlencoded", None, &form_body("aud-1"))?;
            Some(envoy)
        }
        None => None,
    };
    let passthrough = envoy_with(Some("passthrough.yaml"), plugin(json!({})))?;

    // Warm the caches; the hit's exact bytes become the baseline's body.
    let hit = post(tokengate.listen_port(), "application/x-www-form-urlencoded", None, &form_body("aud-1"))?;
    post(limited.listen_port(), "application/x-www-form-urlencoded", None, &form_body("aud-1"))?;
    let warm_started = Instant::now();
    // Each key once as a miss (the shared cache), then once as a hit: the steady state of a
    // worker that has served these keys before.
    let passes = if wanted("hit_10k_keys") { 2 } else { 0 };
    for _pass in 0..passes {
        for n in 1..=KEYS_IN_ROTATION {
            let body = form_body(&format!("aud-{n}"));
            post(tokengate.listen_port(), "application/x-www-form-urlencoded", None, &body)?;
        }
    }
    println!("warmed {KEYS_IN_ROTATION} keys in {:.1} s", warm_started.elapsed().as_secs_f64());
    let rss = if only.is_none() { Some(rss_growth(&envoy_on(2, None, plugin(json!({})))?)?) } else { None };
    let calibration = match wanted("wasm_noop") || wanted("wasm_bare_hit") {
        true => Some(Calibration::start(&dir, &build::calibration()?, &hit, idp.port())?),
        false => None,
    };
    let baseline = envoy_with(Some("baseline.yaml"), hit)?;
    let nginx_port = free_port()?;
    let _nginx = start_nginx(&dir, idp.port(), nginx_port)?;

    let json_body = format!(
        r#"{{"grant_type":"client_credentials","client_id":"{CLIENT}","client_secret":"{SECRET}","audience":"aud-1"}}"#
    );
    let basic = format!("Basic {}", base64(&format!("{CLIENT}:{SECRET}")));
    let form = |aud: &str| Load::Fixed {
        content_type: "application/x-www-form-urlencoded",
        authorization: None,
        body: form_body(aud),
    };
    let mut rows = vec![
        Row {
            name: "baseline",
            label: "Envoy direct_response (no Wasm)",
            port: baseline.listen_port(),
            pid: Some(baseline.pid()),
            load: form("aud-1"),
            rounds: vec![],
        },
        Row {
            name: "wasm_noop",
            label: "reference: + a no-op proxy-wasm filter",
            port: calibration.as_ref().map_or(0, |c| c.noop.listen_port()),
            pid: calibration.as_ref().map(|c| c.noop.pid()),
            load: form("aud-1"),
            rounds: vec![],
        },
        Row {
            name: "wasm_bare_hit",
            label: "reference: bare Wasm hit (body, 1 CAS, 1 get, local reply)",
            port: calibration.as_ref().map_or(0, |c| c.bare_hit.listen_port()),
            pid: calibration.as_ref().map(|c| c.bare_hit.pid()),
            load: form("aud-1"),
            rounds: vec![],
        },
        Row {
            name: "hit_form",
            label: "tokengate hit, form body",
            port: tokengate.listen_port(),
            pid: Some(tokengate.pid()),
            load: form("aud-1"),
            rounds: vec![],
        },
        Row {
            name: "hit_json",
            label: "tokengate hit, JSON body",
            port: tokengate.listen_port(),
            pid: Some(tokengate.pid()),
            load: Load::Fixed { content_type: "application/json", authorization: None, body: json_body },
            rounds: vec![],
        },
        Row {
            name: "hit_basic",
            label: "tokengate hit, Basic header",
            port: tokengate.listen_port(),
            pid: Some(tokengate.pid()),
            load: Load::Fixed {
                content_type: "application/x-www-form-urlencoded",
                authorization: Some(basic),
                body: "grant_type=client_credentials&audience=aud-1".into(),
            },
            rounds: vec![],
        },
        Row {
            name: "hit_limits",
            label: "tokengate hit, rate limit + quota",
            port: limited.listen_port(),
            pid: Some(limited.pid()),
            load: form("aud-1"),
            rounds: vec![],
        },
        Row {
            name: "hit_10k_keys",
            label: "tokengate hit, 10,000 keys in rotation",
            port: tokengate.listen_port(),
            pid: Some(tokengate.pid()),
            load: Load::Rotating { keys: KEYS_IN_ROTATION },
            rounds: vec![],
        },
        Row {
            name: "miss",
            label: "tokengate miss (distinct keys, mock IdP)",
            port: miss_path.listen_port(),
            pid: Some(miss_path.pid()),
            load: Load::Distinct,
            rounds: vec![],
        },
        Row {
            name: "passthrough",
            label: "Envoy pass-through to the mock IdP",
            port: passthrough.listen_port(),
            pid: Some(passthrough.pid()),
            load: form("aud-1"),
            rounds: vec![],
        },
        Row {
            name: "nginx",
            label: "nginx proxy_cache keyed by the body",
            port: nginx_port,
            pid: None,
            load: form("aud-1"),
            rounds: vec![],
        },
    ];
    rows.retain(|r| wanted(r.name));
    if let Some(envoy) = &compared {
        rows.insert(
            2.min(rows.len()),
            Row {
                name: "hit_form_compared",
                label: "tokengate hit, form body (--compare build)",
                port: envoy.listen_port(),
                pid: Some(envoy.pid()),
                load: form("aud-1"),
                rounds: vec![],
            },
        );
    }
    // Prime nginx's cache.
    post(nginx_port, "application/x-www-form-urlencoded", None, &form_body("aud-1"))?;

    cmd::step(&format!("{rounds} rounds of {seconds} s per row"));
    for round in 1..=rounds {
        // Every other round runs the rows in reverse: a row's place in the round (what ran
        // just before it) measurably moves its numbers on a busy VM, so an A/B pair must
        // take both places equally often.
        let mut order: Vec<&mut Row> = rows.iter_mut().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for row in order {
            let script = dir.join(format!("{}.lua", row.name));
            fs::write(&script, lua(&row.load)).map_err(|e| e.to_string())?;
            let cpu_before = row.pid.and_then(cpu_ticks);
            let (mut measure, requests) = wrk(row.port, &script, seconds)?;
            if let (Some(before), Some(after)) = (cpu_before, row.pid.and_then(cpu_ticks)) {
                measure.cpu_us = (after - before) as f64 * 1e6 / ticks_per_second() / requests.max(1) as f64;
            }
            println!(
                "round {round} {:<14} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  Envoy CPU {:>5.1} µs/req",
                row.name, measure.rps, measure.p50_ms, measure.p99_ms, measure.cpu_us
            );
            row.rounds.push(measure);
        }
    }
    report(&dir, &rows, first_hit, rss)
}

fn ensure_tools() -> Result<(), String> {
    let missing: Vec<&str> = ["wrk", "nginx"].into_iter().filter(|t| which(t).is_none()).collect();
    if !missing.is_empty() {
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        cmd::run("apt-get", &["update", "-qq"], &env)?;
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(missing.iter().map(|m| if *m == "nginx" { "nginx-light" } else { m }));
        cmd::run("apt-get", &args, &env)?;
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists())
}

/// The reference filters (`xtask/calibration`): what loading any proxy-wasm filter costs
/// (the no-op filter in the baseline's Envoy, answered by direct_response), and the least a
/// Wasm cache hit can do (in tokengate's own Envoy configuration, so it differs from the
/// tokengate rows only in the filter).
struct Calibration {
    noop: Envoy,
    bare_hit: Envoy,
}

impl Calibration {
    fn start(dir: &Path, wasm: &Path, token: &str, idp_port: u16) -> Result<Calibration, String> {
        let body = serde_json::to_string(token).map_err(|e| e.to_string())?;
        let noop_template = dir.join("calibration.yaml");
        fs::write(&noop_template, include_str!("bench/calibration.yaml").replace("{{TOKEN_BODY}}", &body))
            .map_err(|e| e.to_string())?;
        let start = |plugin_config: String, template: Option<&Path>| {
            let mut options = EnvoyOptions::new(plugin_config, idp_port);
            options.concurrency = 1;
            options.log_level = "warn".into();
            if let Some(template) = template {
                options.template = template.to_path_buf();
            }
            options.wasm_path = wasm.to_path_buf();
            Envoy::start(&options)
        };
        let calibration = Calibration {
            noop: start("noop".into(), Some(&noop_template))?,
            bare_hit: start(format!("bare_hit:{token}"), None)?,
        };
        // Each must answer with the token, or its row measures something else.
        for envoy in [&calibration.noop, &calibration.bare_hit] {
            let answer =
                post(envoy.listen_port(), "application/x-www-form-urlencoded", None, &form_body("aud-1"))?;
            if answer != token {
                return Err("a reference filter's Envoy did not answer with the token".into());
            }
        }
        Ok(calibration)
    }
}

fn template_text(name: &str) -> &'static str {
    match name {
        "baseline.yaml" => include_str!("bench/baseline.yaml"),
        _ => include_str!("bench/passthrough.yaml"),
    }
}

fn post(port: u16, content_type: &str, authorization: Option<&str>, body: &str) -> Result<String, String> {
    let mut headers = vec![("content-type", content_type)];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    let r = testbed::request("POST", port, "/oauth/token", &headers, body.as_bytes())?;
    if r.status != 200 {
        return Err(format!("warm-up request answered {}: {}", r.status, r.text()));
    }
    Ok(r.text())
}

/// From Envoy's start to the first hit it serves.
fn time_to_first_hit(envoy: &Envoy, started: Instant) -> Result<Duration, String> {
    let body = form_body("first-hit");
    post(envoy.listen_port(), "application/x-www-form-urlencoded", None, &body)?;
    post(envoy.listen_port(), "application/x-www-form-urlencoded", None, &body)?;
    Ok(started.elapsed())
}

/// Envoy's resident-memory growth from holding 10,000 tokens: each key fetched once (the
/// shared copy) and hit twice (the workers' index copies), against the bytes of the token
/// responses themselves.
struct RssGrowth {
    growth: u64,
    token_bytes: u64,
}

fn rss_growth(envoy: &Envoy) -> Result<RssGrowth, String> {
    let form = "application/x-www-form-urlencoded";
    // Warm-up outside the measured keys: connection pools, allocator arenas.
    for n in 0..500 {
        post(envoy.listen_port(), form, None, &form_body(&format!("warm-{n}")))?;
    }
    let before = envoy.resident_bytes()?;
    let mut token_bytes = 0u64;
    for n in 1..=KEYS_IN_ROTATION {
        let body = form_body(&format!("rss-{n}"));
        token_bytes += post(envoy.listen_port(), form, None, &body)?.len() as u64;
        for _ in 0..2 {
            post(envoy.listen_port(), form, None, &body)?;
        }
    }
    let after = envoy.resident_bytes()?;
    Ok(RssGrowth { growth: after.saturating_sub(before), token_bytes })
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn start_nginx(dir: &Path, idp_port: u16, port: u16) -> Result<Nginx, String> {
    let work = dir.join("nginx");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let config = include_str!("bench/nginx.conf")
        .replace("{{DIR}}", &work.display().to_string())
        .replace("{{IDP_PORT}}", &idp_port.to_string())
        .replace("{{LISTEN_PORT}}", &port.to_string());
    let conf = work.join("nginx.conf");
    fs::write(&conf, config).map_err(|e| e.to_string())?;
    let nginx = which("nginx").ok_or("nginx not found")?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&work)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nginx did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Nginx(child))
}

fn lua(load: &Load) -> String {
    match load {
        Load::Fixed { content_type, authorization, body } => {
            // Lua long brackets: the body may hold quotes.
            let mut script = format!(
                "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"{content_type}\"\n"
            );
            if let Some(a) = authorization {
                let _ = writeln!(script, "wrk.headers[\"Authorization\"] = \"{a}\"");
            }
            script
        }
        Load::Rotating { keys } => format!(
            "local n = 0\nlocal headers = {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\"}}\n\
             request = function()\n  n = (n % {keys}) + 1\n  return wrk.format(\"POST\", \"/oauth/token\", headers, \"{}\" .. n)\nend\n",
            form_body("aud-")
        ),
        Load::Distinct => format!(
            "local n = 0\nlocal headers = {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\"}}\n\
             request = function()\n  n = n + 1\n  return wrk.format(\"POST\", \"/oauth/token\", headers, \"{}\" .. n .. \"-\" .. math.random(1000000000))\nend\n",
            form_body("miss-")
        ),
    }
}

/// A process's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    cmd::output("getconf", &["CLK_TCK"]).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(100.0)
}

/// One wrk run: its measure and the number of requests it completed.
fn wrk(port: u16, script: &Path, seconds: u64) -> Result<(Measure, u64), String> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/oauth/token"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field =
        |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()));
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let non_2xx = field("Non-2xx or 3xx responses:").unwrap_or_default();
    if !non_2xx.is_empty() {
        return Err(format!("{non_2xx} answers were not 2xx on port {port}:\n{text}"));
    }
    // "123456 requests in 5.00s, 98.76MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or(0);
    Ok((
        Measure { rps, cpu_us: f64::NAN, p50_ms: latency(field("50%")), p99_ms: latency(field("99%")) },
        requests,
    ))
}

/// wrk's `1.23ms` / `456.00us` / `1.20s` in milliseconds.
fn latency(value: Option<String>) -> f64 {
    let Some(v) = value else { return f64::NAN };
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v.as_str(), 1.0)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(dir: &Path, rows: &[Row], first_hit: Duration, rss: Option<RssGrowth>) -> Result<(), String> {
    let summary: Vec<(&Row, Measure)> = rows
        .iter()
        .map(|r| {
            let m = Measure {
                rps: median(r.rounds.iter().map(|m| m.rps).collect()),
                cpu_us: median(r.rounds.iter().map(|m| m.cpu_us).collect()),
                p50_ms: median(r.rounds.iter().map(|m| m.p50_ms).collect()),
                p99_ms: median(r.rounds.iter().map(|m| m.p99_ms).collect()),
            };
            (r, m)
        })
        .collect();
    let base = summary.first().map_or(f64::NAN, |(_, m)| m.rps);
    let wasm = testbed::wasm_path();
    let wasm_bytes = fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    cmd::step("results (median of the rounds)");
    println!("| row | req/s | p50 ms | p99 ms | share of baseline | Envoy CPU µs/request |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (row, m) in &summary {
        let cpu = if m.cpu_us.is_nan() { "n/a".to_owned() } else { format!("{:.1}", m.cpu_us) };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {cpu} |",
            row.label,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            m.rps / base
        );
    }
    let rps_of = |name: &str| summary.iter().find(|(r, _)| r.name == name).map(|(_, m)| m.rps);
    if let (Some(hit), Some(bare)) = (rps_of("hit_form"), rps_of("wasm_bare_hit")) {
        println!("tokengate single-key hit: {:.2} of the bare Wasm hit's requests/s", hit / bare);
    }
    println!(
        "tokengate.wasm: {wasm_bytes} bytes; Envoy start to first served hit: {} ms",
        first_hit.as_millis()
    );
    if let Some(rss) = &rss {
        println!(
            "Envoy RSS growth for {KEYS_IN_ROTATION} tokens (--concurrency 2, shared + index copies): {} KiB = \
             {:.2}x the {} KiB of token responses",
            rss.growth / 1024,
            rss.growth as f64 / rss.token_bytes.max(1) as f64,
            rss.token_bytes / 1024
        );
    }
    let machine = cmd::output("uname", &["-srm"]).unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let results = json!({
        "machine": {"kernel": machine.trim(), "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "wasm_bytes": wasm_bytes,
        "first_hit_ms": first_hit.as_millis() as u64,
        "rss_growth_10k_tokens_bytes": rss.as_ref().map(|r| r.growth),
        "token_response_bytes_10k": rss.as_ref().map(|r| r.token_bytes),
        "rows": summary.iter().map(|(r, m)| json!({
            "name": r.name, "label": r.label, "rps": m.rps, "cpu_us_per_request": (!m.cpu_us.is_nan()).then_some(m.cpu_us), "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
            "share_of_baseline": m.rps / base,
            "rounds": r.rounds.iter().map(|x| json!({"rps": x.rps, "cpu_us_per_request": (!x.cpu_us.is_nan()).then_some(x.cpu_us), "p50_ms": x.p50_ms, "p99_ms": x.p99_ms})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let json_path = dir.join("results.json");
    fs::write(&json_path, serde_json::to_string_pretty(&results).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let svg_path = dir.join("chart.svg");
    fs::write(&svg_path, svg(&summary, base)).map_err(|e| e.to_string())?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

fn svg(summary: &[(&Row, Measure)], base: f64) -> String {
    let max = summary.iter().map(|(_, m)| m.rps).fold(1.0, f64::max);
    let (width, bar_left, row_h) = (900.0, 330.0, 30.0);
    let height = 50.0 + row_h * summary.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">requests/s (median of rounds), share of Envoy direct_response</text>\n"
    );
    for (i, (row, m)) in summary.iter().enumerate() {
        let y = 40.0 + row_h * i as f64;
        let w = (width - bar_left - 120.0) * m.rps / max;
        let color = if row.name.starts_with("hit") { "#3b6fd8" } else { "#9aa4b5" };
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"{bar_left}\" y=\"{:.0}\" width=\"{w:.0}\" height=\"20\" fill=\"{color}\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{:.0} ({:.2})</text>",
            y + 15.0,
            row.label,
            y,
            bar_left + w + 6.0,
            y + 15.0,
            m.rps,
            m.rps / base
        );
    }
    out.push_str("</svg>\n");
    out
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
