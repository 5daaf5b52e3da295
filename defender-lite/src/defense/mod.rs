//! Runtime defense decisions: given what a container did, should it be allowed, and if
//! not, with what effect? The resultant policy is the container's model (learned per
//! image), plus the feed's knowledge (known-bad domains and IPs, the ports the image's
//! apps are configured for), plus the first matching rule's allow list, minus its deny
//! list:
//!
//! 1. a deny-list entry is a violation, always (learning or not);
//! 2. an allow-list entry is fine;
//! 3. a known-bad domain or IP from the feed is a violation, and is never learned;
//! 4. what the model holds (or, for listening ports, what the image's app knowledge
//!    expects) is fine;
//! 5. while the model is learning, anything else is learned and fine;
//! 6. otherwise it is a violation.
//!
//! Port scans (many distinct ports or hosts within a window) and raw sockets are
//! violations whenever their area is enabled. An area whose effect is `disable` is not
//! checked. This module only decides; acting (kill, block) and auditing are the
//! runner's, so the decision path stays allocation-light and fast.

pub mod actions;
pub mod app_ports;
pub mod audit;
pub mod model;
pub mod portscan;
pub mod rules;
pub mod runner;
pub mod store;
pub mod webhook;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::feeds::{DomainSet, IpSet};
use model::{List, Model, ModelError, ModelStore, Origin};
use portscan::{PortScanDetector, ScanFinding};
use rules::{PortRange, Rules, Subject};

/// What a rule does about a violation, in increasing force.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Not checked.
    Disable,
    /// Audited.
    #[default]
    Alert,
    /// Audited, and the process is killed.
    Prevent,
    /// Audited, and the container is stopped and kept stopped.
    Block,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Disable => "disable",
            Effect::Alert => "alert",
            Effect::Prevent => "prevent",
            Effect::Block => "block",
        }
    }
}

/// The areas a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Processes,
    ListeningPorts,
    OutboundPorts,
    OutboundIps,
    Dns,
    PortScan,
    RawSockets,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Processes => "processes",
            Area::ListeningPorts => "listening_ports",
            Area::OutboundPorts => "outbound_ports",
            Area::OutboundIps => "outbound_ips",
            Area::Dns => "dns",
            Area::PortScan => "port_scan",
            Area::RawSockets => "raw_sockets",
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What happened, in the terms the policy speaks.
#[derive(Debug, Clone, Copy)]
pub enum What<'a> {
    Process { exe: &'a str },
    Listen { proto: Proto, port: u16 },
    Outbound { proto: Proto, ip: IpAddr, port: u16 },
    Dns { name: &'a str },
    Syn { src: IpAddr, dst: IpAddr, port: u16 },
    RawSocket { description: &'a str },
}

/// One thing a container (or the host) did.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// Unix time, nanoseconds.
    pub ts: i128,
    pub subject: Subject<'a>,
    pub pid: Option<u32>,
    pub what: What<'a>,
    pub evidence: Evidence,
}

/// What ties an observation to its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A process the kernel named, placed by its cgroup: nobody else can claim it.
    Process,
    /// A captured packet, placed by its source address, which a neighbour with NET_RAW
    /// can forge. Judged by the rules and the feed; never learned into a model (a
    /// neighbour could teach a victim's model its own destinations), nor judged by one.
    Packet,
    /// A captured packet that came in on the container's own veth, so was sent from its
    /// network namespace: the kernel's word. Learned and judged like a process's.
    Namespace,
}

/// Entries a model may hold, all lists together, unless configured otherwise.
pub const DEFAULT_MODEL_CAP: usize = 10_000;

/// A violation and what the rule says to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub area: Area,
    pub effect: Effect,
    pub rule: String,
    /// What was seen and why it is a violation, in words.
    pub reason: String,
    pub pid: Option<u32>,
}

/// The feed's knowledge the engine uses.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    pub domains: DomainSet,
    pub ips: IpSet,
    /// Per image: the ports its apps' configuration says they listen on (`apps`).
    pub app_ports: HashMap<String, Vec<PortRange>>,
}

/// Decides, per observation.
pub struct Engine {
    rules: Rules,
    knowledge: Knowledge,
    models: HashMap<String, Model>,
    store: Option<ModelStore>,
    learning_secs: i64,
    scans: PortScanDetector,
    /// Entries a model may hold; a model that reaches it learns nothing more, and says
    /// so once (per run).
    model_cap: usize,
    full: std::collections::HashSet<String>,
}

/// The model key of a subject: its image, or `host`.
pub fn model_key<'a>(subject: &Subject<'a>) -> &'a str {
    subject.image.unwrap_or("host")
}

impl Engine {
    /// `store`: where models persist (their current contents are loaded now).
    pub fn new(
        rules: Rules,
        knowledge: Knowledge,
        store: Option<ModelStore>,
        learning_secs: i64,
        scans: PortScanDetector,
    ) -> Result<Engine, ModelError> {
        let mut models = HashMap::new();
        if let Some(store) = &store {
            for m in store.all()? {
                models.insert(m.image.clone(), m);
            }
        }
        Ok(Engine {
            rules,
            knowledge,
            models,
            store,
            learning_secs,
            scans,
            model_cap: DEFAULT_MODEL_CAP,
            full: std::collections::HashSet::new(),
        })
    }

    /// At most `cap` entries per model (all lists together).
    pub fn with_model_cap(mut self, cap: usize) -> Engine {
        self.model_cap = cap;
        self
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// The verdict on one observation: `None` when it is fine (or learned).
    pub fn evaluate(&mut self, obs: &Observation<'_>) -> Result<Option<Verdict>, ModelError> {
        let (rule_index, rule) = self.rules.for_subject(&obs.subject);
        let now = i64::try_from(obs.ts / 1_000_000_000).unwrap_or(i64::MAX);
        let verdict = |area: Area, effect: Effect, reason: String| {
            Some(Verdict {
                area,
                effect,
                rule: rule.name.clone(),
                reason,
                pid: obs.pid,
            })
        };
        // What to check in the model, after the lists and the feed. The key is built
        // without allocating and the reason's words only for a verdict: most events
        // are fine, and this runs for every one.
        let (area, effect, list, key) = match obs.what {
            What::Process { exe } => {
                let a = &rule.processes;
                if a.effect == Effect::Disable || a.allow.iter().any(|p| p.matches(exe)) {
                    return Ok(None);
                }
                if a.deny.iter().any(|p| p.matches(exe)) {
                    return Ok(verdict(
                        Area::Processes,
                        a.effect,
                        format!("process {exe} is denied by rule"),
                    ));
                }
                (
                    Area::Processes,
                    a.effect,
                    List::Processes,
                    Key::Text(Cow::Borrowed(exe)),
                )
            }
            What::Listen { proto, port } => {
                let a = &rule.listening_ports;
                if a.effect == Effect::Disable || a.allow.iter().any(|p| p.matches(proto, port)) {
                    return Ok(None);
                }
                if a.deny.iter().any(|p| p.matches(proto, port)) {
                    return Ok(verdict(
                        Area::ListeningPorts,
                        a.effect,
                        format!("listening on {port}/{} is denied by rule", proto.as_str()),
                    ));
                }
                if let Some(image) = obs.subject.image
                    && self
                        .knowledge
                        .app_ports
                        .get(image)
                        .is_some_and(|ports| ports.iter().any(|p| p.matches(proto, port)))
                {
                    return Ok(None);
                }
                (
                    Area::ListeningPorts,
                    a.effect,
                    List::Listening,
                    Key::port(proto, port),
                )
            }
            What::Outbound { proto, ip, port } => {
                let ips = &rule.outbound_ips;
                if ips.effect != Effect::Disable && !ips.allow.iter().any(|n| n.contains(&ip)) {
                    if ips.deny.iter().any(|n| n.contains(&ip)) {
                        return Ok(verdict(
                            Area::OutboundIps,
                            ips.effect,
                            format!("connection to {ip} is denied by rule"),
                        ));
                    }
                    if self.knowledge.ips.contains(ip) {
                        return Ok(verdict(
                            Area::OutboundIps,
                            ips.effect,
                            format!(
                                "connection to {ip}, a known-bad address in the intelligence feed"
                            ),
                        ));
                    }
                }
                let a = &rule.outbound_ports;
                if a.effect == Effect::Disable || a.allow.iter().any(|p| p.matches(proto, port)) {
                    return Ok(None);
                }
                if a.deny.iter().any(|p| p.matches(proto, port)) {
                    return Ok(verdict(
                        Area::OutboundPorts,
                        a.effect,
                        format!(
                            "outbound to port {port}/{} is denied by rule",
                            proto.as_str()
                        ),
                    ));
                }
                (
                    Area::OutboundPorts,
                    a.effect,
                    List::OutboundPorts,
                    Key::port(proto, port),
                )
            }
            What::Dns { name } => {
                let a = &rule.dns;
                if a.effect == Effect::Disable || a.allow.matches(name) {
                    return Ok(None);
                }
                if a.deny.matches(name) {
                    return Ok(verdict(
                        Area::Dns,
                        a.effect,
                        format!("DNS query for {name} is denied by rule"),
                    ));
                }
                if let Some(listed) = self.knowledge.domains.matches(name) {
                    return Ok(verdict(
                        Area::Dns,
                        a.effect,
                        format!(
                            "DNS query for {name}: {listed} is a known-bad domain in the intelligence feed"
                        ),
                    ));
                }
                (Area::Dns, a.effect, List::Dns, Key::dns(name))
            }
            What::Syn { src, dst, port } => {
                if rule.port_scan == Effect::Disable {
                    return Ok(None);
                }
                return Ok(match self.scans.observe(obs.ts, src, dst, port) {
                    Some(ScanFinding {
                        ports,
                        hosts,
                        window,
                    }) => verdict(
                        Area::PortScan,
                        rule.port_scan,
                        format!(
                            "port scan from {src}: {ports} distinct ports on {hosts} host(s) within {} ms",
                            window.as_millis()
                        ),
                    ),
                    None => None,
                });
            }
            What::RawSocket { description } => {
                return Ok(match rule.raw_sockets {
                    Effect::Disable => None,
                    effect => verdict(
                        Area::RawSockets,
                        effect,
                        format!("raw socket opened ({description})"),
                    ),
                });
            }
        };
        if effect == Effect::Disable || obs.evidence == Evidence::Packet {
            return Ok(None);
        }
        // The subject's model: created (learning) for an image seen for the first time,
        // made active once its period has passed.
        let model = model_key(&obs.subject);
        let created = !self.models.contains_key(model);
        if created {
            let m = Model::new(model, now, self.learning_secs);
            self.models.insert(model.to_owned(), m);
        }
        let Some(m) = self.models.get_mut(model) else {
            return Ok(None);
        };
        if (m.tick(now) || created)
            && let Some(store) = &self.store
        {
            store.save_header(m)?;
        }
        let key = key.as_str();
        if m.learning(now) {
            // Outbound destinations are learned for the operator to see; ports decide.
            let ip = match obs.what {
                What::Outbound { ip, .. } => Some(
                    StackText::<48>::format(format_args!("{ip}"))
                        .expect("an address is at most 45 bytes of text"),
                ),
                _ => None,
            };
            let wanted = [
                ip.as_ref().map(|ip| (List::OutboundIps, ip.as_str())),
                Some((list, key)),
            ];
            for (list, value) in wanted.into_iter().flatten() {
                if m.holds(list, value) {
                    continue;
                }
                if m.len() >= self.model_cap {
                    // Full: nothing more is learned, and the operator hears of it once.
                    if self.full.insert(m.image.clone()) {
                        return Ok(Some(Verdict {
                            area,
                            effect: Effect::Alert,
                            rule: self.rules.get(rule_index).name.clone(),
                            reason: format!(
                                "the model of {} is full ({} entries, monitor.model_max_entries): \
                                 {} was not learned, nor will anything else be; promote the \
                                 model or raise the cap",
                                m.image,
                                self.model_cap,
                                describe(&obs.what)
                            ),
                            pid: obs.pid,
                        }));
                    }
                    return Ok(None);
                }
                m.add(list, value, Origin::Learned);
                if let Some(store) = &self.store {
                    store.save_entry(&m.image, list, value, Origin::Learned)?;
                }
            }
            return Ok(None);
        }
        if m.holds(list, key) {
            return Ok(None);
        }
        let reason = format!("{} is not in the model of {}", describe(&obs.what), m.image);
        Ok(Some(Verdict {
            area,
            effect,
            rule: self.rules.get(rule_index).name.clone(),
            reason,
            pid: obs.pid,
        }))
    }

    /// The ports `image`'s apps are configured for (read once per image by the runner).
    pub fn set_app_ports(&mut self, image: &str, ports: Vec<PortRange>) {
        self.knowledge.app_ports.insert(image.to_owned(), ports);
    }

    /// Ends learning for `image` now (`model promote`); false if there is no such model.
    pub fn promote(&mut self, image: &str) -> Result<bool, ModelError> {
        let Some(m) = self.models.get_mut(image) else {
            return Ok(false);
        };
        m.state = model::ModelState::Active;
        if let Some(store) = &self.store {
            store.save_header(m)?;
        }
        Ok(true)
    }
}

/// A model key, as the model's lists hold it.
enum Key<'a> {
    /// An executable path; a DNS name, lower case, without the trailing dot.
    Text(Cow<'a, str>),
    /// `tcp/443`.
    Port(StackText<9>),
}

impl<'a> Key<'a> {
    fn port(proto: Proto, port: u16) -> Key<'a> {
        Key::Port(
            StackText::format(format_args!("{}/{port}", proto.as_str()))
                .expect("udp/65535 is 9 bytes"),
        )
    }

    /// Borrowed when the name is already normalized, as names from capture are.
    fn dns(name: &'a str) -> Key<'a> {
        let name = name.trim_end_matches('.');
        Key::Text(if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        })
    }

    fn as_str(&self) -> &str {
        match self {
            Key::Text(t) => t,
            Key::Port(p) => p.as_str(),
        }
    }
}

/// Short text formatted into a fixed buffer, so looking a key up costs no allocation.
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    /// `None` if the text is longer than `N` bytes.
    fn format(args: fmt::Arguments<'_>) -> Option<StackText<N>> {
        let mut text = StackText {
            buf: [0; N],
            len: 0,
        };
        fmt::write(&mut text, args).ok()?;
        Some(text)
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this is always UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// What was seen, in the words of a verdict's reason.
fn describe(what: &What<'_>) -> String {
    match *what {
        What::Process { exe } => format!("process {exe}"),
        What::Listen { proto, port } => format!("listening on {port}/{}", proto.as_str()),
        What::Outbound { proto, ip, port } => {
            format!("outbound connection to {ip} port {port}/{}", proto.as_str())
        }
        What::Dns { name } => format!("DNS query for {name}"),
        What::Syn { src, dst, port } => format!("SYN from {src} to {dst} port {port}"),
        What::RawSocket { description } => format!("raw socket ({description})"),
    }
}

#[cfg(test)]
mod tests;

/// The policy's view of a runtime event; `None` for events it does not judge (exits,
/// gaps).
pub fn observe(event: &crate::monitor::event::Event) -> Option<Observation<'_>> {
    use crate::monitor::event::{AttributedBy, EventKind, Proto as P, RawFamily};
    let proto = |p: P| match p {
        P::Tcp => Proto::Tcp,
        P::Udp => Proto::Udp,
    };
    let (pid, what) = match &event.kind {
        EventKind::Exec(e) => (
            Some(e.pid),
            What::Process {
                exe: e.exe.as_deref().unwrap_or(e.comm.as_str()),
            },
        ),
        EventKind::Listen(l) => (
            l.pid,
            What::Listen {
                proto: proto(l.proto),
                port: l.addr.port(),
            },
        ),
        EventKind::Connect(c) => (
            c.pid,
            What::Outbound {
                proto: proto(c.proto),
                ip: c.remote.ip().to_canonical(),
                port: c.remote.port(),
            },
        ),
        EventKind::RawSocket(r) => (
            r.pid,
            What::RawSocket {
                description: match r.family {
                    RawFamily::Inet => "AF_INET raw socket",
                    RawFamily::Inet6 => "AF_INET6 raw socket",
                    RawFamily::Packet => "AF_PACKET socket",
                },
            },
        ),
        EventKind::DnsQuery(q) => (None, What::Dns { name: &q.name }),
        EventKind::Syn(s) => (
            None,
            What::Syn {
                src: s.src.ip().to_canonical(),
                dst: s.dst.ip().to_canonical(),
                port: s.dst.port(),
            },
        ),
        EventKind::Exit(_) | EventKind::Gap(_) => return None,
    };
    let container = event.container.as_deref();
    let evidence = match event.kind {
        EventKind::DnsQuery(_) | EventKind::Syn(_)
            if event.attributed_by == Some(AttributedBy::Namespace) =>
        {
            Evidence::Namespace
        }
        EventKind::DnsQuery(_) | EventKind::Syn(_) => Evidence::Packet,
        _ => Evidence::Process,
    };
    Some(Observation {
        ts: event.ts.0,
        subject: Subject {
            container: container.map(|c| c.name.as_deref().unwrap_or(c.id.as_str())),
            image: container.and_then(|c| c.image.as_deref()),
            labels: container.map_or(&[][..], |c| c.labels.as_slice()),
        },
        pid,
        what,
        evidence,
    })
}
