//! A small blocking HTTP/1.1 client for the tests and the demo: one request per connection,
//! plain or over TLS (rustls).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| e.to_string())
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the whole answer (20 s at most).
pub fn request(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut stream = connect(port)?;
    exchange(&mut stream, method, port, path, headers, body)
}

/// Sends one request over HTTPS to 127.0.0.1:`port`, trusting only the CA certificate
/// (PEM) at `ca`, and reads the whole answer (20 s at most). The server's certificate must
/// name `127.0.0.1`.
pub fn https_request(
    ca: &Path,
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    // ring, which rcgen builds anyway: aws-lc-rs would add a C build. rustls deprecates ring's
    // provider for its lack of post-quantum key exchange, which a loopback demo does not need.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let tls = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(tls, connect(port)?);
    exchange(&mut stream, method, port, path, headers, body)
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Writes the request on `stream` and reads the answer.
fn exchange(
    stream: &mut impl ReadWrite,
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
    stream.flush().map_err(|e| format!("write: {e}"))?;
    // Read until the answer is complete, not until EOF: after a local reply Envoy waits up
    // to its delayed-close timeout (1 s) for the client to close first.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(response) = complete_response(&raw)? {
            return Ok(response);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return parse_response(&raw),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// A plain or a TLS stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `GET` 127.0.0.1:`port``path`.
pub fn get(port: u16, path: &str) -> Result<Response, String> {
    request("GET", port, path, &[], b"")
}

/// `POST` a form body (`application/x-www-form-urlencoded`) with `extra_headers`.
pub fn post_form(
    port: u16,
    path: &str,
    body: &str,
    extra_headers: &[(&str, &str)],
) -> Result<Response, String> {
    post_with_type(port, path, "application/x-www-form-urlencoded", body, extra_headers)
}

/// `POST` a JSON body (`application/json`) with `extra_headers`.
pub fn post_json(
    port: u16,
    path: &str,
    body: &str,
    extra_headers: &[(&str, &str)],
) -> Result<Response, String> {
    post_with_type(port, path, "application/json", body, extra_headers)
}

fn post_with_type(
    port: u16,
    path: &str,
    content_type: &str,
    body: &str,
    extra_headers: &[(&str, &str)],
) -> Result<Response, String> {
    let mut headers = vec![("content-type", content_type)];
    headers.extend_from_slice(extra_headers);
    request("POST", port, path, &headers, body.as_bytes())
}

/// The response, once `raw` holds all of it (by content-length or the last chunk).
fn complete_response(raw: &[u8]) -> Result<Option<Response>, String> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let rest = &raw[split + 4..];
    let length = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|l| l.trim().parse::<usize>().ok());
    let complete = match length {
        Some(length) => rest.len() >= length,
        None if head.contains("transfer-encoding: chunked") => rest.ends_with(b"0\r\n\r\n"),
        None => false,
    };
    if complete { parse_response(raw).map(Some) } else { Ok(None) }
}

pub(crate) fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Ok(Response { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("short chunk")?);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_chunked_answers() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.header("content-type"), r.body.as_slice()),
            (200, Some("application/json"), b"{}".as_slice())
        );
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.text()), (503, "abcde".to_owned()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn an_answer_is_complete_without_waiting_for_eof() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert!(complete_response(&full[..full.len() - 1]).unwrap().is_none());
        assert!(complete_response(full).unwrap().is_some());
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert!(complete_response(&chunked[..chunked.len() - 2]).unwrap().is_none());
        assert!(complete_response(chunked).unwrap().is_some());
    }
}
