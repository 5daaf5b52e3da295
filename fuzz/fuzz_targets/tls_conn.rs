//! The server-side TLS connection driver (`server/tlsconn.rs`, `TlsConn::accept`, then
//! reads and writes) fed arbitrary client bytes on a real loopback connection, with the
//! relay's own TLS configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1) and a test
//! certificate made once. Seeds: what a rustls client sends in whole handshakes (TLS 1.3
//! and 1.2, with a request and close_notify), recorded against the same configuration.
#![no_main]

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use relay::server::fuzzing::{TlsConfig, TlsConn};
use rustls::ServerConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    net: fuzz::Loopback,
    config: Arc<ServerConfig>,
}

fn server_config() -> Arc<ServerConfig> {
    let dir = fuzz::scratch_dir().join("tls");
    let files = relay::certs::init(&dir, &relay::certs::default_names(), 30, true)
        .expect("making a test certificate");
    TlsConfig::load(files.server_cert, files.server_key)
        .expect("loading the test certificate")
        .config()
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness {
        net: fuzz::Loopback::new(),
        config: server_config(),
    })
}

/// Accepts any certificate: the seeds only need the client's bytes.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Everything a rustls client sends in one in-memory handshake with the relay's
/// configuration, then a request and close_notify.
fn client_transcript(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut client =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut server = rustls::ServerConnection::new(server_config()).unwrap();
    let mut sent = Vec::new();
    let mut requested = false;
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        sent.extend_from_slice(&to_server);
        let mut cursor = &to_server[..];
        while !cursor.is_empty() {
            server.read_tls(&mut cursor).unwrap();
        }
        server.process_new_packets().unwrap();
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).unwrap();
        }
        let mut cursor = &to_client[..];
        while !cursor.is_empty() {
            client.read_tls(&mut cursor).unwrap();
        }
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !requested {
            client
                .writer()
                .write_all(b"GET /api/v1/feeds/watch HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            client.send_close_notify();
            requested = true;
        } else if requested && !client.wants_write() {
            break;
        }
    }
    let mut plain = Vec::new();
    let _ = server.reader().read_to_end(&mut plain);
    sent
}

fn seeds() -> Vec<fuzz::Seed> {
    use rustls::version::{TLS12, TLS13};
    vec![
        (
            "tls13-h2".into(),
            client_transcript(&[&TLS13], &[b"h2", b"http/1.1"]),
        ),
        (
            "tls13-http1".into(),
            client_transcript(&[&TLS13], &[b"http/1.1"]),
        ),
        ("tls12".into(), client_transcript(&[&TLS12], &[])),
        (
            "tls12-13-no-alpn".into(),
            client_transcript(&[&TLS13, &TLS12], &[]),
        ),
    ]
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let h = harness();
    h.net.rt.block_on(async {
        let (mut client, server) = h.net.pair().await;
        let peer = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            // Take what the server sends until it closes, so it never waits on a full socket.
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        };
        let serve = async {
            let Ok(mut tls) = TlsConn::accept(server, Arc::clone(&h.config)).await else {
                return;
            };
            let _ = tls.alpn_protocol();
            let mut request = Vec::new();
            let _ = tls.read_to_end(&mut request).await;
            tls.release_buffers();
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
            let _ = tls.shutdown().await;
        };
        tokio::join!(peer, serve);
    });
});
