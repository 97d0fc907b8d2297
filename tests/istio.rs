//! The Istio manifests under `deploy/istio/`: valid against Istio's own CRD schemas (and the
//! Gateway API's), through their published models (`testbed::KUBERNETES_MODELS`, installed by
//! `cargo xtask test`); and the rules the schemas do not hold, such as where a WasmPlugin
//! attaches.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};
use testbed::workspace_root;
use tokengate_core::Config;

fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&workspace_root().join("deploy/istio"), &mut found);
    found.sort();
    found
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect()
}

fn name_of(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap().display().to_string()
}

/// Runs the published models' validation over `docs`: Ok(report) or Err(report).
fn validate_with_models(docs: &[(String, Value)]) -> Result<String, String> {
    let models = testbed::kubernetes_models_dir();
    assert!(
        testbed::KUBERNETES_MODELS
            .iter()
            .all(|(package, _)| models.join("node_modules").join(package).exists()),
        "Istio's models are missing: `cargo xtask test` installs them"
    );
    let script = workspace_root().join("tests/support/validate-k8s.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&models)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: Vec<Value> = docs.iter().map(|(file, doc)| json!({"file": file, "doc": doc})).collect();
    child.stdin.take().unwrap().write_all(serde_json::to_string(&input).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(report) } else { Err(report) }
}

fn all_documents() -> Vec<(String, Value)> {
    manifests()
        .iter()
        .flat_map(|path| documents(path).into_iter().map(move |doc| (name_of(path), doc)))
        .collect()
}

#[test]
fn every_istio_manifest_is_valid_against_istios_crd_schemas() {
    let docs = all_documents();
    assert!(docs.len() >= 9, "{} documents", docs.len());
    let report = validate_with_models(&docs).unwrap_or_else(|report| panic!("refused:\n{report}"));
    assert_eq!(report.lines().filter(|l| l.ends_with(" valid")).count(), docs.len(), "{report}");
}

#[test]
fn the_schema_check_refuses_what_istio_would_refuse() {
    let mut plugin = documents(&workspace_root().join("deploy/istio/wasmplugin.yaml")).remove(0);
    plugin["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    let report = validate_with_models(&[("edited".into(), plugin)]).unwrap_err();
    assert!(report.contains("failStrategy"), "{report}");
}

/// What keeps a WasmPlugin from attaching, or from being deployable as shipped, that the
/// schema allows: on a gateway, Istio matches only CLIENT traffic, so `mode: SERVER` never
/// attaches; the image must be pinned by digest, pulled with a secret, with a chosen
/// failure strategy.
fn attach_problems(plugin: &Value) -> Vec<String> {
    let spec = &plugin["spec"];
    let mut problems = Vec::new();
    let on_gateway = spec["selector"]["matchLabels"]["istio"] == "ingressgateway"
        || spec["targetRefs"].as_array().is_some_and(|refs| refs.iter().any(|r| r["kind"] == "Gateway"));
    if !on_gateway {
        problems.push("selects no gateway".to_owned());
    }
    let modes: Vec<&str> = spec["match"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["mode"].as_str()).collect())
        .unwrap_or_default();
    if on_gateway && !modes.is_empty() && !modes.iter().any(|m| matches!(*m, "CLIENT" | "CLIENT_AND_SERVER"))
    {
        problems.push(format!("match modes {modes:?} never attach on a gateway (its traffic is CLIENT)"));
    }
    if !spec["url"].as_str().is_some_and(|u| u.starts_with("oci://")) {
        problems.push("url is not an OCI image".to_owned());
    }
    let pinned =
        spec["sha256"].as_str().is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
    if !pinned {
        problems.push("no sha256 digest pin".to_owned());
    }
    if spec["imagePullSecret"].as_str().is_none() {
        problems.push("no imagePullSecret".to_owned());
    }
    if spec["failStrategy"] != "FAIL_CLOSE" {
        problems.push(format!(
            "failStrategy {} (token requests would reach the IdP uncounted)",
            spec["failStrategy"]
        ));
    }
    if spec["phase"] != "AUTHN" {
        problems.push(format!("phase {}", spec["phase"]));
    }
    problems
}

fn plugins() -> Vec<(String, Value)> {
    all_documents().into_iter().filter(|(_, doc)| doc["kind"] == "WasmPlugin").collect()
}

#[test]
fn every_wasm_plugin_attaches_to_its_gateway_pinned_and_failing_closed() {
    let plugins = plugins();
    assert_eq!(plugins.len(), 2, "the selector one and the Gateway API (targetRefs) one");
    assert!(plugins.iter().any(|(_, p)| p["spec"]["targetRefs"].is_array()));
    for (file, plugin) in &plugins {
        let problems = attach_problems(plugin);
        assert!(problems.is_empty(), "{file}: {problems:?}");
        let plugin_config = serde_json::to_string(&plugin["spec"]["pluginConfig"]).unwrap();
        Config::from_json(plugin_config.as_bytes())
            .unwrap_or_else(|e| panic!("{file}: pluginConfig refused: {e}"));
    }
}

#[test]
fn a_server_mode_match_on_a_gateway_is_caught() {
    let (_, mut plugin) = plugins().remove(0);
    plugin["spec"]["match"] = json!([{"mode": "SERVER"}]);
    let problems = attach_problems(&plugin);
    assert!(problems.iter().any(|p| p.contains("never attach")), "{problems:?}");
    plugin["spec"]["match"] = json!([{"mode": "CLIENT"}]);
    assert!(attach_problems(&plugin).is_empty());
}

#[test]
fn every_gateway_listens_with_tls_only() {
    let gateways: Vec<(String, Value)> =
        all_documents().into_iter().filter(|(_, doc)| doc["kind"] == "Gateway").collect();
    assert_eq!(gateways.len(), 2, "Istio's Gateway and the Gateway API's");
    for (file, gateway) in gateways {
        let spec = &gateway["spec"];
        if let Some(servers) = spec["servers"].as_array() {
            for server in servers {
                assert_eq!(server["port"]["protocol"], "HTTPS", "{file}");
                assert_eq!(server["tls"]["mode"], "SIMPLE", "{file}");
                assert!(server["tls"]["credentialName"].is_string(), "{file}");
            }
        }
        if let Some(listeners) = spec["listeners"].as_array() {
            for listener in listeners {
                assert_eq!(listener["protocol"], "HTTPS", "{file}");
                assert_eq!(listener["tls"]["mode"], "Terminate", "{file}");
                assert!(listener["tls"]["certificateRefs"][0]["name"].is_string(), "{file}");
            }
        }
    }
}
