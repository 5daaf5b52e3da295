//! What the fuzz targets share: seed corpora made from the repository's test fixtures, and
//! a loopback TCP pair for the targets that drive a server connection with client bytes.
//!
//! Seeds: `tests/fuzz/run` starts each target once with `FUZZ_SEEDS_DIR=DIR`; the target's
//! `init` writes its seeds there and exits (see [`seeds`]). The seeds are made here, from
//! the fixtures as they are now, so nothing binary is committed and nothing goes stale.

// Seed making and harness set-up: a failure there is a broken harness, reported by a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use relay::bundle::{SecretKey, Timestamp, TrustStore};

#[path = "../../defender-lite/tests/image_fixtures/mod.rs"]
pub mod image_fixtures;

/// One seed: a file name and its bytes.
pub type Seed = (String, Vec<u8>);

/// When `FUZZ_SEEDS_DIR` is set, writes the seeds `make` returns into that directory and
/// exits; otherwise does nothing. Called first in every target's `init`.
pub fn seeds(make: fn() -> Vec<Seed>) {
    let Some(dir) = std::env::var_os("FUZZ_SEEDS_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("creating the seed directory");
    let made = make();
    for (name, bytes) in &made {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("writing a seed");
    }
    eprintln!("{} seeds written to {}", made.len(), dir.display());
    std::process::exit(0);
}

/// A path in the repository (this crate sits at its top).
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A fixture file's bytes.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = repo(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every regular file under a repository directory, recursively, sorted (path relative to
/// that directory, bytes).
pub fn fixture_tree(rel: &str) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if path.is_file() {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let base = repo(rel);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

/// A file name for a seed made from a path.
pub fn seed_name(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The key the seed bundles are signed with (the relay tests' origin key).
pub fn origin_key() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

pub fn trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| TrustStore::new([origin_key().public()]))
}

/// "Now" for verification: inside the seed bundles' validity.
pub fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

/// A tokio runtime on this thread, and a listener on 127.0.0.1: each input is one fresh
/// TCP connection, the client end written by the target, the server end handed to the
/// code under test.
pub struct Loopback {
    pub rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
}

impl Loopback {
    pub fn new() -> Loopback {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        Loopback { rt, listener, addr }
    }

    /// A connected (client, server) pair. The client's linger is zero so that closing it
    /// resets the connection: millions of inputs leave no TIME_WAIT sockets behind.
    pub async fn pair(&self) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let (client, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(self.addr),
            self.listener.accept()
        );
        let client = client.expect("connecting to the loopback listener");
        let (server, _) = accepted.expect("accepting on the loopback listener");
        client.set_zero_linger().expect("SO_LINGER");
        (client, server)
    }
}

impl Default for Loopback {
    fn default() -> Self {
        Loopback::new()
    }
}

/// A temp directory that lives as long as the process.
pub fn scratch_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("fuzz-")
        .tempdir()
        .expect("temp dir")
        .keep()
}
