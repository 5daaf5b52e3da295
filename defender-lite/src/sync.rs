//! Following a relay or a custom location: each check asks the sources in order (the
//! next when one fails) for a bundle newer than the one applied, with the relay's own
//! client (`relay::client`: resumable download, size cap, slow-transfer floor, proxies,
//! per-source CA). A new bundle is verified, unpacked into a directory of its own and
//! made current by replacing `state.json` (written to a temporary file, synced, renamed),
//! so a crash leaves either the old bundle or the new one applied, never a mix. The
//! previous bundle stays on disk as the last good one.
//!
//! Layout of the data directory:
//!
//! ```text
//! state.json                 what is applied, and how the last check went
//! bundles/<seq>-<sha256>/    an applied bundle, unpacked (manifest.json, feeds/...) and
//!                            its indexes (index/, see `crate::feeds`), built before it is
//!                            made current
//! work/                      partial downloads, kept across restarts to resume
//! quarantine/                applied bundles demoted (their key left trust.keys, or an
//!                            explicit reset of the held sequence), kept as evidence
//! ```
//!
//! Before each check, an applied bundle whose signing key is no longer in `trust.keys` is
//! demoted (the previous one, if trusted, becomes current), so a bundle a stolen key
//! signed far ahead never blocks the legitimate sequence; `sync --reset-sequence N
//! --reason TEXT` demotes what is above N. Both are recorded in `state.json`'s `demoted`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use relay::bundle::{Limits, Sequence, Sha256, Timestamp, TrustStore};
use relay::client::{self, CheckContext, CheckOutcome, FailureKind, Held, SyncError};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The bundle applied now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub sequence: Sequence,
    pub sha256: Sha256,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub origin: String,
    /// The source it came from (its URL).
    pub source: String,
    pub applied_at: Timestamp,
    /// Its directory, relative to the data directory.
    pub dir: PathBuf,
    /// How it came: whole, or by segments and how much (`relay/FORMAT.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
}

/// `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub current: Option<Applied>,
    /// The one before, kept on disk as the last good bundle.
    pub previous: Option<Applied>,
    pub last_check: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<FailureKind>,
    pub next_check: Option<Timestamp>,
    /// What was demoted, when and why (the most recent [`DEMOTED_KEPT`] lines): the audit
    /// trail of key revocations and sequence resets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demoted: Vec<String>,
}

/// Lines of `State::demoted` kept.
pub const DEMOTED_KEPT: usize = 100;

/// Demotes the applied bundles `refuse` gives a reason for (given the bundle and the key
/// id its manifest names): their directories move to `quarantine/`, the previous bundle
/// becomes current when the current one goes and the previous is kept. Returns the lines
/// added to `state.demoted`; the caller saves the state.
pub fn demote(
    data_dir: &Path,
    state: &mut State,
    refuse: impl Fn(&Applied, &str) -> Option<String>,
) -> Vec<String> {
    let now = Timestamp::now();
    let mut lines = Vec::new();
    let mut check = |slot: &mut Option<Applied>| {
        let Some(applied) = slot else { return };
        let manifest = std::fs::read(data_dir.join(&applied.dir).join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<relay::bundle::Manifest>(&b).ok());
        let why = match &manifest {
            Some(m) => refuse(applied, m.key_id.as_str()),
            None => Some("its manifest is unreadable".to_owned()),
        };
        let Some(why) = why else { return };
        let quarantine = data_dir.join("quarantine");
        let moved = std::fs::create_dir_all(&quarantine).is_ok()
            && applied.dir.file_name().is_some_and(|n| {
                std::fs::rename(data_dir.join(&applied.dir), quarantine.join(n)).is_ok()
            });
        lines.push(format!(
            "{now}: bundle sequence {} ({}) from {} demoted: {why}{}",
            applied.sequence,
            applied.sha256,
            applied.origin,
            if moved { "; kept in quarantine/" } else { "" }
        ));
        *slot = None;
    };
    check(&mut state.current);
    check(&mut state.previous);
    if state.current.is_none() {
        state.current = state.previous.take();
    }
    state.demoted.extend(lines.iter().cloned());
    let excess = state.demoted.len().saturating_sub(DEMOTED_KEPT);
    state.demoted.drain(..excess);
    lines
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a state file: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io { path, source }
}

impl State {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("state.json")
    }

    /// The state in `data_dir`; the default (nothing applied) when there is none yet.
    pub fn load(data_dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Replaces `state.json` atomically and durably.
    pub fn save(&self, data_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(data_dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        relay::bundle::durable::write(
            &path,
            &bytes,
            relay::bundle::durable::Access::Exactly(0o600),
        )
        .map_err(io_err(&path))
    }
}

/// How one check ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    UpToDate,
    Applied(Sequence),
}

/// The data directory held by one `sync` (one-off or daemon) for as long as it runs:
/// the lock on `DATA_DIR/sync.lock` goes with the process, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory for this process, or says who has it: two syncs would
/// apply over each other and remove each other's bundles being unpacked.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let path = data_dir.join("sync.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{} is in use by another defender-lite sync (it holds {}): stop that one first, \
             or give this one its own data_dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e).into()),
    }
}

/// One check over the sources in order; the state records how it went either way.
pub async fn check_once(config: &Config) -> anyhow::Result<Result<Checked, SyncError>> {
    let data = &config.data_dir;
    for dir in [data.join("bundles"), data.join("work")] {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    let trust = TrustStore::load(&config.trust.keys)?;
    let limits = Limits::default();
    let mut state = State::load(data)?;
    let demoted = demote(data, &mut state, |_, key_id| {
        let trusted = key_id
            .parse::<relay::bundle::KeyId>()
            .is_ok_and(|id| trust.get(&id).is_some());
        (!trusted).then(|| format!("key {key_id} is no longer in trust.keys"))
    });
    if !demoted.is_empty() {
        state.save(data)?;
    }
    let now = Timestamp::now();
    state.last_check = Some(now);
    let result = try_sources(config, &trust, &limits, &state).await;
    match &result {
        Ok(Some(applied)) => {
            state.previous = state.current.replace(applied.clone());
            state.last_success = Some(now);
            state.last_error = None;
            state.last_error_kind = None;
        }
        Ok(None) => {
            state.last_success = Some(now);
            state.last_error = None;
            state.last_error_kind = None;
        }
        Err(e) => {
            state.last_error = Some(e.message.clone());
            state.last_error_kind = Some(e.kind);
        }
    }
    state.save(data)?;
    if let Ok(Some(_)) = &result {
        remove_stale(data, &state);
    }
    Ok(result.map(|r| match r {
        Some(applied) => Checked::Applied(applied.sequence),
        None => Checked::UpToDate,
    }))
}

/// Asks each source in turn; the first that answers decides. `Ok(None)`: up to date.
async fn try_sources(
    config: &Config,
    trust: &TrustStore,
    limits: &Limits,
    state: &State,
) -> Result<Option<Applied>, SyncError> {
    if config.sources.is_empty() {
        return Err(SyncError::new(
            FailureKind::Config,
            "no [[sources]] in the configuration",
        ));
    }
    let schedule = config.sync.schedule();
    let held = state.current.as_ref().map(|a| Held {
        sequence: a.sequence,
        sha256: a.sha256,
    });
    let work = config.data_dir.join("work");
    let held_file = state
        .current
        .as_ref()
        .and_then(|a| held_bundle(&config.data_dir.join(&a.dir)));
    let ctx = CheckContext {
        trust,
        limits,
        fetch: config
            .sync
            .schedule()
            .fetch_limits(config.sync.max_bundle_bytes),
        work_dir: &work,
        now: Timestamp::now(),
        held_file: held_file.as_ref(),
    };
    let mut last_error = None;
    for source in &config.sources {
        let endpoint = source.endpoint(&schedule);
        let outcome = match endpoint.client() {
            Ok(client) => client::check(source.kind, &endpoint, &client, held, &ctx).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(CheckOutcome::UpToDate) => return Ok(None),
            Ok(CheckOutcome::New {
                file, via, index, ..
            }) => {
                let mut applied = apply(&config.data_dir, trust, limits, &file, &source.url, held);
                if let Ok(applied) = &mut applied {
                    keep_bundle_file(&config.data_dir.join(&applied.dir), &file, index.as_deref());
                    let transfer = describe_transfer(&via);
                    tracing::info!("{transfer}");
                    applied.transfer = Some(transfer);
                }
                let _ = std::fs::remove_file(&file);
                return applied.map(Some);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| SyncError::new(FailureKind::Config, "no source answered")))
}

/// Unpacks the verified bundle in `file` into a directory of its own under `data_dir`
/// (verifying it again as it is written: what is on disk is what was checked) and builds
/// its indexes. It does not make it current: that is `state.json`, written by the caller.
pub fn apply(
    data_dir: &Path,
    trust: &TrustStore,
    limits: &Limits,
    file: &Path,
    source: &str,
    held: Option<Held>,
) -> Result<Applied, SyncError> {
    let local = |e: &dyn std::fmt::Display| SyncError::new(FailureKind::Local, e.to_string());
    let input =
        std::fs::File::open(file).map_err(|e| local(&format!("{}: {e}", file.display())))?;
    let staging = data_dir
        .join("bundles")
        .join(format!(".incoming-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let verified = relay::bundle::unpack(
        std::io::BufReader::new(input),
        &staging,
        trust,
        limits,
        Timestamp::now(),
        held.map(|h| h.sequence),
    )
    .map_err(|e| match e {
        relay::bundle::UnpackError::Verify(v) => SyncError::verification(source, v),
        other => local(&other),
    })?;
    // Indexes are part of applying: a bundle is never current without them.
    crate::feeds::build_indexes(&staging).map_err(|e| local(&e))?;
    let m = verified.manifest();
    let dir = PathBuf::from("bundles").join(format!("{}-{}", m.sequence, verified.sha256()));
    let dest = data_dir.join(&dir);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| local(&format!("{}: {e}", dest.display())))?;
    }
    std::fs::rename(&staging, &dest).map_err(|e| local(&format!("{}: {e}", dest.display())))?;
    Ok(Applied {
        sequence: m.sequence,
        sha256: verified.sha256(),
        created: m.created,
        expires: m.expires,
        origin: m.origin.clone(),
        source: source.to_owned(),
        applied_at: Timestamp::now(),
        dir,
        transfer: None,
    })
}

/// The bundle file kept in an applied bundle's directory, and its segment index: what the
/// next bundle is built from when a source offers segments (`relay/FORMAT.md`).
pub const BUNDLE_FILE: &str = "bundle.tar.gz";

/// Keeps the verified bundle file (and its index, when the source had one) beside what
/// was unpacked from it. Best effort: without them the next bundle comes whole.
fn keep_bundle_file(dir: &Path, file: &Path, index: Option<&relay::bundle::index::SegmentIndex>) {
    let kept = dir.join(BUNDLE_FILE);
    if std::fs::rename(file, &kept).is_err() {
        return;
    }
    if let Some(index) = index {
        let _ = std::fs::write(relay::bundle::index::sidecar_path(&kept), index.encode());
    }
}

/// The applied bundle's kept file and index, if both are there and the index reads.
fn held_bundle(dir: &Path) -> Option<client::HeldBundle> {
    let path = dir.join(BUNDLE_FILE);
    let bytes = std::fs::read(relay::bundle::index::sidecar_path(&path)).ok()?;
    let index = relay::bundle::index::SegmentIndex::decode(&bytes).ok()?;
    path.is_file().then_some(client::HeldBundle { path, index })
}

/// One line on how a bundle came (whole, or by segments and how much).
fn describe_transfer(via: &client::Via) -> String {
    match via {
        client::Via::Segments {
            bytes,
            bundle_bytes,
            reused_bytes,
            requests,
            delta_bytes,
            rebuilt_bytes,
        } => format!(
            "by segments: {bytes} of {bundle_bytes} bytes transferred ({:.1} %; a delta of {delta_bytes} rebuilt {rebuilt_bytes}), {reused_bytes} reused, {requests} requests",
            100.0 * *bytes as f64 / (*bundle_bytes).max(1) as f64
        ),
        client::Via::Whole {
            bytes,
            fallback: Some(why),
        } => format!("whole: {bytes} bytes transferred (not by segments: {why})"),
        client::Via::Whole {
            bytes,
            fallback: None,
        } => format!("whole: {bytes} bytes transferred"),
    }
}

/// Removes bundle directories that are neither current nor the last good one.
fn remove_stale(data: &Path, state: &State) {
    let keep: Vec<PathBuf> = [&state.current, &state.previous]
        .into_iter()
        .flatten()
        .map(|a| data.join(&a.dir))
        .collect();
    let Ok(entries) = std::fs::read_dir(data.join("bundles")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !keep.contains(&path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The daemon: a check now, then every `sync.check_every` (after a random delay of up to
/// `sync.jitter`), and every `sync.retry_every` while checks fail, on the relay's own
/// schedule (`relay::client::schedule`); and at once whenever an upstream source's watch
/// channel announces a new bundle (or reconnects). While an upstream's channel is down,
/// every `sync.poll_every` at least. Ends on SIGTERM or SIGINT.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use relay::client::schedule::{Schedule, Timer, When};
    use tokio::signal::unix::{SignalKind, signal};
    // Both signals are watched before the first check, so neither kills a check midway.
    let mut terminate = signal(SignalKind::terminate()).context("watching for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watching for SIGINT")?;
    let wake = Arc::new(Notify::new());
    let channels = spawn_followers(config, &wake);
    let waker = Arc::clone(&wake);
    let mut schedule = Schedule::start(
        &[
            Timer::check(When::Every(config.sync.check_every.0), config.sync.jitter.0),
            Timer::retry(When::Every(config.sync.retry_every.0)),
        ],
        move || waker.notify_one(),
    )
    .await?;
    loop {
        let failed = match check_once(config).await? {
            Ok(Checked::Applied(seq)) => {
                tracing::info!("applied bundle sequence {seq}");
                false
            }
            Ok(Checked::UpToDate) => false,
            Err(e) => {
                tracing::warn!("check failed ({:?}): {}", e.kind, e.message);
                if let Some(step) = e.next_step() {
                    tracing::warn!("hint: {step}");
                }
                true
            }
        };
        schedule.set_failing(failed);
        let polling = channels.iter().any(|up| !up.load(Ordering::Relaxed));
        let poll = config.sync.poll_every.0;
        let mut next = schedule.next().await;
        if polling {
            let secs = i64::try_from(poll.as_secs()).unwrap_or(i64::MAX);
            let at = Timestamp::from_unix(Timestamp::now().unix().saturating_add(secs));
            next = next.into_iter().chain(at).min();
        }
        let mut state = State::load(&config.data_dir)?;
        state.next_check = next;
        state.save(&config.data_dir)?;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll), if polling => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    schedule.stop().await;
    Ok(())
}

/// One task per upstream source following its watch channel; each flag says whether
/// that channel is up. A source whose client cannot be built has no follower (its
/// checks report the error).
fn spawn_followers(config: &Config, wake: &Arc<Notify>) -> Vec<Arc<AtomicBool>> {
    let schedule = config.sync.schedule();
    let mut flags = Vec::new();
    for source in config
        .sources
        .iter()
        .filter(|s| s.kind == client::SourceKind::Upstream)
    {
        let endpoint = source.endpoint(&schedule);
        let Ok(http) = endpoint.client() else {
            continue;
        };
        let up = Arc::new(AtomicBool::new(false));
        flags.push(Arc::clone(&up));
        let wake = Arc::clone(wake);
        let data_dir = config.data_dir.clone();
        let poll = config.sync.poll_every.0;
        tokio::spawn(async move {
            client::follow(
                &endpoint,
                &http,
                || {
                    State::load(&data_dir)
                        .ok()
                        .and_then(|s| s.current)
                        .map(|a| a.sequence.0)
                },
                |signal| match signal {
                    client::WatchSignal::Connected => {
                        up.store(true, Ordering::Relaxed);
                        wake.notify_one();
                    }
                    client::WatchSignal::Event => wake.notify_one(),
                    client::WatchSignal::Down(why) => {
                        if up.swap(false, Ordering::Relaxed) {
                            tracing::warn!(
                                "{}: {why}; checking every {} s until it is back",
                                endpoint.base(),
                                poll.as_secs()
                            );
                        }
                    }
                },
            )
            .await;
        });
    }
    flags
}
