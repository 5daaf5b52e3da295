//! `defender-lite monitor` on this host, with real processes (runs as root, as CI does):
//! the host's model (`host`) learns for a few seconds, then a new listener, a raw socket,
//! an unknown process (killed by a `prevent` rule), a DNS query for a feed domain
//! (`dig @127.0.0.1`, captured on `lo`) and a scan of 50 closed loopback ports are each
//! audited. The monitor is stopped with SIGTERM and its audit file is read too.
//!
//! The host is shared (other tests and builds run beside this one), so the `prevent` rule
//! must not touch them: its allow list covers every executable except those under this
//! test's own directory, built as globs that refuse that one prefix.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the report

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_defender-lite");
const FEED_DOMAIN: &str = "c2.defense-host-test.example";

/// Globs that match every string except those starting with `prefix` (letters, digits,
/// `/`), plus bare command names.
fn everything_but(prefix: &str) -> Vec<String> {
    let mut globs: Vec<String> = (0..prefix.len())
        .map(|i| format!("{}[!{}]*", &prefix[..i], &prefix[i..=i]))
        .collect();
    // Its strict prefixes themselves (`runc init` reports its executable as `/`).
    globs.extend((1..prefix.len()).map(|i| prefix[..i].to_owned()));
    globs.push("[!/]*".into());
    globs
}

struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(input: impl std::io::Read + Send + 'static) -> Lines {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(input).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Lines(lines)
    }

    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.0.lock().unwrap().iter().find(|l| f(l)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < within,
                "no {what} within {within:?}; got:\n{}",
                self.0.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn audit_with(lines: &Lines, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let line = lines.wait_for(
        what,
        |l| serde_json::from_str::<Value>(l).is_ok_and(|a| f(&a)),
        Duration::from_secs(20),
    );
    serde_json::from_str(&line).unwrap()
}

fn python(code: &str) -> Child {
    Command::new("python3")
        .args(["-c", code])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs")
}

#[test]
fn a_learned_host_then_listener_raw_socket_unknown_process_dns_and_port_scan() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test watches the host and needs root (CI runs it as root)"
    );
    let dir = tempfile::Builder::new()
        .prefix("dlvictim")
        .tempdir_in("/tmp")
        .unwrap();
    let base = dir.path().display().to_string();
    let allow: Vec<String> = everything_but(&base)
        .into_iter()
        .map(|g| format!("{g:?}"))
        .collect();
    std::fs::write(
        dir.path().join("rules.toml"),
        format!(
            "[[rules]]\nname = \"host test\"\n\
             processes = {{ effect = \"prevent\", allow = [{}] }}\n\
             outbound_ports = {{ effect = \"disable\" }}\n\
             outbound_ips = {{ effect = \"disable\" }}\n",
            allow.join(", ")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("defender-lite.toml"),
        "data_dir = \"data\"\n[trust]\nkeys = [\"origin.pub\"]\n[monitor]\nrules = \"rules.toml\"\n\
         scan_every = \"500ms\"\nthrottle_burst = 10000\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("feeds/domains")).unwrap();
    std::fs::write(
        dir.path().join("feeds/domains/test.txt"),
        format!("{FEED_DOMAIN}\n"),
    )
    .unwrap();
    let victim = dir.path().join("victim-sleep");
    std::fs::copy("/bin/sleep", &victim).unwrap();

    let mut monitor = Command::new(BIN)
        .arg("monitor")
        .arg("--config")
        .arg(dir.path().join("defender-lite.toml"))
        .arg("--feeds")
        .arg(dir.path().join("feeds"))
        .args(["--learning", "3s", "--interface", "lo", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::follow(monitor.stdout.take().unwrap());
    let err = Lines::follow(monitor.stderr.take().unwrap());
    err.wait_for(
        "the start-up line",
        |l| l.contains("monitoring (capture on lo)"),
        Duration::from_secs(20),
    );
    // The snapshot of what runs now is learned; then the model is enforced.
    std::thread::sleep(Duration::from_secs(5));

    // A listener on a port the host did not have.
    let mut listener = python(
        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\n\
         print(s.getsockname()[1], flush=True)\ntime.sleep(30)",
    );
    let mut port = String::new();
    BufReader::new(listener.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port = port.trim().to_owned();
    let a = audit_with(&out, "a listening audit", |a| {
        a["area"] == "listening_ports"
            && a["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("listening on {port}/tcp"))
    });
    assert_eq!(a["pid"], listener.id(), "{a}");
    assert!(a.get("container_id").is_none(), "a host process: {a}");
    assert_eq!(a["action"], "alerted");

    // A raw socket.
    let raw = python(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n\
         print('open', flush=True)\ntime.sleep(30)",
    );
    let a = audit_with(&out, "a raw socket audit", |a| {
        a["area"] == "raw_sockets" && a["pid"] == raw.id()
    });
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("AF_INET raw socket"),
        "{a}"
    );

    // An unknown process under prevent: killed.
    let mut sleeper = Command::new(&victim).arg("30").spawn().unwrap();
    let victim_pid = sleeper.id();
    let a = audit_with(&out, "a process audit", |a| {
        a["area"] == "processes" && a["pid"] == sleeper.id()
    });
    assert_eq!(
        a["message"],
        format!("process {} is not in the model of host", victim.display())
    );
    assert_eq!(a["effect"], "prevent");
    assert_eq!(
        a["action"],
        format!("killed process {} (SIGKILL)", sleeper.id())
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = sleeper.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));

    // A DNS query for a feed domain (nothing needs to answer).
    // dig exits 9 (no reply): only the question on the wire matters.
    Command::new("dig")
        .args(["@127.0.0.1", "-p", "53", "+tries=1", "+time=1", FEED_DOMAIN])
        .stdout(Stdio::null())
        .status()
        .expect("dig runs");
    let a = audit_with(&out, "a DNS audit", |a| {
        a["area"] == "dns"
            && a["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{FEED_DOMAIN} is a known-bad domain"))
    });
    assert_eq!(a["action"], "alerted");

    // 50 closed loopback ports.
    let mut scan = python(
        "import socket\nfor p in range(47100, 47150):\n    s=socket.socket()\n    s.settimeout(0.2)\n    s.connect_ex(('127.0.0.1', p))\n    s.close()",
    );
    assert!(scan.wait().unwrap().success());
    let a = audit_with(&out, "a port scan audit", |a| a["area"] == "port_scan");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .starts_with("port scan from 127.0.0.1"),
        "{a}"
    );

    for mut c in [listener, raw] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(monitor.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = monitor.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        err.0.lock().unwrap().join("\n")
    );
    let file = std::fs::read_to_string(dir.path().join("data/audits.jsonl")).unwrap();
    for area in [
        "listening_ports",
        "raw_sockets",
        "processes",
        "dns",
        "port_scan",
    ] {
        assert!(
            file.contains(&format!("\"area\":\"{area}\"")),
            "{area} not in the audit file"
        );
    }
    // Nothing else on this shared host was killed.
    for line in file.lines() {
        let a: Value = serde_json::from_str(line).unwrap();
        if a["action"].as_str().unwrap().starts_with("killed") {
            assert_eq!(a["pid"], victim_pid, "{a}");
        }
    }
}
