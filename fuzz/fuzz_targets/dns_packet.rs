//! The DNS packet parser of packet capture (`monitor::capture::parse_dns_question`) and
//! the frame parser around it (`parse_packet`, per link type: Ethernet, Linux SLL and
//! SLL2, raw IP, BSD loopback). The first byte picks the entry point. A question's name
//! is what the agent matches against known-bad domains and writes to audits: it must be
//! plain (lower-case letters, digits, `-`, `_`, dots, `\DDD` escapes) and bounded.
//! Seeds: queries as dig sends them, in UDP and TCP over IPv4 and IPv6, and SYNs.
#![no_main]

use defender_lite::monitor::capture::{Question, parse_dns_question, parse_packet};
use defender_lite::monitor::event::EventKind;
use etherparse::PacketBuilder;
use libfuzzer_sys::fuzz_target;
use pcap::Linktype;

const LINKTYPES: [Linktype; 8] = [
    Linktype::ETHERNET,
    Linktype::LINUX_SLL,
    Linktype::LINUX_SLL2,
    Linktype::RAW,
    Linktype::IPV4,
    Linktype::IPV6,
    Linktype::NULL,
    Linktype::LOOP,
];

/// A query as dig sends it: id, flags RD, one question, an OPT record.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    m
}

/// The frame a packet builder writes around `payload`.
macro_rules! frame {
    ($builder:expr, $payload:expr $(,)?) => {{
        let mut out = Vec::new();
        $builder.write(&mut out, $payload).unwrap();
        out
    }};
}

fn seeds() -> Vec<fuzz::Seed> {
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let v4 = ([172, 17, 0, 2], [8, 8, 8, 8]);
    let v6 = ([0xfd; 16], [0x20; 16]);
    let q = query("evil.Example.COM", 1);
    let mut tcp_dns = (q.len() as u16).to_be_bytes().to_vec();
    tcp_dns.extend_from_slice(&q);
    let with = |pick: u8, bytes: Vec<u8>| {
        let mut input = vec![pick];
        input.extend(bytes);
        input
    };
    vec![
        ("question-a".into(), with(0, query("evil.example", 1))),
        (
            "question-https-odd-bytes".into(),
            with(0, query("we\u{1}ird_na-me.x", 65)),
        ),
        (
            "ethernet-udp4".into(),
            with(
                1,
                frame!(
                    PacketBuilder::ethernet2(mac.0, mac.1)
                        .ipv4(v4.0, v4.1, 64)
                        .udp(40512, 53),
                    &q
                ),
            ),
        ),
        (
            "ethernet-tcp6-dns".into(),
            with(
                1,
                frame!(
                    PacketBuilder::ethernet2(mac.0, mac.1)
                        .ipv6(v6.0, v6.1, 64)
                        .tcp(40000, 53, 1, 64000)
                        .ack(1)
                        .psh(),
                    &tcp_dns,
                ),
            ),
        ),
        (
            "ethernet-syn4".into(),
            with(
                1,
                frame!(
                    PacketBuilder::ethernet2(mac.0, mac.1)
                        .ipv4(v4.0, [172, 17, 0, 3], 64)
                        .tcp(40000, 22, 7, 64000)
                        .syn(),
                    &[]
                ),
            ),
        ),
        (
            "raw-udp4".into(),
            with(
                4,
                frame!(PacketBuilder::ipv4(v4.0, v4.1, 64).udp(5353, 53), &q),
            ),
        ),
        (
            "raw-udp6".into(),
            with(
                6,
                frame!(PacketBuilder::ipv6(v6.0, v6.1, 64).udp(5353, 53), &q),
            ),
        ),
    ]
}

fn check(q: &Question) {
    assert!(q.name.len() <= 4 * 255, "{q:?}");
    assert!(
        q.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.\\".contains(&b)),
        "{q:?}"
    );
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match usize::from(pick) % (LINKTYPES.len() + 1) {
        0 => {
            if let Some(q) = parse_dns_question(rest) {
                check(&q);
            }
        }
        n => {
            if let Some(EventKind::DnsQuery(q)) = parse_packet(LINKTYPES[n - 1], rest, "eth0") {
                check(&Question { name: q.name, qtype: q.qtype });
            }
        }
    }
});
