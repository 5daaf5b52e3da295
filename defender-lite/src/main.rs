//! The `defender-lite` binary: parse the command line and call the library.

use std::process::ExitCode;

use clap::Parser;
use defender_lite::cli::{Cli, Outcome, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    relay::logging::init(false);
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        // `defender-lite ... | head`: the reader has what it wanted.
        Err(err) if defender_lite::cli::closed_stdout(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", relay::stdout::error_line(err.chain()));
            if let Some(step) = defender_lite::cli::next_step(&err) {
                eprintln!("hint: {step}");
            }
            ExitCode::from(2)
        }
    }
}
