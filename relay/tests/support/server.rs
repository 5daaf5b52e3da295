//! A real relay for tests: in-process on 127.0.0.1:0, real TLS with a dev CA made now,
//! a real sled store in a temp dir, and users `reader`, `uploader`, `admin` (password:
//! the user name followed by `-pw`).

use std::path::PathBuf;
use std::sync::Arc;

use relay::bundle::{Timestamp, TrustStore};
use relay::config::Config;
use relay::server::Relay;
use serde_json::json;

use super::Fixture;

pub struct StoppedRelay {
    pub dir: tempfile::TempDir,
}

pub struct TestRelay {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub relay: Arc<Relay>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Writes the test users with a low bcrypt cost (the hashes are still real bcrypt).
pub fn write_users(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("htpasswd");
    let mut text = String::new();
    for user in ["reader", "uploader", "admin"] {
        let hash = bcrypt::hash(format!("{user}-pw"), 4).unwrap();
        text.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A config for a test relay in `dir` (certificates and users must exist there).
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.storage.data_dir = dir.to_owned();
    config.listen.address = "127.0.0.1:0".parse().unwrap();
    config.tls.cert = Some(dir.join("tls/server.pem"));
    config.tls.key = Some(dir.join("tls/server.key"));
    config.auth.htpasswd = Some(dir.join("htpasswd"));
    config.auth.readers = vec!["reader".into()];
    config.auth.uploaders = vec!["uploader".into()];
    config.auth.admins = vec!["admin".into()];
    config.trust.keys = vec![dir.join("origin.pub")];
    config
}

/// Makes the files a test relay needs in `dir`.
pub fn prepare_dir(dir: &std::path::Path) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    relay::certs::init(&dir.join("tls"), &relay::certs::default_names(), 30, true).unwrap();
    write_users(dir);
    super::origin_key()
        .public()
        .save(&dir.join("origin.pub"), true)
        .unwrap();
}

impl TestRelay {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        prepare_dir(dir.path());
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> Self {
        Self::start_on(dir, config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given address (to come back on the same port after a stop).
    pub async fn start_on(
        dir: tempfile::TempDir,
        config: Config,
        addr: std::net::SocketAddr,
    ) -> Self {
        let trust = TrustStore::new([super::origin_key().public()]);
        let (relay, _notes) = Relay::open(config, trust).await.unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&relay).serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            url: format!("https://127.0.0.1:{}", addr.port()),
            addr,
            ca: dir.path().join("tls/ca.pem"),
            dir,
            relay,
            stop: Some(stop),
            task,
        }
    }

    /// A client that trusts the test CA and ignores proxy settings.
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .no_proxy()
            .build()
            .unwrap()
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client()
            .get(format!("{}{path}", self.url))
            .basic_auth("reader", Some("reader-pw"))
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> reqwest::Response {
        self.client()
            .put(format!("{}/api/v1/feeds/bundle", self.url))
            .basic_auth("uploader", Some("uploader-pw"))
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    pub async fn current_bytes(&self) -> Vec<u8> {
        let r = self.get("/api/v1/feeds/bundle").send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    }

    /// `GET /api/v1/status` as the reader.
    pub async fn status(&self) -> serde_json::Value {
        self.get("/api/v1/status")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the status until `done` holds (up to 30 s) and returns it.
    pub async fn until(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = self.status().await;
            if done(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s:#}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A client that speaks HTTP/1.1 only (one connection per request in flight).
    pub fn h1_client(&self) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .http1_only()
            .no_proxy()
            .build()
            .unwrap()
    }

    /// The configuration this relay runs with.
    pub fn relay_config(&self) -> Config {
        self.relay.config().clone()
    }

    pub fn relay_watchers(&self) -> i64 {
        self.relay.metrics_watchers()
    }

    /// Stops the relay and hands back its data directory, for a restart.
    pub async fn stop_keep_dir(mut self) -> StoppedRelay {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        // Connection tasks still ending (a client's pooled connection closing) hold the
        // relay, and with it the store's lock, a little longer: a second relay on the same
        // directory must wait for them, as a restarted process would for the old one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while Arc::strong_count(&self.relay) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        StoppedRelay { dir: self.dir }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The current sequence in a status document.
pub fn sequence(s: &serde_json::Value) -> Option<u64> {
    s["current"]["sequence"].as_u64()
}

/// A valid bundle with `sequence`, created an hour ago and expiring in 30 days.
pub fn fresh_bundle(sequence: u64) -> Vec<u8> {
    fresh_bundle_signed_by(sequence, [1; 32])
}

/// [`fresh_bundle`] signed by the key of `seed` (`[1; 32]` is the trusted origin's).
pub fn fresh_bundle_signed_by(sequence: u64, seed: [u8; 32]) -> Vec<u8> {
    let mut fixture = fresh_fixture(sequence);
    fixture.key = seed;
    let key_id = fixture.key().key_id().to_string();
    fixture.set("key_id", json!(key_id)).bundle()
}

/// The fixture of [`fresh_bundle`], for a test that sets more of its manifest.
pub fn fresh_fixture(sequence: u64) -> Fixture {
    let now = Timestamp::now();
    let created = Timestamp::from_unix(now.unix() - 3600).unwrap();
    let expires = now.saturating_add(std::time::Duration::from_secs(30 * 86400));
    Fixture::new()
        .set("sequence", json!(sequence))
        .set("created", json!(created.to_string()))
        .set("expires", json!(expires.to_string()))
}
