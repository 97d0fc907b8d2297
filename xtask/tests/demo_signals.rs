//! `cargo xtask demo` stops everything it started when its terminal closes (SIGHUP), when
//! it is killed (SIGTERM) or on Ctrl-C (SIGINT): the next demo can bind its ports again.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the demo, reads its Envoy's ports off its output, sends `signal`, and checks
/// that the demo exits and nothing listens on those ports any more.
fn demo_stops_on(signal: &str) {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_xtask"))
        // Any free ports: another demo on this machine may hold 10000 and 9901.
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .current_dir(testbed::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ports = Vec::new();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // "mock IdP on 127.0.0.1:P1, Envoy on https://127.0.0.1:P2 (admin http://127.0.0.1:P3)"
        if line.starts_with("mock IdP on ") {
            ports = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u16>().ok())
                .filter(|p| *p > 1024)
                .collect();
        }
        if line.starts_with("Envoy keeps running") {
            break;
        }
    }
    assert_eq!(ports.len(), 3, "mock IdP, Envoy and admin ports: {ports:?}");
    // Keep draining the output so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    for port in &ports {
        assert!(TcpStream::connect(("127.0.0.1", *port)).is_ok(), "{port} not listening before {signal}");
    }
    let status = Command::new("kill").args([&format!("-{signal}"), &demo.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if demo.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not exit on {signal}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for port in &ports {
        let closed = (0..50).any(|_| {
            let refused = TcpStream::connect(("127.0.0.1", *port)).is_err();
            if !refused {
                std::thread::sleep(Duration::from_millis(100));
            }
            refused
        });
        assert!(closed, "port {port} still listening after {signal}: something outlived the demo");
    }
}

/// One test for the three signals, one demo after another: each writes target/demo/.
#[test]
fn the_demo_stops_envoy_and_the_mock_idp_on_sighup_sigterm_and_sigint() {
    for signal in ["HUP", "TERM", "INT"] {
        demo_stops_on(signal);
    }
}
