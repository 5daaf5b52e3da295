//! The sync client: how a relay (and defender-lite) gets bundles from a source.
//!
//! `endpoint` turns a source's settings (URL, credential, CA, proxy, timeouts) into an HTTP
//! client; `fetch` downloads with resume, a size cap and a slow-transfer floor; `source`
//! checks an upstream relay or a custom location for a newer bundle and verifies it;
//! `error` names every way that can fail, so status and retries can tell them apart; `tls`
//! trusts a configured CA file (and a self-signed server certificate it holds, pinned).
//! Storage is the caller's: this module hands back a verified bundle in a file.

mod endpoint;
mod error;
mod fetch;
pub mod schedule;
mod segments;
pub mod settings;
mod source;
pub mod sse;
pub mod tls;
mod watch;

pub use endpoint::{Credential, Endpoint, ProxySettings, Secret};
pub use error::{FailureKind, SyncError, error_chain, next_step};
pub use fetch::{FetchLimits, Fetched, download};
pub use segments::{
    HeldFile, Remote, SegmentFetch, SegmentStats, build_by_segments, fetch_by_segments, fetch_index,
};
pub use source::{CheckContext, CheckOutcome, Held, HeldBundle, SourceKind, Via, check};
pub use watch::{WatchSignal, follow};

/// A random duration in `[0, max)`, for jitter.
pub fn random_below(max: std::time::Duration) -> std::time::Duration {
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() || max.is_zero() {
        return std::time::Duration::ZERO;
    }
    let span = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    std::time::Duration::from_nanos(u64::from_le_bytes(raw) % span)
}
