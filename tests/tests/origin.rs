//! The origin as a service, with real processes: nginx on 127.0.0.1 serves the inputs
//! (the real Go vulnerability database as osv.dev ships it, a hosts file) over TLS with
//! basic auth, one input is a local netset, one URL is missing. The origin relay imports,
//! signs and publishes; a relay following it and an agent syncing from that relay end with
//! the same data. Then: a cycle with nothing new publishes nothing; a changed input
//! publishes the next sequence; a broken download keeps the previous data; a restart
//! never takes the sequence backwards.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use end_to_end::relays::{
    RelayConfig, RelayProcess, generate_key, password, poll, quote, run_relay, upstream_source,
};
use end_to_end::{binary, free_port, workspace_root};

/// A child process killed when the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx serving `dir/www/intel/` over TLS (a dev certificate from `relay certs init`)
/// with basic auth `feeds:feeds-pw`.
fn nginx(dir: &Path, port: u16) -> Daemon {
    run_relay(&[
        "certs",
        "init",
        "--dir",
        &dir.join("tls").display().to_string(),
    ]);
    let htpasswd = dir.join("nginx.htpasswd");
    let status = Command::new("htpasswd")
        .args(["-c", "-s", "-b"])
        .arg(&htpasswd)
        .args(["feeds", "feeds-pw"])
        .stderr(Stdio::null())
        .status()
        .expect("htpasswd (apache2-utils; tests/run installs it)");
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
            auth_basic "feeds";
            auth_basic_user_file {htpasswd};
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx does not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon(child)
}

/// The real advisory data beside the repository (`../shared/data/README.md`).
fn shared_data(rel: &str) -> PathBuf {
    let path = workspace_root().join("../shared/data").join(rel);
    assert!(
        path.is_file(),
        "{} is missing: the real advisory data lives in shared/data beside the repository",
        path.display()
    );
    path
}

/// Copies atomically into nginx's tree (a rename: nginx never serves half a file).
fn publish(www: &Path, name: &str, bytes: &[u8]) {
    let tmp = www.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, www.join(name)).unwrap();
}

fn input(name: &str, kind: &str, format: Option<&str>, place: &str) -> String {
    let format = format.map_or(String::new(), |f| format!("format = {}\n", quote(f)));
    format!(
        "[[origin.inputs]]\nname = {}\nkind = {}\n{format}{place}\n",
        quote(name),
        quote(kind)
    )
}

fn url_source(url: &str, ca: &Path) -> String {
    format!(
        "source = {{ kind = \"custom_location\", url = {}, user = \"feeds\", password = \"feeds-pw\", ca = {}, no_proxy = true }}\n",
        quote(url),
        quote(&ca.display().to_string())
    )
}

fn origin_run(origin: &RelayProcess) -> Output {
    Command::new(binary("relay"))
        .args([
            "origin",
            "run",
            "--address",
            &origin.url,
            "--user",
            "admin",
            "--password",
            &password("admin"),
            "--tlscacert",
            &origin.ca().display().to_string(),
        ])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
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

async fn wait_sequence(relay: &RelayProcess, sequence: u64) {
    poll(Duration::from_secs(60), async || {
        match relay.current_sequence().await? {
            Some(s) if s == sequence => Ok(()),
            other => Err(format!("{} holds {other:?}", relay.name)),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", relay.tail(30)));
}

/// Waits until the origin's last cycle is recorded with `outcome` (the record follows the
/// commit that makes a bundle current, a moment later).
async fn wait_outcome(origin: &RelayProcess, outcome: &str) {
    poll(Duration::from_secs(60), async || {
        let s = origin.status().await?;
        match s["origin"]["last_outcome"].as_str() {
            Some(o) if o == outcome => Ok(()),
            other => Err(format!("last outcome {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", origin.tail(30)));
}

fn origin_input<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["origin"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no input {name} in {status}"))
}

/// `defender-lite sync --once`; the applied bundle's directory.
fn agent_sync(agent_dir: &Path, relay: &RelayProcess, public: &Path) -> PathBuf {
    let config = agent_dir.join("agent.toml");
    std::fs::create_dir_all(agent_dir).unwrap();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[trust]\nkeys = [{}]\n\
             [[sources]]\nkind = \"upstream\"\nurl = {}\nuser = \"reader\"\npassword = {}\nca = {}\nno_proxy = true\n",
            quote(&public.display().to_string()),
            quote(&relay.url),
            quote(&password("reader")),
            quote(&relay.ca().display().to_string()),
        ),
    )
    .unwrap();
    let out = Command::new(binary("defender-lite"))
        .args(["sync", "--once", "--config", &config.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("data/state.json")).unwrap()).unwrap();
    agent_dir
        .join("data")
        .join(state["current"]["dir"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_imports_signs_and_publishes_down_to_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let web = tmp.path().join("nginx");
    let port = free_port();
    let _nginx = nginx(&web, port);
    let www = web.join("www/intel");
    let base = format!("https://127.0.0.1:{port}/intel");
    let go_old = std::fs::read(shared_data("osv/go/2026-08-18/all.zip")).unwrap();
    let go_new = std::fs::read(shared_data("osv/go/2026-08-21/all.zip")).unwrap();
    publish(&www, "go.zip", &go_old);
    publish(
        &www,
        "hosts",
        b"# a blocklist in hosts form\n127.0.0.1 localhost\n0.0.0.0 c2.evil.example\n0.0.0.0 Tracker.Example ads.tracker.example\n",
    );
    let netset = tmp.path().join("level1.netset");
    std::fs::write(
        &netset,
        "# firehol\n192.0.2.0/25\n192.0.2.128/25\n198.51.100.7\n",
    )
    .unwrap();
    let apps = tmp.path().join("handmade");
    std::fs::create_dir_all(apps.join("apps")).unwrap();
    std::fs::copy(
        workspace_root().join("relay/samples/feeds/apps/redis.json"),
        apps.join("apps/redis.json"),
    )
    .unwrap();
    let ca = web.join("tls/ca.pem");

    let mut extra = format!(
        "[origin]\nkey = {}\nname = \"test-origin\"\nschedule = \"0 0 0 1 1 *\"\nfeeds = {}\n\n",
        quote(&secret.display().to_string()),
        quote(&apps.display().to_string())
    );
    extra.push_str(&input(
        "go",
        "osv",
        Some("zip"),
        &url_source(&format!("{base}/go.zip"), &ca),
    ));
    extra.push_str(&input(
        "blocklist",
        "domains",
        Some("hosts"),
        &url_source(&format!("{base}/hosts"), &ca),
    ));
    extra.push_str(&input(
        "level1",
        "ips",
        None,
        &format!("path = {}\n", quote(&netset.display().to_string())),
    ));
    extra.push_str(&input(
        "gone",
        "domains",
        Some("list"),
        &url_source(&format!("{base}/missing.txt"), &ca),
    ));
    // The origin trusts its own key; the relays below trust the origin's public key.
    let mut config = RelayConfig::ordinary(&[&public]);
    config.extra = extra;
    let mut origin = RelayProcess::start("origin", &tmp.path().join("origin"), &config);

    // The cycle at start publishes sequence 1; the missing input is an error in status.
    // The origin records the cycle's outcome just after the commit makes the bundle
    // current: wait for the record, not only the bundle.
    wait_sequence(&origin, 1).await;
    wait_outcome(&origin, "published").await;
    let status = origin.status().await.unwrap();
    let go = origin_input(&status, "go");
    assert_eq!(go["counts"]["read"], 4290, "{go}");
    assert!(go["last_error"].is_null(), "{go}");
    let gone = origin_input(&status, "gone");
    assert!(
        gone["last_error"].as_str().unwrap().contains("404"),
        "{gone}"
    );
    assert_eq!(origin_input(&status, "blocklist")["counts"]["kept"], 2);

    // A relay following the origin, and an agent following that relay.
    let mut follower_config = RelayConfig::ordinary(&[&public]);
    follower_config.extra = upstream_source(&origin);
    let follower = RelayProcess::start("follower", &tmp.path().join("follower"), &follower_config);
    wait_sequence(&follower, 1).await;
    let agent = tmp.path().join("agent");
    let applied = agent_sync(&agent, &follower, &public);
    let go_lines = |dir: &Path| {
        std::fs::read_to_string(dir.join("feeds/osv/go.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    let kept = go["counts"]["kept"].as_u64().unwrap() as usize;
    assert_eq!(go_lines(&applied), kept);
    assert_eq!(
        std::fs::read_to_string(applied.join("feeds/domains/blocklist.txt")).unwrap(),
        "c2.evil.example\ntracker.example\n"
    );
    assert_eq!(
        std::fs::read_to_string(applied.join("feeds/ips/level1.txt")).unwrap(),
        "192.0.2.0/24\n198.51.100.7\n"
    );
    assert!(applied.join("feeds/apps/redis.json").is_file());
    // Where every record came from travels with the bundle, signed.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(applied.join("manifest.json")).unwrap()).unwrap();
    let go_file = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "feeds/osv/go.jsonl")
        .unwrap();
    assert_eq!(go_file["inputs"][0]["location"], format!("{base}/go.zip"));
    assert_eq!(
        go_file["inputs"][0]["sha256"],
        relay::bundle::Sha256::of(&go_old).to_string()
    );

    // Nothing changed: nothing new is published.
    let out = origin_run(&origin);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("unchanged"), "{}", text(&out));
    assert_eq!(origin.current_sequence().await.unwrap(), Some(1));

    // A download cut in the middle: refused, the previous data kept, nothing published.
    publish(&www, "go.zip", &go_new[..go_new.len() / 2]);
    let out = origin_run(&origin);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("unchanged"), "{}", text(&out));
    let status = origin.status().await.unwrap();
    let go = origin_input(&status, "go");
    assert!(
        go["last_error"]
            .as_str()
            .unwrap()
            .contains("new data refused"),
        "{go}"
    );
    assert_eq!(go["counts"]["read"], 4290, "still the held copy: {go}");

    // The database changes: the next sequence, down to the agent.
    publish(&www, "go.zip", &go_new);
    let out = origin_run(&origin);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("published sequence 2"),
        "{}",
        text(&out)
    );
    wait_sequence(&follower, 2).await;
    let applied = agent_sync(&agent, &follower, &public);
    let status = origin.status().await.unwrap();
    let go = origin_input(&status, "go");
    assert_eq!(go["counts"]["read"], 4291, "{go}");
    assert_eq!(
        go_lines(&applied),
        go["counts"]["kept"].as_u64().unwrap() as usize
    );

    // A restart (its start-up cycle finds nothing new), then a change: sequence 3, never
    // a number used before.
    origin.restart();
    wait_outcome(&origin, "unchanged").await;
    assert_eq!(origin.current_sequence().await.unwrap(), Some(2));
    std::fs::write(&netset, "203.0.113.0/24\n").unwrap();
    let out = origin_run(&origin);
    assert!(
        text(&out).contains("published sequence 3"),
        "{}",
        text(&out)
    );
    wait_sequence(&follower, 3).await;
}
