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

async fn receive(
    relay: &Arc<Relay>,
    who: &str,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    let cap = relay.config.storage.max_upload_bytes;
    let too_large = || {
        (
            "too_large",
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("bundle larger than the upload limit of {cap} bytes"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return too_large();
    }
    let temp = match relay.store.incoming_file() {
        Ok(t) => t,
        Err(e) => return internal("creating the upload file", &e),
    };
    let (file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(user = who, error = %e, "upload body ended early");
                return (
                    "aborted",
                    problem(StatusCode::BAD_REQUEST, "upload body was cut short"),
                );
            }
        };
        received += chunk.len() as u64;
        if received > cap {
            return too_large();
        }
        if let Err(e) = file.write_all(&chunk).await {
            return internal("writing the upload", &e);
        }
    }
    if let Err(e) = file.sync_all().await {
        return internal("syncing the upload", &e);
    }
    drop(file);

    let held = relay.store.current().map(|c| c.record.sequence);
    let verified = {
        let (path, trust, limits) = (path.to_path_buf(), relay.trust.clone(), relay.limits);
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

fn internal(what: &str, e: &dyn std::fmt::Display) -> (&'static str, Response) {
    tracing::error!(error = %e, "{what}");
    (
        "error",
        problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} failed")),
    )
}
