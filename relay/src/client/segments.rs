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
use crate::bundle::delta::Delta;
use crate::bundle::index::{self, Piece, SegmentIndex};

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
    /// Of `fetched_bytes`, the delta's; and the bytes of the segments it rebuilt.
    pub delta_bytes: u64,
    pub rebuilt_bytes: u64,
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
    /// Where a delta from the held bundle would be, if the source may have one.
    pub delta_url: Option<&'a str>,
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
        ..
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
    let local = |what: &str, e: std::io::Error| {
        SyncError::new(FailureKind::Local, format!("{what} {}: {e}", out.display()))
    };
    let dir = out.parent().unwrap_or(Path::new("."));
    let spool = tempfile::tempfile_in(dir).map_err(|e| local("spooling beside", e))?;
    let mut spool = tokio::fs::File::from_std(spool);
    let mut spooled = 0u64;
    let mut pieces: Vec<Option<Piece>> = plan.sources.iter().map(|s| s.map(Piece::Held)).collect();
    let mut delta_bytes = 0u64;
    let mut rebuilt_bytes = 0u64;
    let mut delta_note = None;
    // A delta first, when the source offers one from the held bundle: the changed
    // segments rebuilt from their edits, each kept only if it hashes as the index says.
    if let Some(delta_url) = remote.delta_url
        && plan.fetch_bytes > 0
    {
        match fetch_delta(endpoint, client, delta_url, plan.fetch_bytes, dir).await {
            Ok(Some((file, size))) => {
                delta_bytes = size;
                let (held_path, old, new_c) =
                    (held.path.to_owned(), held.index.clone(), new.clone());
                let std_spool = spool
                    .try_clone()
                    .await
                    .map_err(|e| local("spooling beside", e))?
                    .into_std()
                    .await;
                let start = spooled;
                let applied = tokio::task::spawn_blocking(move || {
                    apply_delta(file, &held_path, &old, &new_c, std_spool, start)
                })
                .await
                .map_err(|e| {
                    SyncError::new(FailureKind::Local, format!("applying a delta: {e}"))
                })?;
                match applied {
                    Ok((placed, end)) => {
                        spooled = end;
                        for (i, at) in placed {
                            rebuilt_bytes += u64::from(new.segments[i].size);
                            pieces[i] = Some(Piece::Spool(at));
                        }
                    }
                    Err(why) => delta_note = Some(why),
                }
                use tokio::io::AsyncSeekExt;
                spool
                    .seek(SeekFrom::Start(spooled))
                    .await
                    .map_err(|e| local("spooling beside", e))?;
            }
            Ok(None) => {}
            Err(why) => delta_note = Some(why),
        }
    }
    // The rest by range: the segments still missing, neighbours merged.
    for (i, piece) in pieces.iter().enumerate() {
        plan.sources[i] = match piece {
            Some(Piece::Held(at)) => Some(*at),
            // Rebuilt: counted as held for the ranges (nothing to fetch).
            Some(Piece::Spool(_)) => Some(u64::MAX),
            None => None,
        };
    }
    let mut ranges = index::ranges_for(&new, &plan.sources);
    merge_small_gaps(&new, &mut ranges);
    let range_bytes: u64 = ranges.fetch.iter().map(|(a, b)| b - a).sum();
    let cost = range_bytes + ranges.fetch.len() as u64 * REQUEST_OVERHEAD;
    if delta_bytes + cost >= new.bundle_size() + spent {
        return whole(
            format!(
                "the segments not held ({range_bytes} bytes in {} ranges{}) cost as much as the whole file ({} bytes)",
                ranges.fetch.len(),
                if delta_bytes > 0 {
                    format!(", after a delta of {delta_bytes}")
                } else {
                    String::new()
                },
                new.bundle_size()
            ),
            spent + delta_bytes,
        );
    }
    // The ranges together get the deadline a whole download of their size would: a
    // source that drips bytes cannot hold a check open.
    let allowed = limits
        .deadline_floor
        .saturating_add(std::time::Duration::from_secs(range_bytes / DEADLINE_RATE));
    let fetched = tokio::time::timeout(allowed, async {
        for &(start, end) in &ranges.fetch {
            fetch_range(endpoint, client, bundle_url, start, end, &mut spool).await?;
        }
        Ok::<(), RangeError>(())
    })
    .await;
    match fetched {
        Ok(Ok(())) => {}
        Ok(Err(RangeError::Unsupported(why))) => return whole(why, spent + delta_bytes),
        Ok(Err(RangeError::Sync(e))) => return Err(e),
        Err(_) => {
            return Err(SyncError::new(
                FailureKind::Timeout,
                format!(
                    "{bundle_url}: {range_bytes} bytes of segments not fetched within {allowed:?}"
                ),
            ));
        }
    }
    // Where each fetched segment landed: the ranges were spooled in order from `spooled`.
    let placed: Vec<(u64, u32)> = new.placed().map(|(o, s)| (o, s.size)).collect();
    let mut at = spooled;
    for &(start, end) in &ranges.fetch {
        let first = placed.partition_point(|&(o, _)| o < start);
        for (i, &(o, size)) in placed.iter().enumerate().skip(first) {
            if o + u64::from(size) > end {
                break;
            }
            pieces[i] = Some(Piece::Spool(at + (o - start)));
        }
        at += end - start;
    }
    spool
        .flush()
        .await
        .map_err(|e| local("spooling beside", e))?;
    let mut spool = spool.into_std().await;
    let Some(pieces) = pieces.into_iter().collect::<Option<Vec<Piece>>>() else {
        return whole(
            "a segment was neither held, rebuilt nor fetched".into(),
            spent + delta_bytes + range_bytes,
        );
    };
    let out_path = out.to_owned();
    let held_path = held.path.to_owned();
    let new_for_task = new.clone();
    let assembled = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut held = std::fs::File::open(&held_path)
            .map(BufReader::new)
            .map_err(|e| format!("{}: {e}", held_path.display()))?;
        let file =
            std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let mut writer = BufWriter::new(file);
        spool.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        index::assemble_pieces(
            &new_for_task,
            &pieces,
            &mut held,
            &mut BufReader::new(&mut spool),
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
            spent + delta_bytes + range_bytes,
        );
    }
    let _ = delta_note;
    Ok(SegmentFetch::Built {
        stats: SegmentStats {
            index_bytes: spent,
            fetched_bytes: delta_bytes + range_bytes,
            reused_bytes: plan.reused_bytes,
            requests: ranges.fetch.len() as u64 + 1 + u64::from(delta_bytes > 0),
            bundle_size: new.bundle_size(),
            delta_bytes,
            rebuilt_bytes,
        },
        index: Box::new(new),
    })
}

/// GETs the delta at `url` into a temp file in `dir`, giving up past `cap` bytes (the
/// ranges it would save): `Ok(None)` when there is none (404); `Err(why)` when it cannot
/// be had.
async fn fetch_delta(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    url: &str,
    cap: u64,
    dir: &Path,
) -> Result<Option<(std::fs::File, u64)>, String> {
    let response = endpoint
        .authorize(client.get(url))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    match response.status() {
        StatusCode::NOT_FOUND => return Ok(None),
        s if s.is_success() => {}
        s => return Err(format!("{url}: {s}")),
    }
    let file = tempfile::tempfile_in(dir).map_err(|e| e.to_string())?;
    let mut out = tokio::fs::File::from_std(file);
    let mut got = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("{url}: {e}"))?;
        got += chunk.len() as u64;
        if got > cap {
            return Err(format!(
                "{url}: the delta is larger than the segments it replaces"
            ));
        }
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    let mut file = out.into_std().await;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(Some((file, got)))
}

/// Applies a delta (blocking): the segments it rebuilds are appended to `spool` from
/// `start`; their numbers and offsets, and where the spool ends. `Err(why)` when the delta
/// is not for these bundles or is malformed (the ranges then fetch everything).
fn apply_delta(
    delta_file: std::fs::File,
    held_path: &Path,
    old: &SegmentIndex,
    new: &SegmentIndex,
    mut spool: std::fs::File,
    start: u64,
) -> Result<(crate::bundle::delta::Placed, u64), String> {
    use std::io::Write;
    let delta = Delta::read(BufReader::new(delta_file), old, new).map_err(|e| e.to_string())?;
    // Checked once here, so a missing file is said plainly; each worker opens its own.
    std::fs::metadata(held_path).map_err(|e| format!("{}: {e}", held_path.display()))?;
    let open_held = || std::fs::File::open(held_path).map(BufReader::new);
    spool
        .seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut writer = BufWriter::new(&mut spool);
    // Segments that did not rebuild stay missing: fetched by range.
    let (placed, _) = delta
        .apply_to(open_held, old, new, &mut writer, start)
        .map_err(|e| e.to_string())?;
    writer.flush().map_err(|e| e.to_string())?;
    let end = placed
        .last()
        .map_or(start, |&(i, at)| at + u64::from(new.segments[i].size));
    Ok((placed, end))
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
        .map_err(|e| RangeError::Sync(endpoint.transport_error(url, &e)))?;
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
        let chunk = chunk.map_err(|e| RangeError::Sync(endpoint.transport_error(url, &e)))?;
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
        .map_err(|e| endpoint.transport_error(url, &e))?;
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| endpoint.transport_error(url, &e))?;
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
