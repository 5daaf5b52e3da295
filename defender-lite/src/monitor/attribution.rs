//! Which container an event belongs to: pid -> container id from `/proc/<pid>/cgroup`,
//! then id -> name and image from the Docker Engine API (`docker.rs`).
//!
//! The cgroup path names the container in every common layout: cgroup v1
//! (`/docker/<id>`), v2 with the systemd driver (`/system.slice/docker-<id>.scope`),
//! containerd and CRI-O under Kubernetes (`cri-containerd-<id>.scope`, `crio-<id>.scope`,
//! `/kubepods/.../pod<uid>/<id>`), and Podman (`libpod-<id>.scope`). The innermost id wins,
//! so a container inside a container is attributed to the inner one.
//!
//! Both lookups are cached: pid -> id until the process exits, id -> details for the
//! container's life. When the engine cannot be asked (no socket, not Docker), events
//! still carry the id.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::docker::DockerClient;
use super::event::{Container, Event, EventKind};

/// The container runtime a cgroup path points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    /// A bare 64-hex id under `/docker/` or kubepods without a runtime prefix.
    Unknown,
}

/// A container id found in a cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupContainer {
    pub id: String,
    pub runtime: Runtime,
}

/// The container of a `/proc/<pid>/cgroup` file, if the process is in one.
pub fn container_from_cgroup(text: &str) -> Option<CgroupContainer> {
    // Lines are `hierarchy-id:controllers:path`; the path may itself hold colons
    // (`...:cri-containerd:<id>`), so split only twice.
    let mut best: Option<(usize, CgroupContainer)> = None;
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (depth, seg) in segments.iter().enumerate().rev() {
            if let Some(found) = container_from_segment(seg, segments.get(depth.wrapping_sub(1))) {
                if best.as_ref().is_none_or(|(d, _)| depth > *d) {
                    best = Some((depth, found));
                }
                break;
            }
        }
    }
    best.map(|(_, c)| c)
}

fn container_from_segment(seg: &str, parent: Option<&&str>) -> Option<CgroupContainer> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    // systemd-managed containerd: `kubepods-...slice:cri-containerd:<id>`
    let seg = seg.rsplit(':').next().unwrap_or(seg);
    for (prefix, runtime) in [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("libpod-", Runtime::Podman),
    ] {
        if let Some(id) = seg.strip_prefix(prefix) {
            return is_container_id(id).then(|| CgroupContainer {
                id: id.to_string(),
                runtime,
            });
        }
    }
    if !is_container_id(seg) {
        return None;
    }
    let runtime = match parent.copied() {
        Some("docker") => Runtime::Docker,
        _ => Runtime::Unknown,
    };
    Some(CgroupContainer {
        id: seg.to_string(),
        runtime,
    })
}

/// Container ids are 64 lower-case hex digits in every runtime named above.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Attributes events to containers, with caches.
pub struct Attributor {
    proc: PathBuf,
    docker: Option<DockerClient>,
    by_pid: HashMap<u32, Option<Arc<Container>>>,
    by_id: HashMap<String, (Arc<Container>, Instant)>,
    /// Re-ask the engine about an id it could not describe after this long.
    retry_after: Duration,
}

impl Attributor {
    pub fn new(docker: Option<DockerClient>) -> Self {
        Attributor {
            proc: PathBuf::from("/proc"),
            docker,
            by_pid: HashMap::new(),
            by_id: HashMap::new(),
            retry_after: Duration::from_secs(30),
        }
    }

    /// Sets `event.container` where the event names a process in a container. Exits
    /// drop the process from the cache (after attributing the exit itself).
    pub async fn attribute(&mut self, event: &mut Event) {
        if event.container.is_some() {
            return;
        }
        let Some(pid) = event.pid() else {
            return;
        };
        if matches!(event.kind, EventKind::Exec(_)) {
            // A new program, maybe a reused pid: read its cgroup again.
            self.by_pid.remove(&pid);
        }
        event.container = self.container_of(pid).await;
        if matches!(event.kind, EventKind::Exit(_)) {
            self.by_pid.remove(&pid);
        }
    }

    /// The container of a pid, or `None` for host processes and unknown pids.
    pub async fn container_of(&mut self, pid: u32) -> Option<Arc<Container>> {
        if let Some(c) = self.by_pid.get(&pid) {
            return c.clone();
        }
        let text = fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup")).ok()?;
        let found = match container_from_cgroup(&text) {
            Some(c) => Some(self.describe(&c).await),
            None => None,
        };
        self.by_pid.insert(pid, found.clone());
        found
    }

    async fn describe(&mut self, c: &CgroupContainer) -> Arc<Container> {
        if let Some((known, at)) = self.by_id.get(&c.id)
            && (known.name.is_some() || at.elapsed() < self.retry_after)
        {
            return known.clone();
        }
        let mut container = Container {
            id: c.id.clone(),
            name: None,
            image: None,
            labels: Vec::new(),
        };
        if let Some(docker) = &self.docker
            && matches!(c.runtime, Runtime::Docker | Runtime::Unknown)
            && let Ok(info) = docker.inspect(&c.id).await
        {
            container.name = Some(info.name);
            container.image = Some(info.image);
            container.labels = info.labels.into_iter().collect();
        }
        let container = Arc::new(container);
        self.by_id
            .insert(c.id.clone(), (container.clone(), Instant::now()));
        container
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a8a0b6c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d";

    fn check(cgroup: &str, expected: Option<(&str, Runtime)>) {
        let got = container_from_cgroup(cgroup);
        assert_eq!(
            got.as_ref().map(|c| (c.id.as_str(), c.runtime)),
            expected,
            "{cgroup}"
        );
    }

    #[test]
    fn cgroup_v1_docker() {
        check(
            &format!(
                "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
            ),
            Some((ID, Runtime::Docker)),
        );
    }

    #[test]
    fn cgroup_v2_systemd_driver() {
        check(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            Some((ID, Runtime::Docker)),
        );
        check(
            &format!("0::/system.slice/docker-{ID}.scope/init.scope\n"),
            Some((ID, Runtime::Docker)),
        );
    }

    #[test]
    fn cgroup_v2_cgroupfs_driver() {
        check(&format!("0::/docker/{ID}\n"), Some((ID, Runtime::Docker)));
    }

    #[test]
    fn kubernetes_containerd_crio_and_podman() {
        check(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope\n"
            ),
            Some((ID, Runtime::Containerd)),
        );
        check(
            &format!(
                "0::/system.slice/containerd.service/kubepods-besteffort-pod0a1b.slice:cri-containerd:{ID}\n"
            ),
            Some((ID, Runtime::Unknown)),
        );
        check(
            &format!(
                "11:memory:/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n"
            ),
            Some((ID, Runtime::Unknown)),
        );
        check(
            &format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
            Some((ID, Runtime::Crio)),
        );
        check(
            &format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            Some((ID, Runtime::Podman)),
        );
    }

    #[test]
    fn nested_containers_name_the_innermost() {
        let inner = ID.replace('4', "5");
        check(
            &format!("0::/docker/{ID}/docker/{inner}\n"),
            Some((inner.as_str(), Runtime::Docker)),
        );
    }

    #[test]
    fn host_processes_and_look_alikes_are_not_containers() {
        check("0::/init.scope\n", None);
        check("0::/user.slice/user-1000.slice/session-3.scope\n", None);
        // This sandbox's own cgroup: a 32-hex id that is no container.
        check(
            "4:memory:/process_api/90924e9cb82fccb81b6dd0904a165b01\n0::/\n",
            None,
        );
        check(&format!("0::/docker/{}\n", ID.to_uppercase()), None);
        check("garbage without colons", None);
    }
}
