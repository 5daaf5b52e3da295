//! An origin builds and signs a bundle with the `relay` CLI; the agent verifies it with
//! `defender-lite`, which shares the format library but not the server. Any tampering,
//! or an untrusted key, makes the agent refuse it.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::{Command, Output};

use end_to_end::{binary, workspace_root};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(binary(bin)).args(args).output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn origin_builds_agent_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let feeds = workspace_root()
        .join("relay/samples/feeds")
        .display()
        .to_string();

    let out = run(
        "relay",
        &[
            "keys",
            "generate",
            "--secret",
            &p("o.pem"),
            "--public",
            &p("o.pub"),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = run(
        "relay",
        &[
            "keys",
            "generate",
            "--secret",
            &p("x.pem"),
            "--public",
            &p("x.pub"),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = run(
        "relay",
        &[
            "bundle",
            "build",
            "--feeds",
            &feeds,
            "--key",
            &p("o.pem"),
            "--sequence",
            "42",
            "--origin",
            "e2e-origin",
            "-o",
            &p("bundle.tar.gz"),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));

    // Trusting either key of a list works; the agent reports what it verified.
    let trust = format!("{},{}", p("x.pub"), p("o.pub"));
    let out = run(
        "defender-lite",
        &["verify", &p("bundle.tar.gz"), "--trust", &trust],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("sequence 42 from e2e-origin, 22 files"),
        "{}",
        show(&out)
    );

    let out = run(
        "defender-lite",
        &["verify", &p("bundle.tar.gz"), "--trust", &p("x.pub")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("not trusted"), "{}", show(&out));

    let out = run(
        "defender-lite",
        &[
            "verify",
            &p("bundle.tar.gz"),
            "--trust",
            &p("o.pub"),
            "--held-sequence",
            "42",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    // One flipped byte anywhere in the payload is refused by the agent.
    let mut bytes = fs::read(p("bundle.tar.gz")).unwrap();
    let i = bytes.len() - 100;
    bytes[i] ^= 0x20;
    fs::write(p("tampered.tar.gz"), &bytes).unwrap();
    let out = run(
        "defender-lite",
        &["verify", &p("tampered.tar.gz"), "--trust", &p("o.pub")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).starts_with("status Some(1)\nFAILED"),
        "{}",
        show(&out)
    );

    // Standard tools read the bundle too: it is an ordinary .tar.gz.
    let out = Command::new("tar")
        .args(["tzf", &p("bundle.tar.gz")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.starts_with("manifest.json\nmanifest.sig\nfeeds/"),
        "{listing}"
    );
}

#[test]
fn agent_help_lists_verify() {
    let out = run("defender-lite", &["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("verify"));
}
