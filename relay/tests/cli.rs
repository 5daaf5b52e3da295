//! The `relay` binary as an operator runs it: keys, bundle build, verify, inspect, and
//! the documented exit codes (0 ok, 1 a failed check, 2 an error).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn relay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn samples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/feeds")
        .display()
        .to_string()
}

/// A temp dir holding a key pair `k.pem`/`k.pub`.
fn with_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let out = relay(&[
        "keys",
        "generate",
        "--secret",
        &p("k.pem"),
        "--public",
        &p("k.pub"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    dir
}

fn build(dir: &Path, sequence: &str, extra: &[&str]) -> Output {
    let p = |n: &str| dir.join(n).display().to_string();
    let (feeds, key, out) = (samples(), p("k.pem"), p("b.tgz"));
    let mut args = vec![
        "bundle",
        "build",
        "--feeds",
        &feeds,
        "--key",
        &key,
        "--sequence",
        sequence,
        "--origin",
        "cli-test",
        "-o",
        &out,
    ];
    args.extend_from_slice(extra);
    relay(&args)
}

#[test]
fn keys_generate_writes_a_private_secret_and_a_public_line() {
    let dir = with_keys();
    let secret = dir.path().join("k.pem");
    let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        fs::read_to_string(&secret)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let public = fs::read_to_string(dir.path().join("k.pub")).unwrap();
    let fields: Vec<&str> = public.trim_end().split(' ').collect();
    assert_eq!(fields.len(), 3, "{public}");
    assert_eq!(fields[0], "ed25519");
    assert_eq!(fields[1].len(), 16);
    assert!(public.ends_with('\n') && public.lines().count() == 1);
}

#[test]
fn keys_are_never_overwritten_without_force() {
    let dir = with_keys();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let before = fs::read(dir.path().join("k.pem")).unwrap();
    let out = relay(&[
        "keys",
        "generate",
        "--secret",
        &p("k.pem"),
        "--public",
        &p("other.pub"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("already exists (use --force"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(dir.path().join("k.pem")).unwrap(), before);
    assert!(!dir.path().join("other.pub").exists());

    let out = relay(&[
        "keys",
        "generate",
        "--secret",
        &p("k.pem"),
        "--public",
        &p("k.pub"),
        "--force",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(fs::read(dir.path().join("k.pem")).unwrap(), before);
    let mode = fs::metadata(dir.path().join("k.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn build_verify_inspect() {
    let dir = with_keys();
    let out = build(
        dir.path(),
        "5",
        &["--created", "2026-01-01T00:00:00Z", "--expires-in", "3650d"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("sequence 5, 22 files"),
        "{}",
        text(&out)
    );
    let bundle = dir.path().join("b.tgz").display().to_string();
    let public = dir.path().join("k.pub").display().to_string();

    let out = relay(&["bundle", "verify", &bundle, "--trust", &public]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK "));

    let out = relay(&[
        "bundle",
        "verify",
        &bundle,
        "--trust",
        &public,
        "--held-sequence",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("sequence 5 is not newer than the held sequence 5"),
        "{stdout}"
    );

    let out = relay(&["bundle", "inspect", &bundle, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verified"], false);
    assert_eq!(json["manifest"]["sequence"], 5);
    assert_eq!(json["manifest"]["files"].as_array().unwrap().len(), 22);

    let out = relay(&["bundle", "inspect", &bundle]);
    assert!(text(&out).contains("NOT VERIFIED"), "{}", text(&out));
}

/// `relay bundle inspect FILE | head -0`: the reader went away; the command ends quietly
/// with success (ripgrep's behaviour), no panic from `println!`.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = with_keys();
    let out = build(dir.path(), "5", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let bundle = dir.path().join("b.tgz");
    for json in [false, true] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["bundle", "inspect"])
            .arg(&bundle)
            .args(json.then_some("--json"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The only read end, closed before the command writes.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "json {json}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "json {json}");
    }
}

#[test]
fn verify_with_another_key_fails_with_one_line() {
    let dir = with_keys();
    assert!(build(dir.path(), "1", &[]).status.success());
    let other = with_keys();
    let out = relay(&[
        "bundle",
        "verify",
        &dir.path().join("b.tgz").display().to_string(),
        "--trust",
        &other.path().join("k.pub").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("which is not trusted"));
}

#[test]
fn errors_exit_2() {
    let dir = with_keys();
    let public = dir.path().join("k.pub").display().to_string();
    let out = relay(&["bundle", "verify", "/nonexistent/b.tgz", "--trust", &public]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = relay(&["bundle", "verify", &public, "--trust", "/nonexistent/k.pub"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// An error names its cause once: an input that is not there is said to be missing, once,
/// after what was being done and which file (it was said twice before).
#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let feeds = dir.path().join("feeds");
    let out = relay(&[
        "feeds",
        "import",
        "osv",
        "/nonexistent/all.zip",
        "-o",
        feeds.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "the error, then what to do: {stderr}");
    assert!(
        lines[0].starts_with("error: importing into ")
            && lines[0].contains("/nonexistent/all.zip: "),
        "{stderr}"
    );
    assert!(lines[1].starts_with("hint: check the path"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// Every class of error says what to do next, on a `hint:` line under the error (or under
/// a failed check's FAILED line): a missing or wrong kind of path, a wrong setting, a port
/// taken, nothing listening, a damaged or untrusted bundle. (A refused credential or role, with a relay
/// running: `server_process::relay_download_and_upload_as_operators_run_them`.)
#[test]
fn every_class_of_error_says_what_to_do_next() {
    let dir = with_keys();
    assert!(build(dir.path(), "1", &[]).status.success());
    let p = |n: &str| dir.path().join(n).display().to_string();
    fs::write(dir.path().join("junk.tgz"), "not a bundle").unwrap();
    let other = with_keys();
    let other_key = other.path().join("k.pub").display().to_string();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let refused = format!("https://127.0.0.1:{}", crate::support::free_port());
    let (data, missing_key) = (p("data"), p("missing.pem"));
    let (missing_bundle, missing_public, missing_dir) =
        (p("missing/b.tgz"), p("missing/k.pub"), p("missing"));
    let (bundle, junk, key, public) = (p("b.tgz"), p("junk.tgz"), p("k.pem"), p("k.pub"));
    let samples = samples();
    let bad_config = p("bad.toml");
    fs::write(&bad_config, "[listne]\naddress = \"127.0.0.1:0\"\n").unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["bundle", "verify", &missing_bundle, "--trust", &public],
            2,
            "check the path",
        ),
        (
            vec!["bundle", "verify", &bundle, "--trust", &missing_public],
            2,
            "check the path",
        ),
        (
            vec![
                "bundle",
                "build",
                "--feeds",
                &missing_dir,
                "--key",
                &key,
                "--sequence",
                "2",
                "--origin",
                "o",
                "-o",
                &junk,
            ],
            2,
            "check the path",
        ),
        (
            vec![
                "bundle",
                "build",
                "--feeds",
                &samples,
                "--key",
                &missing_key,
                "--sequence",
                "2",
                "--origin",
                "o",
                "-o",
                &junk,
            ],
            2,
            "check the path",
        ),
        (
            vec![
                "bundle",
                "build",
                "--feeds",
                &samples,
                "--key",
                "/",
                "--sequence",
                "2",
                "--origin",
                "o",
                "-o",
                &junk,
            ],
            2,
            "give the path of a file, not of a directory",
        ),
        (
            vec!["bundle", "verify", &junk, "--trust", &public],
            1,
            "the file is damaged or not a bundle",
        ),
        (
            vec!["bundle", "verify", &bundle, "--trust", &other_key],
            1,
            "add the signer's public-key file",
        ),
        (
            vec!["serve", "--config", &bad_config],
            2,
            "fix that setting: relay.example.toml has every key",
        ),
        (
            vec!["serve", "--config", &missing_dir],
            2,
            "without --config starts with embedded defaults",
        ),
        (
            vec!["serve", "--listen", &taken, "--data-dir", &data],
            2,
            "another process listens there",
        ),
        (
            vec!["download", "--address", &refused, "-o", &junk],
            2,
            "nothing answers at that address",
        ),
        (
            vec!["status", "--address", &refused],
            2,
            "nothing answers at that address",
        ),
    ];
    for (args, code, step) in cases {
        let out = relay(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("hint: ") && l.contains(step)),
            "{args:?} does not say {step:?}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_bad_feed_fails_the_build_and_leaves_no_output() {
    let dir = with_keys();
    let feeds = dir.path().join("feeds/domains");
    fs::create_dir_all(&feeds).unwrap();
    fs::write(feeds.join("x.txt"), "ok.example\nNOT OK\n").unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let out = relay(&[
        "bundle",
        "build",
        "--feeds",
        &p("feeds"),
        "--key",
        &p("k.pem"),
        "--sequence",
        "1",
        "--origin",
        "o",
        "-o",
        &p("out/b.tgz"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("x.txt:2: domain \"NOT OK\" must be lower case"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // Not the bundle, not a temp file, not even the directory made for it.
    assert!(!dir.path().join("out").exists(), "{left:?}");
    assert_eq!(left.len(), 3, "something left behind: {left:?}");
}

#[test]
fn help_explains_the_commands() {
    let out = relay(&["bundle", "build", "--help"]);
    let help = text(&out);
    for needle in [
        "--feeds",
        "--key",
        "--sequence",
        "--origin",
        "--expires-in",
        "--created",
        "--output",
        "byte-identical",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}

#[test]
fn the_example_config_parses_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/relay.example.toml");
    let example = relay::config::Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(example, relay::config::Config::default());
    // Every key is written out (nothing left to a default the reader cannot see),
    // except the optional paths shown commented.
    let text = fs::read_to_string(&path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let defaults = toml::Table::try_from(relay::config::Config::default()).unwrap();
    for (section, keys) in &defaults {
        let Some(keys) = keys.as_table() else {
            // An array of tables (sources): shown as a commented example.
            assert!(
                text.contains(&format!("# [[{section}]]")),
                "{section} missing from the example"
            );
            continue;
        };
        for key in keys.keys() {
            let written = table.get(section).and_then(|s| s.get(key)).is_some();
            let commented = text.contains(&format!("# {key} = "));
            assert!(
                written || commented,
                "{section}.{key} missing from the example"
            );
        }
    }
}

#[test]
fn the_example_origin_section_parses_when_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/relay.example.toml");
    let text = fs::read_to_string(&path).unwrap();
    let start = text.find("# [origin]").unwrap();
    let block: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
        .collect();
    let config: relay::config::Config = toml::from_str(&block).unwrap();
    let origin = config.origin.unwrap();
    assert_eq!(origin.inputs.len(), 2);
    assert_eq!(origin.inputs[0].feed_name(), "go");
    assert_eq!(origin.schedule, "0 0 */6 * * *");
}

/// A config file pointing at a data dir of its own.
fn config_in(dir: &Path) -> String {
    let path = dir.join("relay.toml");
    fs::write(
        &path,
        format!("[storage]\ndata_dir = \"{}\"\n", dir.join("data").display()),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn users_add_writes_bcrypt_and_the_role() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args([
            "users",
            "add",
            "alice",
            "--role",
            "uploader",
            "--password-stdin",
            "--config",
            &config,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let htpasswd = fs::read_to_string(dir.path().join("data/htpasswd")).unwrap();
    let (user, hash) = htpasswd.trim().split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(hash.starts_with("$2b$"));
    assert!(bcrypt::verify("correct horse", hash).unwrap());
    let roles = fs::read_to_string(dir.path().join("data/roles.toml")).unwrap();
    assert!(roles.contains("alice = \"uploader\""), "{roles}");

    // Without --password-stdin a password is made and shown once.
    let out = relay(&[
        "users", "add", "bob", "--role", "reader", "--config", &config,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("password (shown once): "));
    let out = relay(&["users", "add", "eve", "--role", "root", "--config", &config]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn tokens_add_prints_once_and_stores_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = relay(&["tokens", "add", "site-b", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("rt_") && token.len() > 40, "{token}");
    let stored = fs::read_to_string(dir.path().join("data/tokens")).unwrap();
    assert!(!stored.contains(&token));
    assert!(stored.contains(&format!(
        "site-b:{}",
        relay::bundle::Sha256::of(token.as_bytes())
    )));
    let mode = fs::metadata(dir.path().join("data/tokens"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn certs_init_makes_a_ca_and_a_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let out = relay(&[
        "certs",
        "init",
        "--dir",
        tls.to_str().unwrap(),
        "--name",
        "relay.example",
        "--name",
        "127.0.0.1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for f in ["ca.pem", "server.pem", "server.key"] {
        assert!(tls.join(f).is_file(), "{f}");
    }
    let mode = fs::metadata(tls.join("server.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = relay(&["certs", "init", "--dir", tls.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refuses to overwrite without --force"
    );
}

#[test]
fn credentials_never_travel_over_plain_http_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |extra: &str| {
        let path = dir.path().join("relay.toml");
        fs::write(
            &path,
            format!(
                "[storage]\ndata_dir = \"{}\"\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        path
    };
    let cases = [
        (
            "[[sources]]\nkind = \"upstream\"\nurl = \"http://127.0.0.1:9/\"\ntoken = \"rt_secret\"\n",
            "sources[0]",
        ),
        (
            "[[supervisors]]\nname = \"east\"\nurl = \"http://127.0.0.1:9\"\nuser = \"central\"\npassword = \"pw\"\n",
            "supervisors.east",
        ),
        (
            "[[archives]]\nname = \"tw\"\npath = \"/tw.tar.gz\"\nsource = { kind = \"custom_location\", url = \"HTTP://127.0.0.1:9/a\", user = \"u\", password = \"p\" }\n",
            "archives.tw source",
        ),
    ];
    for (extra, what) in cases {
        let path = write(extra);
        let out = relay(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains(what) && said.contains("would carry the credential in clear"),
            "{said}"
        );
        assert!(
            !said.contains("rt_secret"),
            "the secret is never printed: {said}"
        );
    }
    // Without a credential, or allowed explicitly (a warning at every start), it loads.
    let path =
        write("[[sources]]\nkind = \"custom_location\"\nurl = \"http://127.0.0.1:9/b.tgz\"\n");
    let config = relay::config::Config::load(Some(&path), Vec::new()).unwrap();
    assert!(config.insecure_credentials().unwrap().is_empty());
    let path = write(
        "[[sources]]\nkind = \"upstream\"\nurl = \"http://127.0.0.1:9/\"\nuser = \"u\"\npassword = \"p\"\nallow_insecure_credentials = true\n",
    );
    let config = relay::config::Config::load(Some(&path), Vec::new()).unwrap();
    let warnings = config.insecure_credentials().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("sent in clear"), "{warnings:?}");
}

/// A bundle, its index and a delta are no secrets: 0666 less the umask (0644 under the
/// usual 022, what a web server running as another user can read from a custom
/// location); a stricter umask is respected. The key beside them stays 0600.
#[test]
fn bundle_files_are_readable_by_others_as_the_umask_allows() {
    let dir = with_keys();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (feeds, key) = (samples(), p("k.pem"));
    let build_under = |umask: &str, sequence: &str, out: &str| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" bundle build --feeds \"$1\" --key \"$2\" --sequence {sequence} --origin cli-test -o \"$3\""
            ))
            .arg(env!("CARGO_BIN_EXE_relay"))
            .args([&feeds, &key, &p(out)])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let mode = |n: &str| {
        fs::metadata(dir.path().join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    build_under("022", "1", "one.tgz");
    assert_eq!(mode("one.tgz"), 0o644);
    assert_eq!(mode("one.tgz.idx"), 0o644);
    build_under("077", "2", "two.tgz");
    assert_eq!(mode("two.tgz"), 0o600);
    assert_eq!(mode("two.tgz.idx"), 0o600);
    let status = Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" bundle delta --from \"$1\" --to \"$2\"")
        .arg(env!("CARGO_BIN_EXE_relay"))
        .args([p("one.tgz"), p("two.tgz")])
        .status()
        .unwrap();
    assert!(status.success());
    let delta = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("two.tgz.delta-"))
        .expect("the delta beside the new bundle");
    assert_eq!(mode(&delta), 0o644);
    assert_eq!(mode("k.pem"), 0o600);
}

/// `relay serve` for a few seconds (zero-config, in `dir`), run by the shell line `shell`
/// (`{}` stands for the command); what it wrote, stdout and stderr.
fn serve_briefly(dir: &Path, shell: &str, env: &[(&str, &str)]) -> String {
    let data = dir.join("data");
    let line = format!(
        "timeout 3 \"{}\" serve --data-dir \"{}\" --listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_relay"),
        data.display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(shell.replace("{}", &line));
    cmd.env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Logs in a file or the journal are plain text; a terminal gets colours unless
/// `NO_COLOR` is set. (`script` gives the relay a terminal.)
#[test]
fn logs_have_colours_only_on_a_terminal_that_wants_them() {
    let esc = "\u{1b}[";
    let dir = tempfile::tempdir().unwrap();
    let to_file = serve_briefly(&dir.path().join("a"), "{} 2>&1", &[]);
    assert!(to_file.contains("INFO"), "{to_file}");
    assert!(!to_file.contains(esc), "escapes in a file:\n{to_file}");
    let pty = "script -qec '{}' /dev/null";
    let terminal = serve_briefly(&dir.path().join("b"), pty, &[]);
    assert!(
        terminal.contains(esc),
        "a terminal gets colours:\n{terminal}"
    );
    // A person at a terminal is shown the generated credentials (kept in a file too).
    assert!(
        terminal.contains("generated credentials (stored hashed in")
            && terminal.lines().any(|l| l.trim().starts_with("reader: ")),
        "{terminal}"
    );
    assert!(
        !to_file.lines().any(|l| l.trim().starts_with("reader: ")),
        "{to_file}"
    );
    let no_color = serve_briefly(&dir.path().join("c"), pty, &[("NO_COLOR", "1")]);
    assert!(no_color.contains("INFO"), "{no_color}");
    assert!(!no_color.contains(esc), "NO_COLOR:\n{no_color}");
}

/// `--help` lists each subcommand on one short line (the details are under
/// `COMMAND --help`), as cargo and ripgrep do.
#[test]
fn help_gives_each_subcommand_one_short_line() {
    let out = relay(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(commands.len() >= 15, "{help}");
    for line in commands {
        assert!(line.len() <= 100, "a long line: {line}");
    }
    let serve = relay(&["serve", "--help"]);
    assert!(
        String::from_utf8_lossy(&serve.stdout).contains("With no configuration"),
        "the details stay under serve --help"
    );
}
