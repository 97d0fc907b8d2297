//! The client certificate of an mTLS connection, as Auth0's customer edge forwards it
//! (`client-certificate`: the leaf certificate, PEM, URL-encoded). Envoy does not give a
//! filter the certificate itself, only its SHA-256 digest; the PEM comes from the
//! `x-forwarded-client-cert` header Envoy sets (`SANITIZE_SET`, `cert: true`). A header can
//! be sent by anyone, so the certificate is taken only when its own digest is the digest
//! of the certificate Envoy verified on this connection.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

/// Auth0 takes at most this many bytes in `client-certificate`.
pub const MAX_CLIENT_CERTIFICATE_BYTES: usize = 4096;

/// A certificate the connection presented and Envoy verified.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The PEM, URL-encoded: the value of `client-certificate`.
    pub header_value: String,
    /// SHA-256 of the DER: the `x5t#S256` a bound token names.
    pub thumbprint: [u8; 32],
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate").field("thumbprint", &self.thumbprint).finish_non_exhaustive()
    }
}

/// The certificate in `xfcc` whose DER digest is `connection_digest` (hex, as Envoy gives
/// `connection.sha256_peer_certificate_digest`); `None` when there is none, or when it is
/// longer than Auth0 accepts.
pub fn verified_certificate(xfcc: &str, connection_digest: &str) -> Option<ClientCertificate> {
    let digest = hex_32(connection_digest)?;
    elements(xfcc).find_map(|element| {
        let cert = pairs(element).find(|(key, _)| key.eq_ignore_ascii_case("cert"))?.1;
        if cert.len() > MAX_CLIENT_CERTIFICATE_BYTES {
            return None;
        }
        let pem = percent_encoding::percent_decode_str(cert).decode_utf8().ok()?;
        (der_digest(&pem)? == digest)
            .then(|| ClientCertificate { header_value: cert.to_owned(), thumbprint: digest })
    })
}

/// SHA-256 of the first certificate's DER in `pem`.
fn der_digest(pem: &str) -> Option<[u8; 32]> {
    let (_, rest) = pem.split_once("-----BEGIN CERTIFICATE-----")?;
    let (body, _) = rest.split_once("-----END CERTIFICATE-----")?;
    let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = BASE64.decode(base64).ok()?;
    Some(Sha256::digest(der).into())
}

fn hex_32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// Splits on `separator` outside double quotes (a quoted Subject may hold `,` and `;`).
fn split_unquoted(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    text.split(move |c: char| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => return c == separator && !quoted,
        }
        false
    })
}

/// The header's elements: one per proxy the request went through.
fn elements(xfcc: &str) -> impl Iterator<Item = &str> {
    split_unquoted(xfcc, ',')
}

/// An element's `key=value` pairs, values without their quotes.
fn pairs(element: &str) -> impl Iterator<Item = (&str, &str)> {
    split_unquoted(element, ';').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        Some((key.trim(), value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (DER bytes are what the digest covers).
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBKzCB0qADAgECAgEBMAoGCCqGSM49BAMCMA8xDTALBgNVBAMMBHRlc3QwHhcN\nMjYwMTAxMDAwMDAwWhcNMzYwMTAxMDAwMDAwWjAPMQ0wCwYDVQQDDAR0ZXN0MFkw\nEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END CERTIFICATE-----\n";

    fn url_encoded(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn digest_hex() -> String {
        der_digest(PEM).unwrap().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_certificate_whose_digest_is_the_connections_is_taken() {
        let cert = url_encoded(PEM);
        let xfcc = format!("By=spiffe://edge;Hash={};Subject=\"CN=a,O=b;c\";Cert=\"{cert}\"", digest_hex());
        let found = verified_certificate(&xfcc, &digest_hex()).unwrap();
        assert_eq!(found.header_value, cert);
        assert_eq!(hex_32(&digest_hex()), Some(found.thumbprint));
    }

    #[test]
    fn a_certificate_of_another_connection_is_not_taken() {
        let xfcc = format!("Hash={};Cert=\"{}\"", digest_hex(), url_encoded(PEM));
        let other = "00".repeat(32);
        assert_eq!(verified_certificate(&xfcc, &other), None);
        assert_eq!(verified_certificate(&xfcc, "not hex"), None);
        // The Hash field alone proves nothing: the certificate's own digest must match.
        let forged = format!("Hash={};Cert=\"{}\"", other, url_encoded(PEM));
        assert_eq!(verified_certificate(&forged, &other), None);
    }

    #[test]
    fn the_matching_element_is_found_among_several() {
        let xfcc = format!("Hash=ab;Cert=\"x\",By=a;Cert=\"{}\"", url_encoded(PEM));
        assert!(verified_certificate(&xfcc, &digest_hex()).is_some());
    }

    #[test]
    fn a_certificate_longer_than_auth0_takes_is_not_forwarded() {
        let padded = PEM.replace("\nMIIB", &format!("\n{}\nMIIB", " ".repeat(MAX_CLIENT_CERTIFICATE_BYTES)));
        let xfcc = format!("Cert=\"{}\"", url_encoded(&padded));
        assert_eq!(der_digest(&padded), der_digest(PEM));
        assert_eq!(verified_certificate(&xfcc, &digest_hex()), None);
    }

    #[test]
    fn garbage_never_panics() {
        for xfcc in [
            "",
            ",,;;==",
            "Cert=\"",
            "Cert=%ZZ",
            "Cert=\"-----BEGIN CERTIFICATE-----!!!-----END CERTIFICATE-----\"",
        ] {
            assert_eq!(verified_certificate(xfcc, &digest_hex()), None);
        }
    }
}
