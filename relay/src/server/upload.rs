//! `PUT`/`POST /api/v1/feeds/bundle`: an uploaded bundle is streamed to a temp file under
//! the size cap, verified by `bundle::verify`, then committed by `store`. 201 with the new
//! manifest; 409 not newer; 413 too large; 422 invalid, naming the rule broken. Every
//! refusal leaves the current bundle as it was.

use std::io::BufReader;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::routes::problem;
use super::{Relay, files};
use crate::auth::Principal;
use crate::bundle::{self, VerifyError};
use crate::store::StoreError;

pub async fn upload(
    State(relay): State<Arc<Relay>>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = principal.map_or_else(|| "unknown".to_owned(), |p| p.0.name);
    let (outcome, response) = receive(&relay, &who, &headers, body).await;
    relay.metrics.uploads.with_label_values(&[outcome]).inc();
    response
}

type Refusal = (&'static str, Response);

/// Streams a request body into a temp file in the store's `incoming/`, under the upload
/// cap. The file is removed if anything fails (or when the path is dropped).
async fn receive_body(
    relay: &Arc<Relay>,
    who: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<tempfile::TempPath, Refusal> {
    let cap = relay.config.storage.max_upload_bytes;
    let too_large = || {
        (
            "too_large",
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("larger than the upload limit of {cap} bytes"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(too_large());
    }
    let temp = relay
        .store
        .incoming_file()
        .map_err(|e| internal("creating the upload file", &e))?;
    let (file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::info!(user = who, error = %e, "upload body ended early");
            (
                "aborted",
                problem(StatusCode::BAD_REQUEST, "upload body was cut short"),
            )
        })?;
        received += chunk.len() as u64;
        if received > cap {
            return Err(too_large());
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("writing the upload", &e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| internal("syncing the upload", &e))?;
    Ok(path)
}

async fn receive(
    relay: &Arc<Relay>,
    who: &str,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    let path = match receive_body(relay, who, headers, body).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    let package = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(bundle::package::CONTENT_TYPE));
    // A segment package (a central relay's push): the bundle is built here from the
    // bundle it names as its base and the segments it carries, then checked as any upload.
    let path = if package {
        match build_from_package(relay, path).await {
            Ok(built) => built,
            Err(refusal) => return refusal,
        }
    } else {
        path
    };
    let held = relay.store.current().map(|c| c.record.sequence);
    let verified = {
        let (path, trust, limits) = (path.to_path_buf(), relay.trust(), relay.limits);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(VerifyError::Read)?;
            bundle::verify(
                BufReader::with_capacity(1 << 16, file),
                &trust,
                &limits,
                super::now(),
                held,
            )
        })
        .await
    };
    let verified = match verified {
        Ok(Ok(v)) => v,
        Ok(Err(VerifyError::NotNewer { sequence, held })) => {
            return (
                "not_newer",
                problem(
                    StatusCode::CONFLICT,
                    format!("sequence {sequence} is not newer than the current sequence {held}"),
                ),
            );
        }
        Ok(Err(VerifyError::Read(e))) => return internal("reading the upload back", &e),
        Ok(Err(e)) => {
            tracing::info!(user = who, rule = %e, "upload refused");
            return (
                "invalid",
                problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            );
        }
        Err(e) => return internal("verification task", &e),
    };
    match relay
        .store
        .commit(verified, path, &format!("upload by {who}"), super::now())
        .await
    {
        Ok(current) => {
            let r = &current.record;
            relay
                .metrics
                .current_sequence
                .set(i64::try_from(r.sequence.0).unwrap_or(i64::MAX));
            tracing::info!(user = who, sequence = %r.sequence, sha256 = %r.sha256, bytes = r.size, "bundle stored");
            let mut response =
                (StatusCode::CREATED, Json(files::manifest_document(r))).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/bundles/{}", r.sha256)) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            ("stored", response)
        }
        Err(StoreError::NotNewer { sequence, held }) => (
            "not_newer",
            problem(
                StatusCode::CONFLICT,
                format!("sequence {sequence} is not newer than the current sequence {held}"),
            ),
        ),
        Err(e) => internal("committing the bundle", &e),
    }
}

/// `PUT`/`POST /api/v1/archives/{name}`: a vendor archive, integrity-checked only
/// (`archive::check`), with the SHA-256 the uploader expects in `X-Expected-Sha256` or
/// `?sha256=`.
pub async fn upload_archive(
    State(relay): State<Arc<Relay>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    principal: Option<axum::Extension<Principal>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !relay.config.archives.iter().any(|a| a.name == name) {
        return problem(StatusCode::NOT_FOUND, "no such archive configured");
    }
    let who = principal.map_or_else(|| "unknown".to_owned(), |p| p.0.name);
    let expected = headers
        .get("x-expected-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            uri.query()?
                .split('&')
                .find_map(|kv| kv.strip_prefix("sha256=").map(str::to_owned))
        });
    let expected = match expected.map(|e| e.to_ascii_lowercase().parse::<crate::bundle::Sha256>()) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let path = match receive_body(&relay, &who, &headers, body).await {
        Ok(p) => p,
        Err((_, response)) => return response,
    };
    let checked = {
        let (path, limits) = (path.to_path_buf(), relay.limits);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(crate::archive::ArchiveError::Read)?;
            crate::archive::check(file, &limits, expected)
        })
        .await
    };
    let info = match checked {
        Ok(Ok(info)) => info,
        Ok(Err(crate::archive::ArchiveError::Read(e))) => {
            return internal("reading the upload back", &e).1;
        }
        Ok(Err(e)) => {
            tracing::info!(user = %who, archive = %name, rule = %e, "archive refused");
            return problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        }
        Err(e) => return internal("archive check task", &e).1,
    };
    match relay
        .store
        .commit_archive(
            &name,
            &info,
            path,
            &format!("upload by {who}"),
            super::now(),
        )
        .await
    {
        Ok(record) => {
            tracing::info!(user = %who, archive = %name, sha256 = %record.sha256, bytes = record.size, "archive stored");
            (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "name": record.name,
                    "sha256": record.sha256,
                    "size": record.size,
                    "entries": record.entries,
                    "signed": false,
                })),
            )
                .into_response()
        }
        Err(e) => internal("storing the archive", &e).1,
    }
}

/// Builds the bundle a segment package describes (`relay/FORMAT.md`, "Segments and
/// deltas") into a new incoming file: 412 when its base is not held here (the sender then
/// sends the whole bundle), 422 when the package is not what it claims.
async fn build_from_package(
    relay: &Arc<Relay>,
    package: tempfile::TempPath,
) -> Result<tempfile::TempPath, Refusal> {
    let store = Arc::clone(&relay.store);
    let out = relay
        .store
        .incoming_file()
        .map_err(|e| internal("creating the upload file", &e))?;
    let (out_file, out_path) = out.into_parts();
    let built = tokio::task::spawn_blocking(move || -> Result<(), (StatusCode, String)> {
        let unprocessable = |e: &dyn std::fmt::Display| {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("segment package: {e}"),
            )
        };
        let mut input =
            BufReader::new(std::fs::File::open(&package).map_err(|e| unprocessable(&e))?);
        let header = bundle::package::read_header(&mut input).map_err(|e| unprocessable(&e))?;
        let base = header.base;
        let precondition = |what: &str| {
            (
                StatusCode::PRECONDITION_FAILED,
                format!("segment package: base bundle {base} {what}; send the whole bundle"),
            )
        };
        let (_, base_path) = store
            .held(&base)
            .ok()
            .flatten()
            .ok_or_else(|| precondition("is not held here"))?;
        let base_index = store
            .segment_index(&base)
            .ok()
            .flatten()
            .and_then(|bytes| bundle::index::SegmentIndex::decode(&bytes).ok())
            .ok_or_else(|| precondition("has no segments here"))?;
        // The segments the package carries or its delta rebuilds, until placed.
        let (mut spool, _spool_path) = store
            .incoming_file()
            .map_err(|e| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("spooling a segment package: {e}"),
                )
            })?
            .into_parts();
        let mut writer = std::io::BufWriter::new(out_file);
        bundle::package::build(
            &header,
            &base_index,
            &base_path,
            &mut input,
            &mut spool,
            &mut writer,
        )
        .map_err(|e| unprocessable(&e))?;
        let file = writer
            .into_inner()
            .map_err(|e| unprocessable(&e.into_error()))?;
        file.sync_all().map_err(|e| unprocessable(&e))
    })
    .await
    .map_err(|e| internal("building from a segment package", &e))?;
    match built {
        Ok(()) => Ok(out_path),
        Err((status, message)) => {
            tracing::info!(%message, "segment package refused");
            let outcome = if status == StatusCode::PRECONDITION_FAILED {
                "no_base"
            } else {
                "invalid"
            };
            Err((outcome, problem(status, message)))
        }
    }
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> (&'static str, Response) {
    tracing::error!(error = %e, "{what}");
    (
        "error",
        problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} failed")),
    )
}
