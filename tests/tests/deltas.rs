//! Issue 14: a day's update costs what changed, through every tier. Real processes on
//! loopback: relay A takes uploads; B follows A (upstream, over its watch channel); C
//! follows B's custom location (`/intelligence/bundle.tar.gz`, with `.idx` beside it);
//! one defender-lite follows C, another B's custom location. The bundles are the real Go vulnerability database of two
//! days three days apart (`../shared/data`: one record added, nine changed). The first
//! bundle travels whole; the second by segments at every hop, and every tier ends up
//! with the same file (one SHA-256).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, generate_key, password, poll, projects_section, quote,
    run_relay, supervisor_config, supervisor_entry, upstream_source,
};
use end_to_end::{binary, workspace_root};
use serde_json::Value;

fn import_go(date: &str, feeds: &Path) {
    let zip = workspace_root()
        .join("../shared/data/osv/go")
        .join(date)
        .join("all.zip");
    assert!(zip.is_file(), "{} is missing", zip.display());
    run_relay(&[
        "feeds",
        "import",
        "osv",
        &zip.display().to_string(),
        "-o",
        &feeds.display().to_string(),
    ]);
}

/// The status of `relay`'s only source, once its current bundle has `sequence`.
async fn held(relay: &RelayProcess, sequence: u64) -> Value {
    poll(Duration::from_secs(60), async || {
        let s = relay.status().await?;
        if s["current"]["sequence"] == sequence {
            Ok(s)
        } else {
            Err(format!("{} holds {}", relay.name, s["current"]))
        }
    })
    .await
    .unwrap()
}

async fn force_refresh(relay: &RelayProcess) {
    let response = relay
        .client()
        .put(format!("{}/api/v1/feeds/force-refresh", relay.url))
        .basic_auth("admin", Some(password("admin")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

fn agent_sync(config: &Path) -> (String, String) {
    let out = Command::new(binary("defender-lite"))
        .args(["sync", "--once", "--config", &config.display().to_string()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

/// The origin's key, and the Go database of two days three days apart as feeds and as
/// bundles (sequence 1 and 2), in `dir`.
struct Days {
    secret: PathBuf,
    public: PathBuf,
    day2: PathBuf,
    b1: Vec<u8>,
    b2: Vec<u8>,
}

fn two_days(dir: &Path) -> Days {
    let (secret, public) = generate_key(dir, "origin");
    let (day1, day2) = (dir.join("feeds-1"), dir.join("feeds-2"));
    import_go("2026-08-18", &day1);
    import_go("2026-08-21", &day2);
    let b1 = build_bundle(&day1, &secret, 1, &dir.join("b1.tar.gz"));
    let b2 = build_bundle(&day2, &secret, 2, &dir.join("b2.tar.gz"));
    Days {
        secret,
        public,
        day2,
        b1,
        b2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiers_and_an_agent_converge_on_one_file_over_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let Days { public, b1, b2, .. } = two_days(tmp.path());

    let a = RelayProcess::start(
        "a",
        &tmp.path().join("a"),
        &RelayConfig::ordinary(&[&public]),
    );
    let b = RelayProcess::start(
        "b",
        &tmp.path().join("b"),
        &RelayConfig {
            extra: upstream_source(&a),
            ..RelayConfig::ordinary(&[&public])
        },
    );
    let c = RelayProcess::start(
        "c",
        &tmp.path().join("c"),
        &RelayConfig {
            extra: format!(
                "[[sources]]\nkind = \"custom_location\"\nurl = {}\nuser = \"reader\"\npassword = {}\nca = {}\nno_proxy = true\n",
                quote(&format!("{}/intelligence/bundle.tar.gz", b.url)),
                quote(&password("reader")),
                quote(&b.ca().display().to_string()),
            ),
            ..RelayConfig::ordinary(&[&public])
        },
    );
    // One agent follows C as an upstream, another B's custom location.
    let agent = |name: &str, kind: &str, url: String, ca: std::path::PathBuf| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\n[trust]\nkeys = [{public:?}]\n\
                 [[sources]]\nkind = \"{kind}\"\nurl = \"{url}\"\nuser = \"reader\"\npassword = \"{}\"\nca = {ca:?}\nno_proxy = true\n",
                password("reader"),
            ),
        )
        .unwrap();
        (dir, config)
    };
    let (agent_dir, agent_config) = agent("agent", "upstream", c.url.clone(), c.ca());
    let (custom_dir, custom_config) = agent(
        "agent-custom",
        "custom_location",
        format!("{}/intelligence/bundle.tar.gz", b.url),
        b.ca(),
    );

    // Day one: whole, everywhere.
    assert_eq!(a.upload("uploader", b1).await.0, 201);
    held(&b, 1).await;
    force_refresh(&c).await;
    held(&c, 1).await;
    for config in [&agent_config, &custom_config] {
        let (_, stderr) = agent_sync(config);
        assert!(stderr.contains("whole: "), "{stderr}");
    }

    // Day two: by segments at every hop.
    assert_eq!(a.upload("uploader", b2.clone()).await.0, 201);
    let sha = held(&a, 2).await["current"]["sha256"].clone();
    let whole = b2.len() as u64;
    let by_segments = |s: &Value, who: &str| {
        let t = &s["sources"][0]["last_transfer"];
        assert_eq!(t["mode"], "segments", "{who}: {s:#}");
        let bytes = t["bytes"].as_u64().unwrap();
        assert!(bytes * 10 < whole, "{who}: {bytes} of {whole} bytes");
        assert_eq!(s["current"]["sha256"], sha, "{who}");
    };
    let at_b = held(&b, 2).await;
    by_segments(&at_b, "b (upstream)");
    // A relay makes the delta between two bundles it holds: B got most of it that way.
    let t = &at_b["sources"][0]["last_transfer"];
    assert!(t["delta_bytes"].as_u64().unwrap() > 0, "{t}");
    assert!(t["rebuilt_bytes"].as_u64().unwrap() > 0, "{t}");
    force_refresh(&c).await;
    let at_c = held(&c, 2).await;
    by_segments(&at_c, "c (custom location)");
    // B serves the delta beside its custom location too (`<location>.delta-<16 hex>`).
    let t = &at_c["sources"][0]["last_transfer"];
    assert!(t["delta_bytes"].as_u64().unwrap() > 0, "{t}");
    for (dir, config) in [(&agent_dir, &agent_config), (&custom_dir, &custom_config)] {
        let (_, stderr) = agent_sync(config);
        assert!(stderr.contains("by segments: "), "{stderr}");
        let state: Value =
            serde_json::from_slice(&std::fs::read(dir.join("data/state.json")).unwrap()).unwrap();
        assert_eq!(state["current"]["sequence"], 2);
        assert_eq!(state["current"]["sha256"], sha, "{}", dir.display());
        let transfer = state["current"]["transfer"].as_str().unwrap();
        assert!(transfer.starts_with("by segments: "), "{transfer}");
        // Both by a delta: from C's delta route, and beside B's custom location.
        assert!(
            !transfer.contains("a delta of 0 rebuilt"),
            "{}: {transfer}",
            dir.display()
        );
    }
}

/// Central's view of its one supervisor, once central knows it holds `sequence`.
async fn supervisor_holds(central: &RelayProcess, sequence: u64) -> Value {
    poll(Duration::from_secs(60), async || {
        let s = central.status().await?;
        let entry = s["supervisors"][0].clone();
        if entry["sequence"] == sequence && entry["last_transfer"].is_string() {
            Ok(entry)
        } else {
            Err(format!("central sees {entry}"))
        }
    })
    .await
    .unwrap()
}

/// Issue 14, projects: central pushes a segment package (the changed segments and the
/// new index) to a supervisor that holds the bundle central delivered before, and the
/// supervisor builds the same file. A supervisor that lost that bundle refuses the package
/// (412) and gets the whole file, and central's status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_pushes_only_the_changed_segments_and_the_whole_file_when_the_base_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let Days {
        secret,
        public,
        day2,
        b1,
        b2,
    } = two_days(tmp.path());
    let b3 = build_bundle(&day2, &secret, 3, &tmp.path().join("b3.tar.gz"));

    let mut supervisor = RelayProcess::start(
        "east",
        &tmp.path().join("east"),
        &supervisor_config(&public),
    );
    let central = RelayProcess::start(
        "central",
        &tmp.path().join("central"),
        &RelayConfig {
            extra: format!(
                "{}{}",
                projects_section(2, "200ms", "1s"),
                supervisor_entry(&supervisor, &password("central"))
            ),
            ..RelayConfig::ordinary(&[&public])
        },
    );
    assert_eq!(central.upload("uploader", b1.clone()).await.0, 201);
    let first = supervisor_holds(&central, 1).await;
    assert!(
        first["last_transfer"]
            .as_str()
            .unwrap()
            .starts_with("whole: "),
        "{first}"
    );

    assert_eq!(central.upload("uploader", b2.clone()).await.0, 201);
    let second = supervisor_holds(&central, 2).await;
    let how = second["last_transfer"].as_str().unwrap().to_owned();
    let sent: u64 = how
        .strip_prefix("segments: ")
        .unwrap_or_else(|| panic!("{second}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent * 10 < b2.len() as u64, "{how}");
    // The changed segments went as a delta: well under what they weigh whole.
    let index = |b: &[u8]| {
        relay::bundle::index::derive(&mut std::io::Cursor::new(b))
            .unwrap()
            .unwrap()
    };
    let changed = relay::bundle::index::plan(&index(&b2), Some(&index(&b1))).fetch_bytes;
    assert!(
        how.ends_with("(the changed segments as a delta)") && sent * 2 < changed,
        "{how}; the changed segments whole: {changed} bytes"
    );
    let held = supervisor.status().await.unwrap();
    assert_eq!(
        held["current"]["sha256"],
        relay::bundle::Sha256::of(&b2).to_string(),
        "the supervisor built the same file"
    );

    // The supervisor loses everything; central still thinks it holds sequence 2.
    supervisor.kill();
    std::fs::remove_dir_all(tmp.path().join("east/data")).unwrap();
    supervisor.restart();
    assert_eq!(central.upload("uploader", b3.clone()).await.0, 201);
    let third = supervisor_holds(&central, 3).await;
    let how = third["last_transfer"].as_str().unwrap();
    assert!(
        how.starts_with("whole: ") && how.contains("(412)") && how.contains("not held here"),
        "{third}"
    );
    let held = supervisor.status().await.unwrap();
    assert_eq!(
        held["current"]["sha256"],
        relay::bundle::Sha256::of(&b3).to_string()
    );
}
