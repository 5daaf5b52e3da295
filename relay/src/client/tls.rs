//! TLS for the relay's clients (sources, `relay download`, `relay ping`, the agent's sync)
//! when a CA file is configured: the file's certificates are the trust anchors, and a
//! server that presents one of them itself (a self-signed certificate made by hand, the
//! usual custom location on nginx or IIS, which `openssl req -x509` marks as a CA) is
//! trusted as a pinned certificate, as curl and OpenSSL do.
//!
//! Pinned means: the very certificate of the file, byte for byte; valid now; naming the
//! host the client asked for; and the handshake signed by its key (the signature checks
//! are webpki's, unchanged). Anything else is webpki's verdict, unchanged: this is never
//! "accept anything".

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// A client configuration that trusts `certs` (and a server presenting one of them).
/// `Err` says why the certificates make no trust store.
pub fn client_config(certs: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a certificate of the CA file: {e}"))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("the CA file: {e}"))?;
    let verifier = PinnedOrWebPki {
        inner,
        pinned: certs,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS failure in plain words, and what fixes it: (cause, fix). `ca_setting` is where
/// this client is given a CA (`--tlscacert`, "the source's `ca`"). Shared by `relay ping`
/// and the sources' errors in status, so both say the same.
pub fn explain(e: &Error, host: &str, ca_setting: &str) -> (String, String) {
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => (
            "certificate signed by an unknown CA".into(),
            format!(
                "give the CA certificate that signed it with {ca_setting} (a dev relay's is \
                 <data_dir>/tls/ca.pem)"
            ),
        ),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            format!("certificate is not valid for {host}"),
            "connect by a name the certificate lists, or reissue it with this name (relay \
             certs init --name)"
                .into(),
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => (
            "certificate has expired".into(),
            "renew the server's certificate (a relay takes a new one on SIGHUP, no restart \
             needed)"
                .into(),
        ),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => (
            "certificate is not valid yet".into(),
            "check the clocks of this host and the server".into(),
        ),
        Error::InvalidCertificate(c) if is_ca_used_as_end_entity(c) => (
            format!(
                "the server presents a CA certificate as its own, and not the one {ca_setting} gives"
            ),
            format!(
                "give the server's own certificate file with {ca_setting} (a self-signed \
                 certificate is then trusted as pinned), or serve a leaf certificate signed by \
                 that CA"
            ),
        ),
        other => (
            other.to_string(),
            "check the server's certificate and TLS settings".into(),
        ),
    }
}

/// The rustls error somewhere in an error's chain (reqwest, hyper and `io::Error` wrap
/// it; an `io::Error` holds it as its payload, which `source()` skips).
pub fn rustls_error_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    let mut cause = Some(e);
    while let Some(link) = cause {
        if let Some(tls) = link.downcast_ref::<Error>() {
            return Some(tls);
        }
        // An io::Error's payload (itself another io::Error, at times) is not its source.
        cause = match link
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(payload) => Some(payload as &(dyn std::error::Error + 'static)),
            None => link.source(),
        };
    }
    None
}

/// webpki's "a CA certificate presented as the server's own" (rustls passes it on as an
/// `Other` certificate error).
pub fn is_ca_used_as_end_entity(e: &CertificateError) -> bool {
    matches!(e, CertificateError::Other(other)
        if other.0.downcast_ref::<webpki::Error>() == Some(&webpki::Error::CaUsedAsEndEntity))
}

/// webpki's verifier, plus the pinned case (see the module docs).
#[derive(Debug)]
struct PinnedOrWebPki {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            // webpki refuses a CA certificate as the server's own only once it has found
            // it well-formed and valid now (time is checked first, webpki's
            // check_issuer_independent_properties): what is left to check for a pinned
            // one is that it is the file's and names the host.
            Err(Error::InvalidCertificate(ref e))
                if is_ca_used_as_end_entity(e)
                    && self
                        .pinned
                        .iter()
                        .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(all(test, feature = "server"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rustls_error_is_found_inside_nested_io_errors() {
        let tls = Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        let outer = std::io::Error::other(inner);
        assert_eq!(rustls_error_in(&outer), Some(&tls));
        let (cause, fix) = explain(&tls, "relay.example", "--tlscacert");
        assert_eq!(cause, "certificate signed by an unknown CA");
        assert!(fix.starts_with("give the CA certificate that signed it with --tlscacert"));
        assert_eq!(rustls_error_in(&std::io::Error::other("plain")), None);
    }

    /// A self-signed CA certificate for 127.0.0.1, valid until the start of 2030.
    fn self_signed_ca() -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn verifier(pinned: Vec<CertificateDer<'static>>) -> PinnedOrWebPki {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            roots.add(cert.clone()).unwrap();
        }
        PinnedOrWebPki {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
            pinned,
        }
    }

    fn at(year: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from((year - 1970) * 365 * 86_400).unwrap(),
        ))
    }

    #[test]
    fn a_pinned_certificate_must_be_the_same_valid_now_and_for_the_name() {
        let cert = self_signed_ca();
        let v = verifier(vec![cert.clone()]);
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let check = |v: &PinnedOrWebPki, name: &ServerName<'_>, now| {
            v.verify_server_cert(&cert, &[], name, &[], now)
        };
        assert!(check(&v, &ip, at(2026)).is_ok());
        // Expired, or not yet valid: webpki's time check stands.
        assert!(matches!(
            check(&v, &ip, at(2031)),
            Err(Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. }
            ))
        ));
        assert!(matches!(
            check(&v, &ip, at(2019)),
            Err(Error::InvalidCertificate(
                CertificateError::NotValidYetContext { .. }
            ))
        ));
        // Another name.
        let other = ServerName::try_from("relay.example").unwrap();
        assert!(matches!(
            check(&v, &other, at(2026)),
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForNameContext { .. }
            ))
        ));
        // Another certificate in the file: not pinned, webpki's refusal stands.
        let v = verifier(vec![self_signed_ca()]);
        assert!(matches!(
            check(&v, &ip, at(2026)),
            Err(Error::InvalidCertificate(ref e)) if is_ca_used_as_end_entity(e)
        ));
    }
}
