//! Sources behind real third-party servers: a custom location served by nginx with TLS
//! and `auth_basic`, and an upstream reached through tinyproxy (HTTP CONNECT), including
//! a proxy whose timeout cuts the long-lived watch channel. `tests/run` installs nginx,
//! tinyproxy and Apache's htpasswd when they are missing.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay::client::{Secret, SourceKind};
use relay::config::{HumanDuration, ProxyConfig, SourceConfig};
use support::free_port;
use support::server::{TestRelay, fresh_bundle, sequence};

/// A child process killed when the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx serving `dir/www` over TLS (the dev certificate in `dir/tls`) with basic auth.
fn nginx(dir: &Path, port: u16) -> Daemon {
    nginx_with(dir, port, "")
}

/// The same, with `directives` added to the `/intel/` location (`max_ranges 0;`).
fn nginx_with(dir: &Path, port: u16, directives: &str) -> Daemon {
    let htpasswd = dir.join("nginx.htpasswd");
    let status = Command::new("htpasswd")
        .args(["-c", "-s", "-b"])
        .arg(&htpasswd)
        .args(["console", "console-pw"])
        .stderr(Stdio::null())
        .status()
        .expect("htpasswd (apache2-utils)");
    assert!(status.success());
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp;
    proxy_temp_path {d}/nginx-tmp;
    fastcgi_temp_path {d}/nginx-tmp;
    uwsgi_temp_path {d}/nginx-tmp;
    scgi_temp_path {d}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/tls/server.pem;
        ssl_certificate_key {d}/tls/server.key;
        location /intel/ {{
            root {d}/www;
            auth_basic "intel";
            auth_basic_user_file {htpasswd};
            {directives}
        }}
    }}
}}
"#,
        htpasswd = htpasswd.display()
    );
    std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
    std::fs::create_dir_all(dir.join("www/intel")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (tests/run installs it)");
    Daemon(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_location_on_nginx_with_tls_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    support::server::prepare_dir(dir.path());
    let port = free_port();
    let _nginx = nginx(dir.path(), port);
    let file = dir.path().join("www/intel/bundle.tar.gz");
    std::fs::write(&file, fresh_bundle(6)).unwrap();
    wait_for_port(port).await;

    let source = SourceConfig {
        ca_pin: None,
        kind: SourceKind::CustomLocation,
        url: format!("https://127.0.0.1:{port}/intel/bundle.tar.gz"),
        token: None,
        user: Some("console".into()),
        password: Some(Secret::new("console-pw")),
        ca: Some(dir.path().join("tls/ca.pem")),
        proxy: None,
        no_proxy: true,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    };
    let b = TestRelay::start_with(|c| c.sources = vec![source]).await;
    b.until("the pull from nginx", |s| sequence(s) == Some(6))
        .await;
    assert_eq!(b.current_bytes().await, std::fs::read(&file).unwrap());

    // A newer file in place: an admin's refresh brings it (nginx's ETag, made of the
    // file's mtime in seconds and its size, changes: so let a second pass first).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = fresh_bundle(7);
    std::fs::write(&file, &newer).unwrap();
    let r = b
        .client()
        .put(format!("{}/api/v1/feeds/force-refresh", b.url))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    b.until("the newer file", |s| sequence(s) == Some(7)).await;
    assert_eq!(b.current_bytes().await, newer);
    b.stop().await;
}

/// tinyproxy on `port`, allowing CONNECT to `target_port`; `timeout` cuts idle connections.
fn tinyproxy(dir: &Path, port: u16, target_port: u16, timeout_secs: u32) -> Daemon {
    let conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout {timeout_secs}\nAllow 127.0.0.1\nConnectPort {target_port}\nMaxClients 50\nLogLevel Warning\n"
    );
    let path = dir.join(format!("tinyproxy-{port}.conf"));
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (tests/run installs it)");
    Daemon(child)
}

fn through_proxy(upstream: &TestRelay, proxy_port: u16) -> SourceConfig {
    SourceConfig {
        ca_pin: None,
        kind: SourceKind::Upstream,
        url: upstream.url.clone(),
        token: None,
        user: Some("reader".into()),
        password: Some(Secret::new("reader-pw")),
        ca: Some(upstream.ca.clone()),
        proxy: Some(ProxyConfig {
            url: format!("http://127.0.0.1:{proxy_port}"),
            user: None,
            password: None,
            ca: None,
        }),
        no_proxy: false,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_through_a_connect_proxy() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy_port = free_port();
    let _proxy = tinyproxy(dir.path(), proxy_port, a.addr.port(), 600);
    wait_for_port(proxy_port).await;
    let source = through_proxy(&a, proxy_port);
    let b = TestRelay::start_with(|c| c.sources = vec![source]).await;
    b.until("the first pull through the proxy", |s| {
        sequence(s) == Some(1)
    })
    .await;
    b.until("the watch channel through the proxy", |s| {
        s["sources"][0]["watch"] == "connected"
    })
    .await;
    a.upload(fresh_bundle(2)).await;
    b.until("the event through the proxy", |s| sequence(s) == Some(2))
        .await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_cuts_long_connections_leaves_polling() {
    // The upstream's keep-alives come every 30 s; the proxy cuts a connection idle for 2.
    let a = TestRelay::start_with(|c| c.routes.watch_keepalive = HumanDuration::secs(30)).await;
    a.upload(fresh_bundle(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy_port = free_port();
    let _proxy = tinyproxy(dir.path(), proxy_port, a.addr.port(), 2);
    wait_for_port(proxy_port).await;
    let source = through_proxy(&a, proxy_port);
    let b = TestRelay::start_with(|c| {
        c.sources = vec![source];
        c.schedule.poll_interval = HumanDuration::secs(1);
    })
    .await;
    b.until("the first pull", |s| sequence(s) == Some(1)).await;
    b.until("the proxy cutting the watch channel", |s| {
        s["sources"][0]["watch"] == "down"
    })
    .await;
    a.upload(fresh_bundle(2)).await;
    b.until("the new bundle by polling", |s| sequence(s) == Some(2))
        .await;
    b.stop().await;
    a.stop().await;
}

/// tinyproxy that requires `user:pw` and logs each CONNECT to `log`.
fn tinyproxy_with_auth(dir: &Path, port: u16, target_port: u16, log: &Path) -> Daemon {
    let conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nConnectPort {target_port}\nMaxClients 50\n\
         BasicAuth relay s3cret\nLogFile \"{}\"\nLogLevel Connect\n",
        log.display()
    );
    let path = dir.join(format!("tinyproxy-auth-{port}.conf"));
    std::fs::write(&path, conf).unwrap();
    std::fs::write(log, "").unwrap();
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (tests/run installs it)");
    Daemon(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_wants_credentials() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let proxy_port = free_port();
    let _proxy = tinyproxy_with_auth(dir.path(), proxy_port, a.addr.port(), &log);
    wait_for_port(proxy_port).await;

    // Without the proxy's credentials: refused by the proxy, reported, nothing held.
    let without = through_proxy(&a, proxy_port);
    let b = TestRelay::start_with(|c| c.sources = vec![without]).await;
    let s = b
        .until("the proxy's refusal", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    assert!(s["current"].is_null(), "{s:#}");
    b.stop().await;

    let mut with = through_proxy(&a, proxy_port);
    if let Some(p) = &mut with.proxy {
        p.user = Some("relay".into());
        p.password = Some(Secret::new("s3cret"));
    }
    let b = TestRelay::start_with(|c| c.sources = vec![with]).await;
    b.until("the pull through the authenticating proxy", |s| {
        sequence(s) == Some(1)
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("127.0.0.1:{}", a.addr.port())),
        "the proxy saw no CONNECT:\n{logged}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_is_used() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(2)).await;
    let dir = tempfile::tempdir().unwrap();
    support::server::prepare_dir(dir.path());
    let log = dir.path().join("proxy.log");
    let proxy_port = free_port();
    let _proxy = tinyproxy_with_auth(dir.path(), proxy_port, a.addr.port(), &log);
    wait_for_port(proxy_port).await;
    // B is a process, so the proxy variables are its own: no proxy in its config.
    let source = format!(
        "[[sources]]\nkind = \"upstream\"\nurl = \"{}\"\nuser = \"reader\"\npassword = \"reader-pw\"\nca = \"{}\"\n",
        a.url,
        a.ca.display()
    );
    let config = support::process::write_config(dir.path(), &source);
    let proxy = format!("http://relay:s3cret@127.0.0.1:{proxy_port}");
    let b = tokio::task::spawn_blocking({
        let (dir, config) = (dir.path().to_owned(), config.clone());
        move || {
            support::process::RelayProcess::start(
                &dir,
                &["--config", config.to_str().unwrap()],
                &[
                    ("HTTPS_PROXY", proxy.as_str()),
                    ("NO_PROXY", ""),
                    ("no_proxy", ""),
                ],
            )
        }
    })
    .await
    .unwrap();
    let ca = dir.path().join("tls/ca.pem").display().to_string();
    let status_url = format!("{}/api/v1/status", b.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) =
            support::process::curl(&["--cacert", &ca, "-u", "reader:reader-pw", &status_url]);
        let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if sequence(&s) == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never pulled through the environment's proxy: {s:#}\n{}",
            b.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("127.0.0.1:{}", a.addr.port())),
        "the proxy saw no CONNECT:\n{logged}"
    );
    drop(b);
    a.stop().await;
}

/// Runs `relay ping` with `args` off the runtime; returns (exit code, stdout).
async fn ping(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_relay"))
            .arg("ping")
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_walks_through_a_connect_proxy() {
    let a = TestRelay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let proxy_port = free_port();
    let _proxy = tinyproxy_with_auth(dir.path(), proxy_port, a.addr.port(), &log);
    wait_for_port(proxy_port).await;
    let args = |proxy: String| {
        vec![
            a.url.clone(),
            "--tlscacert".into(),
            a.ca.display().to_string(),
            "--user".into(),
            "reader".into(),
            "--password".into(),
            "reader-pw".into(),
            "--proxy".into(),
            proxy,
        ]
    };

    let (code, out) = ping(args(format!("http://relay:s3cret@127.0.0.1:{proxy_port}"))).await;
    assert_eq!(code, 0, "{out}");
    for step in ["dns", "tcp", "proxy", "tls", "http", "auth"] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(step)),
            "{step} missing:\n{out}"
        );
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("127.0.0.1:{}", a.addr.port())),
        "the proxy saw no CONNECT:\n{logged}"
    );

    // The proxy refuses without its credentials: the proxy step fails, and says 407.
    let (code, out) = ping(args(format!("http://127.0.0.1:{proxy_port}"))).await;
    assert_eq!(code, 1, "{out}");
    let failed = out.lines().find(|l| l.starts_with("FAIL")).unwrap_or("");
    assert!(failed.contains("proxy") && failed.contains("407"), "{out}");
    a.stop().await;
}

/// A TLS listener on `port` that forwards each connection to `inner` on loopback: an HTTPS
/// proxy, as a client sees it, made of tinyproxy behind it. Its certificate comes from a CA
/// of its own, written to `dir/ca.pem`.
async fn tls_front(dir: &Path, inner: u16) -> (u16, tokio::task::JoinHandle<()>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let files = relay::certs::init(dir, &["127.0.0.1".to_owned()], 30, false).unwrap();
    let chain = CertificateDer::pem_file_iter(&files.server_cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", inner)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_proxy_with_a_ca_of_its_own() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let inner = free_port();
    let _proxy = tinyproxy_with_auth(dir.path(), inner, a.addr.port(), &log);
    wait_for_port(inner).await;
    let front_dir = dir.path().join("front");
    std::fs::create_dir(&front_dir).unwrap();
    let (port, front) = tls_front(&front_dir, inner).await;
    let via_front = |ca: Option<std::path::PathBuf>| {
        let mut source = through_proxy(&a, port);
        source.proxy = Some(ProxyConfig {
            url: format!("https://127.0.0.1:{port}"),
            user: Some("relay".into()),
            password: Some(Secret::new("s3cret")),
            ca,
        });
        source
    };

    // Without the proxy's CA the TLS handshake with the proxy fails: reported, nothing held.
    let b = TestRelay::start_with(|c| c.sources = vec![via_front(None)]).await;
    let s = b
        .until("the proxy's unknown certificate", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    assert!(s["current"].is_null(), "{s:#}");
    assert_eq!(s["sources"][0]["last_error_kind"], "tls", "{s:#}");
    b.stop().await;

    let b = TestRelay::start_with(|c| {
        c.sources = vec![via_front(Some(front_dir.join("ca.pem")))];
    })
    .await;
    b.until("the pull through the HTTPS proxy", |s| {
        sequence(s) == Some(1)
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("127.0.0.1:{}", a.addr.port())),
        "the proxy saw no CONNECT:\n{logged}"
    );
    b.stop().await;
    front.abort();
    a.stop().await;
}

/// A bundle of the real Go database of `date` (`../shared/data`), built with its index.
fn go_bundle(date: &str, sequence: u64) -> (Vec<u8>, Vec<u8>) {
    let feeds = tempfile::tempdir().unwrap();
    let zip = support::shared_data(&format!("osv/go/{date}/all.zip"));
    relay::import::osv::import(
        &[relay::import::Input::local(&zip)],
        feeds.path(),
        "go",
        &relay::import::ImportLimits::default(),
    )
    .unwrap();
    let options = relay::bundle::BuildOptions {
        sequence: relay::bundle::Sequence(sequence),
        origin: "test-origin".into(),
        created: support::CREATED.parse().unwrap(),
        expires: support::EXPIRES.parse().unwrap(),
    };
    let mut out = Vec::new();
    let (_, index) =
        relay::bundle::build_indexed(feeds.path(), &support::origin_key(), &options, &mut out)
            .unwrap();
    (out, index.encode())
}

/// `relay download --from PREVIOUS` in `dir`: its exit code, stdout and stderr.
fn download_from(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .current_dir(dir)
        .arg("download")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 14: a plain custom location (nginx, with ranges) holding the day's bundle and
/// its `.idx`; the client holds the day before's. Only the changed segments come over the
/// wire, and the file built is the day's bundle byte for byte, verified. Then the same
/// from an nginx that ignores ranges (`max_ranges 0`: 200 with the whole file), and from
/// one whose index lies: both end with the whole file, and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_location_on_nginx_serves_only_the_changed_segments() {
    let (old, old_index) = go_bundle("2026-08-18", 1);
    let (new, new_index) = go_bundle("2026-08-21", 2);
    let delta = {
        use relay::bundle::index::SegmentIndex;
        let (old_i, new_i) = (
            SegmentIndex::decode(&old_index).unwrap(),
            SegmentIndex::decode(&new_index).unwrap(),
        );
        let mut d = Vec::new();
        relay::bundle::delta::make(
            &mut std::io::Cursor::new(&old),
            &old_i,
            &mut std::io::Cursor::new(&new),
            &new_i,
            &mut d,
        )
        .unwrap();
        (
            d,
            relay::bundle::delta::sidecar_url("bundle.tar.gz", &old_i.bundle_sha256),
        )
    };
    let mut ranges_cost = 0u64;
    for (case, directives, index) in [
        ("ranges", "", new_index.clone()),
        ("delta", "", new_index.clone()),
        ("no ranges", "max_ranges 0;", new_index.clone()),
        ("lying index", "", {
            let mut lying = relay::bundle::index::SegmentIndex::decode(&new_index).unwrap();
            let n = lying.segments.len();
            lying.segments.swap(1, n - 2);
            lying.encode()
        }),
        // An index announcing far more than the file (and the client's cap) holds.
        ("inflated index", "", {
            let mut inflated = relay::bundle::index::SegmentIndex::decode(&new_index).unwrap();
            let extra = inflated.segments[0];
            inflated.segments.extend(std::iter::repeat_n(extra, 1000));
            inflated.encode()
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        support::server::prepare_dir(dir.path());
        let port = free_port();
        let _nginx = nginx_with(dir.path(), port, directives);
        std::fs::write(dir.path().join("www/intel/bundle.tar.gz"), &new).unwrap();
        std::fs::write(dir.path().join("www/intel/bundle.tar.gz.idx"), &index).unwrap();
        std::fs::write(dir.path().join("held.tar.gz"), &old).unwrap();
        if case == "delta" {
            std::fs::write(dir.path().join("www/intel").join(&delta.1), &delta.0).unwrap();
        }
        wait_for_port(port).await;
        let url = format!("https://127.0.0.1:{port}/intel/bundle.tar.gz");
        let ca = dir.path().join("tls/ca.pem");
        let (code, stdout, stderr) = download_from(
            dir.path(),
            &[
                "--address",
                &url,
                "--user",
                "console",
                "--password",
                "console-pw",
                "--tlscacert",
                ca.to_str().unwrap(),
                "--trust",
                "origin.pub",
                "--from",
                "held.tar.gz",
                "-o",
                "new.tar.gz",
                "--max-bytes",
                &(new.len() * 2).to_string(),
            ],
        );
        eprintln!("{case}:\n{stdout}{stderr}");
        assert_eq!(code, 0, "{case}: {stdout}{stderr}");
        assert_eq!(
            std::fs::read(dir.path().join("new.tar.gz")).unwrap(),
            new,
            "{case}: the file is the day's bundle"
        );
        assert!(stderr.contains("verified: "), "{case}: {stderr}");
        match case {
            "ranges" | "delta" => {
                let line = stderr
                    .lines()
                    .find(|l| l.starts_with("built from segments: "))
                    .unwrap_or_else(|| panic!("{stderr}"));
                let transferred: u64 = line
                    .trim_start_matches("built from segments: ")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(
                    transferred * 10 < new.len() as u64,
                    "a tenth of the file at most: {line}"
                );
                if case == "ranges" {
                    assert!(line.contains("delta 0 rebuilding 0"), "{line}");
                    ranges_cost = transferred;
                } else {
                    assert!(!line.contains("delta 0 "), "{line}");
                    assert!(
                        transferred < ranges_cost,
                        "{line}: ranges cost {ranges_cost}"
                    );
                }
                // And the next `--from` can start from it.
                assert_eq!(
                    std::fs::read(dir.path().join("new.tar.gz.idx")).unwrap(),
                    new_index
                );
            }
            "no ranges" => assert!(
                stderr.contains("whole file: ") && stderr.contains("ignores Range"),
                "{stderr}"
            ),
            "inflated index" => assert!(
                stderr.contains("whole file: the index describes a bundle of")
                    && stderr.contains("over the limit"),
                "{stderr}"
            ),
            _ => assert!(
                stderr.contains("whole file: building from segments: segment"),
                "{stderr}"
            ),
        }
    }
}

/// Issue 14, from a relay: the relay derives the index of what it holds
/// (`/api/v1/bundles/{sha}/index`), and a client holding the previous bundle fetches only
/// the changed segments of the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serves_the_index_of_what_it_holds_and_the_changed_segments() {
    let (old, _) = go_bundle("2026-08-18", 1);
    let (new, new_index) = go_bundle("2026-08-21", 2);
    let relay = TestRelay::start().await;
    assert_eq!(relay.upload(old.clone()).await.status(), 201);
    assert_eq!(relay.upload(new.clone()).await.status(), 201);
    let dir = relay.dir.path();
    std::fs::write(dir.join("held.tar.gz"), &old).unwrap();
    let ca = relay.ca.clone();
    let (code, stdout, stderr) = download_from(
        dir,
        &[
            "--address",
            &relay.url,
            "--user",
            "reader",
            "--password",
            "reader-pw",
            "--tlscacert",
            ca.to_str().unwrap(),
            "--trust",
            "origin.pub",
            "--from",
            "held.tar.gz",
            "-o",
            "new.tar.gz",
        ],
    );
    eprintln!("{stdout}{stderr}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("built from segments: "), "{stderr}");
    assert_eq!(std::fs::read(dir.join("new.tar.gz")).unwrap(), new);
    assert_eq!(
        std::fs::read(dir.join("new.tar.gz.idx")).unwrap(),
        new_index
    );
    relay.stop().await;
}

/// A self-signed certificate as operators make one by hand: `openssl req -x509` with its
/// default extensions (which mark it a CA), naming `san`; key and certificate at
/// `<stem>.key` and `<stem>.pem`.
fn openssl_self_signed(stem: &Path, san: &str) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=custom-location"])
        .args(["-addext", &format!("subjectAltName={san}")])
        .arg("-keyout")
        .arg(stem.with_extension("key"))
        .arg("-out")
        .arg(stem.with_extension("pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
}

/// Issue 15, item 8: a custom location on nginx with that certificate, and its own file
/// given as the CA. curl downloads from it; so do the relay's source, its client (what
/// `relay download` and the agent use) and `relay ping`, trusting it as pinned. Another
/// self-signed certificate given as the CA, or the right one reached by another name, is
/// still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_custom_location_is_trusted_as_pinned_like_curl_does() {
    let dir = tempfile::tempdir().unwrap();
    support::server::prepare_dir(dir.path());
    openssl_self_signed(&dir.path().join("tls/server"), "IP:127.0.0.1");
    openssl_self_signed(&dir.path().join("other"), "IP:127.0.0.1");
    let (cert, other) = (
        dir.path().join("tls/server.pem"),
        dir.path().join("other.pem"),
    );
    let text = String::from_utf8(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains("CA:TRUE"),
        "openssl's defaults mark it a CA:\n{text}"
    );
    let port = free_port();
    let _nginx = nginx(dir.path(), port);
    let file = dir.path().join("www/intel/bundle.tar.gz");
    std::fs::write(&file, fresh_bundle(3)).unwrap();
    wait_for_port(port).await;
    let url = format!("https://127.0.0.1:{port}/intel/bundle.tar.gz");

    let curl = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "console:console-pw",
        ])
        .arg("--cacert")
        .arg(&cert)
        .arg(&url)
        .output()
        .expect("curl (tests/run installs it)");
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "curl takes it"
    );

    let get = async |url: &str, ca: &Path| {
        let mut endpoint = relay::client::Endpoint::new(url);
        endpoint.ca = Some(ca.to_owned());
        endpoint.no_env_proxy = true;
        endpoint.credential = relay::client::Credential::Basic {
            user: "console".into(),
            password: Secret::new("console-pw"),
        };
        let client = endpoint.client().unwrap();
        endpoint
            .authorize(client.get(url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| relay::client::error_chain(&e))
    };
    assert_eq!(get(&url, &cert).await, Ok(200));
    let refused = get(&url, &other).await.unwrap_err();
    assert!(refused.contains("CaUsedAsEndEntity"), "{refused}");
    let by_name = format!("https://localhost:{port}/intel/bundle.tar.gz");
    let refused = get(&by_name, &cert).await.unwrap_err();
    assert!(
        refused.contains("not valid for name \"localhost\""),
        "{refused}"
    );

    let (_, stdout) = ping(vec![
        url.clone(),
        "--tlscacert".into(),
        cert.display().to_string(),
    ])
    .await;
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("ok") && l.contains("tls")),
        "{stdout}"
    );
    let (_, stdout) = ping(vec![
        url.clone(),
        "--tlscacert".into(),
        other.display().to_string(),
    ])
    .await;
    assert!(
        stdout.contains("a CA certificate as its own") && stdout.contains("pinned"),
        "{stdout}"
    );

    let source = SourceConfig {
        ca_pin: None,
        kind: SourceKind::CustomLocation,
        url,
        token: None,
        user: Some("console".into()),
        password: Some(Secret::new("console-pw")),
        ca: Some(cert),
        proxy: None,
        no_proxy: true,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    };
    // Status names each refusal as ping does, with the fix in the source's terms.
    for (wrong, says) in [
        (
            SourceConfig {
                ca: Some(other.clone()),
                ..source.clone()
            },
            "the server presents a CA certificate as its own, and not the one the source's `ca`",
        ),
        (
            SourceConfig {
                url: by_name.clone(),
                ..source.clone()
            },
            "certificate is not valid for localhost; connect by a name the certificate lists",
        ),
    ] {
        let b = TestRelay::start_with(|c| c.sources = vec![wrong]).await;
        let s = b
            .until("the refused handshake", |s| {
                s["sources"][0]["last_error"].is_string()
            })
            .await;
        assert_eq!(s["sources"][0]["last_error_kind"], "tls", "{s:#}");
        let error = s["sources"][0]["last_error"].as_str().unwrap();
        assert!(
            error.contains("TLS handshake failed: ") && error.contains(says),
            "{error}"
        );
        b.stop().await;
    }
    let b = TestRelay::start_with(|c| c.sources = vec![source]).await;
    b.until("the pull from nginx", |s| sequence(s) == Some(3))
        .await;
    assert_eq!(b.current_bytes().await, std::fs::read(&file).unwrap());
    b.stop().await;
}

/// A custom location pinned by its key instead of its certificate file: the pin computed
/// with the command the docs give (openssl, base64), the very string curl's
/// `--pinnedpubkey` takes. `relay ping`, `relay download` and a relay's source all accept
/// the self-signed server with it and no CA file; another key's pin is refused and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_custom_location_pinned_by_its_key_as_curl_pins_it() {
    let dir = tempfile::tempdir().unwrap();
    support::server::prepare_dir(dir.path());
    openssl_self_signed(&dir.path().join("tls/server"), "IP:127.0.0.1");
    openssl_self_signed(&dir.path().join("other"), "IP:127.0.0.1");
    let pin_of = |cert: &Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(
                "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
                 | openssl dgst -sha256 -binary | base64",
            )
            .arg("pin")
            .arg(cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        format!("sha256//{}", String::from_utf8(out.stdout).unwrap().trim())
    };
    let pin = pin_of(&dir.path().join("tls/server.pem"));
    let other_pin = pin_of(&dir.path().join("other.pem"));
    let port = free_port();
    let _nginx = nginx(dir.path(), port);
    let file = dir.path().join("www/intel/bundle.tar.gz");
    std::fs::write(&file, fresh_bundle(4)).unwrap();
    wait_for_port(port).await;
    let url = format!("https://127.0.0.1:{port}/intel/bundle.tar.gz");

    // curl takes the same string (with -k: it has no CA for a self-signed server).
    let curl = |pin: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-u", "console:console-pw", "--pinnedpubkey", pin])
            .arg(&url)
            .output()
            .expect("curl (tests/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&pin), "200");
    assert_ne!(curl(&other_pin), "200");

    let (_, stdout) = ping(vec![url.clone(), "--ca-pin".into(), pin.clone()]).await;
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("ok") && l.contains("tls")),
        "{stdout}"
    );
    let (_, stdout) = ping(vec![url.clone(), "--ca-pin".into(), other_pin.clone()]).await;
    assert!(stdout.contains("not the one ca_pin names"), "{stdout}");

    let out = tokio::task::spawn_blocking({
        let (url, pin, dir) = (url.clone(), pin.clone(), dir.path().to_owned());
        move || {
            Command::new(env!("CARGO_BIN_EXE_relay"))
                .args(["download", "--address", &url, "--ca-pin", &pin])
                .args(["--user", "console", "--password", "console-pw", "-o"])
                .arg(dir.join("pinned.tar.gz"))
                .env_remove("HTTPS_PROXY")
                .env_remove("https_proxy")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(dir.path().join("pinned.tar.gz")).unwrap(),
        std::fs::read(&file).unwrap()
    );

    let source = |pin: &str| SourceConfig {
        kind: SourceKind::CustomLocation,
        url: url.clone(),
        token: None,
        user: Some("console".into()),
        password: Some(Secret::new("console-pw")),
        ca: None,
        ca_pin: Some(pin.parse().unwrap()),
        proxy: None,
        no_proxy: true,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    };
    let b = TestRelay::start_with(|c| c.sources = vec![source(&other_pin)]).await;
    let s = b
        .until("the refused key", |s| {
            s["sources"][0]["last_error"].is_string()
        })
        .await;
    let error = s["sources"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("not the one ca_pin names"), "{error}");
    assert!(s["current"].is_null(), "{s:#}");
    b.stop().await;
    let b = TestRelay::start_with(|c| c.sources = vec![source(&pin)]).await;
    b.until("the pull pinned by key", |s| sequence(s) == Some(4))
        .await;
    assert_eq!(b.current_bytes().await, std::fs::read(&file).unwrap());
    b.stop().await;
}

/// A server-sent-events server that is not a relay (Python's http.server): it writes its
/// stream a few bytes at a time with CR line ends (which the standard allows, and a reader
/// that splits on "\n\n" never sees end), a comment, an event of another type, `retry:`, and
/// a CRLF event, then closes.
const SSE_SERVER: &str = r#"
import http.server, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        stream = (b"\xef\xbb\xbf: a comment\r"
                  b"retry: 1500\r"
                  b"id: 1\revent: bundle\rdata: {\"sequence\":1}\r\r"
                  b"event: note\rdata: first line\rdata: second\r\r"
                  b"data: crlf\r\n\r\n")
        for i in range(0, len(stream), 5):
            self.wfile.write(stream[i:i + 5])
            self.wfile.flush()
            time.sleep(0.01)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_client_reads_any_server_sent_events_server_by_the_standard() {
    let port = free_port();
    let _server = Daemon(
        Command::new("python3")
            .args(["-c", SSE_SERVER, &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 (tests/run installs it)"),
    );
    wait_for_port(port).await;
    let mut endpoint = relay::client::Endpoint::new(format!("http://127.0.0.1:{port}"));
    endpoint.no_env_proxy = true;
    let client = endpoint.client().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        relay::client::follow(
            &endpoint,
            &client,
            || None,
            |s| {
                let _ = tx.send(s);
            },
        )
        .await;
    });
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !matches!(seen.last(), Some(relay::client::WatchSignal::Down(_))) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(signal)) => seen.push(signal),
            _ => panic!("the stream did not end as expected: {seen:?}"),
        }
    }
    follower.abort();
    use relay::client::WatchSignal::{Connected, Down, Event};
    assert_eq!(seen[..4], [Connected, Event, Event, Event], "{seen:?}");
    assert!(
        matches!(&seen[4], Down(why) if why.contains("closed by the upstream")),
        "{seen:?}"
    );
}
