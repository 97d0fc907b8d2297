//! Request paths as a token endpoint's framework routes them. IdPs and their web frameworks
//! send `/oauth/token/`, `//oauth/token`, `/OAUTH/TOKEN`, `/oauth/./token`, `/oauth%2Ftoken`
//! and `/oauth/token;x=1` to the same handler, so any path that normalizes to a token path
//! is a token request: otherwise a variant would reach the IdP with no limit and no count.
//! The normal form is generous on purpose: taking one path too many for a token path only
//! refuses or counts a request, taking one too few lets it through uncounted.

/// Rounds of percent-decoding (`%252F` is `%2F` after one): a proxy or framework in front
/// of the IdP may decode once more.
const DECODE_ROUNDS: usize = 3;

/// The normal form of a `:path` (query and fragment ignored): percent-decoded, `\` read as
/// `/`, ASCII case folded, each segment cut at `;` and trimmed of spaces and control
/// characters, empty and `.` segments dropped, `..` applied, and no trailing slash.
pub fn normalize_path(path: &str) -> Vec<u8> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        if !percent_decode(&mut bytes) {
            break;
        }
    }
    bytes.make_ascii_lowercase();
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in bytes.split(|b| *b == b'/' || *b == b'\\') {
        let segment = segment.split(|b| *b == b';').next().unwrap_or_default();
        match trim(segment) {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for segment in segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Whether `path` may differ from its normal form: a path without any of these bytes is
/// its own normal form up to case, so the common case is compared without allocating.
pub fn needs_normalizing(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    !path.starts_with('/')
        || path.len() > 1 && path.ends_with('/')
        || path.as_bytes().windows(2).any(|w| w == b"//")
        || path
            .bytes()
            .any(|b| matches!(b, b'%' | b';' | b'\\' | b'.' | b'A'..=b'Z') || b <= b' ' || b >= 0x7f)
}

/// One round of `%XX` decoding in place; `false` when there was nothing to decode.
fn percent_decode(bytes: &mut Vec<u8>) -> bool {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let (mut read, mut write, mut changed) = (0, 0, false);
    while read < bytes.len() {
        let escape = match (bytes[read], bytes.get(read + 1), bytes.get(read + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)),
            _ => None,
        };
        bytes[write] = match escape {
            Some((hi, lo)) => {
                read += 3;
                changed = true;
                hi << 4 | lo
            }
            None => {
                read += 1;
                bytes[read - 1]
            }
        };
        write += 1;
    }
    bytes.truncate(write);
    changed
}

/// Without leading and trailing spaces and control characters.
fn trim(segment: &[u8]) -> &[u8] {
    let keep = |b: &u8| *b > b' ' && *b != 0x7f;
    let start = segment.iter().position(keep).unwrap_or(segment.len());
    let end = segment.iter().rposition(keep).map_or(start, |i| i + 1);
    &segment[start..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_variant_an_idp_routes_to_its_token_handler_is_the_token_path() {
        for variant in [
            "/oauth/token",
            "/oauth/token/",
            "//oauth/token",
            "/oauth//token",
            "/OAUTH/TOKEN",
            "/OAuth/Token?x=1",
            "/oauth/./token",
            "/oauth/x/../token",
            "/oauth%2Ftoken",
            "/oauth%2ftoken",
            "/oauth%252Ftoken",
            "/%6Fauth/token",
            "/oauth/token;x=1",
            "/oauth;a=b/token",
            "/oauth/token%20",
            "/%20oauth/token",
            "/oauth/token%09",
            "/oauth/token%00",
            "/oauth\\token",
            "/oauth/token/.",
            "/oauth/token#frag",
            "/../oauth/token",
        ] {
            assert_eq!(normalize_path(variant), b"/oauth/token", "{variant}");
        }
    }

    #[test]
    fn other_paths_stay_other_paths() {
        for other in
            ["/oauth/tokens", "/oauth/token-info", "/oauth", "/", "/api/oauth/token", "/oauth/to%20ken"]
        {
            assert_ne!(normalize_path(other), b"/oauth/token", "{other}");
        }
        assert_eq!(normalize_path(""), b"/");
        assert_eq!(normalize_path("/a/b"), b"/a/b");
    }

    #[test]
    fn bad_escapes_stay_as_they_are() {
        assert_eq!(normalize_path("/a%zz/b%"), b"/a%zz/b%");
        assert_eq!(normalize_path("/a%2"), b"/a%2");
    }

    proptest! {
        /// A path that is its own normal form up to case needs no normalizing, and the
        /// normal form is stable.
        #[test]
        fn the_shortcut_never_skips_a_path_that_normalizes_differently(path in "[ -~]{0,40}") {
            let normal = normalize_path(&path);
            if !path.contains('%') {
                let again = normalize_path(&String::from_utf8_lossy(&normal));
                prop_assert_eq!(again, normal.clone());
            }
            if !needs_normalizing(&path) {
                let plain = path.split(['?', '#']).next().unwrap_or_default();
                prop_assert_eq!(plain.as_bytes(), normal.as_slice());
            }
        }
    }
}
