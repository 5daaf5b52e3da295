//! `defender-lite monitor`: runtime defense. The runner (`defense::runner`) judges events
//! from the host or from a file, audits and acts; this runs it to the end of the input, or
//! until SIGTERM or SIGINT.

use super::Outcome;
use crate::config::Config;
use crate::defense::audit::Audit;
use crate::defense::runner::{AuditSink, MonitorArgs, Runner};

/// Runs the command; `CheckFailed` when input lines were rejected.
pub fn run(args: MonitorArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(&args.config)?;
    super::runtime()?
        .block_on(async {
            let mut runner = Runner::open(&config, &args, printer(args.json))?;
            let ok = match &args.events {
                Some(path) => runner.replay(path).await?,
                None => {
                    runner.watch(&config, &args).await?;
                    true
                }
            };
            runner.close().await?;
            Ok(ok)
        })
        .map(Outcome::of_check)
}

/// Prints each audit on stdout: its line, or with `--json` the audit file's JSON form.
fn printer(json: bool) -> AuditSink {
    Box::new(move |audit: &Audit| {
        if json {
            let line = serde_json::to_string(audit).map_err(std::io::Error::other)?;
            super::outln(format_args!("{line}"))
        } else {
            super::outln(format_args!("{}", audit.line()))
        }
    })
}
