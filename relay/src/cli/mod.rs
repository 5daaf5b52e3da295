//! The operator CLI: argument definitions and dispatch, one file per subcommand.
//! Glue only: every decision lives in the library modules it calls.

mod admin;
mod bundle;
mod feeds;
mod fleet;
mod keys;
mod origin;
mod ping;
mod serve;
mod transfer;
mod trust;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `--version`: the package's version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_COMMIT"),
    ")"
);

/// Moves signed intelligence bundles into networks that cannot reach the internet.
#[derive(Debug, Parser)]
#[command(name = "relay", version = VERSION, long_about = None)]
pub struct Cli {
    /// Log output format (logs go to stderr; filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make and manage ed25519 signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Build, verify and inspect bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Import public sources (OSV, blocklists, netsets) into feed files, for `bundle build`.
    #[command(subcommand)]
    Feeds(feeds::FeedsCommand),
    /// The origin service: run a cycle of a relay's [origin] now.
    #[command(subcommand)]
    Origin(origin::OriginCommand),
    /// Run the relay: serve bundles over TLS with basic auth.
    ///
    /// With no configuration it makes a data directory, a dev CA and certificate, credentials
    /// and a sample bundle.
    Serve(serve::ServeArgs),
    /// Development certificates.
    #[command(subcommand)]
    Certs(admin::CertsCommand),
    /// Users of the relay (htpasswd with bcrypt, and roles).
    #[command(subcommand)]
    Users(admin::UsersCommand),
    /// Access tokens for upstream-style downloads.
    #[command(subcommand)]
    Tokens(admin::TokensCommand),
    /// Download a bundle from a relay or a URL.
    ///
    /// Download the current bundle from a relay, or a bundle file from a URL (resumes a cut
    /// download; verifies with --trust).
    Download(transfer::DownloadArgs),
    /// Upload a bundle to a relay (an uploader's credential).
    Upload(transfer::UploadArgs),
    /// Troubleshoot the path to a relay, step by step.
    ///
    /// Troubleshoot the path to a relay: DNS, TCP, proxy, TLS and its certificate, HTTP,
    /// credentials; one line per step, and a hint where one fails.
    Ping(ping::PingArgs),
    /// Ask a running relay to check its sources now (an admin's credential).
    #[command(subcommand)]
    Sync(transfer::SyncCommand),
    /// A relay's state: its bundle, its checks and its supervisors.
    ///
    /// A relay's state: its bundle, checks, and its supervisors as a fleet table. Exit
    /// code 1 when the bundle is not fresh or a supervisor is behind.
    Status(fleet::StatusArgs),
    /// Key compromise and rotation: reset a relay's held sequence (audited).
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Central-to-supervisor distribution.
    #[command(subcommand)]
    Projects(fleet::ProjectsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For bash: `relay completions bash > /usr/share/bash-completion/completions/relay`
    /// (the Debian package installs them).
    Completions {
        #[arg(value_enum)]
        shell: crate::cli_docs::Shell,
    },
    /// Print the man page, or write every page into a directory.
    ///
    /// Print the man page (`relay man | man -l -`), or with --out-dir write one page per
    /// command and subcommand there (relay.1, relay-<command>.1, ...) and list them.
    Man {
        /// Directory to write all the pages into (made if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// How a command ended, for the exit code: 0 success, 1 a failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    CheckFailed,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => Self::SUCCESS,
            Outcome::CheckFailed => Self::from(1),
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Feeds(cmd) => feeds::run(cmd),
        Command::Origin(cmd) => origin::run(cmd),
        Command::Serve(args) => serve::run(args),
        Command::Certs(cmd) => admin::certs(cmd),
        Command::Users(cmd) => admin::users(cmd),
        Command::Tokens(cmd) => admin::tokens(cmd),
        Command::Download(args) => transfer::download_cmd(args),
        Command::Upload(args) => transfer::upload_cmd(args),
        Command::Ping(args) => ping::run(args),
        Command::Sync(cmd) => transfer::sync_cmd(cmd),
        Command::Status(args) => fleet::status_cmd(args),
        Command::Projects(cmd) => fleet::projects_cmd(cmd),
        Command::Trust(cmd) => trust::run(cmd),
        Command::Completions { shell } => {
            crate::cli_docs::completions(<Cli as clap::CommandFactory>::command(), shell)?;
            Ok(Outcome::Success)
        }
        Command::Man { out_dir } => {
            crate::cli_docs::man(<Cli as clap::CommandFactory>::command(), out_dir.as_deref())?;
            Ok(Outcome::Success)
        }
    }
}

/// The runtime of a command that talks to a relay: one thread is plenty.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What to do next about a command's error, for the `hint:` line under it: a configuration
/// error's fix, or [`crate::client::next_step`].
pub fn next_step(err: &anyhow::Error) -> Option<&'static str> {
    if let Some(config) = err
        .chain()
        .find_map(|c| c.downcast_ref::<crate::config::ConfigError>())
        && let Some(step) = config.next_step()
    {
        return Some(step);
    }
    crate::client::next_step(err.chain())
}

/// Logs to stderr in `format` ([`crate::logging::init`]: `RUST_LOG`, plain text without a
/// terminal or with `NO_COLOR`).
pub fn init_tracing(format: LogFormat) {
    crate::logging::init(matches!(format, LogFormat::Json));
}

/// Paths of public-key files to trust, shared by every command that verifies.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// Public-key file(s) whose signatures are accepted (`ed25519 <key-id> <base64>`);
    /// repeat or separate with commas.
    #[arg(
        long = "trust",
        value_name = "KEY",
        required = true,
        value_delimiter = ','
    )]
    pub trust: Vec<PathBuf>,
}
