use std::net::IpAddr;

use super::portscan::PortScanSettings;
use super::store::RuntimeDb;
use super::*;

const S: i128 = 1_000_000_000;

fn engine(rules: &str, knowledge: Knowledge, store: Option<ModelStore>) -> Engine {
    Engine::new(
        Rules::parse(rules, "rules.toml").unwrap(),
        knowledge,
        store,
        60,
        PortScanDetector::new(PortScanSettings::default()),
    )
    .unwrap()
}

fn obs<'a>(ts: i128, image: &'a str, what: What<'a>) -> Observation<'a> {
    Observation {
        ts,
        subject: Subject {
            container: Some("web-1"),
            image: Some(image),
            labels: &[],
        },
        pid: Some(4242),
        evidence: match what {
            What::Dns { .. } | What::Syn { .. } => Evidence::Packet,
            _ => Evidence::Process,
        },
        what,
    }
}

fn feed() -> Knowledge {
    let mut k = Knowledge {
        domains: DomainSet::from_feed_text("evil.example\n").0,
        ips: IpSet::from_feed_text("203.0.113.0/24\n").0,
        ..Knowledge::default()
    };
    k.app_ports.insert(
        "httpd:2.4".into(),
        vec![PortRange::parse("80/tcp").unwrap()],
    );
    k
}

#[test]
fn learning_then_enforcing_the_model() {
    let mut e = engine("", feed(), None);
    let httpd = What::Process {
        exe: "/usr/local/apache2/bin/httpd",
    };
    let listen = What::Listen {
        proto: Proto::Tcp,
        port: 8443,
    };
    // Learning: everything is learned, nothing reported.
    assert_eq!(e.evaluate(&obs(0, "httpd:2.4", httpd)).unwrap(), None);
    assert_eq!(e.evaluate(&obs(S, "httpd:2.4", listen)).unwrap(), None);
    // Active (after 60 s): the learned is fine, the new is a violation.
    assert_eq!(e.evaluate(&obs(61 * S, "httpd:2.4", httpd)).unwrap(), None);
    assert_eq!(e.evaluate(&obs(61 * S, "httpd:2.4", listen)).unwrap(), None);
    let nc = e
        .evaluate(&obs(
            62 * S,
            "httpd:2.4",
            What::Process { exe: "/usr/bin/nc" },
        ))
        .unwrap()
        .unwrap();
    assert_eq!(nc.area, Area::Processes);
    assert_eq!(nc.effect, Effect::Alert);
    assert_eq!(nc.pid, Some(4242));
    assert!(
        nc.reason.contains("not in the model of httpd:2.4"),
        "{}",
        nc.reason
    );
    // Port 80 was never seen but the image's app knowledge expects it; 4444 is new.
    let l80 = What::Listen {
        proto: Proto::Tcp,
        port: 80,
    };
    assert_eq!(e.evaluate(&obs(63 * S, "httpd:2.4", l80)).unwrap(), None);
    let l4444 = What::Listen {
        proto: Proto::Tcp,
        port: 4444,
    };
    let v = e
        .evaluate(&obs(63 * S, "httpd:2.4", l4444))
        .unwrap()
        .unwrap();
    assert_eq!(v.area, Area::ListeningPorts);
    // Another image has a model of its own, learning from its first event.
    assert_eq!(
        e.evaluate(&obs(
            63 * S,
            "redis:7",
            What::Process { exe: "/usr/bin/nc" }
        ))
        .unwrap(),
        None
    );
}

#[test]
fn the_feed_is_never_learned_and_deny_beats_the_model() {
    let mut e = engine(
        r#"
[[rules]]
name = "web"
scope = { images = ["httpd:*"] }
processes = { effect = "prevent", deny = ["nc*"] }
outbound_ips = { effect = "block" }
dns = { allow = ["ok.evil.example"] }
"#,
        feed(),
        None,
    );
    // While learning: the deny list and the feed still report.
    let v = e
        .evaluate(&obs(
            0,
            "httpd:2.4",
            What::Process {
                exe: "/bin/nc.openbsd",
            },
        ))
        .unwrap()
        .unwrap();
    assert_eq!(
        (v.area, v.effect, v.rule.as_str()),
        (Area::Processes, Effect::Prevent, "web")
    );
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let v = e
        .evaluate(&obs(
            S,
            "httpd:2.4",
            What::Outbound {
                proto: Proto::Tcp,
                ip,
                port: 443,
            },
        ))
        .unwrap()
        .unwrap();
    assert_eq!((v.area, v.effect), (Area::OutboundIps, Effect::Block));
    assert!(v.reason.contains("known-bad"), "{}", v.reason);
    let v = e
        .evaluate(&obs(
            2 * S,
            "httpd:2.4",
            What::Dns {
                name: "c2.Evil.Example.",
            },
        ))
        .unwrap()
        .unwrap();
    assert_eq!(v.area, Area::Dns);
    assert!(
        v.reason.contains("evil.example is a known-bad domain"),
        "{}",
        v.reason
    );
    // The allow list wins over the feed.
    assert_eq!(
        e.evaluate(&obs(
            3 * S,
            "httpd:2.4",
            What::Dns {
                name: "ok.evil.example"
            }
        ))
        .unwrap(),
        None
    );
    // None of those were learned: after learning they are still violations, and a
    // subdomain outside the model is too.
    let v = e
        .evaluate(&obs(
            100 * S,
            "httpd:2.4",
            What::Dns {
                name: "c2.evil.example",
            },
        ))
        .unwrap()
        .unwrap();
    assert!(v.reason.contains("known-bad"));
    let model = e.models().find(|m| m.image == "httpd:2.4");
    assert!(
        model.is_none_or(|m| m.dns.is_empty() && m.outbound_ips.is_empty()),
        "{model:?}"
    );
}

#[test]
fn disabled_areas_raw_sockets_and_port_scans() {
    let mut e = engine(
        r#"
[[rules]]
name = "quiet"
scope = { images = ["batch:*"] }
raw_sockets = { effect = "disable" }
port_scan = { effect = "disable" }
"#,
        Knowledge::default(),
        None,
    );
    let raw = What::RawSocket {
        description: "inet, protocol 1",
    };
    assert_eq!(e.evaluate(&obs(0, "batch:1", raw)).unwrap(), None);
    let v = e.evaluate(&obs(0, "httpd:2.4", raw)).unwrap().unwrap();
    assert_eq!((v.area, v.effect), (Area::RawSockets, Effect::Alert));
    let (src, dst): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap());
    let mut found = 0;
    for p in 0..50u16 {
        let syn = What::Syn {
            src,
            dst,
            port: 20000 + p,
        };
        if e.evaluate(&obs(i128::from(p) * 1_000_000, "httpd:2.4", syn))
            .unwrap()
            .is_some()
        {
            found += 1;
        }
        assert_eq!(
            e.evaluate(&obs(i128::from(p) * 1_000_000, "batch:1", syn))
                .unwrap(),
            None
        );
    }
    assert_eq!(found, 1, "one finding per burst");
}

#[test]
fn models_survive_a_restart_and_promote_ends_learning() {
    let dir = tempfile::tempdir().unwrap();
    let exe = What::Process {
        exe: "/usr/sbin/nginx",
    };
    {
        let db = RuntimeDb::open(dir.path()).unwrap();
        let mut e = engine(
            "",
            Knowledge::default(),
            Some(ModelStore::open(&db).unwrap()),
        );
        assert_eq!(e.evaluate(&obs(0, "nginx:1", exe)).unwrap(), None);
        assert!(e.promote("nginx:1").unwrap());
        assert!(!e.promote("nope").unwrap());
        db.flush().unwrap();
    }
    let db = RuntimeDb::open(dir.path()).unwrap();
    let mut e = engine(
        "",
        Knowledge::default(),
        Some(ModelStore::open(&db).unwrap()),
    );
    // Active at once (promoted), and remembers nginx.
    assert_eq!(e.evaluate(&obs(S, "nginx:1", exe)).unwrap(), None);
    assert!(
        e.evaluate(&obs(S, "nginx:1", What::Process { exe: "/bin/sh" }))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_model_stops_learning_at_its_cap_and_says_so_once() {
    let mut e = engine("", Knowledge::default(), None).with_model_cap(3);
    for (n, exe) in ["/bin/a", "/bin/b", "/bin/c"].into_iter().enumerate() {
        let at = i128::try_from(n).unwrap() * S;
        assert_eq!(
            e.evaluate(&obs(at, "busy:1", What::Process { exe }))
                .unwrap(),
            None
        );
    }
    let v = e
        .evaluate(&obs(4 * S, "busy:1", What::Process { exe: "/bin/d" }))
        .unwrap()
        .expect("the cap is said");
    assert_eq!((v.area, v.effect), (Area::Processes, Effect::Alert));
    assert!(
        v.reason.contains("the model of busy:1 is full (3 entries"),
        "{}",
        v.reason
    );
    // Once: the next one is neither learned nor said again.
    assert_eq!(
        e.evaluate(&obs(5 * S, "busy:1", What::Process { exe: "/bin/e" }))
            .unwrap(),
        None
    );
    let m = e.models().find(|m| m.image == "busy:1").unwrap();
    assert_eq!(m.len(), 3);
    // Enforced, what was not learned is a violation.
    assert!(
        e.evaluate(&obs(100 * S, "busy:1", What::Process { exe: "/bin/d" }))
            .unwrap()
            .is_some()
    );
}

#[test]
fn packet_evidence_is_never_learned_into_a_model() {
    let mut e = engine("", Knowledge::default(), None);
    // While learning: a DNS name from a captured packet (placed by its source address).
    assert_eq!(
        e.evaluate(&obs(S, "web:1", What::Dns { name: "c2.example" }))
            .unwrap(),
        None
    );
    assert_eq!(
        e.evaluate(&obs(2 * S, "web:1", What::Process { exe: "/bin/web" }))
            .unwrap(),
        None
    );
    let m = e.models().find(|m| m.image == "web:1").unwrap();
    assert!(m.dns.is_empty(), "{m:?}");
    assert_eq!(m.processes.len(), 1);
    // Nor judged by it once enforced: the rules and the feed judge packets.
    assert_eq!(
        e.evaluate(&obs(
            100 * S,
            "web:1",
            What::Dns {
                name: "other.example"
            }
        ))
        .unwrap(),
        None
    );
}

#[test]
fn namespace_evidence_is_learned_and_judged_by_the_model() {
    let mut e = engine("", Knowledge::default(), None);
    let dns = |ts, name| Observation {
        evidence: Evidence::Namespace,
        ..obs(ts, "web:1", What::Dns { name })
    };
    // While learning: a DNS name from a packet that came in on the container's own veth.
    assert_eq!(e.evaluate(&dns(S, "api.example")).unwrap(), None);
    let m = e.models().find(|m| m.image == "web:1").unwrap();
    assert_eq!(m.dns.len(), 1, "{m:?}");
    // Once enforced: the learned name passes, another is a violation of the model.
    assert_eq!(e.evaluate(&dns(100 * S, "api.example")).unwrap(), None);
    let v = e
        .evaluate(&dns(101 * S, "other.example"))
        .unwrap()
        .expect("a name the model does not hold");
    assert_eq!(v.area, Area::Dns, "{v:?}");
}
