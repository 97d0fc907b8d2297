//! Strict `application/x-www-form-urlencoded` parsing. `form_urlencoded` decodes leniently
//! (a stray `%zz` stays as text, invalid UTF-8 is replaced); a token request that cannot be
//! read exactly must be refused, not guessed at, so the bytes are checked first.

use super::RequestError;

/// Decodes a form body into name/value pairs, refusing anything that is not a clean
/// form encoding of UTF-8 text.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, RequestError> {
    check_encoding(body)?;
    let mut pairs = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        if name.is_empty() {
            if value.is_empty() {
                continue;
            }
            return Err(RequestError::bad("form parameter without a name"));
        }
        pairs.push((name.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

/// Every byte is printable ASCII, every `%` starts a two-digit hex escape, and every
/// decoded name and value is UTF-8 without control characters.
fn check_encoding(body: &[u8]) -> Result<(), RequestError> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'%' => {
                let hex = body.get(i + 1..i + 3).unwrap_or_default();
                if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(RequestError::bad("bad percent-encoding in the form body"));
                }
                i += 3;
            }
            0x21..=0x7e => i += 1,
            _ => {
                return Err(RequestError::bad("form body has bytes that are not form-encoded text"));
            }
        }
    }
    for segment in body.split(|b| *b == b'&') {
        for part in segment.splitn(2, |b| *b == b'=') {
            let decoded: Vec<u8> = percent_decode_plus(part);
            match std::str::from_utf8(&decoded) {
                Ok(text) if !text.chars().any(char::is_control) => {}
                // The name only: a value may be a secret.
                Ok(_) => {
                    let name = String::from_utf8_lossy(&percent_decode_plus(
                        segment.split(|b| *b == b'=').next().unwrap_or_default(),
                    ))
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect::<String>();
                    return Err(RequestError::bad(format!(
                        "form parameter \"{name}\" has a control character (a tab, newline or the like)"
                    )));
                }
                Err(_) => return Err(RequestError::bad("form body decodes to bytes that are not UTF-8")),
            }
        }
    }
    Ok(())
}

fn percent_decode_plus(part: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        match part[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                let hi = part.get(i + 1).copied().map(digit).unwrap_or(0);
                let lo = part.get(i + 2).copied().map(digit).unwrap_or(0);
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        parse_form(body.as_bytes()).unwrap()
    }

    #[test]
    fn decodes_pairs() {
        assert_eq!(
            pairs(
                "grant_type=client_credentials&client_id=a%2Bb&scope=read+write&audience=https%3A%2F%2Fapi"
            ),
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "a+b".into()),
                ("scope".into(), "read write".into()),
                ("audience".into(), "https://api".into()),
            ]
        );
    }

    #[test]
    fn tolerates_empty_segments_and_missing_values() {
        assert_eq!(pairs("a=1&&b&"), vec![("a".into(), "1".into()), ("b".into(), "".into())]);
        assert_eq!(pairs(""), vec![]);
        assert_eq!(pairs("n=%C3%A9"), vec![("n".into(), "é".into())]);
    }

    #[test]
    fn refuses_bad_percent_encoding() {
        for body in ["a=%zz", "a=%4", "a=%", "a=%%41"] {
            assert!(parse_form(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn refuses_raw_binary_spaces_and_non_ascii() {
        for body in [&b"a=\x00\x01"[..], b"a=b c", "a=é".as_bytes(), b"\xff\xfe", b"a=1\n"] {
            assert!(parse_form(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn refuses_encoded_invalid_utf8_and_controls() {
        for body in ["a=%FF", "a=%00", "a=%0A", "%C3=1"] {
            assert!(parse_form(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn refuses_nameless_value() {
        assert!(parse_form(b"=x").is_err());
    }
}
