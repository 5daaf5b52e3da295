//! `defender-lite verify FILE`: a bundle checked exactly as the agent checks one before
//! applying it. Exit 0 with a summary, 1 with the rule the bundle broke.

use std::fs::File;
use std::path::PathBuf;

use anyhow::Context;
use relay::bundle::{self, Limits, Sequence, Timestamp, TrustStore};

use super::Outcome;

/// Arguments of `defender-lite verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Bundle file.
    pub file: PathBuf,
    /// Public-key file(s) whose signatures are accepted; repeat or separate with commas.
    #[arg(
        long = "trust",
        value_name = "KEY",
        required = true,
        value_delimiter = ','
    )]
    pub trust: Vec<PathBuf>,
    /// Sequence already held: refuse bundles that are not newer.
    #[arg(long, value_name = "N")]
    pub held_sequence: Option<u64>,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<Outcome> {
    let VerifyArgs {
        file,
        trust,
        held_sequence,
    } = args;
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
            super::outln(format_args!("OK {}: {}", file.display(), v.summary()))?;
            Ok(Outcome::Success)
        }
        Err(bundle::VerifyError::Read(e)) => {
            Err(e).with_context(|| format!("reading {}", file.display()))
        }
        Err(e) => {
            super::outln(format_args!("FAILED {}: {e}", file.display()))?;
            eprintln!("hint: {}", e.next_step());
            Ok(Outcome::CheckFailed)
        }
    }
}
