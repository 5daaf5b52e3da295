//! `relay feeds import`: public sources into feed files, with a report of what was kept,
//! merged and refused. The work is `crate::import`'s; this prints.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use super::Outcome;
use crate::bundle::Timestamp;
use crate::import::{self, ImportLimits, ImportReport, Input, domains::DomainFormat};

#[derive(Debug, Subcommand)]
pub enum FeedsCommand {
    /// Import public sources into a feed file of a feeds directory.
    ///
    /// osv: directories of OSV JSON files (the Go vulnerability database, the RustSec OSV
    /// export, the GitHub advisory database), osv.dev's all.zip, single .json records, or
    /// JSON Lines. One record per id (the newest `modified` wins); withdrawn records are
    /// left out; a record that breaks a rule is set aside and counted under the rule.
    ///
    /// domains (--format list|hosts|adblock|rpz): names lower-cased, IDNA to punycode,
    /// trailing dots removed, `*.name` wildcards kept, names under a listed name merged.
    ///
    /// ips: addresses, CIDR ranges and a-b ranges, `#` and `;` comments (FireHOL netsets,
    /// Spamhaus DROP, also its JSON form), merged into the fewest CIDR ranges.
    ///
    /// Writes DIR/<kind>/<name>.jsonl or .txt, and its provenance (inputs, digests,
    /// counts) under DIR/.provenance/, which `relay bundle build --feeds DIR` signs into
    /// the manifest. All inputs of one call go into one file; an input that cannot be
    /// read stops the import and leaves any earlier file in place.
    Import(ImportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportKind {
    Osv,
    Domains,
    Ips,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The feed kind to write.
    #[arg(value_enum)]
    kind: ImportKind,
    /// Input files (for osv also directories), all in one format.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// The feeds directory to write into (made if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// The feed file's name, without extension (default: the first input's name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The domain list's format (domains only).
    #[arg(long, value_enum)]
    format: Option<DomainFormat>,
    /// The license to record for the inputs (e.g. CC-BY-4.0).
    #[arg(long, value_name = "SPDX")]
    license: Option<String>,
    /// Where the input came from, to record instead of its path (one input only).
    #[arg(long, value_name = "URL")]
    source_url: Option<String>,
    /// When the input was fetched, to record (RFC 3339; default now).
    #[arg(long, value_name = "RFC3339")]
    retrieved: Option<Timestamp>,
}

pub fn run(cmd: FeedsCommand) -> anyhow::Result<Outcome> {
    match cmd {
        FeedsCommand::Import(args) => import_cmd(args),
    }
}

fn import_cmd(args: ImportArgs) -> anyhow::Result<Outcome> {
    if args.source_url.is_some() && args.inputs.len() > 1 {
        anyhow::bail!("--source-url names one input; import the inputs one call each");
    }
    enum Job {
        Osv,
        Domains(DomainFormat),
        Ips,
    }
    let job = match (args.kind, args.format) {
        (ImportKind::Domains, Some(f)) => Job::Domains(f),
        (ImportKind::Domains, None) => {
            anyhow::bail!("domains need --format: list, hosts, adblock or rpz")
        }
        (_, Some(_)) => anyhow::bail!("--format is for domains only"),
        (ImportKind::Osv, None) => Job::Osv,
        (ImportKind::Ips, None) => Job::Ips,
    };
    let retrieved = args.retrieved.unwrap_or_else(Timestamp::now);
    let inputs: Vec<Input> = args
        .inputs
        .iter()
        .map(|path| {
            let mut input = Input::local(path);
            input.retrieved = retrieved;
            input.license = args.license.clone();
            if let Some(url) = &args.source_url {
                input.location = url.clone();
            }
            input
        })
        .collect();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(&args.inputs[0]),
    };
    let limits = ImportLimits::default();
    let report = match job {
        Job::Osv => import::osv::import(&inputs, &args.output, &name, &limits),
        Job::Domains(format) => {
            import::domains::import(&inputs, format, &args.output, &name, &limits)
        }
        Job::Ips => import::ips::import(&inputs, &args.output, &name, &limits),
    }
    .with_context(|| format!("importing into {}", args.output.display()))?;
    print_report(&report)?;
    Ok(Outcome::Success)
}

/// `all.zip` says nothing: name it after its directory (`go/2026-08-21/all.zip` -> the
/// first directory that is not a date). Otherwise the file's stem.
fn default_name(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    if stem != "all" && !stem.is_empty() {
        return clean(&stem);
    }
    path.ancestors()
        .skip(1)
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| !n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|n| clean(&n))
        .unwrap_or_else(|| "imported".to_owned())
}

fn print_report(report: &ImportReport) -> std::io::Result<()> {
    crate::outln!(
        "wrote {}: {} records, {} bytes, sha256 {}",
        report.output.display(),
        report.records,
        report.size,
        report.sha256
    )?;
    for input in &report.inputs {
        let p = &input.provenance;
        let c = &p.counts;
        let mut line = format!(
            "  {}: read {}, kept {}, merged {}, refused {}",
            p.name, c.read, c.kept, c.merged, c.refused
        );
        if report.kind == crate::bundle::FeedKind::Osv {
            line.push_str(&format!(", withdrawn {}", c.withdrawn));
        }
        crate::outln!("{line}")?;
        for (rule, n) in &input.refusals.by_rule {
            crate::outln!("    refused {n} by {rule}")?;
        }
        for first in &input.refusals.first {
            crate::outln!("    e.g. {first}")?;
        }
    }
    Ok(())
}
