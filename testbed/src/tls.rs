//! Certificates made at test time for the TLS hops: one CA; a server certificate for a
//! production listener on loopback; a gateway certificate the edges verify; an edge client
//! certificate the gateways require; and a client certificate from another CA, which the
//! gateways must refuse. `envoy/fleet/make-certs.sh` writes the same files with openssl for
//! docker compose. And the demo's: a CA made at each start and a server certificate for
//! `127.0.0.1` and `localhost` (`write_listener_certificates`; `envoy/make-demo-certs.sh`
//! is its openssl twin for docker compose).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The name the gateways' certificate carries and the edges verify.
pub const GATEWAY_NAME: &str = "gateway.tokengate.internal";
/// The name the edges' client certificate carries and the gateways accept.
pub const EDGE_NAME: &str = "edge.tokengate.internal";

/// This process's certificates, made on first use in a temporary directory.
pub fn test_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tokengate-tls-{}", std::process::id()));
        write_certificates(&dir).map(|()| dir)
    })
    .clone()
}

/// Writes `ca.crt`, `server.{crt,key}`, `gateway.{crt,key}`, `edge.{crt,key}` and
/// `stranger.{crt,key}` (signed by another CA) into `dir`.
pub fn write_certificates(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = authority("tokengate test CA")?;
    let other_ca = authority("another CA")?;
    std::fs::write(dir.join("ca.crt"), ca.pem()).map_err(|e| e.to_string())?;
    let loopback = [SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    loopback_server(dir, &ca)?;
    leaf(dir, "gateway", &ca, &[GATEWAY_NAME], &loopback, ExtendedKeyUsagePurpose::ServerAuth)?;
    leaf(dir, "edge", &ca, &[EDGE_NAME], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    leaf(dir, "stranger", &other_ca, &[EDGE_NAME], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(())
}

/// Writes `ca.crt` (a CA named `ca_name`, made now; its key is never written) and
/// `server.{crt,key}` (for `localhost` and `127.0.0.1`, signed by that CA) into `dir`: what
/// a token listener serves HTTPS with (`EnvoyOptions::listener_tls`). Each file is written
/// whole or not at all (a reader of `ca.crt` never sees half of it).
pub fn write_listener_certificates(dir: &Path, ca_name: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = authority(ca_name)?;
    loopback_server(dir, &ca)?;
    write_whole(&dir.join("ca.crt"), &ca.pem())
}

/// `server.{crt,key}` for `localhost` and `127.0.0.1`.
fn loopback_server(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>) -> Result<(), String> {
    let loopback = [SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    leaf(dir, "server", ca, &["localhost"], &loopback, ExtendedKeyUsagePurpose::ServerAuth)
}

/// Writes `text` to a temporary file beside `path`, then renames it to `path`.
fn write_whole(path: &Path, text: &str) -> Result<(), String> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, text).map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn authority(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    CertifiedIssuer::self_signed(params, key).map_err(|e| e.to_string())
}

fn leaf(
    dir: &Path,
    file_stem: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    extra: &[SanType],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(), String> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).map_err(|e| e.to_string())?;
    params.subject_alt_names.extend(extra.iter().cloned());
    params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, issuer).map_err(|e| e.to_string())?;
    write_whole(&dir.join(format!("{file_stem}.crt")), &cert.pem())?;
    write_whole(&dir.join(format!("{file_stem}.key")), &key.serialize_pem())
}
