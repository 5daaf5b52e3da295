//! A command's output to stdout. A closed stdout (`relay ... | head`) is an error of its
//! own kind, [`StdoutClosed`], so that a command ends quietly with success as ripgrep does,
//! instead of panicking in `println!`; and a broken pipe anywhere else (a socket to a
//! relay) is never mistaken for it.

use std::io::{self, Write};

/// The reader of stdout went away.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` to stdout and flushes; a closed stdout is [`StdoutClosed`].
pub fn out(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    closed_as_such(stdout.write_fmt(args).and_then(|()| stdout.flush()))
}

/// Writes `bytes` to stdout and flushes; a closed stdout is [`StdoutClosed`].
pub fn out_bytes(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    closed_as_such(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}

/// A command's error as one line for stderr: each cause once. An error that names its
/// source in its own message (`"{path}: {source}"`) and also reports it as its source would
/// otherwise print the cause twice (`a.zip: No such file or directory (os error 2): No such
/// file or directory (os error 2)`); a cause already said is left out.
pub fn error_line<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut line = String::new();
    for cause in chain {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// What to do about a file or network error of this kind, for a command's `hint:` line;
/// `None` for kinds where the message alone says more than a generic step would.
pub fn io_next_step(kind: io::ErrorKind) -> Option<&'static str> {
    use io::ErrorKind as K;
    Some(match kind {
        K::NotFound => "check the path (a relative path starts from the current directory)",
        K::PermissionDenied => {
            "run as a user allowed to use that path, or change its owner or mode"
        }
        K::AlreadyExists => "remove it first, or choose another path",
        K::IsADirectory => "give the path of a file, not of a directory",
        K::NotADirectory => "a part of the path is a file, not a directory: check the path",
        K::ReadOnlyFilesystem => "choose a location on a writable filesystem",
        K::StorageFull | K::QuotaExceeded => {
            "free some space there (or choose another location) and run the command again"
        }
        K::AddrInUse => {
            "another process listens there: stop it, or choose another address (`ss -ltnp` names the process)"
        }
        K::AddrNotAvailable => "that address is not one of this host's: check the listen address",
        K::ConnectionRefused => {
            "nothing listens at that address: is the relay running there, on that port? `relay ping URL` walks each step"
        }
        K::TimedOut | K::HostUnreachable | K::NetworkUnreachable => {
            "check the address, the route and the firewall (`relay ping URL` walks each step)"
        }
        _ => return None,
    })
}

fn closed_as_such(written: io::Result<()>) -> io::Result<()> {
    written.map_err(|e| {
        if e.kind() == io::ErrorKind::BrokenPipe {
            io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
        } else {
            e
        }
    })
}

/// [`out`], then a newline.
pub fn outln(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    out(format_args!("{args}\n"))
}

/// Whether `cause` (one link of an error's chain) is a closed stdout.
pub fn is_closed(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
        .is_some_and(|inner| inner.is::<StdoutClosed>())
        || cause.is::<StdoutClosed>()
}

/// `println!` that returns the write's result: `outln!("...")?`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::stdout::outln(format_args!($($arg)*)) };
}

/// `print!` that returns the write's result: `out!("...")?`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout::out(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_counts_not_any_broken_pipe() {
        let closed = io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed);
        assert!(is_closed(&closed));
        let socket = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(!is_closed(&socket));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Named {
        path: String,
        source: io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let named = Named {
            path: "all.zip".to_owned(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let chain: Vec<&(dyn std::error::Error + 'static)> = vec![&named, &named.source];
        assert_eq!(error_line(chain), "all.zip: entity not found");
        // Causes that add something are all said, outermost first.
        let outer = io::Error::other("importing into feeds");
        let chain: Vec<&(dyn std::error::Error + 'static)> = vec![&outer, &named, &named.source];
        assert_eq!(
            error_line(chain),
            "importing into feeds: all.zip: entity not found"
        );
    }
}
