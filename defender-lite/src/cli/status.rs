//! `defender-lite status`: what is applied (sequence, age, source) and how the last check
//! went, from the sync state. Exit 1 when nothing is applied or the last check failed.

use std::path::PathBuf;

use relay::bundle::Timestamp;

use super::{DEFAULT_CONFIG, Outcome};
use crate::config::Config;

/// Arguments of `defender-lite status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(
        long,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,
    /// Print the state as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(&args.config)?;
    let state = crate::sync::State::load(&config.data_dir)?;
    if args.json {
        super::outln(format_args!("{}", serde_json::to_string_pretty(&state)?))?;
    } else {
        super::out(format_args!("{}", describe(&state, Timestamp::now())))?;
    }
    Ok(if state.current.is_some() && state.last_error.is_none() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

/// A failure kind's name, as status JSON writes it (`connect`, `http-401`, ...).
pub(super) fn kind_name(kind: relay::client::FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// The state as lines an operator reads.
pub fn describe(state: &crate::sync::State, now: Timestamp) -> String {
    let or_never = |t: Option<Timestamp>| t.map_or_else(|| "never".to_owned(), |t| t.to_string());
    let mut out = match &state.current {
        Some(a) => {
            let age = now.unix() - a.created.unix();
            format!(
                "bundle: sequence {} from {} (via {}), created {} ({} h {} min ago), expires {}\n",
                a.sequence,
                a.origin,
                a.source,
                a.created,
                age / 3600,
                (age % 3600) / 60,
                a.expires
            ) + &a
                .transfer
                .as_ref()
                .map(|t| format!("arrived: {t}\n"))
                .unwrap_or_default()
        }
        None => "bundle: none applied yet\n".to_owned(),
    };
    out += &format!(
        "last check: {}; last success: {}; next check: {}\n",
        or_never(state.last_check),
        or_never(state.last_success),
        or_never(state.next_check)
    );
    out += &format!(
        "last error: {}\n",
        match (&state.last_error, state.last_error_kind) {
            (Some(e), Some(k)) => format!("{}: {e}", kind_name(k)),
            (Some(e), None) => e.clone(),
            _ => "none".to_owned(),
        }
    );
    out
}
