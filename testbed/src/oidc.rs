//! The OpenID harness: a real authorization server (panva's `oidc-provider`, run by
//! `tests/support/oidc/provider.mjs`) with DPoP (RFC 9449) and certificate-bound tokens
//! (RFC 8705), and a real client that makes DPoP proofs (`oauth4webapi`, run by
//! `tests/support/oidc/dpop-client.mjs`), both on Node with the pinned `OIDC_PACKAGES` from
//! `oidc_modules_dir()` (passed to the scripts as `$TOKENGATE_OIDC_MODULES`). Certificates
//! for it are made with the openssl CLI (`write_certificates`). Every process is bounded in
//! time; the provider is killed on drop.
//!
//! The provider trusts a proxy in front of it: a DPoP proof's `htu` must name
//! `<x-forwarded-proto or http>://<x-forwarded-host or Host><path>`, and an mTLS client's
//! certificate comes in `client-certificate` (PEM, `encode_uri_component`),
//! CA-verified only with `client-certificate-ca-verified: SUCCESS`, as Auth0's
//! customer-managed edge passes it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{OIDC_PACKAGES, oidc_modules_dir, workspace_root};

/// How long the provider may take to listen (Node's start and an RSA key: about 1 s).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the DPoP client may run (its request gives up after 15 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one openssl command may run.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(20);

/// The token endpoint's path at the provider.
pub const TOKEN_PATH: &str = "/oauth/token";
/// The API every client_credentials token is for (the JWT's `aud`).
pub const RESOURCE: &str = "https://api.example";

/// `tests/support/oidc/`, the harness's scripts.
pub fn scripts_dir() -> PathBuf {
    workspace_root().join("tests/support/oidc")
}

/// Whether `node` runs: without it the harness cannot, and its tests skip.
pub fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The directory holding the pinned packages, or what is missing.
fn installed_packages() -> Result<PathBuf, String> {
    let dir = oidc_modules_dir();
    let missing: Vec<String> = OIDC_PACKAGES
        .iter()
        .filter(|(package, _)| !dir.join("node_modules").join(package).exists())
        .map(|(package, version)| format!("{package}@{version}"))
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(format!(
            "{} not installed under {}: `cargo xtask test` installs them (or set TOKENGATE_OIDC_MODULES)",
            missing.join(", "),
            dir.display()
        ))
    }
}

/// A fresh directory under the system's temporary one.
fn scratch_dir(name: &str) -> Result<PathBuf, String> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tokengate-{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// `oidc-provider` on a free port of 127.0.0.1; killed on drop.
pub struct OidcProvider {
    child: Child,
    /// Held open: the provider exits when it closes (`--exit-with-stdin`), so it goes with
    /// this process even when drop never runs.
    _stdin: Option<ChildStdin>,
    port: u16,
    https: bool,
    /// Holds `clients.json` and `provider.log` (its stderr); removed on drop.
    dir: PathBuf,
}

impl OidcProvider {
    /// Starts the provider over plain HTTP, as behind a proxy, with `clients`: a JSON list of
    /// `{"client_id", "client_secret"}` (client_secret_basic or _post) or `{"client_id",
    /// "tls_client_auth_subject_dn"}` (tls_client_auth, certificate-bound tokens; the DN as
    /// RFC 4514 writes it, most specific first: `CN=app,O=org`). Other client metadata given
    /// is kept.
    pub fn start(clients: &Value) -> Result<OidcProvider, String> {
        Self::spawn(clients, None)
    }

    /// As `start`, serving HTTPS with `certificate` and `key` (PEM), for a client that calls
    /// the provider itself.
    pub fn start_https(clients: &Value, certificate: &Path, key: &Path) -> Result<OidcProvider, String> {
        Self::spawn(clients, Some((certificate, key)))
    }

    fn spawn(clients: &Value, tls: Option<(&Path, &Path)>) -> Result<OidcProvider, String> {
        let modules = installed_packages()?;
        let dir = scratch_dir("oidc-provider")?;
        let clients_file = dir.join("clients.json");
        std::fs::write(&clients_file, clients.to_string())
            .map_err(|e| format!("{}: {e}", clients_file.display()))?;
        let log_path = dir.join("provider.log");
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut command = Command::new("node");
        command.arg(scripts_dir().join("provider.mjs")).arg("0").arg(&clients_file).arg("--exit-with-stdin");
        if let Some((certificate, key)) = tls {
            command.arg("--tls").arg(certificate).arg(key);
        }
        // stderr to a file: a pipe nobody reads would stall the provider once full.
        command
            .env("TOKENGATE_OIDC_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command.spawn().map_err(|e| format!("node: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut provider = OidcProvider { child, _stdin: stdin, port: 0, https: tls.is_some(), dir };
        let stdout = stdout.ok_or("no stdout from the provider")?;
        let (ready_line, ready) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = ready_line.send(lines.next());
            // Nothing else is printed; read on all the same, so a stray line never blocks it.
            lines.for_each(drop);
        });
        let line = match ready.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => return Err(format!("the provider stopped before it was ready:\n{}", provider.log())),
            Err(_) => {
                return Err(format!("the provider was not ready in {START_TIMEOUT:?}:\n{}", provider.log()));
            }
        };
        let ready: Value = serde_json::from_str(&line).map_err(|e| format!("ready line {line:?}: {e}"))?;
        provider.port = ready["port"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .filter(|_| ready["ready"] == true)
            .ok_or_else(|| format!("not a ready line: {line}"))?;
        Ok(provider)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http(s)://127.0.0.1:<port>/oauth/token`.
    pub fn token_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{TOKEN_PATH}", self.port)
    }

    /// What the provider logged so far: one JSON line per request (the URL it took as called,
    /// the forwarded and certificate headers, the proof's htm and htu, the answer's error) and
    /// one per refused grant (with oidc-provider's detail).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("provider.log")).unwrap_or_default()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asks `token_url` for a DPoP-bound token with client credentials through oauth4webapi
/// (a fresh ES256 key, client_secret_post, `extra` as more form parameters). `ca_file`: a
/// CA to trust for an `https://` URL (oauth4webapi refuses `http://`). `htu_mismatch`: the
/// proof names another URL than `token_url` (same origin, path `/elsewhere/token`), which a
/// provider that checks proofs refuses. Ok with `{"status", "body", "jkt"?, "error"?}` for
/// any answer: `body` as the server sent it, `jkt` the proof key's thumbprint on a success,
/// `error` when oauth4webapi refused a non-error answer; Err when no answer came.
pub fn dpop_token(
    token_url: &str,
    ca_file: Option<&Path>,
    client_id: &str,
    secret: &str,
    extra: &[(&str, &str)],
    htu_mismatch: bool,
) -> Result<Value, String> {
    let modules = installed_packages()?;
    let mut command = Command::new("node");
    command.arg(scripts_dir().join("dpop-client.mjs")).arg(token_url).arg(client_id).arg(secret);
    command.args(extra.iter().map(|(name, value)| format!("{name}={value}")));
    if htu_mismatch {
        command.arg("--htu-mismatch");
    }
    command.env("TOKENGATE_OIDC_MODULES", &modules);
    if let Some(ca) = ca_file {
        command.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let output = run_bounded(command, CLIENT_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let answer: Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("dpop-client.mjs printed no answer ({e}):\n{stdout}{stderr}"))?;
    if answer.get("status").is_some() {
        Ok(answer)
    } else {
        Err(format!("dpop-client.mjs: no answer: {}{stderr}", answer["error"]))
    }
}

/// Runs `command` to its end, `timeout` at most (then kills it), and collects its output.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{:?}: {e}", command.get_program()))?;
    // Read both pipes while it runs: a full pipe would stall it.
    let readers = [child.stdout.take().map(read_all), child.stderr.take().map(read_all)];
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{:?} did not finish in {timeout:?}", command.get_program()));
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let [stdout, stderr] = readers.map(|reader| reader.and_then(|r| r.join().ok()).unwrap_or_default());
    Ok(Output { status, stdout, stderr })
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The claims of a JWT (its payload, base64url JSON), unverified.
pub fn jwt_payload(token: &str) -> Result<Value, String> {
    let payload = token.split('.').nth(1).ok_or_else(|| format!("not a JWT: {token:?}"))?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|e| format!("JWT payload: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload: {e}"))
}

/// RFC 8705's `x5t#S256` of the first certificate in `pem`: base64url(SHA-256(DER)).
pub fn certificate_thumbprint(pem: &str) -> Result<String, String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("certificate: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(der.as_ref())))
}

/// `text` percent-encoded as JavaScript's `encodeURIComponent` does: how the
/// `client-certificate` header carries a PEM (the provider reads it with
/// `decodeURIComponent`), and fit for a form value too.
pub fn encode_uri_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// What `write_certificates` made (PEM files).
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA that signed the other two.
    pub ca: PathBuf,
    /// For `127.0.0.1` and `localhost`.
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    /// A TLS client certificate (extended key usage clientAuth).
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

/// Makes, with the openssl CLI, a CA (`ca.{crt,key}`), a server certificate for 127.0.0.1
/// and localhost (`server.{crt,key}`) and a client certificate whose subject is
/// `client_subject` in openssl's `-subj` form, least specific first (`/O=org/CN=app`, which
/// RFC 4514 writes `CN=app,O=org`), into `dir`. P-256 keys, valid for 2 days.
pub fn write_certificates(dir: &Path, client_subject: &str) -> Result<Certificates, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = |name: &str| dir.join(name);
    let made = Certificates {
        ca: file("ca.crt"),
        server_certificate: file("server.crt"),
        server_key: file("server.key"),
        client_certificate: file("client.crt"),
        client_key: file("client.key"),
    };
    let ca_key = file("ca.key");
    openssl(
        &made.ca,
        &ca_key,
        "/CN=tokengate OIDC test CA",
        None,
        &["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"],
    )?;
    let leaf = |usage: &'static str, extra: Option<&'static str>| {
        let mut extensions = vec!["basicConstraints=critical,CA:FALSE", usage];
        extensions.extend(extra);
        extensions
    };
    openssl(
        &made.server_certificate,
        &made.server_key,
        "/CN=localhost",
        Some((&made.ca, &ca_key)),
        &leaf("extendedKeyUsage=serverAuth", Some("subjectAltName=IP:127.0.0.1,DNS:localhost")),
    )?;
    openssl(
        &made.client_certificate,
        &made.client_key,
        client_subject,
        Some((&made.ca, &ca_key)),
        &leaf("extendedKeyUsage=clientAuth", None),
    )?;
    Ok(made)
}

/// `openssl req -x509` for a new P-256 key: self-signed, or signed by `issuer` (certificate,
/// key).
fn openssl(
    certificate: &Path,
    key: &Path,
    subject: &str,
    issuer: Option<(&Path, &Path)>,
    extensions: &[&str],
) -> Result<(), String> {
    let mut command = Command::new("openssl");
    command.args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]);
    command.arg("-keyout").arg(key).arg("-out").arg(certificate).args(["-subj", subject, "-days", "2"]);
    if let Some((issuer_certificate, issuer_key)) = issuer {
        command.arg("-CA").arg(issuer_certificate).arg("-CAkey").arg(issuer_key);
    }
    for extension in extensions {
        command.args(["-addext", extension]);
    }
    let output = run_bounded(command, OPENSSL_TIMEOUT).map_err(|e| format!("openssl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl req for {subject} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_is_encoded_as_encode_uri_component_does() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB+/a=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            encode_uri_component(pem),
            "-----BEGIN%20CERTIFICATE-----%0AMIIB%2B%2Fa%3D%0A-----END%20CERTIFICATE-----%0A"
        );
    }

    #[test]
    fn a_jwt_payload_is_read() {
        let token = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(r#"{"cnf":{"jkt":"abc"}}"#));
        assert_eq!(jwt_payload(&token).unwrap()["cnf"]["jkt"], "abc");
        assert!(jwt_payload("opaque").is_err());
    }
}
