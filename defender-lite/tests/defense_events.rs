//! `defender-lite monitor --events`, `model` and `audits`, end to end through the real
//! binary with JSON-lines input: every detection kind, the throttle, models kept across
//! restarts and changed by hand, `audits --since`, the actions (a real process killed by
//! prevent; block refused for a host process and failing without a Docker Engine), bad
//! input lines, and the database lock while a monitor runs. Deterministic: event times
//! come from the input, not the clock.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const BIN: &str = env!("CARGO_BIN_EXE_defender-lite");
const WEB: &str = r#"{"id":"4f2a8a0b6c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d","name":"web","image":"httpd:2.4"}"#;
/// 2026-12-02T10:00:00Z.
const BASE: i64 = 1_796_205_600;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A config (data_dir, [monitor] with `monitor` extra lines) and a rules file.
    fn new(rules: &str, monitor: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
        std::fs::write(
            dir.path().join("defender-lite.toml"),
            format!(
                "data_dir = \"data\"\n[trust]\nkeys = [\"origin.pub\"]\n[monitor]\nrules = \"rules.toml\"\n\
                 learning = \"60s\"\ndocker_socket = \"no-docker.sock\"\n{monitor}\n"
            ),
        )
        .unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("defender-lite.toml").display().to_string()
    }

    /// `monitor --events FILE --json --feeds <sample feeds>` over these lines.
    fn monitor(&self, lines: &[String], extra: &[&str]) -> Output {
        let events = self.path("events.jsonl");
        std::fs::write(&events, lines.join("\n") + "\n").unwrap();
        let feeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
        let out = Command::new(BIN)
            .args(["monitor", "--config", &self.config(), "--json", "--events"])
            .arg(&events)
            .arg("--feeds")
            .arg(&feeds)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.code().is_some(),
            "monitor died: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--config", &self.config()])
            .output()
            .unwrap()
    }
}

fn ts(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(BASE + secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// `secs` for [`exec`] and friends that stands for now (plus `offset` seconds): events
/// of processes that run on this host now.
fn now_secs(offset: i64) -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() - BASE + offset
}

fn ev(secs: i64, kind: &str, fields: &str, container: Option<&str>) -> String {
    let c = container
        .map(|c| format!(r#","container":{c}"#))
        .unwrap_or_default();
    format!(r#"{{"ts":"{}","kind":"{kind}",{fields}{c}}}"#, ts(secs))
}

fn exec(secs: i64, pid: u32, exe: &str, container: Option<&str>) -> String {
    let comm = exe.rsplit('/').next().unwrap();
    ev(
        secs,
        "exec",
        &format!(r#""pid":{pid},"comm":"{comm}","exe":"{exe}","argv":["{comm}"]"#),
        container,
    )
}

fn listen(secs: i64, pid: u32, port: u16, container: Option<&str>) -> String {
    ev(
        secs,
        "listen",
        &format!(r#""proto":"tcp","addr":"0.0.0.0:{port}","pid":{pid},"inode":{port}"#),
        container,
    )
}

fn connect(secs: i64, pid: u32, remote: &str, container: Option<&str>) -> String {
    ev(
        secs,
        "connect",
        &format!(
            r#""proto":"tcp","local":"172.17.0.2:40000","remote":"{remote}","pid":{pid},"inode":7"#
        ),
        container,
    )
}

fn dns(secs: i64, name: &str, container: Option<&str>) -> String {
    ev(
        secs,
        "dns_query",
        &format!(
            r#""name":"{name}","qtype":"A","proto":"udp","src":"172.17.0.2:40512","dst":"172.17.0.1:53""#
        ),
        container,
    )
}

/// The audits a run printed (`--json`).
fn audits(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn areas(audits: &[Value]) -> Vec<String> {
    audits
        .iter()
        .map(|a| a["area"].as_str().unwrap().to_owned())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the web container does while its model learns.
fn learning_phase() -> Vec<String> {
    vec![
        exec(0, 100, "/usr/local/apache2/bin/httpd", Some(WEB)),
        listen(1, 100, 80, Some(WEB)),
        connect(2, 100, "93.184.216.34:443", Some(WEB)),
        dns(3, "deb.debian.org", Some(WEB)),
        exec(4, 200, "/usr/sbin/sshd", None),
    ]
}

#[test]
fn every_detection_kind_is_audited_once_the_model_is_enforced() {
    let env = Env::new("", "throttle_burst = 100");
    let mut lines = learning_phase();
    // Enforced from 60 s on. What the model learned passes.
    lines.push(exec(100, 101, "/usr/local/apache2/bin/httpd", Some(WEB)));
    lines.push(listen(101, 101, 80, Some(WEB)));
    lines.push(dns(102, "deb.debian.org", Some(WEB)));
    // Each of these is a violation.
    lines.push(exec(110, 300, "/usr/bin/nc.openbsd", Some(WEB)));
    lines.push(listen(111, 300, 4444, Some(WEB)));
    lines.push(connect(112, 300, "198.51.100.7:443", Some(WEB)));
    lines.push(connect(113, 300, "93.184.216.34:6667", Some(WEB)));
    lines.push(dns(114, "malware.testing.google.test", Some(WEB)));
    // A name the model never held, from a captured packet: placed by its source address
    // alone, it is judged by the rules and the feed, never by the model.
    lines.push(dns(115, "new-name.debian.org", Some(WEB)));
    lines.push(ev(
        116,
        "raw_socket",
        r#""family":"packet","protocol":3,"pid":301,"inode":9"#,
        None,
    ));
    for port in 0..30u16 {
        lines.push(format!(
            r#"{{"ts":"{}.{:03}Z","kind":"syn","src":"10.0.0.5:40000","dst":"10.0.0.6:{}"}}"#,
            ts(120).trim_end_matches('Z'),
            port * 10,
            1000 + port
        ));
    }
    let out = env.monitor(&lines, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    assert_eq!(
        areas(&a),
        [
            "processes",
            "listening_ports",
            "outbound_ips",
            "outbound_ports",
            "dns",
            "raw_sockets",
            "port_scan"
        ],
        "{a:#?}"
    );
    let msg = |i: usize| a[i]["message"].as_str().unwrap().to_owned();
    assert_eq!(
        msg(0),
        "process /usr/bin/nc.openbsd is not in the model of httpd:2.4"
    );
    assert_eq!(
        msg(1),
        "listening on 4444/tcp is not in the model of httpd:2.4"
    );
    assert!(
        msg(2).contains("198.51.100.7, a known-bad address"),
        "{}",
        msg(2)
    );
    assert!(
        msg(3).contains("port 6667/tcp is not in the model"),
        "{}",
        msg(3)
    );
    assert!(msg(4).contains("known-bad domain"), "{}", msg(4));
    assert!(msg(5).contains("AF_PACKET"), "{}", msg(5));
    assert!(
        msg(6).starts_with("port scan from 10.0.0.5: 25 distinct ports"),
        "{}",
        msg(6)
    );
    assert_eq!(a[0]["container_name"], "web");
    assert_eq!(a[0]["image"], "httpd:2.4");
    assert_eq!(a[0]["pid"], 300);
    assert_eq!(a[0]["action"], "alerted");
    assert!(a[5].get("container_id").is_none(), "host raw socket");
    // The same audits are in the file and in sled.
    let file = std::fs::read_to_string(env.path("data/audits.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 7);
    let listed = env.run(&["audits", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert_eq!(audits(&listed), a);
}

#[test]
fn app_knowledge_of_the_image_expects_its_configured_port() {
    // The seed scenario: httpd is killed and another process listens on its port. The
    // port is the app's (httpd.conf says 80): no listening audit, but the process is new.
    let env = Env::new("", "");
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps/httpd-official");
    let lines = vec![
        exec(0, 100, "/usr/local/apache2/bin/httpd", Some(WEB)),
        ev(90, "exit", r#""pid":100,"signal":9"#, Some(WEB)),
        exec(91, 300, "/usr/bin/nc.openbsd", Some(WEB)),
        listen(92, 300, 80, Some(WEB)),
        listen(93, 300, 4444, Some(WEB)),
    ];
    let out = env.monitor(
        &lines,
        &["--app-image", &format!("httpd:2.4={}", image.display())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("app knowledge for httpd:2.4: apache 80/tcp (listens)"),
        "{}",
        stderr(&out)
    );
    let a = audits(&out);
    assert_eq!(areas(&a), ["processes", "listening_ports"], "{a:#?}");
    assert!(a[1]["message"].as_str().unwrap().contains("4444"));
}

#[test]
fn the_throttle_holds_a_storm_back_and_the_next_audit_counts_it() {
    let env = Env::new("", "throttle_window = \"60s\"\nthrottle_burst = 3");
    let mut lines = learning_phase();
    for i in 0..10 {
        lines.push(exec(
            100 + i,
            400 + i as u32,
            &format!("/tmp/x{i}"),
            Some(WEB),
        ));
    }
    lines.push(exec(200, 500, "/tmp/late", Some(WEB)));
    // Another area is throttled on its own.
    lines.push(listen(201, 500, 4444, Some(WEB)));
    let out = env.monitor(&lines, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    assert_eq!(
        areas(&a),
        [
            "processes",
            "processes",
            "processes",
            "processes",
            "listening_ports"
        ]
    );
    assert_eq!(
        a[3]["message"],
        "process /tmp/late is not in the model of httpd:2.4"
    );
    assert_eq!(a[3]["suppressed"], 7);
    assert!(
        String::from_utf8_lossy(&env.run(&["audits"]).stdout).contains("[7 similar suppressed]")
    );
}

#[test]
fn models_persist_across_restarts_and_model_commands_change_them() {
    let env = Env::new("", "");
    let out = env.monitor(&learning_phase(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(audits(&out).is_empty());

    let list = env.run(&["model", "list", "--json"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let models: Value = serde_json::from_slice(&list.stdout).unwrap();
    let images: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["host", "httpd:2.4"]);
    let text =
        String::from_utf8_lossy(&env.run(&["model", "show", "httpd:2.4"]).stdout).into_owned();
    assert!(
        text.contains("/usr/local/apache2/bin/httpd  (learned)"),
        "{text}"
    );
    assert!(text.contains("tcp/80  (learned)"), "{text}");

    // A restart, past the learning period: the model is still there, and enforced.
    let later = vec![
        exec(100, 101, "/usr/local/apache2/bin/httpd", Some(WEB)),
        exec(101, 300, "/usr/bin/nc.openbsd", Some(WEB)),
    ];
    let a = audits(&env.monitor(&later, &[]));
    assert_eq!(areas(&a), ["processes"]);
    assert!(a[0]["message"].as_str().unwrap().contains("nc.openbsd"));

    // Added by hand: no longer a violation.
    let add = env.run(&[
        "model",
        "add",
        "httpd:2.4",
        "--process",
        "/usr/bin/nc.openbsd",
        "--listen",
        "4444/tcp",
        "--dns",
        "Updates.Example.",
    ]);
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    let a = audits(&env.monitor(&later, &[]));
    assert!(a.is_empty(), "{a:#?}");

    // Relearn forgets what was learned, keeps what was added; promote enforces at once.
    let relearn = env.run(&["model", "relearn", "httpd:2.4"]);
    assert_eq!(relearn.status.code(), Some(0), "{}", stderr(&relearn));
    assert!(String::from_utf8_lossy(&relearn.stdout).contains("3 added by hand kept"));
    let show = env.run(&["model", "show", "httpd:2.4", "--json"]);
    let m: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(m["state"], "learning");
    assert_eq!(
        m["processes"],
        serde_json::json!({"/usr/bin/nc.openbsd": "user"})
    );
    assert_eq!(m["dns"], serde_json::json!({"updates.example": "user"}));
    let promote = env.run(&["model", "promote", "httpd:2.4"]);
    assert_eq!(promote.status.code(), Some(0), "{}", stderr(&promote));
    let a = audits(&env.monitor(&later, &[]));
    assert_eq!(areas(&a), ["processes"]);
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .contains("/usr/local/apache2/bin/httpd"),
        "httpd was forgotten by relearn: {a:#?}"
    );

    let missing = env.run(&["model", "show", "nginx:1.27"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no model for image \"nginx:1.27\"; models: host, httpd:2.4")
    );
}

#[test]
fn audits_since_a_time_or_a_duration() {
    // A denied process is a violation even while learning: audits without waiting.
    let env = Env::new(
        "[[rules]]\nname = \"no nc\"\nprocesses = { deny = [\"nc*\"] }\n",
        "",
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let at = |secs_ago: i64| {
        let t = OffsetDateTime::from_unix_timestamp(now - secs_ago)
            .unwrap()
            .format(&Rfc3339)
            .unwrap();
        format!(r#"{{"ts":"{t}","kind":"exec","pid":9,"comm":"nc","exe":"/usr/bin/nc","argv":[]}}"#)
    };
    let out = env.monitor(&[at(7200), at(600)], &[]);
    assert_eq!(audits(&out).len(), 2, "{}", stderr(&out));
    let count = |since: &str| {
        let out = env.run(&["audits", "--json", "--since", since]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        audits(&out).len()
    };
    assert_eq!(count("1h"), 1);
    assert_eq!(count("3h"), 2);
    let hour_ago = OffsetDateTime::from_unix_timestamp(now - 3600)
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
    assert_eq!(count(&hour_ago), 1);
    let bad = env.run(&["audits", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("neither an RFC 3339 time"),
        "{}",
        stderr(&bad)
    );
}

/// A real process for prevent to kill.
fn sleeper() -> (Child, String) {
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.id()))
        .unwrap()
        .display()
        .to_string();
    (child, exe)
}

fn wait_gone(child: &mut Child) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn prevent_kills_the_process_that_did_it_or_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new(
        r#"
[[rules]]
name = "victim"
scope = { images = ["victim:*"] }
processes = { effect = "prevent", deny = ["sleep"] }

[[rules]]
name = "host"
processes = { effect = "prevent", deny = ["sleep", "/usr/bin/other"] }
"#,
        "",
    );
    let victim = r#"{"id":"0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef","name":"victim","image":"victim:1"}"#;
    let (mut killed, exe) = sleeper();
    let (mut spared, _) = sleeper();
    let (mut newer, _) = sleeper();
    let (mut elsewhere, _) = sleeper();
    let lines = vec![
        exec(now_secs(0), killed.id(), &exe, None),
        // The pid now runs something else than the event says: reused, left alone.
        exec(now_secs(0), spared.id(), "/usr/bin/other", None),
        // The event is from before the process started: the pid was reused since.
        exec(now_secs(-3600), newer.id(), &exe, None),
        // The event says a container; the process is not in it.
        exec(now_secs(0), elsewhere.id(), &exe, Some(victim)),
    ];
    // A recording acts on nothing unless told to.
    let out = env.monitor(&lines, &[]);
    let a = audits(&out);
    assert!(
        a.iter().all(|a| a["action"]
            .as_str()
            .unwrap()
            .contains("is from a recording (--act-on-this-host")),
        "{a:?}"
    );
    assert_eq!(
        killed.try_wait().unwrap(),
        None,
        "a recording signalled a process"
    );

    let out = env.monitor(&lines, &["--act-on-this-host"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    let actions: Vec<&str> = a.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions[0],
        format!("killed process {} (SIGKILL)", killed.id())
    );
    let status = wait_gone(&mut killed).expect("the prevented process is gone");
    assert_eq!(status.signal(), Some(9));
    assert_eq!(
        actions[1],
        format!(
            "not killed: pid {} now runs {exe}, not /usr/bin/other (the pid was reused)",
            spared.id()
        )
    );
    assert_eq!(
        actions[2],
        format!(
            "not killed: pid {} started after the event: the pid was reused",
            newer.id()
        )
    );
    assert_eq!(
        actions[3],
        format!(
            "not killed: pid {} is not in container 0123456789ab now",
            elsewhere.id()
        )
    );
    for child in [&mut spared, &mut newer, &mut elsewhere] {
        assert_eq!(child.try_wait().unwrap(), None, "still running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // --dry-run decides the same and does nothing.
    let (mut child, exe) = sleeper();
    let out = env.monitor(
        &[exec(now_secs(0), child.id(), &exe, None)],
        &["--dry-run", "--act-on-this-host"],
    );
    assert_eq!(
        audits(&out)[0]["action"],
        format!("dry run: would kill process {}", child.id())
    );
    assert_eq!(child.try_wait().unwrap(), None);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn what_prevent_and_block_cannot_do_is_said() {
    let env = Env::new(
        r#"
[[rules]]
name = "prevent"
scope = { images = ["victim:*"] }
dns = { effect = "prevent" }

[[rules]]
name = "block"
processes = { effect = "block", deny = ["nc*"] }
"#,
        "",
    );
    let victim = r#"{"id":"0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef","name":"victim","image":"victim:1"}"#;
    let lines = vec![
        dns(2, "malware.testing.google.test", Some(victim)),
        exec(3, 1, "/usr/bin/nc", None),
        exec(4, 77, "/usr/bin/nc", Some(WEB)),
    ];
    let out = env.monitor(&lines, &["--act-on-this-host"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    let actions: Vec<&str> = a.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(
        actions[0].starts_with(
            "alerted only: the evidence is a DNS query seen on the wire, attributed to container victim by its source address"
        ),
        "{}",
        actions[0]
    );
    assert_eq!(
        actions[1],
        "not blocked: a host process has no container to stop; alerted only"
    );
    assert!(
        actions[2].starts_with("block failed: block 4f2a8a0b6c1d"),
        "{}",
        actions[2]
    );
    assert!(actions[2].contains("no-docker.sock"), "{}", actions[2]);
}

#[test]
fn the_throttle_never_stops_enforcement() {
    // A storm of violations from one place: past the burst, the audits are throttled,
    // but every offending process is still killed.
    let env = Env::new(
        r#"
[[rules]]
name = "prevent"
processes = { effect = "prevent", deny = ["sleep"] }
"#,
        "throttle_window = \"60s\"\nthrottle_burst = 3",
    );
    let mut children: Vec<(Child, String)> = (0..12).map(|_| sleeper()).collect();
    let lines: Vec<String> = children
        .iter()
        .map(|(child, exe)| exec(now_secs(0), child.id(), exe, None))
        .collect();
    let out = env.monitor(&lines, &["--act-on-this-host"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(audits(&out).len(), 3, "the audits are throttled");
    assert!(
        stderr(&out).contains("12 verdict(s) acted on, 3 audit(s)"),
        "{}",
        stderr(&out)
    );
    for (child, _) in &mut children {
        assert!(
            wait_gone(child).is_some(),
            "process {} was spared by the throttle",
            child.id()
        );
    }
}

#[test]
fn bad_lines_are_skipped_and_make_the_exit_code_1() {
    let env = Env::new(
        "[[rules]]\nname = \"no nc\"\nprocesses = { deny = [\"nc\"] }\n",
        "",
    );
    let lines = vec![
        "not json".to_owned(),
        exec(0, 9, "/usr/bin/nc", None),
        r#"{"ts":"2026-12-02T10:00:00Z","kind":"teleport"}"#.to_owned(),
    ];
    let out = env.monitor(&lines, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(audits(&out).len(), 1);
    let err = stderr(&out);
    assert!(err.contains("line 1: not an event"), "{err}");
    assert!(err.contains("2 bad line(s) skipped"), "{err}");
}

#[test]
fn model_and_audits_say_the_running_monitor_holds_the_database() {
    let env = Env::new("", "");
    let mut monitor = Command::new(BIN)
        .args(["monitor", "--config", &env.config(), "--events", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = monitor.stdin.take().unwrap();
    writeln!(stdin, "{}", exec(0, 9, "/usr/bin/true", None)).unwrap();
    // The monitor has the database once its start-up line is out.
    let db = env.path("data/runtime.sled/db");
    let start = Instant::now();
    while !db.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for args in [&["model", "list"][..], &["audits"][..]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(
                "is locked by another process, most likely the running `defender-lite monitor`"
            ),
            "{}",
            stderr(&out)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5), "no waiting");
    drop(stdin);
    let out = monitor.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.run(&["model", "list"]).status.code(), Some(0));
}

#[test]
fn port_scan_thresholds_come_from_the_configuration() {
    // Eight closed ports from one source within a second: a scan for a configuration
    // that says five ports make one, not for the default (25).
    let syns: Vec<String> = (0..8)
        .map(|p| {
            ev(
                1,
                "syn",
                &format!(r#""src":"10.0.0.9:40000","dst":"10.0.0.1:{}""#, 7000 + p),
                None,
            )
        })
        .collect();
    let strict = Env::new(
        "",
        "port_scan_ports = 5\nport_scan_hosts = 5\nport_scan_window = \"2s\"",
    );
    let out = strict.monitor(&syns, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    assert_eq!(areas(&a), ["port_scan"], "{a:#?}");
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .contains("5 distinct ports"),
        "{a:#?}"
    );

    let default = Env::new("", "");
    let out = default.monitor(&syns, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(audits(&out).is_empty());

    let bad = Env::new("", "port_scan_ports = 1");
    let out = bad.monitor(&syns, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("port_scan_ports"), "{}", stderr(&out));
}

#[test]
fn a_container_id_that_is_not_ascii_is_shown_not_a_panic() {
    let env = Env::new(
        r#"
[[rules]]
name = "dns"
dns = { effect = "alert" }
"#,
        "",
    );
    // 11 ASCII bytes, then a two-byte character across byte 12: no name to show instead.
    let odd = r#"{"id":"0123456789aéé-not-hex","image":"odd:1"}"#;
    let events = env.path("events.jsonl");
    std::fs::write(
        &events,
        dns(2, "malware.testing.google.test", Some(odd)) + "\n",
    )
    .unwrap();
    let feeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
    let out = Command::new(BIN)
        .args(["monitor", "--config", &env.config(), "--events"])
        .arg(&events)
        .arg("--feeds")
        .arg(&feeds)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("container 0123456789aé (odd:1)"), "{text}");
}

#[test]
fn the_runtime_is_known_by_its_executable_never_by_its_name() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(
        r#"
[[rules]]
name = "host"
processes = { effect = "prevent", deny = ["containerd", "tini-static", "docker-init"] }
"#,
        "",
    );
    // A program that calls itself containerd (`cp /usr/bin/sleep /tmp/containerd`).
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("containerd");
    let (mut probe, sleep) = sleeper();
    probe.kill().unwrap();
    probe.wait().unwrap();
    std::fs::copy(&sleep, &fake).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut impostor = Command::new(&fake).arg("60").spawn().unwrap();
    // Docker's own init, the engine's file (tests/run installs docker.io), on the host.
    let init = ["/usr/bin/docker-init", "/usr/sbin/docker-init"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("docker-init (Debian's docker.io; tests/run installs it)");
    let mut runtime = Command::new(init)
        .args(["-s", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let impostor_exe = fake.display().to_string();
    // The exec event names what the kernel runs (the link resolved: tini-static).
    let runtime_exe = std::fs::read_link(format!("/proc/{}/exe", runtime.id()))
        .unwrap()
        .display()
        .to_string();
    let lines = vec![
        exec(now_secs(0), impostor.id(), &impostor_exe, None),
        exec(now_secs(0), runtime.id(), &runtime_exe, None),
    ];
    let out = env.monitor(&lines, &["--act-on-this-host"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    let actions: Vec<&str> = a.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            format!("killed process {} (SIGKILL)", impostor.id()),
            format!(
                "not killed: pid {} is the container runtime (docker-init); the agent never kills it",
                runtime.id()
            ),
        ]
    );
    assert!(wait_gone(&mut impostor).is_some(), "the impostor is gone");
    assert_eq!(runtime.try_wait().unwrap(), None, "the runtime runs on");
    runtime.kill().unwrap();
    runtime.wait().unwrap();
}

/// The ancestry branch of the runtime's exemption: a host process that the OCI runtime
/// started (a `createRuntime` hook of a container that `runc run` is setting up, Debian's
/// runc, as root) is the runtime's, although its executable is a plain `sleep`; the same
/// `sleep` started by anyone else is killed.
#[test]
fn a_host_child_of_the_oci_runtime_is_never_killed() {
    let env = Env::new(
        r#"
[[rules]]
name = "host"
processes = { effect = "prevent", deny = ["sleep"] }
"#,
        "",
    );
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("runc (Debian's runc, with docker.io; tests/run installs it)");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static; tests/run installs it)");
    let spec = Command::new(runc)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(spec.status.success(), "runc spec: {}", stderr(&spec));
    let hook_pid = dir.path().join("hook.pid");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    config["process"]["terminal"] = Value::Bool(false);
    config["process"]["args"] = serde_json::json!(["/bin/busybox", "true"]);
    // The hook runs on the host, as a child of runc, until the test ends it.
    config["hooks"] = serde_json::json!({
        "createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo $$ > {}; exec sleep 60", hook_pid.display())],
        }]
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let state = dir.path().join("state");
    let container = format!("defender-lite-test-hook-{}", std::process::id());
    let mut run = Command::new(runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&container)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("runc.log")).unwrap())
        .spawn()
        .unwrap();
    // The hook's pid, once it is the sleep (its executable no longer the shell's).
    let deadline = Instant::now() + Duration::from_secs(20);
    let hook: u32 = loop {
        let pid = std::fs::read_to_string(&hook_pid)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid
            && std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "sleep"))
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline && run.try_wait().unwrap().is_none(),
            "runc's hook did not start:\n{}",
            std::fs::read_to_string(dir.path().join("runc.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let hook_exe = std::fs::read_link(format!("/proc/{hook}/exe"))
        .unwrap()
        .display()
        .to_string();
    let (mut other, other_exe) = sleeper();

    let lines = vec![
        exec(now_secs(0), hook, &hook_exe, None),
        exec(now_secs(0), other.id(), &other_exe, None),
    ];
    let out = env.monitor(&lines, &["--act-on-this-host"]);
    let hook_alive = Path::new(&format!("/proc/{hook}")).exists();
    // End the hook: runc then gives the container up.
    let _ = Command::new("kill").arg(hook.to_string()).status();
    let _ = run.wait();
    let _ = Command::new(runc)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &container])
        .output();

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    let actions: Vec<&str> = a.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions.len(), 2, "{a:?}");
    assert!(
        actions[0].starts_with(&format!(
            "not killed: pid {hook} is the container runtime (started by runc, pid "
        )),
        "{actions:?}"
    );
    assert_eq!(
        actions[1],
        format!("killed process {} (SIGKILL)", other.id())
    );
    assert!(hook_alive, "the runtime's hook was killed");
    assert!(wait_gone(&mut other).is_some(), "the other sleep is gone");
}

#[test]
fn packets_never_stop_a_container_its_neighbour_can_forge_them() {
    // The victim's address on a DNS query for a known-bad name and on a port scan's
    // SYNs: what a neighbour with NET_RAW can send. Rules that would block.
    let env = Env::new(
        r#"
[[rules]]
name = "block"
scope = { images = ["victim:*"] }
dns = { effect = "block" }
port_scan = { effect = "block" }
"#,
        "port_scan_ports = 5\nport_scan_hosts = 5\nport_scan_window = \"10s\"",
    );
    let victim = r#"{"id":"0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef","name":"victim","image":"victim:1"}"#;
    let mut lines = vec![dns(2, "malware.testing.google.test", Some(victim))];
    for port in 1..=6 {
        lines.push(ev(
            3,
            "syn",
            &format!(r#""src":"172.17.0.2:40000","dst":"172.17.0.9:{port}""#),
            Some(victim),
        ));
    }
    let out = env.monitor(&lines, &["--act-on-this-host"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = audits(&out);
    assert_eq!(areas(&a), ["dns", "port_scan"], "{a:?}");
    for audit in &a {
        let action = audit["action"].as_str().unwrap();
        assert!(
            action.starts_with("alerted only: the evidence is a")
                && action.contains("attributed to container victim by its source address"),
            "{action}"
        );
    }
}
