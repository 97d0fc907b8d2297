//! The Istio manifests under `deploy/istio/`, read as Kubernetes reads YAML (YAML 1.1, see
//! `read_as_kubernetes`): valid against Istio's own CRD schemas (and the Gateway API's and
//! Kubernetes' own, a gateway's Deployment and Service patches included),
//! through their published models (`testbed::KUBERNETES_PACKAGES`, installed by `cargo xtask
//! test`); and the rules the schemas do not hold, such as where a WasmPlugin attaches.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

fn name_of(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap().display().to_string()
}

/// Runs `tests/support/<script>` with the pinned npm packages, `input` as JSON on stdin:
/// Ok(stdout) or Err(stdout and stderr).
fn node(script: &str, input: &Value) -> Result<String, String> {
    let packages = testbed::kubernetes_models_dir();
    assert!(
        testbed::KUBERNETES_PACKAGES
            .iter()
            .all(|(package, _)| packages.join("node_modules").join(package).exists()),
        "Istio's models or the YAML reader are missing: `cargo xtask test` installs them"
    );
    let mut child = Command::new("node")
        .arg(workspace_root().join("tests/support").join(script))
        .arg(&packages)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The documents of each (name, YAML text), as Kubernetes reads them: kubectl and the API
/// server read YAML 1.1 (go-yaml v2), where an unquoted `000…0` is the integer 0 and `on`
/// is `true`; serde_yaml would have read strings. Read by a YAML 1.1 implementation
/// (`tests/support/k8s-yaml.mjs`), so every check here sees what Kubernetes would.
fn read_as_kubernetes(texts: &[(String, String)]) -> Vec<(String, Value)> {
    let input: Vec<Value> = texts.iter().map(|(file, text)| json!({"file": file, "text": text})).collect();
    let out =
        node("k8s-yaml.mjs", &json!(input)).unwrap_or_else(|report| panic!("unreadable YAML:\n{report}"));
    let docs: Vec<Value> = serde_json::from_str(&out).unwrap();
    docs.into_iter().map(|d| (d["file"].as_str().unwrap().to_owned(), d["doc"].clone())).collect()
}

fn read_files(paths: &[PathBuf]) -> Vec<(String, Value)> {
    let texts: Vec<(String, String)> =
        paths.iter().map(|path| (name_of(path), std::fs::read_to_string(path).unwrap())).collect();
    read_as_kubernetes(&texts)
}

fn documents(path: &str) -> Vec<Value> {
    read_files(&[workspace_root().join(path)]).into_iter().map(|(_, doc)| doc).collect()
}

/// Runs the published models' validation over `docs`: Ok(report) or Err(report).
fn validate_with_models(docs: &[(String, Value)]) -> Result<String, String> {
    let input: Vec<Value> = docs.iter().map(|(file, doc)| json!({"file": file, "doc": doc})).collect();
    node("validate-k8s.mjs", &json!(input))
}

fn all_documents() -> Vec<(String, Value)> {
    read_files(&manifests())
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
    let mut plugin = documents("deploy/istio/wasmplugin.yaml").remove(0);
    plugin["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    let report = validate_with_models(&[("edited".into(), plugin)]).unwrap_err();
    assert!(report.contains("failStrategy"), "{report}");
    // A gateway's Deployment patch is checked as a Deployment: a Secret reference without
    // its key is refused.
    let mut options = of_kind(&documents(CUSTOM_DOMAIN_GATEWAY), "ConfigMap");
    let patch = options["data"]["deployment"].as_str().unwrap().replace("key: cname-api-key", "");
    options["data"]["deployment"] = json!(patch);
    let report = validate_with_models(&[("edited".into(), options)]).unwrap_err();
    assert!(report.contains("data.deployment") && report.contains("key"), "{report}");
}

#[test]
fn yaml_is_read_as_kubernetes_reads_it() {
    let text = "zeros: 0000\noctal: 0777\nquoted: \"0777\"\nswitch: on\nanswer: yes\nshort: n\n\
                float: 1e3\non: key\ndate: 2001-12-14\nbase60: 1:20\n";
    let (_, doc) = read_as_kubernetes(&[("probe".into(), text.into())]).remove(0);
    // YAML 1.1 as go-yaml v2 reads it: the key `on` is `true`, written "true" in JSON; dates
    // and base-60 numbers stay strings.
    let expected = json!({
        "zeros": 0, "octal": 511, "quoted": "0777", "switch": true, "answer": true, "short": false,
        "float": 1000, "true": "key", "date": "2001-12-14", "base60": "1:20"
    });
    assert_eq!(doc, expected);
}

#[test]
fn an_unquoted_all_zero_sha256_is_an_integer_the_schema_refuses() {
    let path = workspace_root().join("deploy/istio/wasmplugin.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let zeros = "0".repeat(64);
    let quoted = format!("sha256: \"{zeros}\"");
    assert!(text.contains(&quoted), "{} pins no quoted all-zero placeholder", name_of(&path));
    let unquoted = text.replace(&quoted, &format!("sha256: {zeros}"));
    let (_, plugin) = read_as_kubernetes(&[("unquoted".into(), unquoted)]).remove(0);
    assert_eq!(plugin["spec"]["sha256"], json!(0));
    let report = validate_with_models(&[("unquoted".into(), plugin.clone())]).unwrap_err();
    assert!(report.contains("sha256"), "{report}");
    assert!(attach_problems(&plugin).contains(&"no sha256 digest pin".to_owned()));
}

/// What users replace with their own: the image, its digest, the tenant's host, the custom
/// domain and its origin, and the Secrets' names. Quoted, so that what replaces them stays a
/// string however it is spelled (Kubernetes reads YAML 1.1, where a digest of digits only is
/// a number).
const PLACEHOLDERS: [&str; 9] = [
    "registry.example.com",
    "0000000000000000",
    "your-tenant.auth0.com",
    "tokengate-registry",
    "auth0-gateway-cert",
    "login.example.com",
    "edge.tenants.us.auth0.com",
    "auth0-custom-domain-cert",
    "auth0-cname-api-key",
];

#[test]
fn every_placeholder_is_quoted() {
    let mut found = 0;
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let item = line.trim_start().trim_start_matches("- ");
            if item.starts_with('#') || !PLACEHOLDERS.iter().any(|p| item.contains(p)) {
                continue;
            }
            found += 1;
            let value = item.split_once(": ").map_or(item, |(_, value)| value);
            assert!(value.starts_with('"'), "{}:{}: unquoted placeholder: {line}", name_of(&path), n + 1);
        }
    }
    assert!(found >= 35, "{found} placeholders");
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
    assert_eq!(plugins.len(), 3, "the selector one and the Gateway API (targetRefs) ones");
    assert!(plugins.iter().any(|(_, p)| p["spec"]["targetRefs"].is_array()));
    for (file, plugin) in &plugins {
        let problems = attach_problems(plugin);
        assert!(problems.is_empty(), "{file}: {problems:?}");
        let plugin_config = serde_json::to_string(&plugin["spec"]["pluginConfig"]).unwrap();
        // The VM sees the variables `vmConfig.env` names, and only those: every variable
        // `upstream.env_headers` reads must be listed there.
        let declared: Vec<String> = plugin["spec"]["vmConfig"]["env"]
            .as_array()
            .map(|env| env.iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let env = |name: &str| declared.iter().any(|d| d == name).then(|| "value-from-a-secret".to_owned());
        Config::from_json_with_env(plugin_config.as_bytes(), &env)
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
    assert_eq!(gateways.len(), 3, "Istio's Gateway and the Gateway API's");
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

fn of_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_istio_manifests_fit_together_and_tokengate_accepts_the_plugin_config() {
    let docs: Vec<Value> = [
        "deploy/istio/wasmplugin.yaml",
        "deploy/istio/envoyfilter-buffer.yaml",
        "deploy/istio/auth0-egress.yaml",
        "deploy/istio/gateway-routes.yaml",
    ]
    .iter()
    .flat_map(|p| documents(p))
    .collect();
    let plugin = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugin["spec"]["phase"], "AUTHN");
    let plugin_config = serde_json::to_string(&plugin["spec"]["pluginConfig"]).unwrap();
    let config =
        Config::from_json(plugin_config.as_bytes()).unwrap_or_else(|e| panic!("pluginConfig refused: {e}"));

    let entry = of_kind(&docs, "ServiceEntry");
    let host = entry["spec"]["hosts"][0].as_str().unwrap();
    assert_eq!(config.upstream.cluster, format!("outbound|443||{host}"));
    assert_eq!(config.upstream.authority, host);
    assert_eq!(of_kind(&docs, "DestinationRule")["spec"]["host"].as_str(), Some(host));
    assert_eq!(
        of_kind(&docs, "DestinationRule")["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"],
        "SIMPLE"
    );

    let patches = of_kind(&docs, "EnvoyFilter")["spec"]["configPatches"].clone();
    let route_name = buffered_route(patches.as_array().unwrap());

    // The route the buffer is switched on for is the token route.
    let routes = of_kind(&docs, "VirtualService")["spec"]["http"].clone();
    let token_route = routes.as_array().unwrap().iter().find(|r| r["name"] == route_name).unwrap();
    let path = token_route["match"][0]["uri"]["exact"].as_str().unwrap();
    assert!(config.token_paths.iter().any(|p| p == path), "{path} is not a token path");
}

/// The buffer filter's EnvoyFilter patches as every shipped gateway needs them (SPEC
/// "Filter chain"): inserted before the router, off on the chain, on for one route; returns
/// that route's name.
fn buffered_route(patches: &[Value]) -> &str {
    let insert = patches.iter().find(|p| p["applyTo"] == "HTTP_FILTER").unwrap();
    assert_eq!(insert["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    assert_eq!(insert["patch"]["value"]["name"], "envoy.filters.http.buffer");
    assert_eq!(insert["patch"]["value"]["disabled"], true);
    let route_patch = patches.iter().find(|p| p["applyTo"] == "HTTP_ROUTE").unwrap();
    assert_eq!(
        route_patch["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"],
        false
    );
    route_patch["match"]["routeConfiguration"]["vhost"]["route"]["name"].as_str().unwrap()
}

const CUSTOM_DOMAIN_GATEWAY: &str = "deploy/istio/custom-domain/gateway.yaml";

/// The custom domain's manifests, every document of the folder.
fn custom_domain_documents() -> Vec<Value> {
    let dir = workspace_root().join("deploy/istio/custom-domain");
    let paths: Vec<PathBuf> = manifests().into_iter().filter(|p| p.starts_with(&dir)).collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    read_files(&paths).into_iter().map(|(_, doc)| doc).collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn the_custom_domain_manifests_fit_together_as_auth0_documents_the_proxy() {
    let docs = custom_domain_documents();
    let plugin = of_kind(&docs, "WasmPlugin");
    let upstream = &plugin["spec"]["pluginConfig"]["upstream"];
    let gateway = of_kind(&docs, "Gateway");
    let name = gateway["metadata"]["name"].as_str().unwrap();
    assert_eq!(plugin["spec"]["targetRefs"][0]["name"], name);
    assert_eq!(plugin["spec"]["targetRefs"][0]["kind"], "Gateway");

    // The origin: the ServiceEntry's host is tokengate's cluster and authority, and the
    // DestinationRule originates TLS to it with it as SNI and certificate name.
    let origin = of_kind(&docs, "ServiceEntry")["spec"]["hosts"][0].as_str().unwrap().to_owned();
    assert!(origin.ends_with(".edge.tenants.us.auth0.com"), "{origin}: not an origin domain name");
    assert_eq!(upstream["cluster"], format!("outbound|443||{origin}"));
    assert_eq!(upstream["authority"], origin.as_str());
    let rule = of_kind(&docs, "DestinationRule");
    assert_eq!(rule["spec"]["host"], origin.as_str());
    let tls = &rule["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"];
    assert_eq!((tls["mode"].as_str(), tls["sni"].as_str()), (Some("SIMPLE"), Some(origin.as_str())));
    assert_eq!(strings(&tls["subjectAltNames"]), [origin.as_str()]);

    // The key: each env_headers variable comes from the proxy's environment (vmConfig.env,
    // HOST), where the gateway's Deployment patch puts it from a Secret.
    let options = of_kind(&docs, "ConfigMap");
    assert_eq!(
        gateway["spec"]["infrastructure"]["parametersRef"],
        json!({"group": "", "kind": "ConfigMap", "name": options["metadata"]["name"]})
    );
    let deployment: Value = serde_yaml::from_str(options["data"]["deployment"].as_str().unwrap()).unwrap();
    let proxy = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-proxy")
        .expect("a patch of the istio-proxy container");
    let from_host: Vec<&str> = plugin["spec"]["vmConfig"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"] == "HOST")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let env_headers = upstream["env_headers"].as_object().unwrap();
    assert_eq!(env_headers.get("cname-api-key").and_then(Value::as_str), Some("AUTH0_CNAME_API_KEY"));
    for variable in env_headers.values() {
        let variable = variable.as_str().unwrap();
        assert!(from_host.contains(&variable), "{variable} is not passed to the VM (vmConfig.env, HOST)");
        let set = proxy["env"].as_array().unwrap().iter().find(|e| e["name"] == variable);
        let set = set.unwrap_or_else(|| panic!("the gateway's proxy has no {variable}"));
        assert!(set["valueFrom"]["secretKeyRef"]["name"].is_string(), "{variable} not from a Secret");
    }
    // The client's address is kept up to the gateway and sent in true-client-ip.
    let service: Value = serde_yaml::from_str(options["data"]["service"].as_str().unwrap()).unwrap();
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(upstream["client_ip_header"], "true-client-ip");

    // Every rule goes to the origin with it as Host; the token rule is the one the
    // EnvoyFilter buffers, and every other path gets the headers from the route.
    let route = of_kind(&docs, "HTTPRoute");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], name);
    let hostname = gateway["spec"]["listeners"][0]["hostname"].as_str().unwrap();
    assert_eq!(strings(&route["spec"]["hostnames"]), [hostname]);
    let rules = route["spec"]["rules"].as_array().unwrap();
    for rule in rules {
        let rewrite = rule["filters"].as_array().unwrap().iter().find(|f| f["type"] == "URLRewrite").unwrap();
        assert_eq!(rewrite["urlRewrite"]["hostname"], origin.as_str(), "{rule}");
        let backend = &rule["backendRefs"][0];
        assert_eq!(
            (backend["kind"].as_str(), backend["name"].as_str()),
            (Some("Hostname"), Some(origin.as_str()))
        );
        assert_eq!(backend["port"], 443);
    }
    let filter = of_kind(&docs, "EnvoyFilter");
    assert_eq!(filter["spec"]["workloadSelector"]["labels"]["gateway.networking.k8s.io/gateway-name"], name);
    let buffered = buffered_route(filter["spec"]["configPatches"].as_array().unwrap());
    let token_paths = strings(&plugin["spec"]["pluginConfig"]["token_paths"]);
    for rule in rules {
        let path = rule["matches"][0]["path"]["value"].as_str();
        let is_token =
            rule["matches"][0]["path"]["type"] == "Exact" && path.is_some_and(|p| token_paths.contains(&p));
        assert_eq!(
            rule["name"] == buffered,
            is_token,
            "the buffer must be on for the token rule only: {rule}"
        );
        let modifier =
            rule["filters"].as_array().unwrap().iter().find(|f| f["type"] == "RequestHeaderModifier");
        if is_token {
            assert!(modifier.is_none(), "tokengate owns the token route's headers: {rule}");
            continue;
        }
        let modifier = &modifier.expect("every other path sets the headers")["requestHeaderModifier"];
        let set: Vec<(&str, &str)> = modifier["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap(), h["value"].as_str().unwrap()))
            .collect();
        for (header, variable) in env_headers {
            let value = format!("%ENVIRONMENT({})%", variable.as_str().unwrap());
            assert!(set.contains(&(header.as_str(), value.as_str())), "{rule}: no {header}");
        }
        assert!(set.contains(&("true-client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")), "{set:?}");
        assert_eq!(
            strings(&modifier["remove"]),
            ["client-certificate", "client-certificate-ca-verified", "auth0-forwarded-for"]
        );
    }
}

/// The custom domain's manifests with client certificates switched on as gateway.yaml's
/// comment says, still valid against the schemas.
#[test]
fn the_custom_domain_gateway_with_client_certificates_as_its_comment_says_is_valid() {
    let text = std::fs::read_to_string(workspace_root().join(CUSTOM_DOMAIN_GATEWAY)).unwrap();
    for step in [
        "caCertificateRefs:",
        "- { group: \"\", kind: ConfigMap, name: \"auth0-client-ca\" }",
        "forward_client_certificate: true",
        "\"%DOWNSTREAM_PEER_CERT%\"",
        "client-certificate-ca-verified \"SUCCESS\"",
    ] {
        assert!(text.contains(step), "{CUSTOM_DOMAIN_GATEWAY}: the mTLS comment no longer says {step:?}");
    }
    let mut docs = custom_domain_documents();
    for doc in &mut docs {
        match doc["kind"].as_str().unwrap() {
            "Gateway" => {
                doc["spec"]["tls"] = json!({"frontend": {"default": {"validation": {"caCertificateRefs": [
                    {"group": "", "kind": "ConfigMap", "name": "auth0-client-ca"}
                ]}}}});
            }
            "WasmPlugin" => {
                doc["spec"]["pluginConfig"]["upstream"]["forward_client_certificate"] = json!(true)
            }
            "HTTPRoute" => {
                for rule in doc["spec"]["rules"].as_array_mut().unwrap() {
                    for filter in rule["filters"].as_array_mut().unwrap() {
                        let modifier = &mut filter["requestHeaderModifier"];
                        if let Some(modifier) = modifier.as_object_mut() {
                            modifier.insert("remove".into(), json!(["auth0-forwarded-for"]));
                            modifier["set"].as_array_mut().unwrap().extend([
                                json!({"name": "client-certificate", "value": "%DOWNSTREAM_PEER_CERT%"}),
                                json!({"name": "client-certificate-ca-verified", "value": "SUCCESS"}),
                            ]);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let named: Vec<(String, Value)> =
        docs.into_iter().map(|d| ("with client certificates".into(), d)).collect();
    let report = validate_with_models(&named).unwrap_or_else(|report| panic!("refused:\n{report}"));
    assert_eq!(report.lines().filter(|l| l.ends_with(" valid")).count(), named.len(), "{report}");
}
