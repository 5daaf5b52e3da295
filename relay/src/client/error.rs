//! Every way a check can fail, named, so status, metrics and retries can tell them apart.

use std::time::Duration;

use crate::bundle::VerifyError;

/// What kind of failure, for status, metrics and the retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Name resolution failed.
    Dns,
    /// TCP connect failed or was refused.
    Connect,
    /// TLS handshake or certificate validation failed.
    Tls,
    /// The server or the transfer took too long, or was slower than the floor.
    Timeout,
    /// 401: no or wrong credentials.
    Unauthorized,
    /// 403: the credential's role does not allow this.
    Forbidden,
    /// 404: nothing there.
    NotFound,
    /// 429: asked to slow down.
    RateLimited,
    /// 5xx.
    ServerError,
    /// Another unexpected status.
    UnexpectedStatus,
    /// The bundle was larger than allowed.
    TooLarge,
    /// The bundle did not verify.
    Verification,
    /// The bundle is older than the one held.
    Older,
    /// Local trouble: disk, configuration.
    Local,
    /// The settings cannot work (bad URL, unreadable CA file).
    Config,
    /// The connection broke mid-transfer.
    Network,
}

impl FailureKind {
    /// The kind of an HTTP status that is not what was asked for.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 => FailureKind::Unauthorized,
            403 => FailureKind::Forbidden,
            404 => FailureKind::NotFound,
            429 => FailureKind::RateLimited,
            500..=599 => FailureKind::ServerError,
            _ => FailureKind::UnexpectedStatus,
        }
    }
}

/// A failed check, with what the operator needs: the kind, a message, and when the
/// server asked us to come back.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SyncError {
    pub kind: FailureKind,
    pub message: String,
    /// From `Retry-After`.
    pub retry_after: Option<Duration>,
    /// When the kind is `Verification` or `Older`, the rule broken.
    pub verify: Option<Box<VerifyError>>,
}

/// Where a source's CA is set, as a TLS failure's fix names it.
pub(crate) const SOURCE_CA_SETTING: &str =
    "the source's `ca` (the proxy's `ca` when the HTTPS proxy's certificate is the one refused)";

impl SyncError {
    /// A failure of `kind`; any `user:password@` of a URL in `message` is redacted, since
    /// the message goes to status, logs and the console.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: super::settings::redact_userinfo(&message.into()),
            retry_after: None,
            verify: None,
        }
    }

    /// Classifies a transport error of a request from reqwest. A TLS failure is named in
    /// plain words with its fix, as `relay ping` names it, where the CA is given by
    /// `ca_setting` (a source's `ca`, `--tlscacert` for a command, "the supervisor's
    /// `ca`"); requests to an [`Endpoint`](super::Endpoint) use its
    /// [`transport_error`](super::Endpoint::transport_error).
    pub fn transport_with(url: &str, e: &reqwest::Error, ca_setting: &str) -> Self {
        if let Some(tls) = super::tls::rustls_error_in(e) {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            let (cause, fix) = super::tls::explain(tls, &host, ca_setting);
            return Self::new(
                FailureKind::Tls,
                format!("{url}: TLS handshake failed: {cause}; {fix}"),
            );
        }
        let mut chain = error_chain(e);
        // reqwest names the URL in its message; this one says it first already.
        if let Some(u) = e.url() {
            chain = chain.replace(&format!(" for url ({u})"), "");
        }
        let lower = chain.to_ascii_lowercase();
        let kind = if e.is_timeout() {
            FailureKind::Timeout
        } else if lower.contains("dns error")
            || lower.contains("failed to lookup address")
            || lower.contains("name or service not known")
        {
            FailureKind::Dns
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
            || lower.contains("invalid peer")
        {
            FailureKind::Tls
        } else if e.is_connect() {
            FailureKind::Connect
        } else {
            FailureKind::Network
        };
        Self::new(kind, format!("{url}: {chain}"))
    }

    /// Classifies an HTTP status that is not what we asked for.
    pub fn status(url: &str, response: &reqwest::Response) -> Self {
        let status = response.status();
        let kind = FailureKind::of_status(status.as_u16());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Self {
            retry_after,
            ..Self::new(kind, format!("{url}: HTTP {status}"))
        }
    }

    pub fn verification(url: &str, e: VerifyError) -> Self {
        let kind = match &e {
            VerifyError::NotNewer { .. } => FailureKind::Older,
            VerifyError::Read(_) => FailureKind::Network,
            _ => FailureKind::Verification,
        };
        Self {
            message: super::settings::redact_userinfo(&format!("{url}: {e}")),
            kind,
            retry_after: None,
            verify: Some(Box::new(e)),
        }
    }
}

impl SyncError {
    /// What the operator can do about it, for a command's `hint:` line; `None` where the
    /// message already says (a TLS failure names its fix).
    pub fn next_step(&self) -> Option<&'static str> {
        use FailureKind as K;
        if let Some(rule) = &self.verify {
            return Some(rule.next_step());
        }
        Some(match self.kind {
            K::Dns => {
                "the host name does not resolve here: check its spelling, /etc/hosts and the DNS server (`relay ping URL` walks each step)"
            }
            K::Connect => {
                "nothing answers at that address: is the relay running there, on that port, and does a firewall let this host in? `relay ping URL` walks each step"
            }
            K::Tls | K::Local | K::Config => return None,
            K::Timeout => {
                "no answer in time: check the address, the firewall and any proxy (`relay ping URL` walks each step)"
            }
            K::Unauthorized => {
                "check the credential: --user with --password (or RELAY_PASSWORD), or --token (RELAY_TOKEN); a source's credential in its configuration; `relay users add` sets a user's password on the relay"
            }
            K::Forbidden => {
                "the credential is good but its role does not allow this: use a user whose role does (reader downloads, uploader uploads, admin does everything; `relay users add NAME --role ROLE` on the relay)"
            }
            K::NotFound => {
                "check the URL: a relay is named by https://HOST:PORT alone, a custom location by the bundle file's full URL"
            }
            K::RateLimited => "the server asks to slow down: try again later",
            K::ServerError => "the server failed: its log says why",
            K::UnexpectedStatus => {
                "is that address a relay? `relay ping URL` says what answers there"
            }
            K::TooLarge => {
                "if a bundle this large is expected, raise the limit (--max-bytes of `relay download`, the agent's max_bundle_bytes)"
            }
            K::Network => {
                "the connection broke: run the command again (a download resumes where it stopped)"
            }
            K::Verification | K::Older => return None,
        })
    }
}

/// What to do next about a command's error, for the `hint:` line under it: from the first
/// cause in the chain that knows (a failed check, a refused bundle, or the kind of a file
/// or network error). `None` when none does, or the message already says.
pub fn next_step<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Option<&'static str> {
    for cause in chain {
        if let Some(e) = cause.downcast_ref::<SyncError>() {
            return e.next_step();
        }
        if let Some(e) = cause.downcast_ref::<VerifyError>() {
            return Some(e.next_step());
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && let Some(step) = crate::stdout::io_next_step(e.kind())
        {
            return Some(step);
        }
    }
    None
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    when.duration_since(std::time::SystemTime::now()).ok()
}

/// The error and its causes, joined: reqwest's top-level message alone hides the cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            None,
            "in the past"
        );
        assert!(parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT").is_some());
        assert_eq!(parse_retry_after("soon"), None);
    }
}
