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
    let dir = tempfile::tempdir().unwrap();
    // A key file in the relay's format; no source will answer, so it is never used to verify.
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
    let out = agent(&["sync", "--once", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("check failed (connect)"), "{stdout}");

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
