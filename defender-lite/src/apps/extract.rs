//! Reading a config source: its files (and includes), and the extractors that take port
//! settings out of them per format, with their defaults.

use std::collections::BTreeMap;

use relay::bundle::{ConfigSource, PortProtocol};

use super::files::{Entry, Reader};
use super::report::{Evidence, Port, Status};
use super::value::PortValue;
use super::{Role, apache, ini, keyword, nginx, value, xml, yaml};

pub(super) fn source_paths(source: &ConfigSource) -> Vec<&str> {
    let paths = match source {
        ConfigSource::Keyword(d) | ConfigSource::Nginx(d) | ConfigSource::Apache(d) => &d.paths,
        ConfigSource::Ini(i) => &i.paths,
        ConfigSource::Yaml(y) => &y.paths,
        ConfigSource::Xml(x) => &x.paths,
    };
    paths.iter().map(|p| p.as_str()).collect()
}

pub(super) fn read_source(
    reader: &mut Reader<'_>,
    source: &ConfigSource,
    root: &str,
) -> Vec<Entry> {
    // The feed's include directive names, as strings (its `Word` type is not exported).
    macro_rules! words {
        ($names:expr) => {
            $names
                .iter()
                .map(|w| w.as_str().to_owned())
                .collect::<Vec<String>>()
        };
    }
    match source {
        ConfigSource::Keyword(d) => keyword::read(reader, root, &words!(d.includes)),
        ConfigSource::Ini(i) => ini::read(reader, root, &words!(i.includes)),
        ConfigSource::Yaml(_) => yaml::read(reader, root),
        ConfigSource::Xml(_) => xml::read(reader, root),
        ConfigSource::Nginx(d) => nginx::read(reader, root, &words!(d.includes)),
        ConfigSource::Apache(d) => apache::read(reader, root, &words!(d.includes)),
    }
}

/// How one extractor of the feed picks its entries and reads them.
pub(super) struct Extractor<'s> {
    pub(super) matches: Box<dyn Fn(&Entry) -> bool + 's>,
    pub(super) default: Option<u16>,
    pub(super) protocol: PortProtocol,
    pub(super) label: Option<String>,
    /// The key holds one value: the last one read wins.
    pub(super) single: bool,
    /// An address without a port means the default port (nginx `listen 127.0.0.1;`).
    pub(super) address_takes_default: bool,
    /// `udp`/`quic` among the arguments means UDP (nginx).
    pub(super) udp_flags: bool,
    /// The first argument may list several addresses (haproxy `bind :80,:443`).
    pub(super) commas: bool,
}

pub(super) fn extractors(source: &ConfigSource) -> Vec<Extractor<'_>> {
    match source {
        ConfigSource::Keyword(d) => d
            .ports
            .iter()
            .map(|p| Extractor {
                single: p.default.is_some(),
                commas: true,
                ..base(
                    Box::new(move |e: &Entry| e.key.eq_ignore_ascii_case(p.key.as_str())),
                    p.default,
                    p.protocol,
                    p.label.as_ref().map(|t| t.as_str().to_owned()),
                )
            })
            .collect(),
        ConfigSource::Nginx(d) => d
            .ports
            .iter()
            .map(|p| Extractor {
                address_takes_default: true,
                udp_flags: true,
                ..base(
                    Box::new(move |e: &Entry| e.key == p.key.as_str()),
                    p.default,
                    p.protocol,
                    p.label.as_ref().map(|t| t.as_str().to_owned()),
                )
            })
            .collect(),
        ConfigSource::Apache(d) => d
            .ports
            .iter()
            .map(|p| {
                base(
                    Box::new(move |e: &Entry| e.key.eq_ignore_ascii_case(p.key.as_str())),
                    p.default,
                    p.protocol,
                    p.label.as_ref().map(|t| t.as_str().to_owned()),
                )
            })
            .collect(),
        ConfigSource::Yaml(y) => y
            .ports
            .iter()
            .map(|p| Extractor {
                single: true,
                ..base(
                    Box::new(move |e: &Entry| e.key == p.key.as_str()),
                    p.default,
                    p.protocol,
                    p.label.as_ref().map(|t| t.as_str().to_owned()),
                )
            })
            .collect(),
        ConfigSource::Ini(i) => i
            .ports
            .iter()
            .map(|p| Extractor {
                single: true,
                ..base(
                    Box::new(move |e: &Entry| {
                        let section_ok = if p.sections.is_empty() {
                            e.section.is_none()
                        } else {
                            e.section
                                .as_deref()
                                .is_some_and(|s| p.sections.iter().any(|w| w.as_str() == s))
                        };
                        section_ok && key_matches(p.key.as_str(), &e.key)
                    }),
                    p.default,
                    p.protocol,
                    p.label.as_ref().map(|t| t.as_str().to_owned()),
                )
            })
            .collect(),
        ConfigSource::Xml(x) => x
            .ports
            .iter()
            .map(|p| {
                let key = format!("{}@{}", p.element.as_str(), p.attribute.as_str());
                base(
                    Box::new(move |e: &Entry| e.key == key),
                    p.default,
                    p.protocol,
                    p.label.as_ref().map(|t| t.as_str().to_owned()),
                )
            })
            .collect(),
    }
}

pub(super) fn base<'s>(
    matches: Box<dyn Fn(&Entry) -> bool + 's>,
    default: Option<std::num::NonZeroU16>,
    protocol: PortProtocol,
    label: Option<String>,
) -> Extractor<'s> {
    Extractor {
        matches,
        default: default.map(|d| d.get()),
        protocol,
        label,
        single: false,
        address_takes_default: false,
        udp_flags: false,
        commas: false,
    }
}

/// An INI key pattern: `*` stands for one dotted segment (`listeners.tcp.*`).
pub(super) fn key_matches(pattern: &str, key: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == key;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| *p == "*" || p == k)
}

impl Extractor<'_> {
    pub(super) fn apply(
        &self,
        entries: &[Entry],
        roles: &mut BTreeMap<Option<String>, Role>,
        notes: &mut Vec<String>,
    ) {
        let hits: Vec<&Entry> = entries
            .iter()
            .filter(|e| !e.commented && (self.matches)(e))
            .collect();
        let role = roles.entry(self.label.clone()).or_default();
        if hits.is_empty() {
            if let Some(default) = self.default {
                let commented = entries
                    .iter()
                    .find(|e| e.commented && (self.matches)(e))
                    .map(|e| e.at.to_string());
                role.defaults.push((default, self.protocol, commented));
            }
            return;
        }
        role.configured = true;
        for (i, entry) in hits.iter().enumerate() {
            let later = if self.single {
                hits[i + 1..].iter().rev().find(|l| l.key == entry.key)
            } else {
                None
            };
            let Some(raw) = entry.args.first() else {
                notes.push(format!("{}: {} without a value", entry.at, entry.key));
                continue;
            };
            let protocol =
                if self.udp_flags && entry.args[1..].iter().any(|a| a == "udp" || a == "quic") {
                    PortProtocol::Udp
                } else {
                    self.protocol
                };
            let values: Vec<&str> = if self.commas {
                raw.split(',').collect()
            } else {
                vec![raw.as_str()]
            };
            for text in values {
                let parsed = value::parse(text);
                let (port, address, status) = match parsed {
                    PortValue::Port { port, address } => (Some(port), address, Status::Listens),
                    PortValue::AddressOnly { address } if self.address_takes_default => {
                        match self.default {
                            Some(d) => (Some(d), Some(address), Status::Listens),
                            None => {
                                notes.push(format!(
                                    "{}: {} {text}: an address without a port",
                                    entry.at, entry.key
                                ));
                                continue;
                            }
                        }
                    }
                    PortValue::Template => (None, None, Status::Unresolved),
                    other => {
                        notes.push(format!(
                            "{}: {} {text}: {}",
                            entry.at,
                            entry.key,
                            describe(&other)
                        ));
                        continue;
                    }
                };
                let status = match (later, status) {
                    (Some(_), _) => Status::Overridden,
                    (None, Status::Listens) if !entry.conditions.is_empty() => Status::Conditional,
                    (None, s) => s,
                };
                let mut p = port_entry(
                    port,
                    address,
                    protocol,
                    self.label.clone(),
                    status,
                    Evidence::File {
                        path: entry.at.path.clone(),
                        line: entry.at.line,
                    },
                );
                p.condition = join_blocks(&entry.conditions);
                p.context = join_blocks(&entry.context);
                if port.is_none() {
                    p.value = Some(text.to_owned());
                }
                p.overridden_by = later.map(|l| l.at.to_string());
                role.config.push(p);
            }
        }
    }
}

pub(super) fn port_entry(
    port: Option<u16>,
    address: Option<String>,
    protocol: PortProtocol,
    label: Option<String>,
    status: Status,
    evidence: Evidence,
) -> Port {
    Port {
        port,
        protocol,
        address,
        label,
        status,
        evidence,
        condition: None,
        context: None,
        value: None,
        overridden_by: None,
        exposed: false,
    }
}

pub(super) fn join_blocks(blocks: &[String]) -> Option<String> {
    (!blocks.is_empty()).then(|| blocks.join(" > "))
}

pub(super) fn describe(value: &PortValue) -> String {
    match value {
        PortValue::Port { port, .. } => format!("port {port}"),
        PortValue::AddressOnly { address } => format!("{address} is an address without a port"),
        PortValue::Template => "a template".into(),
        PortValue::Disabled => "switched off: no TCP listener".into(),
        PortValue::NotAPort(why) => why.clone(),
    }
}
