//! defender-lite's sync configuration and state file: what it accepts, what it refuses
//! with a clear message, and that a check with nothing reachable is recorded, not lost.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A data directory and config whose only source never answers, with a trusted key in the
/// relay's format that is never used to verify.
fn unreachable_source() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = relay::bundle::SecretKey::generate().unwrap();
    key.public()
        .save(&dir.path().join("origin.pub"), false)
        .unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        "data_dir = \"data\"\n[trust]\nkeys = [\"origin.pub\"]\n\
         [[sources]]\nkind = \"upstream\"\nurl = \"https://127.0.0.1:1\"\n\
         [sync]\nconnect_timeout = \"2s\"\n",
    );
    (dir, config)
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[trust]\nkeys = []\n", "trust.keys is empty"),
        ("data_dir = \"d\"\nsurprise = 1\n", "surprise"),
        (
            "[trust]\nkeys = [\"k.pub\"]\n[[sources]]\nkind = \"upstream\"\nurl = \"ftp://x\"\n",
            "http(s) URL",
        ),
        (
            "[trust]\nkeys = [\"k.pub\"]\n[[sources]]\nkind = \"upstream\"\nurl = \"https://x\"\nuser = \"u\"\n",
            "user and password go together",
        ),
        ("[sync]\ncheck_every = \"soon\"\n", "duration"),
        (
            "[trust]\nkeys = [\"k.pub\"]\n[[sources]]\nkind = \"upstream\"\nurl = \"http://127.0.0.1:9\"\nuser = \"u\"\npassword = \"p\"\n",
            "sources[0]: http://127.0.0.1:9 is plain http:// and would carry the credential in clear",
        ),
        (
            "[trust]\nkeys = [\"k.pub\"]\n[monitor]\nwebhook = \"http://siem:pw@127.0.0.1:9/in\"\n",
            "monitor.webhook: http://***@127.0.0.1:9/in is plain http://",
        ),
    ] {
        let config = write(dir.path(), "agent.toml", text);
        let out = agent(&["sync", "--once", "--config", &config]);
        assert_eq!(out.status.code(), Some(2), "{text}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn a_check_with_no_reachable_source_is_recorded_and_nothing_is_applied() {
    let (_dir, config) = unreachable_source();
    let out = agent(&["sync", "--once", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("check failed (connect)"), "{stdout}");
    // And what to do about it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hint: nothing answers at that address"),
        "{stderr}"
    );

    let out = agent(&["status", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bundle: none applied yet"), "{stdout}");
    assert!(stdout.contains("last error: connect:"), "{stdout}");

    let out = agent(&["status", "--config", &config, "--json"]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(state["current"].is_null());
    assert_eq!(state["last_error_kind"], "connect");
    assert!(state["last_check"].is_string());
}

/// `deploy/defender-lite.example.toml` loads, states the defaults it says it states, and
/// lists every key of `[sync]` and `[monitor]` (a key added to the code and not to the
/// example fails here).
#[test]
fn the_example_config_loads_and_lists_every_key() {
    use defender_lite::config::{Config, MonitorSettings, Sync};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/defender-lite.example.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.sync, Sync::default());
    assert_eq!(config.monitor, MonitorSettings::default());
    assert_eq!(config.sources.len(), 1);
    assert_eq!(
        config.trust.keys,
        [std::path::PathBuf::from("/etc/defender-lite/origin.pub")]
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let listed = |key: &str| {
        text.lines()
            .map(|l| l.trim_start_matches("# ").trim())
            .any(|l| l.starts_with(&format!("{key} =")))
    };
    for (section, value) in [
        ("sync", toml::Value::try_from(Sync::default()).unwrap()),
        (
            "monitor",
            toml::Value::try_from(MonitorSettings::default()).unwrap(),
        ),
    ] {
        for key in value.as_table().unwrap().keys() {
            assert!(listed(key), "[{section}] {key} is not in the example");
        }
    }
    for key in [
        "rules",
        "audit_file",
        "webhook",
        "data_dir",
        "token",
        "proxy",
    ] {
        assert!(listed(key), "{key} is not in the example");
    }
}

#[test]
fn a_second_sync_on_one_data_directory_is_refused_and_touches_nothing() {
    // No source answers: the daemon records the failure and waits an hour to retry.
    let (dir, config) = unreachable_source();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .args(["sync", "--config", &config])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.path().join("data/state.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let checked = || -> Option<()> {
        let text = std::fs::read(&state).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
        value["next_check"].as_str().map(drop)
    };
    while checked().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never checked"
        );
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // As if the daemon were unpacking a bundle.
    let incoming = dir.path().join("data/bundles/.incoming-4242");
    std::fs::create_dir_all(&incoming).unwrap();

    for args in [
        &["sync", "--once", "--config", &config][..],
        &[
            "sync",
            "--once",
            "--config",
            &config,
            "--reset-sequence",
            "0",
            "--reason",
            "test",
        ][..],
    ] {
        let out = agent(args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is in use by another defender-lite sync"),
            "{err}"
        );
    }
    assert!(incoming.is_dir(), "the daemon's work was left alone");

    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // The lock goes with the process.
    let out = agent(&["sync", "--once", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("check failed (connect)"));
}
