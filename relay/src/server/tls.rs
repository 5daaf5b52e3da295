//! The server certificate: loaded from PEM files with rustls-pki-types (the maintained
//! successor of rustls-pemfile), reloadable without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ServerError;

pub struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Reloadable {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, ServerError> {
        let config = server_config(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: RwLock::new(config),
        })
    }

    /// The configuration (certificate, key) for the next connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn reload(&self) -> Result<(), ServerError> {
        let fresh = server_config(&self.cert, &self.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

fn server_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<ServerConfig>, ServerError> {
    let err = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("reading certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("parsing certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(ServerError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err("reading key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| ServerError::Tls(format!("certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
