//! `Envoy::start` against the real Envoy binary, without the filter: port discovery (port 0
//! read back from the admin API), readiness, proxying a chunked answer, and the error of an
//! Envoy that refuses its configuration. Needs the binary `cargo xtask setup` installs; when
//! it is absent and `TOKENGATE_ENVOY` is unset, the tests say so and pass.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::thread;

use testbed::{Envoy, EnvoyOptions};

/// A plain Envoy: `/direct` answered by Envoy itself, everything else proxied to the IdP port.
const PLAIN: &str = r#"
admin:
  address:
    socket_address: { address: {{BIND_ADDRESS}}, port_value: {{ADMIN_PORT}} }
static_resources:
  listeners:
  - name: plain
    address:
      socket_address: { address: {{BIND_ADDRESS}}, port_value: {{LISTEN_PORT}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: plain
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { path: "/direct" }
                direct_response: { status: 200, body: { inline_string: "direct" } }
              - match: { prefix: "/" }
                route: { cluster: upstream }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: {{IDP_HOST}}, port_value: {{IDP_PORT}} }
"#;

fn envoy_available() -> bool {
    let binary = testbed::envoy_binary();
    if binary.exists() {
        return true;
    }
    assert!(
        std::env::var_os("TOKENGATE_ENVOY").is_none(),
        "TOKENGATE_ENVOY={} does not exist",
        binary.display()
    );
    eprintln!("skipped: no Envoy at {} (run `cargo xtask setup`)", binary.display());
    false
}

fn template(name: &str, text: &str) -> io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("testbed-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Answers one request per connection with a chunked body, then waits for the peer to close.
fn chunked_upstream() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let mut writer = &stream;
                let _ = writer.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                );
                let _ = (&stream).read_to_end(&mut Vec::new());
            });
        }
    });
    Ok(port)
}

#[test]
fn starts_on_free_ports_and_answers() {
    if !envoy_available() {
        return;
    }
    let mut options = EnvoyOptions::new("{}".into(), chunked_upstream().unwrap());
    options.template = template("plain", PLAIN).unwrap();
    options.concurrency = 1;
    let envoy = Envoy::start(&options).unwrap();
    let other = Envoy::start(&options).unwrap();
    std::fs::remove_file(&options.template).unwrap();
    assert_ne!(envoy.listen_port(), 0);
    assert_ne!(envoy.admin_port(), 0);
    assert_ne!(envoy.listen_port(), envoy.admin_port());
    assert_eq!(envoy.base_url(), format!("http://127.0.0.1:{}", envoy.listen_port()));

    let ready = testbed::get(envoy.admin_port(), "/ready").unwrap();
    assert_eq!((ready.status, ready.text().trim()), (200, "LIVE"));
    let direct = testbed::get(envoy.listen_port(), "/direct").unwrap();
    assert_eq!((direct.status, direct.text()), (200, "direct".to_owned()));
    let proxied = testbed::post_form(envoy.listen_port(), "/anything", "a=b", &[("x-extra", "1")]).unwrap();
    assert_eq!((proxied.status, proxied.text()), (200, "hello world".to_owned()));
    assert_eq!(proxied.header("transfer-encoding"), Some("chunked"));
    assert!(envoy.stats().unwrap().contains("http.plain.downstream_rq_total"));
    assert!(envoy.log().contains("starting main dispatch loop"), "{}", envoy.log());

    // Two at once: separate ports, separate base ids.
    assert_ne!(other.listen_port(), envoy.listen_port());
    let admin = envoy.admin_port();
    envoy.stop();
    assert!(testbed::get(admin, "/ready").is_err(), "Envoy still answers after stop()");
    assert_eq!(testbed::get(other.listen_port(), "/direct").unwrap().status, 200);
}

#[test]
fn a_refused_configuration_is_an_error_with_the_log() {
    if !envoy_available() {
        return;
    }
    let broken = PLAIN.replace("stat_prefix: plain", "stat_prefix: plain\n          no_such_field: 1");
    let mut options = EnvoyOptions::new("{}".into(), 9);
    options.template = template("broken", &broken).unwrap();
    let error = Envoy::start(&options).err().unwrap();
    std::fs::remove_file(&options.template).unwrap();
    assert!(error.contains("exited"), "{error}");
    assert!(error.contains("no_such_field"), "{error}");
}

#[test]
fn validate_accepts_and_refuses() {
    if !envoy_available() {
        return;
    }
    let vars = |port| testbed::Vars {
        bind_address: "127.0.0.1".into(),
        idp_host: "127.0.0.1".into(),
        admin_port: port,
        listen_port: port,
        idp_port: 9,
        wasm_path: "/none".into(),
        plugin_config: "{}".into(),
        tls_dir: "/none".into(),
    };
    let good = template("good", &testbed::render_config(PLAIN, &vars(0)).unwrap()).unwrap();
    testbed::validate(&good, &testbed::envoy_binary()).unwrap();
    let bad = template("bad", &testbed::render_config(&PLAIN.replace("STATIC", "NOPE"), &vars(0)).unwrap())
        .unwrap();
    assert!(testbed::validate(&bad, &testbed::envoy_binary()).is_err());
    for path in [good, bad] {
        std::fs::remove_file(path).unwrap();
    }
}
