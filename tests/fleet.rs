//! A fleet (envoy/fleet/): 3 edge Envoys and 2 gateway Envoys, all running tokengate, the
//! edges sending misses to the gateways through a consistent-hash route on the cache key.
//! Each key is fetched from the IdP once for the whole fleet, and losing a gateway moves
//! its keys to the other at the cost of one IdP call per moved key. The IdP sees the
//! address of the client that called the edge, never a forged one nor an edge's own.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mock_idp::{Client, Config, MockIdp};
use testbed::{BURST_KEYS as KEYS, Envoy, FLEET_CLIENT, FLEET_SECRET, Fleet, FleetOptions};

fn idp() -> MockIdp {
    MockIdp::start(Config {
        clients: vec![Client { id: FLEET_CLIENT.into(), secret: FLEET_SECRET.into() }],
        expires_in: 3600,
    })
    .unwrap()
}

/// Sends every (port, key) request at once; each key's access tokens. Every answer is a 200.
fn all_at_once(requests: &[(u16, usize)]) -> HashMap<usize, Vec<String>> {
    let mut tokens: HashMap<usize, Vec<String>> = HashMap::new();
    for (key, answer) in testbed::all_at_once(requests) {
        let r = answer.unwrap();
        assert_eq!(r.status, 200, "key {key}: {}", r.text());
        tokens.entry(key).or_default().push(r.json().unwrap()["access_token"].as_str().unwrap().to_owned());
    }
    tokens
}

/// 96 cold requests for 8 keys, spread over the edges (each key on every edge).
fn cold_burst(edges: &[Envoy]) -> HashMap<usize, Vec<String>> {
    let ports: Vec<u16> = edges.iter().map(Envoy::listen_port).collect();
    all_at_once(&testbed::cold_burst(&ports))
}

fn idp_calls_of(envoy: &Envoy) -> u64 {
    envoy
        .stats()
        .unwrap()
        .lines()
        // Envoy names proxy-wasm stats `wasmcustom.<name>` (Prometheus drops the prefix).
        .find_map(|l| l.strip_prefix("wasmcustom.tokengate_idp_calls_total: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_fleet_fetches_each_key_once_and_a_lost_gateway_costs_one_call_per_moved_key() {
    let idp = idp();
    let mut fleet =
        Fleet::start(FleetOptions { idp_port: idp.port(), edges: 3, tiered: true, concurrency: 2 }).unwrap();

    let tokens = cold_burst(&fleet.edges);
    let per_gateway: Vec<u64> = fleet.gateways.iter().flatten().map(idp_calls_of).collect();
    assert_eq!(
        idp.token_calls(),
        KEYS as u64,
        "IdP calls for {KEYS} keys over 3 edges + 2 gateways (per gateway {per_gateway:?})"
    );
    let first: HashMap<usize, String> = tokens
        .iter()
        .map(|(key, list)| {
            assert!(list.iter().all(|t| *t == list[0]), "key {key} got different tokens: {list:?}");
            (*key, list[0].clone())
        })
        .collect();
    assert_eq!(first.values().collect::<HashSet<_>>().len(), KEYS, "one distinct token per key");
    let per_gateway: Vec<u64> = fleet.gateways.iter().flatten().map(idp_calls_of).collect();
    assert_eq!(
        per_gateway.iter().sum::<u64>(),
        KEYS as u64,
        "every IdP call came from a gateway: {per_gateway:?}"
    );
    eprintln!(
        "3 edges + 2 gateways: {} IdP calls for {KEYS} keys (per gateway {per_gateway:?})",
        idp.token_calls()
    );

    // Lose the gateway that holds more keys while a new edge (cold cache) asks for every key.
    // A request the lost gateway had not answered is retried on the other gateway.
    let victim = if per_gateway[0] >= per_gateway[1] { 0 } else { 1 };
    let moved = per_gateway[victim];
    let fresh = fleet.add_edge().unwrap().listen_port();
    let requests: Vec<(u16, usize)> = (0..3 * KEYS).map(|i| (fresh, i % KEYS)).collect();
    let load = thread::spawn(move || all_at_once(&requests));
    thread::sleep(std::time::Duration::from_millis(5));
    fleet.kill_gateway(victim);
    let after = load.join().unwrap();
    let changed: Vec<usize> = (0..KEYS).filter(|k| after[k].iter().any(|t| *t != first[k])).collect();
    for key in 0..KEYS {
        assert!(after[&key].iter().all(|t| *t == after[&key][0]), "key {key}: {:?}", after[&key]);
    }
    let extra = idp.token_calls() - KEYS as u64;
    eprintln!(
        "gateway {victim} lost mid-run ({moved} keys): {extra} extra IdP calls, keys re-fetched {changed:?}"
    );
    assert!(extra <= moved, "at most one IdP call per moved key: {extra} for {moved}");
    assert_eq!(extra, changed.len() as u64, "one IdP call per key fetched again");

    // Every key the lost gateway held is now on the other: a new edge gets them without
    // the IdP, except keys the first new edge had still fetched from the lost gateway.
    let probe = fleet.add_edge().unwrap().listen_port();
    let moved_now = all_at_once(&(0..KEYS).map(|k| (probe, k)).collect::<Vec<_>>());
    let total = idp.token_calls() - KEYS as u64;
    eprintln!("after the loss, every key from the surviving gateway: {total} extra IdP calls in all");
    assert_eq!(total, moved, "each moved key fetched once in all");

    // Once the health check has taken the gateway out, the keys stay where they moved.
    thread::sleep(std::time::Duration::from_millis(3000));
    let later = fleet.add_edge().unwrap().listen_port();
    let again = all_at_once(&(0..KEYS).map(|k| (later, k)).collect::<Vec<_>>());
    assert_eq!(idp.token_calls(), KEYS as u64 + moved, "no more IdP calls after the move");
    for key in 0..KEYS {
        assert_eq!(again[&key][0], moved_now[&key][0], "key {key} moved again");
    }

    // That edge got the gateway's token with the lifetime it has left (fetched at least 3 s
    // ago), not a fresh one: edge and gateway copies expire together.
    let r = testbed::post_form(later, "/oauth/token", &testbed::key_body(0), &[]).unwrap();
    let expires_in = r.json().unwrap()["expires_in"].as_u64().unwrap();
    assert!((1..=3597).contains(&expires_in), "expires_in {expires_in} of a 3600 s token fetched 3 s ago");
}

#[test]
fn without_the_gateway_tier_every_edge_fetches_every_key() {
    let idp = idp();
    let fleet =
        Fleet::start(FleetOptions { idp_port: idp.port(), edges: 3, tiered: false, concurrency: 2 }).unwrap();
    let tokens = cold_burst(&fleet.edges);
    assert!(tokens.values().all(|list| list.len() == testbed::BURST_REQUESTS / KEYS));
    eprintln!("3 edges, no gateway tier: {} IdP calls for {KEYS} keys", idp.token_calls());
    // Each edge coalesces its own requests for a key, and no more.
    assert_eq!(idp.token_calls(), 3 * KEYS as u64);
}

/// CPU-bound loops competing with the fleet, as other pods on a busy node do; they stop
/// when dropped, and after a minute whatever happens.
struct BusyHost(Arc<AtomicBool>, Vec<thread::JoinHandle<()>>);

impl BusyHost {
    fn start(loops: usize) -> BusyHost {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..loops)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(60);
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        for i in 0..100_000u64 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                    }
                })
            })
            .collect();
        BusyHost(stop, handles)
    }
}

impl Drop for BusyHost {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for handle in self.1.drain(..) {
            let _ = handle.join();
        }
    }
}

/// On a host busier than its cores (eight CPU-bound loops on two cores, Envoys starting),
/// a fleet answers every cold request with the key's one token: health checks that time
/// out under load must not leave an edge with no gateway to send misses to (with a panic
/// threshold of 0 this answered 503, the IdP healthy, in 2 runs of 3).
#[test]
fn a_fleet_on_a_busy_host_answers_every_cold_request() {
    let idp = idp();
    let busy = BusyHost::start(8);
    let fleet =
        Fleet::start(FleetOptions { idp_port: idp.port(), edges: 3, tiered: true, concurrency: 2 }).unwrap();
    let tokens = cold_burst(&fleet.edges);
    drop(busy);
    for (key, list) in &tokens {
        assert!(list.iter().all(|t| *t == list[0]), "key {key} got different tokens: {list:?}");
    }
    assert_eq!(idp.token_calls(), KEYS as u64, "one IdP call per key on a busy host too");
}

/// A token request to an edge (plain HTTP on loopback) with curl from the loopback address
/// `source`, with these request headers: the status, the response headers and body.
fn curl_from(source: &str, port: u16, form: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "30", "--interface", source]);
    for header in headers {
        cmd.args(["-H", header]);
    }
    cmd.args(["-X", "POST", "-H", "content-type: application/x-www-form-urlencoded", "--data-raw", form]);
    let out = cmd.arg(format!("http://127.0.0.1:{port}/oauth/token")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn header_of<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Calls edge `port` from `client` with a forged `auth0-forwarded-for` and
/// `x-forwarded-for` twice: a cacheable miss for key (audience) `key` (the edge's keyed
/// call, then the gateway's) and a client assertion (never cached: it goes on through the
/// routes of edge and gateway). Per IdP request, in that order: its `auth0-forwarded-for`,
/// `x-forwarded-for` and `x-envoy-external-address` values. No other header carries the
/// forged address.
fn addresses_at_the_idp(idp: &MockIdp, port: u16, client: &str, key: usize) -> Vec<[Vec<String>; 3]> {
    const FORGED: [&str; 2] = ["auth0-forwarded-for: 6.6.6.6", "x-forwarded-for: 6.6.6.6"];
    idp.reset_counts();
    let (status, miss) = curl_from(client, port, &testbed::key_body(key), &FORGED);
    assert_eq!((status, header_of(&miss, "x-tokengate-cache")), (200, Some("miss")), "{miss}");
    let assertion = format!(
        "grant_type=client_credentials&client_id={FLEET_CLIENT}&audience=https://api-{key}&\
         client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=a.b.c"
    );
    let (status, passed) = curl_from(client, port, &assertion, &FORGED);
    assert_eq!((status, header_of(&passed, "x-tokengate-cache")), (200, Some("bypass")), "{passed}");

    let requests = idp.requests();
    let bodies: Vec<String> =
        requests.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert_eq!(requests.len(), 2, "{bodies:?}");
    assert!(
        !bodies[0].contains("client_assertion") && bodies[1].contains("client_assertion=a.b.c"),
        "{bodies:?}"
    );
    for (request, body) in requests.iter().zip(&bodies) {
        let headers = &request.headers;
        assert!(
            !headers.iter().any(|(n, v)| n != "x-forwarded-for" && v.contains("6.6.6.6")),
            "{body}: a forged address: {headers:?}"
        );
    }
    requests
        .iter()
        .map(|request| {
            ["auth0-forwarded-for", "x-forwarded-for", "x-envoy-external-address"].map(|name| {
                request.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
            })
        })
        .collect()
}

/// What [`addresses_at_the_idp`] should find for a client at `client`: its address alone in
/// `auth0-forwarded-for`; in `x-forwarded-for` the address alone on tokengate's call, and on
/// the forwarded request what the client sent with the edge's entry, the client's address,
/// last (no gateway appends the edge's).
fn the_clients(client: &str) -> Vec<[Vec<String>; 3]> {
    let one = || vec![client.to_owned()];
    vec![[one(), one(), vec![]], [one(), vec![format!("6.6.6.6,{client}")], one()]]
}

/// SPEC "Edge": every IdP call carries the address of the client (no port) in
/// `auth0-forwarded-for`; in a fleet the gateway passes on what its edges sent, and an
/// edge's own address never reaches the IdP. The edge determines the address
/// (`use_remote_address`: the peer, whatever `x-forwarded-for` the client sent) and hands it
/// to the gateway as the last `x-forwarded-for` entry, which the gateway trusts for one hop.
#[test]
fn the_idp_sees_the_address_of_the_client_that_called_the_edge() {
    let idp = idp();
    let fleet =
        Fleet::start(FleetOptions { idp_port: idp.port(), edges: 1, tiered: true, concurrency: 1 }).unwrap();
    let port = fleet.edges[0].listen_port();
    // The edges connect to the gateways from 127.0.0.1: a client elsewhere (127.0.0.7) is
    // told apart from the edge.
    assert_eq!(
        addresses_at_the_idp(&idp, port, "127.0.0.7", 0),
        the_clients("127.0.0.7"),
        "auth0-forwarded-for, x-forwarded-for, x-envoy-external-address of the keyed call and of \
         the client assertion"
    );
    // A client on the edge's host, at 127.0.0.1 (a sidecar's application): Envoy's own
    // x-forwarded-for append would write the host's address for it, and the gateway would
    // send the IdP that on forwarded requests.
    assert_eq!(
        addresses_at_the_idp(&idp, port, "127.0.0.1", 1),
        the_clients("127.0.0.1"),
        "auth0-forwarded-for, x-forwarded-for, x-envoy-external-address of the keyed call and of \
         the client assertion from 127.0.0.1"
    );
    // Clients of the edge get neither the usage report (it names the clients) nor the purge
    // (it would make a client's next requests misses, each a billed token).
    let report = testbed::request("GET", port, "/tokengate/usage", &[], b"").unwrap();
    assert_eq!(report.status, 404, "{}", report.text());
    let purge = testbed::request(
        "POST",
        port,
        "/tokengate/usage/purge",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"client_id=c1",
    )
    .unwrap();
    assert_eq!(purge.status, 404, "{}", purge.text());
}
