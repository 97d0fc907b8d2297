//! A fleet on loopback (envoy/fleet/): gateway Envoys running tokengate in front of the IdP,
//! and edge Envoys running tokengate that send their misses to the gateways over a
//! consistent-hash route. The same configurations as `envoy/fleet/docker-compose.yaml`,
//! rendered with loopback ports instead of service names.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::client::{Response, post_form};
use crate::envoy::{Envoy, EnvoyOptions, compose_vars, render_config};

/// Gateways in the shipped edge configuration (its `gateways` cluster lists two).
pub const GATEWAYS: usize = 2;

/// Where the fleet's files are, relative to the workspace root.
pub const FLEET_DIR: &str = "envoy/fleet";

/// The client of the fleet's demo and tests (the compose file's mock IdP knows it too).
pub const FLEET_CLIENT: &str = "fleet-client";
pub const FLEET_SECRET: &str = "fleet-secret";
/// The cold burst: this many requests for [`BURST_KEYS`] keys (audiences).
pub const BURST_REQUESTS: usize = 96;
pub const BURST_KEYS: usize = 8;

/// A token request of the fleet client for key (audience) `key`.
pub fn key_body(key: usize) -> String {
    format!(
        "grant_type=client_credentials&client_id={FLEET_CLIENT}&client_secret={FLEET_SECRET}&audience=https://api-{key}"
    )
}

/// The cold burst over these edge ports: request i goes to edge i mod edges for key
/// i mod 8, so every key is asked of every edge.
pub fn cold_burst(ports: &[u16]) -> Vec<(u16, usize)> {
    (0..BURST_REQUESTS).map(|i| (ports[i % ports.len()], i % BURST_KEYS)).collect()
}

/// Sends every `(port, key)` request at once (their threads released together); each
/// request's key and answer, in order.
pub fn all_at_once(requests: &[(u16, usize)]) -> Vec<(usize, Result<Response, String>)> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let threads: Vec<_> = requests
        .iter()
        .map(|&(port, key)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                post_form(port, "/oauth/token", &key_body(key), &[])
            })
        })
        .collect();
    requests
        .iter()
        .zip(threads)
        .map(|(&(_, key), thread)| {
            (key, thread.join().unwrap_or_else(|_| Err("request thread panicked".into())))
        })
        .collect()
}

pub struct FleetOptions {
    pub idp_port: u16,
    pub edges: usize,
    /// With the gateway tier (edges call the gateways), or without (every edge calls the
    /// IdP itself, as separate Envoys do without a fleet setup).
    pub tiered: bool,
    pub concurrency: u32,
}

/// A running fleet; dropping it stops every Envoy.
pub struct Fleet {
    /// `None` once killed.
    pub gateways: Vec<Option<Envoy>>,
    pub edges: Vec<Envoy>,
    edge_template: PathBuf,
    /// Whether `edge_template` is a rendered copy of this fleet's own, removed on drop (the
    /// untiered fleet uses the shipped template itself).
    owns_template: bool,
    edge_plugin: String,
    opts: FleetOptions,
}

/// A plugin configuration shipped in envoy/fleet/ (`edge` or `gateway`).
pub fn fleet_plugin(role: &str) -> Result<String, String> {
    let path = crate::workspace_root().join(FLEET_DIR).join(format!("{role}-plugin.json"));
    fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A fleet template with its gateway endpoints filled in (the other placeholders are
/// `render_config`'s).
pub fn with_gateways(template: &str, gateways: &[(String, u16)]) -> String {
    let mut out = template.to_owned();
    for (n, (host, port)) in gateways.iter().enumerate() {
        out = out
            .replace(&format!("{{{{GATEWAY_{}_HOST}}}}", n + 1), host)
            .replace(&format!("{{{{GATEWAY_{}_PORT}}}}", n + 1), &port.to_string());
    }
    out
}

impl Fleet {
    pub fn start(opts: FleetOptions) -> Result<Fleet, String> {
        let root = crate::workspace_root();
        let fleet_dir = root.join(FLEET_DIR);
        let mut gateways = Vec::new();
        let (edge_template, edge_plugin) = if opts.tiered {
            for _ in 0..GATEWAYS {
                let mut options = EnvoyOptions::new(fleet_plugin("gateway")?, opts.idp_port);
                options.template = fleet_dir.join("gateway.yaml");
                options.concurrency = opts.concurrency;
                gateways.push(Some(Envoy::start(&options)?));
            }
            let endpoints: Vec<(String, u16)> =
                gateways.iter().flatten().map(|g| ("127.0.0.1".to_owned(), g.listen_port())).collect();
            let template = fs::read_to_string(fleet_dir.join("edge.yaml")).map_err(|e| e.to_string())?;
            static FLEETS: AtomicU32 = AtomicU32::new(0);
            let n = FLEETS.fetch_add(1, Ordering::SeqCst);
            let path =
                std::env::temp_dir().join(format!("tokengate-fleet-edge-{}-{n}.yaml", std::process::id()));
            fs::write(&path, with_gateways(&template, &endpoints)).map_err(|e| e.to_string())?;
            (path, fleet_plugin("edge")?)
        } else {
            // The same edge settings, calling the IdP directly.
            let mut plugin: serde_json::Value =
                serde_json::from_str(&fleet_plugin("edge")?).map_err(|e| e.to_string())?;
            plugin["upstream"]["cluster"] = "idp".into();
            if let Some(upstream) = plugin["upstream"].as_object_mut() {
                upstream.remove("key_header");
            }
            (root.join("envoy/tokengate.yaml"), plugin.to_string())
        };
        let owns_template = opts.tiered;
        let mut fleet =
            Fleet { gateways, edges: Vec::new(), edge_template, owns_template, edge_plugin, opts };
        for _ in 0..fleet.opts.edges {
            fleet.add_edge()?;
        }
        Ok(fleet)
    }

    /// Starts one more edge (a new replica, with a cold cache), and with the gateway tier
    /// returns once its health checks pass for every running gateway, as a readiness probe
    /// would hold its traffic: a first check that timed out on a busy host would otherwise
    /// send some keys to the other gateway until the next one passes.
    pub fn add_edge(&mut self) -> Result<&Envoy, String> {
        let mut options = EnvoyOptions::new(self.edge_plugin.clone(), self.opts.idp_port);
        options.template = self.edge_template.clone();
        options.concurrency = self.opts.concurrency;
        let edge = Envoy::start(&options)?;
        if self.opts.tiered {
            let running = self.gateways.iter().flatten().count() as u64;
            let deadline = Instant::now() + Duration::from_secs(30);
            while edge.stat("cluster.gateways.membership_healthy")? < running {
                if Instant::now() > deadline {
                    return Err(format!("the edge never saw {running} healthy gateways"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.edges.push(edge);
        self.edges.last().ok_or_else(|| "no edge".to_owned())
    }

    /// Kills gateway `n` (its process, as a crash would).
    pub fn kill_gateway(&mut self, n: usize) {
        if let Some(slot) = self.gateways.get_mut(n) {
            *slot = None;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.owns_template {
            let _ = fs::remove_file(&self.edge_template);
        }
    }
}

/// envoy/fleet/compose/{edge,gateway}.yaml: the fleet templates rendered for
/// `envoy/fleet/docker-compose.yaml` (services `gateway-1`, `gateway-2`, `mock-idp`; Envoy
/// listens on 10000, admin on 9901, in every container).
pub fn fleet_compose_configs() -> Result<Vec<(String, String)>, String> {
    let root = crate::workspace_root().join(FLEET_DIR);
    let gateways: Vec<(String, u16)> = (1..=GATEWAYS).map(|n| (format!("gateway-{n}"), 10000)).collect();
    let mut out = Vec::new();
    for role in ["edge", "gateway"] {
        let template = fs::read_to_string(root.join(format!("{role}.yaml"))).map_err(|e| e.to_string())?;
        let plugin: serde_json::Value =
            serde_json::from_str(&fleet_plugin(role)?).map_err(|e| e.to_string())?;
        let rendered =
            render_config(&with_gateways(&template, &gateways), &compose_vars(plugin.to_string()))?;
        let header = format!(
            "# Generated by `cargo xtask compose-config` from envoy/fleet/{role}.yaml and\n\
             # envoy/fleet/{role}-plugin.json: edit those, then regenerate (a test checks they agree).\n"
        );
        out.push((format!("{FLEET_DIR}/compose/{role}.yaml"), format!("{header}{rendered}")));
    }
    Ok(out)
}
