//! The `relay` binary: parse the command line, set up logging, call the library.
//! Exit codes: 0 success, 1 a check failed (a bundle did not verify), 2 an error.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One crypto provider for the whole process (server and clients): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = relay::cli::Cli::parse();
    relay::cli::init_tracing(cli.log_format);
    match relay::cli::run(cli) {
        Ok(code) => code.into(),
        // `relay ... | head`: the reader has what it wanted; end quietly, as ripgrep does.
        Err(err) if err.chain().any(relay::stdout::is_closed) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", relay::stdout::error_line(err.chain()));
            if let Some(step) = relay::cli::next_step(&err) {
                eprintln!("hint: {step}");
            }
            ExitCode::from(2)
        }
    }
}
