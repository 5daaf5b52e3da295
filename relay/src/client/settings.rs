//! The settings of a source and of the schedule that checks it, shared by the relay's
//! configuration (`[[sources]]`, `[schedule]`) and defender-lite's, so both read the same
//! TOML the same way.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One source of bundles (`[[sources]]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `upstream` (a relay or the origin speaking this API) or `custom_location` (a URL
    /// of a bundle file).
    pub kind: crate::client::SourceKind,
    pub url: String,
    /// Access token (upstream), sent as `Authorization: Bearer`.
    pub token: Option<crate::client::Secret>,
    /// A file holding the token (a mounted secret), read at start instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Basic credential.
    pub user: Option<String>,
    pub password: Option<crate::client::Secret>,
    /// A file holding the password, read at start instead of `password`.
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) to trust for this source instead of the system's.
    pub ca: Option<PathBuf>,
    /// The server's public key, pinned (`sha256//BASE64` as curl's --pinnedpubkey, or
    /// `sha256:HEX`; several separated by `;`): checked besides `ca`; alone, it trusts a
    /// self-signed certificate with that key.
    #[serde(default)]
    pub ca_pin: Option<crate::client::tls::KeyPins>,
    /// A proxy for this source (otherwise HTTPS_PROXY / NO_PROXY apply).
    pub proxy: Option<ProxyConfig>,
    /// Ignore HTTPS_PROXY / NO_PROXY for this source.
    #[serde(default)]
    pub no_proxy: bool,
    /// Send the token or password over plain `http://` anyway (refused otherwise; a
    /// warning at every start when set).
    #[serde(default)]
    pub allow_insecure_credentials: bool,
}

/// Refuses a credential that would travel in clear: a token, user or password for an
/// `http://` URL, unless `allowed` (then `Ok(Some(warning))`). `what` names the setting
/// (`sources[0]`) in the messages.
pub fn check_credential_transport(
    what: &str,
    url: &str,
    has_credential: bool,
    allowed: bool,
) -> Result<Option<String>, String> {
    let clear = url
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if !clear || !has_credential {
        return Ok(None);
    }
    let url = redact_userinfo(url);
    if allowed {
        Ok(Some(format!(
            "{what}: its credential is sent in clear to {url} (allow_insecure_credentials = true)"
        )))
    } else {
        Err(format!(
            "{what}: {url} is plain http:// and would carry the credential in clear; use \
             https://, or set allow_insecure_credentials = true for it if the network is trusted"
        ))
    }
}

/// `text` (a URL, or a message quoting URLs, reqwest's among them) with every URL's
/// `user:password@` replaced by `***@`: for messages, status and logs.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | ')' | '"' | '\'' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&tail[userinfo_end..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

impl Schedule {
    /// The caps on one download of at most `max_bytes`.
    pub fn fetch_limits(&self, max_bytes: u64) -> super::FetchLimits {
        super::FetchLimits {
            max_bytes,
            min_bytes_per_sec: self.min_transfer_rate,
            floor_window: self.transfer_floor_window.0,
            deadline_floor: self.transfer_deadline.0,
        }
    }
}

impl SourceConfig {
    /// [`check_credential_transport`] for this source.
    pub fn check_credential_transport(&self, what: &str) -> Result<Option<String>, String> {
        let has = self.token.is_some() || self.password.is_some() || self.user.is_some();
        check_credential_transport(what, &self.url, has, self.allow_insecure_credentials)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<crate::client::Secret>,
    /// The proxy's own CA (a TLS-intercepting proxy).
    pub ca: Option<PathBuf>,
}

/// When sources are checked.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// The regular check (cron, 6 fields with seconds first, UTC): daily by default.
    pub check: String,
    /// A random delay of up to this much before each regular check, so that many relays
    /// do not ask at the same instant.
    pub jitter: HumanDuration,
    /// After a failed check, retry on this schedule until one succeeds: hourly.
    pub retry: String,
    /// While an upstream's watch channel is down, poll its manifest this often.
    pub poll_interval: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub request_timeout: HumanDuration,
    /// A download slower than this (bytes per second, over `transfer_floor_window`) is
    /// aborted and resumed at the next attempt.
    pub min_transfer_rate: u64,
    pub transfer_floor_window: HumanDuration,
    /// A whole download is cut after this plus its size at 256 KiB/s, and resumed at the
    /// next attempt (`client::fetch::DEADLINE_RATE`).
    pub transfer_deadline: HumanDuration,
    /// After a source fails, it is not asked again for `backoff_base`, doubling with each
    /// failure in a row up to `backoff_max` (plus random jitter), or for its Retry-After.
    pub backoff_base: HumanDuration,
    pub backoff_max: HumanDuration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            check: "0 0 3 * * *".into(),
            jitter: HumanDuration::secs(3600),
            retry: "0 0 * * * *".into(),
            poll_interval: HumanDuration::secs(15 * 60),
            connect_timeout: HumanDuration::secs(10),
            request_timeout: HumanDuration::secs(30),
            min_transfer_rate: 1024,
            transfer_floor_window: HumanDuration::secs(30),
            transfer_deadline: HumanDuration::secs(600),
            backoff_base: HumanDuration::secs(30),
            backoff_max: HumanDuration::secs(3600),
        }
    }
}

impl SourceConfig {
    /// Reads `token_file` and `password_file` into `token` and `password` (surrounding
    /// white space, such as the newline an editor or `kubectl create secret` leaves,
    /// removed). A secret given both inline and as a file, an unreadable file or an empty
    /// one is an error naming the key and the file.
    pub fn read_secret_files(&mut self) -> Result<(), String> {
        fn read(
            key: &str,
            file: &Option<PathBuf>,
            inline: &mut Option<crate::client::Secret>,
        ) -> Result<(), String> {
            let Some(path) = file else { return Ok(()) };
            if inline.is_some() {
                return Err(format!("give {key} or {key}_file, not both"));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{key}_file {}: {e}", path.display()))?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(format!("{key}_file {} is empty", path.display()));
            }
            *inline = Some(crate::client::Secret::new(secret));
            Ok(())
        }
        read("token", &self.token_file, &mut self.token)?;
        read("password", &self.password_file, &mut self.password)
    }

    /// The client endpoint for this source.
    pub fn endpoint(&self, schedule: &Schedule) -> crate::client::Endpoint {
        use crate::client::{Credential, Endpoint, ProxySettings};
        let mut e = Endpoint::new(&self.url);
        e.credential = match (&self.token, &self.user, &self.password) {
            (Some(t), _, _) => Credential::Bearer(t.clone()),
            (None, Some(u), Some(p)) => Credential::Basic {
                user: u.clone(),
                password: p.clone(),
            },
            _ => Credential::None,
        };
        e.ca = self.ca.clone();
        e.ca_pin = self.ca_pin.clone();
        e.no_env_proxy = self.no_proxy;
        e.proxy = self.proxy.as_ref().map(|p| ProxySettings {
            url: p.url.clone(),
            user: p.user.clone(),
            password: p.password.clone(),
            ca: p.ca.clone(),
        });
        e.connect_timeout = schedule.connect_timeout.0;
        e.request_timeout = schedule.request_timeout.0;
        e
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Self).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"24h\": {e}"))
        })
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_userinfo;

    #[test]
    fn userinfo_is_redacted_and_nothing_else() {
        for (url, shown) in [
            ("http://siem:pw@127.0.0.1:9/in", "http://***@127.0.0.1:9/in"),
            ("https://u@h/p@q", "https://***@h/p@q"),
            ("https://h:8083/x?a=b@c", "https://h:8083/x?a=b@c"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_userinfo(url), shown);
        }
        assert_eq!(
            super::redact_userinfo(
                "https://u:pw@h:1/x: error sending request for url (https://u:pw@h:1/x)"
            ),
            "https://***@h:1/x: error sending request for url (https://***@h:1/x)"
        );
        assert_eq!(super::redact_userinfo("no url here"), "no url here");
    }
}
