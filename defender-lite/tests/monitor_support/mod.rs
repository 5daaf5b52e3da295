//! Waiting on a `Monitor`'s event stream, for the tests that watch the real host.

// Test support: a panic is the failure report (STYLE.md), as in the tests themselves.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use defender_lite::monitor::Monitor;
use defender_lite::monitor::event::{Event, EventKind};

/// Reads events until `want` matches one, or fails after `within` listing the gaps seen.
pub async fn wait_for(
    monitor: &mut Monitor,
    within: Duration,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + within;
    let mut gaps = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, monitor.next()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(e)) => {
                if let EventKind::Gap(g) = &e.kind {
                    gaps.push(format!("{}: {}", g.what, g.reason));
                }
            }
            Ok(None) => panic!("event stream ended before {what}; gaps: {gaps:?}"),
            Err(_) => panic!("no {what} within {within:?}; gaps: {gaps:?}"),
        }
    }
}
