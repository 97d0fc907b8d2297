//! Rendering the Envoy template and running Envoy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::client::request;

/// The values of the template's `{{...}}` placeholders.
pub struct Vars {
    /// Where the listener and admin bind (`127.0.0.1` here, `0.0.0.0` in a container).
    pub bind_address: String,
    pub idp_host: String,
    pub admin_port: u16,
    pub listen_port: u16,
    pub idp_port: u16,
    pub wasm_path: PathBuf,
    /// The plugin configuration, JSON text.
    pub plugin_config: String,
    /// Where the TLS certificates are (`crate::tls`'s files).
    pub tls_dir: PathBuf,
}

/// Replaces the placeholders; the plugin configuration goes in as a YAML double-quoted
/// scalar (a JSON string literal is one).
pub fn render_config(template: &str, vars: &Vars) -> Result<String, String> {
    let plugin = serde_json::to_string(&vars.plugin_config).map_err(|e| e.to_string())?;
    let rendered = template
        .replace("{{BIND_ADDRESS}}", &vars.bind_address)
        .replace("{{IDP_HOST}}", &vars.idp_host)
        .replace("{{ADMIN_PORT}}", &vars.admin_port.to_string())
        .replace("{{LISTEN_PORT}}", &vars.listen_port.to_string())
        .replace("{{IDP_PORT}}", &vars.idp_port.to_string())
        .replace("{{WASM_PATH}}", &vars.wasm_path.display().to_string())
        .replace("{{TLS_DIR}}", &vars.tls_dir.display().to_string())
        .replace("{{PLUGIN_CONFIG}}", &plugin);
    match rendered.find("{{") {
        Some(at) => Err(format!(
            "unknown placeholder in the template: {}",
            &rendered[at..rendered.len().min(at + 40)]
        )),
        None => Ok(rendered),
    }
}

pub struct EnvoyOptions {
    /// The plugin configuration, JSON text.
    pub plugin_config: String,
    pub idp_port: u16,
    pub concurrency: u32,
    pub template: PathBuf,
    /// 0: any free port.
    pub listen_port: u16,
    /// 0: any free port.
    pub admin_port: u16,
    pub log_level: String,
    pub envoy_binary: PathBuf,
    pub wasm_path: PathBuf,
    /// Serve the template's listeners from a file Envoy watches (filesystem LDS), so a
    /// test can change the configuration of a running Envoy ([`Envoy::swap_plugin_config`]).
    pub lds: bool,
    /// More command-line arguments (`--drain-time-s 1`, say).
    pub extra_args: Vec<String>,
    /// The token listener of `envoy/tokengate.yaml` speaks HTTPS with `server.crt` and
    /// `server.key` from this directory (`tls::write_listener_certificates`), as in the demo
    /// and docker compose. `None` (the default): that listener's `transport_socket` is
    /// dropped (`without_listener_tls`), so the tests' plain client can talk to it. Other
    /// templates (the fleet's, the production one) keep their TLS either way.
    pub listener_tls: Option<PathBuf>,
}

impl EnvoyOptions {
    pub fn new(plugin_config: String, idp_port: u16) -> EnvoyOptions {
        EnvoyOptions {
            plugin_config,
            idp_port,
            concurrency: 2,
            template: crate::workspace_root().join("envoy/tokengate.yaml"),
            listen_port: 0,
            admin_port: 0,
            log_level: "info".into(),
            envoy_binary: crate::envoy_binary(),
            wasm_path: crate::wasm_path(),
            lds: false,
            extra_args: Vec::new(),
            listener_tls: None,
        }
    }
}

/// A running Envoy; dropping it kills the process.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    listen_port: u16,
    admin_port: u16,
    /// What renders the configuration again for a listener swap (with `lds`).
    swap: Option<(String, Vars)>,
    https: bool,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    /// Starts Envoy and waits until it is LIVE with its listener bound (at most 30 s).
    /// On failure the error holds the end of Envoy's log.
    pub fn start(opts: &EnvoyOptions) -> Result<Envoy, String> {
        let template =
            fs::read_to_string(&opts.template).map_err(|e| format!("{}: {e}", opts.template.display()))?;
        let template = match opts.listener_tls {
            Some(_) => template,
            None => without_listener_tls(&template),
        };
        // A template without the filter (a plain Envoy) needs no .wasm.
        let needs_wasm = template.contains("{{WASM_PATH}}");
        for (what, path, needed) in
            [("Envoy", &opts.envoy_binary, true), ("tokengate.wasm", &opts.wasm_path, needs_wasm)]
        {
            if needed && !path.exists() {
                return Err(format!("{what} not found at {} (run `cargo xtask build`)", path.display()));
            }
        }
        let instance = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tokengate-envoy-{}-{instance}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let vars = Vars {
            bind_address: "127.0.0.1".into(),
            idp_host: "127.0.0.1".into(),
            admin_port: opts.admin_port,
            listen_port: opts.listen_port,
            idp_port: opts.idp_port,
            wasm_path: opts.wasm_path.clone(),
            plugin_config: opts.plugin_config.clone(),
            // Test certificates are made only for a template that uses them (the fleet's).
            tls_dir: match (&opts.listener_tls, template.contains("{{TLS_DIR}}")) {
                (Some(dir), _) => dir.clone(),
                (None, true) => crate::tls::test_dir()?,
                (None, false) => PathBuf::new(),
            },
        };
        let mut config = render_config(&template, &vars)?;
        if opts.lds {
            config = with_lds(&config, &dir)?;
        }
        let config_path = dir.join("envoy.yaml");
        let admin_path = dir.join("admin-address.txt");
        let log_path = dir.join("envoy.log");
        fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        // A base id of its own, so parallel Envoys never share shared-memory regions.
        let base_id = (std::process::id() % 10_000) * 100 + instance % 100;
        let child = Command::new(&opts.envoy_binary)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            // No hot-restart shared memory or domain socket: parallel Envoys stay independent.
            .arg("--disable-hot-restart")
            .args(["-l", &opts.log_level])
            // Access-log lines reach the log within 100 ms (default: 10 s).
            .args(["--file-flush-interval-msec", "100"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", opts.envoy_binary.display()))?;
        let swap = opts.lds.then_some((template, vars));
        let https = opts.listener_tls.is_some();
        let mut envoy = Envoy { child, dir, listen_port: 0, admin_port: 0, swap, https };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Envoy exited ({status}) during start:\n{}", self.log_tail(40)));
            }
            if self.admin_port == 0 {
                self.admin_port = fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|a| a.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
                    .unwrap_or(0);
            }
            if self.admin_port != 0 && self.listen_port == 0 {
                self.listen_port = self.bound_listener_port().unwrap_or(0);
            }
            if self.listen_port != 0
                && request("GET", self.admin_port, "/ready", &[], b"").is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            sleep(Duration::from_millis(50));
        }
        Err(format!("Envoy was not ready after 30 s:\n{}", self.log_tail(40)))
    }

    fn bound_listener_port(&self) -> Option<u16> {
        let listeners =
            request("GET", self.admin_port, "/listeners?format=json", &[], b"").ok()?.json().ok()?;
        let port = &listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"];
        port.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// `https://…` when the listener speaks HTTPS (`EnvoyOptions::listener_tls`).
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.listen_port)
    }

    /// Changes the plugin configuration of the running Envoy (started with `lds`) the way
    /// an operator's config management does: the listener file is rewritten and renamed
    /// into place in one step, and Envoy's watch picks it up. Returns once Envoy has
    /// applied the update (at most 30 s).
    pub fn swap_plugin_config(&mut self, plugin_config: &str) -> Result<(), String> {
        let Some((template, vars)) = &mut self.swap else {
            return Err("Envoy was not started with lds".into());
        };
        vars.plugin_config = plugin_config.to_owned();
        vars.listen_port = self.listen_port;
        let listeners = lds_resources(&render_config(template, vars)?)?;
        let (applied, rejected) = (
            self.stat("listener_manager.lds.update_success")?,
            self.stat("listener_manager.lds.update_rejected")?,
        );
        let staged = self.dir.join("lds").join(".listeners.json.new");
        fs::write(&staged, listeners).map_err(|e| e.to_string())?;
        fs::rename(&staged, self.dir.join("lds").join(LDS_FILE)).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.stat("listener_manager.lds.update_rejected")? > rejected {
                return Err(format!("Envoy rejected the listener:\n{}", self.log_tail(20)));
            }
            // Applied, and the new listener warmed (its Wasm VMs configured): new
            // connections reach the new configuration.
            if self.stat("listener_manager.lds.update_success")? > applied
                && self.stat("listener_manager.total_listeners_warming")? == 0
            {
                return Ok(());
            }
            sleep(Duration::from_millis(50));
        }
        Err(format!("Envoy did not apply the listener swap in 30 s:\n{}", self.log_tail(20)))
    }

    /// A counter or gauge from the admin `/stats` (0 when Envoy does not show it yet).
    pub fn stat(&self, name: &str) -> Result<u64, String> {
        let prefix = format!("{name}: ");
        Ok(self.stats()?.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0))
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The Envoy process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's resident memory (VmRSS), in bytes.
    pub fn resident_bytes(&self) -> Result<u64, String> {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| "no VmRSS in /proc status".to_owned())
    }

    /// Envoy's admin `/stats`.
    pub fn stats(&self) -> Result<String, String> {
        request("GET", self.admin_port, "/stats", &[], b"").map(|r| r.text())
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(self) {}
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The listener file's name in the watched `lds/` folder.
const LDS_FILE: &str = "listeners.json";

/// The rendered configuration with its listeners moved into `dir/lds/listeners.json`, served
/// by filesystem LDS (the folder is watched, so a rename into it is picked up).
fn with_lds(config: &str, dir: &Path) -> Result<String, String> {
    let mut bootstrap: serde_json::Value = serde_yaml::from_str(config).map_err(|e| e.to_string())?;
    let lds_dir = dir.join("lds");
    fs::create_dir_all(&lds_dir).map_err(|e| e.to_string())?;
    fs::write(lds_dir.join(LDS_FILE), lds_resources(config)?).map_err(|e| e.to_string())?;
    if let Some(statics) = bootstrap["static_resources"].as_object_mut() {
        statics.remove("listeners");
    }
    // Dynamic resources need the node named.
    bootstrap["node"] = serde_json::json!({"id": "tokengate", "cluster": "tokengate"});
    bootstrap["dynamic_resources"] = serde_json::json!({
        "lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": lds_dir.join(LDS_FILE),
                "watched_directory": {"path": lds_dir},
            },
        },
    });
    // JSON is YAML: the file keeps its name.
    serde_json::to_string_pretty(&bootstrap).map_err(|e| e.to_string())
}

/// The configuration's listeners as an LDS discovery response.
fn lds_resources(config: &str) -> Result<String, String> {
    let bootstrap: serde_json::Value = serde_yaml::from_str(config).map_err(|e| e.to_string())?;
    let listeners = bootstrap["static_resources"]["listeners"].as_array().cloned().unwrap_or_default();
    let resources: Vec<serde_json::Value> = listeners
        .into_iter()
        .map(|mut l| {
            l["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener".into();
            l
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({"resources": resources})).map_err(|e| e.to_string())
}

/// The `transport_socket:` block at the end of the token listener's filter chain in
/// `envoy/tokengate.yaml` (six spaces in, no dash), removed: that listener then speaks
/// plain HTTP. A template without such a block (the fleet's and the production one open
/// their filter chain with `- transport_socket:`) comes back unchanged.
pub fn without_listener_tls(template: &str) -> String {
    const KEY: &str = "      transport_socket:";
    let mut out = String::with_capacity(template.len());
    let mut skipping = false;
    for line in template.split_inclusive('\n') {
        if skipping {
            let indent = line.len() - line.trim_start_matches(' ').len();
            if line.trim().is_empty() || indent > KEY.len() - "transport_socket:".len() {
                continue;
            }
            skipping = false;
        }
        if line.trim_end() == KEY {
            skipping = true;
            continue;
        }
        out.push_str(line);
    }
    out
}

/// `envoy --mode validate -c <config>`.
pub fn validate(config: &Path, envoy_binary: &Path) -> Result<(), String> {
    let out = Command::new(envoy_binary)
        .args(["--mode", "validate", "-c"])
        .arg(config)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", envoy_binary.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Where `cargo xtask compose-config` writes the Envoy configuration docker compose mounts.
pub const COMPOSE_CONFIG: &str = "envoy/compose/envoy.yaml";

/// The shipped template rendered for `docker-compose.yaml`: Envoy in its container binds
/// all addresses (compose publishes the ports on the host's loopback), the IdP is the
/// `mock-idp` service, the `.wasm` and plugin configuration are the demo's.
pub fn compose_config() -> Result<String, String> {
    let root = crate::workspace_root();
    let template = fs::read_to_string(root.join("envoy/tokengate.yaml")).map_err(|e| e.to_string())?;
    let plugin = fs::read_to_string(root.join("envoy/demo-plugin.json")).map_err(|e| e.to_string())?;
    let plugin: serde_json::Value = serde_json::from_str(&plugin).map_err(|e| e.to_string())?;
    let header = "# Generated by `cargo xtask compose-config` from envoy/tokengate.yaml and\n\
                  # envoy/demo-plugin.json: edit those, then regenerate (a test checks they agree).\n";
    let rendered = render_config(&template, &compose_vars(plugin.to_string()))?;
    Ok(format!("{header}{rendered}"))
}

/// The placeholders' values in a compose container: Envoy binds all addresses, listens on
/// 10000 (admin 9901), the IdP is the `mock-idp` service, the `.wasm` and the fleet's
/// certificates are in the image (the `Dockerfile`'s `envoy` and `envoy-fleet` stages).
pub fn compose_vars(plugin_config: String) -> Vars {
    Vars {
        bind_address: "0.0.0.0".into(),
        idp_host: "mock-idp".into(),
        admin_port: 9901,
        listen_port: 10000,
        idp_port: 9090,
        wasm_path: PathBuf::from("/etc/envoy/tokengate.wasm"),
        plugin_config,
        tls_dir: PathBuf::from("/etc/envoy/tls"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_drops_only_the_token_listeners_transport_socket() {
        let root = crate::workspace_root();
        let shipped = fs::read_to_string(root.join("envoy/tokengate.yaml")).unwrap();
        assert!(shipped.contains("DownstreamTlsContext"));
        let plain = without_listener_tls(&shipped);
        let settings = || plain.lines().filter(|l| !l.trim_start().starts_with('#'));
        assert!(!settings().any(|l| l.contains("transport_socket") || l.contains("{{TLS_DIR}}")), "{plain}");
        // Everything else is kept, the clusters after the block included.
        assert!(plain.contains("envoy.filters.http.router") && plain.contains("\n  clusters:\n"));
        assert!(plain.contains("port_value: {{IDP_PORT}}"));
        for other in ["envoy/fleet/gateway.yaml", "envoy/fleet/edge.yaml", "envoy/auth0-production.yaml"] {
            let text = fs::read_to_string(root.join(other)).unwrap();
            assert_eq!(without_listener_tls(&text), text, "{other}");
        }
    }

    #[test]
    fn renders_every_placeholder_and_quotes_the_plugin_config() {
        let vars = Vars {
            bind_address: "127.0.0.1".into(),
            idp_host: "idp".into(),
            admin_port: 1,
            listen_port: 2,
            idp_port: 3,
            wasm_path: PathBuf::from("/x/tokengate.wasm"),
            plugin_config: r#"{"a": "b\"c"}"#.into(),
            tls_dir: PathBuf::from("/t"),
        };
        let out = render_config(
            "{{BIND_ADDRESS}} {{IDP_HOST}} {{ADMIN_PORT}} {{LISTEN_PORT}} {{IDP_PORT}} {{WASM_PATH}} {{TLS_DIR}} value: {{PLUGIN_CONFIG}}",
            &vars,
        )
        .unwrap();
        assert_eq!(out, r#"127.0.0.1 idp 1 2 3 /x/tokengate.wasm /t value: "{\"a\": \"b\\\"c\"}""#);
        assert!(render_config("{{NOPE}}", &vars).is_err());
    }

    #[test]
    fn the_shipped_template_renders() {
        let template = fs::read_to_string(crate::workspace_root().join("envoy/tokengate.yaml")).unwrap();
        let vars = Vars {
            bind_address: "127.0.0.1".into(),
            idp_host: "idp".into(),
            admin_port: 0,
            listen_port: 0,
            idp_port: 9,
            wasm_path: "/w".into(),
            plugin_config: "{}".into(),
            tls_dir: "/t".into(),
        };
        assert!(render_config(&template, &vars).is_ok());
    }
}
