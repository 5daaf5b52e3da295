//! Runtime events from this host, with real processes: a listener, a raw socket, an exec
//! seen by the netlink process connector, a DNS query and a burst of SYNs captured on
//! `lo`. These need root (CAP_NET_ADMIN, CAP_NET_RAW), as CI has; without it they fail
//! and say so, they never skip.

#![allow(clippy::unwrap_used)]

use crate::monitor_support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use defender_lite::monitor::event::{EventKind, Proto, RawFamily, Source};
use defender_lite::monitor::proc_connector::ProcessConfig;
use defender_lite::monitor::{Monitor, MonitorConfig};
use monitor_support::wait_for;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests watch the host: run them as root (CAP_NET_ADMIN for the process connector, CAP_NET_RAW for capture and raw sockets)"
    );
}

fn config() -> MonitorConfig {
    MonitorConfig {
        interfaces: Vec::new(),
        processes: None,
        sockets_every: None,
        snapshot: false,
        docker_socket: None,
        channel_capacity: 64 * 1024,
    }
}

fn python(code: &str) -> Child {
    Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 runs (tests/run installs it)")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_in_a_child_process_is_seen_with_its_pid_and_port() {
    require_root();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut monitor = Monitor::start(&MonitorConfig {
        sockets_every: Some(Duration::from_millis(200)),
        ..config()
    })
    .unwrap();
    let child = KillOnDrop(python(&format!(
        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\ntime.sleep(30)"
    )));
    let pid = child.0.id();
    let e = wait_for(
        &mut monitor,
        Duration::from_secs(15),
        "listen event",
        |e| matches!(&e.kind, EventKind::Listen(l) if l.addr.port() == port),
    )
    .await;
    let EventKind::Listen(l) = &e.kind else {
        unreachable!()
    };
    assert_eq!(l.pid, Some(pid), "{e:?}");
    assert_eq!(l.proto, Proto::Tcp);
    assert_eq!(l.addr, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(e.source, Source::ProcNet);
    assert!(l.netns.is_some() && l.inode > 0);
    monitor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_icmp_socket_opened_by_a_child_is_seen() {
    require_root();
    let mut monitor = Monitor::start(&MonitorConfig {
        sockets_every: Some(Duration::from_millis(200)),
        ..config()
    })
    .unwrap();
    let child = KillOnDrop(python(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\ntime.sleep(30)",
    ));
    let pid = child.0.id();
    let e = wait_for(
        &mut monitor,
        Duration::from_secs(15),
        "raw socket event",
        |e| matches!(&e.kind, EventKind::RawSocket(r) if r.pid == Some(pid)),
    )
    .await;
    let EventKind::RawSocket(r) = &e.kind else {
        unreachable!()
    };
    assert_eq!((r.family, r.protocol), (RawFamily::Inet, 1), "{e:?}");
    monitor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_of_bin_true_comes_from_the_process_connector() {
    require_root();
    let mut monitor = Monitor::start(&MonitorConfig {
        processes: Some(ProcessConfig {
            scan_every: Duration::from_secs(60),
            snapshot: false,
            connector: true,
        }),
        ..config()
    })
    .unwrap();
    // Not waited for until the event is in: as a zombie it keeps its /proc/<pid>/stat,
    // so the event can carry its name even though it has long exited.
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id();
    let e = wait_for(
        &mut monitor,
        Duration::from_secs(10),
        "exec event for /bin/true",
        |e| matches!(&e.kind, EventKind::Exec(x) if x.pid == pid),
    )
    .await;
    child.wait().unwrap();
    assert_eq!(
        e.source,
        Source::Connector,
        "the exec came from a /proc pass, not the connector: {e:?}"
    );
    let EventKind::Exec(x) = &e.kind else {
        unreachable!()
    };
    let named = x.comm == "true" || x.exe.as_deref().is_some_and(|p| p.ends_with("/true"));
    assert!(named, "{x:?}");
    monitor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_query_sent_by_dig_is_captured_on_lo_with_its_name() {
    require_root();
    let mut monitor = Monitor::start(&MonitorConfig {
        interfaces: vec!["lo".into()],
        ..config()
    })
    .unwrap();
    // Nothing answers on 127.0.0.1:53: the query is on the wire all the same.
    let dig = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            "53",
            "+tries=1",
            "+time=1",
            "Evil.Example",
            "TXT",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("dig runs (tests/run installs dnsutils)");
    let _ = dig; // exit 9 (no reply) is expected
    let e = wait_for(
        &mut monitor,
        Duration::from_secs(10),
        "dns query for evil.example",
        |e| matches!(&e.kind, EventKind::DnsQuery(q) if q.name == "evil.example"),
    )
    .await;
    let EventKind::DnsQuery(q) = &e.kind else {
        unreachable!()
    };
    assert_eq!(q.qtype, "TXT");
    assert_eq!(q.proto, Proto::Udp);
    assert_eq!(q.dst, SocketAddr::from(([127, 0, 0, 1], 53)));
    assert_eq!(q.interface.as_deref(), Some("lo"));
    assert_eq!(e.source, Source::Capture);
    monitor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_syns_to_50_closed_ports_is_captured() {
    require_root();
    // Ports just freed by the kernel are closed: nothing listens on them.
    let ports: Vec<u16> = (0..50)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut monitor = Monitor::start(&MonitorConfig {
        interfaces: vec!["lo".into()],
        ..config()
    })
    .unwrap();
    for &port in &ports {
        let refused = TcpStream::connect(("127.0.0.1", port));
        assert!(refused.is_err(), "port {port} unexpectedly open");
    }
    let mut seen = std::collections::HashSet::new();
    wait_for(&mut monitor, Duration::from_secs(10), "50 SYNs", |e| {
        if let EventKind::Syn(s) = &e.kind
            && ports.contains(&s.dst.port())
        {
            seen.insert(s.dst.port());
        }
        seen.len() == ports.len()
    })
    .await;
    assert_eq!(seen.len(), 50);
    monitor.stop();
}

#[test]
fn capture_on_a_missing_interface_is_an_error_that_names_it() {
    let err = Monitor::start(&MonitorConfig {
        interfaces: vec!["no-such-if0".into()],
        ..config()
    })
    .err()
    .expect("capture on a missing interface must fail");
    assert!(err.to_string().contains("no-such-if0"), "{err}");
}
