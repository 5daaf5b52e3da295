//! Processes from `/proc`: what one process is (`stat`, `status`, `exe`, `cmdline`), and
//! the reconciliation pass that compares all of `/proc` with what the process connector
//! reported.
//!
//! The connector (`proc_connector.rs`) is the live source; this pass catches what it
//! missed (events dropped on a full socket buffer, processes started before the agent)
//! and stands in for it where the kernel refuses the connector. A process is identified
//! by pid *and* start time, so a reused pid is a new process.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::event::{Exec, Exit};
use super::procfs::pids;

/// Identity of a process: its start time in clock ticks since boot (`stat` field 22).
pub type StartTime = u64;

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    pub start: StartTime,
}

/// Reads process facts under a proc mount (normally `/proc`).
#[derive(Debug, Clone)]
pub struct ProcReader {
    proc: PathBuf,
}

impl Default for ProcReader {
    fn default() -> Self {
        ProcReader::new("/proc")
    }
}

impl ProcReader {
    pub fn new(proc: impl Into<PathBuf>) -> Self {
        ProcReader { proc: proc.into() }
    }

    pub fn root(&self) -> &Path {
        &self.proc
    }

    pub fn stat(&self, pid: u32) -> Option<Stat> {
        parse_stat(&fs::read_to_string(self.dir(pid).join("stat")).ok()?)
    }

    /// An exec event for a running process, with whatever could still be read: a
    /// process that already exited leaves at most its pid (and, as a zombie, its stat).
    pub fn exec(&self, pid: u32) -> (Exec, Option<StartTime>) {
        let dir = self.dir(pid);
        let stat = self.stat(pid);
        let uid = fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| parse_real_uid(&s));
        // Not a file path (`/` for runc's init, `/memfd:...` for an in-memory copy): the
        // executable is unknown, and the policy goes by the process name instead.
        let exe = fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| p.starts_with('/') && p.len() > 1 && !p.starts_with("/memfd:"));
        let argv = fs::read(dir.join("cmdline"))
            .map(|b| parse_cmdline(&b))
            .unwrap_or_default();
        let exec = Exec {
            pid,
            ppid: stat.as_ref().map(|s| s.ppid),
            uid,
            comm: stat.as_ref().map(|s| s.comm.clone()).unwrap_or_default(),
            exe,
            argv,
        };
        (exec, stat.map(|s| s.start))
    }

    fn dir(&self, pid: u32) -> PathBuf {
        self.proc.join(pid.to_string())
    }
}

/// The processes the monitor believes are running, by pid, with start time when known.
#[derive(Debug, Default)]
pub struct ProcessTable {
    known: HashMap<u32, Option<StartTime>>,
}

/// What a reconciliation pass found.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Processes running that the table did not know (or whose pid was reused).
    pub started: Vec<Exec>,
    /// Processes the table knew that are gone.
    pub ended: Vec<Exit>,
}

impl ProcessTable {
    pub fn insert(&mut self, pid: u32, start: Option<StartTime>) {
        self.known.insert(pid, start);
    }

    pub fn remove(&mut self, pid: u32) -> bool {
        self.known.remove(&pid).is_some()
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.known.contains_key(&pid)
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// One full pass over `/proc`: brings the table in line with it and returns the
    /// difference. Kernel threads (no `exe`, parent kthreadd) are left out.
    pub fn reconcile(&mut self, reader: &ProcReader) -> Reconciled {
        let mut out = Reconciled::default();
        let mut seen: HashMap<u32, Option<StartTime>> = HashMap::new();
        for pid in pids(reader.root()) {
            let Some(stat) = reader.stat(pid) else {
                continue; // gone since the directory was listed
            };
            if is_kernel_thread(pid, &stat) {
                continue;
            }
            let known = self.known.get(&pid);
            let same = match known {
                Some(Some(start)) => *start == stat.start,
                Some(None) => true, // known from a fork event, start not read
                None => false,
            };
            if !same {
                if matches!(known, Some(Some(_))) {
                    // Same pid, different process: the old one ended unseen.
                    out.ended.push(Exit {
                        pid,
                        code: None,
                        signal: None,
                    });
                }
                let (exec, _) = reader.exec(pid);
                out.started.push(exec);
            }
            seen.insert(pid, Some(stat.start));
        }
        for &pid in self.known.keys() {
            if !seen.contains_key(&pid) {
                out.ended.push(Exit {
                    pid,
                    code: None,
                    signal: None,
                });
            }
        }
        out.ended.sort_by_key(|e| e.pid);
        self.known = seen;
        out
    }
}

fn is_kernel_thread(pid: u32, stat: &Stat) -> bool {
    pid == 2 || stat.ppid == 2
}

/// Parses `/proc/<pid>/stat`. The command name sits in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After ")": state(3) ppid(4) ... starttime(22); index 0 here is field 3.
    let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

/// The real uid from `/proc/<pid>/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub fn parse_real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `/proc/<pid>/cmdline`: NUL-separated arguments, lossily decoded.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_and_spaces_in_the_name() {
        let s = parse_stat("4242 (evil) (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 12345 67 18446744073709551615").unwrap();
        assert_eq!(
            s,
            Stat {
                comm: "evil) (x) y".into(),
                ppid: 17,
                start: 987654
            }
        );
        assert_eq!(parse_stat("12 (short) S"), None);
    }

    #[test]
    fn status_uid_and_cmdline() {
        assert_eq!(
            parse_real_uid("Name:\tbash\nUid:\t1000\t0\t0\t0\n"),
            Some(1000)
        );
        assert_eq!(
            parse_cmdline(b"nc\0-l\0\xff4444\0"),
            vec!["nc", "-l", "\u{fffd}4444"]
        );
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn reconciling_this_host_finds_itself_then_nothing_new() {
        let reader = ProcReader::default();
        let mut table = ProcessTable::default();
        let first = table.reconcile(&reader);
        let me = std::process::id();
        assert!(first.started.iter().any(|e| e.pid == me));
        let second = table.reconcile(&reader);
        assert!(!second.started.iter().any(|e| e.pid == me));
    }
}
