//! Runtime rules: a TOML file of ordered rules, the first whose scope matches a container
//! decides. Each rule gives, per area, an effect and explicit allow and deny lists:
//!
//! ```toml
//! [[rules]]
//! name = "web tier"
//! scope = { images = ["nginx:*", "httpd:*"], containers = ["web-*"], labels = ["tier=web"] }
//! processes       = { effect = "prevent", allow = ["/usr/sbin/nginx"], deny = ["nc", "*/ncat"] }
//! listening_ports = { effect = "alert", allow = ["8080/tcp", "9000-9100"] }
//! outbound_ports  = { effect = "alert", deny = ["6667/tcp"] }
//! outbound_ips    = { effect = "block", deny = ["203.0.113.0/24"] }
//! dns             = { effect = "alert", allow = ["internal.example"], deny = ["*.pastebin.example"] }
//! port_scan       = { effect = "block" }
//! raw_sockets     = { effect = "alert" }
//! ```
//!
//! Scope lists are globs (`*`, `?`, `[..]`); an empty list matches anything, and all the
//! lists given must match. `labels` entries are `key=value-glob` (or `key` alone).
//! Effects, in increasing force: `disable` (the area is not checked), `alert` (audit),
//! `prevent` (audit and kill the process), `block` (audit, and stop the container and
//! keep it stopped). An area not written takes `alert` with empty lists.
//!
//! List entries per area:
//! - processes: a path glob (`/usr/bin/*`) or, without a `/`, a basename glob (`nc*`);
//! - ports: `PORT`, `PORT/PROTO` or `LOW-HIGH[/PROTO]` (proto `tcp` or `udp`, both if absent);
//! - ips: addresses or CIDR ranges;
//! - dns: a name, which also covers its subdomains, or a glob (`*.example`).
//!
//! When no rule matches, [`default_rule`] applies: "alert on suspicious runtime
//! behaviour", every area `alert`, nothing allowed or denied.

use std::net::IpAddr;
use std::path::Path;

use glob::Pattern;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Area, Effect, Proto};
use crate::feeds::DomainSet;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("rule {rule:?}: {area}: {message}")]
    Entry {
        rule: String,
        area: &'static str,
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub scope: ScopeSpec,
    #[serde(default)]
    pub processes: AreaSpec,
    #[serde(default)]
    pub listening_ports: AreaSpec,
    #[serde(default)]
    pub outbound_ports: AreaSpec,
    #[serde(default)]
    pub outbound_ips: AreaSpec,
    #[serde(default)]
    pub dns: AreaSpec,
    #[serde(default)]
    pub port_scan: AreaSpec,
    #[serde(default)]
    pub raw_sockets: AreaSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub containers: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AreaSpec {
    #[serde(default)]
    pub effect: Effect,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Who an event belongs to, as scopes see it.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub container: Option<&'a str>,
    pub image: Option<&'a str>,
    pub labels: &'a [(String, String)],
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    scope: Scope,
    pub processes: AreaRule<Vec<ProcessPattern>>,
    pub listening_ports: AreaRule<Vec<PortRange>>,
    pub outbound_ports: AreaRule<Vec<PortRange>>,
    pub outbound_ips: AreaRule<Vec<IpNet>>,
    pub dns: AreaRule<DnsList>,
    pub port_scan: Effect,
    pub raw_sockets: Effect,
}

/// An area's effect and lists, compiled.
#[derive(Debug, Clone, Default)]
pub struct AreaRule<L> {
    pub effect: Effect,
    pub allow: L,
    pub deny: L,
}

#[derive(Debug, Clone, Default)]
struct Scope {
    images: Vec<Glob>,
    containers: Vec<Glob>,
    labels: Vec<(Glob, Option<Glob>)>,
}

impl Scope {
    fn matches(&self, s: &Subject<'_>) -> bool {
        let any = |pats: &[Glob], v: Option<&str>| {
            pats.is_empty() || v.is_some_and(|v| pats.iter().any(|p| p.matches(v)))
        };
        any(&self.images, s.image)
            && any(&self.containers, s.container)
            && self.labels.iter().all(|(k, v)| {
                s.labels
                    .iter()
                    .any(|(lk, lv)| k.matches(lk) && v.as_ref().is_none_or(|v| v.matches(lv)))
            })
    }
}

/// A compiled glob. Scopes are checked on every event, so the shapes rules are
/// mostly written in (`nginx:*`, `*.example`, a plain name) are matched as what they
/// are; anything else goes to `glob::Pattern`. Either way the meaning is
/// `Pattern::matches` with default options (`*` also matches `/`, case-sensitive).
#[derive(Debug, Clone)]
pub enum Glob {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Pattern(Pattern),
}

impl Glob {
    pub fn new(text: &str) -> Result<Glob, glob::PatternError> {
        // Compiled first so that what `Pattern` refuses is refused here too.
        let pattern = Pattern::new(text)?;
        let special = |s: &str| s.contains(['*', '?', '[', ']']);
        Ok(if !special(text) {
            Glob::Exact(text.into())
        } else if let Some(prefix) = text.strip_suffix('*')
            && !special(prefix)
        {
            Glob::Prefix(prefix.into())
        } else if let Some(suffix) = text.strip_prefix('*')
            && !special(suffix)
        {
            Glob::Suffix(suffix.into())
        } else {
            Glob::Pattern(pattern)
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Exact(e) => s == &**e,
            Glob::Prefix(p) => s.starts_with(&**p),
            Glob::Suffix(x) => s.ends_with(&**x),
            Glob::Pattern(p) => p.matches(s),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ProcessPattern {
    Path(Glob),
    Basename(Glob),
}

impl ProcessPattern {
    pub fn matches(&self, exe: &str) -> bool {
        match self {
            ProcessPattern::Path(p) => p.matches(exe),
            ProcessPattern::Basename(p) => p.matches(exe.rsplit('/').next().unwrap_or(exe)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
    /// `None`: both.
    pub proto: Option<Proto>,
}

impl PortRange {
    pub fn matches(&self, proto: Proto, port: u16) -> bool {
        (self.low..=self.high).contains(&port) && self.proto.is_none_or(|p| p == proto)
    }

    pub fn parse(text: &str) -> Result<PortRange, String> {
        let (ports, proto) = match text.split_once('/') {
            Some((p, "tcp")) => (p, Some(Proto::Tcp)),
            Some((p, "udp")) => (p, Some(Proto::Udp)),
            Some((_, other)) => {
                return Err(format!("{text:?}: protocol {other:?} is not tcp or udp"));
            }
            None => (text, None),
        };
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text:?}: {s:?} is not a port (1-65535)"))
        };
        let (low, high) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if low > high {
            return Err(format!("{text:?}: range runs backwards"));
        }
        Ok(PortRange { low, high, proto })
    }
}

/// DNS allow or deny entries: names (with their subdomains) and globs.
#[derive(Debug, Clone, Default)]
pub struct DnsList {
    names: DomainSet,
    globs: Vec<Glob>,
}

impl DnsList {
    pub fn matches(&self, name: &str) -> bool {
        self.names.matches(name).is_some() || self.globs.iter().any(|g| g.matches(name))
    }
}

fn glob(rule: &str, area: &'static str, text: &str) -> Result<Glob, RulesError> {
    Glob::new(text).map_err(|e| RulesError::Entry {
        rule: rule.to_owned(),
        area,
        message: format!("{text:?}: {e}"),
    })
}

fn compile_list<T>(
    rule: &str,
    area: &'static str,
    items: &[String],
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, RulesError> {
    items
        .iter()
        .map(|i| {
            f(i.trim()).map_err(|message| RulesError::Entry {
                rule: rule.to_owned(),
                area,
                message,
            })
        })
        .collect()
}

fn process_pattern(text: &str) -> Result<ProcessPattern, String> {
    let p = Glob::new(text).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(if text.contains('/') {
        ProcessPattern::Path(p)
    } else {
        ProcessPattern::Basename(p)
    })
}

fn ip_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR range"))
}

fn dns_list(rule: &str, items: &[String]) -> Result<DnsList, RulesError> {
    let mut globs = Vec::new();
    let mut names = Vec::new();
    for item in items {
        if item.contains(['*', '?', '[']) {
            globs.push(glob(rule, Area::Dns.as_str(), &item.to_ascii_lowercase())?);
        } else {
            names.push(item.as_str());
        }
    }
    Ok(DnsList {
        names: DomainSet::from_names(names),
        globs,
    })
}

impl RuleSpec {
    pub fn compile(&self) -> Result<Rule, RulesError> {
        let n = self.name.as_str();
        let ports = |a: &AreaSpec, area: Area| -> Result<AreaRule<Vec<PortRange>>, RulesError> {
            Ok(AreaRule {
                effect: a.effect,
                allow: compile_list(n, area.as_str(), &a.allow, PortRange::parse)?,
                deny: compile_list(n, area.as_str(), &a.deny, PortRange::parse)?,
            })
        };
        let no_lists = |a: &AreaSpec, area: Area| -> Result<Effect, RulesError> {
            if a.allow.is_empty() && a.deny.is_empty() {
                Ok(a.effect)
            } else {
                Err(RulesError::Entry {
                    rule: n.to_owned(),
                    area: area.as_str(),
                    message: "takes only an effect (no allow or deny lists)".into(),
                })
            }
        };
        let mut labels = Vec::new();
        for l in &self.scope.labels {
            let (k, v) = match l.split_once('=') {
                Some((k, v)) => (k, Some(glob(n, "scope", v)?)),
                None => (l.as_str(), None),
            };
            labels.push((glob(n, "scope", k)?, v));
        }
        Ok(Rule {
            name: self.name.clone(),
            scope: Scope {
                images: compile_list(n, "scope", &self.scope.images, |s| {
                    Glob::new(s).map_err(|e| format!("{s:?}: {e}"))
                })?,
                containers: compile_list(n, "scope", &self.scope.containers, |s| {
                    Glob::new(s).map_err(|e| format!("{s:?}: {e}"))
                })?,
                labels,
            },
            processes: AreaRule {
                effect: self.processes.effect,
                allow: compile_list(n, "processes", &self.processes.allow, process_pattern)?,
                deny: compile_list(n, "processes", &self.processes.deny, process_pattern)?,
            },
            listening_ports: ports(&self.listening_ports, Area::ListeningPorts)?,
            outbound_ports: ports(&self.outbound_ports, Area::OutboundPorts)?,
            outbound_ips: AreaRule {
                effect: self.outbound_ips.effect,
                allow: compile_list(n, "outbound_ips", &self.outbound_ips.allow, ip_net)?,
                deny: compile_list(n, "outbound_ips", &self.outbound_ips.deny, ip_net)?,
            },
            dns: AreaRule {
                effect: self.dns.effect,
                allow: dns_list(n, &self.dns.allow)?,
                deny: dns_list(n, &self.dns.deny)?,
            },
            port_scan: no_lists(&self.port_scan, Area::PortScan)?,
            raw_sockets: no_lists(&self.raw_sockets, Area::RawSockets)?,
        })
    }
}

/// "Default - alert on suspicious runtime behaviour": every area alerts, nothing is
/// allowed or denied beyond the model and the feed.
pub fn default_rule() -> Rule {
    RuleSpec {
        name: "Default - alert on suspicious runtime behavior".into(),
        ..RuleSpec::default()
    }
    .compile()
    .unwrap_or_else(|_| unreachable!("the default rule has no entries to fail"))
}

/// Ordered rules; the default rule last.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            rules: vec![default_rule()],
        }
    }
}

impl Rules {
    pub fn parse(text: &str, path: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut rules = Vec::with_capacity(file.rules.len() + 1);
        for spec in &file.rules {
            if spec.name.trim().is_empty() {
                return Err(RulesError::Parse {
                    path: path.to_owned(),
                    message: format!("rule {} has no name", rules.len() + 1),
                });
            }
            rules.push(spec.compile()?);
        }
        rules.push(default_rule());
        Ok(Rules { rules })
    }

    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The first rule whose scope matches (the default rule if none does), and its index.
    pub fn for_subject(&self, subject: &Subject<'_>) -> (usize, &Rule) {
        let i = self
            .rules
            .iter()
            .position(|r| r.scope.matches(subject))
            .unwrap_or(self.rules.len() - 1);
        (i, &self.rules[i])
    }

    pub fn get(&self, index: usize) -> &Rule {
        &self.rules[index.min(self.rules.len() - 1)]
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[rules]]
name = "web"
scope = { images = ["nginx:*"], labels = ["tier=web*"] }
processes = { effect = "prevent", allow = ["/usr/sbin/nginx"], deny = ["nc*", "/tmp/*"] }
listening_ports = { allow = ["8080/tcp", "9000-9100"] }
outbound_ips = { effect = "block", deny = ["203.0.113.0/24", "2001:db8::1"] }
dns = { allow = ["internal.example"], deny = ["*.pastebin.example"] }
port_scan = { effect = "block" }

[[rules]]
name = "quiet"
scope = { containers = ["batch-*"] }
raw_sockets = { effect = "disable" }
"#;

    #[test]
    fn first_matching_rule_wins_and_the_default_catches_the_rest() {
        let rules = Rules::parse(FILE, "rules.toml").unwrap();
        assert_eq!(rules.len(), 3);
        let labels = vec![("tier".to_owned(), "web-front".to_owned())];
        let web = Subject {
            container: Some("web-1"),
            image: Some("nginx:1.27"),
            labels: &labels,
        };
        let (_, r) = rules.for_subject(&web);
        assert_eq!(r.name, "web");
        assert_eq!(r.processes.effect, Effect::Prevent);
        assert!(
            r.processes
                .deny
                .iter()
                .any(|p| p.matches("/usr/bin/nc.openbsd"))
        );
        assert!(r.processes.deny.iter().any(|p| p.matches("/tmp/x")));
        assert!(
            r.processes
                .allow
                .iter()
                .any(|p| p.matches("/usr/sbin/nginx"))
        );
        assert!(
            r.listening_ports
                .allow
                .iter()
                .any(|p| p.matches(Proto::Udp, 9050))
        );
        assert!(
            !r.listening_ports
                .allow
                .iter()
                .any(|p| p.matches(Proto::Udp, 8080))
        );
        assert!(
            r.outbound_ips
                .deny
                .iter()
                .any(|n| n.contains(&"203.0.113.9".parse::<IpAddr>().unwrap()))
        );
        assert!(r.dns.deny.matches("x.pastebin.example"));
        assert!(r.dns.allow.matches("db.internal.example"));
        assert_eq!(r.port_scan, Effect::Block);
        assert_eq!(r.raw_sockets, Effect::Alert, "unwritten areas alert");

        // Same image without the label: not "web".
        let other = Subject {
            container: Some("batch-7"),
            image: Some("nginx:1.27"),
            labels: &[],
        };
        assert_eq!(rules.for_subject(&other).1.name, "quiet");
        let none = Subject::default();
        assert!(rules.for_subject(&none).1.name.starts_with("Default"));
    }

    #[test]
    fn globs_match_as_glob_patterns_do() {
        let texts = [
            "nginx:*",
            "*.example",
            "web-1",
            "*",
            "",
            "a*b",
            "[ab]*",
            "?x",
            "*/ncat",
            "/tmp/*",
            "**",
            "nc*",
            "x]",
        ];
        let inputs = [
            "nginx:1.27",
            "nginx:",
            "nginx",
            "a.example",
            ".example",
            "example",
            "web-1",
            "web-12",
            "",
            "ab",
            "axxb",
            "bx",
            "/usr/bin/ncat",
            "/tmp/a/b",
            "nc",
            "nc.openbsd",
            "x]",
        ];
        for text in texts {
            let (glob, pattern) = (Glob::new(text).unwrap(), Pattern::new(text).unwrap());
            for input in inputs {
                assert_eq!(
                    glob.matches(input),
                    pattern.matches(input),
                    "{text:?} on {input:?} ({glob:?})"
                );
            }
        }
        assert!(matches!(Glob::new("nginx:*").unwrap(), Glob::Prefix(_)));
        assert!(matches!(Glob::new("*.example").unwrap(), Glob::Suffix(_)));
        assert!(matches!(Glob::new("a*b").unwrap(), Glob::Pattern(_)));
        assert!(
            Glob::new("a**b").is_err(),
            "what Pattern refuses is refused"
        );
    }

    #[test]
    fn bad_rules_name_the_rule_the_area_and_the_entry() {
        for (text, want) in [
            (
                "[[rules]]\nname = \"a\"\nlistening_ports = { allow = [\"80/sctp\"] }",
                "sctp",
            ),
            (
                "[[rules]]\nname = \"a\"\nlistening_ports = { allow = [\"0\"] }",
                "not a port",
            ),
            (
                "[[rules]]\nname = \"a\"\noutbound_ports = { deny = [\"90-80\"] }",
                "backwards",
            ),
            (
                "[[rules]]\nname = \"a\"\noutbound_ips = { deny = [\"evil\"] }",
                "not an address",
            ),
            (
                "[[rules]]\nname = \"a\"\nport_scan = { allow = [\"x\"] }",
                "only an effect",
            ),
            (
                "[[rules]]\nname = \"a\"\nprocesses = { effect = \"explode\" }",
                "explode",
            ),
            ("[[rules]]\nname = \"a\"\nsurprise = 1", "surprise"),
            ("[[rules]]\nname = \"\"", "no name"),
        ] {
            let err = Rules::parse(text, "r.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
