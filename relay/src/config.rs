//! The relay's configuration: one TOML file, every key defaulted, `RELAY_*` environment
//! variables on top. Parsed once at start-up into [`Config`]; nothing re-reads the
//! environment afterwards. `deploy/relay.example.toml` shows every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::Limits;
pub use crate::client::settings::{HumanDuration, ProxyConfig, Schedule, SourceConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// What to do about it, for the command's `hint:` line.
    pub fn next_step(&self) -> Option<&'static str> {
        match self {
            ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Some(
                    "check the path (`relay serve` without --config starts with embedded defaults)",
                )
            }
            ConfigError::Read { .. } | ConfigError::Invalid(_) => None,
            ConfigError::Parse { .. } => Some(
                "fix that setting: relay.example.toml has every key with its comment and default (deploy/ in the source, /usr/share/doc/relay/examples/ from the package)",
            ),
            ConfigError::Env { .. } => Some("fix or unset that environment variable"),
        }
    }
}

/// The whole configuration. Sections follow DESIGN.md.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    pub auth: Auth,
    pub storage: Storage,
    pub trust: Trust,
    pub routes: Routes,
    pub limits: BundleLimits,
    /// Where this relay gets bundles, tried in order; empty: uploads only.
    pub sources: Vec<SourceConfig>,
    pub schedule: Schedule,
    /// Vendor archives (opaque, unsigned) mirrored for existing consoles.
    pub archives: Vec<ArchiveConfig>,
    /// How a central relay pushes to its supervisors.
    pub projects: Projects,
    /// The supervisors a central relay pushes each new bundle to; empty: none.
    pub supervisors: Vec<SupervisorConfig>,
    /// This relay is an origin: it imports public sources, signs and publishes.
    pub origin: Option<OriginConfig>,
}

/// The origin service (`[origin]`): on a schedule, fetch the inputs, import them, build
/// and sign a bundle with `key`, and make it current; downstream tiers receive it as any
/// bundle. See `server::origin`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The secret signing key (PKCS#8 PEM from `relay keys generate`).
    pub key: PathBuf,
    /// The origin's name in every manifest.
    pub name: String,
    /// When to run (cron, 6 fields with seconds first, UTC): every 6 hours by default.
    #[serde(default = "OriginConfig::default_schedule")]
    pub schedule: String,
    /// How long each bundle stays valid.
    #[serde(default = "OriginConfig::default_expires_in")]
    pub expires_in: HumanDuration,
    /// A feeds directory of hand-made files (`apps/`, ...) added to every bundle.
    pub feeds: Option<PathBuf>,
    /// The public sources, each imported into `<kind>/<feed>`.
    #[serde(default)]
    pub inputs: Vec<OriginInput>,
}

impl OriginConfig {
    fn default_schedule() -> String {
        "0 0 */6 * * *".into()
    }

    fn default_expires_in() -> HumanDuration {
        HumanDuration::secs(30 * 24 * 3600)
    }
}

/// One input of the origin (`[[origin.inputs]]`): a URL (`source`, fetched with resume
/// and conditional requests, credentials, CA and proxy as for sources) or a local `path`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OriginInput {
    /// `[a-z0-9_-]+`, unique: names the input in status and provenance.
    pub name: String,
    /// The feed kind it is imported as: `osv`, `domains` or `ips`.
    pub kind: crate::bundle::FeedKind,
    /// `domains`: `list`, `hosts`, `adblock` or `rpz` (required). `osv`: `zip`, `json`,
    /// `jsonl` or `dir` (default: from the URL's or path's extension). `ips`: none.
    pub format: Option<String>,
    /// The feed file it goes into (default: `name`); inputs of one kind that name the same
    /// feed are merged into one file.
    pub feed: Option<String>,
    /// Recorded in the bundle's provenance.
    pub license: Option<String>,
    /// A local file or directory.
    pub path: Option<PathBuf>,
    /// A URL, with kind `custom_location`.
    pub source: Option<SourceConfig>,
}

impl OriginInput {
    /// The feed file name (without extension).
    pub fn feed_name(&self) -> &str {
        self.feed.as_deref().unwrap_or(&self.name)
    }
}

/// Pushing to supervisors (`[projects]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Projects {
    /// Pushes in flight at a time, over all supervisors.
    pub concurrency: usize,
    /// After a failed push, the next try comes after this, doubling with each failure in
    /// a row up to `retry_max` (with random jitter), or after the supervisor's Retry-After.
    pub retry_min: HumanDuration,
    pub retry_max: HumanDuration,
}

impl Default for Projects {
    fn default() -> Self {
        Self {
            concurrency: 8,
            retry_min: HumanDuration::secs(10),
            retry_max: HumanDuration::secs(15 * 60),
        }
    }
}

/// A supervisor relay that central pushes to (`[[supervisors]]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// `[a-z0-9_-]+`, unique: how status, metrics and `relay projects push` name it.
    pub name: String,
    /// The supervisor relay, e.g. `https://supervisor-east.example:8083`.
    pub url: String,
    /// Central's credential there (role `uploader` on the supervisor).
    pub user: String,
    pub password: crate::client::Secret,
    /// CA certificate(s) to trust for this supervisor instead of the system's.
    pub ca: Option<PathBuf>,
    /// The supervisor's public key, pinned, as a source's `ca_pin`.
    #[serde(default)]
    pub ca_pin: Option<crate::client::tls::KeyPins>,
    /// A proxy on the way (otherwise HTTPS_PROXY / NO_PROXY apply).
    pub proxy: Option<ProxyConfig>,
    /// Ignore HTTPS_PROXY / NO_PROXY for this supervisor.
    #[serde(default)]
    pub no_proxy: bool,
    /// Push over plain `http://` with central's password anyway (a warning at every start).
    #[serde(default)]
    pub allow_insecure_credentials: bool,
}

impl SupervisorConfig {
    /// The client endpoint for this supervisor.
    pub fn endpoint(&self, schedule: &Schedule) -> crate::client::Endpoint {
        SourceConfig {
            kind: crate::client::SourceKind::Upstream,
            url: self.url.clone(),
            token: None,
            user: Some(self.user.clone()),
            password: Some(self.password.clone()),
            ca: self.ca.clone(),
            ca_pin: self.ca_pin.clone(),
            proxy: self.proxy.clone(),
            no_proxy: self.no_proxy,
            token_file: None,
            password_file: None,
            allow_insecure_credentials: self.allow_insecure_credentials,
        }
        .endpoint(schedule)
    }
}

/// A named vendor archive (`[[archives]]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `[a-z0-9_-]+`: the upload route is `/api/v1/archives/<name>`.
    pub name: String,
    /// Where consoles fetch it, e.g. `/intelligence/twistlock_feed.tar.gz`.
    pub path: String,
    /// Pull it from a URL on the sources' schedules (kind `custom_location`).
    pub source: Option<SourceConfig>,
    /// Pin the pulled archive to this SHA-256: anything else the URL serves is refused
    /// (and the held archive kept). An archive is not signed; a digest from where it was
    /// made is what ties it to its maker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<crate::bundle::Sha256>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address and port to listen on.
    pub address: SocketAddr,
    /// Serve plain HTTP instead of TLS. Only for a relay behind a TLS-terminating proxy.
    pub insecure_http: bool,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one address at most, so one host cannot take them all.
    /// Raise it for many agents behind one NAT or proxy.
    pub max_connections_per_address: usize,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: HumanDuration,
    /// Time allowed to send a request's headers.
    pub header_read_timeout: HumanDuration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Response bytes one connection holds at most, beyond the kernel's socket buffer,
    /// for a client that reads slowly or not at all: the TLS ciphertext queued for the
    /// socket, and for HTTP/2 each stream's send buffer. Fast clients are carried by the
    /// kernel's buffer, so a larger value does not make them faster.
    pub write_buffer_bytes: usize,
    /// A connection on which nothing moves, in either direction, for this long is
    /// closed (idle HTTP/2 connections, clients that stop reading).
    pub idle_timeout: HumanDuration,
    /// How long an HTTP/2 connection may stay without a response to a keep-alive ping.
    pub keep_alive_timeout: HumanDuration,
    /// How long shutdown waits for open requests (downloads, watchers are told to go).
    pub shutdown_grace: HumanDuration,
    /// One line per request at info (target `relay::access`): client, user, method,
    /// path, status, bytes, duration, user agent.
    pub access_log: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 8083)),
            insecure_http: false,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            tls_handshake_timeout: HumanDuration::secs(10),
            header_read_timeout: HumanDuration::secs(10),
            max_header_bytes: 16 * 1024,
            write_buffer_bytes: 64 * 1024,
            idle_timeout: HumanDuration::secs(120),
            keep_alive_timeout: HumanDuration::secs(20),
            shutdown_grace: HumanDuration::secs(10),
            access_log: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; default `<data_dir>/tls/server.pem`, made with a dev CA on
    /// first start when absent.
    pub cert: Option<PathBuf>,
    /// PEM private key; default `<data_dir>/tls/server.key`.
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// htpasswd file with bcrypt entries (`htpasswd -B`); default `<data_dir>/htpasswd`,
    /// made with a generated `reader` and `admin` on first start when absent.
    pub htpasswd: Option<PathBuf>,
    /// Bearer access tokens (stored hashed); default `<data_dir>/tokens`.
    pub tokens: Option<PathBuf>,
    /// Users who may download. Uploaders and admins may too.
    pub readers: Vec<String>,
    /// Users who may upload bundles. Admins may too.
    pub uploaders: Vec<String>,
    /// Users who may do everything.
    pub admins: Vec<String>,
    /// The realm named in `WWW-Authenticate`.
    pub realm: String,
    /// How long a verified credential is remembered, so bcrypt does not run per request.
    pub cache_ttl: HumanDuration,
    /// Failed attempts from one address within `failure_window` before it gets 429.
    pub max_failures: u32,
    pub failure_window: HumanDuration,
    /// How long an address that hit `max_failures` is refused.
    pub lockout: HumanDuration,
    /// Serve `/metrics` without credentials (for a scraper inside the network).
    pub metrics_public: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            htpasswd: None,
            tokens: None,
            readers: vec!["reader".into()],
            uploaders: vec![],
            admins: vec!["admin".into()],
            realm: "intelligence-relay".into(),
            cache_ttl: HumanDuration::secs(300),
            max_failures: 10,
            failure_window: HumanDuration::secs(60),
            lockout: HumanDuration::secs(60),
            metrics_public: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Where bundles, metadata, and generated certificates and credentials live.
    pub data_dir: PathBuf,
    /// Bundles kept, the current one included.
    pub retention: usize,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// A current bundle at most this large is served from memory while downloads are in
    /// progress: read once, shared by every download that overlaps, freed with the last
    /// (an idle relay holds none). Larger ones are streamed from their file.
    pub memory_cache_bytes: u64,
    /// sled's page cache.
    pub sled_cache_bytes: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("relay-data"),
            retention: 3,
            max_upload_bytes: 2 << 30,
            memory_cache_bytes: 256 << 20,
            sled_cache_bytes: 16 << 20,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// Public-key files of the origins whose bundles are accepted. Empty: the relay makes
    /// a local key (`<data_dir>/keys/local.pub`) and signs its sample bundle with it.
    pub keys: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routes {
    /// Path that serves the current bundle to consoles configured with a plain URL.
    pub custom_location: String,
    /// Keep-alive comment interval on the watch channel.
    pub watch_keepalive: HumanDuration,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            custom_location: "/intelligence/bundle.tar.gz".into(),
            watch_keepalive: HumanDuration::secs(15),
        }
    }
}

/// Caps on bundles the relay verifies (see `relay/FORMAT.md`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleLimits {
    pub max_uncompressed_bytes: u64,
    pub max_entries: u64,
    pub max_ratio: u64,
    pub max_manifest_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_uncompressed_bytes: l.max_uncompressed,
            max_entries: l.max_entries,
            max_ratio: l.max_ratio,
            max_manifest_bytes: l.max_manifest,
        }
    }
}

impl BundleLimits {
    pub fn limits(&self) -> Limits {
        Limits {
            max_uncompressed: self.max_uncompressed_bytes,
            max_entries: self.max_entries,
            max_ratio: self.max_ratio,
            max_manifest: self.max_manifest_bytes,
        }
    }
}

impl Config {
    /// Loads `path` (or only defaults when `None`), then applies `RELAY_<SECTION>_<KEY>`
    /// variables from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "built-in defaults".to_owned()),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        apply_env(&mut table, env)?;
        let mut config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })?;
        for (i, source) in config.sources.iter_mut().enumerate() {
            source
                .read_secret_files()
                .map_err(|e| ConfigError::Invalid(format!("sources[{i}]: {e}")))?;
        }
        for archive in &mut config.archives {
            if let Some(source) = &mut archive.source {
                source.read_secret_files().map_err(|e| {
                    ConfigError::Invalid(format!("archives {:?} source: {e}", archive.name))
                })?;
            }
        }
        if let Some(origin) = &mut config.origin {
            for input in &mut origin.inputs {
                if let Some(source) = &mut input.source {
                    source.read_secret_files().map_err(|e| {
                        ConfigError::Invalid(format!("origin.inputs {:?} source: {e}", input.name))
                    })?;
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.storage.retention == 0 {
            return invalid("storage.retention must be at least 1");
        }
        if self.listen.max_connections == 0 || self.listen.max_connections_per_address == 0 {
            return invalid(
                "listen.max_connections and listen.max_connections_per_address must be at least 1",
            );
        }
        if !(16 * 1024..=16 << 20).contains(&self.listen.write_buffer_bytes) {
            return invalid("listen.write_buffer_bytes must be between 16384 and 16777216");
        }
        if !self.routes.custom_location.starts_with('/')
            || self.routes.custom_location.starts_with("/api/")
            || self.routes.custom_location == "/"
            || self.routes.custom_location == "/metrics"
        {
            return invalid(
                "routes.custom_location must be an absolute path outside /api/, / and /metrics",
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls.cert and tls.key go together");
        }
        for (i, source) in self.sources.iter().enumerate() {
            if !(source.url.starts_with("https://") || source.url.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "sources[{i}].url must be an http(s) URL: {}",
                    source.url
                )));
            }
            if source.token.is_some() && source.user.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "sources[{i}]: give a token or a user, not both"
                )));
            }
            if source.user.is_some() != source.password.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "sources[{i}]: user and password go together"
                )));
            }
        }
        let mut paths = std::collections::HashSet::new();
        paths.insert(self.routes.custom_location.as_str());
        for a in &self.archives {
            let ok_name = !a.name.is_empty()
                && a.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok_name {
                return Err(ConfigError::Invalid(format!(
                    "archives: name {:?} must be made of a-z, 0-9, - and _",
                    a.name
                )));
            }
            if !a.path.starts_with('/')
                || a.path.starts_with("/api/")
                || a.path == "/"
                || a.path == "/metrics"
            {
                return Err(ConfigError::Invalid(format!(
                    "archives.{}: path must be absolute and outside /api/, / and /metrics",
                    a.name
                )));
            }
            if !paths.insert(a.path.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "archives.{}: path {} is taken",
                    a.name, a.path
                )));
            }
            if let Some(s) = &a.source
                && s.kind != crate::client::SourceKind::CustomLocation
            {
                return Err(ConfigError::Invalid(format!(
                    "archives.{}: source kind must be custom_location",
                    a.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.supervisors {
            let ok_name = !s.name.is_empty()
                && s.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok_name {
                return Err(ConfigError::Invalid(format!(
                    "supervisors: name {:?} must be made of a-z, 0-9, - and _",
                    s.name
                )));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "supervisors: name {} is used twice",
                    s.name
                )));
            }
            if !(s.url.starts_with("https://") || s.url.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "supervisors.{}: url must be an http(s) URL: {}",
                    s.name, s.url
                )));
            }
        }
        if self.projects.concurrency == 0 {
            return invalid("projects.concurrency must be at least 1");
        }
        if self.projects.retry_min.0.is_zero() || self.projects.retry_max < self.projects.retry_min
        {
            return invalid("projects.retry_min must be above zero and at most projects.retry_max");
        }
        if let Some(origin) = &self.origin {
            validate_origin(origin)?;
        }
        self.insecure_credentials()?;
        let origin_schedule = self.origin.as_ref().map(|o| &o.schedule);
        for (name, expr) in [
            ("schedule.check", &self.schedule.check),
            ("schedule.retry", &self.schedule.retry),
        ]
        .into_iter()
        .chain(origin_schedule.map(|s| ("origin.schedule", s)))
        {
            if expr.split_whitespace().count() != 6 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a cron expression with 6 fields, seconds first (\"0 0 3 * * *\"): {expr:?}"
                )));
            }
        }
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.storage.data_dir
    }

    /// Every source, supervisor, archive pull and origin input whose credential would
    /// travel over plain `http://`: an error for the first one not allowed to, else the
    /// warnings `relay serve` logs at every start for those allowed.
    pub fn insecure_credentials(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        let mut note = |r: Result<Option<String>, String>| match r {
            Ok(w) => {
                warnings.extend(w);
                Ok(())
            }
            Err(e) => Err(ConfigError::Invalid(e)),
        };
        for (i, s) in self.sources.iter().enumerate() {
            note(s.check_credential_transport(&format!("sources[{i}]")))?;
        }
        for a in &self.archives {
            if let Some(s) = &a.source {
                note(s.check_credential_transport(&format!("archives.{} source", a.name)))?;
            }
        }
        for s in &self.supervisors {
            note(crate::client::settings::check_credential_transport(
                &format!("supervisors.{}", s.name),
                &s.url,
                true,
                s.allow_insecure_credentials,
            ))?;
        }
        for input in self.origin.iter().flat_map(|o| &o.inputs) {
            if let Some(s) = &input.source {
                note(s.check_credential_transport(&format!("origin.inputs.{}", input.name)))?;
            }
        }
        Ok(warnings)
    }
}

fn validate_origin(origin: &OriginConfig) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if origin.name.is_empty()
        || origin.name.len() > 255
        || origin.name.chars().any(char::is_control)
    {
        return invalid("origin.name must be 1-255 characters without control characters".into());
    }
    if origin.expires_in.0.is_zero() {
        return invalid("origin.expires_in must be above zero".into());
    }
    if origin.inputs.is_empty() && origin.feeds.is_none() {
        return invalid("origin needs inputs ([[origin.inputs]]) or a feeds directory".into());
    }
    let mut names = std::collections::HashSet::new();
    for input in &origin.inputs {
        let name = &input.name;
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok_name {
            return invalid(format!(
                "origin.inputs: name {name:?} must be made of a-z, 0-9, - and _"
            ));
        }
        if !names.insert(name.as_str()) {
            return invalid(format!("origin.inputs: name {name} is used twice"));
        }
        if let Err(e) = crate::import::check_feed_name(input.feed_name()) {
            return invalid(format!("origin.inputs.{name}: {e}"));
        }
        match (&input.path, &input.source) {
            (Some(_), None) => {}
            (None, Some(s)) => {
                if s.kind != crate::client::SourceKind::CustomLocation {
                    return invalid(format!(
                        "origin.inputs.{name}: source kind must be custom_location"
                    ));
                }
                if !(s.url.starts_with("https://") || s.url.starts_with("http://")) {
                    return invalid(format!(
                        "origin.inputs.{name}: source url must be an http(s) URL: {}",
                        s.url
                    ));
                }
            }
            _ => {
                return invalid(format!(
                    "origin.inputs.{name}: give either path or source, not both or neither"
                ));
            }
        }
        let format = input.format.as_deref();
        let ok = match input.kind {
            crate::bundle::FeedKind::Osv => {
                matches!(format, None | Some("zip" | "json" | "jsonl" | "dir"))
            }
            crate::bundle::FeedKind::Domains => {
                matches!(format, Some("list" | "hosts" | "adblock" | "rpz"))
            }
            crate::bundle::FeedKind::Ips => matches!(format, None | Some("list")),
            crate::bundle::FeedKind::Apps => {
                return invalid(format!(
                    "origin.inputs.{name}: apps are not imported; put app files in origin.feeds"
                ));
            }
        };
        if !ok {
            return invalid(format!(
                "origin.inputs.{name}: format {format:?} does not fit kind {} (osv: zip, json, jsonl, dir; domains: list, hosts, adblock, rpz; ips: list)",
                input.kind
            ));
        }
    }
    Ok(())
}

impl Config {
    pub fn tls_cert(&self) -> PathBuf {
        self.tls
            .cert
            .clone()
            .unwrap_or_else(|| self.data_dir().join("tls/server.pem"))
    }

    pub fn tls_key(&self) -> PathBuf {
        self.tls
            .key
            .clone()
            .unwrap_or_else(|| self.data_dir().join("tls/server.key"))
    }

    pub fn htpasswd(&self) -> PathBuf {
        self.auth
            .htpasswd
            .clone()
            .unwrap_or_else(|| self.data_dir().join("htpasswd"))
    }

    pub fn tokens(&self) -> PathBuf {
        self.auth
            .tokens
            .clone()
            .unwrap_or_else(|| self.data_dir().join("tokens"))
    }
}

/// `RELAY_LISTEN_ADDRESS=127.0.0.1:9000` sets `listen.address`. A value that parses as a
/// TOML value (number, boolean, array, quoted string) is taken as that; anything else
/// as a string. `RELAY_CONFIG` (the file) and `RELAY_LOG*` are not settings.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("RELAY_") else {
            continue;
        };
        if rest == "CONFIG" || rest.starts_with("LOG") {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            return Err(ConfigError::Env {
                name,
                message: "expected RELAY_<SECTION>_<KEY>".into(),
            });
        };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(ConfigError::Env {
                name,
                message: format!("{section} is not a section"),
            });
        };
        section_table.insert(key.to_owned(), parsed);
    }
    Ok(())
}

/// A duration written like `"24h"`, `"15s"`, `"1h 30m"`.
/// Users by role, for the auth module.
pub fn roles(auth: &Auth) -> BTreeMap<String, crate::auth::Role> {
    use crate::auth::Role;
    let mut roles = BTreeMap::new();
    for (users, role) in [
        (&auth.readers, Role::Reader),
        (&auth.uploaders, Role::Uploader),
        (&auth.admins, Role::Admin),
    ] {
        for user in users {
            let entry = roles.entry(user.clone()).or_insert(role);
            *entry = (*entry).max(role);
        }
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn secrets_can_come_from_files_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "rt_abc\n").unwrap();
        let write = |body: &str| {
            let path = dir.path().join("relay.toml");
            std::fs::write(&path, body).unwrap();
            Config::load(Some(&path), env(&[]))
        };
        let c = write(&format!(
            "[[sources]]\nkind = \"upstream\"\nurl = \"https://a.example\"\ntoken_file = {token:?}\n"
        ))
        .unwrap();
        assert_eq!(
            c.sources[0].token.as_ref().map(|t| t.expose()),
            Some("rt_abc")
        );
        let both = write(&format!(
            "[[sources]]\nkind = \"upstream\"\nurl = \"https://a.example\"\ntoken = \"x\"\ntoken_file = {token:?}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            both.contains("sources[0]: give token or token_file, not both"),
            "{both}"
        );
        let missing = write(
            "[[sources]]\nkind = \"upstream\"\nurl = \"https://a.example\"\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("password_file /nonexistent/pw"),
            "{missing}"
        );
        std::fs::write(&token, " \n").unwrap();
        let empty = write(&format!(
            "[[sources]]\nkind = \"upstream\"\nurl = \"https://a.example\"\ntoken_file = {token:?}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(empty.contains("is empty"), "{empty}");
    }

    #[test]
    fn defaults_and_env_overrides() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.address.port(), 8083);
        assert_eq!(c.storage.retention, 3);
        let c = Config::load(
            None,
            env(&[
                ("RELAY_LISTEN_ADDRESS", "127.0.0.1:9999"),
                ("RELAY_STORAGE_RETENTION", "5"),
                ("RELAY_AUTH_READERS", "[\"a\", \"b\"]"),
                ("RELAY_ROUTES_WATCH_KEEPALIVE", "2s"),
                ("RELAY_CONFIG", "ignored.toml"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.address.port(), 9999);
        assert_eq!(c.storage.retention, 5);
        assert_eq!(c.auth.readers, vec!["a", "b"]);
        assert_eq!(c.routes.watch_keepalive, HumanDuration::secs(2));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err = Config::load(None, env(&[("RELAY_LISTEN_ADRESS", "x")])).unwrap_err();
        assert!(err.to_string().contains("unknown field `adress`"), "{err}");
        let err = Config::load(None, env(&[("RELAY_STORAGE_RETENTION", "0")])).unwrap_err();
        assert!(err.to_string().contains("retention"), "{err}");
        let err = Config::load(None, env(&[("RELAY_AUTH_CACHE_TTL", "soon")])).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
        for bytes in ["1024", "1000000000"] {
            let err =
                Config::load(None, env(&[("RELAY_LISTEN_WRITE_BUFFER_BYTES", bytes)])).unwrap_err();
            assert!(err.to_string().contains("write_buffer_bytes"), "{err}");
        }
    }

    #[test]
    fn roles_take_the_highest() {
        let auth = Auth {
            readers: vec!["a".into(), "b".into()],
            admins: vec!["b".into()],
            ..Auth::default()
        };
        let r = roles(&auth);
        assert_eq!(r["a"], crate::auth::Role::Reader);
        assert_eq!(r["b"], crate::auth::Role::Admin);
    }
}
