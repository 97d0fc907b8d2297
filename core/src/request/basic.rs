//! HTTP Basic client authentication (client_secret_basic). RFC 6749 §2.3.1 form-encodes
//! the client id and secret before joining them with `:` and base64-encoding them, but many
//! clients (Python `requests`' `HTTPBasicAuth`, authlib's default) send them raw. A part that
//! is not valid form encoding is taken as it was sent; the header's decoded bytes go into
//! the cache key whole, so two headers the IdP could tell apart never share a token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::RequestError;

/// Credentials read from a Basic `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: String,
    /// The decoded header (`id:secret` as sent): what the cache key is built from.
    pub decoded: Vec<u8>,
}

/// Client credentials from an `Authorization` header. `Ok(None)` when the header is absent
/// or uses another scheme (it is then forwarded as it is, but not used as credentials).
pub fn parse_basic(authorization: Option<&str>) -> Result<Option<BasicCredentials>, RequestError> {
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
    let malformed = || RequestError::bad("malformed Basic authorization header (not base64 of id:secret)");
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or_else(malformed)?;
    let client_id = form_decode_or_raw(&decoded[..colon]);
    let client_secret = form_decode_or_raw(&decoded[colon + 1..]);
    if client_id.is_empty() {
        return Err(RequestError::bad("Basic authorization header without a client id"));
    }
    Ok(Some(BasicCredentials { client_id, client_secret, decoded }))
}

/// The form-decoded text of one part, or the part as sent when it is not a clean form
/// encoding (a `%` not starting an escape, a raw space, non-ASCII or non-UTF-8 bytes).
fn form_decode_or_raw(part: &[u8]) -> String {
    let mut body = b"x=".to_vec();
    body.extend_from_slice(part);
    match super::form::parse_form(&body) {
        Ok(pairs) => pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(part).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id_secret: &[u8]) -> String {
        format!("Basic {}", STANDARD.encode(id_secret))
    }

    fn pair(header: &str) -> (String, String) {
        let c = parse_basic(Some(header)).unwrap().unwrap();
        (c.client_id, c.client_secret)
    }

    #[test]
    fn decodes_form_encoded_id_and_secret() {
        assert_eq!(pair(&basic(b"my-client:s3cr%3At")), ("my-client".into(), "s3cr:t".into()));
        assert_eq!(pair(&basic(b"a+b:c%2Bd")), ("a b".into(), "c+d".into()));
        assert_eq!(pair(&basic(b"id:")), ("id".into(), "".into()));
        assert_eq!(pair(&format!("bAsIc  {}", STANDARD.encode("i:s"))), ("i".into(), "s".into()));
    }

    #[test]
    fn takes_raw_credentials_as_sent() {
        assert_eq!(pair(&basic(b"c1:50%off")), ("c1".into(), "50%off".into()));
        assert_eq!(pair(&basic("c1:pässword".as_bytes())), ("c1".into(), "pässword".into()));
        assert_eq!(pair(&basic(b"c1:has space")), ("c1".into(), "has space".into()));
        assert_eq!(pair(&basic(b"c1:a:b")), ("c1".into(), "a:b".into()), "the first colon splits");
        // Latin-1 bytes (what `requests` sends for a non-ASCII str) are not UTF-8.
        let latin1 = parse_basic(Some(&basic(b"c1:p\xe4ss"))).unwrap().unwrap();
        assert_eq!(latin1.client_id, "c1");
        assert_eq!(latin1.decoded, b"c1:p\xe4ss");
    }

    #[test]
    fn the_decoded_header_tells_apart_what_reads_alike() {
        let raw = parse_basic(Some(&basic(b"c1:a b"))).unwrap().unwrap();
        let encoded = parse_basic(Some(&basic(b"c1:a+b"))).unwrap().unwrap();
        assert_eq!(raw.client_secret, encoded.client_secret);
        assert_ne!(raw.decoded, encoded.decoded);
    }

    #[test]
    fn other_schemes_and_absence_are_not_credentials() {
        assert_eq!(parse_basic(None).unwrap(), None);
        assert_eq!(parse_basic(Some("Bearer abc")).unwrap(), None);
        assert_eq!(parse_basic(Some("garbage")).unwrap(), None);
    }

    #[test]
    fn refuses_malformed_basic() {
        for header in ["Basic !!!", &basic(b"no-colon"), &basic(b":secret"), "Basic /w=="] {
            assert!(parse_basic(Some(header)).is_err(), "{header}");
        }
    }
}
