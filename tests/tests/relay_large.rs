//! A bundle much larger than the relays' memory cache (issue 12, item 6): uploaded to a
//! central relay, downloaded from it by several clients at once (HTTP/2 and HTTP/1.1,
//! one of them slow), pushed to its supervisor and fetched by a relay that follows it,
//! all at the same time. Each relay's peak RSS grows by no more than its cache and some
//! buffers: the bundle is streamed from its file, never held whole per request or push.
//! (`tests/bench/realsize/relay-large` measures the same at 300 MB and prints figures.)

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, generate_key, memory, password, poll,
    projects_section, run_relay, supervisor_config, supervisor_entry, upstream_source,
    write_large_feeds,
};

/// The cache of every relay here, and the bundle: more than seven times as large.
const CACHE_MIB: u64 = 8;
const BUNDLE_MB: u64 = 64;
/// What a relay may grow by beyond its cache: connection and TLS buffers, sled's pages,
/// the verifier's and the push's buffers (the benchmark saw 15 MiB at 300 MB).
const MARGIN_MIB: u64 = 24;

fn with_cache(mut config: RelayConfig) -> RelayConfig {
    config.storage = format!("memory_cache_bytes = {}\n", CACHE_MIB << 20);
    config
}

/// `VmHWM` of a running relay, MiB.
fn peak_mib(relay: &RelayProcess) -> u64 {
    memory(relay.pid().unwrap()).unwrap().0 >> 20
}

/// A `curl` download of the current bundle from `relay` to `out`, with `flags`.
fn curl(relay: &RelayProcess, out: &Path, flags: &[&str]) -> std::process::Child {
    Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(relay.ca())
        .args(["-u", &format!("reader:{}", password("reader"))])
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(format!("{}/api/v1/feeds/bundle", relay.url))
        .stdout(Stdio::null())
        .spawn()
        .expect("curl (tests/run installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_larger_than_the_cache_is_streamed_by_every_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let feeds = tmp.path().join("feeds");
    write_large_feeds(&feeds, BUNDLE_MB);
    let bundle = tmp.path().join("bundle.tar.gz");
    let bytes = build_bundle(&feeds, &secret, 1, &bundle);
    std::fs::remove_dir_all(&feeds).unwrap();
    let size = bytes.len() as u64;
    assert!(size >= BUNDLE_MB * 1_000_000, "the bundle is {size} bytes");
    drop(bytes);

    let supervisor = RelayProcess::start(
        "supervisor",
        &tmp.path().join("c"),
        &with_cache(supervisor_config(&public)),
    );
    let mut central = RelayConfig::ordinary(&[&public]);
    central.extra =
        projects_section(1, "1s", "5s") + &supervisor_entry(&supervisor, &password("central"));
    let central = RelayProcess::start("central", &tmp.path().join("a"), &with_cache(central));
    let mut follower = RelayConfig::ordinary(&[&public]);
    follower.extra = upstream_source(&central);
    let follower = RelayProcess::start("follower", &tmp.path().join("b"), &with_cache(follower));
    let relays = [&central, &follower, &supervisor];
    let before = relays.map(peak_mib);

    run_relay(&[
        "upload",
        bundle.to_str().unwrap(),
        "--address",
        &central.url,
        "--user",
        "uploader",
        "--password",
        &password("uploader"),
        "--tlscacert",
        central.ca().to_str().unwrap(),
    ]);
    // While central pushes to its supervisor and the follower fetches: four downloads,
    // HTTP/2 and HTTP/1.1, full speed and slow.
    let downloads: Vec<_> = [
        &[][..],
        &["--http1.1"][..],
        &["--limit-rate", "16M"][..],
        &["--http1.1", "--limit-rate", "16M"][..],
    ]
    .iter()
    .enumerate()
    .map(|(i, flags)| {
        let out = tmp.path().join(format!("download-{i}"));
        (curl(&central, &out, flags), out)
    })
    .collect();
    for relay in [&follower, &supervisor] {
        poll(Duration::from_secs(300), async || {
            match relay.current_sequence().await? {
                Some(1) => Ok(()),
                other => Err(format!("{} holds {other:?}", relay.name)),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", relay.tail(20)));
    }
    // The follower serves what it fetched, from its file too.
    let mut from_follower = curl(&follower, &tmp.path().join("from-follower"), &[]);
    for (mut child, out) in downloads {
        assert!(child.wait().unwrap().success(), "a download from central");
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
    }
    assert!(from_follower.wait().unwrap().success());
    assert_eq!(
        std::fs::read(tmp.path().join("from-follower")).unwrap(),
        std::fs::read(&bundle).unwrap(),
        "the follower serves the bundle it was given"
    );

    let after = relays.map(peak_mib);
    for ((relay, before), after) in relays.iter().zip(before).zip(after) {
        assert!(
            after <= before + CACHE_MIB + MARGIN_MIB,
            "{}: peak RSS {before} MiB before the upload, {after} MiB after, with a {CACHE_MIB} MiB cache and a {} MB bundle\n{}",
            relay.name,
            size / 1_000_000,
            relay.tail(20)
        );
    }
}
