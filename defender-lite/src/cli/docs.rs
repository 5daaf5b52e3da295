//! `defender-lite completions SHELL` and `defender-lite man`: shell completions and man
//! pages made from the command definitions (`relay::cli_docs`).

use std::path::PathBuf;

use super::{Cli, Outcome};

/// Arguments of `defender-lite completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: relay::cli_docs::Shell,
}

/// Arguments of `defender-lite man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write all the pages into (made if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<Outcome> {
    relay::cli_docs::completions(<Cli as clap::CommandFactory>::command(), args.shell)?;
    Ok(Outcome::Success)
}

pub fn man(args: ManArgs) -> anyhow::Result<Outcome> {
    relay::cli_docs::man(
        <Cli as clap::CommandFactory>::command(),
        args.out_dir.as_deref(),
    )?;
    Ok(Outcome::Success)
}
