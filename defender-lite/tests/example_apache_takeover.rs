//! The README's runtime walk-through (`deploy/examples/apache-takeover`), run as written:
//! httpd is killed and `nc` takes its port. Port 80 is the app's own (its httpd.conf says
//! so), so only the new process, the port the app never used, and the feed's domain are
//! audited.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_apache_takeover_example_audits_what_the_readme_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("deploy/examples/apache-takeover");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["defender-lite.toml", "rules.toml", "events.jsonl"] {
        std::fs::copy(example.join(f), tmp.path().join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .current_dir(tmp.path())
        .args([
            "monitor",
            "--config",
            "defender-lite.toml",
            "--events",
            "events.jsonl",
        ])
        .arg("--feeds")
        .arg(root.join("relay/samples/feeds"))
        .arg("--app-image")
        .arg(format!(
            "httpd:2.4={}",
            root.join("defender-lite/tests/fixtures/apps/httpd-official")
                .display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].contains("ALERT processes [web tier] container web (httpd:2.4): process /usr/bin/nc.openbsd is not in the model of httpd:2.4"), "{stdout}");
    assert!(
        lines[1].contains("listening on 4444/tcp is not in the model"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("malware.testing.google.test is a known-bad domain"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("listening on 80/"),
        "port 80 is httpd's own: {stdout}"
    );
    assert!(tmp.path().join("data/audits.jsonl").is_file());
}
