//! The two actions a verdict can call for beyond an audit: "block" stops a container and
//! keeps it stopped, "prevent" kills one process. Deciding is `defense`'s, auditing and
//! choosing when to act are the runner's; this module only acts, and reports what it did
//! (or which step failed) in words fit for the audit.
//!
//! Blocking talks to the Docker Engine API (`monitor::docker`). A plain stop is not
//! enough: a container with `--restart=always` is started again when the daemon restarts
//! (or the host boots), so the restart policy is set to `no` first, then the container is
//! stopped, then the engine is asked whether both took. Orchestrators (Kubernetes, Swarm)
//! replace a stopped container with a fresh one whatever its policy; that is theirs to
//! decide, not this agent's.

use std::fmt;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};

use crate::monitor::docker::{DockerClient, DockerError, RestartPolicy};

/// How long a blocked container's processes get between the stop signal and SIGKILL.
/// The container is presumed compromised: long enough for a well-behaved app to flush,
/// short enough that an attacker trapping SIGTERM gains nothing.
pub const BLOCK_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {id}: setting the restart policy to no failed: {source}")]
    SetRestartPolicy {
        id: String,
        #[source]
        source: DockerError,
    },
    #[error("block {id}: stopping the container failed: {source}")]
    Stop {
        id: String,
        #[source]
        source: DockerError,
    },
    #[error("block {id}: inspecting the stopped container failed: {source}")]
    Verify {
        id: String,
        #[source]
        source: DockerError,
    },
    #[error("block {id}: the engine still reports the container {status} after the stop")]
    StillRunning { id: String, status: String },
    #[error("block {id}: the engine reports restart policy {policy:?} after the update to no")]
    PolicyNotChanged { id: String, policy: String },
}

/// Stops the container `id` (an id or a name) so that the engine does not start it again,
/// not even across a daemon restart. Returns the audit's description of what was done.
pub async fn block(docker: &DockerClient, id: &str) -> Result<String, BlockError> {
    // The policy first: were the container stopped first, and its process died in
    // between for any other reason, `always` or `on-failure` would start it again.
    docker
        .set_restart_policy(id, RestartPolicy::No)
        .await
        .map_err(|source| BlockError::SetRestartPolicy {
            id: id.to_owned(),
            source,
        })?;
    docker
        .stop(id, BLOCK_GRACE)
        .await
        .map_err(|source| BlockError::Stop {
            id: id.to_owned(),
            source,
        })?;
    let info = docker
        .inspect(id)
        .await
        .map_err(|source| BlockError::Verify {
            id: id.to_owned(),
            source,
        })?;
    if info.running {
        return Err(BlockError::StillRunning {
            id: id.to_owned(),
            status: info.status,
        });
    }
    // The engine treats an empty name as `no` too, but after our update it says `no`;
    // anything else means the update did not land where we think it did.
    if info.restart_policy != "no" {
        return Err(BlockError::PolicyNotChanged {
            id: id.to_owned(),
            policy: info.restart_policy,
        });
    }
    let short: String = info.id.chars().take(12).collect();
    Ok(format!(
        "blocked container {} ({short}): restart policy set to no, stopped",
        info.name
    ))
}

/// What `kill_process` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// SIGKILL was delivered.
    Killed { pid: u32 },
    /// There was no such process any more (ESRCH): it exited before the signal.
    AlreadyGone { pid: u32 },
}

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Killed::Killed { pid } => write!(f, "killed process {pid} (SIGKILL)"),
            Killed::AlreadyGone { pid } => {
                write!(f, "process {pid} had already exited; nothing to kill")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("refusing to kill pid {pid}: {reason}")]
    Refused { pid: u32, reason: &'static str },
    /// The pid names another process than the one the event saw (reused, or moved).
    #[error("not killed: pid {pid} {reason}")]
    NotTheProcess { pid: u32, reason: String },
    /// The container engine's own process, known by what the kernel says of it.
    #[error("not killed: pid {pid} is the container runtime ({what}); the agent never kills it")]
    Runtime { pid: u32, what: String },
    #[error("killing process {pid} failed: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// "prevent": SIGKILL to one process. Refuses pid 0 (the caller's process group), 1
/// (init: on the host that is the machine, in a pid namespace the container) and the
/// agent itself, any of whose threads' ids would signal the agent too.
pub fn kill_process(pid: u32) -> Result<Killed, KillError> {
    let target = never_killed(pid)?;
    match rustix::process::kill_process(target, Signal::KILL) {
        Ok(()) => Ok(Killed::Killed { pid }),
        Err(Errno::SRCH) => Ok(Killed::AlreadyGone { pid }),
        Err(e) => Err(KillError::Signal {
            pid,
            source: e.into(),
        }),
    }
}

/// "prevent" for the process an event saw, and only it: the pid is pinned with a pidfd
/// (`pidfd_open`), then checked while pinned to be that process (started no later than
/// the event, `event_ns`; in the event's container, `container`, by its cgroup), and the
/// SIGKILL goes through the pidfd. A pid reused between the event and the kill, or a
/// process that is not where the event said, is never signalled.
pub fn kill_event_process(
    pid: u32,
    event_ns: i128,
    container: Option<&str>,
) -> Result<Killed, KillError> {
    let target = never_killed(pid)?;
    let pidfd = match rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Ok(Killed::AlreadyGone { pid }),
        Err(e) => {
            return Err(KillError::Signal {
                pid,
                source: e.into(),
            });
        }
    };
    // From here the pidfd names one process: if it exits and the pid is reused, /proc
    // shows the newcomer but the signal below fails with ESRCH.
    let not_it = |reason: String| Err(KillError::NotTheProcess { pid, reason });
    match process_start_ns(pid) {
        // Start times are known to a clock tick (and the boot time to a second).
        Some(started) if started > event_ns + 1_000_000_000 => {
            return not_it("started after the event: the pid was reused".into());
        }
        Some(_) => {}
        None => return Ok(Killed::AlreadyGone { pid }),
    }
    if let Some(expected) = container {
        let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| crate::monitor::attribution::container_from_cgroup(&text));
        if now
            .as_ref()
            .is_none_or(|c| !c.id.eq_ignore_ascii_case(expected))
        {
            return not_it(format!(
                "is not in container {} now",
                crate::monitor::event::short_id(expected)
            ));
        }
    }
    if let Some(what) = runtime_process(pid) {
        return Err(KillError::Runtime { pid, what });
    }
    match rustix::process::pidfd_send_signal(&pidfd, Signal::KILL) {
        Ok(()) => Ok(Killed::Killed { pid }),
        Err(Errno::SRCH) => Ok(Killed::AlreadyGone { pid }),
        Err(e) => Err(KillError::Signal {
            pid,
            source: e.into(),
        }),
    }
}

/// Refuses the pids the agent never kills: 0 (the caller's process group), 1 (init: on the
/// host that is the machine, in a pid namespace the container) and the agent itself, any
/// of whose threads' ids would signal the agent too.
fn never_killed(pid: u32) -> Result<Pid, KillError> {
    let refused = |reason| Err(KillError::Refused { pid, reason });
    match pid {
        0 => return refused("pid 0 is the agent's own process group"),
        1 => return refused("pid 1 is init"),
        _ => {}
    }
    if pid == std::process::id() || is_own_thread(pid) {
        return refused("it is the agent itself");
    }
    match i32::try_from(pid).ok().and_then(Pid::from_raw) {
        Some(target) => Ok(target),
        None => refused("not a valid pid"),
    }
}

/// The container engine's programs. A process is the engine's when its executable is
/// one of these files as the host has them (the same inode), or when a shim or an OCI
/// runtime started it and it is not in a container (runc re-executes itself from a
/// sealed memory copy while it sets a container up). Never by `comm`, which a process
/// sets itself, nor by a path, which means something else inside a container.
const RUNTIME_PROGRAMS: [&str; 12] = [
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "docker-proxy",
    "docker-init",
    "runc",
    "crun",
    "conmon",
    "podman",
    "crio",
];
/// The runtime programs whose host-side children are the runtime too.
const RUNTIME_PARENTS: [&str; 6] = [
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "runc",
    "crun",
    "conmon",
];
const RUNTIME_DIRS: [&str; 9] = [
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
    "bin",
    "sbin",
    "usr/libexec/docker",
    "usr/libexec/podman",
    "usr/lib/docker",
];

/// (device, inode) of each runtime program the host has, read once. The host's files
/// through `/proc/1/root` (the agent may run in a container of its own, with the host's
/// pid namespace), else this filesystem's.
fn runtime_files() -> &'static std::collections::HashMap<(u64, u64), &'static str> {
    use std::os::unix::fs::MetadataExt;
    static FILES: std::sync::OnceLock<std::collections::HashMap<(u64, u64), &'static str>> =
        std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let root = if std::fs::metadata("/proc/1/root/usr").is_ok() {
            std::path::PathBuf::from("/proc/1/root")
        } else {
            std::path::PathBuf::from("/")
        };
        let mut files = std::collections::HashMap::new();
        for dir in RUNTIME_DIRS {
            for name in RUNTIME_PROGRAMS {
                if let Ok(m) = std::fs::metadata(root.join(dir).join(name)) {
                    files.entry((m.dev(), m.ino())).or_insert(name);
                }
            }
        }
        files
    })
}

/// What makes `pid` the container runtime's, if it is: see [`RUNTIME_PROGRAMS`].
fn runtime_process(pid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let in_container = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| crate::monitor::attribution::container_from_cgroup(&text))
            .is_some()
    };
    // The executable the kernel runs for it, whatever its name or path.
    let program = |pid: u32| {
        let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        runtime_files().get(&(m.dev(), m.ino())).copied()
    };
    if in_container(pid) {
        return None;
    }
    if let Some(name) = program(pid) {
        return Some(name.to_owned());
    }
    let parent = parent_pid(pid)?;
    let name = program(parent).filter(|name| RUNTIME_PARENTS.contains(name))?;
    Some(format!("started by {name}, pid {parent}"))
}

/// The parent of `pid` (`/proc/PID/stat` field 4).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// When `pid` started, in nanoseconds since the epoch (`/proc/PID/stat` field 22, in
/// clock ticks since boot, plus `btime` of `/proc/stat`); `None` when it is gone.
fn process_start_ns(pid: u32) -> Option<i128> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name's closing parenthesis: state is field 3, starttime 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i128 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = i128::from(rustix::param::clock_ticks_per_second().max(1));
    Some(boot * 1_000_000_000 + i128::from(ticks) * 1_000_000_000 / hz)
}

/// A thread id of this process: `kill(2)` with one signals the whole process.
fn is_own_thread(pid: u32) -> bool {
    std::path::Path::new("/proc/self/task")
        .join(pid.to_string())
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_the_process_group_and_the_agent_are_never_killed() {
        // Another thread of this process, alive while its id is tried.
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
            tid_tx.send(tid).unwrap();
            let _ = done_rx.recv();
        });
        let other_thread = tid_rx.recv().unwrap();
        assert_ne!(other_thread, std::process::id());
        for pid in [0, 1, std::process::id(), other_thread, u32::MAX] {
            assert!(
                matches!(kill_process(pid), Err(KillError::Refused { .. })),
                "{pid}"
            );
        }
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }
}
