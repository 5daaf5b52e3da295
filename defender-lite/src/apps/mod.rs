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
mod detect;
mod extract;
mod files;
mod ini;
mod keyword;
mod knowledge;
mod nginx;
mod output;
mod report;
mod value;
mod xml;
mod yaml;

use std::collections::BTreeMap;

use relay::bundle::{AppSpec, PortProtocol};

use crate::image::{EntryKind, Image, ImageKind};

pub use argv::split as split_command;
pub use detect::{BIN_DIRS, Found, FoundKind};
pub use output::table;

use files::Reader;
use value::PortValue;

use extract::{describe, extractors, port_entry, read_source, source_paths};
pub use knowledge::{Knowledge, KnowledgeError};
pub use report::{AppReport, Command, CommandLine, Evidence, Exposed, Port, Report, Status};

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

#[cfg(test)]
mod tests;
