//! Where a source is and how to reach it: URL, credential, CA, proxy, timeouts; and the
//! reqwest client (rustls, no OpenSSL) made from them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{FailureKind, SyncError};

/// A password or token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credential {
    #[default]
    None,
    Basic {
        user: String,
        password: Secret,
    },
    Bearer(Secret),
}

/// An HTTP(S) proxy given in configuration (the environment's `HTTPS_PROXY` and
/// `NO_PROXY` apply when none is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The proxy's own CA, for a TLS-intercepting proxy.
    pub ca: Option<PathBuf>,
}

/// A source's address and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub credential: Credential,
    /// CA certificates (PEM) to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// Public keys the server's certificate must have (`client::tls::KeyPins`).
    pub ca_pin: Option<super::tls::KeyPins>,
    pub proxy: Option<ProxySettings>,
    /// Ignore `HTTPS_PROXY`/`NO_PROXY` (for loopback tests and direct links).
    pub no_env_proxy: bool,
    pub connect_timeout: Duration,
    /// Limit for small requests (manifest, ping); downloads use the transfer floor instead.
    pub request_timeout: Duration,
    /// Where the operator gives this endpoint's CA, as a TLS failure's fix names it: a
    /// source's `ca` setting by default, `--tlscacert` for a command.
    pub ca_setting: &'static str,
}

impl Endpoint {
    /// A transport error of a request to this endpoint, its TLS fix naming
    /// [`Endpoint::ca_setting`].
    pub fn transport_error(&self, url: &str, e: &reqwest::Error) -> SyncError {
        SyncError::transport_with(url, e, self.ca_setting)
    }

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credential: Credential::None,
            ca: None,
            ca_pin: None,
            proxy: None,
            no_env_proxy: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            ca_setting: super::error::SOURCE_CA_SETTING,
        }
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// Builds the HTTP client for this endpoint.
    ///
    /// It speaks HTTP/1.1 only. A relay answers the two requests a follower makes most over
    /// HTTP/1.1 on its lean path (`server/lean.rs`): an idle watch channel costs the relay
    /// about 5 KB there against about 32 KB as an HTTP/2 connection in hyper, and a
    /// conditional check about half the CPU. The price is a second connection while a
    /// download or check runs beside the open watch channel (pooled, closed when idle).
    pub fn client(&self) -> Result<reqwest::Client, SyncError> {
        // rustls with ring, whoever the caller is (the relay installs it at start; the
        // agent and library users need not know). A provider already installed stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.request_timeout.max(Duration::from_secs(30)))
            .user_agent(concat!("intelligence-relay/", env!("CARGO_PKG_VERSION")));
        let proxy_ca = self.proxy.as_ref().and_then(|p| p.ca.as_ref());
        if self.ca_pin.is_some()
            && self
                .proxy
                .as_ref()
                .is_some_and(|p| p.url.starts_with("https://"))
        {
            // One TLS configuration serves both handshakes: the proxy's certificate
            // would be held to the server's pins.
            return Err(SyncError::new(
                FailureKind::Config,
                "ca_pin cannot be used through an https:// proxy: pin with the CA file \
                 (`ca`) instead, or reach the proxy over http://",
            ));
        }
        if self.ca.is_some() || self.ca_pin.is_some() {
            // Only the file's certificates (and the proxy's CA), a server presenting one
            // of them trusted as pinned, and the key pins (`client::tls`).
            let mut certs = match &self.ca {
                Some(ca) => read_certs(ca)?,
                None => Vec::new(),
            };
            if let Some(proxy_ca) = proxy_ca {
                certs.extend(read_certs(proxy_ca)?);
            }
            let config = super::tls::client_config(certs, self.ca_pin.clone()).map_err(|e| {
                let what = self.ca.as_ref().map_or_else(
                    || "ca_pin".to_owned(),
                    |ca| format!("CA file {}", ca.display()),
                );
                SyncError::new(FailureKind::Config, format!("{what}: {e}"))
            })?;
            builder = builder.use_preconfigured_tls(config);
        } else if let Some(proxy_ca) = proxy_ca {
            let pem = read_pem(proxy_ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SyncError::new(
                    FailureKind::Config,
                    format!("CA file {}: {e}", proxy_ca.display()),
                )
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(p) = &self.proxy {
            let mut proxy = reqwest::Proxy::all(&p.url).map_err(|e| {
                SyncError::new(FailureKind::Config, format!("proxy URL {}: {e}", p.url))
            })?;
            if let Some(user) = &p.user {
                proxy = proxy.basic_auth(user, p.password.as_ref().map_or("", Secret::expose));
            }
            builder = builder.proxy(proxy);
        } else if self.no_env_proxy {
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map_err(|e| SyncError::new(FailureKind::Config, format!("HTTP client: {e}")))
    }

    /// Adds this endpoint's credential to a request.
    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Credential::None => req,
            Credential::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Credential::Bearer(token) => req.bearer_auth(token.expose()),
        }
    }
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>, SyncError> {
    std::fs::read(path).map_err(|e| {
        SyncError::new(
            FailureKind::Config,
            format!("CA file {}: {e}", path.display()),
        )
    })
}

/// The certificates of a PEM file (at least one).
pub(crate) fn read_certs(
    path: &PathBuf,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SyncError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| {
        SyncError::new(
            FailureKind::Config,
            format!("CA file {}: {e}", path.display()),
        )
    };
    let pem = read_pem(path)?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}
