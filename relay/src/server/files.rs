//! Serving bundle bytes: the current bundle, held bundles by digest, and the small signed
//! manifest. HTTP semantics live here: `ETag` (the bundle's SHA-256), `Last-Modified`
//! (its `created` time), `If-None-Match`, `If-Modified-Since`, a single `Range` (206 or
//! 416), `If-Range`, `HEAD`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::Relay;
use super::routes::{empty, problem};
use crate::bundle::{Sha256, Timestamp};
use crate::store::{ArchiveRecord, BundleRecord, Current, Validators};

/// What a download response describes.
pub struct Served {
    pub sha256: Sha256,
    pub size: u64,
    /// `Last-Modified`.
    pub modified: Timestamp,
    /// `Content-Disposition` file name.
    pub filename: String,
}

impl From<&BundleRecord> for Served {
    fn from(r: &BundleRecord) -> Self {
        Self {
            sha256: r.sha256,
            size: r.size,
            modified: r.created,
            filename: format!("intel_bundle_{}.tar.gz", r.sequence),
        }
    }
}

impl From<&ArchiveRecord> for Served {
    fn from(r: &ArchiveRecord) -> Self {
        Self {
            sha256: r.sha256,
            size: r.size,
            modified: r.stored_at,
            filename: format!("{}.tar.gz", r.name),
        }
    }
}

/// `GET /api/v1/feeds/bundle` and the custom location: the current bundle.
pub async fn current_bundle(
    State(relay): State<Arc<Relay>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let Some(current) = relay.store.current() else {
        return problem(StatusCode::NOT_FOUND, "no bundle held yet");
    };
    let served = Served::from(&current.record);
    let source = if method == axum::http::Method::HEAD {
        // The headers say it all; nothing is read.
        Source::File(current.path.clone())
    } else {
        Source::Current(current)
    };
    serve(&headers, &served, source, "no-cache").await
}

/// `GET /api/v1/bundles/{sha256}`: a held bundle; immutable by construction.
pub async fn held_bundle(
    State(relay): State<Arc<Relay>>,
    method: axum::http::Method,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(sha256) = sha256.parse::<Sha256>() else {
        return problem(StatusCode::BAD_REQUEST, "not a sha256 digest");
    };
    match lookup(&relay, move |store| store.held(&sha256)).await {
        Ok(Some((record, path))) => {
            let source = match relay.store.current() {
                Some(c) if c.record.sha256 == sha256 && method != axum::http::Method::HEAD => {
                    Source::Current(c)
                }
                _ => Source::File(path),
            };
            serve(
                &headers,
                &Served::from(&record),
                source,
                "public, max-age=31536000, immutable",
            )
            .await
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such bundle held"),
        Err(response) => response,
    }
}

/// `GET /api/v1/bundles/{sha256}/index`: a held bundle's segment index (`relay/FORMAT.md`,
/// "Segments and deltas"), derived on first use; 404 when the bundle is not held or has
/// no segments (built by an older builder).
pub async fn held_index(State(relay): State<Arc<Relay>>, Path(sha256): Path<String>) -> Response {
    let Ok(sha256) = sha256.parse::<Sha256>() else {
        return problem(StatusCode::BAD_REQUEST, "not a sha256 digest");
    };
    index_response(&relay, sha256).await
}

/// `GET /api/v1/bundles/{sha256}/delta/{from}`: the delta that builds held bundle
/// `sha256` from held bundle `from` (`relay/FORMAT.md`, "Segments and deltas"), made on
/// first use; 404 when either is not held or has no segments.
pub async fn held_delta(
    State(relay): State<Arc<Relay>>,
    Path((sha256, from)): Path<(String, String)>,
) -> Response {
    let (Ok(to), Ok(from)) = (sha256.parse::<Sha256>(), from.parse::<Sha256>()) else {
        return problem(StatusCode::BAD_REQUEST, "not a sha256 digest");
    };
    // Both named by digest: the bytes never change.
    delta_response(&relay, to, from, "public, max-age=31536000, immutable").await
}

/// `GET <custom location>.delta-<16 hex>`: the delta from the held bundle whose SHA-256
/// starts with those digits to the current one, where a plain custom-location client looks
/// for it (`bundle::delta::sidecar_url`). The path stays while the current bundle changes:
/// not to be cached without asking again.
pub async fn current_delta(
    State(relay): State<Arc<Relay>>,
    Path(prefix): Path<String>,
) -> Response {
    if prefix.len() != 16
        || !prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return problem(
            StatusCode::NOT_FOUND,
            "a delta is named by the first 16 hex digits of the bundle it starts from",
        );
    }
    let Some(current) = relay.store.current() else {
        return problem(StatusCode::NOT_FOUND, "no bundle held yet");
    };
    let to = current.record.sha256;
    let from = match lookup(&relay, move |store| {
        Ok(store
            .held_all()?
            .into_iter()
            .map(|r| r.sha256)
            .find(|sha| sha != &to && sha.to_hex().starts_with(&prefix)))
    })
    .await
    {
        Ok(Some(from)) => from,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "no held bundle to make a delta from starts with those digits",
            );
        }
        Err(response) => return response,
    };
    delta_response(&relay, to, from, "no-cache").await
}

async fn delta_response(
    relay: &Arc<Relay>,
    to: Sha256,
    from: Sha256,
    cache_control: &'static str,
) -> Response {
    let Ok(_slot) = DERIVING.acquire().await else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    match lookup(relay, move |store| store.delta(&to, &from)).await {
        Ok(Some(bytes)) => {
            let mut r = Response::new(Body::from(bytes));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            r
        }
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "no delta between these bundles (one is not held, or has no segments)",
        ),
        Err(response) => response,
    }
}

/// `GET <custom location>.idx`: the current bundle's segment index, beside the current
/// bundle where a plain custom-location client looks for it.
pub async fn current_index(State(relay): State<Arc<Relay>>) -> Response {
    match relay.store.current() {
        Some(c) => index_response(&relay, c.record.sha256).await,
        None => problem(StatusCode::NOT_FOUND, "no bundle held yet"),
    }
}

/// Deriving an index or making a delta reads a whole bundle: at most two at a time, and
/// the askers beyond wait here, not on blocking threads (a reader asking for every pair of
/// held bundles at once cannot take the blocking pool).
static DERIVING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn index_response(relay: &Arc<Relay>, sha256: Sha256) -> Response {
    let Ok(_slot) = DERIVING.acquire().await else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    match lookup(relay, move |store| store.segment_index(&sha256)).await {
        Ok(Some(bytes)) => {
            let mut r = Response::new(Body::from(bytes));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            r
        }
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "no segment index for this bundle (not held, or built without segments)",
        ),
        Err(response) => response,
    }
}

/// Runs a store read off the async threads; a failure is logged and becomes a 500.
async fn lookup<T: Send + 'static>(
    relay: &Arc<Relay>,
    read: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = Arc::clone(&relay.store);
    match tokio::task::spawn_blocking(move || read(&store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the store");
            Err(problem(StatusCode::INTERNAL_SERVER_ERROR, "store error"))
        }
        Err(e) => {
            tracing::error!(error = %e, "store task");
            Err(problem(StatusCode::INTERNAL_SERVER_ERROR, "store error"))
        }
    }
}

/// `GET /api/v1/feeds/manifest`: the cheap "anything new?" check. The body carries the
/// exact signed manifest text and its signature, so a client can verify it, and the
/// digest and size of the bundle file to fetch.
/// The manifest's path: routed in `routes.rs`, and its conditional checks answered by the
/// lean path (`lean.rs`) too.
pub const MANIFEST_PATH: &str = "/api/v1/feeds/manifest";

pub async fn manifest(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> Response {
    let Some(current) = relay.store.current() else {
        return problem(StatusCode::NOT_FOUND, "no bundle held yet");
    };
    // The check every consumer makes daily: answered from the validators the current
    // bundle carries, made once (no formatting per request).
    let v = current_validators(&current);
    if if_none_match(&headers, etag_text(v)) {
        return not_modified(v);
    }
    let body = manifest_document(&current.record).to_string();
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_validators(h, v);
    response
}

/// A held vendor archive, at `/api/v1/archives/{name}` or its configured path.
pub async fn archive(relay: Arc<Relay>, name: String, headers: HeaderMap) -> Response {
    match lookup(&relay, move |store| store.archive(&name)).await {
        Ok(Some((record, path))) => {
            serve(
                &headers,
                &Served::from(&record),
                Source::File(path),
                "no-cache",
            )
            .await
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such archive held"),
        Err(response) => response,
    }
}

/// `GET /api/v1/archives/{name}`.
pub async fn archive_by_name(
    State(relay): State<Arc<Relay>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !relay.config.archives.iter().any(|a| a.name == name) {
        return problem(StatusCode::NOT_FOUND, "no such archive configured");
    }
    archive(relay, name, headers).await
}

/// The manifest document, also returned by an upload.
pub fn manifest_document(r: &BundleRecord) -> serde_json::Value {
    serde_json::json!({
        "bundle": {
            "sha256": r.sha256,
            "size": r.size,
            "url": format!("/api/v1/bundles/{}", r.sha256),
        },
        "sequence": r.sequence,
        "manifest": r.manifest,
        "signature": r.signature,
    })
}

/// Where the bytes come from.
pub enum Source {
    /// The current bundle: from memory when it is small enough (see [`shared_bytes`]),
    /// else from its file.
    Current(Arc<crate::store::Current>),
    File(std::path::PathBuf),
}

/// The current bundle's bytes in memory, shared by every download in progress: the
/// first one reads the file, those that overlap it use the same bytes, and the memory
/// goes with the last. `None` when it is too large to hold or cannot be read (the file
/// is streamed instead).
async fn shared_bytes(
    path: &std::path::Path,
    loaded: &tokio::sync::Mutex<std::sync::Weak<Vec<u8>>>,
) -> Option<bytes::Bytes> {
    /// Keeps the shared file bytes alive for as long as a body slice refers to them.
    struct Shared(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    // One download reads the file; the others wait for it rather than read their own.
    let mut loaded = loaded.lock().await;
    if let Some(bytes) = loaded.upgrade() {
        return Some(bytes::Bytes::from_owner(Shared(bytes)));
    }
    let owned = path.to_owned();
    match tokio::task::spawn_blocking(move || std::fs::read(owned)).await {
        Ok(Ok(bytes)) => {
            let bytes = Arc::new(bytes);
            *loaded = Arc::downgrade(&bytes);
            Some(bytes::Bytes::from_owner(Shared(bytes)))
        }
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "reading a bundle into memory");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading a bundle into memory");
            None
        }
    }
}

async fn serve(
    headers: &HeaderMap,
    record: &Served,
    source: Source,
    cache: &'static str,
) -> Response {
    let size = record.size;
    // Shared bytes: the current bundle's are made once.
    let validators = match &source {
        Source::Current(current) => current_validators(current).clone(),
        Source::File(_) => validators_of(record),
    };
    let v = &validators;
    let etag = etag_text(v);
    if if_none_match(headers, etag)
        || (!headers.contains_key(header::IF_NONE_MATCH) && not_modified_since(headers, record))
    {
        return not_modified(v);
    }
    let range = match headers.get(header::RANGE) {
        Some(value) if if_range_holds(headers, etag, record) => parse_range(value, size),
        _ => RangeRequest::Full,
    };
    let (status, start, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let (memory, path) = match source {
        Source::Current(current) if current.in_memory => (
            shared_bytes(&current.path, &current.loaded).await,
            current.path.clone(),
        ),
        Source::Current(current) => (None, current.path.clone()),
        Source::File(path) => (None, path),
    };
    let body = match memory {
        Some(bytes) => {
            let (Ok(from), Ok(to)) = (usize::try_from(start), usize::try_from(start + len)) else {
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "range out of memory bounds",
                );
            };
            Body::from(bytes.slice(from.min(bytes.len())..to.min(bytes.len())))
        }
        None => match open_range(&path, start, len).await {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "opening a bundle file");
                return problem(StatusCode::INTERNAL_SERVER_ERROR, "bundle file unavailable");
            }
        },
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", record.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    set_validators(h, v);
    response
}

/// How much of a bundle file one read takes. A chunk is held until it is sent, so a
/// download whose client stops reading holds about one (beside the TLS write queue):
/// small, so that thousands of them cost little. Reading chunks this small from the
/// page cache costs no more than large ones, because it is done in place ([`read_cached`]);
/// only what the cache does not hold goes to the blocking pool.
const FILE_CHUNK: u64 = 64 * 1024;

/// Streams `len` bytes of the file from `start`, a chunk at a time, each read straight
/// into the buffer that becomes the body chunk.
async fn open_range(path: &std::path::Path, start: u64, len: u64) -> std::io::Result<Body> {
    let path = path.to_owned();
    let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
        .await
        .map_err(std::io::Error::other)??;
    let file = Arc::new(file);
    let chunks = futures_util::stream::try_unfold((start, len), move |(offset, left)| {
        let file = Arc::clone(&file);
        async move {
            if left == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            // At most FILE_CHUNK, which fits in usize.
            let want = usize::try_from(left.min(FILE_CHUNK)).map_err(std::io::Error::other)?;
            let mut chunk = vec![0u8; want];
            let cached = read_cached(&file, offset, &mut chunk);
            if cached < want {
                chunk = tokio::task::spawn_blocking(move || {
                    read_rest(&file, offset, &mut chunk, cached).map(|()| chunk)
                })
                .await
                .map_err(std::io::Error::other)??;
            }
            let got = want as u64;
            Ok(Some((
                bytes::Bytes::from(chunk),
                (offset + got, left - got),
            )))
        }
    });
    Ok(Body::from_stream(chunks))
}

/// Reads into `buf` from `offset` what the page cache holds, without waiting for the disk
/// (`preadv2` with `RWF_NOWAIT`, which refuses rather than block): the count read, from
/// the start of `buf`. Done on the async thread, this costs a copy from memory; a trip to
/// the blocking pool per chunk would cost several times that. 0 where the system cannot
/// tell (another kernel, a filesystem without the flag).
#[cfg(target_os = "linux")]
fn read_cached(file: &std::fs::File, offset: u64, buf: &mut [u8]) -> usize {
    use rustix::io::{ReadWriteFlags, preadv2};
    let mut got = 0;
    while got < buf.len() {
        let at = offset + got as u64;
        match preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut buf[got..])],
            at,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) if n > 0 => got += n,
            // End of file (the blocking read reports it), not cached, or not supported.
            Ok(_) | Err(_) => break,
        }
    }
    got
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &std::fs::File, _offset: u64, _buf: &mut [u8]) -> usize {
    0
}

/// Fills `buf[from..]` from the file at `offset + from`, waiting for the disk as needed;
/// a file shorter than that is an error (the store checked its size, so it changed
/// underneath us).
fn read_rest(
    file: &std::fs::File,
    offset: u64,
    buf: &mut [u8],
    from: usize,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(&mut buf[from..], offset + from as u64)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "bundle file shorter than recorded",
            ),
            _ => e,
        })
}

/// The validators of a file served: its `ETag` (the quoted SHA-256) and `Last-Modified`.
fn validators_of(record: &Served) -> Validators {
    Validators {
        etag: Bytes::from(format!("\"{}\"", record.sha256)),
        last_modified: Bytes::from(httpdate::fmt_http_date(last_modified(record))),
    }
}

/// The current bundle's validators, made on first use.
pub(super) fn current_validators(current: &Current) -> &Validators {
    current
        .validators
        .get_or_init(|| validators_of(&Served::from(&current.record)))
}

pub(super) fn etag_text(v: &Validators) -> &str {
    std::str::from_utf8(&v.etag).unwrap_or_default()
}

fn last_modified(record: &Served) -> SystemTime {
    let secs = u64::try_from(record.modified.unix()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Sends the validators: shared bytes, not copies.
fn set_validators(h: &mut HeaderMap, v: &Validators) {
    for (name, value) in [
        (header::ETAG, &v.etag),
        (header::LAST_MODIFIED, &v.last_modified),
    ] {
        if let Ok(value) = HeaderValue::from_maybe_shared(value.clone()) {
            h.insert(name, value);
        }
    }
}

fn not_modified(v: &Validators) -> Response {
    let mut r = empty(StatusCode::NOT_MODIFIED);
    set_validators(r.headers_mut(), v);
    r
}

/// `If-None-Match`: `*` or a list of (possibly weak) tags, one of which is ours.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| tag_list_matches(v, etag))
}

/// One `If-None-Match` value: `*`, or a list of (possibly weak) tags, one of which is
/// `etag`. Also read by the lean path (`lean.rs`).
pub(super) fn tag_list_matches(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

fn not_modified_since(headers: &HeaderMap, record: &Served) -> bool {
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
        .is_some_and(|since| last_modified(record) <= since)
}

/// `If-Range`: the range applies only if the representation is still the one named (a
/// strong tag, or a date no earlier than ours).
fn if_range_holds(headers: &HeaderMap, etag: &str, record: &Served) -> bool {
    let Some(value) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') {
        return value == etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|date| last_modified(record) <= date)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Full,
    Partial { start: u64, end: u64 },
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`). Several ranges, or another unit, are served
/// as the full body, which HTTP allows; a syntactically valid range past the end is
/// unsatisfiable.
fn parse_range(value: &HeaderValue, size: u64) -> RangeRequest {
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match parse(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, _) => {
            let Some(start) = parse(a) else {
                return RangeRequest::Full;
            };
            let end = if b.is_empty() {
                Some(u64::MAX)
            } else {
                parse(b)
            };
            match end {
                None => RangeRequest::Full,
                Some(end) if end < start => RangeRequest::Full,
                Some(_) if start >= size => RangeRequest::Unsatisfiable,
                Some(end) => RangeRequest::Partial {
                    start,
                    end: end.min(size - 1),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overlapping_downloads_share_one_copy_and_the_last_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        std::fs::write(&path, b"bundle bytes").unwrap();
        let loaded = tokio::sync::Mutex::new(std::sync::Weak::new());

        let first = shared_bytes(&path, &loaded).await.unwrap();
        let second = shared_bytes(&path, &loaded).await.unwrap();
        assert_eq!(&first[..], b"bundle bytes");
        assert_eq!(first.as_ptr(), second.as_ptr(), "read twice");
        drop(first);
        assert!(
            loaded.lock().await.upgrade().is_some(),
            "freed while in use"
        );
        drop(second);
        assert!(
            loaded.lock().await.upgrade().is_none(),
            "held after the last"
        );

        // The next download reads the file again (it may have been replaced).
        std::fs::write(&path, b"other bytes").unwrap();
        assert_eq!(
            &shared_bytes(&path, &loaded).await.unwrap()[..],
            b"other bytes"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(shared_bytes(&path, &loaded).await.is_none());
    }

    #[test]
    fn chunks_read_from_the_cache_and_from_the_disk_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();

        // Just written, so cached (on a filesystem that can say so); whatever part the
        // cache gave, the blocking read completes.
        let mut chunk = vec![0u8; 70_000];
        let cached = read_cached(&file, 100_000, &mut chunk);
        assert!(cached <= chunk.len());
        read_rest(&file, 100_000, &mut chunk, cached).unwrap();
        assert_eq!(chunk, data[100_000..170_000]);
        // The blocking read alone gives the same bytes.
        let mut again = vec![0u8; 70_000];
        read_rest(&file, 100_000, &mut again, 0).unwrap();
        assert_eq!(again, chunk);

        // A file shorter than the chunk asked for is an error, not a short chunk.
        let mut past_end = vec![0u8; 10];
        let cached = read_cached(&file, 199_995, &mut past_end);
        assert!(cached <= 5);
        let err = read_rest(&file, 199_995, &mut past_end, cached).unwrap_err();
        assert!(err.to_string().contains("shorter than recorded"), "{err}");
    }

    fn check(spec: &str, size: u64, expected: RangeRequest) {
        let value = HeaderValue::from_str(spec).unwrap();
        assert_eq!(parse_range(&value, size), expected, "{spec}");
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        check("bytes=0-9", 100, Partial { start: 0, end: 9 });
        check("bytes=90-", 100, Partial { start: 90, end: 99 });
        check("bytes=90-500", 100, Partial { start: 90, end: 99 });
        check("bytes=-10", 100, Partial { start: 90, end: 99 });
        check("bytes=-500", 100, Partial { start: 0, end: 99 });
        check("bytes=100-", 100, Unsatisfiable);
        check("bytes=-0", 100, Unsatisfiable);
        check("bytes=5-1", 100, Full);
        check("bytes=0-1,5-6", 100, Full);
        check("items=0-1", 100, Full);
        check("bytes=x-1", 100, Full);
    }
}
