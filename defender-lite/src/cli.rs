//! The agent's command line: argument definitions and dispatch.
//! Exit codes: 0 success, 1 a check failed (a bundle did not verify), 2 an error.

use std::fs::File;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use relay::bundle::{self, Limits, Sequence, Timestamp, TrustStore};

/// Lightweight agent that applies intelligence bundles mirrored by a relay.
#[derive(Debug, Parser)]
#[command(name = "defender-lite", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    CheckFailed,
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
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
                    println!("OK {}: {}", file.display(), v.summary());
                    Ok(Outcome::Success)
                }
                Err(bundle::VerifyError::Read(e)) => {
                    Err(e).with_context(|| format!("reading {}", file.display()))
                }
                Err(e) => {
                    println!("FAILED {}: {e}", file.display());
                    Ok(Outcome::CheckFailed)
                }
            }
        }
    }
}
