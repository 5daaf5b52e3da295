//! The `defender-lite` binary's documented behaviour: help, and exit code 2 on errors.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_names_verify_and_its_flags() {
    let out = agent(&["verify", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--trust") && help.contains("--held-sequence"),
        "{help}"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pub");
    std::fs::write(&key, "ed25519 0000000000000000 AAAA\n").unwrap();
    let out = agent(&[
        "verify",
        "/nonexistent.tar.gz",
        "--trust",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}
