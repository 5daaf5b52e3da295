//! Captured packets attributed to the container that sent them, against a real Docker
//! engine (Debian's dockerd, started by `tests/docker-engine` on a socket of its own):
//! a user-defined bridge network, a busybox-static container on it that asks a DNS
//! question and knocks on closed ports, a capture on the network's bridge. The
//! `dns_query` and `syn` events name the container (id, name, image, labels) from the
//! engine's list of container addresses; a SYN the host sends stays the host's. Then the
//! same through `defender-lite monitor`: a rule scoped to the container's image sees a
//! known-bad domain the container asks for. These need root (dockerd, capture), as CI
//! has; without an engine they fail and say why, they never skip.
//!
//! dockerd runs with `--bridge=none --iptables=false`: there is no default bridge, but a
//! user-defined bridge network works (the engine creates `br-<id>`, gives the host
//! `.1` on it and each container a veth); only NAT and port publishing, which need
//! iptables, are missing, and these tests need neither: everything stays on the bridge.

#![allow(clippy::unwrap_used)]

use crate::docker_engine::{self, ENGINE};
use crate::monitor_support;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use defender_lite::monitor::event::{AttributedBy, EventKind};
use defender_lite::monitor::{Monitor, MonitorConfig};
use docker_engine::{Engine, MonitorProcess};
use monitor_support::wait_for;

const IMAGE: &str = "defender-lite-test/busybox:network";
const NETWORK: &str = "defender-lite-test-net";
const SUBNET: &str = "10.213.0.0/24";
/// The host's address on the bridge (the engine takes the subnet's first address).
const GATEWAY: &str = "10.213.0.1";
const ASKER: &str = "defender-lite-test-asker";
const WATCHED: &str = "defender-lite-test-dns-watched";

#[tokio::test]
async fn captured_dns_queries_and_syns_name_the_container_that_sent_them() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[ASKER], &[NETWORK]);
    let bridge = create_network(&engine);
    let id = run_on_network(&engine, ASKER);
    let address: IpAddr = engine
        .docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
            &id,
        ])
        .parse()
        .unwrap();

    let mut monitor = Monitor::start(&MonitorConfig {
        interfaces: vec![bridge.clone()],
        processes: None,
        sockets_every: None,
        snapshot: false,
        docker_socket: Some(engine.socket()),
        channel_capacity: 64 * 1024,
    })
    .unwrap();

    // Nothing answers on the gateway's port 53 or these ports: the question and the SYNs
    // are on the wire all the same, and the host's RSTs end them at once.
    engine.docker(&[
        "exec",
        "-d",
        ASKER,
        "/bin/busybox",
        "nslookup",
        "evil.example",
        GATEWAY,
    ]);
    for port in ["7001", "7002", "7003"] {
        engine.docker(&[
            "exec",
            ASKER,
            "/bin/sh",
            "-c",
            &format!("/bin/busybox nc -w1 {GATEWAY} {port} </dev/null; true"),
        ]);
    }
    // And one SYN the host sends to the container: its source is the host's address on
    // the bridge, which no container has.
    let _ = TcpStream::connect_timeout(&SocketAddr::new(address, 7004), Duration::from_secs(1));

    let query = wait_for(
        &mut monitor,
        Duration::from_secs(20),
        "dns_query for evil.example",
        |e| matches!(&e.kind, EventKind::DnsQuery(q) if q.name == "evil.example"),
    )
    .await;
    eprintln!("{}", serde_json::to_string(&query).unwrap());
    let EventKind::DnsQuery(q) = &query.kind else {
        unreachable!()
    };
    assert_eq!(q.src.ip(), address);
    assert_eq!(q.interface.as_deref(), Some(bridge.as_str()));
    let container = query.container.as_ref().expect("dns_query attributed");
    // Seen on the bridge, not on the container's veth: placed by its address.
    assert_eq!(query.attributed_by, Some(AttributedBy::Address));
    assert_eq!(container.id, id);
    assert_eq!(container.name.as_deref(), Some(ASKER));
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    assert_eq!(
        container.labels,
        vec![("defender-lite-test".to_string(), "network".to_string())]
    );

    let mut from_container = Vec::new();
    let from_host = loop {
        let e = wait_for(&mut monitor, Duration::from_secs(20), "syn", |e| {
            matches!(e.kind, EventKind::Syn(_))
        })
        .await;
        eprintln!("{}", serde_json::to_string(&e).unwrap());
        let EventKind::Syn(s) = &e.kind else {
            unreachable!()
        };
        if s.dst.port() == 7004 {
            break e;
        }
        if s.src.ip() == address {
            from_container.push((s.dst.port(), e.container.clone()));
        }
    };
    let ports: Vec<u16> = from_container.iter().map(|(p, _)| *p).collect();
    for port in [7001, 7002, 7003] {
        assert!(ports.contains(&port), "no syn to {port}: {ports:?}");
    }
    for (port, c) in &from_container {
        let c = c
            .as_ref()
            .unwrap_or_else(|| panic!("syn to {port} not attributed"));
        assert_eq!(
            (c.id.as_str(), c.name.as_deref()),
            (id.as_str(), Some(ASKER))
        );
        assert_eq!(c.image.as_deref(), Some(IMAGE));
    }
    assert_eq!(
        from_host.container, None,
        "the host's own SYN: {from_host:?}"
    );
    monitor.stop();
}

/// The whole path, as an operator runs it: `defender-lite monitor` capturing on the
/// bridge, a rule scoped to the container's image, and the container asking for a domain
/// the intelligence feed lists. The audit names the container and its image.
#[tokio::test]
async fn the_monitor_audits_a_containers_dns_query_for_a_known_bad_domain() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[WATCHED], &[NETWORK]);
    let bridge = create_network(&engine);
    run_on_network(&engine, WATCHED);

    let monitor = MonitorProcess::start(
        &engine,
        &format!(
            "[[rules]]\nname = \"busybox dns\"\nscope = {{ images = [\"{IMAGE}\"] }}\n\
             dns = {{ effect = \"alert\" }}\n"
        ),
        &format!("learning = \"1h\"\nscan_every = \"500ms\"\ninterfaces = [\"{bridge}\"]"),
    );
    let output = |name: &str| monitor.output(name);
    monitor.wait_for_stderr("monitoring (capture on");

    let expected = format!("container {WATCHED} ({IMAGE})");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Ask again until it is seen: nothing answers, so each ask is one short try.
        engine.docker(&[
            "exec",
            "-d",
            WATCHED,
            "/bin/busybox",
            "nslookup",
            "malware.testing.google.test",
            GATEWAY,
        ]);
        std::thread::sleep(Duration::from_secs(1));
        let audits = output("stdout");
        if audits
            .lines()
            .any(|l| l.contains("malware.testing.google.test") && l.contains(&expected))
        {
            eprintln!("{audits}");
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "no audit naming {expected} within 30 s\nstdout:\n{audits}\nstderr:\n{}",
                output("stderr")
            );
        }
    }
    let audits = output("stdout");
    assert!(
        audits.contains("[busybox dns]") && audits.contains("known-bad domain"),
        "{audits}"
    );
}

/// The bridge network; returns its interface (`br-` and the id's first 12 digits).
fn create_network(engine: &Engine) -> String {
    let id = engine.docker(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        SUBNET,
        "--gateway",
        GATEWAY,
        NETWORK,
    ]);
    let bridge = format!("br-{}", &id[..12]);
    assert!(
        Path::new("/sys/class/net").join(&bridge).exists(),
        "the engine made network {id} but no interface {bridge}"
    );
    bridge
}

/// A busybox `sleep` on the network; returns the full id once it runs.
fn run_on_network(engine: &Engine, name: &str) -> String {
    engine.docker(&[
        "run",
        "-d",
        "--stop-timeout=1",
        "--network",
        NETWORK,
        "--label",
        "defender-lite-test=network",
        "--name",
        name,
        IMAGE,
        "/bin/busybox",
        "sleep",
        "3600",
    ])
}

const VICTIM: &str = "defender-lite-test-victim";
const ATTACKER: &str = "defender-lite-test-attacker";

/// The victim and the attacker, running on the network: their ids, the victim's address
/// and the attacker's main process (whose network namespace the forged packets leave).
struct Pair {
    victim: String,
    attacker: String,
    victim_ip: String,
    attacker_pid: String,
}

fn victim_and_attacker(engine: &Engine) -> Pair {
    let victim = run_on_network(engine, VICTIM);
    let attacker = run_on_network(engine, ATTACKER);
    engine.wait_until_running(&victim, Duration::from_secs(10));
    engine.wait_until_running(&attacker, Duration::from_secs(10));
    let victim_ip = engine.docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
        &victim,
    ]);
    let attacker_pid = engine.docker(&["inspect", "-f", "{{.State.Pid}}", &attacker]);
    Pair {
        victim,
        attacker,
        victim_ip,
        attacker_pid,
    }
}

/// Sent from the attacker's network namespace (`nsenter --net`): a DNS question for a
/// known-bad name and SYNs to ten ports, all with the victim's source address, crafted
/// on a raw socket as anyone with NET_RAW (Docker's default) can.
const SPOOF: &str = r#"
import socket, struct, sys
src, dst = sys.argv[1], sys.argv[2]
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def ip(proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
name = b"".join(bytes([len(p)]) + p.encode() for p in "malware.testing.google.test".split("."))
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x00\x01\x00\x01"
s.sendto(ip(17, struct.pack("!HHHH", 40000, 53, 8 + len(q), 0) + q), (dst, 0))
for port in range(7100, 7110):
    tcp = struct.pack("!HHIIBBHHH", 40001, port, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    s.sendto(ip(6, tcp), (dst, 0))
"#;

/// Issue 13 item 4: one container sends DNS questions and SYNs with its neighbour's
/// address, under rules that block on both. The audits name the neighbour (packets are
/// placed by their source address) and say so; the neighbour keeps running.
#[tokio::test]
async fn a_container_cannot_get_its_neighbour_blocked_by_forging_its_address() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[VICTIM, ATTACKER], &[NETWORK]);
    let bridge = create_network(&engine);
    let Pair {
        victim,
        attacker,
        victim_ip,
        attacker_pid,
    } = victim_and_attacker(&engine);

    let monitor = MonitorProcess::start(
        &engine,
        &format!(
            "[[rules]]\nname = \"busybox\"\nscope = {{ images = [\"{IMAGE}\"] }}\n\
             dns = {{ effect = \"block\" }}\nport_scan = {{ effect = \"block\" }}\n"
        ),
        &format!(
            "learning = \"1h\"\nscan_every = \"500ms\"\ninterfaces = [\"{bridge}\"]\n\
             port_scan_ports = 5\nport_scan_hosts = 5\nport_scan_window = \"10s\""
        ),
    );
    monitor.wait_for_stderr("monitoring (capture on");

    let victim_said = format!("container {VICTIM} ({IMAGE})");
    let deadline = Instant::now() + Duration::from_secs(30);
    let audits = loop {
        let sent = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{attacker_pid}/ns/net"))
            .args(["python3", "-c", SPOOF, &victim_ip, GATEWAY])
            .output()
            .expect("nsenter and python3 (tests/run installs python3)");
        assert!(sent.status.success(), "the spoofer failed: {sent:?}");
        std::thread::sleep(Duration::from_secs(1));
        let audits = monitor.output("stdout");
        let dns = audits
            .lines()
            .any(|l| l.contains("DNS") && l.contains(&victim_said));
        let scan = audits
            .lines()
            .any(|l| l.contains("port scan") && l.contains(&victim_said));
        if dns && scan {
            break audits;
        }
        assert!(
            Instant::now() < deadline,
            "no DNS and port-scan audits naming {VICTIM} within 30 s\nstdout:\n{audits}\nstderr:\n{}",
            monitor.output("stderr")
        );
    };
    eprintln!("{audits}");
    for line in audits.lines().filter(|l| l.contains(&victim_said)) {
        assert!(
            line.contains("alerted only: the evidence is a")
                && line.contains(&format!(
                    "attributed to container {VICTIM} by its source address"
                )),
            "{line}"
        );
    }
    assert!(
        engine.state(&victim).running && engine.state(&attacker).running,
        "a container was stopped on forged packets:\n{audits}"
    );
}

/// Issue 13 item 4, the other half: capturing on the containers' veths (`veth*`, opened
/// as they appear), a packet is placed by the veth it came in on, that is by the network
/// namespace that sent it, whatever source address it carries. The same forged DNS
/// question and SYNs as above are the attacker's: the audits name it and say how they
/// know, and the rule's `block` stops the attacker, never the neighbour it impersonated.
#[tokio::test]
async fn a_packet_is_placed_by_the_veth_it_came_in_on_so_the_forger_is_the_one_blocked() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[VICTIM, ATTACKER], &[NETWORK]);
    create_network(&engine);
    // The monitor starts first: the containers' veths appear after it, and are watched.
    let monitor = MonitorProcess::start(
        &engine,
        &format!(
            "[[rules]]\nname = \"busybox\"\nscope = {{ images = [\"{IMAGE}\"] }}\n\
             dns = {{ effect = \"block\" }}\nport_scan = {{ effect = \"block\" }}\n"
        ),
        "learning = \"1h\"\nscan_every = \"500ms\"\ninterfaces = [\"veth*\"]\n\
         port_scan_ports = 5\nport_scan_hosts = 5\nport_scan_window = \"10s\"",
    );
    monitor.wait_for_stderr("monitoring (capture on");
    let Pair {
        victim,
        attacker,
        victim_ip,
        attacker_pid,
    } = victim_and_attacker(&engine);

    let attacker_said = format!("container {ATTACKER} ({IMAGE})");
    let deadline = Instant::now() + Duration::from_secs(30);
    let audits = loop {
        let sent = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{attacker_pid}/ns/net"))
            .args(["python3", "-c", SPOOF, &victim_ip, GATEWAY])
            .output()
            .expect("nsenter and python3 (tests/run installs python3)");
        // Once blocked, the attacker's namespace is gone with it.
        if !sent.status.success() && !engine.state(&attacker).running {
            break monitor.output("stdout");
        }
        assert!(sent.status.success(), "the spoofer failed: {sent:?}");
        std::thread::sleep(Duration::from_secs(1));
        let audits = monitor.output("stdout");
        if audits
            .lines()
            .any(|l| l.contains("DNS") && l.contains(&attacker_said))
            && !engine.state(&attacker).running
        {
            break audits;
        }
        assert!(
            Instant::now() < deadline,
            "the attacker was not blocked on a DNS audit naming it within 30 s\nstdout:\n{audits}\nstderr:\n{}",
            monitor.output("stderr")
        );
    };
    eprintln!("{audits}");
    assert!(
        !audits.contains(&format!("container {VICTIM} ")),
        "an audit names the container whose address was forged:\n{audits}"
    );
    let dns = audits
        .lines()
        .find(|l| l.contains("DNS") && l.contains(&attacker_said))
        .unwrap_or_else(|| panic!("no DNS audit naming {ATTACKER}:\n{audits}"));
    assert!(
        dns.contains("attributed by network namespace: the packet came in on veth")
            && !dns.contains("alerted only"),
        "{dns}"
    );
    assert!(
        engine.state(&victim).running,
        "the impersonated container was stopped:\n{audits}"
    );
    assert!(!engine.state(&attacker).running, "{audits}");
    // The attacker's veth went with it: a watched interface's end is no gap.
    std::thread::sleep(Duration::from_secs(1));
    let stderr = monitor.output("stderr");
    assert!(!stderr.contains("capture:veth"), "{stderr}");
}
