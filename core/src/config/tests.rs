use super::*;

const MINIMAL: &str = r#"{"upstream": {"cluster": "auth0", "authority": "example.us.auth0.com"}}"#;

/// Parses MINIMAL with `patch` merged in (a JSON object whose keys replace MINIMAL's).
fn with(patch: serde_json::Value) -> Result<Config, ConfigError> {
    let mut doc: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    merge(&mut doc, patch);
    Config::from_json(doc.to_string().as_bytes())
}

fn merge(doc: &mut serde_json::Value, patch: serde_json::Value) {
    match (doc, patch) {
        (serde_json::Value::Object(d), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(d.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (d, p) => *d = p,
    }
}

fn refused(patch: serde_json::Value) -> ConfigError {
    match with(patch) {
        Err(e) => e,
        Ok(c) => panic!("accepted: {c:?}"),
    }
}

use serde_json::json;

#[test]
fn minimal_config_gets_the_spec_defaults() {
    let c = Config::from_json(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.token_paths, vec!["/oauth/token"]);
    assert_eq!(c.max_body_bytes, 8192);
    assert_eq!(c.upstream.path, "/oauth/token");
    assert_eq!(c.upstream.timeout_ms, 5000);
    assert_eq!(c.upstream.backoff_scope, BackoffScope::Client);
    assert_eq!(c.upstream.key_header, None);
    assert_eq!(c.upstream.max_backoff_ms, 60_000);
    assert_eq!(c.upstream.reserve, 0);
    assert_eq!(
        c.cache,
        CacheConfig {
            max_entries: 10_000,
            min_remaining_ttl_ms: 30_000,
            refresh_ahead_ratio: 0.1,
            negative_ttl_ms: 10_000,
            max_ttl_ms: None
        }
    );
    assert_eq!(c.rate_limit, None);
    assert_eq!(c.rate_limit_service, None);
    assert_eq!(c.quota, None);
    assert_eq!(c.usage_path, None);
}

#[test]
fn rate_limit_service_gets_its_defaults() {
    let c = with(json!({"rate_limit_service": {"cluster": "ratelimit"}})).unwrap();
    assert_eq!(
        c.rate_limit_service,
        Some(RateLimitService { cluster: "ratelimit".into(), domain: "tokengate".into(), timeout_ms: 100 })
    );
}

#[test]
fn rejects_rate_limit_service_without_cluster() {
    assert_field(refused(json!({"rate_limit_service": {"domain": "d"}})), "rate_limit_service", "cluster");
}

#[test]
fn rejects_empty_rate_limit_service_cluster() {
    assert_field(
        refused(json!({"rate_limit_service": {"cluster": " "}})),
        "rate_limit_service.cluster",
        "must not be empty",
    );
}

#[test]
fn rejects_empty_rate_limit_service_domain() {
    assert_field(
        refused(json!({"rate_limit_service": {"cluster": "rls", "domain": ""}})),
        "rate_limit_service.domain",
        "must not be empty",
    );
}

#[test]
fn rejects_zero_rate_limit_service_timeout() {
    assert_field(
        refused(json!({"rate_limit_service": {"cluster": "rls", "timeout": "0s"}})),
        "rate_limit_service.timeout",
        "longer than 0",
    );
}

#[test]
fn rejects_long_rate_limit_service_timeout() {
    assert_field(
        refused(json!({"rate_limit_service": {"cluster": "rls", "timeout": "6s"}})),
        "rate_limit_service.timeout",
        "at most 5s",
    );
}

#[test]
fn rejects_unknown_rate_limit_service_field() {
    assert_field(
        refused(json!({"rate_limit_service": {"cluster": "rls", "failure_mode_deny": true}})),
        "rate_limit_service.failure_mode_deny",
        "unknown field",
    );
}

#[test]
fn spec_example_is_accepted() {
    let spec = r#"{
      "token_paths": ["/oauth/token"],
      "upstream": {"cluster": "auth0", "authority": "example.us.auth0.com", "timeout": "5s"},
      "cache": {"max_entries": 10000, "min_remaining_ttl": "30s", "refresh_ahead_ratio": 0.1,
                "negative_ttl": "10s"},
      "rate_limit": {"default": {"max_tokens": 30, "tokens_per_fill": 30, "fill_interval": "60s"},
                     "clients": {"noisy-client-id": {"max_tokens": 5, "tokens_per_fill": 5,
                                                     "fill_interval": "60s"}}},
      "quota": {"default": {"tokens": 1000, "window": "1d"},
                "clients": {"noisy-client-id": {"tokens": 10, "window": "1d"}}},
      "usage_path": "/tokengate/usage"
    }"#;
    let c = Config::from_json(spec.as_bytes()).unwrap();
    let rl = c.rate_limit.unwrap();
    assert_eq!(rl.for_client("noisy-client-id").unwrap().max_tokens, 5);
    assert_eq!(rl.for_client("anyone").unwrap().max_tokens, 30);
    assert_eq!(rl.for_client("anyone").unwrap().fill_interval_ms, 60_000);
    let q = c.quota.unwrap();
    assert_eq!(q.for_client("noisy-client-id").unwrap().tokens, 10);
    assert_eq!(q.for_client("x").unwrap().window_ms, 86_400_000);
    assert_eq!(c.usage_path.as_deref(), Some("/tokengate/usage"));
}

#[test]
fn token_path_matching_ignores_the_query_and_needs_post() {
    let c = Config::from_json(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.route("POST", "/oauth/token"), Route::Token);
    assert_eq!(c.route("POST", "/oauth/token?x=1"), Route::Token);
    assert_eq!(c.route("POST", "/OAUTH/TOKEN/"), Route::Token);
    assert_eq!(c.route("POST", "/oauth%2Ftoken"), Route::Token);
    assert_eq!(c.route("GET", "/oauth/token"), Route::TokenWrongMethod);
    assert_eq!(c.route("PUT", "//oauth/token;x=1"), Route::TokenWrongMethod);
    assert_eq!(c.route("POST", "/oauth/token/x"), Route::Other);
    assert_eq!(c.route("POST", "/oauth"), Route::Other);
}

fn assert_field(e: ConfigError, field: &str, reason_part: &str) {
    assert_eq!(e.field, field, "{e}");
    assert!(e.reason.contains(reason_part), "{e}");
}

#[test]
fn rejects_invalid_json() {
    let e = Config::from_json(b"{not json").unwrap_err();
    assert_field(e, "configuration", "key must be a string");
}

#[test]
fn rejects_empty_configuration() {
    let e = Config::from_json(b"").unwrap_err();
    assert_field(e, "configuration", "EOF");
}

#[test]
fn rejects_unknown_top_level_field() {
    assert_field(refused(json!({"tokenpaths": []})), "tokenpaths", "unknown field `tokenpaths`");
}

#[test]
fn rejects_unknown_nested_field() {
    assert_field(refused(json!({"cache": {"ttl": "5s"}})), "cache.ttl", "unknown field `ttl`");
}

#[test]
fn rejects_missing_upstream() {
    let e = Config::from_json(br#"{"token_paths": ["/oauth/token"]}"#).unwrap_err();
    assert_field(e, "configuration", "missing field `upstream`");
}

#[test]
fn rejects_missing_upstream_cluster() {
    let e = Config::from_json(br#"{"upstream": {"authority": "a"}}"#).unwrap_err();
    assert_field(e, "upstream", "missing field `cluster`");
}

#[test]
fn rejects_missing_upstream_authority() {
    let e = Config::from_json(br#"{"upstream": {"cluster": "a"}}"#).unwrap_err();
    assert_field(e, "upstream", "missing field `authority`");
}

#[test]
fn rejects_empty_upstream_cluster() {
    assert_field(refused(json!({"upstream": {"cluster": " "}})), "upstream.cluster", "empty");
}

#[test]
fn rejects_empty_upstream_authority() {
    assert_field(refused(json!({"upstream": {"authority": ""}})), "upstream.authority", "empty");
}

#[test]
fn rejects_wrong_type() {
    assert_field(refused(json!({"max_body_bytes": "8k"})), "max_body_bytes", "invalid type");
}

#[test]
fn rejects_wrong_type_nested() {
    assert_field(refused(json!({"cache": {"max_entries": -1}})), "cache.max_entries", "invalid value");
}

#[test]
fn rejects_empty_token_paths() {
    assert_field(refused(json!({"token_paths": []})), "token_paths", "at least one");
}

#[test]
fn rejects_token_path_without_slash() {
    assert_field(refused(json!({"token_paths": ["oauth/token"]})), "token_paths[0]", "start with '/'");
}

#[test]
fn rejects_token_path_with_query() {
    assert_field(refused(json!({"token_paths": ["/a", "/oauth/token?x"]})), "token_paths[1]", "plain path");
}

#[test]
fn rejects_zero_max_body_bytes() {
    assert_field(refused(json!({"max_body_bytes": 0})), "max_body_bytes", "between 1 and");
}

#[test]
fn rejects_huge_max_body_bytes() {
    assert_field(refused(json!({"max_body_bytes": 2_000_000})), "max_body_bytes", "between 1 and");
}

#[test]
fn rejects_upstream_path_without_slash() {
    assert_field(refused(json!({"upstream": {"path": "oauth"}})), "upstream.path", "start with '/'");
}

#[test]
fn rejects_timeout_without_unit() {
    assert_field(refused(json!({"upstream": {"timeout": "5"}})), "upstream.timeout", "no unit");
}

#[test]
fn rejects_timeout_with_unknown_unit() {
    assert_field(refused(json!({"upstream": {"timeout": "5sec"}})), "upstream.timeout", "unknown unit");
}

#[test]
fn rejects_zero_timeout() {
    assert_field(refused(json!({"upstream": {"timeout": "0s"}})), "upstream.timeout", "longer than 0");
}

#[test]
fn rejects_timeout_over_a_minute() {
    assert_field(refused(json!({"upstream": {"timeout": "2m"}})), "upstream.timeout", "at most 60s");
}

#[test]
fn rejects_timeout_as_number() {
    assert_field(refused(json!({"upstream": {"timeout": 5}})), "upstream.timeout", "invalid type");
}

#[test]
fn rejects_unknown_backoff_scope() {
    assert_field(
        refused(json!({"upstream": {"backoff_scope": "tenant"}})),
        "upstream.backoff_scope",
        "\"client\" or \"upstream\"",
    );
}

#[test]
fn rejects_bad_key_header() {
    assert_field(refused(json!({"upstream": {"key_header": "X Key"}})), "upstream.key_header", "header name");
}

#[test]
fn rejects_zero_max_entries() {
    assert_field(refused(json!({"cache": {"max_entries": 0}})), "cache.max_entries", "between 1 and");
}

#[test]
fn rejects_huge_max_entries() {
    assert_field(refused(json!({"cache": {"max_entries": 5_000_000}})), "cache.max_entries", "between 1 and");
}

#[test]
fn rejects_bad_min_remaining_ttl() {
    assert_field(
        refused(json!({"cache": {"min_remaining_ttl": "-1s"}})),
        "cache.min_remaining_ttl",
        "not a number",
    );
}

#[test]
fn rejects_refresh_ahead_ratio_of_one() {
    assert_field(
        refused(json!({"cache": {"refresh_ahead_ratio": 1.0}})),
        "cache.refresh_ahead_ratio",
        "below 1",
    );
}

#[test]
fn rejects_negative_refresh_ahead_ratio() {
    assert_field(
        refused(json!({"cache": {"refresh_ahead_ratio": -0.1}})),
        "cache.refresh_ahead_ratio",
        "at least 0",
    );
}

#[test]
fn rejects_bad_negative_ttl() {
    assert_field(refused(json!({"cache": {"negative_ttl": "ten"}})), "cache.negative_ttl", "not a number");
}

#[test]
fn rejects_zero_max_tokens() {
    let e = refused(
        json!({"rate_limit": {"default": {"max_tokens": 0, "tokens_per_fill": 1, "fill_interval": "1s"}}}),
    );
    assert_field(e, "rate_limit.default.max_tokens", "at least 1");
}

#[test]
fn rejects_zero_tokens_per_fill() {
    let e = refused(
        json!({"rate_limit": {"clients": {"c1": {"max_tokens": 1, "tokens_per_fill": 0, "fill_interval": "1s"}}}}),
    );
    assert_field(e, "rate_limit.clients.c1.tokens_per_fill", "at least 1");
}

#[test]
fn rejects_zero_fill_interval() {
    let e = refused(
        json!({"rate_limit": {"default": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "0ms"}}}),
    );
    assert_field(e, "rate_limit.default.fill_interval", "longer than 0");
}

#[test]
fn rejects_bucket_missing_field() {
    let e = refused(json!({"rate_limit": {"default": {"max_tokens": 1, "tokens_per_fill": 1}}}));
    assert_field(e, "rate_limit.default", "missing field `fill_interval`");
}

#[test]
fn rejects_empty_client_id() {
    let e = refused(json!({"quota": {"clients": {"": {"tokens": 1, "window": "1d"}}}}));
    assert_field(e, "quota.clients", "must not be empty");
}

#[test]
fn rejects_bad_quota_window() {
    let e = refused(json!({"quota": {"default": {"tokens": 10, "window": "1 day"}}}));
    assert_field(e, "quota.default.window", "unknown unit");
}

#[test]
fn rejects_quota_tokens_as_string() {
    let e = refused(json!({"quota": {"default": {"tokens": "10", "window": "1d"}}}));
    assert_field(e, "quota.default.tokens", "invalid type");
}

#[test]
fn rejects_usage_path_without_slash() {
    assert_field(refused(json!({"usage_path": "usage"})), "usage_path", "start with '/'");
}

#[test]
fn rejects_usage_path_equal_to_token_path() {
    assert_field(refused(json!({"usage_path": "/oauth/token"})), "usage_path", "differ");
}

#[test]
fn rejects_an_empty_field_name_naming_the_configuration() {
    // Found by the `config` fuzz target: an empty key left the field name empty.
    let e = Config::from_json(b"\n{  \"\"tok").unwrap_err();
    assert_field(e, "configuration", "");
}

#[test]
fn rejects_zero_usage_top_clients() {
    assert_field(refused(json!({"usage_top_clients": 0})), "usage_top_clients", "between 1 and 10000");
}

#[test]
fn usage_requests_are_gets_on_the_usage_path() {
    let c = with(json!({"usage_path": "/tokengate/usage"})).unwrap();
    assert!(c.is_usage_request("GET", "/tokengate/usage?x=1"));
    assert!(!c.is_usage_request("POST", "/tokengate/usage"));
    assert!(!Config::from_json(MINIMAL.as_bytes()).unwrap().is_usage_request("GET", "/tokengate/usage"));
}

#[test]
fn max_backoff_and_reserve_are_read() {
    let c = with(json!({"upstream": {"max_backoff": "2m", "reserve": 3}})).unwrap();
    assert_eq!((c.upstream.max_backoff_ms, c.upstream.reserve), (120_000, 3));
}

#[test]
fn rejects_max_backoff_under_a_second() {
    assert_field(
        refused(json!({"upstream": {"max_backoff": "500ms"}})),
        "upstream.max_backoff",
        "between 1s and 1h",
    );
}

#[test]
fn rejects_max_backoff_over_an_hour() {
    assert_field(
        refused(json!({"upstream": {"max_backoff": "2h"}})),
        "upstream.max_backoff",
        "between 1s and 1h",
    );
}

#[test]
fn rejects_max_backoff_without_unit() {
    assert_field(refused(json!({"upstream": {"max_backoff": "soon"}})), "upstream.max_backoff", "");
}

#[test]
fn rejects_negative_reserve() {
    assert_field(refused(json!({"upstream": {"reserve": -1}})), "upstream.reserve", "");
}

#[test]
fn rejects_reserve_as_string() {
    assert_field(refused(json!({"upstream": {"reserve": "5"}})), "upstream.reserve", "");
}

#[test]
fn rejects_wrong_type_in_an_array() {
    assert_field(refused(json!({"token_paths": ["/a", 5]})), "token_paths[1]", "invalid type");
}

#[test]
fn rejects_wrong_type_under_a_client_id() {
    let e = refused(json!({"quota": {"clients": {"c.1": {"tokens": "ten", "window": "1d"}}}}));
    assert_field(e, "quota.clients.c.1.tokens", "invalid type");
}

#[test]
fn names_the_field_in_an_indented_document() {
    let doc = "{\n  \"upstream\": {\n    \"cluster\": \"idp\",\n    \"authority\": \"a\",\n    \"reserve\": \"x\"\n  }\n}";
    assert_field(Config::from_json(doc.as_bytes()).unwrap_err(), "upstream.reserve", "invalid type");
}

#[test]
fn rejects_a_client_id_listed_twice() {
    let doc = r#"{"upstream": {"cluster": "idp", "authority": "a"},
        "quota": {"clients": {"c1": {"tokens": 1, "window": "1d"}, "c1": {"tokens": 2, "window": "1d"}}}}"#;
    assert_field(Config::from_json(doc.as_bytes()).unwrap_err(), "quota.clients.c1", "listed twice");
}

#[test]
fn unproven_buckets_default_with_a_rate_limit_and_are_off_without_one() {
    let c = with(
        json!({"rate_limit": {"default": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "1m"}}}),
    )
    .unwrap();
    let unproven = c.unproven.unwrap();
    assert_eq!(unproven.per_client, DEFAULT_UNPROVEN);
    assert_eq!(unproven.per_client.max_tokens, 10);
    assert_eq!(unproven.unknown_clients, DEFAULT_UNKNOWN_CLIENTS);
    assert_eq!(with(json!({})).unwrap().unproven, None);
    let set = with(json!({"rate_limit": {
        "unproven": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "30s"},
        "unknown_clients": {"max_tokens": 7, "tokens_per_fill": 7, "fill_interval": "1h"}}}))
    .unwrap()
    .unproven
    .unwrap();
    assert_eq!(set.per_client, BucketRule { max_tokens: 2, tokens_per_fill: 1, fill_interval_ms: 30_000 });
    assert_eq!(set.unknown_clients.fill_interval_ms, 3_600_000);
}

#[test]
fn rejects_zero_unproven_max_tokens() {
    let e = refused(
        json!({"rate_limit": {"unproven": {"max_tokens": 0, "tokens_per_fill": 1, "fill_interval": "1s"}}}),
    );
    assert_field(e, "rate_limit.unproven.max_tokens", "at least 1");
}

#[test]
fn rejects_bad_unknown_clients_interval() {
    let e = refused(
        json!({"rate_limit": {"unknown_clients": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "soon"}}}),
    );
    assert_field(e, "rate_limit.unknown_clients.fill_interval", "not a number with a unit");
}

#[test]
fn rejects_unproven_under_quota() {
    let e = refused(json!({"quota": {"unproven": {"tokens": 1, "window": "1d"}}}));
    assert_field(e, "quota.unproven", "unknown field `unproven`");
}

#[test]
fn rejects_usage_path_that_normalizes_to_a_token_path() {
    assert_field(
        refused(json!({"usage_path": "/OAuth/Token/"})),
        "usage_path",
        "differ from every token path",
    );
}

fn with_env(upstream_extra: serde_json::Value, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut upstream = json!({"cluster": "auth0", "authority": "example.us.auth0.com"});
    merge(&mut upstream, upstream_extra);
    let doc = json!({ "upstream": upstream }).to_string();
    let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
    Config::from_json_with_env(doc.as_bytes(), &lookup)
}

#[test]
fn the_edge_options_get_their_defaults() {
    let c = Config::from_json(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.upstream.client_ip_header.as_deref(), Some("auth0-forwarded-for"));
    let owned = &c.upstream.owned_headers;
    assert_eq!(owned.iter().filter(|h| *h == "auth0-forwarded-for").count(), 1, "{owned:?}");
    assert!(c.upstream.env_headers.is_empty());
    assert!(!c.upstream.forward_client_certificate);
    let none = with(json!({"upstream": {"client_ip_header": null}})).unwrap();
    assert_eq!(none.upstream.client_ip_header, None);
    // A client's copy is removed whether or not the option is on.
    assert!(none.upstream.owned_headers.iter().any(|h| h == "auth0-forwarded-for"));
}

#[test]
fn rejects_client_ip_header_that_is_not_a_header_name() {
    assert_field(
        refused(json!({"upstream": {"client_ip_header": "True Client IP"}})),
        "upstream.client_ip_header",
        "lowercase",
    );
}

#[test]
fn rejects_client_ip_header_the_request_owns() {
    assert_field(
        refused(json!({"upstream": {"client_ip_header": "host"}})),
        "upstream.client_ip_header",
        "belongs to the request",
    );
}

#[test]
fn rejects_key_header_the_request_owns() {
    assert_field(
        refused(json!({"upstream": {"key_header": "authorization"}})),
        "upstream.key_header",
        "belongs to the request",
    );
}

#[test]
fn rejects_key_header_that_is_the_client_ip_header() {
    let e =
        refused(json!({"upstream": {"key_header": "true-client-ip", "client_ip_header": "true-client-ip"}}));
    assert_field(e, "upstream.key_header", "is upstream.client_ip_header");
}

#[test]
fn env_headers_take_their_values_from_the_environment_trimmed() {
    let c = with_env(json!({"env_headers": {"cname-api-key": "KEY"}}), &[("KEY", " k-1\n")]).unwrap();
    assert_eq!(c.upstream.env_headers, vec![("cname-api-key".to_owned(), EnvValue("k-1".into()))]);
    assert!(c.upstream.owned_headers.iter().any(|h| h == "cname-api-key"));
    assert!(!format!("{c:?}").contains("k-1"), "never printed");
}

#[test]
fn rejects_missing_env_variable() {
    let e = with_env(json!({"env_headers": {"cname-api-key": "KEY"}}), &[]).unwrap_err();
    assert_field(e, "upstream.env_headers.cname-api-key", "KEY is missing or empty");
}

#[test]
fn rejects_empty_env_variable() {
    let e = with_env(json!({"env_headers": {"cname-api-key": "KEY"}}), &[("KEY", " \n")]).unwrap_err();
    assert_field(e, "upstream.env_headers.cname-api-key", "KEY is missing or empty");
}

#[test]
fn rejects_env_variable_with_a_control_character_without_printing_it() {
    let e =
        with_env(json!({"env_headers": {"cname-api-key": "KEY"}}), &[("KEY", "a\r\nx-evil: 1")]).unwrap_err();
    assert!(!e.to_string().contains("evil"), "{e}");
    assert_field(e, "upstream.env_headers.cname-api-key", "control character");
}

#[test]
fn rejects_env_header_the_request_or_tokengate_owns() {
    for name in ["content-length", "authorization", "client-certificate", "auth0-forwarded-for"] {
        let e = with_env(json!({"env_headers": {name: "KEY"}}), &[("KEY", "v")]).unwrap_err();
        assert_field(e, &format!("upstream.env_headers.{name}"), "tokengate sets this header itself");
    }
}

#[test]
fn rejects_env_header_that_is_the_client_ip_header() {
    let e = with_env(
        json!({"client_ip_header": "true-client-ip", "env_headers": {"true-client-ip": "KEY"}}),
        &[("KEY", "v")],
    )
    .unwrap_err();
    assert_field(e, "upstream.env_headers.true-client-ip", "is upstream.client_ip_header");
}

#[test]
fn rejects_env_header_listed_twice() {
    let doc = r#"{"upstream": {"cluster": "a", "authority": "b",
                  "env_headers": {"cname-api-key": "K", "cname-api-key": "K"}}}"#;
    let e = Config::from_json_with_env(doc.as_bytes(), &|_| Some("v".into())).unwrap_err();
    assert_field(e, "upstream.env_headers.cname-api-key", "listed twice");
}

#[test]
fn rejects_forward_client_certificate_that_is_not_a_boolean() {
    assert_field(
        refused(json!({"upstream": {"forward_client_certificate": "yes"}})),
        "upstream.forward_client_certificate",
        "invalid type",
    );
}

#[test]
fn rejects_a_field_given_twice() {
    let doc = r#"{"upstream": {"cluster": "a", "authority": "b", "cluster": "c"}}"#;
    assert_field(Config::from_json(doc.as_bytes()).unwrap_err(), "upstream.cluster", "duplicate field");
}

#[test]
fn a_misspelt_field_is_named_as_unknown_not_as_the_missing_one() {
    let doc = r#"{"upstream": {"clustr": "a", "authority": "b"}}"#;
    assert_field(Config::from_json(doc.as_bytes()).unwrap_err(), "upstream.clustr", "unknown field `clustr`");
}

#[test]
fn rejects_a_document_that_is_not_an_object() {
    assert_field(Config::from_json(b"[1]").unwrap_err(), "configuration", "invalid type");
    assert_field(Config::from_json(b"{\"upstream\": ").unwrap_err(), "configuration", "EOF");
}

#[test]
fn a_member_named_nothing_is_refused_naming_the_configuration() {
    // Found by the fuzzer: the refusal named an empty field.
    let e = Config::from_json(br#"{"":"","usage_path":"/u"}"#).unwrap_err();
    assert_field(e, "configuration", "unknown field ``");
}

#[test]
fn max_ttl_is_off_by_default_and_read_as_a_duration() {
    assert_eq!(Config::from_json(MINIMAL.as_bytes()).unwrap().cache.max_ttl_ms, None);
    assert_eq!(with(json!({"cache": {"max_ttl": "1h"}})).unwrap().cache.max_ttl_ms, Some(3_600_000));
}

#[test]
fn rejects_bad_max_ttl() {
    assert_field(refused(json!({"cache": {"max_ttl": "0s"}})), "cache.max_ttl", "longer than 0");
    assert_field(refused(json!({"cache": {"max_ttl": 60}})), "cache.max_ttl", "invalid type");
}

#[test]
fn rejects_max_ttl_not_longer_than_min_remaining_ttl() {
    let e = refused(json!({"cache": {"max_ttl": "30s", "min_remaining_ttl": "30s"}}));
    assert_field(e, "cache.max_ttl", "longer than cache.min_remaining_ttl");
}

#[test]
fn auth0_quota_is_obeyed_by_default_and_may_be_ignored() {
    assert_eq!(Config::from_json(MINIMAL.as_bytes()).unwrap().upstream.auth0_quota, Auth0Quota::Obey);
    let ignore = with(json!({"upstream": {"auth0_quota": "ignore"}})).unwrap();
    assert_eq!(ignore.upstream.auth0_quota, Auth0Quota::Ignore);
}

#[test]
fn rejects_unknown_auth0_quota() {
    assert_field(
        refused(json!({"upstream": {"auth0_quota": "log"}})),
        "upstream.auth0_quota",
        "\"obey\" or \"ignore\"",
    );
    assert_field(refused(json!({"upstream": {"auth0_quota": true}})), "upstream.auth0_quota", "invalid type");
}

#[test]
fn rejects_usage_path_whose_purge_is_a_token_path() {
    let e = refused(json!({"token_paths": ["/oauth/purge"], "usage_path": "/oauth"}));
    assert_field(e, "usage_path", "with /purge too");
}

#[test]
fn the_purge_path_is_usage_path_slash_purge_exactly() {
    let c = with(json!({"usage_path": "/tokengate/usage"})).unwrap();
    assert!(c.is_purge_path("/tokengate/usage/purge"));
    assert!(c.is_purge_path("/tokengate/usage/purge?x=1"));
    for other in ["/tokengate/usage", "/tokengate/usage/purge/", "/tokengate/usagepurge", "/purge"] {
        assert!(!c.is_purge_path(other), "{other}");
    }
    assert!(!with(json!({})).unwrap().is_purge_path("/tokengate/usage/purge"), "no usage_path, no purge");
}
