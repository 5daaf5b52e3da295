//! `defender-lite sync`: follow a relay or a custom location and apply each newer bundle
//! (`crate::sync` does the work); `--once` for one check, `--reset-sequence` to demote
//! bundles a key published far ahead by mistake.

use std::path::PathBuf;

use super::{DEFAULT_CONFIG, Outcome, runtime, status::kind_name};
use crate::config::Config;
use crate::sync::{self, Checked};

/// Arguments of `defender-lite sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[arg(
        long,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,
    /// One check, then exit.
    #[arg(long)]
    pub once: bool,
    /// Before checking, demote applied bundles above sequence N (a signing key that
    /// published far ahead by mistake); recorded in state.json with --reason.
    #[arg(long, value_name = "N", requires = "reason")]
    pub reset_sequence: Option<u64>,
    /// Why the held sequence is reset (required with --reset-sequence).
    #[arg(long, value_name = "TEXT", requires = "reset_sequence")]
    pub reason: Option<String>,
}

pub fn run(args: SyncArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(&args.config)?;
    for warning in config.insecure_credential_warnings() {
        eprintln!("defender-lite: WARNING: {warning}");
    }
    let _lock = sync::lock_data_dir(&config.data_dir)?;
    if let (Some(to), Some(reason)) = (args.reset_sequence, &args.reason) {
        let data = &config.data_dir;
        let mut state = sync::State::load(data)?;
        let lines = sync::demote(data, &mut state, |applied, _| {
            (applied.sequence.0 > to).then(|| format!("held sequence reset to {to}: {reason}"))
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
    if !args.once {
        runtime()?.block_on(sync::run(&config))?;
        return Ok(Outcome::Success);
    }
    match runtime()?.block_on(sync::check_once(&config))? {
        Ok(Checked::Applied(seq)) => {
            super::outln(format_args!("applied bundle sequence {seq}"))?;
            Ok(Outcome::Success)
        }
        Ok(Checked::UpToDate) => {
            super::outln(format_args!("up to date"))?;
            Ok(Outcome::Success)
        }
        Err(e) => {
            super::outln(format_args!(
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
