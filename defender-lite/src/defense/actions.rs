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
    let refused = |reason| Err(KillError::Refused { pid, reason });
    match pid {
        0 => return refused("pid 0 is the agent's own process group"),
        1 => return refused("pid 1 is init"),
        _ => {}
    }
    if pid == std::process::id() || is_own_thread(pid) {
        return refused("it is the agent itself");
    }
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return refused("not a valid pid");
    };
    match rustix::process::kill_process(target, Signal::KILL) {
        Ok(()) => Ok(Killed::Killed { pid }),
        Err(Errno::SRCH) => Ok(Killed::AlreadyGone { pid }),
        Err(e) => Err(KillError::Signal {
            pid,
            source: e.into(),
        }),
    }
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
