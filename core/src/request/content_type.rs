//! Which body formats a token request may use (docs/behaviour.md, "Which requests tokengate handles").

use super::RequestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Form,
    Json,
}

/// The body format named by a `content-type` header: the media type is matched without
/// regard to case; a `charset` parameter, when present, must be UTF-8.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, RequestError> {
    let header = content_type.ok_or_else(|| {
        RequestError::bad("missing content-type (use application/x-www-form-urlencoded or application/json)")
    })?;
    let mut parts = header.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    let format = if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyFormat::Form
    } else if media_type.eq_ignore_ascii_case("application/json") {
        BodyFormat::Json
    } else {
        return Err(RequestError::bad(
            "unsupported content-type (use application/x-www-form-urlencoded or application/json)",
        ));
    };
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        let utf8 = value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8");
        if name.trim().eq_ignore_ascii_case("charset") && !utf8 {
            return Err(RequestError::bad("unsupported charset (use utf-8)"));
        }
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(body_format(Some(form)), Ok(BodyFormat::Form));
        assert_eq!(
            body_format(Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8")),
            Ok(BodyFormat::Form)
        );
        assert_eq!(body_format(Some("application/json")), Ok(BodyFormat::Json));
        assert_eq!(body_format(Some("application/json; charset=utf-8")), Ok(BodyFormat::Json));
        assert_eq!(body_format(Some("application/json;charset=\"utf-8\"")), Ok(BodyFormat::Json));
    }

    #[test]
    fn refused() {
        for ct in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/jsonx"),
            Some("multipart/form-data; boundary=x"),
            Some("application/json; charset=latin1"),
        ] {
            assert!(body_format(ct).is_err(), "{ct:?}");
        }
    }
}
