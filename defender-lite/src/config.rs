//! defender-lite's configuration: one TOML file. `[[sources]]` and the timeouts are the
//! relay's own settings (`relay::client::settings`), so an agent follows a relay or a
//! custom location exactly as a downstream relay does. `[monitor]` holds the runtime
//! defense settings (`defender-lite monitor`, `model`, `audits`):
//!
//! ```toml
//! [monitor]
//! learning = "1h"                      # how long a new image's model learns
//! rules = "rules.toml"                 # runtime rules (defense::rules); none: alert on all
//! audit_file = "audits.jsonl"          # JSON lines; default <data_dir>/audits.jsonl
//! webhook = "https://siem.example/in"  # optional: each audit POSTed as JSON, with retries
//! interfaces = ["veth*"]              # capture DNS queries and SYNs here (patterns too); none: no capture
//! scan_every = "2s"                    # /proc passes (processes, sockets)
//! throttle_window = "60s"              # per container and area, at most
//! throttle_burst = 10                  #   this many audits per window
//! port_scan_ports = 25                 # a port scan: this many distinct ports,
//! port_scan_hosts = 25                 #   or this many distinct hosts, from one source
//! port_scan_window = "5s"              #   within this window
//! docker_socket = "/var/run/docker.sock"
//! ```

use std::path::{Path, PathBuf};

use relay::client::settings::{HumanDuration, Schedule, SourceConfig};
use serde::{Deserialize, Serialize};

/// Where the agent's configuration is read from unless `--config` names another file.
pub const DEFAULT_PATH: &str = "/etc/defender-lite/defender-lite.toml";

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where applied bundles, their indexes and the sync state live.
    pub data_dir: PathBuf,
    pub trust: Trust,
    /// Where bundles come from, tried in order (the next on failure).
    pub sources: Vec<SourceConfig>,
    pub sync: Sync,
    pub monitor: MonitorSettings,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// Public-key files (`relay keys generate --public`) whose bundles are accepted.
    pub keys: Vec<PathBuf>,
}

/// When the agent checks, and how patient it is with a source.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sync {
    /// The regular check: every 24 hours, plus up to `jitter` at random.
    pub check_every: HumanDuration,
    /// After a failed check, try again this often until one succeeds.
    pub retry_every: HumanDuration,
    pub jitter: HumanDuration,
    /// While an upstream's watch channel is down (a proxy that cuts long connections),
    /// check this often instead of waiting for an event.
    pub poll_every: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub request_timeout: HumanDuration,
    /// A download slower than this (bytes per second over `transfer_floor_window`) is cut
    /// and resumed at the next check.
    pub min_transfer_rate: u64,
    pub transfer_floor_window: HumanDuration,
    /// A whole download is cut after this plus its size at 256 KiB/s, and resumed at the
    /// next check.
    pub transfer_deadline: HumanDuration,
    /// Largest bundle accepted, in bytes.
    pub max_bundle_bytes: u64,
}

impl Default for Sync {
    fn default() -> Self {
        Self {
            check_every: HumanDuration::secs(24 * 3600),
            retry_every: HumanDuration::secs(3600),
            jitter: HumanDuration::secs(3600),
            poll_every: HumanDuration::secs(15 * 60),
            connect_timeout: HumanDuration::secs(10),
            request_timeout: HumanDuration::secs(30),
            min_transfer_rate: 1024,
            transfer_floor_window: HumanDuration::secs(30),
            transfer_deadline: HumanDuration::secs(600),
            max_bundle_bytes: 2 << 30,
        }
    }
}

impl Sync {
    /// The relay's schedule type carries the client timeouts the endpoints use.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            min_transfer_rate: self.min_transfer_rate,
            transfer_floor_window: self.transfer_floor_window,
            transfer_deadline: self.transfer_deadline,
            ..Schedule::default()
        }
    }
}

/// Runtime defense: `[monitor]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSettings {
    /// How long the model of an image seen for the first time learns before it is
    /// enforced.
    pub learning: HumanDuration,
    /// Entries one image's model may hold (processes, ports, addresses, names together);
    /// a model that reaches it learns nothing more, and one audit says so.
    pub model_max_entries: usize,
    /// The runtime rules file; none means the default rule only (every area alerts).
    pub rules: Option<PathBuf>,
    /// The JSON-lines audit file; none means `<data_dir>/audits.jsonl`.
    pub audit_file: Option<PathBuf>,
    /// Each audit is POSTed here as JSON (with retries), if set.
    pub webhook: Option<String>,
    /// Interfaces to capture DNS queries and SYNs on; none means no capture. A name with
    /// `*`, `?` or `[` is a pattern (`veth*`), captured as matching interfaces appear.
    pub interfaces: Vec<String>,
    /// Process and socket `/proc` pass interval.
    pub scan_every: HumanDuration,
    /// The audit throttle: per container and area, at most `throttle_burst` audits per
    /// `throttle_window`; the rest are counted in the next one.
    pub throttle_window: HumanDuration,
    pub throttle_burst: u32,
    /// A port scan: one source trying at least `port_scan_ports` distinct ports, or
    /// `port_scan_hosts` distinct hosts, within `port_scan_window`.
    pub port_scan_ports: usize,
    pub port_scan_hosts: usize,
    pub port_scan_window: HumanDuration,
    /// The Docker Engine API socket: container names and images, and `block`.
    pub docker_socket: PathBuf,
    /// The wait before an image whose apps could not be read (its process was gone, its
    /// filesystem refused) is read again, on its next event; doubled after each failure,
    /// up to an hour.
    pub app_read_retry: HumanDuration,
    /// The most files and directories indexed when a container's filesystem is read for
    /// its apps; a filesystem with more is not read (a failure, tried again later).
    pub app_read_max_entries: usize,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            learning: HumanDuration::secs(3600),
            model_max_entries: crate::defense::DEFAULT_MODEL_CAP,
            rules: None,
            audit_file: None,
            webhook: None,
            interfaces: Vec::new(),
            scan_every: HumanDuration::secs(2),
            throttle_window: HumanDuration::secs(60),
            throttle_burst: 10,
            port_scan_ports: 25,
            port_scan_hosts: 25,
            port_scan_window: HumanDuration::secs(5),
            docker_socket: PathBuf::from(crate::monitor::docker::DEFAULT_SOCKET),
            app_read_retry: HumanDuration::secs(30),
            app_read_max_entries: 1_000_000,
        }
    }
}

impl MonitorSettings {
    /// The audit file, given the data directory.
    pub fn audit_file(&self, data_dir: &Path) -> PathBuf {
        self.audit_file
            .clone()
            .unwrap_or_else(|| data_dir.join("audits.jsonl"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is the source, said once by whoever prints the chain.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ConfigError {
    /// The file is not there at all (a host where nothing was set up yet).
    pub fn is_missing(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What a command that reads the applied feeds says when there is no configuration: what
/// to do next, not only what failed.
pub fn no_feeds_yet(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no bundle applied yet (no configuration at {}): run `defender-lite sync --once` with \
         a configuration that names a relay, or pass `--feeds DIR`",
        path.display()
    )
}

impl Config {
    /// [`Config::load`] for a command that reads the applied feeds: a missing file is
    /// [`no_feeds_yet`].
    pub fn load_for_feeds(path: &Path) -> anyhow::Result<Self> {
        Config::load(path).map_err(|e| {
            if e.is_missing() {
                no_feeds_yet(path)
            } else {
                e.into()
            }
        })
    }

    /// Sources allowed to send their credential over plain `http://`
    /// (`allow_insecure_credentials = true`): what `sync` warns about at every start.
    pub fn insecure_credential_warnings(&self) -> Vec<String> {
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.check_credential_transport(&format!("sources[{i}]"))
                    .ok()
                    .flatten()
            })
            .collect()
    }

    /// Reads and checks the file. Relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = PathBuf::from("defender-lite-data");
        }
        rebase(&mut config.data_dir);
        config.trust.keys.iter_mut().for_each(rebase);
        for (i, s) in config.sources.iter_mut().enumerate() {
            s.ca.iter_mut()
                .chain(s.token_file.iter_mut())
                .chain(s.password_file.iter_mut())
                .for_each(rebase);
            s.read_secret_files()
                .map_err(|message| ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!("sources[{i}]: {message}"),
                })?;
        }
        let m = &mut config.monitor;
        m.rules.iter_mut().for_each(rebase);
        m.audit_file.iter_mut().for_each(rebase);
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if config.trust.keys.is_empty() {
            return Err(invalid(
                "trust.keys is empty: name the origin's public key file(s)".into(),
            ));
        }
        for (i, s) in config.sources.iter().enumerate() {
            if !(s.url.starts_with("https://") || s.url.starts_with("http://")) {
                return Err(invalid(format!(
                    "sources[{i}].url must be an http(s) URL: {}",
                    s.url
                )));
            }
            if s.token.is_some() && s.user.is_some() {
                return Err(invalid(format!(
                    "sources[{i}]: give a token or a user, not both"
                )));
            }
            if s.user.is_some() != s.password.is_some() {
                return Err(invalid(format!(
                    "sources[{i}]: user and password go together"
                )));
            }
            s.check_credential_transport(&format!("sources[{i}]"))
                .map_err(invalid)?;
        }
        let m = &config.monitor;
        if let Some(url) = &m.webhook
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(format!(
                "monitor.webhook must be an http(s) URL: {url}"
            )));
        }
        if let Some(url) = &m.webhook {
            // A credential in the URL (user:password@) never goes over plain http://.
            let authority = url.split("://").nth(1).unwrap_or("");
            let authority = authority.split('/').next().unwrap_or("");
            relay::client::settings::check_credential_transport(
                "monitor.webhook",
                url,
                authority.contains('@'),
                false,
            )
            .map_err(invalid)?;
        }
        if m.port_scan_ports < 2 || m.port_scan_hosts < 2 || m.port_scan_window.0.is_zero() {
            return Err(invalid(
                "monitor.port_scan_ports and port_scan_hosts must be at least 2, and port_scan_window more than 0".into(),
            ));
        }
        if m.throttle_burst == 0 {
            return Err(invalid(
                "monitor.throttle_burst must be at least 1 (set a rule's effect to disable to silence an area)".into(),
            ));
        }
        if m.scan_every.0.is_zero() {
            return Err(invalid("monitor.scan_every must be more than zero".into()));
        }
        Ok(config)
    }
}
