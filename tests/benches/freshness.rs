//! Freshness across tiers: three real relay processes in a chain, A -> B -> C (each
//! follows the one before over its watch channel). 20 uploads to A; for each, the time
//! until C has it (C's own watch channel announces it). Prints p50 and p95; the goal is
//! p95 <= 1 s on loopback. Also prints the bytes one polling check costs when nothing
//! changed (a fresh TLS connection, a conditional manifest request answered 304),
//! measured on the wire by a loopback forwarder; the goal is <= 16 KiB.
//!
//! Run: `cargo bench -p end-to-end --bench freshness`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use end_to_end::binary;
use futures_util::StreamExt;
use relay::bundle::{self, BuildOptions, SecretKey, Sequence, Timestamp};

const UPLOADS: u64 = 20;

struct Relay {
    child: Child,
    url: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_users(path: &Path) {
    let mut text = String::new();
    for user in ["reader", "uploader"] {
        text.push_str(&format!(
            "{user}:{}\n",
            bcrypt::hash(format!("{user}-pw"), 4).unwrap()
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Starts a relay in `dir`, following `upstream` (url, its CA) when given.
fn start(dir: &Path, upstream: Option<(&str, &Path)>) -> Relay {
    std::fs::create_dir_all(dir).unwrap();
    relay::certs::init(&dir.join("tls"), &relay::certs::default_names(), 30, true).unwrap();
    write_users(&dir.join("htpasswd"));
    let d = dir.display();
    let mut config = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[tls]\ncert = \"{d}/tls/server.pem\"\nkey = \"{d}/tls/server.key\"\n\
         [auth]\nhtpasswd = \"{d}/htpasswd\"\nreaders = [\"reader\"]\nuploaders = [\"uploader\"]\n\
         [storage]\ndata_dir = \"{d}/data\"\n[trust]\nkeys = [\"{}\"]\n",
        dir.parent().unwrap().join("origin.pub").display()
    );
    if let Some((url, ca)) = upstream {
        config.push_str(&format!(
            "[[sources]]\nkind = \"upstream\"\nurl = \"{url}\"\nuser = \"reader\"\npassword = \"reader-pw\"\nca = \"{}\"\nno_proxy = true\n",
            ca.display()
        ));
    }
    std::fs::write(dir.join("relay.toml"), config).unwrap();
    let mut child = Command::new(binary("relay"))
        .args(["serve", "--config"])
        .arg(dir.join("relay.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("relay exited").unwrap();
        if let Some(u) = line.strip_prefix("relay listening on ") {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Relay { child, url }
}

fn client(ca: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()])
        .no_proxy()
        .http1_only()
        .build()
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed([9; 32]);
    key.public()
        .save(&root.path().join("origin.pub"), true)
        .unwrap();
    let feeds = root.path().join("feeds/domains");
    std::fs::create_dir_all(&feeds).unwrap();
    std::fs::write(feeds.join("d.txt"), "evil.example\n").unwrap();
    let now = Timestamp::now();
    let bundles: Vec<Vec<u8>> = (1..=UPLOADS + 1)
        .map(|seq| {
            let mut out = Vec::new();
            let options = BuildOptions {
                sequence: Sequence(seq),
                origin: "bench".into(),
                created: now,
                expires: now.saturating_add(Duration::from_secs(86400)),
            };
            bundle::build(&root.path().join("feeds"), &key, &options, &mut out).unwrap();
            out
        })
        .collect();

    let a = start(&root.path().join("a"), None);
    let a_ca = root.path().join("a/tls/ca.pem");
    let b = start(&root.path().join("b"), Some((&a.url, &a_ca)));
    let b_ca = root.path().join("b/tls/ca.pem");
    let c = start(&root.path().join("c"), Some((&b.url, &b_ca)));
    let c_ca = root.path().join("c/tls/ca.pem");
    let upload = |bytes: Vec<u8>| {
        client(&a_ca)
            .put(format!("{}/api/v1/feeds/bundle", a.url))
            .basic_auth("uploader", Some("uploader-pw"))
            .body(bytes)
            .send()
    };
    assert_eq!(upload(bundles[0].clone()).await.unwrap().status(), 201);
    // Let the chain settle: C holds sequence 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client(&c_ca)
            .get(format!("{}/api/v1/feeds/manifest", c.url))
            .basic_auth("reader", Some("reader-pw"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chain never delivered the first bundle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies = Vec::new();
    for (i, bytes) in bundles.iter().enumerate().skip(1) {
        let watch = client(&c_ca)
            .get(format!("{}/api/v1/feeds/watch", c.url))
            .basic_auth("reader", Some("reader-pw"))
            .header("last-event-id", i.to_string())
            .send()
            .await
            .unwrap();
        let mut stream = watch.bytes_stream();
        let started = Instant::now();
        assert_eq!(upload(bytes.clone()).await.unwrap().status(), 201);
        let wanted = format!("\"sequence\":{}", i + 1);
        let mut seen = String::new();
        while !seen.contains(&wanted) {
            let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("C never announced the bundle")
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!("chain A -> B -> C, {UPLOADS} uploads to A, until C announces each:");
    println!("  p50 {:>7.1} ms", pct(0.50).as_secs_f64() * 1000.0);
    println!(
        "  p95 {:>7.1} ms   (goal <= 1000 ms)",
        pct(0.95).as_secs_f64() * 1000.0
    );
    println!(
        "  max {:>7.1} ms",
        latencies.last().unwrap().as_secs_f64() * 1000.0
    );

    // One polling check when nothing changed, through a counting forwarder.
    let forwarder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forward_port = forwarder.local_addr().unwrap().port();
    let a_addr = a.url.trim_start_matches("https://").to_owned();
    let counted = tokio::spawn(async move {
        let (mut inbound, _) = forwarder.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(a_addr).await.unwrap();
        tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
            .await
            .unwrap_or((0, 0))
    });
    let etag = format!("\"{}\"", relay::bundle::Sha256::of(bundles.last().unwrap()));
    let r = client(&a_ca)
        .get(format!(
            "https://localhost:{forward_port}/api/v1/feeds/manifest"
        ))
        .basic_auth("reader", Some("reader-pw"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    drop(r);
    // The client closes its idle connection when dropped.
    let (up, down) = tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .unwrap()
        .unwrap();
    println!(
        "one polling check, nothing new (fresh TLS connection, 304): {} bytes ({} sent, {} received)   (goal <= 16384)",
        up + down,
        up,
        down
    );
    drop((a, b, c));
}
