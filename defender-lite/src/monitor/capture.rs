//! DNS questions and TCP connection attempts from packet capture (libpcap, through the
//! `pcap` crate), on the interfaces the operator names (`docker0`, veths, `lo`...), or
//! every interface matching a pattern (`veth*`), watched as containers come and go
//! ([`Watch`]: one thread, one `poll(2)` over all of them).
//!
//! On a veth whose other end is in another network namespace the capture takes only what
//! comes in, and each event carries the veth ([`Event::entered`]): a packet the host
//! receives there was sent from that namespace, which attribution turns into the
//! container, whatever source address the packet claims.
//!
//! The kernel filter keeps only DNS (UDP and TCP port 53) and SYNs without ACK, so the
//! capture costs nothing for the rest of the traffic. Each interface runs its own
//! capture on its own thread, feeding the event channel. The handle is non-blocking and
//! the thread waits in `poll(2)` with a timeout: libpcap's own read timeout does not
//! fire on a quiet interface with TPACKET_V3, and the thread must see the stop flag.
//!
//! The agent never resolves anything: it reads the questions containers send, and the
//! name goes into the event exactly as asked (lower-cased, unusual bytes escaped as
//! `\DDD`, the way dig prints them). The DNS question is parsed here rather than with a
//! full DNS library: only the header and the first question are needed, and a parser
//! that refuses unknown query types would let an odd type slip past unseen.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap::{Active, Capture, Direction, Linktype};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::Sink;
use super::event::{DnsQuery, Entered, Event, EventKind, Gap, Proto, Source, Syn};
use super::netns::Rtnl;

/// Kernel (BPF) filter: DNS either way, and SYN-only TCP segments for IPv4 and IPv6
/// (for IPv6 the TCP flags byte is read at its offset behind a fixed header).
pub const FILTER: &str = "udp port 53 or tcp port 53 \
    or (ip and tcp and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn) \
    or (ip6 and ip6[6] == 6 and ip6[53] & 0x12 == 0x02)";

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "capture on {interface}: {message} (capturing needs CAP_NET_RAW and CAP_NET_ADMIN, and the interface must exist)"
    )]
    Open { interface: String, message: String },
    #[error("capture on {interface}: the filter was refused: {message}")]
    Filter { interface: String, message: String },
}

/// An open capture on one interface.
pub struct InterfaceCapture {
    interface: String,
    capture: Capture<Active>,
    linktype: Linktype,
    /// A host-side veth with its peer in another namespace: the capture sees only what
    /// comes in on it, and each event says so.
    entered: Option<Arc<Entered>>,
    /// Opened because its name matched a pattern: its end when it goes away is normal.
    watched: bool,
    /// The interface's index when opened.
    index: Option<u32>,
}

/// How often a quiet capture looks at the stop flag.
const POLL_TIMEOUT_NS: i64 = 200_000_000;
/// Enough for IP + TCP headers and a DNS question with a long name; DNS over TCP
/// questions are just as small.
const SNAPLEN: i32 = 1024;

impl InterfaceCapture {
    pub fn open(interface: &str) -> Result<InterfaceCapture, CaptureError> {
        let open_err = |e: pcap::Error| CaptureError::Open {
            interface: interface.to_string(),
            message: e.to_string(),
        };
        let mut capture = Capture::from_device(interface)
            .map_err(open_err)?
            .promisc(false)
            .snaplen(SNAPLEN)
            .immediate_mode(true)
            .open()
            .map_err(open_err)?
            .setnonblock()
            .map_err(open_err)?;
        capture
            .filter(FILTER, true)
            .map_err(|e| CaptureError::Filter {
                interface: interface.to_string(),
                message: e.to_string(),
            })?;
        let linktype = capture.get_datalink();
        // On a veth whose other end is in another namespace, only what comes in: a packet
        // the host receives there was sent from that namespace, and only from it. (What
        // the bridge sends to the container goes out here, and is seen on the sender's.)
        let entered = match Rtnl::open().and_then(|mut r| r.link(interface)) {
            Ok(Some(link)) if link.veth_peer_nsid.is_some() => {
                capture
                    .direction(Direction::In)
                    .map_err(|e| CaptureError::Open {
                        interface: interface.to_string(),
                        message: format!("capturing only what comes in: {e}"),
                    })?;
                Some(Arc::new(Entered {
                    interface: interface.to_string(),
                    index: link.index,
                }))
            }
            _ => None,
        };
        Ok(InterfaceCapture {
            interface: interface.to_string(),
            capture,
            linktype,
            entered,
            watched: false,
            index: interface_index(interface),
        })
    }

    /// Marks a capture opened for a name that matched a pattern: when its interface goes
    /// away (the container stopped), the capture ends without a gap.
    pub fn watched(mut self) -> Self {
        self.watched = true;
        self
    }

    /// The interface a packet this capture sees came in on, if it is a veth to another
    /// namespace (see [`Event::entered`]).
    pub fn entered(&self) -> Option<&Arc<Entered>> {
        self.entered.as_ref()
    }

    /// Reads packets until `stop` is set or the sink closes. Blocking.
    pub fn run(mut self, sink: &Sink, stop: &Arc<AtomicBool>) {
        let timeout = poll_timeout();
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(&self.capture, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    self.stopped(sink, format!("capture stopped: poll: {e}"));
                    return;
                }
            }
            match self.drain(sink) {
                Drained::All => {}
                Drained::SinkClosed => return,
                Drained::Failed(reason) => {
                    self.stopped(sink, reason);
                    return;
                }
            }
        }
        self.report_drops(sink);
    }

    /// Sends what is buffered. "Timeout" is the non-blocking handle's "no more".
    fn drain(&mut self, sink: &Sink) -> Drained {
        loop {
            match self.capture.next_packet() {
                Ok(packet) => {
                    if let Some(kind) = parse_packet(self.linktype, packet.data, &self.interface) {
                        let mut event = Event::now(Source::Capture, kind);
                        event.entered = self.entered.clone();
                        if !sink.send(event) {
                            return Drained::SinkClosed;
                        }
                    }
                }
                Err(pcap::Error::TimeoutExpired) => return Drained::All,
                Err(e) => return Drained::Failed(format!("capture stopped: {e}")),
            }
        }
    }

    /// Drops counted by the kernel are reported once, at the end, as a gap.
    fn report_drops(&mut self, sink: &Sink) {
        if let Ok(stats) = self.capture.stats()
            && stats.dropped > 0
        {
            sink.send(capture_gap(
                &self.interface,
                "packets dropped by the kernel (capture buffer full)".into(),
                Some(stats.dropped.into()),
            ));
        }
    }

    /// The capture failed: a gap, unless it was a watched interface that is gone (or
    /// replaced by another of the same name).
    fn stopped(&mut self, sink: &Sink, reason: String) {
        if !(self.watched && interface_index(&self.interface) != self.index) {
            sink.send(capture_gap(&self.interface, reason, None));
        }
        self.report_drops(sink);
    }
}

enum Drained {
    All,
    SinkClosed,
    Failed(String),
}

fn poll_timeout() -> Timespec {
    Timespec {
        tv_sec: 0,
        tv_nsec: POLL_TIMEOUT_NS,
    }
}

/// The interface's index in the host's namespace, if it exists.
fn interface_index(name: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How often the watch looks for new interfaces matching its patterns.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Captures on every interface whose name matches a pattern (`veth*`): opened as
/// interfaces appear, ended as they go, all on one thread waiting in one `poll(2)`, so a
/// host with hundreds of containers costs one thread, not hundreds.
pub struct Watch {
    patterns: Vec<glob::Pattern>,
    /// Named in the configuration: captured on their own threads already.
    named: Vec<String>,
    open: Vec<InterfaceCapture>,
    /// (name, index) that could not be opened, reported once each, tried again after
    /// [`RETRY_FAILED`].
    failed: HashMap<(String, u32), Instant>,
    /// (name, index) -> when first seen not ready (down, or a veth whose peer has not
    /// left the host's namespace yet).
    pending: HashMap<(String, u32), Instant>,
    rtnl: Option<Rtnl>,
    scanned: Option<Instant>,
}

/// A new veth's peer is moved into the container's namespace a moment after the pair is
/// made; one whose peer is still here after this long is a veth within the host, and is
/// captured as any interface is.
const PEER_MOVE_WAIT: Duration = Duration::from_secs(3);
/// An interface whose capture could not be opened is tried again this often.
const RETRY_FAILED: Duration = Duration::from_secs(10);

impl Watch {
    pub fn new(patterns: Vec<glob::Pattern>, named: Vec<String>) -> Watch {
        Watch {
            patterns,
            named,
            open: Vec::new(),
            failed: HashMap::new(),
            pending: HashMap::new(),
            rtnl: None,
            scanned: None,
        }
    }

    /// Opens a capture on each matching interface not captured yet.
    pub fn pass(&mut self, sink: &Sink) {
        self.scanned = Some(Instant::now());
        let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
            return;
        };
        let mut present = HashSet::new();
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if self.named.contains(&name) || !self.patterns.iter().any(|p| p.matches(&name)) {
                continue;
            }
            let Some(index) = interface_index(&name) else {
                continue;
            };
            present.insert((name.clone(), index));
            let known = self
                .open
                .iter()
                .any(|c| c.interface == name && c.index == Some(index));
            let key = (name.clone(), index);
            let failed = self.failed.get(&key).copied();
            if known || failed.is_some_and(|t| t.elapsed() < RETRY_FAILED) || !self.ready(&key) {
                continue;
            }
            match InterfaceCapture::open(&name) {
                Ok(capture) => {
                    self.failed.remove(&key);
                    self.open.push(capture.watched());
                }
                // Gone between the listing and the open: nothing to say.
                Err(_) if interface_index(&name) != Some(index) => {}
                Err(e) => {
                    if failed.is_none() {
                        sink.send(capture_gap(&name, e.to_string(), None));
                    }
                    self.failed.insert(key, Instant::now());
                }
            }
        }
        self.failed.retain(|f, _| present.contains(f));
        self.pending.retain(|p, _| present.contains(p));
    }

    /// Whether the interface can be captured now: up, and if a veth, with its peer in
    /// another namespace (or still here after [`PEER_MOVE_WAIT`]). Opened earlier, a
    /// container's veth would be captured both ways and its packets placed by address.
    fn ready(&mut self, key: &(String, u32)) -> bool {
        if self.rtnl.is_none() {
            self.rtnl = Rtnl::open().ok();
        }
        let Some(rtnl) = self.rtnl.as_mut() else {
            return true; // no netlink: open it and let the capture say what fails
        };
        let link = match rtnl.link(&key.0) {
            Ok(Some(link)) if link.index == key.1 => link,
            Ok(_) => return false, // gone or replaced since the listing
            Err(_) => return true,
        };
        let first_seen = *self.pending.entry(key.clone()).or_insert_with(Instant::now);
        let ready = link.up
            && (!link.veth
                || link.veth_peer_nsid.is_some()
                || first_seen.elapsed() >= PEER_MOVE_WAIT);
        if ready {
            self.pending.remove(key);
        }
        ready
    }

    /// Reads every watched capture, and looks for new interfaces, until `stop` is set or
    /// the sink closes. Blocking.
    pub fn run(mut self, sink: &Sink, stop: &Arc<AtomicBool>) {
        let timeout = poll_timeout();
        while !stop.load(Ordering::Relaxed) {
            if self.scanned.is_none_or(|t| t.elapsed() >= WATCH_EVERY) {
                self.pass(sink);
            }
            if self.open.is_empty() {
                std::thread::sleep(WATCH_EVERY);
                continue;
            }
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd> = self
                    .open
                    .iter()
                    .map(|c| PollFd::new(&c.capture, PollFlags::IN))
                    .collect();
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        sink.send(capture_gap(
                            "watch",
                            format!("capture stopped: poll: {e}"),
                            None,
                        ));
                        return;
                    }
                }
                fds.iter().map(|f| !f.revents().is_empty()).collect()
            };
            let mut failed = Vec::new();
            for (i, ready) in ready.into_iter().enumerate() {
                if !ready {
                    continue;
                }
                match self.open[i].drain(sink) {
                    Drained::All => {}
                    Drained::SinkClosed => return,
                    Drained::Failed(reason) => failed.push((i, reason)),
                }
            }
            for (i, reason) in failed.into_iter().rev() {
                let mut gone = self.open.remove(i);
                gone.stopped(sink, reason);
            }
        }
        for c in &mut self.open {
            c.report_drops(sink);
        }
    }
}

/// A gap event for a capture source.
pub fn capture_gap(interface: &str, reason: String, lost: Option<u64>) -> Event {
    Event::now(
        Source::Agent,
        EventKind::Gap(Gap {
            what: format!("capture:{interface}"),
            reason,
            lost,
        }),
    )
}

/// Turns one captured frame into a DNS question or a SYN.
pub fn parse_packet(linktype: Linktype, data: &[u8], interface: &str) -> Option<EventKind> {
    let sliced = match linktype {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        // SLL2 ("any" on recent libpcap): a 20-byte header, protocol first.
        Linktype::LINUX_SLL2 => SlicedPacket::from_ip(data.get(20..)?).ok()?,
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(data).ok()?,
        Linktype::NULL | Linktype::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let interface = Some(interface.to_string());
    match sliced.transport? {
        TransportSlice::Udp(udp) if udp.destination_port() == 53 => {
            let q = parse_dns_question(udp.payload())?;
            Some(EventKind::DnsQuery(DnsQuery {
                name: q.name,
                qtype: q.qtype,
                proto: Proto::Udp,
                src: SocketAddr::new(src_ip, udp.source_port()),
                dst: SocketAddr::new(dst_ip, udp.destination_port()),
                interface,
            }))
        }
        TransportSlice::Tcp(tcp) => {
            let src = SocketAddr::new(src_ip, tcp.source_port());
            let dst = SocketAddr::new(dst_ip, tcp.destination_port());
            if tcp.syn() && !tcp.ack() {
                return Some(EventKind::Syn(Syn {
                    src,
                    dst,
                    interface,
                }));
            }
            if tcp.destination_port() != 53 {
                return None;
            }
            // DNS over TCP: a two-byte length, then the message.
            let q = parse_dns_question(tcp.payload().get(2..)?)?;
            Some(EventKind::DnsQuery(DnsQuery {
                name: q.name,
                qtype: q.qtype,
                proto: Proto::Tcp,
                src,
                dst,
                interface,
            }))
        }
        _ => None,
    }
}

/// The first question of a DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: String,
}

/// Parses the header and first question of a DNS *query* (responses and truncated or
/// malformed messages give `None`).
pub fn parse_dns_question(msg: &[u8]) -> Option<Question> {
    let flags = u16::from_be_bytes([*msg.get(2)?, *msg.get(3)?]);
    let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    if flags & 0x8000 != 0 || qdcount == 0 {
        return None; // a response, or no question
    }
    let mut name = String::new();
    let mut pos = 12;
    let mut total = 0usize;
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None; // compression pointers have nothing to point at in a question
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        total += len + 1;
        if total > 255 {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => name.push(b as char),
                b'A'..=b'Z' => name.push(b.to_ascii_lowercase() as char),
                _ => name.push_str(&format!("\\{b:03}")),
            }
        }
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    Some(Question {
        name,
        qtype: qtype_name(qtype),
    })
}

fn qtype_name(t: u16) -> String {
    let known = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    known.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as dig sends it: id, flags RD, one question.
    fn query(name: &[&[u8]], qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name {
            m.push(label.len() as u8);
            m.extend_from_slice(label);
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    fn check(msg: &[u8], expected: Option<(&str, &str)>) {
        let got = parse_dns_question(msg);
        assert_eq!(
            got.as_ref().map(|q| (q.name.as_str(), q.qtype.as_str())),
            expected
        );
    }

    #[test]
    fn questions() {
        check(
            &query(&[b"Evil", b"example"], 1),
            Some(("evil.example", "A")),
        );
        check(&query(&[b"x"], 28), Some(("x", "AAAA")));
        check(&query(&[b"x"], 65280), Some(("x", "TYPE65280")));
        check(&query(&[], 2), Some(("", "NS")));
        check(
            &query(&[b"a.b\x00", b"c"], 16),
            Some(("a\\046b\\000.c", "TXT")),
        );
    }

    #[test]
    fn responses_truncated_and_hostile_messages_are_not_questions() {
        let mut response = query(&[b"evil", b"example"], 1);
        response[2] |= 0x80;
        check(&response, None);
        let q = query(&[b"evil", b"example"], 1);
        for cut in 0..q.len() - 3 {
            check(&q[..cut], None);
        }
        // A compression pointer (to itself) and an over-long name.
        check(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1], None);
        let long: Vec<&[u8]> = vec![&[b'a'; 63]; 5];
        check(&query(&long, 1), None);
    }

    #[test]
    fn udp_query_in_an_ethernet_frame() {
        let payload = query(&[b"evil", b"example"], 1);
        let builder = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 53], 64)
            .udp(40000, 53);
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        let got = parse_packet(Linktype::ETHERNET, &frame, "lo").unwrap();
        let EventKind::DnsQuery(q) = got else {
            panic!("{got:?}")
        };
        assert_eq!(q.name, "evil.example");
        assert_eq!(q.src, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(q.dst, "127.0.0.53:53".parse().unwrap());
    }

    #[test]
    fn syn_but_not_syn_ack() {
        let frame = |ack: bool| {
            let b = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
                .ipv6([0; 16], [1; 16], 64)
                .tcp(5555, 22, 1, 1024)
                .syn();
            let b = if ack { b.ack(1) } else { b };
            let mut f = Vec::new();
            b.write(&mut f, &[]).unwrap();
            f
        };
        assert!(matches!(
            parse_packet(Linktype::ETHERNET, &frame(false), "eth0"),
            Some(EventKind::Syn(_))
        ));
        assert_eq!(parse_packet(Linktype::ETHERNET, &frame(true), "eth0"), None);
    }
}
