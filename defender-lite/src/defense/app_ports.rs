//! The ports an image's apps are configured to listen on, for the engine's app knowledge
//! (`Knowledge::app_ports`): read once per image with `crate::apps::examine`, from the
//! running container's root filesystem (`/proc/<pid>/root`) the first time a process of
//! that image is seen, or from an image given by hand (`monitor --app-image
//! IMAGE=PATH`). Ports that `listens` or `conditional` count, and the image's `EXPOSE`
//! ports when its config is known; `unresolved` and `overridden` ones do not.
//!
//! Reading an image is a few file reads (the feed's executables and config files, with
//! the caps of `apps::files`), usually milliseconds, but a container's filesystem is
//! not the agent's to trust (a slow or huge one): it runs in the background, and events
//! are judged meanwhile by what is known (the model, the rules). A failure is said and
//! tried again on a later event of the image, after 30 s, doubling up to an hour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Proto;
use super::rules::PortRange;
use crate::apps::{CommandLine, Knowledge, Status, examine};
use crate::image::{Image, Limits};
use relay::bundle::PortProtocol;

/// Per image: read, being read, or failed (and when to try again).
pub struct AppPorts {
    knowledge: Option<Knowledge>,
    images: HashMap<String, Reading>,
    retry_first: Duration,
    max_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    InFlight { failures: u32 },
    Done,
    Failed { failures: u32, retry_at: Instant },
}

/// The wait after a first failure unless configured (`[monitor] app_read_retry`),
/// doubled with each one after, up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(30);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

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
            images: HashMap::new(),
            retry_first: RETRY_FIRST,
            max_entries: Limits::default().max_entries,
        }
    }

    /// The most entries of a container's filesystem indexed to read it (at least one).
    pub fn with_max_entries(mut self, max_entries: usize) -> AppPorts {
        self.max_entries = max_entries.max(1);
        self
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The wait after a first failure (at least a second, at most [`RETRY_MAX`]).
    pub fn with_retry(mut self, first: Duration) -> AppPorts {
        self.retry_first = first.clamp(Duration::from_secs(1), RETRY_MAX);
        self
    }

    /// True when `image` should be read now (there is knowledge to read it with, and it
    /// was never read, or its last failure's wait is over); it is then in flight until
    /// [`read_done`](Self::read_done) or [`read_failed`](Self::read_failed).
    pub fn start_reading(&mut self, image: &str, now: Instant) -> bool {
        if self.knowledge.is_none() {
            return false;
        }
        let failures = match self.images.get(image) {
            None => 0,
            Some(Reading::Failed { failures, retry_at }) if now >= *retry_at => *failures,
            Some(_) => return false,
        };
        self.images
            .insert(image.to_owned(), Reading::InFlight { failures });
        true
    }

    /// Marks `image` as read (its ports are known, or were given by hand).
    pub fn read_done(&mut self, image: &str) {
        self.images.insert(image.to_owned(), Reading::Done);
    }

    /// Records a failed read; the wait before the next try.
    pub fn read_failed(&mut self, image: &str, now: Instant) -> Duration {
        let failures = match self.images.get(image) {
            Some(Reading::InFlight { failures } | Reading::Failed { failures, .. }) => {
                failures.saturating_add(1)
            }
            _ => 1,
        };
        let wait = self
            .retry_first
            .saturating_mul(1 << (failures - 1).min(16))
            .min(RETRY_MAX);
        self.images.insert(
            image.to_owned(),
            Reading::Failed {
                failures,
                retry_at: now + wait,
            },
        );
        wait
    }

    pub fn knowledge(&self) -> Option<&Knowledge> {
        self.knowledge.as_ref()
    }
}

/// The root filesystem of a running process, as an image directory.
pub fn process_root(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// Reads an image (a directory, a tar, a `docker save` archive) with the knowledge,
/// indexing at most `max_entries` of its files (more is a failure, tried again later).
pub fn read(
    path: &Path,
    name: &str,
    knowledge: &Knowledge,
    max_entries: usize,
) -> Result<ImagePorts, String> {
    let limits = Limits {
        max_entries,
        ..Limits::default()
    };
    let image =
        Image::open_with(path, limits).map_err(|e| format!("opening {}: {e}", path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_read_once_and_a_failure_is_tried_again_later() {
        let knowledge = Knowledge::from_specs(Vec::new(), PathBuf::from("apps"));
        let mut apps = AppPorts::new(Some(knowledge));
        let t0 = Instant::now();
        assert!(apps.start_reading("web:1", t0));
        assert!(!apps.start_reading("web:1", t0), "in flight: not twice");
        assert_eq!(apps.read_failed("web:1", t0), RETRY_FIRST);
        assert!(!apps.start_reading("web:1", t0 + RETRY_FIRST / 2));
        assert!(apps.start_reading("web:1", t0 + RETRY_FIRST));
        assert_eq!(apps.read_failed("web:1", t0), RETRY_FIRST * 2, "doubled");
        for _ in 0..20 {
            apps.start_reading("web:1", t0 + RETRY_MAX * 100);
            assert!(apps.read_failed("web:1", t0) <= RETRY_MAX);
        }
        assert!(apps.start_reading("web:1", t0 + RETRY_MAX));
        apps.read_done("web:1");
        assert!(
            !apps.start_reading("web:1", t0 + RETRY_MAX * 100),
            "done for good"
        );

        let mut none = AppPorts::new(None);
        assert!(
            !none.start_reading("web:1", t0),
            "no knowledge, nothing to read"
        );
    }

    #[test]
    fn the_first_wait_is_configured_and_still_doubles_up_to_the_cap() {
        let knowledge = Knowledge::from_specs(Vec::new(), PathBuf::from("apps"));
        let mut apps = AppPorts::new(Some(knowledge)).with_retry(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(apps.start_reading("web:1", t0));
        assert_eq!(apps.read_failed("web:1", t0), Duration::from_secs(2));
        assert!(apps.start_reading("web:1", t0 + Duration::from_secs(2)));
        assert_eq!(apps.read_failed("web:1", t0), Duration::from_secs(4));
        let zero = AppPorts::new(None).with_retry(Duration::ZERO);
        assert_eq!(
            zero.retry_first,
            Duration::from_secs(1),
            "never a busy retry"
        );
    }
}
