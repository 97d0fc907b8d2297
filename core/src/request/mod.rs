//! Token requests: what the client sent, read strictly (docs/behaviour.md, "Which requests tokengate handles").
//! Anything that cannot be read exactly is refused with `400 invalid_request`: a request
//! that could not be counted must never be passed on, or it would bypass the limits.

mod basic;
mod client_cert;
mod content_type;
mod form;
mod json;
mod path;

use crate::sorted::SortedMap;

pub use basic::{BasicCredentials, parse_basic};
pub use client_cert::{ClientCertificate, MAX_CLIENT_CERTIFICATE_BYTES, verified_certificate};
pub use content_type::{BodyFormat, body_format};
pub use form::parse_form;
pub use json::parse_json;
pub use path::{needs_normalizing, normalize_path};

/// The request headers tokengate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// A DPoP proof (RFC 9449): the token will be bound to the client's key, so the request
    /// is forwarded with it and never answered from, nor stored in, the cache.
    pub dpop: Option<String>,
    /// `x-forwarded-client-cert` as Envoy set it, read with `forward_client_certificate`.
    pub forwarded_client_cert: Option<String>,
    /// The certificate the connection presented, checked against the connection (see
    /// `client_cert`).
    pub certificate: Option<ClientCertificate>,
    /// The client's address as Envoy determined it, without its port (read when
    /// `upstream.client_ip_header` is set).
    pub client_address: Option<String>,
}

/// A request refused before it reaches the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// 400, or 413 for a body over `max_body_bytes`.
    pub status: u16,
    pub description: String,
    /// The client id, when it was read before the request was refused (for its headers).
    pub client_id: Option<String>,
}

impl RequestError {
    pub fn bad(description: impl Into<String>) -> RequestError {
        RequestError { status: 400, description: description.into(), client_id: None }
    }

    pub fn too_large(max_body_bytes: usize) -> RequestError {
        RequestError {
            status: 413,
            description: format!("the request body is larger than {max_body_bytes} bytes"),
            client_id: None,
        }
    }
}

/// How tokengate treats a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `client_credentials` with a client secret, or authenticated by a verified client
    /// certificate alone: rate limit, quota, cache, coalescing.
    Cacheable,
    /// Any other grant, `client_assertion`, or a DPoP proof: forwarded to the IdP, never
    /// cached.
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
    /// The decoded Basic header when the client authenticated with one (client_secret_basic):
    /// part of the cache key as sent.
    pub basic: Option<Vec<u8>>,
    /// Sent with a DPoP proof.
    pub dpop: bool,
    /// The thumbprint of the verified client certificate the request came with: part of
    /// the key (a token bound to it is served to that certificate only), and the
    /// credential when there is no secret.
    pub certificate: Option<[u8; 32]>,
}

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// Longer client ids are refused: they would be stored and listed in full.
pub const MAX_CLIENT_ID_BYTES: usize = 256; // the refusal's text says 256

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
        let (client_id, client_secret, basic) = match parse_basic(head.authorization.as_deref())? {
            None => (body_id, body_secret, None),
            Some(BasicCredentials { client_id: basic_id, client_secret: basic_secret, decoded }) => {
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
                (Some(basic_id), Some(basic_secret), Some(decoded))
            }
        };
        if client_id.as_ref().is_some_and(|id| id.len() > MAX_CLIENT_ID_BYTES) {
            return Err(RequestError::bad("client_id is longer than 256 bytes"));
        }
        let grant_type = params.remove("grant_type").filter(|g| !g.is_empty()).ok_or_else(|| {
            RequestError { client_id: client_id.clone(), ..RequestError::bad("missing grant_type") }
        })?;
        if grant_type == GRANT_CLIENT_CREDENTIALS && client_id.is_none() {
            return Err(RequestError::bad("missing client_id"));
        }
        Ok(TokenRequest {
            grant_type,
            client_id,
            client_secret,
            params,
            basic,
            dpop: head.dpop.is_some(),
            certificate: head.certificate.as_ref().map(|c| c.thumbprint),
        })
    }

    pub fn kind(&self) -> RequestKind {
        let has_secret = self.client_secret.as_ref().is_some_and(|s| !s.is_empty());
        let has_assertion = self.params.contains_key("client_assertion");
        let authenticated = has_secret || self.certificate.is_some();
        if self.grant_type == GRANT_CLIENT_CREDENTIALS && authenticated && !has_assertion && !self.dpop {
            RequestKind::Cacheable
        } else {
            RequestKind::Forward
        }
    }
}

#[cfg(test)]
mod tests;

/// An address as Envoy gives it (`1.2.3.4:5678`, `[::1]:5678`) without its port; a bare
/// address is kept as it is.
pub fn address_without_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(address, |(ip, _)| ip);
    }
    match address.rsplit_once(':') {
        // One colon: IPv4 with a port. More: a bare IPv6 address.
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}
