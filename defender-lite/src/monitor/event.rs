//! The runtime event: one thing that happened on the host, with when, how it was seen,
//! and (once attributed) which container did it.
//!
//! Events are plain data, cheap to clone and compare: addresses are `std::net` values,
//! the container is a shared `Arc` (one allocation per container, not per event), and the
//! kind is a flat enum so a rule engine matches on it without lookups. The JSON-lines
//! form (one object per line) is the same for what `defender-lite events --json` prints
//! and for what `--events FILE` reads, so another sensor can feed the agent:
//!
//! ```json
//! {"ts":"2026-08-01T10:00:00.5Z","source":"connector","kind":"exec","pid":4242,"ppid":1,"uid":0,"comm":"nc","exe":"/usr/bin/nc.openbsd","argv":["nc","-l","4444"],"container":{"id":"4f2a...","name":"web","image":"nginx:1.27"}}
//! ```
//!
//! Every object has `ts` (RFC 3339, UTC), `kind`, the kind's fields, and optionally
//! `source` (default `input`) and `container`. `defender-lite/EVENTS.md` lists each kind
//! with an example. Reading the stream is `input.rs`; producing events is the other
//! modules of `monitor`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One runtime event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub ts: Timestamp,
    /// How the event was observed; events read from a file default to `input`.
    #[serde(default)]
    pub source: Source,
    #[serde(flatten)]
    pub kind: EventKind,
    /// The container the event belongs to; absent for host processes, or while not
    /// (yet) attributed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<Container>>,
    /// How `container` was found, once the agent attributed the event (never read from
    /// `--events`: a recording's word on it is not evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributed_by: Option<AttributedBy>,
    /// The host-side veth a captured packet came in on, from a capture that sees only
    /// what enters the host there: so the packet was sent from the namespace at the
    /// veth's other end. Set by the capture alone; never serialized, never read.
    #[serde(skip)]
    pub entered: Option<Arc<Entered>>,
}

/// How an event's container was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributedBy {
    /// The process's cgroup, read from `/proc` (the event names a process).
    Cgroup,
    /// The network namespace a captured packet was sent from (it came in on the
    /// container's veth): the kernel's word, which no other container can forge.
    Namespace,
    /// A captured packet's source address, which any container with NET_RAW can forge.
    Address,
}

/// The interface a captured packet entered the host on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub interface: String,
    /// Its index when the capture opened: a later interface of the same name is another.
    pub index: u32,
}

impl Event {
    /// An event observed now.
    pub fn now(source: Source, kind: EventKind) -> Event {
        Event {
            ts: Timestamp::now(),
            source,
            kind,
            container: None,
            attributed_by: None,
            entered: None,
        }
    }

    /// The process the event belongs to, where the kind names one.
    pub fn pid(&self) -> Option<u32> {
        self.kind.pid()
    }
}

/// Reading an event: one flat pass over the object's fields, then the kind's fields
/// checked. (Deriving with `flatten` on the tagged kind makes serde buffer every field
/// first, which made reading `--events` several times slower than judging them.) Unknown
/// fields are ignored, as before.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Wire::deserialize(d)?
            .into_event()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindTag {
    Exec,
    Exit,
    Listen,
    Connect,
    RawSocket,
    DnsQuery,
    Syn,
    Gap,
}

/// Every field any kind has, each optional.
#[derive(Deserialize)]
struct Wire {
    ts: Timestamp,
    #[serde(default)]
    source: Source,
    kind: KindTag,
    #[serde(default)]
    container: Option<Arc<Container>>,
    pid: Option<u32>,
    ppid: Option<u32>,
    uid: Option<u32>,
    comm: Option<String>,
    exe: Option<String>,
    argv: Option<Vec<String>>,
    code: Option<i32>,
    signal: Option<i32>,
    proto: Option<Proto>,
    addr: Option<SocketAddr>,
    inode: Option<u64>,
    netns: Option<u64>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    family: Option<RawFamily>,
    protocol: Option<u16>,
    name: Option<String>,
    qtype: Option<String>,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    interface: Option<String>,
    what: Option<String>,
    reason: Option<String>,
    lost: Option<u64>,
}

impl Wire {
    fn into_event(self) -> Result<Event, String> {
        fn need<T>(v: Option<T>, kind: &str, field: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("{kind} event without `{field}`"))
        }
        let kind = match self.kind {
            KindTag::Exec => EventKind::Exec(Exec {
                pid: need(self.pid, "exec", "pid")?,
                ppid: self.ppid,
                uid: self.uid,
                comm: self.comm.unwrap_or_default(),
                exe: self.exe,
                argv: self.argv.unwrap_or_default(),
            }),
            KindTag::Exit => EventKind::Exit(Exit {
                pid: need(self.pid, "exit", "pid")?,
                code: self.code,
                signal: self.signal,
            }),
            KindTag::Listen => EventKind::Listen(Listen {
                proto: need(self.proto, "listen", "proto")?,
                addr: need(self.addr, "listen", "addr")?,
                pid: self.pid,
                inode: self.inode.unwrap_or_default(),
                netns: self.netns,
            }),
            KindTag::Connect => EventKind::Connect(Connect {
                proto: need(self.proto, "connect", "proto")?,
                local: need(self.local, "connect", "local")?,
                remote: need(self.remote, "connect", "remote")?,
                pid: self.pid,
                inode: self.inode.unwrap_or_default(),
                netns: self.netns,
            }),
            KindTag::RawSocket => EventKind::RawSocket(RawSocket {
                family: need(self.family, "raw_socket", "family")?,
                protocol: need(self.protocol, "raw_socket", "protocol")?,
                pid: self.pid,
                inode: self.inode.unwrap_or_default(),
                netns: self.netns,
            }),
            KindTag::DnsQuery => EventKind::DnsQuery(DnsQuery {
                name: need(self.name, "dns_query", "name")?,
                qtype: need(self.qtype, "dns_query", "qtype")?,
                proto: need(self.proto, "dns_query", "proto")?,
                src: need(self.src, "dns_query", "src")?,
                dst: need(self.dst, "dns_query", "dst")?,
                interface: self.interface,
            }),
            KindTag::Syn => EventKind::Syn(Syn {
                src: need(self.src, "syn", "src")?,
                dst: need(self.dst, "syn", "dst")?,
                interface: self.interface,
            }),
            KindTag::Gap => EventKind::Gap(Gap {
                what: need(self.what, "gap", "what")?,
                reason: need(self.reason, "gap", "reason")?,
                lost: self.lost,
            }),
        };
        Ok(Event {
            ts: self.ts,
            source: self.source,
            kind,
            container: self.container,
            attributed_by: None,
            entered: None,
        })
    }
}

/// What happened. The JSON tag is `kind`, in snake case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A process image was executed (or found running by a `/proc` pass).
    Exec(Exec),
    /// A process ended.
    Exit(Exit),
    /// A socket is listening: a TCP socket in LISTEN, or a bound, unconnected UDP socket.
    Listen(Listen),
    /// A connection this host or container opened to a remote address.
    Connect(Connect),
    /// A raw IP socket or a packet socket is open.
    RawSocket(RawSocket),
    /// A DNS question seen on the wire.
    DnsQuery(DnsQuery),
    /// A TCP connection attempt (SYN without ACK) seen on the wire.
    Syn(Syn),
    /// Events were lost, or a source is not running: what follows is incomplete.
    Gap(Gap),
}

impl EventKind {
    /// The process the event belongs to, where the kind names one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            EventKind::Exec(e) => Some(e.pid),
            EventKind::Exit(e) => Some(e.pid),
            EventKind::Listen(s) => s.pid,
            EventKind::Connect(c) => c.pid,
            EventKind::RawSocket(r) => r.pid,
            EventKind::DnsQuery(_) | EventKind::Syn(_) | EventKind::Gap(_) => None,
        }
    }

    /// The JSON tag, for display and counting.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Exec(_) => "exec",
            EventKind::Exit(_) => "exit",
            EventKind::Listen(_) => "listen",
            EventKind::Connect(_) => "connect",
            EventKind::RawSocket(_) => "raw_socket",
            EventKind::DnsQuery(_) => "dns_query",
            EventKind::Syn(_) => "syn",
            EventKind::Gap(_) => "gap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Real uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The kernel's short name (`/proc/<pid>/comm`, at most 15 bytes); empty if the
    /// process was gone before it could be read.
    #[serde(default)]
    pub comm: String,
    /// The executable's path (`/proc/<pid>/exe`), as seen from the process's own mount
    /// namespace; absent if it could not be read (process gone, kernel thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default)]
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub pid: u32,
    /// Exit status, when the process exited normally and the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended the process, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Transport protocol of a socket or packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub proto: Proto,
    /// Local address and port; `0.0.0.0` or `::` for all addresses.
    pub addr: SocketAddr,
    /// A process holding the socket, if one was found (a socket may outlive its
    /// process briefly, or belong to the kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Socket inode: identifies the socket within the host.
    #[serde(default)]
    pub inode: u64,
    /// Network namespace inode (`/proc/<pid>/ns/net`); containers have their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
}

/// Address family of a raw socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawFamily {
    /// `AF_INET, SOCK_RAW`: builds its own IP payloads (ICMP, custom protocols).
    Inet,
    /// `AF_INET6, SOCK_RAW`.
    Inet6,
    /// `AF_PACKET`: sees or forges whole link-layer frames (sniffers, scanners).
    Packet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawSocket {
    pub family: RawFamily,
    /// IP protocol number (inet, inet6) or ethertype (packet; 3 is `ETH_P_ALL`).
    pub protocol: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsQuery {
    /// The queried name, lower case, without the trailing dot.
    pub name: String,
    /// Query type mnemonic (`A`, `AAAA`, `MX`...) or `TYPE<n>`.
    pub qtype: String,
    pub proto: Proto,
    /// Who asked: the querying socket's address and port.
    pub src: SocketAddr,
    /// The resolver asked.
    pub dst: SocketAddr,
    /// Capture interface, when captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syn {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The source that lost events or is not running (`proc_connector`, `capture`...).
    pub what: String,
    /// Why, in words an operator can act on.
    pub reason: String,
    /// How many events were lost, when the source can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

/// How an event was observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The kernel's netlink process connector, as it happened.
    Connector,
    /// A periodic `/proc` pass found what the connector missed (or stands in for it).
    ProcScan,
    /// What was already there when the agent started.
    Snapshot,
    /// `/proc/<pid>/net/*` and socket inodes.
    ProcNet,
    /// Packet capture.
    Capture,
    /// Read from a JSON-lines stream (`--events`).
    #[default]
    Input,
    /// The agent itself (gaps, source state).
    Agent,
}

/// The container an event is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// Full container id (64 hex digits for Docker, containerd, CRI-O, Podman).
    pub id: String,
    /// Container name without Docker's leading `/`, when the engine told us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image reference as the container was created with (`nginx:1.27`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The container's labels, when the engine told us (rules scope by them); a JSON
    /// object (`{"tier": "web"}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "label_map")]
    pub labels: Vec<(String, String)>,
}

/// Labels as a JSON object, kept as sorted pairs (what rule scopes iterate).
mod label_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(labels: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(labels.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// A point in time, nanoseconds since the Unix epoch; RFC 3339 in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i128);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(OffsetDateTime::now_utc().unix_timestamp_nanos())
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(self.0).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().and_then(|d| d.format(&Rfc3339).ok()) {
            Some(s) => f.write_str(&s),
            None => write!(f, "@{}ns", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        let t = OffsetDateTime::parse(&s, &Rfc3339)
            .map_err(|e| serde::de::Error::custom(format_args!("ts {s:?}: {e}")))?;
        Ok(Timestamp(t.unix_timestamp_nanos()))
    }
}

/// One line of human-readable text per event, for `defender-lite events` without `--json`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:<10} ", self.ts, self.kind.name())?;
        match &self.kind {
            EventKind::Exec(e) => {
                write!(f, "pid={} ppid=", e.pid)?;
                opt(f, e.ppid)?;
                f.write_str(" uid=")?;
                opt(f, e.uid)?;
                write!(
                    f,
                    " comm={:?} exe={} argv={:?}",
                    e.comm,
                    e.exe.as_deref().unwrap_or("?"),
                    e.argv
                )?;
            }
            EventKind::Exit(e) => {
                write!(f, "pid={}", e.pid)?;
                if let Some(c) = e.code {
                    write!(f, " code={c}")?;
                }
                if let Some(s) = e.signal {
                    write!(f, " signal={s}")?;
                }
            }
            EventKind::Listen(l) => {
                write!(f, "{} {} pid=", l.proto, l.addr)?;
                opt(f, l.pid)?;
                write!(f, " inode={}", l.inode)?;
            }
            EventKind::Connect(c) => {
                write!(f, "{} {} -> {} pid=", c.proto, c.local, c.remote)?;
                opt(f, c.pid)?;
            }
            EventKind::RawSocket(r) => {
                write!(f, "{:?} protocol={} pid=", r.family, r.protocol)?;
                opt(f, r.pid)?;
                write!(f, " inode={}", r.inode)?;
            }
            EventKind::DnsQuery(q) => {
                write!(
                    f,
                    "{} {} {} {} -> {}",
                    q.name, q.qtype, q.proto, q.src, q.dst
                )?;
            }
            EventKind::Syn(s) => write!(f, "{} -> {}", s.src, s.dst)?,
            EventKind::Gap(g) => write!(f, "{}: {}", g.what, g.reason)?,
        }
        write!(f, " [{}]", source_name(self.source))?;
        if let Some(c) = &self.container {
            write!(
                f,
                " container={}",
                c.name.as_deref().unwrap_or(short_id(&c.id))
            )?;
            if let Some(image) = &c.image {
                write!(f, " image={image}")?;
            }
        }
        Ok(())
    }
}

fn opt(f: &mut fmt::Formatter<'_>, v: Option<u32>) -> fmt::Result {
    match v {
        Some(v) => write!(f, "{v}"),
        None => f.write_str("?"),
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it. Ids come from
/// event files and Docker as text: cut at a character, never inside one.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Connector => "connector",
        Source::ProcScan => "proc_scan",
        Source::Snapshot => "snapshot",
        Source::ProcNet => "proc_net",
        Source::Capture => "capture",
        Source::Input => "input",
        Source::Agent => "agent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(line: &str) -> Event {
        let e: Event = serde_json::from_str(line).unwrap();
        let again = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&again).unwrap(), e, "{again}");
        e
    }

    #[test]
    fn exec_round_trips_with_container() {
        let e = round_trip(
            r#"{"ts":"2026-08-01T10:00:00.5Z","source":"connector","kind":"exec","pid":4242,"ppid":1,"uid":0,"comm":"nc","exe":"/usr/bin/nc","argv":["nc","-l","4444"],"container":{"id":"abc","name":"web","image":"nginx:1.27"}}"#,
        );
        assert_eq!(e.pid(), Some(4242));
        assert_eq!(e.source, Source::Connector);
        assert_eq!(e.container.unwrap().image.as_deref(), Some("nginx:1.27"));
    }

    #[test]
    fn source_defaults_to_input_and_optional_fields_may_be_left_out() {
        let e = round_trip(r#"{"ts":"2026-08-01T10:00:00Z","kind":"exit","pid":7}"#);
        assert_eq!(e.source, Source::Input);
        assert_eq!(
            e.kind,
            EventKind::Exit(Exit {
                pid: 7,
                code: None,
                signal: None
            })
        );
    }

    #[test]
    fn addresses_are_strings() {
        let e = round_trip(
            r#"{"ts":"2026-08-01T10:00:00Z","kind":"dns_query","name":"evil.example","qtype":"A","proto":"udp","src":"[::1]:5353","dst":"127.0.0.1:53"}"#,
        );
        let EventKind::DnsQuery(q) = e.kind else {
            panic!("not a dns query")
        };
        assert_eq!(q.src, "[::1]:5353".parse().unwrap());
    }

    #[test]
    fn timestamp_keeps_nanoseconds() {
        let t: Timestamp = serde_json::from_str(r#""2026-08-01T10:00:00.123456789Z""#).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#""2026-08-01T10:00:00.123456789Z""#
        );
    }
}
