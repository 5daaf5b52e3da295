//! Fetching a bundle by its segments (`relay/FORMAT.md`, "Segments and deltas"): the new
//! bundle's index, then only the segments the held bundle does not have, with `Range`
//! requests to the bundle's URL (a relay, or any static web server that honours ranges),
//! assembled beside the held file. When that cannot work (no index, a server that ignores
//! ranges, a piece that does not hash as listed) or would cost more than the whole file,
//! the caller is told why and downloads the whole file instead. Nothing fetched here is
//! trusted: the caller verifies the file built before using it.

use std::io::{BufReader, BufWriter, Seek, SeekFrom};

use std::path::Path;
use tokio::io::AsyncWriteExt;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

use super::endpoint::Endpoint;
use super::error::{FailureKind, SyncError};
use super::fetch::{DEADLINE_RATE, FetchLimits};
use crate::bundle::Sha256;
use crate::bundle::index::{self, SegmentIndex};

/// The largest index accepted (an index of a 2 GiB bundle is a few MiB).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// What a range request costs beyond its bytes (request and response headers), for
/// choosing between segments and the whole file.
pub const REQUEST_OVERHEAD: u64 = 600;
/// Held segments between two fetched ranges are fetched again when this small, to save a
/// request.
pub const MERGE_GAP: u64 = 2048;

/// How a bundle was built from segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStats {
    pub index_bytes: u64,
    pub fetched_bytes: u64,
    pub reused_bytes: u64,
    pub requests: u64,
    pub bundle_size: u64,
}

impl SegmentStats {
    /// Everything transferred: the index and the ranges.
    pub fn transferred(&self) -> u64 {
        self.index_bytes + self.fetched_bytes
    }
}

/// What [`fetch_by_segments`] did.
#[derive(Debug)]
pub enum SegmentFetch {
    /// The file is built at the given path (not verified yet), with its new index.
    Built {
        stats: SegmentStats,
        index: Box<SegmentIndex>,
    },
    /// Fetch the whole file instead, for this reason (and these bytes already spent on
    /// the index, if any).
    Whole { reason: String, spent: u64 },
}

/// The held bundle a new one may be built from.
pub struct HeldFile<'a> {
    pub path: &'a Path,
    pub index: &'a SegmentIndex,
}

/// Builds the bundle at `bundle_url` into `out`: its index from `index_url`, its
/// segments from the held file where it has them, the rest from `bundle_url` by range.
/// `expected`: the bundle's SHA-256 when the source named it (a relay's manifest).
pub async fn fetch_by_segments(
    remote: Remote<'_>,
    index_url: &str,
    expected: Option<&Sha256>,
    held: Option<HeldFile<'_>>,
    out: &Path,
    limits: FetchLimits,
) -> Result<SegmentFetch, SyncError> {
    let Some(held) = held else {
        return Ok(SegmentFetch::Whole {
            reason: "no earlier bundle held to build from".into(),
            spent: 0,
        });
    };
    let (new, spent) =
        match fetch_index(remote.endpoint, remote.client, index_url, expected).await? {
            Ok(got) => got,
            Err(whole) => return Ok(whole),
        };
    build_by_segments(remote, new, spent, held, out, limits).await
}

/// Where a bundle file is fetched from: a URL, with its endpoint's credential and client.
#[derive(Clone, Copy)]
pub struct Remote<'a> {
    pub endpoint: &'a Endpoint,
    pub client: &'a reqwest::Client,
    pub bundle_url: &'a str,
}

/// The index at `index_url`, and the bytes it cost; or why the whole file it is.
pub async fn fetch_index(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    index_url: &str,
    expected: Option<&Sha256>,
) -> Result<Result<(SegmentIndex, u64), SegmentFetch>, SyncError> {
    let whole = |reason: String, spent: u64| Ok(Err(SegmentFetch::Whole { reason, spent }));
    let (bytes, status) = match get_capped(endpoint, client, index_url, MAX_INDEX_BYTES).await {
        Ok(got) => got,
        Err(e) => return whole(format!("segment index: {e}"), 0),
    };
    let spent = bytes.len() as u64;
    if status == StatusCode::NOT_FOUND {
        return whole(format!("{index_url}: no segment index (404)"), spent);
    }
    if !status.is_success() {
        return whole(format!("{index_url}: {status}"), spent);
    }
    let new = match SegmentIndex::decode(&bytes) {
        Ok(new) => new,
        Err(e) => return whole(format!("{index_url}: {e}"), spent),
    };
    if let Some(expected) = expected
        && &new.bundle_sha256 != expected
    {
        return whole(
            format!("{index_url}: the index describes another bundle than the one offered"),
            spent,
        );
    }
    Ok(Ok((new, spent)))
}

/// The second half of [`fetch_by_segments`], given the new index (which cost `spent`).
pub async fn build_by_segments(
    remote: Remote<'_>,
    new: SegmentIndex,
    spent: u64,
    held: HeldFile<'_>,
    out: &Path,
    limits: FetchLimits,
) -> Result<SegmentFetch, SyncError> {
    let Remote {
        endpoint,
        client,
        bundle_url,
    } = remote;
    let whole = |reason: String, spent: u64| Ok(SegmentFetch::Whole { reason, spent });
    // An index is anyone's word: the bundle it describes is held to the same cap as a
    // whole download (for a relay's upstream, the size its manifest announced).
    if new.bundle_size() > limits.max_bytes {
        return whole(
            format!(
                "the index describes a bundle of {} bytes, over the limit of {}",
                new.bundle_size(),
                limits.max_bytes
            ),
            spent,
        );
    }
    let mut plan = index::plan(&new, Some(held.index));
    merge_small_gaps(&new, &mut plan);
    let cost = plan.fetch_bytes + plan.fetch.len() as u64 * REQUEST_OVERHEAD;
    if cost >= new.bundle_size() {
        return whole(
            format!(
                "the segments not held ({} bytes in {} ranges) cost as much as the whole file ({} bytes)",
                plan.fetch_bytes,
                plan.fetch.len(),
                new.bundle_size()
            ),
            spent,
        );
    }
    let local = |what: &str, e: std::io::Error| {
        SyncError::new(FailureKind::Local, format!("{what} {}: {e}", out.display()))
    };
    let dir = out.parent().unwrap_or(Path::new("."));
    let spool = tempfile::tempfile_in(dir).map_err(|e| local("spooling beside", e))?;
    let mut spool = tokio::fs::File::from_std(spool);
    // The ranges together get the deadline a whole download of their size would: a
    // source that drips bytes cannot hold a check open.
    let allowed = limits
        .deadline_floor
        .saturating_add(std::time::Duration::from_secs(
            plan.fetch_bytes / DEADLINE_RATE,
        ));
    let fetched = tokio::time::timeout(allowed, async {
        for &(start, end) in &plan.fetch {
            fetch_range(endpoint, client, bundle_url, start, end, &mut spool).await?;
        }
        Ok::<(), RangeError>(())
    })
    .await;
    match fetched {
        Ok(Ok(())) => {}
        Ok(Err(RangeError::Unsupported(why))) => return whole(why, spent),
        Ok(Err(RangeError::Sync(e))) => return Err(e),
        Err(_) => {
            return Err(SyncError::new(
                FailureKind::Timeout,
                format!(
                    "{bundle_url}: {} bytes of segments not fetched within {allowed:?}",
                    plan.fetch_bytes
                ),
            ));
        }
    }
    spool
        .flush()
        .await
        .map_err(|e| local("spooling beside", e))?;
    let mut spool = spool.into_std().await;
    let out_path = out.to_owned();
    let held_path = held.path.to_owned();
    let new_for_task = new.clone();
    let plan_for_task = plan.clone();
    let assembled = tokio::task::spawn_blocking(move || -> Result<(), String> {
        spool.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        let mut held = std::fs::File::open(&held_path)
            .map(BufReader::new)
            .map_err(|e| format!("{}: {e}", held_path.display()))?;
        let file =
            std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let mut writer = BufWriter::new(file);
        index::assemble(
            &new_for_task,
            &plan_for_task,
            Some(&mut held),
            &mut BufReader::new(spool),
            &mut writer,
        )
        .map_err(|e| e.to_string())?;
        let file = writer.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| SyncError::new(FailureKind::Local, format!("assembling: {e}")))?;
    if let Err(why) = assembled {
        let _ = std::fs::remove_file(out);
        return whole(
            format!("building from segments: {why}"),
            spent + plan.fetch_bytes,
        );
    }
    Ok(SegmentFetch::Built {
        stats: SegmentStats {
            index_bytes: spent,
            fetched_bytes: plan.fetch_bytes,
            reused_bytes: plan.reused_bytes,
            requests: plan.fetch.len() as u64 + 1,
            bundle_size: new.bundle_size(),
        },
        index: Box::new(new),
    })
}

/// Fetches held segments again where they sit between two fetched ranges and are small,
/// one request instead of two.
fn merge_small_gaps(new: &SegmentIndex, plan: &mut index::Plan) {
    let placed: Vec<(u64, u64)> = new
        .placed()
        .map(|(at, s)| (at, at + u64::from(s.size)))
        .collect();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(plan.fetch.len());
    for &(start, end) in &plan.fetch {
        match merged.last_mut() {
            Some((_, last_end)) if start - *last_end <= MERGE_GAP => {
                for (i, &(a, b)) in placed.iter().enumerate() {
                    if a >= *last_end && b <= start && plan.sources[i].is_some() {
                        plan.sources[i] = None;
                        plan.fetch_bytes += b - a;
                        plan.reused_bytes -= b - a;
                    }
                }
                *last_end = end;
            }
            _ => merged.push((start, end)),
        }
    }
    plan.fetch = merged;
}

enum RangeError {
    /// The server cannot do ranges (or lies about them): fetch the whole file.
    Unsupported(String),
    Sync(SyncError),
}

/// Appends bytes `start..end` of `url` to `out`, refusing anything but a 206 for exactly
/// that range.
async fn fetch_range(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    url: &str,
    start: u64,
    end: u64,
    out: &mut tokio::fs::File,
) -> Result<(), RangeError> {
    let response = endpoint
        .authorize(client.get(url))
        .header(RANGE, format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .map_err(|e| RangeError::Sync(SyncError::transport(url, &e)))?;
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {}
        StatusCode::OK => {
            return Err(RangeError::Unsupported(format!(
                "{url}: the server ignores Range requests (200 to a range)"
            )));
        }
        _ => return Err(RangeError::Sync(SyncError::status(url, &response))),
    }
    let announced = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('/').next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    if announced != Some((start, end - 1)) {
        return Err(RangeError::Unsupported(format!(
            "{url}: a range answer for other bytes than asked ({start}-{})",
            end - 1
        )));
    }
    let mut got = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RangeError::Sync(SyncError::transport(url, &e)))?;
        got += chunk.len() as u64;
        if got > end - start {
            return Err(RangeError::Unsupported(format!(
                "{url}: more bytes than the range asked for"
            )));
        }
        out.write_all(&chunk).await.map_err(|e| {
            RangeError::Sync(SyncError::new(
                FailureKind::Local,
                format!("spooling a range: {e}"),
            ))
        })?;
    }
    if got != end - start {
        return Err(RangeError::Sync(SyncError::new(
            FailureKind::Network,
            format!("{url}: a range ended at {got} of {} bytes", end - start),
        )));
    }
    Ok(())
}

/// GETs `url` into memory, at most `cap` bytes; the body and the status.
async fn get_capped(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    url: &str,
    cap: u64,
) -> Result<(Vec<u8>, StatusCode), SyncError> {
    let response = endpoint
        .authorize(client.get(url))
        .send()
        .await
        .map_err(|e| SyncError::transport(url, &e))?;
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SyncError::transport(url, &e))?;
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(SyncError::new(
                FailureKind::TooLarge,
                format!("{url}: more than {cap} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, status))
}
