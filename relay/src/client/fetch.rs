//! Downloads a bundle file: streamed to a partial file that survives restarts, resumed
//! with `Range` + `If-Range` when the partial file is there, under a size cap, and
//! aborted when the transfer is slower than a floor (a server that drips bytes forever
//! must not hold a check open), and under a deadline for the whole transfer (a server
//! that sends just above the floor cannot hold one open for days either: what it sent is
//! kept and resumed at the next attempt). Verification is the caller's, before anything
//! is trusted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use tokio::io::AsyncWriteExt;

use super::endpoint::Endpoint;
use super::error::{FailureKind, SyncError};

/// Caps on one download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    /// Largest file accepted.
    pub max_bytes: u64,
    /// Slowest acceptable transfer, in bytes per second, measured over `floor_window`.
    pub min_bytes_per_sec: u64,
    pub floor_window: Duration,
    /// The whole transfer's deadline is this, plus the bytes to come at
    /// [`DEADLINE_RATE`] (the size announced, or `max_bytes` when none is).
    pub deadline_floor: Duration,
}

/// The rate the whole-transfer deadline allows for, beyond its floor: 256 KiB/s, a slow
/// WAN link (a 300 MB bundle gets 19 minutes plus the floor; an unannounced size, the
/// cap's worth). A transfer cut by the deadline resumes where it stopped.
pub const DEADLINE_RATE: u64 = 256 * 1024;

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_bytes: 2 << 30,
            min_bytes_per_sec: 1024,
            floor_window: Duration::from_secs(30),
            deadline_floor: Duration::from_secs(600),
        }
    }
}

/// A completed download.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub etag: Option<String>,
    /// Bytes this call transferred (less than `size` when it resumed).
    pub transferred: u64,
}

/// Downloads `url` into `partial` (kept across calls and restarts; resumed when it holds
/// a prefix of the same file, per `If-Range` with its ETag). With `if_none_match`, a 304
/// answer gives `Ok(None)`. `progress` is told (bytes so far, total when known).
pub async fn download(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    url: &str,
    partial: &Path,
    if_none_match: Option<&str>,
    limits: FetchLimits,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Option<Fetched>, SyncError> {
    let local = |what: &str, e: std::io::Error| {
        SyncError::new(
            FailureKind::Local,
            format!("{what} {}: {e}", partial.display()),
        )
    };
    let etag_path = partial.with_extension("etag");
    let have = tokio::fs::metadata(partial).await.map_or(0, |m| m.len());
    let validator = tokio::fs::read_to_string(&etag_path).await.ok();
    let mut request = endpoint.authorize(client.get(url));
    let resuming = have > 0 && validator.is_some();
    if let Some(tag) = if_none_match {
        request = request.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    if resuming && let Some(tag) = &validator {
        request = request
            .header(RANGE, format!("bytes={have}-"))
            .header(IF_RANGE, tag.trim());
    }
    let response = request
        .send()
        .await
        .map_err(|e| endpoint.transport_error(url, &e))?;
    let status = response.status();
    let (mut offset, append) = match status {
        StatusCode::NOT_MODIFIED if if_none_match.is_some() => return Ok(None),
        StatusCode::PARTIAL_CONTENT if resuming && range_starts_at(&response, have) => (have, true),
        StatusCode::OK => (0, false),
        StatusCode::RANGE_NOT_SATISFIABLE if resuming => {
            // The partial file is not a prefix of what is there now: start over.
            let _ = tokio::fs::remove_file(partial).await;
            let _ = tokio::fs::remove_file(&etag_path).await;
            return Box::pin(download(
                endpoint,
                client,
                url,
                partial,
                if_none_match,
                limits,
                progress,
            ))
            .await;
        }
        _ => return Err(SyncError::status(url, &response)),
    };
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let remaining = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let total = remaining.map(|r| r + offset);
    if total.is_some_and(|t| t > limits.max_bytes) {
        return Err(SyncError::new(
            FailureKind::TooLarge,
            format!(
                "{url}: {} bytes is over the limit of {}",
                total.unwrap_or(0),
                limits.max_bytes
            ),
        ));
    }
    // Remember the validator first, so a cut transfer can resume from what it wrote.
    match &etag {
        Some(tag) => tokio::fs::write(&etag_path, tag)
            .await
            .map_err(|e| local("writing", e))?,
        None => {
            let _ = tokio::fs::remove_file(&etag_path).await;
        }
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .await
        .map_err(|e| local("opening", e))?;
    let transferred_start = offset;
    let to_come = remaining.unwrap_or(limits.max_bytes.saturating_sub(offset));
    let allowed = limits
        .deadline_floor
        .saturating_add(Duration::from_secs(to_come / DEADLINE_RATE));
    let deadline = tokio::time::Instant::now() + allowed;
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    let mut stream = response.bytes_stream();
    loop {
        // The floor also bounds a silent server: no chunk within the window fails it.
        let window = tokio::time::Instant::now() + limits.floor_window;
        let next = tokio::time::timeout_at(window.min(deadline), stream.next()).await;
        let chunk = match next {
            Err(_) if window <= deadline => {
                let _ = file.flush().await;
                return Err(SyncError::new(
                    FailureKind::Timeout,
                    format!("{url}: no data for {:?}", limits.floor_window),
                ));
            }
            Err(_) => {
                let _ = file.flush().await;
                return Err(SyncError::new(
                    FailureKind::Timeout,
                    format!(
                        "{url}: not complete within {allowed:?} ({offset} of {} bytes; \
                         the next attempt resumes)",
                        total.map_or_else(|| "an unannounced number of".into(), |t| t.to_string())
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let _ = file.flush().await;
                return Err(endpoint.transport_error(url, &e));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        offset += chunk.len() as u64;
        if offset > limits.max_bytes {
            drop(file);
            let _ = tokio::fs::remove_file(partial).await;
            return Err(SyncError::new(
                FailureKind::TooLarge,
                format!("{url}: more than {} bytes", limits.max_bytes),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| local("writing", e))?;
        progress(offset, total);
        window_bytes += chunk.len() as u64;
        let elapsed = window_start.elapsed();
        if elapsed >= limits.floor_window {
            let rate = window_bytes as f64 / elapsed.as_secs_f64();
            if rate < limits.min_bytes_per_sec as f64 {
                let _ = file.flush().await;
                return Err(SyncError::new(
                    FailureKind::Timeout,
                    format!(
                        "{url}: transfer at {rate:.0} B/s is slower than the floor of {} B/s",
                        limits.min_bytes_per_sec
                    ),
                ));
            }
            window_start = Instant::now();
            window_bytes = 0;
        }
    }
    file.flush().await.map_err(|e| local("writing", e))?;
    file.sync_all().await.map_err(|e| local("syncing", e))?;
    if let Some(total) = total
        && offset != total
    {
        return Err(SyncError::new(
            FailureKind::Network,
            format!("{url}: transfer ended at {offset} of {total} bytes"),
        ));
    }
    Ok(Some(Fetched {
        path: partial.to_owned(),
        size: offset,
        etag,
        transferred: offset - transferred_start,
    }))
}

/// A 206 must continue exactly where the partial file ends.
fn range_starts_at(response: &reqwest::Response, have: u64) -> bool {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.parse::<u64>().ok())
        == Some(have)
}
