//! Keeps the relay's bundle fresh from its sources: one worker runs checks one at a time,
//! woken by the schedule (the daily check with jitter; the hourly retry while failing), by
//! an upstream's watch channel (at once, on each event), by polling an upstream's manifest
//! while its watch channel is down, by an admin's force-refresh, and once at start.
//!
//! A check tries the sources in order and stops at the first that answers; a failing
//! source is recorded and the next one is tried. Nothing is committed that did not verify
//! (`client::check`), and on any failure the current bundle stays as it was.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Relay;
use crate::bundle::Timestamp;
use crate::client::schedule::{Schedule, Timer, When};
use crate::client::settings::redact_userinfo;
use crate::client::{self, CheckContext, CheckOutcome, FailureKind, Held, SourceKind};
use crate::config::SourceConfig;

/// The longest `Retry-After` a source is granted.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// What `/api/v1/status` shows of syncing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncStatus {
    pub last_check: Option<Timestamp>,
    pub next_check: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    /// The last check failed on every source: retries run on the retry schedule.
    pub failing: bool,
    pub sources: Vec<SourceStatus>,
    /// Vendor archives pulled from a URL: last check and error.
    pub archives: Vec<ArchivePull>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ArchivePull {
    pub name: String,
    pub url: String,
    pub last_check: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceStatus {
    pub kind: SourceKind,
    pub url: String,
    /// `connected`, `down`, or `none` (a custom location has no watch channel).
    pub watch: &'static str,
    pub last_check: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<FailureKind>,
    /// Not asked again before this: its `Retry-After`, or the backoff after failures.
    pub not_before: Option<Timestamp>,
    /// Failed checks in a row.
    pub failures: u32,
    #[serde(skip)]
    pub retry_after_until: Option<Timestamp>,
    /// How the last bundle from this source came: whole (and why not by segments, when
    /// they were tried), or by segments (bytes transferred, bytes reused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transfer: Option<client::Via>,
}

/// Shared between the sync tasks and the status routes.
#[derive(Default)]
pub struct SyncState {
    pub(crate) status: Mutex<SyncStatus>,
    pub(crate) wake: Notify,
    /// Set by an admin's force-refresh: the next check ignores the backoff and the
    /// sources' `Retry-After`.
    pub(crate) forced: std::sync::atomic::AtomicBool,
}

impl SyncState {
    pub fn new(sources: &[SourceConfig], archives: &[crate::config::ArchiveConfig]) -> Self {
        let status = SyncStatus {
            archives: archives
                .iter()
                .filter_map(|a| {
                    Some(ArchivePull {
                        name: a.name.clone(),
                        url: redact_userinfo(&a.source.as_ref()?.url),
                        last_check: None,
                        last_error: None,
                    })
                })
                .collect(),
            sources: sources
                .iter()
                .map(|s| SourceStatus {
                    kind: s.kind,
                    url: redact_userinfo(&s.url),
                    watch: match s.kind {
                        SourceKind::Upstream => "down",
                        SourceKind::CustomLocation => "none",
                    },
                    last_check: None,
                    last_success: None,
                    last_error: None,
                    last_error_kind: None,
                    not_before: None,
                    failures: 0,
                    retry_after_until: None,
                    last_transfer: None,
                })
                .collect(),
            ..SyncStatus::default()
        };
        Self {
            status: Mutex::new(status),
            wake: Notify::new(),
            forced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn snapshot(&self) -> SyncStatus {
        self.lock().clone()
    }

    /// Asks the worker for a check now.
    pub fn check_now(&self) {
        self.wake.notify_one();
    }

    /// A source showed it is alive and has news (an event on its watch channel): its
    /// failure backoff ends now; a `Retry-After` it sent still holds.
    fn source_alive(&self, index: usize) {
        let mut status = self.lock();
        if let Some(s) = status.sources.get_mut(index) {
            s.not_before = s.retry_after_until;
        }
        drop(status);
        self.wake.notify_one();
    }

    /// An admin's "check now": also skips the failure backoff and any `Retry-After`.
    pub fn force(&self) {
        self.forced.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncStatus> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A source ready to use.
struct Source {
    config: SourceConfig,
    endpoint: client::Endpoint,
    client: reqwest::Client,
}

/// Starts the sync tasks and returns their handles. They end when the relay stops.
pub async fn start(
    relay: &Arc<Relay>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, super::ServerError> {
    let pulled_archives = relay.config.archives.iter().any(|a| a.source.is_some());
    if relay.config.sources.is_empty() && !pulled_archives {
        return Ok(Vec::new());
    }
    let schedule = &relay.config.schedule;
    let mut sources = Vec::new();
    for config in &relay.config.sources {
        let endpoint = config.endpoint(schedule);
        let client = endpoint.client().map_err(|e| {
            super::ServerError::Other(format!("source {}: {e}", redact_userinfo(&config.url)))
        })?;
        sources.push(Arc::new(Source {
            config: config.clone(),
            endpoint,
            client,
        }));
    }

    let timers = start_schedule(relay).await?;
    let mut tasks = vec![tokio::spawn(worker(
        Arc::clone(relay),
        sources.clone(),
        timers,
    ))];
    for (index, source) in sources.iter().enumerate() {
        if source.config.kind == SourceKind::Upstream {
            tasks.push(tokio::spawn(follow(
                Arc::clone(relay),
                index,
                Arc::clone(source),
            )));
        }
    }
    tasks.push(tokio::spawn(poll_while_watch_is_down(Arc::clone(relay))));
    relay.sync.check_now();
    Ok(tasks)
}

/// The daily check (after a random delay up to the jitter) and the retry while failing.
async fn start_schedule(relay: &Arc<Relay>) -> Result<Schedule, super::ServerError> {
    let schedule = &relay.config.schedule;
    // The timers hold the relay weakly: a stopped relay is not kept alive by them.
    let r = Arc::downgrade(relay);
    Schedule::start(
        &[
            Timer::check(When::Cron(schedule.check.clone()), schedule.jitter.0),
            Timer::retry(When::Cron(schedule.retry.clone())),
        ],
        move || {
            if let Some(r) = r.upgrade() {
                r.sync.check_now();
            }
        },
    )
    .await
    .map_err(|e| super::ServerError::Other(e.to_string()))
}

async fn worker(relay: Arc<Relay>, sources: Vec<Arc<Source>>, mut schedule: Schedule) {
    let work_dir = relay.config.data_dir().join("store/downloads");
    if let Err(e) = tokio::fs::create_dir_all(&work_dir).await {
        warn!(error = %e, dir = %work_dir.display(), "cannot create the download directory");
    }
    // Archive pulls run beside the bundle checks, one at a time: a slow vendor URL
    // must not hold back a bundle the watch channel just announced.
    let pulling = Arc::new(tokio::sync::Mutex::new(()));
    let work_dir = Arc::new(work_dir);
    loop {
        let next = schedule.next().await;
        relay.sync.lock().next_check = next;
        tokio::select! {
            () = relay.sync.wake.notified() => {}
            () = relay.stopping.cancelled() => break,
        }
        if !sources.is_empty() {
            check_bundles(&relay, &sources, &work_dir).await;
        }
        schedule.set_failing(relay.sync.lock().failing);
        // A pull still running is this check's too: it is not started twice.
        if let Ok(guard) = Arc::clone(&pulling).try_lock_owned() {
            let (relay, work_dir) = (Arc::clone(&relay), Arc::clone(&work_dir));
            tokio::spawn(async move {
                tokio::select! {
                    () = pull_archives(&relay, &work_dir) => {}
                    () = relay.stopping.cancelled() => {}
                }
                drop(guard);
            });
        }
    }
    schedule.stop().await;
}

/// Pulls each vendor archive that has a source, with `If-None-Match` on the last ETag,
/// checks its integrity and stores it.
async fn pull_archives(relay: &Arc<Relay>, work_dir: &std::path::Path) {
    let schedule = &relay.config.schedule;
    for archive in &relay.config.archives {
        let Some(source) = &archive.source else {
            continue;
        };
        let now = super::now();
        let result = pull_archive(
            relay,
            &archive.name,
            source,
            archive.sha256,
            schedule,
            work_dir,
            now,
        )
        .await;
        let mut status = relay.sync.lock();
        if let Some(a) = status.archives.iter_mut().find(|a| a.name == archive.name) {
            a.last_check = Some(now);
            a.last_error = result.err();
        }
    }
}

async fn pull_archive(
    relay: &Arc<Relay>,
    name: &str,
    source: &SourceConfig,
    pinned: Option<crate::bundle::Sha256>,
    schedule: &crate::config::Schedule,
    work_dir: &std::path::Path,
    now: Timestamp,
) -> Result<(), String> {
    let endpoint = source.endpoint(schedule);
    let client = endpoint.client().map_err(|e| e.to_string())?;
    let partial = work_dir.join(format!("partial-archive-{name}"));
    let last_etag_path = work_dir.join(format!("archive-{name}.last-etag"));
    let held = relay.store.archive(name).map_err(|e| e.to_string())?;
    let last_etag = match held {
        Some(_) => tokio::fs::read_to_string(&last_etag_path).await.ok(),
        None => None,
    };
    let limits = schedule.fetch_limits(relay.config.storage.max_upload_bytes);
    let fetched = client::download(
        &endpoint,
        &client,
        &endpoint.url,
        &partial,
        last_etag.as_deref(),
        limits,
        |_, _| {},
    )
    .await
    .map_err(|e| e.to_string())?;
    let Some(fetched) = fetched else {
        return Ok(()); // not modified
    };
    let checked = {
        let (path, limits) = (fetched.path.clone(), relay.limits);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(crate::archive::ArchiveError::Read)?;
            crate::archive::check(file, &limits, pinned)
        })
        .await
        .map_err(|e| e.to_string())?
    };
    let info = match checked {
        Ok(info) => info,
        Err(e) => {
            let _ = tokio::fs::remove_file(&fetched.path).await;
            return Err(format!("{}: {e}", endpoint.url));
        }
    };
    let _ = tokio::fs::remove_file(file_etag(&fetched.path)).await;
    if held.as_ref().is_some_and(|(r, _)| r.sha256 == info.sha256) {
        let _ = tokio::fs::remove_file(&fetched.path).await;
    } else {
        let temp = tempfile::TempPath::try_from_path(&fetched.path).map_err(|e| e.to_string())?;
        relay
            .store
            .commit_archive(
                name,
                &info,
                temp,
                &format!("custom location {}", endpoint.url),
                now,
            )
            .await
            .map_err(|e| e.to_string())?;
        info!(archive = name, sha256 = %info.sha256, "archive stored");
    }
    match &fetched.etag {
        Some(tag) => {
            let _ = tokio::fs::write(&last_etag_path, tag).await;
        }
        None => {
            let _ = tokio::fs::remove_file(&last_etag_path).await;
        }
    }
    Ok(())
}

/// The sources in order, until one answers.
/// The current bundle's file and segment index, for building the next one from it
/// (`None` when nothing is held, or it has no segments).
async fn held_bundle(relay: &Arc<Relay>) -> Option<client::HeldBundle> {
    let sha = relay.store.current()?.record.sha256;
    let store = Arc::clone(&relay.store);
    let found = tokio::task::spawn_blocking(move || {
        let (_, path) = store.held(&sha).ok()??;
        let bytes = store.segment_index(&sha).ok()??;
        let index = crate::bundle::index::SegmentIndex::decode(&bytes).ok()?;
        Some(client::HeldBundle { path, index })
    })
    .await;
    found.ok().flatten()
}

async fn check_bundles(relay: &Arc<Relay>, sources: &[Arc<Source>], work_dir: &std::path::Path) {
    let now = super::now();
    relay.sync.lock().last_check = Some(now);
    let held = relay.store.current().map(|c| Held {
        sequence: c.record.sequence,
        sha256: c.record.sha256,
    });
    let schedule = &relay.config.schedule;
    let trust = relay.trust();
    let held_file = held_bundle(relay).await;
    let ctx = CheckContext {
        trust: &trust,
        limits: &relay.limits,
        fetch: schedule.fetch_limits(relay.config.storage.max_upload_bytes),
        work_dir,
        now,
        held_file: held_file.as_ref(),
    };
    let forced = relay
        .sync
        .forced
        .swap(false, std::sync::atomic::Ordering::SeqCst);
    let mut last_error = None;
    for (index, source) in sources.iter().enumerate() {
        let waiting = {
            let status = relay.sync.lock();
            let s = &status.sources[index];
            // An admin's force-refresh asks every source now, backoff and Retry-After alike.
            !forced && s.not_before.is_some_and(|t| t > now)
        };
        if waiting {
            continue;
        }
        let outcome = client::check(
            source.config.kind,
            &source.endpoint,
            &source.client,
            held,
            &ctx,
        )
        .await;
        let result = match outcome {
            Ok(CheckOutcome::UpToDate) => Ok(false),
            Ok(CheckOutcome::New {
                verified,
                file,
                transferred,
                via,
                index: segments,
            }) => {
                relay.sync.lock().sources[index].last_transfer = Some(via);
                // The source's index, checked against the file: no need to derive it.
                if let Some(segments) = segments {
                    let store = Arc::clone(&relay.store);
                    let _ = tokio::task::spawn_blocking(move || {
                        store.remember_segment_index(&segments)
                    })
                    .await;
                }
                let origin = format!(
                    "{} {}",
                    kind_name(source.config.kind),
                    redact_userinfo(&source.config.url)
                );
                let (sequence, sha256) = (verified.manifest().sequence, verified.sha256());
                let committed = match tempfile::TempPath::try_from_path(&file) {
                    Ok(temp) => relay.store.commit(*verified, temp, &origin, now).await,
                    Err(e) => Err(crate::store::StoreError::Io {
                        path: file.clone(),
                        source: e,
                    }),
                };
                match committed {
                    Ok(_) => {
                        let _ = tokio::fs::remove_file(file_etag(&file)).await;
                        info!(%sequence, %sha256, source = %redact_userinfo(&source.config.url), bytes = transferred, "bundle stored");
                        Ok(true)
                    }
                    Err(crate::store::StoreError::NotNewer { .. }) => Ok(false),
                    Err(e) => Err(client::SyncError::new(
                        FailureKind::Local,
                        format!("storing: {e}"),
                    )),
                }
            }
            Err(e) => Err(e),
        };
        let mut status = relay.sync.lock();
        let s = &mut status.sources[index];
        s.last_check = Some(now);
        match result {
            Ok(_) => {
                s.last_success = Some(now);
                s.last_error = None;
                s.last_error_kind = None;
                s.not_before = None;
                s.retry_after_until = None;
                s.failures = 0;
                status.last_success = Some(now);
                status.last_error = None;
                status.failing = false;
                return;
            }
            Err(e) => {
                warn!(source = %redact_userinfo(&source.config.url), kind = ?e.kind, error = %e, "source check failed");
                s.last_error = Some(e.message.clone());
                s.last_error_kind = Some(e.kind);
                s.failures = s.failures.saturating_add(1);
                // Exponential backoff with jitter, or the server's Retry-After when longer;
                // a Retry-After is honoured up to MAX_RETRY_AFTER (a lying upstream cannot
                // stop the checks for a year), and an admin's force-refresh overrides it.
                let backoff = backoff(schedule, s.failures);
                let retry_after = e.retry_after.map(|ra| ra.min(MAX_RETRY_AFTER));
                let wait = retry_after.map_or(backoff, |ra| ra.max(backoff));
                s.not_before = Some(now.saturating_add(wait));
                s.retry_after_until = retry_after.map(|d| now.saturating_add(d));
                last_error = Some(e.message);
            }
        }
    }
    let mut status = relay.sync.lock();
    status.failing = true;
    status.last_error =
        last_error.or_else(|| Some("every source is waiting for its Retry-After".into()));
}

/// The validator file `fetch` keeps beside a partial download.
fn file_etag(file: &std::path::Path) -> std::path::PathBuf {
    file.with_extension("etag")
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Upstream => "upstream",
        SourceKind::CustomLocation => "custom location",
    }
}

/// Follows an upstream's watch channel: every event asks for a check at once, and so
/// does every (re)connection, which may have missed events.
async fn follow(relay: Arc<Relay>, index: usize, source: Arc<Source>) {
    let url = format!("{}/api/v1/feeds/watch", source.endpoint.base());
    let channel = crate::client::follow(
        &source.endpoint,
        &source.client,
        || relay.store.current().map(|c| c.record.sequence.0),
        |signal| match signal {
            crate::client::WatchSignal::Connected => {
                set_watch(&relay, index, "connected");
                relay.sync.source_alive(index);
            }
            crate::client::WatchSignal::Event => relay.sync.source_alive(index),
            crate::client::WatchSignal::Down(why) => {
                if why.starts_with("watch channel refused") {
                    warn!(source = %url, reason = %why, "watch channel refused");
                } else {
                    tracing::debug!(source = %url, reason = %why, "watch channel down");
                }
                set_watch(&relay, index, "down");
            }
        },
    );
    tokio::select! {
        () = channel => {}
        () = relay.stopping.cancelled() => {}
    }
}

fn set_watch(relay: &Relay, index: usize, state: &'static str) {
    relay.sync.lock().sources[index].watch = state;
}

/// While some upstream's watch channel is down (a proxy that cuts long connections),
/// polls by asking for a check every `poll_interval`.
async fn poll_while_watch_is_down(relay: Arc<Relay>) {
    let interval = relay.config.schedule.poll_interval.0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = relay.stopping.cancelled() => return,
        }
        let any_down = relay
            .sync
            .lock()
            .sources
            .iter()
            .any(|s| s.kind == SourceKind::Upstream && s.watch == "down");
        if any_down {
            relay.sync.check_now();
        }
    }
}

/// `base * 2^(failures-1)`, capped, plus up to half again at random.
fn backoff(schedule: &crate::config::Schedule, failures: u32) -> Duration {
    let base = schedule.backoff_base.0;
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = exp.min(schedule.backoff_max.0);
    capped + random_below(capped / 2)
}

pub(super) use crate::client::random_below;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, Schedule};

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let schedule = Schedule {
            backoff_base: HumanDuration::secs(1),
            backoff_max: HumanDuration::secs(8),
            ..Schedule::default()
        };
        for (failures, low) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (40, 8)] {
            for _ in 0..50 {
                let d = backoff(&schedule, failures);
                let low = Duration::from_secs(low);
                assert!(
                    d >= low && d < low + low / 2 + Duration::from_nanos(1),
                    "{failures}: {d:?}"
                );
            }
        }
    }
}
