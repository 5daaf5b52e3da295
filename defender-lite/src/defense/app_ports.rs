//! The ports an image's apps are configured to listen on, for the engine's app knowledge
//! (`Knowledge::app_ports`): read once per image with `crate::apps::examine`, from the
//! running container's root filesystem (`/proc/<pid>/root`) the first time a process of
//! that image is seen, or from an image given by hand (`monitor --app-image
//! IMAGE=PATH`). Ports that `listens` or `conditional` count, and the image's `EXPOSE`
//! ports when its config is known; `unresolved` and `overridden` ones do not.
//!
//! Reading an image is a few file reads (the feed's executables and config files, with
//! the caps of `apps::files`), a few milliseconds; it runs on a blocking thread, once per
//! image. A failure is said once and the image is then judged by its model alone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Proto;
use super::rules::PortRange;
use crate::apps::{CommandLine, Knowledge, Status, examine};
use crate::image::Image;
use relay::bundle::PortProtocol;

/// Per image: done, or not yet.
pub struct AppPorts {
    knowledge: Option<Knowledge>,
    seen: HashSet<String>,
}

/// What reading an image gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePorts {
    pub ports: Vec<PortRange>,
    /// Readable summary: `apache 80/tcp (listens), 8443/tcp (conditional)`.
    pub summary: String,
    pub problems: Vec<String>,
}

impl AppPorts {
    /// `knowledge`: the feed's app documents; `None` turns the lookups off.
    pub fn new(knowledge: Option<Knowledge>) -> AppPorts {
        AppPorts {
            knowledge,
            seen: HashSet::new(),
        }
    }

    /// True the first time `image` is asked about (and there is knowledge to use): the
    /// caller then reads it. Later calls are false, whatever the outcome was.
    pub fn first_sight(&mut self, image: &str) -> bool {
        self.knowledge.is_some() && self.seen.insert(image.to_owned())
    }

    /// Marks `image` as read (its ports were given by hand).
    pub fn mark_seen(&mut self, image: &str) {
        self.seen.insert(image.to_owned());
    }

    pub fn knowledge(&self) -> Option<&Knowledge> {
        self.knowledge.as_ref()
    }
}

/// The root filesystem of a running process, as an image directory.
pub fn process_root(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// Reads an image (a directory, a tar, a `docker save` archive) with the knowledge.
pub fn read(path: &Path, name: &str, knowledge: &Knowledge) -> Result<ImagePorts, String> {
    let image = Image::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let report = examine(&image, name, knowledge, CommandLine::FromImage);
    let mut ports = Vec::new();
    let mut summary = Vec::new();
    let mut problems = report.problems.clone();
    let proto = |p: PortProtocol| match p {
        PortProtocol::Udp => Proto::Udp,
        PortProtocol::Tcp => Proto::Tcp,
    };
    for app in &report.apps {
        let mut listed = Vec::new();
        for p in &app.ports {
            let Some(port) = p.port else { continue };
            if !matches!(p.status, Status::Listens | Status::Conditional) {
                continue;
            }
            let proto = proto(p.protocol);
            ports.push(PortRange {
                low: port,
                high: port,
                proto: Some(proto),
            });
            listed.push(format!("{port}/{} ({})", proto.as_str(), p.status.as_str()));
        }
        summary.push(if listed.is_empty() {
            format!("{} (no port in its configuration files)", app.id)
        } else {
            format!("{} {}", app.id, listed.join(", "))
        });
        problems.extend(app.problems.iter().map(|p| format!("{}: {p}", app.id)));
    }
    for e in &report.exposed {
        let proto = proto(e.protocol);
        ports.push(PortRange {
            low: e.port,
            high: e.port,
            proto: Some(proto),
        });
        summary.push(format!("EXPOSE {}/{}", e.port, proto.as_str()));
    }
    ports.sort_by_key(|p| (p.low, p.proto.map(Proto::as_str)));
    ports.dedup();
    Ok(ImagePorts {
        ports,
        summary: if summary.is_empty() {
            "no known app".to_owned()
        } else {
            summary.join("; ")
        },
        problems,
    })
}
