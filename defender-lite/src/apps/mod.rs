//! App knowledge applied to an image: which of the `apps` feed's apps an image holds, and
//! the ports each will listen on, read from its real configuration files with the feed's
//! declarative extractors, from the command line the image runs, and from its defaults.
//!
//! The feed (`relay::bundle::apps`) says what identifies an app and where and how to read
//! its ports; this module does the reading. `Knowledge::load_dir` loads the documents;
//! `examine` looks at one image; `table` renders a report for people, and the report
//! serializes to JSON for machines. Reading the image is `crate::image`'s job (it never
//! leaves the image root); each config format has its own file (`keyword`, `ini`, `yaml`,
//! `xml`, `nginx`, `apache`), file access and its bounds are `files`, the command line
//! is `argv`, presence is `detect`, port text is `value`.
//!
//! # How a port is decided
//!
//! Ports are grouped by role: an extractor's or a flag's `label` (`http`, `tls`, or none).
//! For each role of an app:
//!
//! 1. a port flag on the command line (`--port 7777`, per the app's `flags`) wins: the
//!    config's ports of that role are still listed, as `overridden`;
//! 2. otherwise what the config files say: every `listen`/`Listen`/`bind`/XML attribute
//!    counts, while a key that holds one value (INI and YAML keys, and `keyword`
//!    directives whose extractor has a default, like redis `port`) takes the last one
//!    read and lists the earlier ones as `overridden`. A port inside a conditional block
//!    (`<IfModule ssl_module>`) is `conditional`, with the condition; a template
//!    (`${PORT}`, `@@Port@@`, `{{ .port }}`) is `unresolved`, never guessed;
//! 3. otherwise the extractor's default, with evidence `default` (and where the setting
//!    is commented out, if it is). A setting that is present but not a port (a unix
//!    socket, `port 0`) means no default applies; it is listed in `notes`.
//!
//! A config file named on the command line (`redis-server /etc/redis.conf`, `mongod
//! --config /etc/mongo/mongod.conf`) replaces the source's own paths: the source whose
//! paths match it, or the app's only source. The image's `EXPOSE` ports are listed
//! beside the apps, each with the apps that listen on it.
//!
//! # JSON (`defender-lite apps --format json`), stable
//!
//! ```json
//! {
//!   "image": "redis.tar",
//!   "image_kind": "docker-save",
//!   "knowledge": "/var/lib/defender-lite/bundles/7-ab12/feeds/apps",
//!   "command": { "from": "image", "argv": ["redis-server", "/etc/redis.conf", "--port", "7777"] },
//!   "apps": [
//!     {
//!       "id": "redis",
//!       "name": "Redis",
//!       "found": [{ "kind": "executable", "path": "/usr/bin/redis-server" }],
//!       "runs": ["redis-server", "/etc/redis.conf", "--port", "7777"],
//!       "configs": ["/etc/redis.conf"],
//!       "ports": [
//!         {
//!           "port": 7777,
//!           "protocol": "tcp",
//!           "address": null,
//!           "label": null,
//!           "status": "listens",
//!           "evidence": { "kind": "argv", "arg": "--port 7777" },
//!           "condition": null,
//!           "context": null,
//!           "value": null,
//!           "overridden_by": null,
//!           "exposed": false
//!         },
//!         {
//!           "port": 6380, "protocol": "tcp", "address": "127.0.0.1", "label": null,
//!           "status": "overridden",
//!           "evidence": { "kind": "file", "path": "/etc/redis.conf", "line": 3 },
//!           "condition": null, "context": null, "value": null,
//!           "overridden_by": "argv --port 7777", "exposed": false
//!         }
//!       ],
//!       "notes": [],
//!       "problems": []
//!     }
//!   ],
//!   "exposed": [
//!     { "port": 6379, "protocol": "tcp", "evidence": { "kind": "expose", "text": "6379/tcp" }, "apps": [] }
//!   ],
//!   "problems": []
//! }
//! ```
//!
//! - `image_kind`: `directory`, `tar` or `docker-save`. `command`: `null` when there is
//!   none; `from` is `image` (Entrypoint + Cmd) or `cmd` (`--cmd`).
//! - `found[].kind`: `executable` or `file`. `runs`: the words that start the app, from
//!   its executable on, or `null` when the command line does not start it.
//! - `ports[].port`: `null` only when `status` is `unresolved` (then `value` holds the
//!   text as written). `status`: `listens`, `conditional`, `overridden`, `unresolved`.
//!   `evidence.kind`: `file` (`path`, `line`), `argv` (`arg`), `default` (`commented`:
//!   `"path:line"` or `null`). `condition`: enclosing conditional blocks, outermost
//!   first, joined with ` > `; `context`: other enclosing blocks the same way.
//!   `exposed`: the image's `EXPOSE` lists this port.
//! - `notes`: settings that are not ports. `problems`: what could not be read (a missing
//!   `Include`, an include loop, a file over the size cap, non-UTF-8 text, a template in
//!   an include path). The top-level `problems` are the image's and the command line's.
//!
//! Fields may be added; none is removed or changes meaning without a new major version.

mod apache;
mod argv;
pub mod command;
mod detect;
mod files;
mod ini;
mod keyword;
mod nginx;
mod output;
mod value;
mod xml;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use relay::bundle::{AppSpec, ConfigSource, PortProtocol};
use serde::Serialize;

use crate::image::{EntryKind, Image, ImageKind};

pub use argv::split as split_command;
pub use detect::{BIN_DIRS, Found, FoundKind};
pub use output::table;

use files::{Entry, Reader};
use value::PortValue;

/// Largest app document read.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;
/// Most app documents loaded.
const MAX_DOCUMENTS: usize = 10_000;

/// The app documents of an `apps` feed, parsed and checked.
#[derive(Debug, Clone)]
pub struct Knowledge {
    apps: Vec<AppSpec>,
    source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no app documents (*.json) here, nor in apps/ or feeds/apps/ below it")]
    NoDocuments { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: more than {limit} app documents")]
    TooMany { path: PathBuf, limit: usize },
}

impl Knowledge {
    /// Documents already parsed and checked (an applied bundle's index); `source` is
    /// where they came from, for reports.
    pub fn from_specs(mut apps: Vec<AppSpec>, source: PathBuf) -> Knowledge {
        apps.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Knowledge { apps, source }
    }

    /// Loads the app documents from a directory: an `apps` feed directory of `<id>.json`
    /// files, a bundle's `feeds/` directory (its `apps/` is read) or an unpacked bundle
    /// (its `feeds/apps/`). Each document is parsed with the feed's schema and checked
    /// (`AppSpec::check`, id equal to the file stem).
    pub fn load_dir(path: &Path) -> Result<Knowledge, KnowledgeError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KnowledgeError::Io { path, source }
        };
        let dir = [path.join("feeds/apps"), path.join("apps"), path.to_owned()]
            .into_iter()
            .find(|d| d.is_dir())
            .ok_or_else(|| KnowledgeError::NoDocuments {
                path: path.to_owned(),
            })?;
        let mut documents = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let file = entry.path();
            if file.extension().is_some_and(|e| e == "json") && file.is_file() {
                documents.push(file);
            }
            if documents.len() > MAX_DOCUMENTS {
                return Err(KnowledgeError::TooMany {
                    path: dir,
                    limit: MAX_DOCUMENTS,
                });
            }
        }
        if documents.is_empty() {
            return Err(KnowledgeError::NoDocuments { path: dir });
        }
        documents.sort();
        let mut apps = Vec::with_capacity(documents.len());
        for file in documents {
            let invalid = |reason: String| KnowledgeError::Invalid {
                path: file.clone(),
                reason,
            };
            let size = std::fs::metadata(&file).map_err(io(&file))?.len();
            if size > MAX_DOCUMENT_BYTES {
                return Err(invalid(format!(
                    "{size} bytes, over the {MAX_DOCUMENT_BYTES}-byte cap for an app document"
                )));
            }
            let bytes = std::fs::read(&file).map_err(io(&file))?;
            let app: AppSpec =
                serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if app.id.as_str() != stem {
                return Err(invalid(format!(
                    "app id {:?} must equal the file name {stem:?}",
                    app.id.as_str()
                )));
            }
            app.check().map_err(invalid)?;
            apps.push(app);
        }
        Ok(Knowledge { apps, source: dir })
    }

    /// Knowledge from documents already parsed (each is checked).
    pub fn from_apps(apps: Vec<AppSpec>, source: PathBuf) -> Result<Knowledge, String> {
        for app in &apps {
            app.check()?;
        }
        Ok(Knowledge { apps, source })
    }

    pub fn apps(&self) -> &[AppSpec] {
        &self.apps
    }

    /// Where the documents were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// Which command line the image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Its `Entrypoint` and `Cmd` (a `docker save` archive), if any.
    FromImage,
    /// Given by hand (`--cmd`), already split into words.
    Given(Vec<String>),
}

/// What `examine` found in one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub image_kind: &'static str,
    pub knowledge: String,
    pub command: Option<Command>,
    pub apps: Vec<AppReport>,
    pub exposed: Vec<Exposed>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Command {
    /// `image` or `cmd`.
    pub from: &'static str,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub id: String,
    pub name: String,
    pub found: Vec<Found>,
    /// The words that start the app, from its executable on.
    pub runs: Option<Vec<String>>,
    /// Config files read, in reading order.
    pub configs: Vec<String>,
    pub ports: Vec<Port>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub port: Option<u16>,
    pub protocol: PortProtocol,
    pub address: Option<String>,
    pub label: Option<String>,
    pub status: Status,
    pub evidence: Evidence,
    pub condition: Option<String>,
    pub context: Option<String>,
    /// The text as written, for an unresolved port.
    pub value: Option<String>,
    /// What wins over an overridden port: `argv --port 7777` or `path:line`.
    pub overridden_by: Option<String>,
    pub exposed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Listens,
    Conditional,
    Overridden,
    Unresolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Listens => "listens",
            Status::Conditional => "conditional",
            Status::Overridden => "overridden",
            Status::Unresolved => "unresolved",
        }
    }
}

/// Where a port comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Evidence {
    File { path: String, line: usize },
    Argv { arg: String },
    Default { commented: Option<String> },
    Expose { text: String },
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evidence::File { path, line } => write!(f, "{path}:{line}"),
            Evidence::Argv { arg } => write!(f, "argv {arg}"),
            Evidence::Default {
                commented: Some(at),
            } => write!(f, "default (commented out at {at})"),
            Evidence::Default { commented: None } => write!(f, "default"),
            Evidence::Expose { text } => write!(f, "EXPOSE {text}"),
        }
    }
}

/// A port of the image's `EXPOSE`, with the apps found listening on it.
#[derive(Debug, Clone, Serialize)]
pub struct Exposed {
    pub port: u16,
    pub protocol: PortProtocol,
    pub evidence: Evidence,
    pub apps: Vec<String>,
}

/// Looks at an image with the knowledge: the apps it holds and their ports. `name` is
/// how the report names the image. Never fails: what cannot be read is a problem in the
/// report.
pub fn examine(image: &Image, name: &str, knowledge: &Knowledge, command: CommandLine) -> Report {
    let mut problems: Vec<String> = image
        .warnings()
        .iter()
        .map(|w| format!("image: {w}"))
        .collect();
    let container = image.config().and_then(|c| c.config.as_ref());
    let command = match command {
        CommandLine::Given(argv) => Some(Command { from: "cmd", argv }),
        CommandLine::FromImage => {
            let argv: Vec<String> = container
                .map(|c| {
                    let mut argv = c.entrypoint.clone().unwrap_or_default();
                    argv.extend(c.cmd.clone().unwrap_or_default());
                    argv
                })
                .unwrap_or_default();
            (!argv.is_empty()).then_some(Command {
                from: "image",
                argv,
            })
        }
    };
    let commands = command
        .as_ref()
        .map(|c| argv::commands(&c.argv, &mut problems))
        .unwrap_or_default();
    let path_dirs = detect::image_path(image);
    let mut apps = Vec::new();
    for spec in knowledge.apps() {
        let mut app_problems = Vec::new();
        let found = detect::find(image, spec, &path_dirs, &mut app_problems);
        if found.is_empty() {
            continue;
        }
        apps.push(examine_app(image, spec, found, &commands, app_problems));
    }

    let mut exposed = Vec::new();
    for text in container.map(|c| c.exposed_ports()).unwrap_or_default() {
        let (number, protocol) = match text.split_once('/') {
            Some((n, "udp")) => (n, PortProtocol::Udp),
            Some((n, "tcp")) => (n, PortProtocol::Tcp),
            Some(_) => {
                problems.push(format!("EXPOSE {text}: unknown protocol"));
                continue;
            }
            None => (text, PortProtocol::Tcp),
        };
        let Ok(port) = number.parse::<u16>() else {
            problems.push(format!("EXPOSE {text}: not a port"));
            continue;
        };
        let mut listening = Vec::new();
        for app in &mut apps {
            let mut listens = false;
            for p in &mut app.ports {
                if p.port == Some(port)
                    && p.protocol == protocol
                    && matches!(p.status, Status::Listens | Status::Conditional)
                {
                    p.exposed = true;
                    listens = true;
                }
            }
            if listens {
                listening.push(app.id.clone());
            }
        }
        exposed.push(Exposed {
            port,
            protocol,
            evidence: Evidence::Expose {
                text: text.to_owned(),
            },
            apps: listening,
        });
    }

    Report {
        image: name.to_owned(),
        image_kind: match image.kind() {
            ImageKind::Directory => "directory",
            ImageKind::Tar { .. } => "tar",
            ImageKind::DockerSave { .. } => "docker-save",
        },
        knowledge: knowledge.source().display().to_string(),
        command,
        apps,
        exposed,
        problems,
    }
}

/// The ports of one role, gathered from every source before deciding.
#[derive(Default)]
struct Role {
    /// Ports the config files give.
    config: Vec<Port>,
    /// The config sets this role (even to something that is not a port).
    configured: bool,
    /// Defaults of extractors that found nothing: (port, protocol, commented at).
    defaults: Vec<(u16, PortProtocol, Option<String>)>,
    /// The command line's port, and the flag as written.
    argv: Option<(Option<Port>, String)>,
}

fn examine_app(
    image: &Image,
    spec: &AppSpec,
    found: Vec<Found>,
    commands: &[Vec<String>],
    mut problems: Vec<String>,
) -> AppReport {
    let invocation = argv::invocation(commands, spec);
    let mut notes = Vec::new();

    // Config files the command line names, by config source.
    let mut named: Vec<Vec<String>> = vec![Vec::new(); spec.configs.len()];
    if let Some(inv) = &invocation {
        for path in argv::paths(inv) {
            let is_file = matches!(image.metadata(&path), Ok(Some(e)) if e.kind == EntryKind::File);
            if !is_file {
                continue;
            }
            let claimed = spec.configs.iter().position(|source| {
                source_paths(source)
                    .iter()
                    .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(&path)))
            });
            match claimed.or((spec.configs.len() == 1).then_some(0)) {
                Some(i) => named[i].push(path),
                None => notes.push(format!(
                    "the command line names {path}, which none of the app's config sources claims; not read"
                )),
            }
        }
    }

    let mut roles: BTreeMap<Option<String>, Role> = BTreeMap::new();
    let mut configs = Vec::new();
    for (source, named) in spec.configs.iter().zip(&named) {
        let mut reader = Reader::new(image);
        let roots: Vec<String> = if named.is_empty() {
            source_paths(source)
                .iter()
                .flat_map(|p| reader.roots(p))
                .collect()
        } else {
            named.clone()
        };
        let mut entries = Vec::new();
        for root in &roots {
            entries.extend(read_source(&mut reader, source, root.as_str()));
        }
        configs.append(&mut reader.files);
        problems.append(&mut reader.problems);
        for extractor in extractors(source) {
            extractor.apply(&entries, &mut roles, &mut notes);
        }
    }

    if let Some(inv) = &invocation {
        for hit in argv::flags(inv, &spec.flags) {
            let label = hit.spec.label.as_ref().map(|l| l.as_str().to_owned());
            let written = format!("argv {}", hit.written);
            let port = match value::parse(&hit.value) {
                PortValue::Port { port, address } => Some(port_entry(
                    Some(port),
                    address,
                    hit.spec.protocol,
                    label.clone(),
                    Status::Listens,
                    Evidence::Argv {
                        arg: hit.written.clone(),
                    },
                )),
                PortValue::Template => {
                    let mut p = port_entry(
                        None,
                        None,
                        hit.spec.protocol,
                        label.clone(),
                        Status::Unresolved,
                        Evidence::Argv {
                            arg: hit.written.clone(),
                        },
                    );
                    p.value = Some(hit.value.clone());
                    Some(p)
                }
                PortValue::AddressOnly { .. } | PortValue::Disabled | PortValue::NotAPort(_) => {
                    notes.push(format!(
                        "command line {}: no TCP port ({})",
                        hit.written,
                        describe(&value::parse(&hit.value))
                    ));
                    None
                }
            };
            // Hits come in argument order: the last one of a role wins.
            roles.entry(label).or_default().argv = Some((port, written));
        }
        let sub = argv::subcommand(inv);
        for flag in &spec.flags {
            let Some(default) = flag.default else {
                continue;
            };
            let applies = flag
                .subcommand
                .as_ref()
                .is_none_or(|s| Some(s.as_str()) == sub);
            if applies {
                let label = flag.label.as_ref().map(|l| l.as_str().to_owned());
                roles
                    .entry(label)
                    .or_default()
                    .defaults
                    .push((default.get(), flag.protocol, None));
            }
        }
    }

    let mut ports = Vec::new();
    for (label, role) in roles {
        if let Some((argv_port, written)) = role.argv {
            ports.extend(argv_port);
            for mut p in role.config {
                p.status = Status::Overridden;
                p.overridden_by = Some(written.clone());
                ports.push(p);
            }
        } else if role.configured {
            ports.extend(role.config);
        } else {
            let mut seen = Vec::new();
            for (port, protocol, commented) in role.defaults {
                if seen.contains(&(port, protocol)) {
                    continue;
                }
                seen.push((port, protocol));
                ports.push(port_entry(
                    Some(port),
                    None,
                    protocol,
                    label.clone(),
                    Status::Listens,
                    Evidence::Default { commented },
                ));
            }
        }
    }

    AppReport {
        id: spec.id.as_str().to_owned(),
        name: spec.name.as_str().to_owned(),
        found,
        runs: invocation.map(|inv| {
            let mut words = vec![inv.executable];
            words.extend(inv.args);
            words
        }),
        configs,
        ports,
        notes,
        problems,
    }
}

fn source_paths(source: &ConfigSource) -> Vec<&str> {
    let paths = match source {
        ConfigSource::Keyword(d) | ConfigSource::Nginx(d) | ConfigSource::Apache(d) => &d.paths,
        ConfigSource::Ini(i) => &i.paths,
        ConfigSource::Yaml(y) => &y.paths,
        ConfigSource::Xml(x) => &x.paths,
    };
    paths.iter().map(|p| p.as_str()).collect()
}

fn read_source(reader: &mut Reader<'_>, source: &ConfigSource, root: &str) -> Vec<Entry> {
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
struct Extractor<'s> {
    matches: Box<dyn Fn(&Entry) -> bool + 's>,
    default: Option<u16>,
    protocol: PortProtocol,
    label: Option<String>,
    /// The key holds one value: the last one read wins.
    single: bool,
    /// An address without a port means the default port (nginx `listen 127.0.0.1;`).
    address_takes_default: bool,
    /// `udp`/`quic` among the arguments means UDP (nginx).
    udp_flags: bool,
    /// The first argument may list several addresses (haproxy `bind :80,:443`).
    commas: bool,
}

fn extractors(source: &ConfigSource) -> Vec<Extractor<'_>> {
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

fn base<'s>(
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
fn key_matches(pattern: &str, key: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == key;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| *p == "*" || p == k)
}

impl Extractor<'_> {
    fn apply(
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

fn port_entry(
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

fn join_blocks(blocks: &[String]) -> Option<String> {
    (!blocks.is_empty()).then(|| blocks.join(" > "))
}

fn describe(value: &PortValue) -> String {
    match value {
        PortValue::Port { port, .. } => format!("port {port}"),
        PortValue::AddressOnly { address } => format!("{address} is an address without a port"),
        PortValue::Template => "a template".into(),
        PortValue::Disabled => "switched off: no TCP listener".into(),
        PortValue::NotAPort(why) => why.clone(),
    }
}

#[cfg(test)]
mod tests;
