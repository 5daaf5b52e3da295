//! Both binaries' logs: tracing to stderr, filtered by `RUST_LOG` (default `info`), as text
//! (coloured only on a terminal, and not when `NO_COLOR` is set, no-color.org: a file or
//! the journal gets plain text) or one JSON object per line.

use std::io::IsTerminal;

/// Installs the subscriber for the process. A second call (tests running a command twice)
/// is harmless and ignored.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // rustls_platform_verifier logs its own ERROR line for a refused certificate:
        // every certificate it refuses is already an error of ours, named with its fix.
        tracing_subscriber::EnvFilter::new("info,rustls_platform_verifier=off")
    });
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
