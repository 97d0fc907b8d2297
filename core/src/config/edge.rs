//! The options of the edge (docs/behaviour.md, "The edge"): the headers tokengate sets on
//! every IdP call, their names' rules, and the values read from the VM's environment.

use std::fmt;

use super::{ConfigError, header_name, non_empty, refuse};

/// A header value from the environment (a custom domain's `cname-api-key`): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvValue(..)")
    }
}

/// Auth0 reads the client's address from this header on its canonical tenant domain.
pub const DEFAULT_CLIENT_IP_HEADER: &str = "auth0-forwarded-for";
/// Auth0's customer-edge headers for mTLS client authentication.
pub const CLIENT_CERTIFICATE_HEADER: &str = "client-certificate";
pub const CLIENT_CERTIFICATE_VERIFIED_HEADER: &str = "client-certificate-ca-verified";
/// Headers no option may name: the request itself owns them (tokengate removes a client's
/// copy of every header an option names).
pub(super) const RESERVED_HEADERS: [&str; 7] =
    ["host", "content-type", "content-length", "authorization", "dpop", "transfer-encoding", "connection"];

/// Where and how to ask the global rate-limit service (see `rate_limit_service`).
/// A header an option makes tokengate's own: a lowercase name the request does not need.
pub(super) fn own_header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let name = header_name(field, name)?;
    match RESERVED_HEADERS.contains(&name.as_str()) {
        true => Err(refuse(
            field,
            format!("{name:?} belongs to the request; tokengate would remove the client's"),
        )),
        false => Ok(name),
    }
}

/// `upstream.env_headers`: each header's value from its variable, which must be set and
/// not empty (no IdP call may leave without it). The value never reaches an error.
pub(super) fn env_headers(
    raw: Vec<(String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, EnvValue)>, ConfigError> {
    let mut headers: Vec<(String, EnvValue)> = Vec::with_capacity(raw.len());
    for (name, variable) in raw {
        let field = format!("upstream.env_headers.{name}");
        let name = header_name(&field, &name)?;
        let owned = [DEFAULT_CLIENT_IP_HEADER, CLIENT_CERTIFICATE_HEADER, CLIENT_CERTIFICATE_VERIFIED_HEADER];
        if RESERVED_HEADERS.contains(&name.as_str()) || owned.contains(&name.as_str()) {
            return Err(refuse(field, "tokengate sets this header itself"));
        }
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(refuse(field, "the header is listed twice"));
        }
        let variable = non_empty(&field, &variable)?;
        // A value from a file (a Kubernetes Secret) often ends in a newline: trimmed. One
        // with a control character inside would break the header line: refused.
        match env(&variable).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
            Some(value) if value.chars().any(char::is_control) => {
                return Err(refuse(
                    field,
                    format!("environment variable {variable} holds a control character"),
                ));
            }
            Some(value) => headers.push((name, EnvValue(value))),
            None => {
                return Err(refuse(
                    field,
                    format!("environment variable {variable} is missing or empty in the Wasm VM"),
                ));
            }
        }
    }
    Ok(headers)
}
