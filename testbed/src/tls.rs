//! Certificates made at test time for the TLS hops: one CA; a server certificate for a
//! production listener on loopback; a gateway certificate the edges verify; an edge client
//! certificate the gateways require; and a client certificate from another CA, which the
//! gateways must refuse. `envoy/fleet/make-certs.sh` writes the same files with openssl for
//! docker compose.

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
    leaf(dir, "server", &ca, &["localhost"], &loopback, ExtendedKeyUsagePurpose::ServerAuth)?;
    leaf(dir, "gateway", &ca, &[GATEWAY_NAME], &loopback, ExtendedKeyUsagePurpose::ServerAuth)?;
    leaf(dir, "edge", &ca, &[EDGE_NAME], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    leaf(dir, "stranger", &other_ca, &[EDGE_NAME], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(())
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
    std::fs::write(dir.join(format!("{file_stem}.crt")), cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{file_stem}.key")), key.serialize_pem()).map_err(|e| e.to_string())
}
