//! `defender-lite events --events FILE`: the JSON-lines input as another sensor uses it.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn events(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .arg("events")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_lines_are_printed_bad_ones_reported_by_line_and_the_exit_code_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"ts":"2026-08-01T10:00:00Z","kind":"exec","pid":42,"comm":"nc","exe":"/usr/bin/nc","argv":["nc","-l","4444"],"container":{"id":"abc","name":"web","image":"nginx:1.27"}}"#,
            "\n",
            "{\"ts\":\"2026-08-01T10:00:01Z\",\"kind\":\"dns_query\",\"name\":\"evil.exa\n",
            r#"{"ts":"2026-08-01T10:00:02Z","kind":"syn","src":"10.0.0.5:40000","dst":"10.0.0.9:22"}"#,
            "\n",
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, stdout, stderr) = events(&["--events", path, "--json"]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains(r#""kind":"exec""#) && lines[0].contains(r#""image":"nginx:1.27""#));
    assert!(lines[1].contains(r#""source":"input""#), "{}", lines[1]);
    assert!(stderr.contains("line 2: not an event"), "{stderr}");
    assert!(stderr.contains("1 bad line(s) skipped"), "{stderr}");

    let (code, stdout, _) = events(&["--events", path]);
    assert_eq!(code, 1);
    assert!(stdout.contains("exec       pid=42"), "{stdout}");
    assert!(
        stdout.contains("container=web image=nginx:1.27"),
        "{stdout}"
    );
}

#[test]
fn a_missing_events_file_is_an_error() {
    let (code, _, stderr) = events(&["--events", "/nonexistent/events.jsonl"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/events.jsonl"), "{stderr}");
}
