//! The `relay serve` binary as operators run it: zero-config start, curl and wget as
//! clients, an htpasswd file made by Apache's `htpasswd -B`, crash safety under SIGKILL,
//! slow-header clients, logs free of secrets, SIGHUP certificate reload, SIGTERM.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use relay::bundle::{self, Limits, Sha256, Timestamp, TrustStore};
use support::process::{RelayProcess, curl, write_config};
use support::server::{fresh_bundle, fresh_bundle_signed_by, prepare_dir};

fn started(extra: &str) -> (tempfile::TempDir, RelayProcess) {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let config = write_config(dir.path(), extra);
    let process = RelayProcess::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    (dir, process)
}

fn ca(dir: &Path) -> String {
    dir.join("tls/ca.pem").display().to_string()
}

fn upload_with_curl(dir: &Path, url: &str, bundle: &[u8]) -> i32 {
    let file = dir.join(format!("upload-{}.tar.gz", Sha256::of(bundle)));
    std::fs::write(&file, bundle).unwrap();
    let (code, body) = curl(&[
        "--cacert",
        &ca(dir),
        "-u",
        "uploader:uploader-pw",
        "-T",
        file.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/api/v1/feeds/bundle"),
    ]);
    assert_eq!(code, 0);
    String::from_utf8(body).unwrap().parse().unwrap()
}

#[test]
fn zero_config_start_serves_a_verifiable_sample() {
    let cwd = tempfile::tempdir().unwrap();
    let process = RelayProcess::start(cwd.path(), &["--listen", "127.0.0.1:0"], &[]);
    let out = process.output();
    // Its output is no terminal (it may be the journal): the passwords are not in it, but
    // in a 0600 file of the data directory, which the output names.
    let file = cwd.path().join("relay-data/generated-credentials");
    assert!(
        out.contains("generated credentials for reader, admin: in relay-data/generated-credentials (mode 0600; not printed"),
        "{out}"
    );
    let kept = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let password = kept
        .lines()
        .find_map(|l| l.strip_prefix("reader: "))
        .unwrap_or_else(|| panic!("no reader credential kept:\n{kept}"))
        .to_owned();
    let admin = kept
        .lines()
        .find_map(|l| l.strip_prefix("admin: "))
        .unwrap_or_else(|| panic!("no admin credential kept:\n{kept}"));
    assert!(
        !out.contains(&password) && !out.contains(admin),
        "a password in the output:\n{out}"
    );
    let try_line = out
        .lines()
        .find_map(|l| l.strip_prefix("try: "))
        .unwrap()
        .replace("reader:PASSWORD", &format!("reader:{password}"));
    // Run the printed curl line as printed, in the directory it was printed for.
    let mut words: Vec<String> = try_line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words.remove(0), "curl");
    let status = Command::new("curl")
        .args(["--silent", "--show-error", "--noproxy", "*"])
        .args(&words)
        .current_dir(cwd.path())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(cwd.path().join("bundle.tar.gz")).unwrap();
    let trust = TrustStore::load(&[cwd.path().join("relay-data/keys/local.pub")]).unwrap();
    let v = bundle::verify(
        &bytes[..],
        &trust,
        &Limits::default(),
        Timestamp::now(),
        None,
    )
    .unwrap();
    assert_eq!(
        v.manifest()
            .files
            .iter()
            .filter(|f| f.kind == bundle::FeedKind::Apps)
            .count(),
        14
    );
    let ca = cwd
        .path()
        .join("relay-data/tls/ca.pem")
        .display()
        .to_string();
    let (_, ping) = curl(&["--cacert", &ca, &format!("{}/api/v1/_ping", process.url)]);
    assert_eq!(ping, b"OK", "{}", String::from_utf8_lossy(&ping));
    let hashed = std::fs::read_to_string(cwd.path().join("relay-data/htpasswd")).unwrap();
    assert!(!hashed.contains(&password), "password stored in clear");
    drop(process);

    // A second start keeps the credentials and the sample: nothing printed again.
    let again = RelayProcess::start(cwd.path(), &["--listen", "127.0.0.1:0"], &[]);
    let out = again.output();
    assert!(!out.contains("generated credentials"), "{out}");
    let (code, bytes2) = curl(&[
        "--cacert",
        &cwd.path()
            .join("relay-data/tls/ca.pem")
            .display()
            .to_string(),
        "-u",
        &format!("reader:{password}"),
        &format!("{}/api/v1/feeds/bundle", again.url),
    ]);
    assert_eq!(code, 0);
    assert_eq!(bytes2, bytes);
}

#[test]
fn curl_and_wget_download_resume_and_revalidate() {
    let (dir, process) = started("");
    let url = &process.url;
    let bundle = fresh_bundle(11);
    assert_eq!(upload_with_curl(dir.path(), url, &bundle), 201);
    let ca = ca(dir.path());
    let out = dir.path().join("f");
    let out_s = out.to_str().unwrap();

    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "reader:reader-pw",
        &format!("{url}/api/v1/feeds/bundle"),
        "-o",
        out_s,
    ]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), bundle);

    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "reader:reader-pw",
        &format!("{url}/intelligence/bundle.tar.gz"),
        "-o",
        out_s,
    ]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), bundle, "custom location");

    // Consoles that stop at TLS 1.2 are served the same bytes.
    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "-u",
        "reader:reader-pw",
        &format!("{url}/api/v1/feeds/bundle"),
        "-o",
        out_s,
    ]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), bundle, "over TLS 1.2");

    // A download cut short: curl -C - asks for the rest and completes it.
    std::fs::write(&out, &bundle[..bundle.len() / 3]).unwrap();
    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "reader:reader-pw",
        "-C",
        "-",
        &format!("{url}/api/v1/feeds/bundle"),
        "-o",
        out_s,
    ]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), bundle, "resumed");

    let (code, body) = curl(&["--cacert", &ca, &format!("{url}/api/v1/_ping")]);
    assert_eq!((code, body.as_slice()), (0, &b"OK"[..]));

    let etag = format!("If-None-Match: \"{}\"", Sha256::of(&bundle));
    let (_, status) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "reader:reader-pw",
        "-H",
        &etag,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/api/v1/feeds/bundle"),
    ]);
    assert_eq!(status, b"304");

    let wget_out = dir.path().join("w");
    let status = Command::new("wget")
        .args([
            "-q",
            "--no-proxy",
            &format!("--ca-certificate={ca}"),
            "--user=reader",
            "--password=reader-pw",
            "-O",
        ])
        .arg(&wget_out)
        .arg(format!("{url}/api/v1/feeds/bundle"))
        .status()
        .expect("wget is installed (tests/run installs it)");
    assert!(status.success());
    assert_eq!(std::fs::read(&wget_out).unwrap(), bundle, "wget");
}

#[test]
fn an_htpasswd_file_from_apache_htpasswd_b_is_accepted_as_is() {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let file = dir.path().join("apache.htpasswd");
    for (i, (user, pw)) in [("alice", "s3cret-alice"), ("bob", "s3cret-bob")]
        .iter()
        .enumerate()
    {
        let mut cmd = Command::new("htpasswd");
        cmd.arg("-B").arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg(&file)
            .arg(user)
            .arg(pw)
            .status()
            .expect("htpasswd (apache2-utils)");
        assert!(status.success());
    }
    assert!(std::fs::read_to_string(&file).unwrap().contains(":$2y$"));
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("{}/htpasswd", dir.path().display()),
            file.to_str().unwrap(),
        )
        .replace("readers = [\"reader\"]", "readers = [\"alice\", \"bob\"]");
    std::fs::write(&config, text).unwrap();
    let process = RelayProcess::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let status_url = format!("{}/api/v1/status", process.url);
    let check = |cred: &str| {
        let (_, code) = curl(&[
            "--cacert",
            &ca(dir.path()),
            "-u",
            cred,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &status_url,
        ]);
        String::from_utf8(code).unwrap()
    };
    assert_eq!(check("alice:s3cret-alice"), "200");
    assert_eq!(check("bob:s3cret-bob"), "200");
    assert_eq!(check("alice:s3cret-bob"), "401");
}

#[test]
fn other_hash_kinds_are_refused_at_load_with_the_line_named() {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let file = dir.path().join("htpasswd");
    let status = Command::new("htpasswd")
        .args(["-m", "-b"])
        .arg(&file)
        .args(["carol", "pw"])
        .status()
        .unwrap();
    assert!(status.success());
    let config = write_config(dir.path(), "");
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("htpasswd:4: only bcrypt hashes are accepted"),
        "{stderr}"
    );
}

/// A small deterministic generator, so a failing round can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Bundles large enough (a few MiB) that upload, verification and commit take long
/// enough to be interrupted at many different points.
fn big_bundles(n: u64) -> Vec<Vec<u8>> {
    let feeds = tempfile::tempdir().unwrap();
    let osv = feeds.path().join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    let mut text = String::new();
    let mut rng = Lcg(7);
    for i in 0..40_000 {
        text.push_str(&format!(
            r#"{{"id":"CRASH-{i}","modified":"2026-01-01T00:00:00Z","summary":"{:016x}{:016x}","affected":[{{"package":{{"ecosystem":"PyPI","name":"p{}"}},"versions":["1.{}"]}}]}}"#,
            rng.below(u64::MAX), rng.below(u64::MAX), rng.below(100_000), rng.below(100)
        ));
        text.push('\n');
    }
    std::fs::write(osv.join("big.jsonl"), text).unwrap();
    let now = Timestamp::now();
    (1..=n)
        .map(|seq| {
            let mut out = Vec::new();
            let options = bundle::BuildOptions {
                sequence: bundle::Sequence(seq),
                origin: "crash-test".into(),
                created: Timestamp::from_unix(now.unix() - 60).unwrap(),
                expires: now.saturating_add(Duration::from_secs(86400)),
            };
            bundle::build(feeds.path(), &support::origin_key(), &options, &mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn sigkill_during_upload_and_commit_never_loses_the_current_bundle() {
    let rounds = 20;
    let bundles = big_bundles(rounds + 1);
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let config = write_config(dir.path(), "");
    let args = ["--config", config.to_str().unwrap()];
    let trust = TrustStore::new([support::origin_key().public()]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = Lcg(seed);

    let first = RelayProcess::start(dir.path(), &args, &[]);
    assert_eq!(upload_with_curl(dir.path(), &first.url, &bundles[0]), 201);
    drop(first);
    let mut current = Sha256::of(&bundles[0]);
    let (mut kept, mut replaced) = (0, 0);
    for (round, next) in bundles.iter().enumerate().skip(1) {
        let mut relay = RelayProcess::start(dir.path(), &args, &[]);
        let file = dir.path().join("next.tar.gz");
        std::fs::write(&file, next).unwrap();
        let uploader = Command::new("curl")
            .args([
                "--silent",
                "--noproxy",
                "*",
                "--cacert",
                &ca(dir.path()),
                "-u",
                "uploader:uploader-pw",
                "-T",
            ])
            .arg(&file)
            .arg(format!("{}/api/v1/feeds/bundle", relay.url))
            .args(["-o", "/dev/null"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        relay.kill(); // SIGKILL
        let _ = uploader.wait_with_output();
        drop(relay);

        let relay = RelayProcess::start(dir.path(), &args, &[]);
        let (code, served) = curl(&[
            "--cacert",
            &ca(dir.path()),
            "-u",
            "reader:reader-pw",
            &format!("{}/api/v1/feeds/bundle", relay.url),
        ]);
        assert_eq!(
            code,
            0,
            "round {round} (seed {seed}): no bundle served\n{}",
            relay.output()
        );
        let v = bundle::verify(
            &served[..],
            &trust,
            &Limits::default(),
            Timestamp::now(),
            None,
        )
        .unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}): served bundle does not verify: {e}")
        });
        let new = Sha256::of(next);
        assert!(
            v.sha256() == current || v.sha256() == new,
            "round {round} (seed {seed}): neither old nor new"
        );
        if v.sha256() == new {
            replaced += 1;
        } else {
            kept += 1;
        }
        current = v.sha256();
    }
    println!("{rounds} rounds: {kept} kept the old bundle, {replaced} committed the new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_do_not_stop_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let relay = support::server::TestRelay::start_with(|c| {
        c.listen.header_read_timeout = relay::config::HumanDuration::secs(2);
    })
    .await;
    let ca = std::fs::read(&relay.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut dribblers = Vec::new();
    for _ in 0..200 {
        let connector = connector.clone();
        let addr = relay.addr;
        dribblers.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\n")
                .await
                .unwrap();
            // One header byte every 100 ms, until the server gives up on us.
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tls.write_all(b"X").await.is_err() {
                    return true;
                }
                let mut buf = [0u8; 1];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await
                {
                    return true;
                }
            }
            false
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A normal client is served while 200 connections dribble.
    let r = relay.get("/api/v1/status").send().await.unwrap();
    assert_eq!(r.status(), 200);
    for d in dribblers {
        assert!(
            d.await.unwrap(),
            "a slow-header connection was never closed"
        );
    }
    relay.stop().await;
}

#[test]
fn logs_hold_no_password_token_or_authorization_header() {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let token = relay::auth::add_token(&dir.path().join("tokens"), "downstream").unwrap();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[storage]",
        &format!("tokens = \"{}/tokens\"\n\n[storage]", dir.path().display()),
    );
    std::fs::write(&config, text).unwrap();
    let mut process = RelayProcess::start(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("RUST_LOG", "debug")],
    );
    let url = process.url.clone();
    let ca = ca(dir.path());
    let status = format!("{url}/api/v1/status");
    curl(&["--cacert", &ca, "-u", "reader:wrong-secret-1", &status]);
    curl(&["--cacert", &ca, "-u", "nobody:wrong-secret-2", &status]);
    curl(&["--cacert", &ca, "-u", "reader:reader-pw", &status]);
    curl(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Authorization: Bearer {token}"),
        &status,
    ]);
    curl(&[
        "--cacert",
        &ca,
        "-H",
        "Authorization: Bearer rt_wrong-token-3",
        &status,
    ]);
    upload_with_curl(dir.path(), &url, &fresh_bundle(1));
    process.signal("TERM");
    assert!(process.wait_exit(10).is_some());
    let logs = process.output();
    assert!(
        logs.contains("bundle stored"),
        "the logs are captured:\n{logs}"
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        "wrong-secret-1".to_owned(),
        "wrong-secret-2".to_owned(),
        "reader-pw".to_owned(),
        "uploader-pw".to_owned(),
        token.clone(),
        "rt_wrong-token-3".to_owned(),
        b64("reader:reader-pw"),
        b64("uploader:uploader-pw"),
    ] {
        assert!(!logs.contains(&secret), "{secret} appears in the logs");
    }
    assert!(
        !logs.to_ascii_lowercase().contains("authorization"),
        "an Authorization header appears in the logs"
    );
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let (dir, process) = started("[routes]\nwatch_keepalive = \"1s\"\n");
    let old_ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = |ca: &[u8]| {
            reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
                .http1_only()
                .no_proxy()
                .build()
                .unwrap()
        };
        let url = process.url.clone();
        let watch = client(&old_ca)
            .get(format!("{url}/api/v1/feeds/watch"))
            .basic_auth("reader", Some("reader-pw"))
            .send()
            .await
            .unwrap();
        // New CA, new certificate, in place; then SIGHUP.
        relay::certs::init(
            &dir.path().join("tls"),
            &relay::certs::default_names(),
            30,
            true,
        )
        .unwrap();
        let new_ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        process.signal("HUP");
        let mut ok = false;
        for _ in 0..100 {
            let r = client(&new_ca)
                .get(format!("{url}/api/v1/_ping"))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "the new certificate is never served");
        assert!(
            client(&old_ca)
                .get(format!("{url}/api/v1/_ping"))
                .send()
                .await
                .is_err(),
            "old certificate still served to new connections"
        );
        // The watch channel opened before the reload still delivers.
        let r = client(&new_ca)
            .put(format!("{url}/api/v1/feeds/bundle"))
            .basic_auth("uploader", Some("uploader-pw"))
            .body(fresh_bundle(5))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        use futures_util::StreamExt;
        let mut stream = watch.bytes_stream();
        let mut seen = String::new();
        while !seen.contains("\"sequence\":5") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    });
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let (_dir, mut process) = started("");
    process.signal("TERM");
    let status = process
        .wait_exit(10)
        .expect("relay did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", process.output());
    assert!(process.output().contains("shutting down"));
}

#[test]
fn insecure_http_is_explicit_and_loud() {
    let (dir, _) = {
        let dir = tempfile::tempdir().unwrap();
        prepare_dir(dir.path());
        (dir, ())
    };
    let config = write_config(dir.path(), "");
    let process = RelayProcess::start(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--insecure-http"],
        &[],
    );
    assert!(process.url.starts_with("http://"), "{}", process.url);
    assert!(
        process.output().contains("WARNING: serving plain HTTP"),
        "{}",
        process.output()
    );
    let (code, body) = curl(&[&format!("{}/api/v1/_ping", process.url)]);
    assert_eq!((code, body.as_slice()), (0, &b"OK"[..]));
}

#[test]
fn tls_1_2_and_1_3_are_both_served() {
    let (dir, process) = started("");
    let ping = format!("{}/api/v1/_ping", process.url);
    for flags in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let ca_path = ca(dir.path());
        let mut args = vec!["--cacert", ca_path.as_str()];
        args.extend(flags);
        args.push(&ping);
        let (code, body) = curl(&args);
        assert_eq!((code, body.as_slice()), (0, &b"OK"[..]), "{flags:?}");
    }
}

#[test]
fn relay_download_and_upload_as_operators_run_them() {
    let (dir, process) = started("");
    let url = process.url.clone();
    let ca = ca(dir.path());
    let bundle = fresh_bundle(12);
    let file = dir.path().join("to-upload.tar.gz");
    std::fs::write(&file, &bundle).unwrap();
    let relay = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .unwrap()
    };
    // `relay upload FILE` as `user:password`, with the relay's CA or without it.
    let upload = |file: &Path, credential: &str, ca: Option<&String>| {
        let (user, password) = credential.split_once(':').unwrap();
        let file = file.to_str().unwrap();
        let mut args = vec![
            "upload",
            file,
            "--address",
            &url,
            "--user",
            user,
            "--password",
            password,
        ];
        if let Some(ca) = ca {
            args.extend(["--tlscacert", ca.as_str()]);
        }
        relay(&args)
    };
    let out = upload(&file, "uploader:uploader-pw", Some(&ca));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("uploaded: sequence 12"));
    // The same again is refused as not newer: a failed check, exit 1.
    let out = upload(&file, "uploader:uploader-pw", Some(&ca));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("refused (409 Conflict)"), "{said}");
    assert!(
        said.contains("hint: ") && said.contains("higher --sequence"),
        "{said}"
    );
    // Without the relay's CA: one line that names the cause and the option that fixes it.
    let out = upload(&file, "uploader:uploader-pw", None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("certificate signed by an unknown CA") && stderr.contains("--tlscacert"),
        "{stderr}"
    );
    // The same for a download from a custom location (the sources' fetch code).
    let out = relay(&[
        "download",
        "--address",
        &format!("{url}/intelligence/bundle.tar.gz"),
        "--user",
        "reader",
        "--password",
        "reader-pw",
        "-o",
        "cut.tar.gz",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate signed by an unknown CA")
            && stderr.contains("--tlscacert")
            && !stderr.contains("the source's"),
        "{stderr}"
    );
    // Signed by a key the relay does not trust: refused, and the fix named.
    let stranger = dir.path().join("untrusted.tar.gz");
    std::fs::write(&stranger, fresh_bundle_signed_by(13, [2; 32])).unwrap();
    let out = upload(&stranger, "uploader:uploader-pw", Some(&ca));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("refused (422 Unprocessable Entity): signed by key")
            && said.contains("not trusted")
            && said.contains("hint: list the signer's public key under [trust] keys"),
        "{said}"
    );
    // A reader may not upload: an error, exit 2, and what to do (every_class_of_error_...
    // in cli.rs has the errors that need no relay).
    let out = upload(&file, "reader:reader-pw", Some(&ca));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("\nhint: the credential is good but its role"),
        "{stderr}"
    );
    // A wrong password: the same, for the credential.
    let out = relay(&[
        "download",
        "--address",
        &url,
        "--user",
        "reader",
        "--password",
        "not-the-password",
        "--tlscacert",
        &ca,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("\nhint: check the credential"),
        "{stderr}"
    );

    // From the relay's API, named after the sequence, verified.
    let origin_pub = dir.path().join("origin.pub");
    let out = relay(&[
        "download",
        "--address",
        &url,
        "--user",
        "reader",
        "--password",
        "reader-pw",
        "--tlscacert",
        &ca,
        "--trust",
        origin_pub.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read(dir.path().join("intel_bundle_12.tar.gz")).unwrap(),
        bundle
    );
    // From a plain URL (the custom location), into -o, resuming a cut download.
    let out_file = dir.path().join("custom.tar.gz");
    std::fs::write(
        dir.path().join("custom.tar.gz.part"),
        &bundle[..bundle.len() / 2],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("custom.tar.gz.etag"),
        format!("\"{}\"", Sha256::of(&bundle)),
    )
    .unwrap();
    let out = relay(&[
        "download",
        "--address",
        &format!("{url}/intelligence/bundle.tar.gz"),
        "--user",
        "reader",
        "--password",
        "reader-pw",
        "--tlscacert",
        &ca,
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read(&out_file).unwrap(), bundle);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{} transferred", bundle.len() - bundle.len() / 2)),
        "{stdout}"
    );
    // Wrong CA: a clear error, exit 2.
    let out = relay(&[
        "download",
        "--address",
        &url,
        "--user",
        "reader",
        "--password",
        "reader-pw",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Runs `relay ping` with `args`; returns (exit code, stdout).
fn ping(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("ping")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A relay whose certificate is replaced by one for `names`, valid from `start` for `days`.
fn relay_with_cert(
    names: &[&str],
    start: time::OffsetDateTime,
    days: i64,
) -> (tempfile::TempDir, RelayProcess) {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let pki = relay::certs::generate(&names, start, days).unwrap();
    std::fs::write(dir.path().join("tls/ca.pem"), pki.ca_cert).unwrap();
    std::fs::write(dir.path().join("tls/server.pem"), pki.server_cert).unwrap();
    std::fs::write(dir.path().join("tls/server.key"), pki.server_key).unwrap();
    let config = write_config(dir.path(), "");
    let process = RelayProcess::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    (dir, process)
}

#[test]
fn ping_walks_every_step_of_a_healthy_relay() {
    let (dir, process) = started("");
    let ca = ca(dir.path());
    let (code, out) = ping(&[
        &process.url,
        "--tlscacert",
        &ca,
        "--user",
        "reader",
        "--password",
        "reader-pw",
    ]);
    assert_eq!(code, 0, "{out}");
    for step in ["dns", "tcp", "tls", "http", "auth"] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(step)),
            "{step} missing:\n{out}"
        );
    }
    let (code, out) = ping(&[&process.url, "--tlscacert", &ca, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["steps"].as_array().unwrap().len(), 4);
}

/// Asserts that ping fails at `step` with `needle` in its line, exit 1.
fn fails_at(args: &[&str], step: &str, needle: &str) {
    let (code, out) = ping(args);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no failing step:\n{out}"));
    assert!(
        line.contains(step) && line.contains(needle),
        "expected {step}/{needle}:\n{out}"
    );
    assert!(out.contains("hint: "), "{out}");
}

#[test]
fn ping_names_the_failing_step() {
    // Nothing listens on port 1.
    fails_at(&["https://127.0.0.1:1"], "tcp", "refused");
    // `.invalid` never resolves (RFC 6761), with or without a reachable DNS server.
    fails_at(&["https://relay.invalid:8083"], "dns", "relay.invalid");

    let (dir, process) = started("");
    let ca_path = ca(dir.path());
    fails_at(&[&process.url], "tls", "unknown CA");
    fails_at(
        &[
            &process.url,
            "--tlscacert",
            &ca_path,
            "--user",
            "reader",
            "--password",
            "nope",
        ],
        "auth",
        "401",
    );
    let plain = process.url.replacen("https://", "http://", 1);
    fails_at(&[&plain], "http", "");

    let now = time::OffsetDateTime::now_utc();
    let (dir, process) = relay_with_cert(&["relay.example"], now, 30);
    fails_at(
        &[&process.url, "--tlscacert", &ca(dir.path())],
        "tls",
        "not valid for 127.0.0.1",
    );

    let (dir, process) = relay_with_cert(
        &["localhost", "127.0.0.1"],
        now - time::Duration::days(400),
        30,
    );
    fails_at(
        &[&process.url, "--tlscacert", &ca(dir.path())],
        "tls",
        "expired",
    );
}

/// A relay started with `config_edit` applied to its config text and `args` after it.
fn started_with(
    edit: impl Fn(String) -> String,
    args: &[&str],
) -> (tempfile::TempDir, RelayProcess) {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let config = write_config(dir.path(), "");
    let text = edit(std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, text).unwrap();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let process = RelayProcess::start(dir.path(), &all, &[]);
    (dir, process)
}

/// The requests every access-log test makes: a reader's status, a bundle download, a
/// wrong password, a lean watch channel (curl speaks HTTP/1.1 to it); each with a user agent
/// of its own. Returns the bundle's length.
fn requests_for_the_access_log(dir: &Path, url: &str) -> usize {
    let ca = ca(dir);
    let bundle = fresh_bundle(3);
    assert_eq!(upload_with_curl(dir, url, &bundle), 201);
    let get = |user: &str, agent: &str, path: &str, extra: &[&str]| {
        let target = format!("{url}{path}");
        let mut args = vec!["--cacert", &ca, "-u", user, "-A", agent, "-o", "/dev/null"];
        args.extend_from_slice(extra);
        args.push(&target);
        curl(&args)
    };
    get(
        "reader:reader-pw",
        "status-check/1.0",
        "/api/v1/status",
        &[],
    );
    get(
        "reader:reader-pw",
        "bundle-fetch/2.0",
        "/api/v1/feeds/bundle",
        &[],
    );
    get(
        "reader:reader-pw",
        "head-check/1.0",
        "/api/v1/feeds/bundle",
        &["--head"],
    );
    get(
        "reader:not-the-password",
        "guesser/0.1",
        "/api/v1/status",
        &[],
    );
    get(
        "reader:reader-pw",
        "watcher/3.0",
        "/api/v1/feeds/watch",
        &["--http1.1", "--max-time", "1"],
    );
    // Two daily checks on one HTTP/1.1 connection, answered 304 by the lean path (the
    // reader's credentials are cached by now).
    let etag = format!(
        "If-None-Match: \"{}\"",
        relay::bundle::Sha256::of(&bundle).to_hex()
    );
    let manifest = format!("{url}/api/v1/feeds/manifest");
    let (code, out) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "reader:reader-pw",
        "-A",
        "daily-check/1.0",
        "--http1.1",
        "-H",
        &etag,
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} ",
        &manifest,
        &manifest,
    ]);
    assert_eq!((code, String::from_utf8_lossy(&out).trim()), (0, "304 304"));
    bundle.len()
}

#[test]
fn the_access_log_has_a_line_per_request_and_names_failed_logins() {
    let (dir, mut process) = started_with(
        |text| text.replace("[auth]\n", "[auth]\nmax_failures = 2\n"),
        &[],
    );
    let url = process.url.clone();
    let bundle_len = requests_for_the_access_log(dir.path(), &url);
    // A second wrong password for the same user from the same address: locked out.
    curl(&[
        "--cacert",
        &ca(dir.path()),
        "-u",
        "reader:not-it-either",
        "-o",
        "/dev/null",
        &format!("{url}/api/v1/status"),
    ]);
    process.signal("TERM");
    assert!(process.wait_exit(10).is_some());
    let logs = process.output();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" relay::access: "))
        .collect();
    let line = |agent: &str| {
        access
            .iter()
            .find(|l| l.contains(&format!("user_agent=\"{agent}\"")))
            .unwrap_or_else(|| panic!("no access line for {agent}:\n{logs}"))
            .to_string()
    };
    let status = line("status-check/1.0");
    for field in [
        "client=127.0.0.1:",
        "user=\"reader\"",
        "method=\"GET\"",
        "path=\"/api/v1/status\"",
        "status=200",
        "complete=true",
        "duration_ms=",
    ] {
        assert!(status.contains(field), "{field} missing: {status}");
    }
    let download = line("bundle-fetch/2.0");
    assert!(
        download.contains(&format!(" bytes={bundle_len} ")),
        "{download}"
    );
    assert!(
        download.contains("path=\"/api/v1/feeds/bundle\""),
        "{download}"
    );
    // HEAD sends no body, and nothing of it is missing.
    let head = line("head-check/1.0");
    for field in [
        "method=\"HEAD\"",
        "status=200",
        " bytes=0 ",
        "complete=true",
    ] {
        assert!(head.contains(field), "{field} missing: {head}");
    }
    let refused = line("guesser/0.1");
    assert!(
        refused.contains("status=401") && refused.contains("user=\"reader\""),
        "{refused}"
    );
    let watch = line("watcher/3.0");
    assert!(
        watch.contains("path=\"/api/v1/feeds/watch\"") && watch.contains("status=200"),
        "{watch}"
    );
    let checks: Vec<&&str> = access
        .iter()
        .filter(|l| l.contains("user_agent=\"daily-check/1.0\""))
        .collect();
    assert_eq!(checks.len(), 2, "{logs}");
    for check in checks {
        for field in [
            "user=\"reader\"",
            "method=\"GET\"",
            "path=\"/api/v1/feeds/manifest\"",
            "status=304",
            " bytes=0 ",
            "complete=true",
        ] {
            assert!(check.contains(field), "{field} missing: {check}");
        }
    }
    let upload = access
        .iter()
        .find(|l| l.contains("method=\"PUT\""))
        .unwrap_or_else(|| panic!("no line for the upload:\n{logs}"));
    assert!(
        upload.contains("user=\"uploader\"") && upload.contains("status=201"),
        "{upload}"
    );
    // The failure and the lockout, with the address and the user, at warn; no password.
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("authentication failed")
            && l.contains("client=127.0.0.1")
            && l.contains("user=\"reader\"")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("locked out") && l.contains("user=\"reader\"")),
        "{logs}"
    );
    for secret in [
        "not-the-password",
        "not-it-either",
        "reader-pw",
        "uploader-pw",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

#[test]
fn the_access_log_in_json_has_the_documented_fields_and_can_be_turned_off() {
    let (dir, mut process) = started_with(|text| text, &["--log-format", "json"]);
    let url = process.url.clone();
    let bundle_len = requests_for_the_access_log(dir.path(), &url);
    process.signal("TERM");
    assert!(process.wait_exit(10).is_some());
    let logs = process.output();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let download = events
        .iter()
        .filter(|e| e["target"] == "relay::access")
        .map(|e| &e["fields"])
        .find(|f| f["user_agent"] == "bundle-fetch/2.0")
        .unwrap_or_else(|| panic!("no access event for the download:\n{logs}"));
    assert_eq!(download["message"], "access");
    assert_eq!(download["user"], "reader");
    assert_eq!(download["method"], "GET");
    assert_eq!(download["path"], "/api/v1/feeds/bundle");
    assert_eq!(download["status"], 200);
    assert_eq!(download["bytes"], bundle_len as u64);
    assert_eq!(download["complete"], true);
    assert!(download["duration_ms"].as_f64().is_some(), "{download}");
    assert!(
        download["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{download}"
    );
    assert!(
        events.iter().any(|e| e["target"] == "relay::auth"
            && e["fields"]["message"] == "authentication failed"
            && e["fields"]["user"] == "reader"),
        "{logs}"
    );

    // Off: the same requests, no access line; failed logins are still named.
    let (dir, mut process) = started_with(
        |text| text.replace("[listen]\n", "[listen]\naccess_log = false\n"),
        &[],
    );
    let url = process.url.clone();
    requests_for_the_access_log(dir.path(), &url);
    process.signal("TERM");
    assert!(process.wait_exit(10).is_some());
    let logs = process.output();
    assert!(!logs.contains("relay::access"), "{logs}");
    assert!(logs.contains("authentication failed"), "{logs}");
}

/// Bundles and archives are not secrets: every writer of them makes files 0666 less the
/// umask, as a plain create would (tempfile's 0600 made a web server or a backup running as
/// another user fail to read them). Under umask 027: the relay's stored bundle (upload) and
/// archive (upload), `relay download` whole and `--from` a held bundle, `relay feeds
/// import`'s feed file: all 0640. The server's private key stays 0600.
#[test]
fn bundles_and_archives_are_written_as_the_umask_allows() {
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let config = write_config(
        dir.path(),
        "[[archives]]\nname = \"vendor\"\npath = \"/intelligence/vendor_feed.tar.gz\"\n",
    );
    let process = RelayProcess::start_under_umask(
        "027",
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let url = process.url.clone();
    let ca = ca(dir.path());
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let first = fresh_bundle(1);
    assert_eq!(upload_with_curl(dir.path(), &url, &first), 201);
    let archive = dir.path().join("archive.tar.gz");
    std::fs::write(&archive, fresh_bundle(7)).unwrap();
    let (code, status) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "uploader:uploader-pw",
        "-T",
        archive.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/api/v1/archives/vendor"),
    ]);
    assert_eq!(
        (code, String::from_utf8_lossy(&status).into_owned()),
        (0, "201".to_owned())
    );
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("store/blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(blobs.len() >= 2, "the bundle and the archive: {blobs:?}");
    for blob in &blobs {
        assert_eq!(mode(blob), 0o640, "{}", blob.display());
    }

    // The operator's commands, under the same umask.
    let relay_under_umask = |args: &[&str]| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("umask 027 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_relay"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let bundle_url = format!("{url}/intelligence/bundle.tar.gz");
    let download = |to: &str, from: Option<&str>| {
        let mut args = vec![
            "download",
            "--address",
            &bundle_url,
            "--user",
            "reader",
            "--password",
            "reader-pw",
            "--tlscacert",
            &ca,
            "-o",
            to,
        ];
        args.extend(from.iter().flat_map(|f| ["--from", *f]));
        relay_under_umask(&args);
    };
    download("whole.tar.gz", None);
    assert_eq!(mode(&dir.path().join("whole.tar.gz")), 0o640);
    assert_eq!(upload_with_curl(dir.path(), &url, &fresh_bundle(2)), 201);
    download("by-segments.tar.gz", Some("whole.tar.gz"));
    assert_eq!(mode(&dir.path().join("by-segments.tar.gz")), 0o640);

    let feeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/feeds/domains");
    let input = std::fs::read_dir(&feeds)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    relay_under_umask(&[
        "feeds",
        "import",
        "domains",
        "--format",
        "list",
        input.to_str().unwrap(),
        "-o",
        "imported",
    ]);
    let imported: Vec<_> = std::fs::read_dir(dir.path().join("imported/domains"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!imported.is_empty());
    for file in imported {
        assert_eq!(mode(&file), 0o640, "{}", file.display());
    }
    assert_eq!(mode(&dir.path().join("tls/server.key")), 0o600);
}
