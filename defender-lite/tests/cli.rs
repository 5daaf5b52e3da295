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

/// Every class of error says what to do next on a `hint:` line (under the error, or under
/// a failed check): a path that is not there or is a directory, a damaged bundle, a
/// configuration missing or wrong. (Nothing answering a sync: `sync_config`.)
#[test]
fn every_class_of_error_says_what_to_do_next() {
    let dir = tempfile::tempdir().unwrap();
    let key = relay::bundle::SecretKey::generate().unwrap();
    let public = dir.path().join("k.pub");
    key.public().save(&public, false).unwrap();
    let public = public.to_str().unwrap();
    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, "not a bundle").unwrap();
    let junk = junk.to_str().unwrap();
    let config = dir.path().join("none.toml");
    let config = config.to_str().unwrap();
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(&bad_config, "data_dir = \"d\"\nsurprise = 1\n").unwrap();
    let bad_config = bad_config.to_str().unwrap();
    let feeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
    let feeds = feeds.to_str().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["verify", missing, "--trust", public],
            2,
            "check the path",
        ),
        (
            vec!["verify", junk, "--trust", "/"],
            2,
            "give the path of a file, not of a directory",
        ),
        (
            vec!["verify", junk, "--trust", public],
            1,
            "the file is damaged or not a bundle",
        ),
        (
            vec!["status", "--config", config],
            2,
            "write the agent's configuration there, or name another with --config",
        ),
        (
            vec!["status", "--config", bad_config],
            2,
            "fix that setting: defender-lite.example.toml has every key",
        ),
        (vec!["scan", missing, "--feeds", feeds], 2, "check the path"),
    ];
    for (args, code, step) in cases {
        let out = agent(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("hint: ") && l.contains(step)),
            "{args:?} does not say {step:?}: {stderr}"
        );
    }
}

/// On a fresh host (no configuration, nothing synced) a command that reads the feeds says
/// what to do next, in one line; a command that only needs the configuration names the
/// cause once.
#[test]
fn a_fresh_host_is_told_what_to_do_and_each_cause_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("defender-lite.toml");
    let config = config.to_str().unwrap();
    let image = dir.path().to_str().unwrap();
    for args in [
        vec!["scan", image, "--config", config],
        vec!["apps", image, "--config", config],
    ] {
        let out = agent(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: no bundle applied yet (no configuration at {config}): run \
                 `defender-lite sync --once` with a configuration that names a relay, or \
                 pass `--feeds DIR`"
            ),
            "{args:?}"
        );
    }
    let out = agent(&["status", "--config", config]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause once: {stderr}"
    );
    assert!(
        stderr.starts_with(&format!("error: reading {config}: ")),
        "{stderr}"
    );
}

/// `defender-lite ... | head`: the reader goes away before the output is written. The
/// program ends quietly with success (as ripgrep does), not with a panic.
#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    let image = tempfile::tempdir().unwrap();
    let feeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
    for format in ["json", "table"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_defender-lite"))
            .arg("apps")
            .arg(image.path())
            .arg("--feeds")
            .arg(&feeds)
            .args(["--format", format])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The only read end, closed before the program can write.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{format}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{format}");
    }
}

/// `--help` lists each subcommand on one short line (the details are under
/// `COMMAND --help`), as cargo and ripgrep do.
#[test]
fn help_gives_each_subcommand_one_short_line() {
    let out = agent(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(commands.len() >= 9, "{help}");
    for line in commands {
        assert!(line.len() <= 100, "a long line: {line}");
    }
    let verify = agent(&["verify", "--help"]);
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("every file's hash and size"),
        "the details stay under verify --help"
    );
}
