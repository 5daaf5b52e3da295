//! defender-lite following a real relay process: `sync --once` applies each new bundle
//! atomically, keeps the previous one as the last good one, and when the relay is gone
//! records the error and keeps what it applied.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use end_to_end::relays::{RelayConfig, RelayProcess, build_bundle, generate_key, password};
use end_to_end::{binary, workspace_root};

fn agent(args: &[&str]) -> Output {
    Command::new(binary("defender-lite"))
        .args(args)
        .output()
        .unwrap()
}

fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("data/state.json")).unwrap()).unwrap()
}

/// Starts `defender-lite sync` (the daemon) in `dir`, trusting `public`, with `[sync]`
/// settings `sync` and one source of `kind` at `url` on `relay` (reader's credentials).
fn start_daemon(
    dir: &Path,
    public: &Path,
    relay: &RelayProcess,
    sync: &str,
    kind: &str,
    url: &str,
) -> std::process::Child {
    std::fs::create_dir(dir).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[trust]\nkeys = [{public:?}]\n[sync]\n{sync}\n\
             [[sources]]\nkind = \"{kind}\"\nurl = \"{url}\"\nuser = \"reader\"\npassword = \"{}\"\nca = {:?}\nno_proxy = true\n",
            password("reader"),
            relay.ca(),
        ),
    )
    .unwrap();
    Command::new(binary("defender-lite"))
        .args(["sync", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_applies_each_new_bundle_and_keeps_the_last_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let relay_dir = tmp.path().join("relay");
    let mut relay = RelayProcess::start("relay", &relay_dir, &RelayConfig::ordinary(&[&public]));
    let feeds = workspace_root().join("relay/samples/feeds");
    let first = build_bundle(&feeds, &secret, 1, &tmp.path().join("b1.tar.gz"));
    assert_eq!(relay.upload("uploader", first).await.0, 201);

    let agent_dir = tmp.path().join("agent");
    std::fs::create_dir(&agent_dir).unwrap();
    let config = agent_dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[trust]\nkeys = [{public:?}]\n\
             [[sources]]\nkind = \"upstream\"\nurl = \"{}\"\nuser = \"reader\"\npassword = \"{}\"\nca = {:?}\nno_proxy = true\n",
            relay.url,
            password("reader"),
            relay.ca(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();

    let out = agent(&["sync", "--once", "--config", &config]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied bundle sequence 1"));
    let s = state(&agent_dir);
    assert_eq!(s["current"]["sequence"], 1);
    let dir1 = agent_dir
        .join("data")
        .join(s["current"]["dir"].as_str().unwrap());
    assert!(dir1.join("manifest.json").is_file(), "{}", dir1.display());
    // Indexed when applied, and used by scan through the configuration.
    for index in [
        "osv.idx",
        "domains.fst",
        "ips.bin",
        "apps.json",
        "summary.json",
    ] {
        assert!(dir1.join("index").join(index).is_file(), "{index}");
    }
    let rootfs = tmp.path().join("rootfs");
    let fixtures = workspace_root().join("defender-lite/tests/fixtures/inventory/debian");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("var/lib/dpkg")).unwrap();
    std::fs::copy(fixtures.join("os-release"), rootfs.join("etc/os-release")).unwrap();
    std::fs::copy(fixtures.join("status"), rootfs.join("var/lib/dpkg/status")).unwrap();
    let out = agent(&[
        "scan",
        rootfs.to_str().unwrap(),
        "--config",
        &config,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["coverage"], "complete");
    assert!(
        report["feeds"].as_str().unwrap().contains("sequence 1"),
        "{report}"
    );

    // Nothing new: up to date, nothing changes.
    let out = agent(&["sync", "--once", "--config", &config]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("up to date"),
        "{out:?}"
    );

    let second = build_bundle(&feeds, &secret, 2, &tmp.path().join("b2.tar.gz"));
    assert_eq!(relay.upload("uploader", second).await.0, 201);
    let out = agent(&["sync", "--once", "--config", &config]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied bundle sequence 2"),
        "{out:?}"
    );
    let s = state(&agent_dir);
    assert_eq!(s["current"]["sequence"], 2);
    assert_eq!(s["previous"]["sequence"], 1);
    assert!(dir1.is_dir(), "the last good bundle was removed");

    // The relay goes away: the check fails and says so; what was applied stays.
    relay.kill();
    let out = agent(&["sync", "--once", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s = state(&agent_dir);
    assert_eq!(s["current"]["sequence"], 2);
    assert_eq!(s["last_error_kind"], "connect", "{s:#}");
    let out = agent(&["status", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bundle: sequence 2"), "{text}");
    assert!(text.contains("last error: connect"), "{text}");
}

/// The daemon does not wait for its 24-hour check: the relay's watch channel tells it
/// of each new bundle, and it applies it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_daemon_applies_a_new_bundle_as_soon_as_the_relay_announces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let relay_dir = tmp.path().join("relay");
    let relay = RelayProcess::start("relay", &relay_dir, &RelayConfig::ordinary(&[&public]));
    let feeds = workspace_root().join("relay/samples/feeds");
    let first = build_bundle(&feeds, &secret, 1, &tmp.path().join("b1.tar.gz"));
    assert_eq!(relay.upload("uploader", first).await.0, 201);

    let agent_dir = tmp.path().join("agent");
    let mut daemon = start_daemon(
        &agent_dir,
        &public,
        &relay,
        "check_every = \"24h\"\njitter = \"1s\"\npoll_every = \"24h\"",
        "upstream",
        &relay.url,
    );
    let sequence = |dir: &Path| {
        std::fs::read(dir.join("data/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|s| s["current"]["sequence"].as_u64())
    };
    let wait_for = |want: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while sequence(&agent_dir) != Some(want) {
            assert!(
                std::time::Instant::now() < deadline,
                "sequence {want} never applied"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_for(1);
    // Its next scheduled check is a day away: only the watch channel can bring this one.
    let second = build_bundle(&feeds, &secret, 2, &tmp.path().join("b2.tar.gz"));
    assert_eq!(relay.upload("uploader", second).await.0, 201);
    wait_for(2);
    let next = state(&agent_dir)["next_check"].as_str().unwrap().to_owned();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(next.as_str() > "2000", "{next}");
}

/// A failed check is retried on `sync.retry_every`, not a day later: the daemon follows
/// a custom location (no watch channel) whose relay holds nothing yet, and applies the
/// bundle on a retry once it is uploaded. Its regular check and its polling are a day away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_daemon_retries_a_failed_check_on_its_retry_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let relay_dir = tmp.path().join("relay");
    let relay = RelayProcess::start("relay", &relay_dir, &RelayConfig::ordinary(&[&public]));

    let agent_dir = tmp.path().join("agent");
    let mut daemon = start_daemon(
        &agent_dir,
        &public,
        &relay,
        "check_every = \"24h\"\nretry_every = \"1s\"\njitter = \"0s\"\npoll_every = \"24h\"",
        "custom_location",
        &format!("{}/intelligence/bundle.tar.gz", relay.url),
    );
    let failed = || {
        std::fs::read(agent_dir.join("data/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["last_error"].is_string() && s["current"].is_null())
    };
    // The first check fails: nothing to download yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !failed() {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed check recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let feeds = workspace_root().join("relay/samples/feeds");
    let first = build_bundle(&feeds, &secret, 1, &tmp.path().join("b1.tar.gz"));
    assert_eq!(relay.upload("uploader", first).await.0, 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = state(&agent_dir);
        if s["current"]["sequence"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never retried: {s}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}
