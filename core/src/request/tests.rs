use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

fn head(content_type: &str) -> RequestHead {
    RequestHead {
        content_type: Some(content_type.into()),
        authorization: None,
        dpop: None,
        ..Default::default()
    }
}

fn basic_head(content_type: &str, id: &str, secret: &str) -> RequestHead {
    RequestHead {
        content_type: Some(content_type.into()),
        authorization: Some(format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))),
        dpop: None,
        ..Default::default()
    }
}

fn parse(head: &RequestHead, body: &str) -> Result<TokenRequest, RequestError> {
    TokenRequest::parse(head, body.as_bytes())
}

#[test]
fn form_with_secret_in_body_is_cacheable() {
    let r = parse(
        &head(FORM),
        "grant_type=client_credentials&client_id=c1&client_secret=s1&audience=https%3A%2F%2Fapi",
    )
    .unwrap();
    assert_eq!(r.grant_type, "client_credentials");
    assert_eq!(r.client_id.as_deref(), Some("c1"));
    assert_eq!(r.client_secret.as_deref(), Some("s1"));
    assert_eq!(r.params.get("audience").map(String::as_str), Some("https://api"));
    assert!(!r.params.contains_key("client_secret"));
    assert_eq!(r.kind(), RequestKind::Cacheable);
}

#[test]
fn json_with_secret_in_body_is_cacheable() {
    let r = parse(
        &head("application/json; charset=utf-8"),
        r#"{"grant_type":"client_credentials","client_id":"c1","client_secret":"s1","audience":"a"}"#,
    )
    .unwrap();
    assert_eq!(r.client_id.as_deref(), Some("c1"));
    assert_eq!(r.kind(), RequestKind::Cacheable);
}

#[test]
fn basic_header_supplies_the_credentials() {
    let r = parse(&basic_head(FORM, "c1", "s1"), "grant_type=client_credentials&audience=a").unwrap();
    assert_eq!(r.client_id.as_deref(), Some("c1"));
    assert_eq!(r.client_secret.as_deref(), Some("s1"));
    assert_eq!(r.kind(), RequestKind::Cacheable);
    // The same id in the body is not a conflict.
    let r = parse(&basic_head(FORM, "c1", "s1"), "grant_type=client_credentials&client_id=c1").unwrap();
    assert_eq!(r.client_id.as_deref(), Some("c1"));
}

#[test]
fn conflicting_client_ids_are_refused() {
    let e = parse(&basic_head(FORM, "c1", "s1"), "grant_type=client_credentials&client_id=c2").unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.description.contains("differs"));
}

#[test]
fn conflicting_secrets_are_refused() {
    let e =
        parse(&basic_head(JSON, "c1", "s1"), r#"{"grant_type":"client_credentials","client_secret":"s2"}"#)
            .unwrap_err();
    assert!(e.description.contains("client_secret"));
}

#[test]
fn client_assertion_is_forwarded_not_cached() {
    let r = parse(
        &head(FORM),
        "grant_type=client_credentials&client_id=c1&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJ.x.y",
    )
    .unwrap();
    assert_eq!(r.kind(), RequestKind::Forward);
}

#[test]
fn other_grants_are_forwarded_and_need_no_client_id() {
    let r = parse(&head(FORM), "grant_type=refresh_token&refresh_token=abc").unwrap();
    assert_eq!(r.kind(), RequestKind::Forward);
    assert_eq!(r.client_id, None);
    let r =
        parse(&head(FORM), "grant_type=password&client_id=c1&client_secret=s&username=u&password=p").unwrap();
    assert_eq!(r.kind(), RequestKind::Forward);
}

#[test]
fn client_credentials_without_secret_is_forwarded() {
    let r = parse(&head(FORM), "grant_type=client_credentials&client_id=c1").unwrap();
    assert_eq!(r.kind(), RequestKind::Forward);
    let r = parse(&head(FORM), "grant_type=client_credentials&client_id=c1&client_secret=").unwrap();
    assert_eq!(r.kind(), RequestKind::Forward);
}

#[test]
fn missing_client_id_is_refused() {
    let e = parse(&head(FORM), "grant_type=client_credentials&client_secret=s").unwrap_err();
    assert!(e.description.contains("client_id"), "{e:?}");
    let e = parse(&head(FORM), "grant_type=client_credentials&client_id=&client_secret=s").unwrap_err();
    assert!(e.description.contains("client_id"), "{e:?}");
}

#[test]
fn missing_grant_type_is_refused() {
    let e = parse(&head(FORM), "client_id=c1&client_secret=s").unwrap_err();
    assert!(e.description.contains("grant_type"));
}

#[test]
fn repeated_parameters_are_refused() {
    let e =
        parse(&head(FORM), "grant_type=client_credentials&client_id=c&audience=a&audience=b").unwrap_err();
    assert!(e.description.contains("audience"));
    let e = parse(&head(JSON), r#"{"grant_type":"client_credentials","grant_type":"x"}"#).unwrap_err();
    assert!(e.description.contains("repeated"));
}

#[test]
fn malformed_bodies_are_refused_with_400() {
    let cases: Vec<(Option<&str>, &[u8])> = vec![
        (Some(JSON), b"{bad json"),
        (Some(JSON), b"[\"not\", \"an object\"]"),
        (Some("text/plain"), b"grant_type=client_credentials"),
        (None, b"grant_type=client_credentials"),
        (Some(FORM), b"grant_type=client_credentials&client_id=%zz"),
        (Some(FORM), b"\x00\x01\x02\xff\xfe"),
        (Some(FORM), b""),
        (Some(JSON), b""),
        (Some(JSON), b"{\"a\":{\"b\":{\"c\":{}}}}"),
    ];
    for (content_type, body) in cases {
        let head = RequestHead {
            content_type: content_type.map(str::to_owned),
            authorization: None,
            dpop: None,
            ..Default::default()
        };
        let e = TokenRequest::parse(&head, body).unwrap_err();
        assert_eq!(e.status, 400, "{content_type:?} {body:?}");
    }
}

#[test]
fn malformed_basic_header_is_refused() {
    let head = RequestHead {
        content_type: Some(FORM.into()),
        authorization: Some("Basic %%%".into()),
        dpop: None,
        ..Default::default()
    };
    assert_eq!(parse(&head, "grant_type=client_credentials").unwrap_err().status, 400);
}

#[test]
fn a_dpop_proof_makes_a_cacheable_request_forwarded() {
    let body = "grant_type=client_credentials&client_id=c1&client_secret=s1";
    let dpop = RequestHead { dpop: Some("eyJ.proof".into()), ..head(FORM) };
    assert_eq!(parse(&head(FORM), body).unwrap().kind(), RequestKind::Cacheable);
    assert_eq!(parse(&dpop, body).unwrap().kind(), RequestKind::Forward);
}

#[test]
fn a_client_id_over_256_bytes_is_refused() {
    let ok = format!("grant_type=client_credentials&client_id={}&client_secret=s", "a".repeat(256));
    assert!(parse(&head(FORM), &ok).is_ok());
    let long = format!("grant_type=client_credentials&client_id={}&client_secret=s", "a".repeat(257));
    let e = parse(&head(FORM), &long).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.description.contains("256"), "{}", e.description);
    let basic = basic_head(FORM, &"b".repeat(300), "s");
    assert_eq!(parse(&basic, "grant_type=client_credentials").unwrap_err().status, 400);
}

#[test]
fn json_null_is_an_absent_parameter_as_auth0_sdks_send_it() {
    let body = r#"{"grant_type":"client_credentials","client_id":"c1","client_secret":"s1","audience":"a","organization":null}"#;
    let r = parse(&head(JSON), body).unwrap();
    assert!(!r.params.contains_key("organization"));
    assert_eq!(r.kind(), RequestKind::Cacheable);
}

#[test]
fn a_tab_in_a_form_value_is_named_as_such_without_the_value() {
    let e =
        parse(&head(FORM), "grant_type=client_credentials&client_id=c1&client_secret=se%09cret").unwrap_err();
    assert!(e.description.contains("client_secret") && e.description.contains("tab"), "{}", e.description);
    assert!(!e.description.contains("se\tcret") && !e.description.contains("%09"), "{}", e.description);
}

#[test]
fn a_missing_grant_type_keeps_the_client_id_for_the_headers() {
    let e = parse(&head(FORM), "client_id=c1&client_secret=s1").unwrap_err();
    assert_eq!(e.client_id.as_deref(), Some("c1"));
}

#[test]
fn an_address_loses_its_port_and_keeps_everything_else() {
    use super::address_without_port;
    assert_eq!(address_without_port("192.0.2.7:40000"), "192.0.2.7");
    assert_eq!(address_without_port("[2001:db8::1]:443"), "2001:db8::1");
    assert_eq!(address_without_port("2001:db8::1"), "2001:db8::1");
    assert_eq!(address_without_port("192.0.2.7"), "192.0.2.7");
}
