//! `defender-lite audits`: the audits the monitor recorded in the runtime database,
//! oldest first. Like `model`, it stops at once while the monitor holds the database.

use std::path::PathBuf;

use anyhow::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DEFAULT_CONFIG, Outcome};
use crate::config::Config;
use crate::defense::audit::AuditLog;
use crate::defense::store::RuntimeDb;

/// Arguments of `defender-lite audits`.
#[derive(Debug, clap::Args)]
pub struct AuditsArgs {
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Only audits at or after this time: RFC 3339 (`2026-12-02T10:00:00Z`) or a
    /// duration back from now (`1h`, `30m`).
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,
    /// JSON lines (the audit file's form) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AuditsArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(&args.config)?;
    let since = match &args.since {
        Some(text) => since_ns(text, OffsetDateTime::now_utc().unix_timestamp_nanos())?,
        None => i128::MIN,
    };
    let db = RuntimeDb::open(&config.data_dir)?;
    // Keys start with the time as big-endian bytes: a negative bound would sort last.
    let audits = AuditLog::since(&db, since.max(0))
        .with_context(|| format!("reading the audits in {}", db.path().display()))?;
    for a in &audits {
        if args.json {
            super::outln(format_args!("{}", serde_json::to_string(a)?))?;
        } else {
            super::outln(format_args!("{}", a.line()))?;
        }
    }
    if !args.json && audits.is_empty() {
        eprintln!(
            "no audits{}",
            if args.since.is_some() {
                " in that time"
            } else {
                ""
            }
        );
    }
    Ok(Outcome::Success)
}

/// `--since`: an RFC 3339 time, or a duration back from `now` (ns).
pub fn since_ns(text: &str, now: i128) -> anyhow::Result<i128> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp_nanos());
    }
    let back = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?}: neither an RFC 3339 time (2026-12-02T10:00:00Z) nor a duration (1h)"
        )
    })?;
    Ok(now - back.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back_from_now() {
        let now = 1_000 * 1_000_000_000i128;
        assert_eq!(since_ns("10s", now).unwrap(), 990 * 1_000_000_000);
        assert_eq!(
            since_ns("1970-01-01T00:01:00Z", now).unwrap(),
            60 * 1_000_000_000
        );
        assert!(since_ns("yesterday", now).is_err());
    }
}
