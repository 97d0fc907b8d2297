//! Token requests: what the client sent, read strictly (SPEC "Which requests it handles").
//! Anything that cannot be read exactly is refused with `400 invalid_request`: a request
//! that could not be counted must never be passed on, or it would bypass the limits.

mod basic;
mod content_type;
mod form;
mod json;

use crate::sorted::SortedMap;

pub use basic::parse_basic;
pub use content_type::{BodyFormat, body_format};
pub use form::parse_form;
pub use json::parse_json;

/// The request headers tokengate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub content_type: Option<String>,
    pub authorization: Option<String>,
}

/// A request refused before it reaches the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// 400, or 413 for a body over `max_body_bytes`.
    pub status: u16,
    pub description: String,
}

impl RequestError {
    pub fn bad(description: impl Into<String>) -> RequestError {
        RequestError { status: 400, description: description.into() }
    }

    pub fn too_large(max_body_bytes: usize) -> RequestError {
        RequestError {
            status: 413,
            description: format!("the request body is larger than {max_body_bytes} bytes"),
        }
    }
}

/// How tokengate treats a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `client_credentials` with a client secret: rate limit, quota, cache, coalescing.
    Cacheable,
    /// Any other grant, or `client_assertion`: forwarded to the IdP, never cached.
    Forward,
}

/// A token request as the IdP will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: String,
    /// From the body or the Basic header (they must agree when both are given).
    pub client_id: Option<String>,
    /// From the body or the Basic header.
    pub client_secret: Option<String>,
    /// Every body parameter but `client_id` and `client_secret`, by name.
    pub params: SortedMap<String>,
}

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";

impl TokenRequest {
    /// Reads a token request from its headers and complete body.
    pub fn parse(head: &RequestHead, body: &[u8]) -> Result<TokenRequest, RequestError> {
        let format = body_format(head.content_type.as_deref())?;
        if body.is_empty() {
            return Err(RequestError::bad("the request body is empty"));
        }
        let pairs = match format {
            BodyFormat::Form => parse_form(body)?,
            BodyFormat::Json => parse_json(body)?,
        };
        let mut params = SortedMap::new();
        for (name, value) in pairs {
            if let Err((name, _)) = params.insert_new(name, value) {
                return Err(RequestError::bad(format!("parameter {name} is repeated")));
            }
        }
        let body_id = params.remove("client_id").filter(|id| !id.is_empty());
        let body_secret = params.remove("client_secret");
        let (client_id, client_secret) = match parse_basic(head.authorization.as_deref())? {
            None => (body_id, body_secret),
            Some((basic_id, basic_secret)) => {
                if body_id.as_ref().is_some_and(|id| *id != basic_id) {
                    return Err(RequestError::bad(
                        "client_id in the body differs from the Basic authorization header",
                    ));
                }
                if body_secret.as_ref().is_some_and(|s| *s != basic_secret) {
                    return Err(RequestError::bad(
                        "client_secret in the body differs from the Basic authorization header",
                    ));
                }
                (Some(basic_id), Some(basic_secret))
            }
        };
        let grant_type = params
            .remove("grant_type")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| RequestError::bad("missing grant_type"))?;
        if grant_type == GRANT_CLIENT_CREDENTIALS && client_id.is_none() {
            return Err(RequestError::bad("missing client_id"));
        }
        Ok(TokenRequest { grant_type, client_id, client_secret, params })
    }

    pub fn kind(&self) -> RequestKind {
        let has_secret = self.client_secret.as_ref().is_some_and(|s| !s.is_empty());
        let has_assertion = self.params.contains_key("client_assertion");
        if self.grant_type == GRANT_CLIENT_CREDENTIALS && has_secret && !has_assertion {
            RequestKind::Cacheable
        } else {
            RequestKind::Forward
        }
    }
}

#[cfg(test)]
mod tests;
