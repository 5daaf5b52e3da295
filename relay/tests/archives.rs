//! Vendor archives (opaque, unsigned `.tar.gz`, such as `twistcli intelligence download`
//! makes): uploaded by an uploader or pulled from a URL, integrity-checked, served at
//! their own path like a console's custom location, and marked unsigned in status.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use relay::bundle::Sha256;
use relay::config::{ArchiveConfig, Config};
use support::process::curl;
use support::server::TestRelay;

/// A feed archive shaped like the vendor's: a directory and a few files.
fn vendor_archive(seed: u8) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, "feed/", &[][..]).unwrap();
    for (name, len) in [("feed/cve.json", 20_000), ("feed/malware.json", 5_000)] {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, &data[..]).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn with_archive(config: &mut Config) {
    config.archives = vec![ArchiveConfig {
        name: "twistlock".into(),
        path: "/intelligence/twistlock_feed.tar.gz".into(),
        source: None,
        sha256: None,
    }];
}

/// A custom-location source pulling `a`'s archive as its reader.
fn pull_from(a: &TestRelay) -> relay::config::SourceConfig {
    relay::config::SourceConfig {
        ca_pin: None,
        kind: relay::client::SourceKind::CustomLocation,
        url: format!("{}/intelligence/twistlock_feed.tar.gz", a.url),
        token: None,
        user: Some("reader".into()),
        password: Some(relay::client::Secret::new("reader-pw")),
        ca: Some(a.ca.clone()),
        proxy: None,
        no_proxy: true,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    }
}

async fn put_archive(relay: &TestRelay, bytes: Vec<u8>, sha: Option<&str>) -> reqwest::Response {
    let mut req = relay
        .client()
        .put(format!("{}/api/v1/archives/twistlock", relay.url))
        .basic_auth("uploader", Some("uploader-pw"));
    if let Some(s) = sha {
        req = req.header("x-expected-sha256", s);
    }
    req.body(bytes).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_archive_is_served_like_a_custom_location() {
    let relay = TestRelay::start_with(with_archive).await;
    let archive = vendor_archive(1);
    let file = relay.dir.path().join("twistlock_feed_2026.tar.gz");
    std::fs::write(&file, &archive).unwrap();
    // The operator's CLI, with the digest it expects.
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args([
            "upload",
            "--archive",
            "twistlock",
            "--sha256",
            &Sha256::of(&archive).to_string(),
        ])
        .arg(&file)
        .args([
            "--address",
            &relay.url,
            "--user",
            "uploader",
            "--password",
            "uploader-pw",
        ])
        .arg("--tlscacert")
        .arg(&relay.ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT SIGNED"));

    // A console-like client: curl with the credential and the CA, at the configured path.
    let ca = relay.ca.display().to_string();
    let url = format!("{}/intelligence/twistlock_feed.tar.gz", relay.url);
    let (code, body) = tokio::task::spawn_blocking({
        let (ca, url) = (ca.clone(), url.clone());
        move || curl(&["--cacert", &ca, "-u", "reader:reader-pw", &url])
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(body, archive, "byte-identical");
    let r = relay
        .client()
        .get(&url)
        .basic_auth("reader", Some("reader-pw"))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.bytes().await.unwrap().to_vec(), archive[..100]);
    let r = relay
        .client()
        .get(&url)
        .basic_auth("reader", Some("reader-pw"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(relay.client().get(&url).send().await.unwrap().status(), 401);

    let status: serde_json::Value = relay
        .get("/api/v1/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = &status["archives"][0];
    assert_eq!(a["signed"], false);
    assert!(a["trust"].as_str().unwrap().starts_with("NOT SIGNED"));
    assert_eq!(a["held"]["sha256"], Sha256::of(&archive).to_string());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_are_refused_and_the_held_one_kept() {
    let relay = TestRelay::start_with(with_archive).await;
    let good = vendor_archive(2);
    assert_eq!(put_archive(&relay, good.clone(), None).await.status(), 201);

    let mut corrupt = good.clone();
    let i = corrupt.len() / 2;
    corrupt[i] ^= 0xff;
    let r = put_archive(&relay, corrupt, None).await;
    assert_eq!(r.status(), 422);
    let r = put_archive(&relay, good[..good.len() - 10].to_vec(), None).await;
    assert_eq!(r.status(), 422, "truncated");
    let r = put_archive(
        &relay,
        vendor_archive(3),
        Some(&Sha256::of(b"other").to_string()),
    )
    .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("sha256 mismatch"));
    let r = put_archive(&relay, b"<html>not gzip</html>".to_vec(), None).await;
    assert_eq!(r.status(), 422);
    let r = relay
        .client()
        .put(format!("{}/api/v1/archives/unknown", relay.url))
        .basic_auth("uploader", Some("uploader-pw"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = relay
        .get("/api/v1/archives/twistlock")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        good,
        "the held archive is kept"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_is_pulled_from_a_url_and_survives_a_restart() {
    let a = TestRelay::start_with(with_archive).await;
    let archive = vendor_archive(4);
    assert_eq!(put_archive(&a, archive.clone(), None).await.status(), 201);
    let source = pull_from(&a);
    let b = TestRelay::start_with(|c| {
        with_archive(c);
        c.archives[0].source = Some(source);
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b
            .get("/intelligence/twistlock_feed.tar.gz")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            assert_eq!(r.bytes().await.unwrap().to_vec(), archive);
            break;
        }
        assert!(Instant::now() < deadline, "B never pulled the archive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The store keeps it across a restart (its file is not taken for an orphan).
    let config = b.relay_config();
    let dir = b.stop_keep_dir().await.dir;
    let mut config = config;
    config.archives[0].source = None;
    let again = TestRelay::start_in(dir, config).await;
    let r = again
        .get("/intelligence/twistlock_feed.tar.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), archive);
    again.stop().await;
    a.stop().await;
}

fn upload_cli(relay: &TestRelay, file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("upload")
        .args(extra)
        .arg(file)
        .args([
            "--address",
            &relay.url,
            "--user",
            "uploader",
            "--password",
            "uploader-pw",
        ])
        .arg("--tlscacert")
        .arg(&relay.ca)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_upload_names_its_digest_and_its_name_stays_one_segment() {
    let relay = TestRelay::start_with(with_archive).await;
    let archive = vendor_archive(5);
    let file = relay.dir.path().join("feed.tar.gz");
    std::fs::write(&file, &archive).unwrap();
    // Without a digest the CLI refuses, saying what to give.
    let out = upload_cli(&relay, &file, &["--archive", "twistlock"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--archive needs --sha256"),
        "{out:?}"
    );
    // A name that would climb out of /api/v1/archives/ is one percent-encoded segment:
    // it reaches no other route (here, not the bundle upload), only a 404.
    let out = upload_cli(
        &relay,
        &file,
        &["--archive", "../feeds/bundle", "--no-digest"],
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    // Explicitly without a digest: integrity checks only.
    let out = upload_cli(&relay, &file, &["--archive", "twistlock", "--no-digest"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_archive_pinned_to_a_digest_refuses_anything_else() {
    let a = TestRelay::start_with(with_archive).await;
    let archive = vendor_archive(6);
    assert_eq!(put_archive(&a, archive.clone(), None).await.status(), 201);
    let source = pull_from(&a);
    let b = TestRelay::start_with(|c| {
        with_archive(c);
        c.archives[0].source = Some(source.clone());
        c.archives[0].sha256 = Some(Sha256::of(b"the archive the vendor published"));
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = b.status().await;
        if let Some(error) = status["archives"][0]["last_error"].as_str() {
            assert!(error.contains("sha256 mismatch"), "{error}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never tried the pull: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = b
        .get("/intelligence/twistlock_feed.tar.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "nothing held: the pinned digest was not served"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_archive_pull_does_not_hold_back_bundle_checks() {
    // A vendor URL that answers its headers, then never sends a byte of the body.
    let asked = std::sync::Arc::new(tokio::sync::Notify::new());
    let told = std::sync::Arc::clone(&asked);
    let stall = axum::Router::new().route(
        "/twistlock_feed.tar.gz",
        axum::routing::get(move || {
            told.notify_one();
            async {
                axum::body::Body::from_stream(futures_util::stream::pending::<
                    Result<Vec<u8>, std::io::Error>,
                >())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_url = format!(
        "http://{}/twistlock_feed.tar.gz",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, stall).await });

    let a = TestRelay::start().await;
    let upstream = relay::config::SourceConfig {
        kind: relay::client::SourceKind::Upstream,
        url: a.url.clone(),
        ..pull_from(&a)
    };
    let vendor = relay::config::SourceConfig {
        url: stall_url,
        user: None,
        password: None,
        ca: None,
        ..pull_from(&a)
    };
    let b = TestRelay::start_with(|c| {
        with_archive(c);
        c.archives[0].source = Some(vendor);
        c.sources = vec![upstream];
        // The stalled body would hold the pull for two minutes.
        c.schedule.transfer_floor_window = relay::config::HumanDuration::secs(120);
    })
    .await;
    tokio::time::timeout(Duration::from_secs(20), asked.notified())
        .await
        .expect("B never asked the vendor URL");

    // The watch channel announces a bundle while the pull hangs: B stores it at once.
    assert_eq!(
        a.upload(support::server::fresh_bundle(1)).await.status(),
        201
    );
    b.until("the bundle, while the archive pull hangs", |s| {
        support::server::sequence(s) == Some(1)
    })
    .await;
    let status = b.status().await;
    assert!(
        status["archives"][0]["last_check"].is_null(),
        "the pull is still waiting: {status}"
    );
    b.stop().await;
    a.stop().await;
}
