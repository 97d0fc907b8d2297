//! The token endpoint: reads a client-credentials request the way Auth0 does and answers
//! a token, or Auth0's error shapes.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};

use crate::http::{Reply, Request};

/// The parameters and client identity of a token request.
pub struct TokenRequest {
    pub params: HashMap<String, String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Sent with a `DPoP` proof header.
    pub dpop: bool,
}

impl TokenRequest {
    pub fn audience(&self) -> &str {
        self.params.get("audience").map_or("", String::as_str)
    }
}

pub fn parse(request: &Request) -> Option<TokenRequest> {
    let content_type = request.header("content-type").unwrap_or_default().to_ascii_lowercase();
    let mut params: HashMap<String, String> = HashMap::new();
    if content_type.starts_with("application/json") {
        let Value::Object(object) = serde_json::from_slice(&request.body).ok()? else {
            return None;
        };
        for (name, value) in object {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                // Auth0 reads `null` as an absent parameter (its SDKs send `"organization": null`).
                Value::Null => continue,
                _ => return None,
            };
            params.insert(name, text);
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(form_urlencoded::parse(&request.body).into_owned());
    } else {
        return None;
    }
    let (mut client_id, mut client_secret) =
        (params.get("client_id").cloned(), params.get("client_secret").cloned());
    if let Some((id, secret)) = request.header("authorization").and_then(basic_credentials) {
        client_id = Some(id);
        client_secret = Some(secret);
    }
    Some(TokenRequest { params, client_id, client_secret, dpop: request.header("dpop").is_some() })
}

fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((decode(id), decode(secret)))
}

pub fn error(status: u16, code: &str, description: &str) -> Reply {
    Reply::json(status, &json!({"error": code, "error_description": description}))
}

/// The answer for a parsed request, given the known clients; `token` names a new token.
pub fn answer(
    request: &TokenRequest,
    secrets: &HashMap<String, String>,
    expires_in: u64,
    token: impl FnOnce() -> String,
) -> Reply {
    if request.params.get("grant_type").is_none_or(|g| g.is_empty()) {
        return error(400, "invalid_request", "Missing required parameter: grant_type");
    }
    let Some(expected) = request.client_id.as_ref().and_then(|id| secrets.get(id)) else {
        return error(401, "access_denied", "Unauthorized");
    };
    let assertion = request.params.get("client_assertion").is_some_and(|a| !a.is_empty());
    if !assertion && request.client_secret.as_ref() != Some(expected) {
        return error(401, "access_denied", "Unauthorized");
    }
    // A DPoP proof gets a token bound to the client's key (RFC 9449 §5).
    let token_type = if request.dpop { "DPoP" } else { "Bearer" };
    let mut body = json!({"access_token": token(), "token_type": token_type, "expires_in": expires_in});
    if let Some(scope) = request.params.get("scope") {
        body["scope"] = json!(scope);
    }
    Reply::json(200, &body)
}
