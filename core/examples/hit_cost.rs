//! What sealing costs a cache hit: `cargo run --release -p tokengate-core --example hit_cost`.
//! Prints nanoseconds per operation (native code; Envoy runs the same code as Wasm in V8,
//! typically 1.5-3x slower) for the pieces of a hit and for a whole hit through the gate.

use std::hint::black_box;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokengate_core::cache::CacheEntry;
use tokengate_core::config::Config;
use tokengate_core::fingerprint::Identity;
use tokengate_core::gate::{Gate, Outcome};
use tokengate_core::host::fake::FakeHost;
use tokengate_core::request::{RequestHead, TokenRequest};

const ROUNDS: u32 = 200_000;

fn time(name: &str, mut f: impl FnMut()) -> f64 {
    for _ in 0..ROUNDS / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
    println!("{name:<46} {ns:>8.0} ns");
    ns
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_json(br#"{"upstream": {"cluster": "idp", "authority": "t.example"}}"#)?;
    let head = RequestHead {
        content_type: Some("application/x-www-form-urlencoded".into()),
        authorization: None,
        dpop: None,
        ..Default::default()
    };
    let body = b"grant_type=client_credentials&client_id=my-client&client_secret=my-secret-value&audience=https%3A%2F%2Fapi.example.com";
    let request = TokenRequest::parse(&head, body).map_err(|e| e.description)?;
    let identity = Identity::of(&request, &config.upstream);
    let token = format!(
        r#"{{"access_token":"{}","token_type":"Bearer","expires_in":86400,"scope":"read:things"}}"#,
        "x".repeat(800)
    );
    let entry = CacheEntry::from_token_response(&identity, 200, token.as_bytes(), 0, None, [7; 12])
        .ok_or("token not cacheable")?;

    println!("cost per operation ({ROUNDS} rounds, {}-byte token response)", token.len());
    time("parse the form body", || {
        black_box(TokenRequest::parse(&head, black_box(body)).ok());
    });
    let sha = time("cache key as one SHA-256 (before sealing)", || {
        let mut h = Sha256::new();
        h.update(black_box(body));
        black_box(h.finalize());
    });
    let hkdf = time("cache key + seal key by HKDF-SHA256", || {
        black_box(Identity::of(black_box(&request), &config.upstream));
    });
    let open = time("open (ChaCha20-Poly1305) + render the token", || {
        black_box(entry.render(&identity.seal_key, 1_000));
    });
    let host = FakeHost::new(1_000);
    let gate = Gate::new(&config, &host, "tokengate");
    let plan = gate.handle(&head, body);
    if let (Outcome::Wait(_), Some(call)) = (&plan.outcome, &plan.call) {
        let reply =
            tokengate_core::HttpReply { status: 200, headers: vec![], body: token.clone().into_bytes() };
        gate.finish_call(call, Some(&reply));
    }
    time("whole hit through the gate (fake host)", || {
        black_box(gate.handle(&head, black_box(body)));
    });
    let index = std::cell::RefCell::new(tokengate_core::cache::LocalIndex::new(16));
    let pending = std::cell::RefCell::new(tokengate_core::hit_tally::PendingHits::new(16));
    let indexed = Gate::new(&config, &host, "tokengate").with_local_index(&index).with_pending_hits(&pending);
    black_box(indexed.handle(&head, body));
    time("request digest (2 x SipHash-1-3, keyed)", || {
        black_box(index.borrow().digest(&head, black_box(body)));
    });
    time("repeated hit from the worker's index (fake host)", || {
        black_box(indexed.handle(&head, black_box(body)));
    });
    let limited_config = Config::from_json(
        br#"{"upstream": {"cluster": "idp", "authority": "t.example"},
             "rate_limit": {"default": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"}},
             "quota": {"default": {"tokens": 1000000000, "window": "1d"}}}"#,
    )?;
    let limited_host = FakeHost::new(1_000);
    let limited_index = std::cell::RefCell::new(tokengate_core::cache::LocalIndex::new(16));
    let limited_pending = std::cell::RefCell::new(tokengate_core::hit_tally::PendingHits::new(16));
    let limited = Gate::new(&limited_config, &limited_host, "tokengate")
        .with_local_index(&limited_index)
        .with_pending_hits(&limited_pending);
    let plan = limited.handle(&head, body);
    if let (Outcome::Wait(_), Some(call)) = (&plan.outcome, &plan.call) {
        let reply =
            tokengate_core::HttpReply { status: 200, headers: vec![], body: token.clone().into_bytes() };
        limited.finish_call(call, Some(&reply));
    }
    black_box(limited.handle(&head, body));
    let mut served = 0u32;
    time("same, with rate limit + quota (leased; a flush every 64)", || {
        black_box(limited.handle(&head, black_box(body)));
        served += 1;
        if served.is_multiple_of(64) {
            limited.flush_hits();
        }
    });
    println!(
        "sealing adds about {:.0} ns per hit (key derivation {:.0} ns + open {:.0} ns)",
        hkdf - sha + open,
        hkdf - sha,
        open
    );
    Ok(())
}
