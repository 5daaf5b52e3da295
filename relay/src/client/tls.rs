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

/// A client configuration that trusts `certs` (and a server presenting one of them), and,
/// with `pins`, only a server whose public key one of them names; with `pins` and no
/// `certs`, a self-signed server certificate with such a key is trusted as pinned.
/// `Err` says why the settings make no trust store.
pub fn client_config(
    certs: Vec<CertificateDer<'static>>,
    pins: Option<KeyPins>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = if certs.is_empty() {
        if pins.is_none() {
            return Err("no CA certificate and no ca_pin".into());
        }
        None
    } else {
        Some(webpki_verifier(&certs, &provider).map_err(|e| format!("the CA file: {e}"))?)
    };
    let verifier = PinnedOrWebPki {
        inner,
        pinned: certs,
        pins,
        provider: Arc::clone(&provider),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // HTTP/1.1 only, as every client of `Endpoint::client` speaks it (see there).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// webpki's verifier with `certs` as the trust anchors.
fn webpki_verifier(
    certs: &[CertificateDer<'static>],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a certificate: {e}"))?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| e.to_string())
}

/// `ca_pin`: SHA-256 digests of server public keys (the certificate's
/// SubjectPublicKeyInfo), written as curl's `--pinnedpubkey` takes them, `sha256//BASE64`,
/// or as `sha256:HEX`; several separated by `;`. The digest of a certificate's key:
/// `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der |
/// openssl dgst -sha256 -binary | base64`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyPins(Vec<[u8; 32]>);

impl KeyPins {
    /// Whether `cert`'s public key is one of the pinned ones.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> Result<bool, Error> {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
        })?;
        let digest = crate::bundle::Sha256::of(parsed.subject_public_key_info().as_ref());
        Ok(self.0.contains(&digest.0))
    }
}

impl std::str::FromStr for KeyPins {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let mut pins = Vec::new();
        for pin in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let bytes = if let Some(b64) = pin.strip_prefix("sha256//") {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("ca_pin {pin:?}: not base64: {e}"))?
            } else if let Some(hex) = pin.strip_prefix("sha256:") {
                hex::decode(hex.replace(':', ""))
                    .map_err(|e| format!("ca_pin {pin:?}: not hex: {e}"))?
            } else {
                return Err(format!(
                    "ca_pin {pin:?}: write sha256//BASE64 (as curl's --pinnedpubkey) or sha256:HEX"
                ));
            };
            let digest: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                format!(
                    "ca_pin {pin:?}: a SHA-256 digest is 32 bytes, not {}",
                    b.len()
                )
            })?;
            pins.push(digest);
        }
        if pins.is_empty() {
            return Err("ca_pin is empty".into());
        }
        Ok(Self(pins))
    }
}

impl TryFrom<String> for KeyPins {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<KeyPins> for String {
    fn from(pins: KeyPins) -> Self {
        use base64::Engine;
        pins.0
            .iter()
            .map(|p| {
                format!(
                    "sha256//{}",
                    base64::engine::general_purpose::STANDARD.encode(p)
                )
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The server's public key is not one `ca_pin` names.
#[derive(Debug)]
pub struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server's public key matches no ca_pin")
    }
}

impl std::error::Error for PinMismatch {}

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
        Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<PinMismatch>().is_some() =>
        {
            (
                "the server's public key is not the one ca_pin names".into(),
                "check that you reach the right server, and the pin: openssl x509 -in \
                 cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst \
                 -sha256 -binary | base64"
                    .into(),
            )
        }
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

/// webpki's verifier, plus the pinned case and the key pins (see the module docs).
#[derive(Debug)]
struct PinnedOrWebPki {
    /// webpki with the CA file's certificates as anchors; none when only `ca_pin` is set.
    inner: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    pins: Option<KeyPins>,
    provider: Arc<rustls::crypto::CryptoProvider>,
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
        if let Some(pins) = &self.pins
            && !pins.matches(end_entity)?
        {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch)),
            )));
        }
        let check = |inner: &WebPkiServerVerifier, pinned: &[CertificateDer<'_>]| {
            webpki_or_pinned(
                inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                pinned,
                end_entity,
                server_name,
            )
        };
        match &self.inner {
            Some(inner) => check(inner, &self.pinned),
            None => {
                // Only ca_pin, and the key matched: the server's own certificate is the
                // anchor, so it must be self-signed, valid now and for the name, as a
                // certificate given in a CA file would be.
                let own = [end_entity.clone().into_owned()];
                let inner = webpki_verifier(&own, &self.provider).map_err(Error::General)?;
                check(&inner, &own)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// webpki's verdict, except a CA certificate presented as the server's own that is one of
/// `pinned`: webpki refuses it only once it has found it well-formed and valid now (time
/// is checked first, webpki's check_issuer_independent_properties), so what is left to
/// check is that it is the file's, byte for byte, and names the host.
fn webpki_or_pinned(
    verdict: Result<ServerCertVerified, Error>,
    pinned: &[CertificateDer<'_>],
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> Result<ServerCertVerified, Error> {
    match verdict {
        Err(Error::InvalidCertificate(ref e))
            if is_ca_used_as_end_entity(e)
                && pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) =>
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            Ok(ServerCertVerified::assertion())
        }
        other => other,
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
        self_signed(true).0
    }

    /// A self-signed certificate for 127.0.0.1 (a CA or a leaf), valid 2020 to 2030, and
    /// the curl-style pin of its key (`sha256//BASE64` of its SubjectPublicKeyInfo, as
    /// rcgen encodes it).
    fn self_signed(ca: bool) -> (CertificateDer<'static>, String) {
        use base64::Engine;
        use rcgen::PublicKeyData;
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let spki = crate::bundle::Sha256::of(&key.subject_public_key_info());
        let pin = format!(
            "sha256//{}",
            base64::engine::general_purpose::STANDARD.encode(spki.0)
        );
        (params.self_signed(&key).unwrap().der().clone(), pin)
    }

    fn verifier(pinned: Vec<CertificateDer<'static>>) -> PinnedOrWebPki {
        pinned_by(pinned, None)
    }

    /// The verifier `client_config` makes for a CA file holding `pinned` and `pins`.
    fn pinned_by(pinned: Vec<CertificateDer<'static>>, pins: Option<&str>) -> PinnedOrWebPki {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        PinnedOrWebPki {
            inner: (!pinned.is_empty()).then(|| webpki_verifier(&pinned, &provider).unwrap()),
            pinned,
            pins: pins.map(|p| p.parse().unwrap()),
            provider,
        }
    }

    fn pin_mismatch(r: &Result<ServerCertVerified, Error>) -> bool {
        matches!(r, Err(Error::InvalidCertificate(CertificateError::Other(o)))
            if o.0.downcast_ref::<PinMismatch>().is_some())
    }

    #[test]
    fn a_key_pin_alone_trusts_a_self_signed_certificate_valid_now_and_for_the_name() {
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let other_name = ServerName::try_from("relay.example").unwrap();
        for ca in [true, false] {
            let (cert, pin) = self_signed(ca);
            let (_, other_pin) = self_signed(ca);
            let v = pinned_by(Vec::new(), Some(&pin));
            let check = |v: &PinnedOrWebPki, name: &ServerName<'_>, now| {
                v.verify_server_cert(&cert, &[], name, &[], now)
            };
            assert!(check(&v, &ip, at(2026)).is_ok(), "ca {ca}");
            assert!(check(&v, &ip, at(2031)).is_err(), "expired, ca {ca}");
            assert!(check(&v, &other_name, at(2026)).is_err(), "name, ca {ca}");
            let wrong = pinned_by(Vec::new(), Some(&other_pin));
            assert!(pin_mismatch(&check(&wrong, &ip, at(2026))), "ca {ca}");
            // One of several pins is enough.
            let either = pinned_by(Vec::new(), Some(&format!("{other_pin}; {pin}")));
            assert!(check(&either, &ip, at(2026)).is_ok(), "ca {ca}");
            // Beside a CA file, both must hold: the file's own certificate and the pin.
            let both = pinned_by(vec![cert.clone()], Some(&pin));
            assert!(check(&both, &ip, at(2026)).is_ok(), "ca {ca}");
            let file_wrong = pinned_by(vec![self_signed(ca).0], Some(&pin));
            assert!(check(&file_wrong, &ip, at(2026)).is_err(), "ca {ca}");
            let pin_wrong = pinned_by(vec![cert.clone()], Some(&other_pin));
            assert!(pin_mismatch(&check(&pin_wrong, &ip, at(2026))), "ca {ca}");
        }
    }

    #[test]
    fn key_pins_are_read_as_curl_writes_them_or_in_hex() {
        let digest = [0xabu8; 32];
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let curl: KeyPins = "sha256//q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
            .parse()
            .unwrap();
        assert_eq!(curl, KeyPins(vec![digest]));
        assert_eq!(format!("sha256:{hex}").parse::<KeyPins>(), Ok(curl.clone()));
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            format!("sha256:{colons}").parse::<KeyPins>(),
            Ok(curl.clone())
        );
        assert_eq!(String::from(curl.clone()).parse::<KeyPins>(), Ok(curl));
        for bad in [
            "",
            "md5:abcd",
            "sha256:abcd",
            "sha256//not base64!",
            "sha256:zz",
        ] {
            let e = bad.parse::<KeyPins>().unwrap_err();
            assert!(e.contains("ca_pin"), "{bad}: {e}");
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
