//! `GET /api/v1/status` (JSON; the console, `console.rs`, renders the same) and
//! `GET /metrics` (Prometheus text), and the admin actions. Freshness: a bundle created more than 24
//! hours ago is a warning, more than 36 hours critical.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::Relay;
use crate::bundle::{Sequence, Sha256, Timestamp};

const WARNING_AFTER_SECS: i64 = 24 * 3600;
const CRITICAL_AFTER_SECS: i64 = 36 * 3600;

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub now: Timestamp,
    pub current: Option<CurrentStatus>,
    /// When the relay last stored a new bundle, and from where.
    pub last_streams_update: Option<Timestamp>,
    pub last_streams_update_source: Option<String>,
    pub last_check: Option<Timestamp>,
    pub next_check: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_success: Option<Timestamp>,
    /// The last check failed on every source; retries follow the retry schedule.
    pub failing: bool,
    /// Each configured source: watch channel state, last check, last error and its kind.
    pub sources: Vec<super::SourceStatus>,
    pub watchers: i64,
    pub held: Vec<HeldStatus>,
    /// Vendor archives: opaque, integrity-checked only, never signed.
    pub archives: Vec<ArchiveStatus>,
    /// Projects: each supervisor this relay pushes to, and how many are behind.
    pub supervisors: Vec<super::SupervisorStatus>,
    pub supervisors_behind: usize,
    /// The origin service (`[origin]`): its inputs and last cycle; absent on other relays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<super::origin::OriginStatus>,
}

#[derive(Serialize)]
pub struct CurrentStatus {
    pub sequence: Sequence,
    pub sha256: Sha256,
    pub size: u64,
    pub origin: String,
    pub key_id: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub stored_at: Timestamp,
    pub source: String,
    pub age_seconds: i64,
    /// `ok`, `warning` (older than 24 h) or `critical` (older than 36 h, or expired).
    pub freshness: &'static str,
}

#[derive(Serialize)]
pub struct ArchiveStatus {
    pub name: String,
    pub path: String,
    pub signed: bool,
    pub trust: &'static str,
    pub held: Option<crate::store::ArchiveRecord>,
    pub last_check: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Serialize)]
pub struct HeldStatus {
    pub sequence: Sequence,
    pub sha256: Sha256,
    pub size: u64,
    pub created: Timestamp,
}

pub fn status(relay: &Relay) -> Status {
    let now = super::now();
    let current = relay.store.current().map(|c| {
        let r = &c.record;
        let age = now.unix() - r.created.unix();
        CurrentStatus {
            sequence: r.sequence,
            sha256: r.sha256,
            size: r.size,
            origin: r.origin.clone(),
            key_id: r.key_id.to_string(),
            created: r.created,
            expires: r.expires,
            stored_at: r.stored_at,
            source: r.source.clone(),
            age_seconds: age,
            freshness: freshness(age, r.expires <= now),
        }
    });
    let held = relay
        .store
        .held_all()
        .unwrap_or_default()
        .into_iter()
        .map(|r| HeldStatus {
            sequence: r.sequence,
            sha256: r.sha256,
            size: r.size,
            created: r.created,
        })
        .collect();
    let sync = relay.sync.snapshot();
    let supervisors = relay
        .projects
        .snapshot(current.as_ref().map(|c| c.sequence));
    let held_archives = relay.store.archives().unwrap_or_default();
    let archives = relay
        .config
        .archives
        .iter()
        .map(|a| {
            let pull = sync.archives.iter().find(|p| p.name == a.name);
            ArchiveStatus {
                name: a.name.clone(),
                path: a.path.clone(),
                signed: false,
                trust: "NOT SIGNED: integrity checked only (digest, gzip, tar, size caps)",
                held: held_archives.iter().find(|h| h.name == a.name).cloned(),
                last_check: pull.and_then(|p| p.last_check),
                last_error: pull.and_then(|p| p.last_error.clone()),
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        now,
        last_streams_update: current.as_ref().map(|c| c.stored_at),
        last_streams_update_source: current.as_ref().map(|c| c.source.clone()),
        current,
        last_check: sync.last_check,
        next_check: sync.next_check,
        last_error: sync.last_error,
        last_success: sync.last_success,
        failing: sync.failing,
        sources: sync.sources,
        watchers: relay.metrics.watchers.get(),
        held,
        archives,
        supervisors_behind: supervisors.iter().filter(|s| s.behind).count(),
        supervisors,
        origin: relay
            .config
            .origin
            .as_ref()
            .map(|_| relay.origin.snapshot()),
    }
}

fn freshness(age_seconds: i64, expired: bool) -> &'static str {
    if expired || age_seconds > CRITICAL_AFTER_SECS {
        "critical"
    } else if age_seconds > WARNING_AFTER_SECS {
        "warning"
    } else {
        "ok"
    }
}

pub async fn json(State(relay): State<Arc<Relay>>) -> Json<Status> {
    Json(status(&relay))
}

/// `POST /api/v1/origin/run` (admin): run an origin cycle now and answer what it did:
/// 200 published or unchanged, 500 failed (the report says why), 404 not an origin.
pub async fn origin_run(State(relay): State<Arc<Relay>>) -> Response {
    if relay.config.origin.is_none() {
        return (
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "this relay has no [origin]"})),
        )
            .into_response();
    }
    let report = super::origin::run_cycle(&relay).await;
    let code = if report.outcome == "failed" {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        axum::http::StatusCode::OK
    };
    (code, Json(report)).into_response()
}

/// The body of `POST /api/v1/admin/reset-sequence`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetSequence {
    /// Held bundles above this sequence are demoted.
    pub to: u64,
    /// Why, for the audit record: required.
    pub reason: String,
}

/// `POST /api/v1/admin/reset-sequence` (admin): demote every held bundle above `to`, so
/// that a bundle of a lower sequence is accepted again (a signing key that published a
/// sequence far ahead, by mistake or in an attacker's hands). Audited: a warning in the
/// log and a line in `<data_dir>/store/audit.jsonl`, with who, when, why and what.
pub async fn reset_sequence(
    State(relay): State<Arc<Relay>>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    body: axum::extract::Json<ResetSequence>,
) -> Response {
    let who = principal.map_or_else(|| "unknown".to_owned(), |p| p.0.name);
    let request = body.0;
    if request.reason.trim().is_empty() {
        return super::routes::problem(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "a reason is required: it is recorded in the audit log",
        );
    }
    let demoted = match relay.store.reset_sequence(request.to).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "reset of the held sequence failed");
            return super::routes::problem(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the reset failed; see the relay's log",
            );
        }
    };
    let record = serde_json::json!({
        "at": super::now(),
        "action": "reset-sequence",
        "user": who,
        "to": request.to,
        "reason": request.reason,
        "demoted": demoted,
        "current": relay.store.current().map(|c| c.record.sequence),
    });
    tracing::warn!(user = %who, to = request.to, reason = %request.reason, demoted = demoted.len(), "held sequence reset by an admin");
    if let Err(e) = relay.store.audit(&record) {
        tracing::error!(error = %e, "writing the audit record failed");
    }
    (axum::http::StatusCode::OK, Json(record)).into_response()
}

/// `PUT /api/v1/feeds/force-refresh` (admin): check the sources now.
pub async fn force_refresh(State(relay): State<Arc<Relay>>) -> Response {
    relay.sync.force();
    (
        axum::http::StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "check requested"})),
    )
        .into_response()
}

/// `POST /api/v1/projects/push` (admin), optionally `?supervisor=NAME`: "update now".
/// Checks the sources and pushes to the supervisors at once, cutting retry waits short.
pub async fn projects_push(State(relay): State<Arc<Relay>>, uri: axum::http::Uri) -> Response {
    let names: Vec<String> = relay
        .config
        .supervisors
        .iter()
        .map(|s| s.name.clone())
        .collect();
    // Supervisor names are [a-z0-9_-]: nothing in them needs percent-decoding.
    let only = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("supervisor="));
    if names.is_empty() {
        return super::routes::problem(
            axum::http::StatusCode::NOT_FOUND,
            "this relay pushes to no supervisor ([[supervisors]] in its config)",
        );
    }
    if !relay.projects.push_now(&names, only) {
        return super::routes::problem(
            axum::http::StatusCode::NOT_FOUND,
            "no such supervisor configured",
        );
    }
    relay.sync.force();
    (
        axum::http::StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "status": "push requested",
            "supervisors": names.iter().filter(|n| only.is_none_or(|o| o == n.as_str())).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}

pub async fn metrics(State(relay): State<Arc<Relay>>) -> Response {
    super::projects::metrics(&relay);
    if let Some(c) = relay.store.current() {
        let r = &c.record;
        relay
            .metrics
            .current_sequence
            .set(i64::try_from(r.sequence.0).unwrap_or(i64::MAX));
        relay
            .metrics
            .bundle_age_seconds
            .set(super::now().unix() - r.created.unix());
    }
    let mut response = relay.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
