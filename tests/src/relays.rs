//! Real `relay serve` processes for the end-to-end tests and benches: a directory per relay
//! (its own dev CA and server certificate from `relay certs init`, an htpasswd, a config
//! file), started, killed and restarted on the same port; and the few HTTP calls the tests
//! make to them. What a relay does with its configuration is the relay's business: this
//! only sets it up and watches from outside.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use test_support::ServeProcess;

use crate::binary;

/// The users every relay's htpasswd holds; each one's password is [`password`]`(user)`.
/// Which of them may do what differs per relay ([`RelayConfig`]).
pub const USERS: [&str; 4] = ["reader", "uploader", "admin", "central"];

/// The password of one of [`USERS`].
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// Who may do what on one relay, which keys it trusts, and any further TOML.
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    pub readers: Vec<String>,
    pub uploaders: Vec<String>,
    pub admins: Vec<String>,
    /// Public-key files whose bundles the relay accepts.
    pub trust: Vec<PathBuf>,
    /// Appended verbatim: `[[sources]]`, `[schedule]`, `[projects]`, `[[supervisors]]`...
    pub extra: String,
    /// More keys of `[storage]` (which holds `data_dir` and `retention = 10`).
    pub storage: String,
    /// More keys of `[listen]` (which holds `address` and `shutdown_grace`).
    pub listen: String,
    /// `RUST_LOG` for the process; `info` when empty.
    pub log: String,
}

impl RelayConfig {
    /// `reader` reads, `uploader` uploads, `admin` administers.
    pub fn ordinary(trust: &[&Path]) -> Self {
        Self {
            readers: vec!["reader".into()],
            uploaders: vec!["uploader".into()],
            admins: vec!["admin".into()],
            trust: trust.iter().map(|p| p.to_path_buf()).collect(),
            ..Self::default()
        }
    }

    fn text(&self, dir: &Path) -> String {
        let d = |rel: &str| quote(&dir.join(rel).display().to_string());
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let trust: Vec<String> = self.trust.iter().map(|p| p.display().to_string()).collect();
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n{}\n\
             [tls]\ncert = {}\nkey = {}\n\n\
             [auth]\nhtpasswd = {}\nreaders = {}\nuploaders = {}\nadmins = {}\n\
             # Every client here is 127.0.0.1: the per-address lockout would lock out the\n\
             # tests' own requests after a few deliberate failures.\nmax_failures = 1000000\n\n\
             [storage]\ndata_dir = {}\nretention = 10\n{}\n\
             [trust]\nkeys = {}\n\n{}",
            self.listen,
            d("tls/server.pem"),
            d("tls/server.key"),
            d("htpasswd"),
            list(&self.readers),
            list(&self.uploaders),
            list(&self.admins),
            d("data"),
            self.storage,
            list(&trust),
            self.extra,
        )
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One `relay serve` process with its own directory. Killed when dropped.
pub struct RelayProcess {
    pub name: String,
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`; the same after [`RelayProcess::restart`].
    pub url: String,
    process: Option<ServeProcess>,
    log: String,
    /// Every run's output, one after the other.
    output: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl RelayProcess {
    /// Prepares `dir` (certificates and htpasswd, unless already there), writes
    /// `dir/relay.toml` from `config` and starts the relay on a free port.
    pub fn start(name: &str, dir: &Path, config: &RelayConfig) -> Self {
        prepare_dir(dir);
        std::fs::write(dir.join("relay.toml"), config.text(dir)).expect("write relay.toml");
        let mut relay = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            url: String::new(),
            process: None,
            log: if config.log.is_empty() {
                "info".into()
            } else {
                config.log.clone()
            },
            output: Arc::new(Mutex::new(String::new())),
            client: client(&dir.join("tls/ca.pem")),
        };
        relay.spawn(None);
        relay
    }

    /// The CA that signed this relay's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the URL ends with a port")
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServeProcess::pid)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the relay again, with the same directory and configuration, on the port it
    /// had (`RELAY_LISTEN_ADDRESS` overrides the config's port 0).
    pub fn restart(&mut self) {
        self.kill();
        let before = self.url.clone();
        self.spawn(Some(self.port()));
        assert_eq!(
            self.url, before,
            "{} came back on another address",
            self.name
        );
        // Pooled connections died with the old process.
        self.client = client(&self.ca());
    }

    /// Everything the process printed (stdout and stderr), every run so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// The last `n` lines of [`RelayProcess::output`], for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let all = self.output();
        let lines: Vec<&str> = all.lines().collect();
        format!(
            "--- last lines of {}:\n{}",
            self.name,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    /// GET `path` as `user`.
    pub async fn get(&self, path: &str, user: &str) -> Result<reqwest::Response, String> {
        self.client
            .get(format!("{}{path}", self.url))
            .basic_auth(user, Some(password(user)))
            .send()
            .await
            .map_err(|e| format!("{}: GET {path}: {e}", self.name))
    }

    /// GET `path` as `user`, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str, user: &str) -> Result<Value, String> {
        let response = self.get(path, user).await?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| format!("{}: GET {path}: {e}", self.name))?;
        if status != StatusCode::OK {
            return Err(format!("{}: GET {path}: {status}: {body}", self.name));
        }
        serde_json::from_str(&body).map_err(|e| format!("{}: GET {path}: {e}: {body}", self.name))
    }

    /// `GET /api/v1/status` as the reader.
    pub async fn status(&self) -> Result<Value, String> {
        self.get_json("/api/v1/status", "reader").await
    }

    /// The sequence of the relay's current bundle, from its own status.
    pub async fn current_sequence(&self) -> Result<Option<u64>, String> {
        Ok(self.status().await?["current"]["sequence"].as_u64())
    }

    /// Uploads `bundle` as `user` (`PUT /api/v1/feeds/bundle`): the status and the body.
    pub async fn upload(&self, user: &str, bundle: Vec<u8>) -> (StatusCode, String) {
        let response = self
            .client
            .put(format!("{}/api/v1/feeds/bundle", self.url))
            .basic_auth(user, Some(password(user)))
            .body(bundle)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: upload: {e}", self.name));
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// A client that trusts this relay's CA (HTTP/1.1 or HTTP/2, whichever it offers).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn spawn(&mut self, port: Option<u16>) {
        let mut command = Command::new(binary("relay"));
        command
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join("relay.toml"))
            .env("RUST_LOG", &self.log);
        if let Some(port) = port {
            command.env("RELAY_LISTEN_ADDRESS", format!("127.0.0.1:{port}"));
        }
        let process = ServeProcess::spawn(command, Arc::clone(&self.output));
        self.url = process.url.clone();
        self.process = Some(process);
    }
}

/// Makes `dir` with `tls/` (a dev CA and a server certificate for 127.0.0.1, from
/// `relay certs init`) and `htpasswd` (bcrypt, the [`USERS`]), unless already there.
pub fn prepare_dir(dir: &Path) {
    if dir.join("tls/ca.pem").is_file() {
        return;
    }
    std::fs::create_dir_all(dir).expect("create the relay directory");
    run_relay(&[
        "certs",
        "init",
        "--dir",
        &dir.join("tls").display().to_string(),
    ]);
    let mut htpasswd = String::new();
    for user in USERS {
        // Cost 4: the lowest bcrypt allows; nothing here guards a real secret.
        let hash = bcrypt::hash(password(user), 4).expect("bcrypt");
        htpasswd.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(dir.join("htpasswd"), htpasswd).expect("write htpasswd");
}

/// Runs the `relay` CLI and returns its stdout; panics with everything it printed if it
/// fails.
pub fn run_relay(args: &[&str]) -> String {
    let out = Command::new(binary("relay"))
        .args(args)
        .env_remove("RELAY_CONFIG")
        .output()
        .expect("run relay");
    assert!(
        out.status.success(),
        "relay {}: {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `relay keys generate`: the secret and public key files `dir/<name>.pem`, `.pub`.
pub fn generate_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (secret, public) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub")),
    );
    run_relay(&[
        "keys",
        "generate",
        "--secret",
        &secret.display().to_string(),
        "--public",
        &public.display().to_string(),
    ]);
    (secret, public)
}

/// `relay bundle build` of `feeds` signed with `key`, written to `out`; its bytes.
pub fn build_bundle(feeds: &Path, key: &Path, sequence: u64, out: &Path) -> Vec<u8> {
    run_relay(&[
        "bundle",
        "build",
        "--feeds",
        &feeds.display().to_string(),
        "--key",
        &key.display().to_string(),
        "--sequence",
        &sequence.to_string(),
        "--origin",
        "test",
        "--expires-in",
        "30d",
        "-o",
        &out.display().to_string(),
    ]);
    std::fs::read(out).expect("read the built bundle")
}

/// Writes OSV records whose `details` are random text (about 6 bits a character, so gzip
/// keeps three quarters of it) to `dir/osv/large.jsonl`: feeds that make a bundle of at
/// least `mb` MB.
pub fn write_large_feeds(dir: &Path, mb: u64) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::fs::create_dir_all(dir.join("osv")).expect("create the feeds directory");
    let want = mb * 1_000_000 * 4 / 3 + (2 << 20);
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut text = String::new();
    let mut n = 0;
    while (text.len() as u64) < want {
        let details: String = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(ALPHABET[(x >> 58) as usize])
            })
            .collect();
        let record = serde_json::json!({
            "id": format!("LARGE-{n:06}"),
            "modified": "2026-01-01T00:00:00Z",
            "summary": format!("record {n}, poorly compressible"),
            "details": details,
            "affected": [{
                "package": { "ecosystem": "PyPI", "name": format!("large-{}", n % 97) },
                "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }, { "fixed": format!("1.0.{n}") }] }],
            }],
        });
        text += &format!("{record}\n");
        n += 1;
    }
    std::fs::write(dir.join("osv/large.jsonl"), text).expect("write the feed file");
}

/// A client that trusts only `ca` and ignores proxies from the environment. It gives up
/// when a connection takes 10 s or a read 60 s (per read, not per request: a watch
/// channel stays open, with keep-alive comments every 15 s).
pub fn client(ca: &Path) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).expect("read the CA");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("a PEM certificate")])
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client")
}

/// Calls `check` every 50 ms until it returns `Ok`, or until `limit` has passed: then the
/// last error. How the tests wait for what another process does, instead of sleeping a
/// fixed time.
pub async fn poll<T>(
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("not within {limit:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Peak and current resident set of a process, in bytes (`VmHWM`, `VmRSS` from
/// `/proc/PID/status`).
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// A relay whose only uploader is `central` (the Projects push credential): the
/// supervisor of a project. Trusts `trust`; `reader` reads.
pub fn supervisor_config(trust: &Path) -> RelayConfig {
    RelayConfig {
        readers: vec!["reader".into()],
        uploaders: vec!["central".into()],
        admins: vec![],
        trust: vec![trust.to_owned()],
        ..RelayConfig::default()
    }
}

/// TOML: follow `upstream` as its reader (over its watch channel), retrying a failed
/// check within a second rather than the default half minute.
pub fn upstream_source(upstream: &RelayProcess) -> String {
    format!(
        "[[sources]]\nkind = \"upstream\"\nurl = {}\nuser = \"reader\"\npassword = {}\nca = {}\nno_proxy = true\n\n\
         [schedule]\nbackoff_base = \"200ms\"\nbackoff_max = \"1s\"\npoll_interval = \"1s\"\n\n",
        quote(&upstream.url),
        quote(&password("reader")),
        quote(&upstream.ca().display().to_string()),
    )
}

/// TOML: the `[projects]` section.
pub fn projects_section(concurrency: usize, retry_min: &str, retry_max: &str) -> String {
    format!(
        "[projects]\nconcurrency = {concurrency}\nretry_min = {}\nretry_max = {}\n\n",
        quote(retry_min),
        quote(retry_max)
    )
}

/// TOML: one `[[supervisors]]` entry that pushes to `supervisor` as `central`, with
/// `password` (normally [`password`]`("central")`).
pub fn supervisor_entry(supervisor: &RelayProcess, password: &str) -> String {
    format!(
        "[[supervisors]]\nname = {}\nurl = {}\nuser = \"central\"\npassword = {}\nca = {}\nno_proxy = true\n\n",
        quote(&supervisor.name),
        quote(&supervisor.url),
        quote(password),
        quote(&supervisor.ca().display().to_string()),
    )
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// CPU time a process has used so far (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: state is the
    // first, utime and stime the 12th and 13th.
    let mut rest = text.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks(),
    ))
}

/// CPU time of the whole machine, over every core, from `/proc/stat`.
#[derive(Clone, Copy, Debug)]
pub struct MachineCpu {
    /// Neither idle nor waiting for I/O.
    pub busy: Duration,
    /// Idle with I/O outstanding.
    pub iowait: Duration,
    pub total: Duration,
}

impl MachineCpu {
    pub fn now() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
        let total: u64 = ticks.iter().sum();
        let secs = |t: u64| Duration::from_secs_f64(t as f64 / clock_ticks());
        Some(Self {
            busy: secs(total - idle - iowait),
            iowait: secs(iowait),
            total: secs(total),
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            total: self.total.saturating_sub(earlier.total),
        }
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot say).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}
