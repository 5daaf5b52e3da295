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
}
