//! HTTP Basic client authentication (client_secret_basic, RFC 6749 §2.3.1): the client id
//! and secret are each form-urlencoded, joined by `:`, then base64-encoded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::RequestError;

/// Client credentials from an `Authorization` header. `Ok(None)` when the header is absent
/// or uses another scheme (it is then forwarded as it is, but not used as credentials).
pub fn parse_basic(authorization: Option<&str>) -> Result<Option<(String, String)>, RequestError> {
    let Some(header) = authorization else {
        return Ok(None);
    };
    let header = header.trim();
    let Some((scheme, encoded)) = header.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let malformed = || RequestError::bad("malformed Basic authorization header");
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if id.is_empty() {
        return Err(RequestError::bad("Basic authorization header without a client id"));
    }
    Ok(Some((id, secret)))
}

/// Form-decodes one component, refusing bad escapes, invalid UTF-8 and control characters.
fn form_decode(component: &str) -> Option<String> {
    let body = format!("x={component}");
    let pairs = super::form::parse_form(body.as_bytes()).ok()?;
    pairs.into_iter().next().map(|(_, v)| v).or(Some(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id_secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(id_secret))
    }

    #[test]
    fn decodes_id_and_secret() {
        assert_eq!(
            parse_basic(Some(&basic("my-client:s3cr%3At"))).unwrap(),
            Some(("my-client".into(), "s3cr:t".into()))
        );
        assert_eq!(parse_basic(Some(&basic("a+b:c%2Bd"))).unwrap(), Some(("a b".into(), "c+d".into())));
        assert_eq!(parse_basic(Some(&basic("id:"))).unwrap(), Some(("id".into(), "".into())));
        assert_eq!(
            parse_basic(Some(&format!("bAsIc  {}", STANDARD.encode("i:s")))).unwrap(),
            Some(("i".into(), "s".into()))
        );
    }

    #[test]
    fn other_schemes_and_absence_are_not_credentials() {
        assert_eq!(parse_basic(None).unwrap(), None);
        assert_eq!(parse_basic(Some("Bearer abc")).unwrap(), None);
        assert_eq!(parse_basic(Some("garbage")).unwrap(), None);
    }

    #[test]
    fn refuses_malformed_basic() {
        for header in ["Basic !!!", &basic("no-colon"), &basic(":secret"), &basic("a:%zz"), "Basic /w=="] {
            assert!(parse_basic(Some(header)).is_err(), "{header}");
        }
    }
}
