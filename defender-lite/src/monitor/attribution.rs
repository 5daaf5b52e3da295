//! Which container an event belongs to. Events that name a process (exec, exit, listen,
//! connect, raw_socket): pid -> container id from `/proc/<pid>/cgroup`, then id -> name,
//! image and labels from the Docker Engine API (`docker.rs`). Captured packets (dns_query,
//! syn) carry no pid: one that came in on a container's veth -> the namespace the veth
//! leads to -> the container whose main process is in it (`netns.rs`); any other -> its
//! source address -> container from the addresses the engine lists for its running
//! containers. Each attributed event says which way (`attributed_by`).
//!
//! The cgroup path names the container in every common layout: cgroup v1
//! (`/docker/<id>`), v2 with the systemd driver (`/system.slice/docker-<id>.scope`),
//! containerd and CRI-O under Kubernetes (`cri-containerd-<id>.scope`, `crio-<id>.scope`,
//! `/kubepods/.../pod<uid>/<id>`), and Podman (`libpod-<id>.scope`). The innermost id wins,
//! so a container inside a container is attributed to the inner one.
//!
//! Every lookup is cached: pid -> id until the process exits, id -> details for the
//! container's life, address -> container in a map fetched with `GET /containers/json`.
//! A packet costs one `HashMap` lookup; the map is fetched again when a source address
//! it does not know shows up (at most once a second, so a scan from outside cannot turn
//! into a stream of API calls) and when it is older than ten seconds (Docker hands a
//! stopped container's address to the next one). Loopback sources, and addresses no
//! running container has (the host's own, a `--network host` container's), stay
//! unattributed: host. An address two containers claim is left unattributed rather
//! than guessed.
//!
//! When the engine cannot be asked (no socket, not Docker), process events still carry
//! the id, and packets stay unattributed. A failing engine is reported once per outage,
//! as a `gap` event ([`Attributor::take_gap`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::docker::{DockerClient, DockerError, RunningContainer};
use super::event::{AttributedBy, Container, Entered, Event, EventKind, Gap, Source};
use super::netns::Rtnl;

/// An unknown source address fetches the container list again at most this often.
const ADDRESSES_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The container list is trusted this long; then the next packet fetches it again.
const ADDRESSES_MAX_AGE: Duration = Duration::from_secs(10);

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
    by_addr: Addresses,
    /// Re-ask the engine about an id it could not describe after this long.
    retry_after: Duration,
    /// The engine failed and that was reported; cleared when it answers again.
    engine_failing: bool,
    gap: Option<Event>,
    by_namespace: Namespaces,
}

/// Packets that came in on a container's veth -> the container, by network namespace:
/// the veth's peer namespace id (the kernel's), and each running container's main pid's
/// namespace id. Rebuilt with the address map (the same list, the same ages).
#[derive(Default)]
struct Namespaces {
    rtnl: Option<Rtnl>,
    /// Opening the netlink socket failed once: reported, not retried.
    rtnl_failed: bool,
    /// The running containers of the last list.
    listed: Vec<Arc<Container>>,
    /// Container id -> its main process, from the engine (checked against the process's
    /// cgroup before use).
    pids: HashMap<String, u32>,
    /// Namespace id -> the container in it; `None` when two claim it (a shared network
    /// namespace: no one container sent the packet).
    by_nsid: HashMap<i32, Option<Arc<Container>>>,
    /// Interface index -> container (or none) for this list.
    by_link: HashMap<u32, Option<Arc<Container>>>,
}

/// Source address -> container, from the engine's list of running containers. `None`
/// entries are addresses the last list did not hold (the host's own), so that they do
/// not fetch the list again until it is stale.
#[derive(Default)]
struct Addresses {
    map: HashMap<IpAddr, Option<Arc<Container>>>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last attempt, successful or not.
    tried: Option<Instant>,
}

impl Attributor {
    pub fn new(docker: Option<DockerClient>) -> Self {
        Attributor {
            proc: PathBuf::from("/proc"),
            docker,
            by_pid: HashMap::new(),
            by_id: HashMap::new(),
            by_addr: Addresses::default(),
            retry_after: Duration::from_secs(30),
            engine_failing: false,
            gap: None,
            by_namespace: Namespaces::default(),
        }
    }

    /// Sets `event.container` where the event names a process in a container, or is a
    /// packet from a container's address. Exits drop the process from the cache (after
    /// attributing the exit itself).
    pub async fn attribute(&mut self, event: &mut Event) {
        if event.container.is_some() {
            return;
        }
        let src = match &event.kind {
            EventKind::DnsQuery(q) => Some(q.src.ip()),
            EventKind::Syn(s) => Some(s.src.ip()),
            _ => None,
        };
        if let Some(src) = src {
            if let Some(entered) = event.entered.clone()
                && let Some(c) = self.container_entered(&entered).await
            {
                event.container = Some(c);
                event.attributed_by = Some(AttributedBy::Namespace);
                return;
            }
            event.container = self.container_at(src).await;
            event.attributed_by = event.container.as_ref().map(|_| AttributedBy::Address);
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
        event.attributed_by = event.container.as_ref().map(|_| AttributedBy::Cgroup);
        if matches!(event.kind, EventKind::Exit(_)) {
            self.by_pid.remove(&pid);
        }
    }

    /// A `gap` event saying the engine stopped answering, once per outage; the caller
    /// puts it in the stream.
    pub fn take_gap(&mut self) -> Option<Event> {
        self.gap.take()
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

    /// The running container that has this address on one of its networks, or `None`
    /// for loopback, the host's addresses and addresses no container has.
    pub async fn container_at(&mut self, ip: IpAddr) -> Option<Arc<Container>> {
        let ip = ip.to_canonical();
        if ip.is_loopback() || ip.is_unspecified() || self.docker.is_none() {
            return None;
        }
        let fresh = self
            .by_addr
            .fetched
            .is_some_and(|t| t.elapsed() < ADDRESSES_MAX_AGE);
        if fresh && let Some(known) = self.by_addr.map.get(&ip) {
            return known.clone();
        }
        let may_fetch = self
            .by_addr
            .tried
            .is_none_or(|t| t.elapsed() >= ADDRESSES_MIN_INTERVAL);
        if may_fetch && self.fetch_addresses().await {
            return self.by_addr.map.entry(ip).or_insert(None).clone();
        }
        // Not now (fetched a moment ago, or the engine failed): the last list answers.
        self.by_addr.map.get(&ip).cloned().flatten()
    }

    /// Replaces the address map with the engine's current list; false if it failed
    /// (the last map stays).
    async fn fetch_addresses(&mut self) -> bool {
        let Some(docker) = &self.docker else {
            return false;
        };
        self.by_addr.tried = Some(Instant::now());
        let running = match docker.running().await {
            Ok(running) => running,
            Err(e) => {
                self.engine_failed(
                    &e,
                    "DNS queries and SYNs from containers not seen before stay unattributed",
                );
                return false;
            }
        };
        self.engine_answered();
        let mut map: HashMap<IpAddr, Option<Arc<Container>>> = HashMap::new();
        let now = Instant::now();
        // Containers that are gone need no details any more.
        self.by_id
            .retain(|id, _| running.iter().any(|c| &c.id == id));
        let mut listed = Vec::with_capacity(running.len());
        for one in running {
            let container = self.share(&one, now);
            listed.push(container.clone());
            for addr in one.addresses {
                match map.entry(addr.to_canonical()) {
                    Entry::Vacant(v) => {
                        v.insert(Some(container.clone()));
                    }
                    // Two containers claim it (overlapping networks): name neither.
                    Entry::Occupied(mut o) => {
                        if o.get().as_ref().is_some_and(|c| c.id != container.id) {
                            o.insert(None);
                        }
                    }
                }
            }
        }
        self.by_addr.map = map;
        self.by_addr.fetched = Some(now);
        let ns = &mut self.by_namespace;
        ns.listed = listed;
        ns.pids
            .retain(|id, _| ns.listed.iter().any(|c| &c.id == id));
        ns.by_nsid.clear();
        ns.by_link.clear();
        true
    }

    /// The container at the other end of the veth a packet came in on: the one whose
    /// network namespace the kernel says the veth leads to. `None` when the interface is
    /// no veth (or was replaced since the capture opened), or its namespace is no one
    /// container's; the caller then falls back to the source address.
    async fn container_entered(&mut self, entered: &Entered) -> Option<Arc<Container>> {
        self.docker.as_ref()?;
        let fresh = self
            .by_addr
            .fetched
            .is_some_and(|t| t.elapsed() < ADDRESSES_MAX_AGE);
        let may_fetch = self
            .by_addr
            .tried
            .is_none_or(|t| t.elapsed() >= ADDRESSES_MIN_INTERVAL);
        if let Some(known) = self.by_namespace.by_link.get(&entered.index)
            && (fresh || !may_fetch)
        {
            return known.clone();
        }
        if may_fetch && (!fresh || !self.by_namespace.by_link.contains_key(&entered.index)) {
            self.fetch_addresses().await;
        }
        let link = match self.rtnl()?.link(&entered.interface) {
            Ok(link) => link,
            Err(e) => {
                self.netlink_failed(&e);
                return None;
            }
        };
        let found = match link {
            Some(link) if link.index == entered.index => match link.veth_peer_nsid {
                Some(nsid) => {
                    if !self.by_namespace.by_nsid.contains_key(&nsid) {
                        self.map_namespaces().await;
                    }
                    self.by_namespace.by_nsid.get(&nsid).cloned().flatten()
                }
                None => None,
            },
            _ => None,
        };
        self.by_namespace
            .by_link
            .insert(entered.index, found.clone());
        found
    }

    /// Namespace id -> container for every listed container: its main pid from the
    /// engine (asked once per container), that pid's namespace id from the kernel, and the
    /// pid's cgroup checked to still name the container (a pid reused by another
    /// process is not the container's).
    async fn map_namespaces(&mut self) {
        let listed = self.by_namespace.listed.clone();
        let mut by_nsid: HashMap<i32, Option<Arc<Container>>> = HashMap::new();
        for c in listed {
            let pid = match self.by_namespace.pids.get(&c.id) {
                Some(pid) => *pid,
                None => {
                    let Some(docker) = &self.docker else {
                        return;
                    };
                    match docker.inspect(&c.id).await {
                        Ok(info) if info.running && info.pid > 0 => {
                            self.by_namespace.pids.insert(c.id.clone(), info.pid);
                            info.pid
                        }
                        Ok(_) => continue,
                        // Gone since the list: nothing to map.
                        Err(DockerError::Status { status, .. }) if status.as_u16() == 404 => {
                            continue;
                        }
                        Err(e) => {
                            self.engine_failed(
                                &e,
                                "packets are placed by their source address, not the namespace they came from",
                            );
                            return;
                        }
                    }
                }
            };
            let nsid = match self.rtnl() {
                Some(rtnl) => rtnl.nsid_of_pid(pid),
                None => return,
            };
            let still_it = fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup"))
                .ok()
                .and_then(|t| container_from_cgroup(&t))
                .is_some_and(|cg| cg.id == c.id);
            if !still_it {
                self.by_namespace.pids.remove(&c.id);
                continue;
            }
            match nsid {
                // In the host's namespace (`--network host`): no veth leads there.
                Ok(None) => {}
                Ok(Some(nsid)) => match by_nsid.entry(nsid) {
                    Entry::Vacant(v) => {
                        v.insert(Some(c));
                    }
                    Entry::Occupied(mut o) => {
                        if o.get().as_ref().is_some_and(|o| o.id != c.id) {
                            o.insert(None);
                        }
                    }
                },
                Err(e) => {
                    self.netlink_failed(&e);
                    return;
                }
            }
        }
        self.by_namespace.by_nsid = by_nsid;
    }

    /// The netlink socket, opened on first use; `None` (reported once) if it cannot be.
    fn rtnl(&mut self) -> Option<&mut Rtnl> {
        if self.by_namespace.rtnl.is_none() && !self.by_namespace.rtnl_failed {
            match Rtnl::open() {
                Ok(r) => self.by_namespace.rtnl = Some(r),
                Err(e) => {
                    self.by_namespace.rtnl_failed = true;
                    self.netlink_failed(&e);
                }
            }
        }
        self.by_namespace.rtnl.as_mut()
    }

    fn netlink_failed(&mut self, err: &std::io::Error) {
        if self.gap.is_none() {
            self.gap = Some(Event::now(
                Source::Agent,
                EventKind::Gap(Gap {
                    what: "attribution".to_string(),
                    reason: format!(
                        "asking the kernel which namespace a veth leads to: {err}: packets are placed by their source address"
                    ),
                    lost: None,
                }),
            ));
        }
    }

    /// The shared details of a listed container: the cached ones if the engine still
    /// says the same, so process and packet events point at one allocation.
    fn share(&mut self, listed: &RunningContainer, now: Instant) -> Arc<Container> {
        let container = Container {
            id: listed.id.clone(),
            name: Some(listed.name.clone()),
            image: Some(listed.image.clone()),
            labels: listed
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        if let Some((known, _)) = self.by_id.get(&listed.id)
            && **known == container
        {
            return known.clone();
        }
        let container = Arc::new(container);
        self.by_id
            .insert(listed.id.clone(), (container.clone(), now));
        container
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
        {
            match docker.inspect(&c.id).await {
                Ok(info) => {
                    self.engine_answered();
                    container.name = Some(info.name);
                    container.image = Some(info.image);
                    container.labels = info.labels.into_iter().collect();
                }
                // Not Docker's (a containerd or CRI-O container seen as `Unknown`): the
                // id is all there is.
                Err(DockerError::Status { status, .. }) if status.as_u16() == 404 => {}
                Err(e) => self.engine_failed(
                    &e,
                    "container events carry the id without name, image and labels",
                ),
            }
        }
        let container = Arc::new(container);
        self.by_id
            .insert(c.id.clone(), (container.clone(), Instant::now()));
        container
    }

    fn engine_failed(&mut self, err: &DockerError, consequence: &str) {
        if self.engine_failing {
            return;
        }
        self.engine_failing = true;
        self.gap = Some(Event::now(
            Source::Agent,
            EventKind::Gap(Gap {
                what: "attribution".to_string(),
                reason: format!("{err}: {consequence} until it answers again"),
                lost: None,
            }),
        ));
    }

    fn engine_answered(&mut self) {
        self.engine_failing = false;
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

    /// An engine that does not answer: packets stay unattributed, and the stream says so
    /// once, not once per packet. Loopback never asks.
    #[tokio::test]
    async fn an_unreachable_engine_is_reported_once_and_packets_stay_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attributor::new(Some(DockerClient::new(dir.path().join("no.sock"))));
        assert_eq!(a.container_at("127.0.0.1".parse().unwrap()).await, None);
        assert_eq!(a.container_at("::1".parse().unwrap()).await, None);
        assert!(a.take_gap().is_none());
        assert_eq!(a.container_at("10.213.0.2".parse().unwrap()).await, None);
        let gap = a.take_gap().expect("a gap for the failed list");
        let EventKind::Gap(g) = &gap.kind else {
            panic!("{gap:?}")
        };
        assert_eq!(g.what, "attribution");
        assert!(
            g.reason.contains("cannot connect") && g.reason.contains("stay unattributed"),
            "{}",
            g.reason
        );
        // Another unknown address later asks again, fails again, and says nothing new.
        a.by_addr.tried = Instant::now().checked_sub(ADDRESSES_MIN_INTERVAL);
        assert_eq!(a.container_at("10.213.0.3".parse().unwrap()).await, None);
        assert!(a.take_gap().is_none());
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
