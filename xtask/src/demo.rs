//! `cargo xtask demo`: a mock IdP and Envoy with tokengate on loopback, a few requests
//! to show miss -> hit -> wrong secret -> 429 for a client over its rate limit, then Envoy
//! left running until Ctrl-C, `kill` or a closed terminal (see `signals`).

use std::net::TcpListener;

use mock_idp::{Client, Config, MockIdp};
use testbed::{Envoy, EnvoyOptions, Response};

use crate::{build, cmd, setup};

const CLIENT: &str = "demo-client";
const SECRET: &str = "demo-secret";
const AUDIENCE: &str = "https://api.example.com";
/// Rate-limited to 3 requests a minute in `envoy/demo-plugin.json`.
const NOISY_CLIENT: &str = "noisy-client";
const NOISY_SECRET: &str = "noisy-secret";

pub fn run(no_wait: bool) -> Result<(), String> {
    let stop = crate::signals::StopSignal::install()?;
    setup::envoy(testbed::DEFAULT_ENVOY_VERSION)?;
    build::run()?;
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
    let mut options = EnvoyOptions::new(plugin_config, idp.port());
    options.listen_port = free_or_any(10_000);
    options.admin_port = free_or_any(9_901);
    let mut envoy = Envoy::start(&options)?;
    let port = envoy.listen_port();
    println!(
        "mock IdP on 127.0.0.1:{}, Envoy on 127.0.0.1:{port} (admin {})",
        idp.port(),
        envoy.admin_port()
    );

    cmd::step("token requests through tokengate");
    let form = |client: &str, secret: &str| {
        format!("grant_type=client_credentials&client_id={client}&client_secret={secret}&audience={AUDIENCE}")
    };
    show(&idp, "first request", send(port, &form(CLIENT, SECRET))?);
    for n in 1..=3 {
        show(&idp, &format!("repeat #{n}"), send(port, &form(CLIENT, SECRET))?);
    }
    show(&idp, "wrong secret", send(port, &form(CLIENT, "not-the-secret"))?);
    show(&idp, "no client_id", send(port, "grant_type=client_credentials&client_secret=x")?);
    // 3 requests a minute: miss, hit, hit, then 429 with retry-after (hits count too).
    for n in 1..=4 {
        show(&idp, &format!("noisy #{n}"), send(port, &form(NOISY_CLIENT, NOISY_SECRET))?);
    }

    cmd::step("usage report (who burns the quota)");
    let usage = testbed::request("GET", port, "/tokengate/usage", &[], b"")?;
    let report = usage.json().unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    println!("\nUsage page:  http://127.0.0.1:{port}/tokengate/usage   (JSON: ?format=json)");
    println!("Envoy stats: http://127.0.0.1:{}/stats/prometheus   (tokengate_*)", envoy.admin_port());
    println!(
        "\nTry it:\n  curl -si -X POST http://127.0.0.1:{port}/oauth/token -d grant_type=client_credentials -d client_id={CLIENT} -d client_secret={SECRET} -d audience={AUDIENCE}"
    );
    if no_wait {
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

fn send(port: u16, body: &str) -> Result<Response, String> {
    testbed::request(
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

/// `port` when it is free, else 0 (any).
fn free_or_any(port: u16) -> u16 {
    if TcpListener::bind(("127.0.0.1", port)).is_ok() { port } else { 0 }
}
