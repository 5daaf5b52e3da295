//! `defender-lite scan PATH`: an image's packages matched against the feed's OSV records
//! (`crate::scan` does the work), written as a table, JSON or SARIF.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use super::{DEFAULT_CONFIG, Outcome};
use crate::config::Config;
use crate::feeds::Feeds;

/// Arguments of `defender-lite scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Image: directory, .tar, .tar.gz, or `docker save` archive.
    pub path: PathBuf,
    /// Agent configuration: its data_dir holds the bundle `sync` applied.
    #[arg(
        long,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,
    /// Use these feeds instead of the applied bundle: an applied bundle's directory,
    /// a bundle's feeds/ directory, or a directory like relay/samples/feeds.
    #[arg(long, value_name = "DIR")]
    pub feeds: Option<PathBuf>,
    /// table (default), json (schema defender-lite.scan/1) or sarif (SARIF 2.1.0).
    #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
    pub format: ScanFormat,
    /// Exit 1 if a finding is at or above this severity: low, medium, high, critical.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<crate::osv::Severity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Table,
    Json,
    Sarif,
}

pub fn run(args: ScanArgs) -> anyhow::Result<Outcome> {
    let ScanArgs {
        path,
        config,
        feeds,
        format,
        fail_on,
    } = args;
    let feeds = match feeds {
        Some(dir) => Feeds::open_dir(&dir)?,
        None => {
            let config = Config::load_for_feeds(&config)?;
            Feeds::applied(&config.data_dir)?
        }
    };
    let scan =
        crate::scan::scan(&path, &feeds).with_context(|| format!("scanning {}", path.display()))?;
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
