//! `defender-lite apps PATH`: the command-line glue around `examine`. Where the knowledge
//! comes from (`--feeds DIR`, or the bundle `sync` applied), which command line is read
//! (`--cmd`, or the image's), and how the report is printed (`--format`). Errors here are
//! `anyhow`, with context, and end the program with exit code 2.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Outcome;
use crate::apps::{CommandLine, Knowledge, examine, split_command, table};
use crate::image::Image;

/// Arguments of `defender-lite apps`.
#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    /// Image: a root filesystem directory, a flat tar (`docker export`, gzip or not) or a
    /// `docker save` archive.
    pub path: PathBuf,
    /// Agent configuration: its data_dir holds the bundle `sync` applied.
    #[arg(
        long,
        value_name = "FILE",
        default_value = crate::cli::DEFAULT_CONFIG
    )]
    pub config: PathBuf,
    /// Use this app knowledge instead of the applied bundle's: an unpacked bundle, its
    /// feeds/ directory, or a directory of app documents (like relay/samples/feeds/apps).
    #[arg(long, value_name = "DIR")]
    pub feeds: Option<PathBuf>,
    /// The command line the container runs, instead of the image's Entrypoint and Cmd
    /// (split like a POSIX shell does), e.g. --cmd "redis-server /etc/redis.conf --port 7777".
    #[arg(long, value_name = "COMMAND")]
    pub cmd: Option<String>,
    /// table (default) or json (shape documented in defender_lite::apps).
    #[arg(long, value_enum, default_value_t = AppsFormat::Table)]
    pub format: AppsFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppsFormat {
    Table,
    Json,
}

/// Runs the command: exit 0 with a report, an error (exit 2) when the image or the
/// knowledge cannot be read.
pub fn run(args: AppsArgs) -> anyhow::Result<Outcome> {
    let knowledge = match &args.feeds {
        Some(dir) => Knowledge::load_dir(dir)
            .with_context(|| format!("loading app knowledge from {}", dir.display()))?,
        None => applied(&args.config)?,
    };
    let command = match &args.cmd {
        Some(line) => CommandLine::Given(
            split_command(line)
                .map_err(anyhow::Error::msg)
                .context("--cmd")?,
        ),
        None => CommandLine::FromImage,
    };
    let image = Image::open(&args.path)
        .with_context(|| format!("opening image {}", args.path.display()))?;
    let report = examine(
        &image,
        &args.path.display().to_string(),
        &knowledge,
        command,
    );
    match args.format {
        AppsFormat::Table => super::out(format_args!("{}", table(&report)))?,
        AppsFormat::Json => {
            super::outln(format_args!("{}", serde_json::to_string_pretty(&report)?))?
        }
    }
    Ok(Outcome::Success)
}

/// The app knowledge of the bundle `sync` applied: its index (`index/apps.json`, the
/// documents parsed and checked once when the bundle was applied).
pub fn applied(config: &Path) -> anyhow::Result<Knowledge> {
    let config = crate::config::Config::load_for_feeds(config)?;
    let feeds = crate::feeds::Feeds::applied(&config.data_dir)?;
    let apps = feeds.apps().with_context(|| {
        format!(
            "the applied bundle ({}) has no usable apps index",
            feeds.description
        )
    })?;
    Ok(Knowledge::from_specs(apps, feeds.index_path("apps.json")))
}
