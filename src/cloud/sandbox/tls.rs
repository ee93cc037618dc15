//! The sandbox CA and node certificates (rcgen).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::registry::write_atomic;
use crate::cloud::{CloudError, CloudResult};

const CA_CN: &str = "ecmigrate sandbox CA";

fn err(e: impl std::fmt::Display) -> CloudError {
    CloudError::other(format!("sandbox: certificate error: {e}"))
}

fn ca_params() -> CloudResult<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, CA_CN);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ecmigrate sandbox");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(params)
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca").join("ca.pem")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca").join("ca.key")
}

/// Create the CA (certificate + 0600 key) unless it exists. The caller holds the registry lock.
pub fn ensure_ca(dir: &Path) -> CloudResult<PathBuf> {
    let cert = ca_cert_path(dir);
    if cert.exists() && ca_key_path(dir).exists() {
        return Ok(cert);
    }
    std::fs::create_dir_all(dir.join("ca")).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let ca = ca_params()?.self_signed(&key).map_err(err)?;
    write_atomic(&ca_key_path(dir), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert, ca.pem().as_bytes(), 0o644)?;
    Ok(cert)
}

/// Write `tls.crt` and `tls.key` (0600) for a node into `node_dir`, signed by the sandbox CA.
pub fn write_node_cert(
    dir: &Path,
    node_dir: &Path,
    node_id: &str,
) -> CloudResult<(PathBuf, PathBuf)> {
    let ca_key_pem = std::fs::read_to_string(ca_key_path(dir)).map_err(err)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(err)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(err)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let cert_path = node_dir.join("tls.crt");
    let key_path = node_dir.join("tls.key");
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}
