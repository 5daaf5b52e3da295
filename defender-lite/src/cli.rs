//! The agent's command line: argument definitions and dispatch.
//! Exit codes: 0 success, 1 a check failed (a bundle did not verify), 2 an error.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use relay::bundle::{self, Limits, Sequence, Timestamp, TrustStore};

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
    Verify {
        /// Bundle file.
        file: PathBuf,
        /// Public-key file(s) whose signatures are accepted; repeat or separate with commas.
        #[arg(
            long = "trust",
            value_name = "KEY",
            required = true,
            value_delimiter = ','
        )]
        trust: Vec<PathBuf>,
        /// Sequence already held: refuse bundles that are not newer.
        #[arg(long, value_name = "N")]
        held_sequence: Option<u64>,
    },
    /// Follow a relay or a custom location, applying each newer bundle.
    ///
    /// Follow a relay or a custom location: check the sources in order, apply a newer
    /// bundle atomically (the last good one is kept). Without --once, keep checking:
    /// every sync.check_every (24 h) plus jitter, every sync.retry_every (1 h) while
    /// checks fail. Exit 1 (with --once) when no source could be checked.
    Sync {
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/defender-lite/defender-lite.toml"
        )]
        config: PathBuf,
        /// One check, then exit.
        #[arg(long)]
        once: bool,
        /// Before checking, demote applied bundles above sequence N (a signing key that
        /// published far ahead by mistake); recorded in state.json with --reason.
        #[arg(long, value_name = "N", requires = "reason")]
        reset_sequence: Option<u64>,
        /// Why the held sequence is reset (required with --reset-sequence).
        #[arg(long, value_name = "TEXT", requires = "reset_sequence")]
        reason: Option<String>,
    },
    /// Find vulnerable packages in an image.
    ///
    /// PATH is a root filesystem directory, a flat tar (`docker export`, gzip or not) or a
    /// `docker save` archive (layers applied in order, whiteouts honoured). Reads dpkg, apk,
    /// rpm (sqlite), Python, npm, Go binaries and Cargo.lock, and matches them against the
    /// feed's OSV records. When no package database is found it says so (never a silent zero).
    /// Exit 0; 1 when --fail-on is given and a finding is at or above it, or nothing could be
    /// scanned; 2 on errors.
    Scan {
        /// Image: directory, .tar, .tar.gz, or `docker save` archive.
        path: PathBuf,
        /// Agent configuration: its data_dir holds the bundle `sync` applied.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/defender-lite/defender-lite.toml"
        )]
        config: PathBuf,
        /// Use these feeds instead of the applied bundle: an applied bundle's directory,
        /// a bundle's feeds/ directory, or a directory like relay/samples/feeds.
        #[arg(long, value_name = "DIR")]
        feeds: Option<PathBuf>,
        /// table (default), json (schema defender-lite.scan/1) or sarif (SARIF 2.1.0).
        #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
        format: ScanFormat,
        /// Exit 1 if a finding is at or above this severity: low, medium, high, critical.
        #[arg(long, value_name = "SEVERITY")]
        fail_on: Option<crate::osv::Severity>,
    },
    /// Print runtime events as they happen, each attributed to its container.
    ///
    /// Print runtime events as they happen: process exec/exit, listening sockets,
    /// outbound connections, raw/packet sockets, and DNS queries and SYNs captured on
    /// the given interfaces; each attributed to its container. Or read them from a
    /// JSON-lines file (`--events`; schema in EVENTS.md). Exit 1 if input lines were bad.
    Events(crate::monitor::command::EventsArgs),
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
    Model(crate::defense::commands::ModelArgs),
    /// The audits the monitor recorded, oldest first.
    Audits(crate::defense::commands::AuditsArgs),
    /// The feed's apps an image holds and the ports each will listen on.
    ///
    /// Read from its config files (includes followed), the command line (--cmd, or the
    /// image's Entrypoint and Cmd), defaults and EXPOSE, each port with its evidence. Exit 0;
    /// 2 on errors.
    Apps(crate::apps::command::AppsArgs),
    /// What is applied and how the last check went.
    ///
    /// What is applied (sequence, age, source) and how the last check went. Exit 1 when
    /// nothing is applied or the last check failed.
    Status {
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/defender-lite/defender-lite.toml"
        )]
        config: PathBuf,
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For bash: `defender-lite completions bash >
    /// /usr/share/bash-completion/completions/defender-lite` (the Debian package installs
    /// them).
    Completions {
        #[arg(value_enum)]
        shell: relay::cli_docs::Shell,
    },
    /// Print the man page, or write every page into a directory.
    ///
    /// Print the man page (`defender-lite man | man -l -`), or with --out-dir write one page
    /// per command and subcommand there (defender-lite.1, defender-lite-<command>.1, ...)
    /// and list them.
    Man {
        /// Directory to write all the pages into (made if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Table,
    Json,
    Sarif,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    CheckFailed,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Completions { shell } => {
            relay::cli_docs::completions(<Cli as clap::CommandFactory>::command(), shell)?;
            Ok(Outcome::Success)
        }
        Command::Man { out_dir } => {
            relay::cli_docs::man(<Cli as clap::CommandFactory>::command(), out_dir.as_deref())?;
            Ok(Outcome::Success)
        }
        Command::Apps(args) => crate::apps::command::run(args),
        Command::Events(args) => Ok(if crate::monitor::command::run(args)? {
            Outcome::Success
        } else {
            Outcome::CheckFailed
        }),
        Command::Monitor(args) => Ok(if crate::defense::runner::run(args)? {
            Outcome::Success
        } else {
            Outcome::CheckFailed
        }),
        Command::Model(args) => crate::defense::commands::run_model(args),
        Command::Audits(args) => crate::defense::commands::run_audits(args),
        Command::Sync {
            config,
            once,
            reset_sequence,
            reason,
        } => {
            let config = crate::config::Config::load(&config)?;
            for warning in config.insecure_credential_warnings() {
                eprintln!("defender-lite: WARNING: {warning}");
            }
            let _lock = crate::sync::lock_data_dir(&config.data_dir)?;
            if let (Some(to), Some(reason)) = (reset_sequence, reason) {
                let data = &config.data_dir;
                let mut state = crate::sync::State::load(data)?;
                let lines = crate::sync::demote(data, &mut state, |applied, _| {
                    (applied.sequence.0 > to)
                        .then(|| format!("held sequence reset to {to}: {reason}"))
                });
                state.save(data)?;
                for line in &lines {
                    eprintln!("defender-lite: {line}");
                }
                eprintln!(
                    "defender-lite: reset to {to}: {} bundle(s) demoted",
                    lines.len()
                );
            }
            if !once {
                runtime()?.block_on(crate::sync::run(&config))?;
                return Ok(Outcome::Success);
            }
            match runtime()?.block_on(crate::sync::check_once(&config))? {
                Ok(crate::sync::Checked::Applied(seq)) => {
                    crate::cli::outln(format_args!("applied bundle sequence {seq}"))?;
                    Ok(Outcome::Success)
                }
                Ok(crate::sync::Checked::UpToDate) => {
                    crate::cli::outln(format_args!("up to date"))?;
                    Ok(Outcome::Success)
                }
                Err(e) => {
                    crate::cli::outln(format_args!(
                        "check failed ({}): {}",
                        kind_name(e.kind),
                        e.message
                    ))?;
                    if let Some(step) = e.next_step() {
                        eprintln!("hint: {step}");
                    }
                    Ok(Outcome::CheckFailed)
                }
            }
        }
        Command::Scan {
            path,
            config,
            feeds,
            format,
            fail_on,
        } => {
            let feeds = match feeds {
                Some(dir) => crate::feeds::Feeds::open_dir(&dir)?,
                None => {
                    let config = crate::config::Config::load_for_feeds(&config)?;
                    crate::feeds::Feeds::applied(&config.data_dir)?
                }
            };
            let scan = crate::scan::scan(&path, &feeds)
                .with_context(|| format!("scanning {}", path.display()))?;
            let report = scan
                .report()
                .context("sorting the findings (past 8 MiB they go through TMPDIR)")?;
            // Written as a stream: the report holds references, not rendered text.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match format {
                ScanFormat::Table => report.write_table(&mut out),
                ScanFormat::Json => report.write_json(&mut out),
                ScanFormat::Sarif => report.write_sarif(&mut out),
            }
            .and_then(|()| out.flush())
            .context("writing the report")?;
            if report.coverage() == crate::inventory::Coverage::NoDatabase {
                eprintln!(
                    "defender-lite: no package database found in {}: nothing was scanned",
                    path.display()
                );
            }
            Ok(match fail_on {
                Some(threshold) if report.fails(threshold) => Outcome::CheckFailed,
                _ => Outcome::Success,
            })
        }
        Command::Status { config, json } => {
            let config = crate::config::Config::load(&config)?;
            let state = crate::sync::State::load(&config.data_dir)?;
            if json {
                crate::cli::outln(format_args!("{}", serde_json::to_string_pretty(&state)?))?;
            } else {
                crate::cli::out(format_args!("{}", describe(&state, Timestamp::now())))?;
            }
            Ok(if state.current.is_some() && state.last_error.is_none() {
                Outcome::Success
            } else {
                Outcome::CheckFailed
            })
        }
        Command::Verify {
            file,
            trust,
            held_sequence,
        } => {
            let trust = TrustStore::load(&trust)?;
            let input = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            match bundle::verify(
                input,
                &trust,
                &Limits::default(),
                Timestamp::now(),
                held_sequence.map(Sequence),
            ) {
                Ok(v) => {
                    crate::cli::outln(format_args!("OK {}: {}", file.display(), v.summary()))?;
                    Ok(Outcome::Success)
                }
                Err(bundle::VerifyError::Read(e)) => {
                    Err(e).with_context(|| format!("reading {}", file.display()))
                }
                Err(e) => {
                    crate::cli::outln(format_args!("FAILED {}: {e}", file.display()))?;
                    eprintln!("hint: {}", e.next_step());
                    Ok(Outcome::CheckFailed)
                }
            }
        }
    }
}

fn kind_name(kind: relay::client::FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// The state as lines an operator reads.
pub fn describe(state: &crate::sync::State, now: Timestamp) -> String {
    let or_never = |t: Option<Timestamp>| t.map_or_else(|| "never".to_owned(), |t| t.to_string());
    let mut out = match &state.current {
        Some(a) => {
            let age = now.unix() - a.created.unix();
            format!(
                "bundle: sequence {} from {} (via {}), created {} ({} h {} min ago), expires {}\n",
                a.sequence,
                a.origin,
                a.source,
                a.created,
                age / 3600,
                (age % 3600) / 60,
                a.expires
            ) + &a
                .transfer
                .as_ref()
                .map(|t| format!("arrived: {t}\n"))
                .unwrap_or_default()
        }
        None => "bundle: none applied yet\n".to_owned(),
    };
    out += &format!(
        "last check: {}; last success: {}; next check: {}\n",
        or_never(state.last_check),
        or_never(state.last_success),
        or_never(state.next_check)
    );
    out += &format!(
        "last error: {}\n",
        match (&state.last_error, state.last_error_kind) {
            (Some(e), Some(k)) => format!("{}: {e}", kind_name(k)),
            (Some(e), None) => e.clone(),
            _ => "none".to_owned(),
        }
    );
    out
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
