//! A bad plugin configuration refuses the plugin's start in real Envoy, with one log line
//! naming the field.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::*;
use testbed::{Envoy, EnvoyOptions};

fn refused_start(config: serde_json::Value) -> String {
    let options = EnvoyOptions::new(config.to_string(), 9);
    match Envoy::start(&options) {
        Ok(envoy) => panic!("Envoy started with a bad configuration:\n{}", envoy.log()),
        Err(log) => log,
    }
}

#[test]
fn unknown_field_refuses_the_start_naming_the_field() {
    let log = refused_start(plugin_config(json!({"cache": {"max_entries": 10, "ttl": "5s"}})));
    assert!(log.contains("configuration rejected: cache.ttl: unknown field `ttl`"), "{log}");
}

#[test]
fn bad_duration_refuses_the_start_naming_the_field() {
    let log = refused_start(plugin_config(
        json!({"upstream": {"cluster": "idp", "authority": "a", "timeout": "5"}}),
    ));
    assert!(log.contains("configuration rejected: upstream.timeout:"), "{log}");
}

#[test]
fn missing_required_field_refuses_the_start_naming_the_field() {
    let log = refused_start(json!({"token_paths": ["/oauth/token"], "upstream": {"cluster": "idp"}}));
    assert!(log.contains("configuration rejected: upstream: missing field `authority`"), "{log}");
}
