//! `cargo xtask fleet`: the fleet of envoy/fleet/docker-compose.yaml without Docker — a
//! mock IdP, 2 gateway Envoys and 3 edge Envoys on loopback, all running tokengate. Sends 96
//! cold requests for 8 keys spread over the edges, with the gateway tier and then without
//! it, and prints the IdP calls per key of each; then leaves the tiered fleet running until
//! Ctrl-C (`--no-wait`: stop at once).

use mock_idp::{Client, Config, MockIdp};
use testbed::{
    BURST_KEYS as KEYS, BURST_REQUESTS as REQUESTS, FLEET_CLIENT as CLIENT, FLEET_SECRET as SECRET, Fleet,
    FleetOptions,
};

use crate::{build, cmd, setup};

pub fn run(no_wait: bool) -> Result<(), String> {
    let stop = crate::signals::StopSignal::install()?;
    setup::envoy(testbed::DEFAULT_ENVOY_VERSION)?;
    build::run()?;
    let mut tiered = None;
    for with_tier in [true, false] {
        let idp = MockIdp::start(Config {
            clients: vec![Client { id: CLIENT.into(), secret: SECRET.into() }],
            expires_in: 86_400,
        })
        .map_err(|e| format!("mock IdP: {e}"))?;
        let what = if with_tier { "3 edges + 2 gateways" } else { "3 edges, no gateway tier" };
        cmd::step(&format!("start {what}"));
        let fleet =
            Fleet::start(FleetOptions { idp_port: idp.port(), edges: 3, tiered: with_tier, concurrency: 2 })?;
        for (n, gateway) in fleet.gateways.iter().flatten().enumerate() {
            println!(
                "gateway-{} on 127.0.0.1:{} (admin {})",
                n + 1,
                gateway.listen_port(),
                gateway.admin_port()
            );
        }
        for (n, edge) in fleet.edges.iter().enumerate() {
            println!("edge-{} on 127.0.0.1:{} (admin {})", n + 1, edge.listen_port(), edge.admin_port());
        }
        let ports: Vec<u16> = fleet.edges.iter().map(|e| e.listen_port()).collect();
        let answers = testbed::all_at_once(&testbed::cold_burst(&ports));
        let failed = answers.iter().filter(|(_, r)| !r.as_ref().is_ok_and(|r| r.status == 200)).count();
        println!(
            "{REQUESTS} cold requests for {KEYS} keys over the edges: {failed} failed, {} IdP calls = {:.1} per key",
            idp.token_calls(),
            idp.token_calls() as f64 / KEYS as f64
        );
        if with_tier {
            tiered = Some((idp, fleet));
        }
    }
    let Some((_idp, fleet)) = tiered else {
        return Ok(());
    };
    if no_wait {
        return Ok(());
    }
    let port = fleet.edges[0].listen_port();
    println!(
        "\nThe tiered fleet keeps running. Try:\n  curl -si -X POST http://127.0.0.1:{port}/oauth/token \
         -d grant_type=client_credentials -d client_id={CLIENT} -d client_secret={SECRET} -d audience=https://api-0\n\
         Ctrl-C stops it."
    );
    stop.wait(|| true);
    println!("stopping the fleet");
    Ok(())
}
