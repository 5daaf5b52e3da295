//! The agent's command line, as the relay's `cli/` is laid out: one file per subcommand
//! (its arguments and its `run`), and here the command list, the dispatch and what every
//! command shares (stdout, outcomes, hints). The library modules they call return data
//! and errors; what a command prints, it prints here.
//! Exit codes: 0 success, 1 a check failed (a bundle did not verify), 2 an error.

mod apps;
mod audits;
mod docs;
mod events;
mod model;
mod monitor;
mod scan;
mod status;
mod sync;
mod verify;

use anyhow::Context;
use clap::{Parser, Subcommand};

pub use scan::ScanFormat;
pub use status::describe;

/// `--version`: the package's version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_COMMIT"),
    ")"
);

/// Lightweight agent that applies intelligence bundles mirrored by a relay.
#[derive(Debug, Parser)]
#[command(name = "defender-lite", version = VERSION, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a bundle as the agent does before applying it.
    ///
    /// Verify a bundle exactly as the agent does before applying it: signature by a
    /// trusted key, every file's hash and size, layout, caps and expiry.
    /// Exit 0 with a summary, or 1 with the rule broken.
    Verify(verify::VerifyArgs),
    /// Follow a relay or a custom location, applying each newer bundle.
    ///
    /// Follow a relay or a custom location: check the sources in order, apply a newer
    /// bundle atomically (the last good one is kept). Without --once, keep checking:
    /// every sync.check_every (24 h) plus jitter, every sync.retry_every (1 h) while
    /// checks fail. Exit 1 (with --once) when no source could be checked.
    Sync(sync::SyncArgs),
    /// Find vulnerable packages in an image.
    ///
    /// PATH is a root filesystem directory, a flat tar (`docker export`, gzip or not) or a
    /// `docker save` archive (layers applied in order, whiteouts honoured). Reads dpkg, apk,
    /// rpm (sqlite), Python, npm, Go binaries and Cargo.lock, and matches them against the
    /// feed's OSV records. When no package database is found it says so (never a silent zero).
    /// Exit 0; 1 when --fail-on is given and a finding is at or above it, or nothing could be
    /// scanned; 2 on errors.
    Scan(scan::ScanArgs),
    /// Print runtime events as they happen, each attributed to its container.
    ///
    /// Print runtime events as they happen: process exec/exit, listening sockets,
    /// outbound connections, raw/packet sockets, and DNS queries and SYNs captured on
    /// the given interfaces; each attributed to its container. Or read them from a
    /// JSON-lines file (`--events`; schema in EVENTS.md). Exit 1 if input lines were bad.
    Events(events::EventsArgs),
    /// Runtime defense: judge events, audit violations and act on them.
    ///
    /// Runtime defense: judge events from the host (or from --events) against per-image
    /// models, rules and the feed; audit each violation (stdout, the runtime database, the
    /// audit file, the webhook) and act on it: prevent kills the process, block stops the
    /// container and keeps it stopped. Runs until SIGTERM or SIGINT; with --events, to
    /// the end of the input (exit 1 if input lines were bad).
    Monitor(crate::defense::runner::MonitorArgs),
    /// The runtime models the monitor learned, per image.
    ///
    /// An image's model, or `host` for host processes: list, show, promote (enforce now),
    /// relearn, add entries by hand.
    Model(model::ModelArgs),
    /// The audits the monitor recorded, oldest first.
    Audits(audits::AuditsArgs),
    /// The feed's apps an image holds and the ports each will listen on.
    ///
    /// Read from its config files (includes followed), the command line (--cmd, or the
    /// image's Entrypoint and Cmd), defaults and EXPOSE, each port with its evidence. Exit 0;
    /// 2 on errors.
    Apps(apps::AppsArgs),
    /// What is applied and how the last check went.
    ///
    /// What is applied (sequence, age, source) and how the last check went. Exit 1 when
    /// nothing is applied or the last check failed.
    Status(status::StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For bash: `defender-lite completions bash >
    /// /usr/share/bash-completion/completions/defender-lite` (the Debian package installs
    /// them).
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write every page into a directory.
    ///
    /// Print the man page (`defender-lite man | man -l -`), or with --out-dir write one page
    /// per command and subcommand there (defender-lite.1, defender-lite-<command>.1, ...)
    /// and list them.
    Man(docs::ManArgs),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    CheckFailed,
}

impl Outcome {
    /// `Success` when a check held, `CheckFailed` when it did not.
    pub fn of_check(held: bool) -> Outcome {
        if held {
            Outcome::Success
        } else {
            Outcome::CheckFailed
        }
    }
}

/// The configuration file every command reads unless `--config` names another.
pub(crate) const DEFAULT_CONFIG: &str = crate::config::DEFAULT_PATH;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Verify(args) => verify::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Events(args) => events::run(args),
        Command::Monitor(args) => monitor::run(args),
        Command::Model(args) => model::run(args),
        Command::Audits(args) => audits::run(args),
        Command::Apps(args) => apps::run(args),
        Command::Status(args) => status::run(args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}

/// Output to stdout: a closed stdout (`| head`) is `relay::stdout::StdoutClosed`, which
/// `main` ends on quietly ([`closed_stdout`]), not a panic in `println!`.
pub use relay::stdout::{out, outln};

/// What to do next about a command's error, for the `hint:` line under it: a configuration
/// error's fix, or [`relay::client::next_step`].
pub fn next_step(err: &anyhow::Error) -> Option<&'static str> {
    use crate::config::ConfigError;
    match err.chain().find_map(|c| c.downcast_ref::<ConfigError>()) {
        Some(e) if e.is_missing() => Some(
            "write the agent's configuration there, or name another with --config: defender-lite.example.toml has every key with its comment and default (deploy/ in the source, /usr/share/doc/defender-lite/examples/ from the package)",
        ),
        Some(ConfigError::Parse { .. } | ConfigError::Invalid { .. }) => Some(
            "fix that setting: defender-lite.example.toml has every key with its comment and default (deploy/ in the source, /usr/share/doc/defender-lite/examples/ from the package)",
        ),
        _ => relay::client::next_step(err.chain()),
    }
}

/// True when the command failed because its stdout was closed: it ends quietly then,
/// with success, as ripgrep does. A broken pipe to a socket is an error as any other.
pub fn closed_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(relay::stdout::is_closed)
}
