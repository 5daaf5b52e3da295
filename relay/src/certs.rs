//! Development certificates: a local CA and a server certificate signed by it, made with
//! rcgen. For the zero-config start, for tests, and for operators trying the relay before
//! they bring their own PKI (see `certs/README.md`). Never a production CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists (use --force to replace the dev CA and certificate)")]
    Exists { path: PathBuf },
}

/// PEM texts of a dev CA and a server certificate it signed.
pub struct DevPki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
}

/// Makes a CA and a server certificate for `names` (DNS names or IP addresses), valid
/// from `now - 1 day` for `days`.
pub fn generate(names: &[String], now: OffsetDateTime, days: i64) -> Result<DevPki, CertError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Intelligence Relay development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(days.max(1) + 1);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("relay", String::as_str),
    );
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::days(1);
    leaf.not_after = now + Duration::days(days);
    let leaf_key = KeyPair::generate()?;
    let server = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(DevPki {
        ca_cert: ca_cert.pem(),
        server_cert: server.pem(),
        server_key: leaf_key.serialize_pem(),
    })
}

/// Names a dev server certificate covers by default.
pub fn default_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// Where `init` writes.
pub struct DevFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// Writes a dev CA certificate and a server certificate and key into `dir`. The CA's
/// private key is not kept: it signs once and is dropped, so a leaked dev CA file cannot
/// mint more certificates.
pub fn init(dir: &Path, names: &[String], days: i64, force: bool) -> Result<DevFiles, CertError> {
    let files = DevFiles::in_dir(dir);
    if !force {
        for p in [&files.ca_cert, &files.server_cert, &files.server_key] {
            if p.exists() {
                return Err(CertError::Exists { path: p.clone() });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let pki = generate(names, OffsetDateTime::now_utc(), days)?;
    write(&files.ca_cert, &pki.ca_cert, 0o644)?;
    write(&files.server_cert, &pki.server_cert, 0o644)?;
    write(&files.server_key, &pki.server_key, 0o600)?;
    Ok(files)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    crate::bundle::durable::write(
        path,
        text.as_bytes(),
        crate::bundle::durable::Access::Exactly(mode),
    )
    .map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}
