//! One check of one source: is there a bundle newer than the one held? If so, download it
//! (resuming a cut transfer) and verify it. Two kinds of source:
//!
//! - `upstream`: another relay or the origin speaking this API. The cheap question is
//!   `GET /api/v1/feeds/manifest` with `If-None-Match` (304 when nothing changed); a new
//!   bundle is then fetched by digest from `/api/v1/bundles/{sha256}`.
//! - `custom_location`: any HTTPS URL of a bundle file (IIS, nginx, object storage). The
//!   file itself is fetched with `If-None-Match` on the ETag of the last good fetch.

use std::path::{Path, PathBuf};

use crate::bundle::{
    self, Limits, Sequence, Sha256, Timestamp, TrustStore, VerifiedBundle, VerifyError,
};

use super::endpoint::Endpoint;
use super::error::{FailureKind, SyncError};
use super::fetch::{FetchLimits, Fetched, download};
use super::segments::{
    HeldFile, Remote, SegmentFetch, build_by_segments, fetch_by_segments, fetch_index,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Upstream,
    CustomLocation,
}

/// The bundle held now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub sequence: Sequence,
    pub sha256: Sha256,
}

#[derive(Debug)]
pub enum CheckOutcome {
    /// Nothing newer.
    UpToDate,
    /// A newer bundle, verified, in `file` (the caller commits or removes it).
    New {
        verified: Box<VerifiedBundle>,
        file: PathBuf,
        /// Bytes transferred by this check (manifest excluded).
        transferred: u64,
        via: Via,
        /// The bundle's segment index, when the source has one (checked against the file):
        /// keep it with the file to build the next bundle from it.
        index: Option<Box<crate::bundle::index::SegmentIndex>>,
    },
}

/// How a new bundle came: whole, or built from the held one's segments and fetched ones
/// (`relay/FORMAT.md`, "Segments and deltas").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Via {
    Whole {
        bytes: u64,
        /// Why not by segments, when that was tried (no index, a server without ranges,
        /// a piece that did not hash, a file that did not verify).
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
    },
    Segments {
        /// Transferred: the index and the ranges.
        bytes: u64,
        bundle_bytes: u64,
        reused_bytes: u64,
        requests: u64,
        /// Of `bytes`, a delta's (the changed segments as edits), and the bytes of the
        /// segments it rebuilt.
        delta_bytes: u64,
        rebuilt_bytes: u64,
    },
}

/// The bundle held now, as a file with its segment index: what a new one may be built
/// from.
#[derive(Clone, Debug)]
pub struct HeldBundle {
    pub path: PathBuf,
    pub index: crate::bundle::index::SegmentIndex,
}

/// What the check needs besides the endpoint.
pub struct CheckContext<'a> {
    pub trust: &'a TrustStore,
    pub limits: &'a Limits,
    pub fetch: FetchLimits,
    /// Where partial downloads live between checks (and restarts).
    pub work_dir: &'a Path,
    pub now: Timestamp,
    /// The held bundle's file and index, when it has one: new bundles are then fetched by
    /// segments where the source offers an index.
    pub held_file: Option<&'a HeldBundle>,
}

/// Checks `endpoint` once.
pub async fn check(
    kind: SourceKind,
    endpoint: &Endpoint,
    client: &reqwest::Client,
    held: Option<Held>,
    ctx: &CheckContext<'_>,
) -> Result<CheckOutcome, SyncError> {
    match kind {
        SourceKind::Upstream => check_upstream(endpoint, client, held, ctx).await,
        SourceKind::CustomLocation => check_custom(endpoint, client, held, ctx).await,
    }
}

#[derive(serde::Deserialize)]
struct ManifestDoc {
    bundle: BundleRef,
    sequence: Sequence,
}

#[derive(serde::Deserialize)]
struct BundleRef {
    sha256: Sha256,
    size: u64,
}

async fn check_upstream(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    held: Option<Held>,
    ctx: &CheckContext<'_>,
) -> Result<CheckOutcome, SyncError> {
    let url = format!("{}/api/v1/feeds/manifest", endpoint.base());
    let mut request = endpoint
        .authorize(client.get(&url))
        .timeout(endpoint.request_timeout);
    if let Some(h) = held {
        request = request.header(reqwest::header::IF_NONE_MATCH, format!("\"{}\"", h.sha256));
    }
    let response = request
        .send()
        .await
        .map_err(|e| endpoint.transport_error(&url, &e))?;
    match response.status() {
        reqwest::StatusCode::NOT_MODIFIED => return Ok(CheckOutcome::UpToDate),
        s if s.is_success() => {}
        _ => return Err(SyncError::status(&url, &response)),
    }
    // Capped while it is read: an upstream that sends an endless document is cut off at
    // the cap, not buffered whole first.
    let cap = ctx.limits.max_manifest as usize * 2 + 8192;
    let too_large = || {
        SyncError::new(
            FailureKind::TooLarge,
            format!("{url}: manifest document larger than {cap} bytes"),
        )
    };
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| endpoint.transport_error(&url, &e))?;
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let doc: ManifestDoc = serde_json::from_slice(&body).map_err(|e| {
        SyncError::new(
            FailureKind::UnexpectedStatus,
            format!("{url}: not a manifest document: {e}"),
        )
    })?;
    if let Some(h) = held {
        if doc.bundle.sha256 == h.sha256 {
            return Ok(CheckOutcome::UpToDate);
        }
        if doc.sequence <= h.sequence {
            return Err(SyncError::new(
                FailureKind::Older,
                format!(
                    "{url}: offers sequence {}, not newer than the held {}",
                    doc.sequence, h.sequence
                ),
            ));
        }
    }
    if doc.bundle.size > ctx.fetch.max_bytes {
        return Err(SyncError::new(
            FailureKind::TooLarge,
            format!(
                "{url}: bundle of {} bytes is over the limit of {}",
                doc.bundle.size, ctx.fetch.max_bytes
            ),
        ));
    }
    let bundle_url = format!("{}/api/v1/bundles/{}", endpoint.base(), doc.bundle.sha256);
    let partial = ctx.work_dir.join(format!("partial-{}", doc.bundle.sha256));
    remove_other_partials(ctx.work_dir, &partial).await;
    // The manifest says how large the bundle is: more is refused while it comes, and the
    // whole transfer's deadline is reckoned from it.
    let limits = FetchLimits {
        max_bytes: doc.bundle.size,
        ..ctx.fetch
    };
    // By segments when the held bundle has them, unless a whole download is being resumed.
    let mut fallback = None;
    if let Some(h) = ctx.held_file
        && tokio::fs::metadata(&partial).await.is_err()
    {
        let out = ctx.work_dir.join(format!("segments-{}", doc.bundle.sha256));
        let index_url = format!("{bundle_url}/index");
        let delta_url = format!("{bundle_url}/delta/{}", h.index.bundle_sha256);
        let remote = Remote {
            endpoint,
            client,
            bundle_url: &bundle_url,
            delta_url: Some(&delta_url),
        };
        let built = fetch_by_segments(
            remote,
            &index_url,
            Some(&doc.bundle.sha256),
            Some(HeldFile {
                path: &h.path,
                index: &h.index,
            }),
            &out,
            limits,
        )
        .await?;
        match by_segments_verified(&bundle_url, built, &out, held, ctx).await {
            Ok(outcome) => return Ok(outcome),
            Err(why) => fallback = Some(why),
        }
    }
    let fetched = download(
        endpoint,
        client,
        &bundle_url,
        &partial,
        None,
        limits,
        |_, _| {},
    )
    .await?
    .ok_or_else(|| {
        SyncError::new(
            FailureKind::UnexpectedStatus,
            format!("{bundle_url}: unexpected 304"),
        )
    })?;
    let verified = match verify_file(&bundle_url, &fetched.path, held, ctx).await {
        Ok(v) => v,
        Err(e) => {
            // A file that does not verify is not resumed next time.
            let _ = tokio::fs::remove_file(&fetched.path).await;
            return Err(e);
        }
    };
    let index_url = format!("{bundle_url}/index");
    Ok(came_whole(endpoint, client, &index_url, verified, fetched, fallback).await)
}

/// A bundle that came whole, verified: the outcome, with the bundle's index from the
/// source when it has one, checked against the file (best effort: without it the next
/// bundle comes whole too).
async fn came_whole(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    index_url: &str,
    verified: VerifiedBundle,
    fetched: Fetched,
    fallback: Option<String>,
) -> CheckOutcome {
    let sha256 = verified.sha256();
    let file = fetched.path.clone();
    let index = async {
        let (index, _) = fetch_index(endpoint, client, index_url, Some(&sha256))
            .await
            .ok()?
            .ok()?;
        tokio::task::spawn_blocking(move || {
            let mut f = std::io::BufReader::new(std::fs::File::open(file).ok()?);
            index.check_against(&mut f).ok()?;
            Some(Box::new(index))
        })
        .await
        .ok()
        .flatten()
    }
    .await;
    CheckOutcome::New {
        verified: Box::new(verified),
        file: fetched.path,
        transferred: fetched.transferred,
        via: Via::Whole {
            bytes: fetched.transferred,
            fallback,
        },
        index,
    }
}

/// A file built from segments, verified: the outcome, or why the whole file is needed.
async fn by_segments_verified(
    url: &str,
    built: SegmentFetch,
    out: &Path,
    held: Option<Held>,
    ctx: &CheckContext<'_>,
) -> Result<CheckOutcome, String> {
    let (stats, index) = match built {
        SegmentFetch::Built { stats, index } => (stats, index),
        SegmentFetch::Whole { reason, .. } => return Err(reason),
    };
    match verify_file(url, out, held, ctx).await {
        Ok(verified) => Ok(CheckOutcome::New {
            verified: Box::new(verified),
            file: out.to_owned(),
            transferred: stats.transferred(),
            via: Via::Segments {
                bytes: stats.transferred(),
                bundle_bytes: stats.bundle_size,
                reused_bytes: stats.reused_bytes,
                requests: stats.requests,
                delta_bytes: stats.delta_bytes,
                rebuilt_bytes: stats.rebuilt_bytes,
            },
            index: Some(index),
        }),
        Err(e) => {
            let _ = tokio::fs::remove_file(out).await;
            Err(format!("the file built from segments did not verify: {e}"))
        }
    }
}

async fn check_custom(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    held: Option<Held>,
    ctx: &CheckContext<'_>,
) -> Result<CheckOutcome, SyncError> {
    let url = endpoint.url.clone();
    let key = Sha256::of(url.as_bytes()).to_hex();
    let partial = ctx.work_dir.join(format!("partial-custom-{}", &key[..16]));
    let last_etag_path = ctx
        .work_dir
        .join(format!("custom-{}.last-etag", &key[..16]));
    let last_etag = match held {
        Some(_) => tokio::fs::read_to_string(&last_etag_path).await.ok(),
        None => None,
    };
    // By segments when the held bundle has them and the location has `<url>.idx`.
    let mut fallback = None;
    if let (Some(h), Some(held_now)) = (ctx.held_file, held) {
        let index_url = format!("{url}.idx");
        match fetch_index(endpoint, client, &index_url, None).await? {
            Ok((new, _)) if new.bundle_sha256 == held_now.sha256 => {
                return Ok(CheckOutcome::UpToDate);
            }
            Ok((new, spent)) => {
                let out = ctx.work_dir.join(format!("segments-custom-{}", &key[..16]));
                let held_file = HeldFile {
                    path: &h.path,
                    index: &h.index,
                };
                let delta_url = crate::bundle::delta::sidecar_url(&url, &held_now.sha256);
                let remote = Remote {
                    endpoint,
                    client,
                    bundle_url: &url,
                    delta_url: Some(&delta_url),
                };
                let built =
                    build_by_segments(remote, new, spent, held_file, &out, ctx.fetch).await?;
                match by_segments_verified(&url, built, &out, held, ctx).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(why) => fallback = Some(why),
                }
            }
            Err(SegmentFetch::Whole { reason, .. }) => fallback = Some(reason),
            Err(SegmentFetch::Built { .. }) => {}
        }
    }
    let fetched = download(
        endpoint,
        client,
        &url,
        &partial,
        last_etag.as_deref(),
        ctx.fetch,
        |_, _| {},
    )
    .await?;
    let Some(fetched) = fetched else {
        return Ok(CheckOutcome::UpToDate);
    };
    let verified = match verify_file(&url, &fetched.path, held, ctx).await {
        Ok(v) => v,
        Err(e) => {
            // The same bundle again (a server without ETags) is nothing new, not an error.
            let same = match (e.verify.as_deref(), held) {
                (Some(VerifyError::NotNewer { .. }), Some(h)) => {
                    file_digest(&fetched.path).await == Some(h.sha256)
                }
                _ => false,
            };
            // A file that does not verify is not resumed next time.
            let _ = tokio::fs::remove_file(&fetched.path).await;
            return if same {
                Ok(CheckOutcome::UpToDate)
            } else {
                Err(e)
            };
        }
    };
    match &fetched.etag {
        Some(tag) => {
            let _ = tokio::fs::write(&last_etag_path, tag).await;
        }
        None => {
            let _ = tokio::fs::remove_file(&last_etag_path).await;
        }
    }
    let index_url = format!("{url}.idx");
    Ok(came_whole(endpoint, client, &index_url, verified, fetched, fallback).await)
}

async fn verify_file(
    url: &str,
    path: &Path,
    held: Option<Held>,
    ctx: &CheckContext<'_>,
) -> Result<VerifiedBundle, SyncError> {
    let (path, trust, limits, now) = (path.to_owned(), ctx.trust.clone(), *ctx.limits, ctx.now);
    let held_seq = held.map(|h| h.sequence);
    let result = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(VerifyError::Read)?;
        bundle::verify(
            std::io::BufReader::with_capacity(1 << 16, file),
            &trust,
            &limits,
            now,
            held_seq,
        )
    })
    .await
    .map_err(|e| SyncError::new(FailureKind::Local, format!("verification task: {e}")))?;
    result.map_err(|e| SyncError::verification(url, e))
}

async fn file_digest(path: &Path) -> Option<Sha256> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path).ok()?;
        let mut sink = bundle::HashingSink::default();
        std::io::copy(&mut file, &mut sink).ok()?;
        Some(sink.finish())
    })
    .await
    .ok()
    .flatten()
}

/// Removes the partial downloads of bundles other than the one about to be fetched
/// (`keep`), and their validators: an upstream that moved on, or offered a different
/// bundle each time, would otherwise leave one partial file per digest for good. Only
/// one bundle is resumed at a time; the partials of custom locations and vendor archives
/// (one per URL, reused) are not touched.
async fn remove_other_partials(work_dir: &std::path::Path, keep: &std::path::Path) {
    let Ok(mut entries) = tokio::fs::read_dir(work_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("partial-") else {
            continue;
        };
        let digest = rest.strip_suffix(".etag").unwrap_or(rest);
        let is_bundle = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        let path = entry.path();
        if is_bundle
            && path != keep
            && path != keep.with_extension("etag")
            && let Err(e) = tokio::fs::remove_file(&path).await
        {
            tracing::debug!(path = %path.display(), error = %e, "cannot remove a stale partial download");
        }
    }
}
