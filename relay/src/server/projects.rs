//! Projects: a central relay pushes each new current bundle to its supervisors.
//!
//! One task per supervisor (`[[supervisors]]`) follows the store's current bundle. When the
//! supervisor is behind (central's record, kept in sled, says it holds an older sequence or
//! none), the task uploads the current bundle file to the supervisor's ordinary upload
//! route with central's credential, under a relay-wide limit on pushes in flight. A 201
//! or a 409 (it already holds that sequence or a newer one) is delivery; anything else is
//! recorded with its kind and retried after an exponential backoff with jitter, or at once
//! when a newer bundle supersedes the one being retried, or when an admin asks ("update
//! now"). The supervisor checks signature and sequence as for any upload, so central
//! cannot make it hold what the origin did not sign.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use super::Relay;
use crate::bundle::{Sequence, Timestamp};
use crate::client::{FailureKind, SyncError};
use crate::config::SupervisorConfig;
use crate::store::{Current, SupervisorState};

/// Each supervisor's state as status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SupervisorStatus {
    pub name: String,
    pub url: String,
    /// The sequence it holds, as far as central knows.
    pub sequence: Option<Sequence>,
    /// It holds less than central's current bundle.
    pub behind: bool,
    pub last_attempt: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub next_attempt: Option<Timestamp>,
    pub last_error: Option<String>,
    /// `unreachable`, `tls`, `auth`, `rejected`, `timeout` or `other`.
    pub last_error_kind: Option<String>,
    /// How the last push went: `segments: N of M bytes sent`, or `whole: ...` and why.
    pub last_transfer: Option<String>,
    /// When the bundle it holds was made.
    #[serde(skip)]
    pub created: Option<Timestamp>,
}

/// The projects side of a relay: what each supervisor holds, and the "push now" bell.
pub struct ProjectsState {
    status: Mutex<Vec<SupervisorStatus>>,
    /// One per supervisor: rung by "update now".
    push_now: Vec<Notify>,
}

impl ProjectsState {
    pub fn new(relay_supervisors: &[SupervisorConfig], store: &crate::store::Store) -> Self {
        let status = relay_supervisors
            .iter()
            .map(|s| {
                let held = store.supervisor(&s.name).ok().flatten().unwrap_or_default();
                view(s, &held, None)
            })
            .collect();
        Self {
            status: Mutex::new(status),
            push_now: relay_supervisors.iter().map(|_| Notify::new()).collect(),
        }
    }

    /// Every supervisor's state, `behind` worked out against `current`.
    pub fn snapshot(&self, current: Option<Sequence>) -> Vec<SupervisorStatus> {
        let mut list = self.lock().clone();
        for s in &mut list {
            s.behind = current.is_some_and(|c| s.sequence.is_none_or(|held| held < c));
        }
        list
    }

    /// "Update now": push to the named supervisor (all when `None`) at once, even one
    /// central believes current. False when no supervisor has that name.
    pub fn push_now(&self, names: &[String], only: Option<&str>) -> bool {
        let mut any = false;
        for (i, name) in names.iter().enumerate() {
            if only.is_none_or(|o| o == name) {
                if let Some(bell) = self.push_now.get(i) {
                    bell.notify_one();
                }
                any = true;
            }
        }
        any
    }

    fn set(&self, index: usize, status: SupervisorStatus) {
        if let Some(slot) = self.lock().get_mut(index) {
            *slot = status;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SupervisorStatus>> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn view(
    config: &SupervisorConfig,
    held: &SupervisorState,
    next_attempt: Option<Timestamp>,
) -> SupervisorStatus {
    SupervisorStatus {
        name: config.name.clone(),
        url: crate::client::settings::redact_userinfo(&config.url),
        sequence: held.sequence,
        behind: false,
        last_attempt: held.last_attempt,
        last_success: held.last_success,
        next_attempt,
        last_error: held.last_error.clone(),
        last_error_kind: held.last_error_kind.clone(),
        last_transfer: held.last_transfer.clone(),
        created: held.created,
    }
}

/// Starts one push task per supervisor. They end when the relay stops.
pub fn start(relay: &Arc<Relay>) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = Arc::new(Semaphore::new(relay.config.projects.concurrency));
    (0..relay.config.supervisors.len())
        .map(|index| {
            let relay = Arc::clone(relay);
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { follow(relay, index, gate).await })
        })
        .collect()
}

/// Keeps supervisor `index` holding central's current bundle.
async fn follow(relay: Arc<Relay>, index: usize, gate: Arc<Semaphore>) {
    let Some(config) = relay.config.supervisors.get(index).cloned() else {
        return;
    };
    let endpoint = config.endpoint(&relay.config.schedule);
    let client = match endpoint.client() {
        Ok(c) => c,
        Err(e) => {
            warn!(supervisor = %config.name, error = %e, "supervisor not usable; no pushes");
            let held = SupervisorState {
                last_error: Some(e.message.clone()),
                last_error_kind: Some("other".into()),
                ..relay
                    .store
                    .supervisor(&config.name)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            relay.projects.set(index, view(&config, &held, None));
            return;
        }
    };
    let mut current = relay.store.subscribe();
    let mut failures = 0u32;
    let mut forced = false;
    loop {
        let target = current.borrow_and_update().clone();
        let mut held = match relay.store.supervisor(&config.name) {
            Ok(h) => h.unwrap_or_default(),
            Err(e) => {
                warn!(supervisor = %config.name, error = %e, "reading its record");
                SupervisorState::default()
            }
        };
        let due = target
            .as_ref()
            .filter(|c| forced || held.sequence.is_none_or(|s| s < c.record.sequence));
        let Some(bundle) = due.cloned() else {
            failures = 0;
            relay.projects.set(index, view(&config, &held, None));
            tokio::select! {
                changed = current.changed() => if changed.is_err() { return },
                () = relay.projects.push_now[index].notified() => forced = true,
                () = relay.stopping.cancelled() => return,
            }
            continue;
        };
        forced = false;
        let outcome = {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            held.last_attempt = Some(super::now());
            relay.projects.set(index, view(&config, &held, None));
            tokio::select! {
                outcome = push_cheapest(&relay, &client, &endpoint, &bundle, held.sha256) => outcome,
                () = relay.stopping.cancelled() => return,
            }
        };
        let delay = match outcome {
            Ok((accepted, how)) => {
                held.sha256 = accepted.then_some(bundle.record.sha256);
                held.last_transfer = Some(how);
                info!(
                    supervisor = %config.name,
                    sequence = %bundle.record.sequence,
                    already_held = !accepted,
                    "supervisor holds the bundle"
                );
                held.sequence = Some(bundle.record.sequence);
                held.created = Some(bundle.record.created);
                held.last_success = Some(super::now());
                held.last_error = None;
                held.last_error_kind = None;
                failures = 0;
                None
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let kind = kind_of(&e);
                warn!(
                    supervisor = %config.name,
                    sequence = %bundle.record.sequence,
                    kind,
                    error = %e,
                    "push failed"
                );
                held.last_error = Some(e.message.clone());
                held.last_error_kind = Some(kind.to_owned());
                let wait = backoff(&relay.config.projects, failures);
                Some(e.retry_after.map_or(wait, |r| r.max(wait)))
            }
        };
        if let Err(e) = relay.store.set_supervisor(&config.name, &held) {
            warn!(supervisor = %config.name, error = %e, "recording its state");
        }
        metrics(&relay);
        let Some(delay) = delay else {
            continue;
        };
        let next = super::now().unix().saturating_add(
            i64::try_from(delay.as_secs()).unwrap_or(i64::MAX)
                + i64::from(delay.subsec_nanos() > 0),
        );
        relay
            .projects
            .set(index, view(&config, &held, Timestamp::from_unix(next)));
        // Wait out the backoff, unless a newer bundle supersedes this one or an admin
        // asks for a push now.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            changed = current.changed() => if changed.is_err() { return },
            () = relay.projects.push_now[index].notified() => forced = true,
            () = relay.stopping.cancelled() => return,
        }
    }
}

/// Pushes the bundle the cheapest way: when the supervisor holds a bundle central
/// delivered (`base`) and central still holds it with its index, a segment package with
/// only the changed segments; else, or when the supervisor refuses the package (it lost
/// the base: 412; the package is wrong: 422), the whole file. The outcome, and how it went
/// in words for the status.
async fn push_cheapest(
    relay: &Arc<Relay>,
    client: &reqwest::Client,
    endpoint: &crate::client::Endpoint,
    bundle: &Current,
    base: Option<crate::bundle::Sha256>,
) -> Result<(bool, String), SyncError> {
    let mut why_whole = "no earlier push to build on".to_owned();
    if let Some(base) = base {
        match package(relay, bundle, base).await {
            Ok((package, size, delta)) => {
                match push_package(client, endpoint, &package, size).await {
                    Ok(PackageOutcome::Delivered(accepted)) => {
                        return Ok((
                            accepted,
                            format!(
                                "segments: {size} of {} bytes sent ({})",
                                bundle.record.size,
                                if delta {
                                    "the changed segments as a delta"
                                } else {
                                    "the changed segments whole"
                                }
                            ),
                        ));
                    }
                    Ok(PackageOutcome::Refused(why)) => why_whole = why,
                    Err(e) => return Err(e),
                }
            }
            Err(why) => why_whole = why,
        }
    }
    let accepted = push(client, endpoint, bundle).await?;
    Ok((
        accepted,
        format!("whole: {} bytes sent ({why_whole})", bundle.record.size),
    ))
}

/// A segment package for a holder of `base` to build `bundle`, in a temp file, its size
/// and whether it carries a delta; or why there is none (central no longer holds the
/// base, no index, not cheaper).
async fn package(
    relay: &Arc<Relay>,
    bundle: &Current,
    base: crate::bundle::Sha256,
) -> Result<(tempfile::TempPath, u64, bool), String> {
    let store = Arc::clone(&relay.store);
    let (new_sha, new_path, size) = (
        bundle.record.sha256,
        bundle.path.clone(),
        bundle.record.size,
    );
    tokio::task::spawn_blocking(move || {
        let index = |sha: &crate::bundle::Sha256, what: &str| {
            store
                .segment_index(sha)
                .ok()
                .flatten()
                .and_then(|b| crate::bundle::index::SegmentIndex::decode(&b).ok())
                .ok_or_else(|| format!("no segment index of the {what} bundle"))
        };
        let base_index = index(&base, "supervisor's")?;
        let new_index = index(&new_sha, "new")?;
        // The changed segments as edits of the supervisor's (made once, cached beside the
        // indexes, as for a downstream's request); without one, the segments whole.
        let delta = match store.delta(&new_sha, &base) {
            Ok(delta) => delta,
            Err(e) => {
                tracing::warn!(error = %e, "no delta for a segment package; segments whole");
                None
            }
        };
        let write = |delta: Option<&[u8]>| {
            let temp = store.incoming_file().map_err(|e| e.to_string())?;
            let (file, path) = temp.into_parts();
            let mut out = std::io::BufWriter::new(file);
            let mut new_file =
                std::io::BufReader::new(std::fs::File::open(&new_path).map_err(|e| e.to_string())?);
            let written = crate::bundle::package::write(
                &base_index,
                &new_index,
                &mut new_file,
                delta,
                &mut out,
            )
            .map_err(|e| e.to_string())?;
            out.into_inner().map_err(|e| e.to_string())?;
            Ok::<_, String>((path, written))
        };
        let (path, written, with_delta) = match write(delta.as_deref()) {
            Ok((path, written)) => (path, written, delta.is_some()),
            Err(e) if delta.is_some() => {
                tracing::warn!(error = %e, "a segment package with its delta; segments whole");
                let (path, written) = write(None)?;
                (path, written, false)
            }
            Err(e) => return Err(e),
        };
        if written >= size {
            return Err("the changed segments are as large as the bundle".to_owned());
        }
        Ok((path, written, with_delta))
    })
    .await
    .map_err(|e| e.to_string())?
}

enum PackageOutcome {
    /// 201 (`true`) or 409 (`false`), as for a whole push.
    Delivered(bool),
    /// The supervisor cannot build from it: send the whole file.
    Refused(String),
}

async fn push_package(
    client: &reqwest::Client,
    endpoint: &crate::client::Endpoint,
    package: &std::path::Path,
    size: u64,
) -> Result<PackageOutcome, SyncError> {
    let (url, response) = put_file(
        client,
        endpoint,
        package,
        size,
        crate::bundle::package::CONTENT_TYPE,
    )
    .await?;
    match response.status().as_u16() {
        201 => Ok(PackageOutcome::Delivered(true)),
        409 => Ok(PackageOutcome::Delivered(false)),
        // An older supervisor takes the package for a bundle and refuses it (422), or it
        // lost the base (412), or the package did not build (422): the whole file, then.
        status @ (412 | 415 | 422) => Ok(PackageOutcome::Refused(format!(
            "the segment package was refused ({status}): {}",
            refusal(response).await
        ))),
        _ => Err(SyncError::status(&url, &response)),
    }
}

/// Uploads the bundle's file. `Ok(true)`: stored; `Ok(false)`: the supervisor already
/// held that sequence or a newer one (409).
async fn push(
    client: &reqwest::Client,
    endpoint: &crate::client::Endpoint,
    bundle: &Current,
) -> Result<bool, SyncError> {
    let (url, response) = put_file(
        client,
        endpoint,
        &bundle.path,
        bundle.record.size,
        "application/gzip",
    )
    .await?;
    match response.status().as_u16() {
        201 => Ok(true),
        409 => Ok(false),
        413 | 422 => {
            let status = response.status();
            Err(SyncError::new(
                FailureKind::Verification,
                format!("{url}: refused ({status}): {}", refusal(response).await),
            ))
        }
        _ => Err(SyncError::status(&url, &response)),
    }
}

/// PUTs the file at `path` (`size` bytes, streamed) to the supervisor's upload route; the
/// URL and the answer.
async fn put_file(
    client: &reqwest::Client,
    endpoint: &crate::client::Endpoint,
    path: &std::path::Path,
    size: u64,
    content_type: &'static str,
) -> Result<(String, reqwest::Response), SyncError> {
    let url = format!("{}/api/v1/feeds/bundle", endpoint.base());
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| SyncError::new(FailureKind::Local, format!("{}: {e}", path.display())))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let response = endpoint
        .authorize(client.put(&url))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body)
        .send()
        .await
        .map_err(|e| SyncError::transport_with(&url, &e, "the supervisor's `ca`"))?;
    Ok((url, response))
}

/// The reason a refusal gives (its JSON `error`).
async fn refusal(response: reqwest::Response) -> String {
    response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no reason given".to_owned())
}

/// The operator's words for a failure.
fn kind_of(e: &SyncError) -> &'static str {
    match e.kind {
        FailureKind::Dns | FailureKind::Connect | FailureKind::Network => "unreachable",
        FailureKind::Tls => "tls",
        FailureKind::Unauthorized | FailureKind::Forbidden => "auth",
        FailureKind::Verification | FailureKind::Older | FailureKind::TooLarge => "rejected",
        FailureKind::Timeout => "timeout",
        _ => "other",
    }
}

/// `retry_min * 2^(failures-1)`, capped at `retry_max`, plus up to half again at random.
fn backoff(projects: &crate::config::Projects, failures: u32) -> Duration {
    let exp = projects
        .retry_min
        .0
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = exp.min(projects.retry_max.0);
    capped + super::sync::random_below(capped / 2)
}

/// Updates the fleet gauges: supervisors behind, and the age of the oldest bundle a
/// supervisor holds.
pub fn metrics(relay: &Relay) {
    let current = relay.store.current().map(|c| c.record.sequence);
    let fleet = relay.projects.snapshot(current);
    let behind = fleet.iter().filter(|s| s.behind).count();
    relay
        .metrics
        .supervisors_behind
        .set(i64::try_from(behind).unwrap_or(i64::MAX));
    let now = super::now().unix();
    let oldest = fleet
        .iter()
        .filter_map(|s| s.created)
        .map(|c| now - c.unix())
        .max()
        .unwrap_or(0);
    relay
        .metrics
        .supervisor_oldest_bundle_age_seconds
        .set(oldest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, Projects};

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = Projects {
            concurrency: 1,
            retry_min: HumanDuration::secs(2),
            retry_max: HumanDuration::secs(10),
        };
        for (failures, base) in [(1, 2), (2, 4), (3, 8), (4, 10), (30, 10)] {
            let d = backoff(&p, failures);
            let base = Duration::from_secs(base);
            assert!(d >= base && d <= base + base / 2, "{failures}: {d:?}");
        }
    }

    #[test]
    fn failures_get_the_operators_names() {
        let named = |k| kind_of(&SyncError::new(k, "x"));
        assert_eq!(named(FailureKind::Connect), "unreachable");
        assert_eq!(named(FailureKind::Dns), "unreachable");
        assert_eq!(named(FailureKind::Tls), "tls");
        assert_eq!(named(FailureKind::Unauthorized), "auth");
        assert_eq!(named(FailureKind::Forbidden), "auth");
        assert_eq!(named(FailureKind::Verification), "rejected");
        assert_eq!(named(FailureKind::Timeout), "timeout");
        assert_eq!(named(FailureKind::ServerError), "other");
    }
}
