//! The origin service (`[origin]`): on its schedule (and once at start, and when an admin
//! asks), fetch each input, import, build, sign with the origin's key, verify like any
//! bundle and make the result current; downstream tiers then receive it as any bundle
//! (watch channel, projects).
//!
//! A cycle, and what survives a failure at each step:
//!
//! 1. Fetch: an input with a URL is downloaded with `If-None-Match` on the ETag of the copy
//!    held (resuming a cut download) into `inputs/<name>.new`; a 304 keeps the held copy.
//!    A failed fetch keeps the held copy, and status says why.
//! 2. Import (`crate::import`) into `feeds.next/`, one feed file per (kind, feed). When a
//!    new download cannot be imported (a truncated zip), the group is imported again from
//!    the held copies and the new file is dropped: an input that fails keeps its previous
//!    data. Only then do new downloads replace the held copies.
//! 3. Fingerprint: the feed files' paths and digests. The same as the last published
//!    bundle's: nothing new is published.
//! 4. Build: the sequence is one above the highest of the last published and the store's
//!    current one, written to `state.json` (fsynced) before the build, so a crash never
//!    reuses a number and the sequence never goes backwards across restarts.
//! 5. Verify (the relay's trust plus the origin's own key) and commit through the store.
//!
//! Files live in `<data_dir>/origin/`. Cycles run one at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Relay;
use crate::bundle::{
    self, BuildOptions, FeedKind, ImportCounts, SecretKey, Sequence, Sha256, Timestamp,
};
use crate::client;
use crate::client::schedule::{Schedule, Timer, When};
use crate::config::{OriginConfig, OriginInput};
use crate::import::{self, ImportLimits, Input, domains::DomainFormat};

/// What status shows of the origin.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OriginStatus {
    pub name: String,
    pub schedule: String,
    pub next_run: Option<Timestamp>,
    pub last_run: Option<Timestamp>,
    /// `published`, `unchanged` or `failed`.
    pub last_outcome: Option<&'static str>,
    pub last_error: Option<String>,
    pub last_published: Option<Published>,
    pub inputs: Vec<InputStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    pub sequence: Sequence,
    pub sha256: Sha256,
    pub at: Timestamp,
}

/// One input, as the last cycle left it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InputStatus {
    pub name: String,
    pub kind: String,
    pub feed: String,
    pub location: String,
    pub last_check: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    /// The data in use: when it was fetched, its digest, what the import made of it.
    pub retrieved: Option<Timestamp>,
    pub sha256: Option<Sha256>,
    pub counts: Option<ImportCounts>,
    pub refused_by_rule: BTreeMap<String, u64>,
}

/// What one cycle did (the answer of `POST /api/v1/origin/run`).
#[derive(Clone, Debug, Serialize)]
pub struct CycleReport {
    pub outcome: &'static str,
    pub sequence: Option<Sequence>,
    pub sha256: Option<Sha256>,
    pub error: Option<String>,
    pub inputs: Vec<InputStatus>,
}

/// Shared between the origin task, the run route and status.
pub struct OriginState {
    status: Mutex<OriginStatus>,
    wake: Notify,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl OriginState {
    pub fn new(config: Option<&OriginConfig>) -> Self {
        let status = config.map_or_else(OriginStatus::default, |o| OriginStatus {
            name: o.name.clone(),
            schedule: o.schedule.clone(),
            inputs: o
                .inputs
                .iter()
                .map(|i| InputStatus {
                    name: i.name.clone(),
                    kind: i.kind.to_string(),
                    feed: i.feed_name().to_owned(),
                    location: location(i),
                    ..InputStatus::default()
                })
                .collect(),
            ..OriginStatus::default()
        });
        OriginState {
            status: Mutex::new(status),
            wake: Notify::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    pub fn snapshot(&self) -> OriginStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OriginStatus> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where an input comes from, as status and the signed provenance show it: a URL's
/// `user:password@` is never written there.
fn location(input: &OriginInput) -> String {
    match (&input.source, &input.path) {
        (Some(s), _) => crate::client::settings::redact_userinfo(&s.url),
        (None, Some(p)) => p.display().to_string(),
        (None, None) => String::new(),
    }
}

/// What `state.json` keeps across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    /// The highest sequence this origin has used (or is about to use).
    last_sequence: u64,
    /// The feed files of the last published bundle: `path sha256` lines, hashed.
    last_fingerprint: Option<Sha256>,
    last_published: Option<Published>,
    /// Per input with a URL: the held copy's ETag and when it was fetched.
    held: BTreeMap<String, HeldInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldInput {
    etag: Option<String>,
    retrieved: Timestamp,
}

/// Starts the origin's task when `[origin]` is configured: a cycle at start, then on the
/// schedule and on demand.
pub async fn start(
    relay: &Arc<Relay>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, super::ServerError> {
    let Some(origin) = &relay.config.origin else {
        return Ok(Vec::new());
    };
    let r = Arc::downgrade(relay);
    let mut schedule = Schedule::start(
        &[Timer::check(
            When::Cron(origin.schedule.clone()),
            Duration::ZERO,
        )],
        move || {
            if let Some(r) = r.upgrade() {
                r.origin.wake.notify_one();
            }
        },
    )
    .await
    .map_err(|e| super::ServerError::Other(format!("origin {e}")))?;
    let relay = Arc::clone(relay);
    relay.origin.wake.notify_one();
    Ok(vec![tokio::spawn(async move {
        loop {
            let next = schedule.next().await;
            relay.origin.lock().next_run = next;
            tokio::select! {
                () = relay.origin.wake.notified() => {}
                () = relay.stopping.cancelled() => break,
            }
            let report = run_cycle(&relay).await;
            match report.outcome {
                "failed" => warn!(error = ?report.error, "origin cycle failed"),
                outcome => info!(outcome, sequence = ?report.sequence, "origin cycle done"),
            }
        }
        schedule.stop().await;
    })])
}

/// Runs one cycle now (waiting for one in progress to end first).
pub async fn run_cycle(relay: &Arc<Relay>) -> CycleReport {
    let _one = relay.origin.one_at_a_time.lock().await;
    let Some(origin) = relay.config.origin.clone() else {
        return CycleReport {
            outcome: "failed",
            sequence: None,
            sha256: None,
            error: Some("this relay has no [origin]".into()),
            inputs: Vec::new(),
        };
    };
    let now = super::now();
    let result = cycle(relay, &origin, now).await;
    let mut status = relay.origin.lock();
    status.last_run = Some(now);
    let (outcome, sequence, sha256, error) = match result {
        Ok(Some(p)) => {
            status.last_published = Some(p.clone());
            ("published", Some(p.sequence), Some(p.sha256), None)
        }
        Ok(None) => ("unchanged", None, None, None),
        Err(e) => ("failed", None, None, Some(e)),
    };
    status.last_outcome = Some(outcome);
    status.last_error.clone_from(&error);
    CycleReport {
        outcome,
        sequence,
        sha256,
        error,
        inputs: status.inputs.clone(),
    }
}

/// An input ready to import: the file to read and what to record about it.
struct Ready {
    index: usize,
    input: Input,
    /// A new download, not yet promoted over the held copy (`None`: the held copy, or a
    /// local path).
    new_download: Option<PathBuf>,
    held: Option<PathBuf>,
}

async fn cycle(
    relay: &Arc<Relay>,
    origin: &OriginConfig,
    now: Timestamp,
) -> Result<Option<Published>, String> {
    let dir = relay.config.data_dir().join("origin");
    tokio::fs::create_dir_all(dir.join("inputs"))
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut persisted = load_state(&dir)?;
    let key = SecretKey::load(&origin.key).map_err(|e| format!("origin key: {e}"))?;

    // 1. Fetch.
    let mut ready = Vec::new();
    for (index, input) in origin.inputs.iter().enumerate() {
        let fetched = fetch(relay, input, &dir, &mut persisted, now).await;
        let mut status = relay.origin.lock();
        let s = &mut status.inputs[index];
        s.last_check = Some(now);
        match fetched {
            Ok(r) => {
                s.last_error = None;
                ready.push(Ready { index, ..r });
            }
            Err((e, held)) => {
                warn!(input = %input.name, error = %e, "origin input failed; keeping what it held");
                s.last_error = Some(e);
                if let Some(r) = held {
                    ready.push(Ready { index, ..r });
                }
            }
        }
    }
    if ready.is_empty() && origin.feeds.is_none() {
        return Err("no input could be read, and none is held".into());
    }

    // 2. Import, with fallbacks to held copies; 3. fingerprint.
    let imported = {
        let (origin, dir) = (origin.clone(), dir.clone());
        tokio::task::spawn_blocking(move || import_all(&origin, &dir, ready))
            .await
            .map_err(|e| format!("import task: {e}"))??
    };
    {
        let mut status = relay.origin.lock();
        for (index, outcome) in &imported.inputs {
            let s = &mut status.inputs[*index];
            match outcome {
                Ok((provenance, refusals)) => {
                    s.last_success = Some(now);
                    s.retrieved = Some(provenance.retrieved);
                    s.sha256 = Some(provenance.sha256);
                    s.counts = Some(provenance.counts);
                    s.refused_by_rule.clone_from(refusals);
                }
                Err(e) => s.last_error = Some(e.clone()),
            }
        }
    }
    for (name, held) in &imported.promoted {
        persisted.held.insert(name.clone(), held.clone());
    }
    let current = relay.store.current().map(|c| c.record.sequence.0);
    if persisted.last_fingerprint == Some(imported.fingerprint)
        && current.is_some()
        && current == Some(persisted.last_sequence)
    {
        save_state(&dir, &persisted)?;
        return Ok(None);
    }

    // 4. Build, under a sequence recorded before it is used.
    let sequence = persisted.last_sequence.max(current.unwrap_or(0)) + 1;
    persisted.last_sequence = sequence;
    save_state(&dir, &persisted)?;
    let options = BuildOptions {
        sequence: Sequence(sequence),
        origin: origin.name.clone(),
        created: now,
        expires: now.saturating_add(origin.expires_in.0),
    };
    let incoming = relay
        .store
        .incoming_file()
        .map_err(|e| format!("store: {e}"))?;
    let feeds = dir.join("feeds.next");
    let trust = relay.trust().with(key.public());
    let (limits, held) = (relay.limits, current.map(Sequence));
    let (verified, path) = tokio::task::spawn_blocking(move || {
        let (file, path) = incoming.into_parts();
        let mut out = std::io::BufWriter::new(file);
        bundle::build(&feeds, &key, &options, &mut out).map_err(|e| format!("build: {e}"))?;
        let file = out
            .into_inner()
            .map_err(|e| format!("build: {}", e.into_error()))?;
        file.sync_all().map_err(|e| format!("build: {e}"))?;
        let reader = File::open(&path).map_err(|e| format!("build: {e}"))?;
        let verified = bundle::verify(
            BufReader::with_capacity(1 << 16, reader),
            &trust,
            &limits,
            now,
            held,
        )
        .map_err(|e| format!("the built bundle does not verify: {e}"))?;
        Ok::<_, String>((verified, path))
    })
    .await
    .map_err(|e| format!("build task: {e}"))??;

    // 5. Commit.
    let committed = relay
        .store
        .commit(verified, path, &format!("origin {}", origin.name), now)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let r = &committed.record;
    relay
        .metrics
        .current_sequence
        .set(i64::try_from(r.sequence.0).unwrap_or(i64::MAX));
    info!(sequence = %r.sequence, sha256 = %r.sha256, bytes = r.size, "origin published a bundle");
    let published = Published {
        sequence: r.sequence,
        sha256: r.sha256,
        at: now,
    };
    persisted.last_fingerprint = Some(imported.fingerprint);
    persisted.last_published = Some(published.clone());
    save_state(&dir, &persisted)?;
    Ok(Some(published))
}

/// Fetches one input. `Err` carries the error and, when a copy is held, that copy.
async fn fetch(
    relay: &Arc<Relay>,
    input: &OriginInput,
    dir: &Path,
    persisted: &mut Persisted,
    now: Timestamp,
) -> Result<Ready, (String, Option<Ready>)> {
    let record = |path: &Path, retrieved: Timestamp| Input {
        name: input.name.clone(),
        location: location(input),
        license: input.license.clone(),
        retrieved,
        path: path.to_owned(),
    };
    let Some(source) = &input.source else {
        // A local path: read as it is now.
        let Some(path) = &input.path else {
            return Err(("no path and no source".into(), None));
        };
        if !path.exists() {
            return Err((format!("{} does not exist", path.display()), None));
        }
        return Ok(Ready {
            index: 0,
            input: record(path, now),
            new_download: None,
            held: None,
        });
    };
    let held_path = dir.join("inputs").join(held_name(input));
    let held_meta = persisted.held.get(&input.name).cloned();
    let held = match (&held_meta, held_path.is_file()) {
        (Some(meta), true) => Some(Ready {
            index: 0,
            input: record(&held_path, meta.retrieved),
            new_download: None,
            held: Some(held_path.clone()),
        }),
        _ => None,
    };
    let schedule = &relay.config.schedule;
    let endpoint = source.endpoint(schedule);
    let client = endpoint
        .client()
        .map_err(|e| (e.to_string(), held_clone(&held)))?;
    let partial = dir.join(format!("partial-{}", input.name));
    let limits = schedule.fetch_limits(relay.config.storage.max_upload_bytes);
    let etag = held
        .as_ref()
        .and(held_meta.as_ref())
        .and_then(|m| m.etag.clone());
    let fetched = client::download(
        &endpoint,
        &client,
        &endpoint.url,
        &partial,
        etag.as_deref(),
        limits,
        |_, _| {},
    )
    .await
    .map_err(|e| (e.to_string(), held_clone(&held)))?;
    let Some(fetched) = fetched else {
        // 304: the held copy is current.
        return held.ok_or_else(|| ("304 without a held copy".to_owned(), None));
    };
    // `.new` before the extension: the importer tells formats apart by the extension.
    let new_path = dir
        .join("inputs")
        .join(held_name(input).replacen('.', ".new.", 1));
    tokio::fs::rename(&fetched.path, &new_path)
        .await
        .map_err(|e| (format!("{}: {e}", new_path.display()), held_clone(&held)))?;
    let _ = tokio::fs::remove_file(fetched.path.with_extension("etag")).await;
    // Not held until it imports: the ETag and time are promoted with the file.
    let meta = HeldInput {
        etag: fetched.etag,
        retrieved: now,
    };
    let new_meta = dir.join("inputs").join(format!("{}.new.json", input.name));
    let json = serde_json::to_vec(&meta).map_err(|e| (e.to_string(), held_clone(&held)))?;
    tokio::fs::write(&new_meta, json)
        .await
        .map_err(|e| (format!("{}: {e}", new_meta.display()), held_clone(&held)))?;
    Ok(Ready {
        index: 0,
        input: record(&new_path, now),
        new_download: Some(new_path),
        held: held.and_then(|h| h.held),
    })
}

fn held_clone(held: &Option<Ready>) -> Option<Ready> {
    held.as_ref().map(|h| Ready {
        index: h.index,
        input: h.input.clone(),
        new_download: None,
        held: h.held.clone(),
    })
}

/// The held copy's file name: the OSV importer tells formats apart by extension.
fn held_name(input: &OriginInput) -> String {
    let ext = match (input.kind, input.format.as_deref()) {
        (FeedKind::Osv, Some(f)) => f.to_owned(),
        (FeedKind::Osv, None) => {
            let url = input.source.as_ref().map_or("", |s| s.url.as_str());
            let path = url.split(['?', '#']).next().unwrap_or("");
            match path.rsplit('.').next() {
                Some(e) if ["zip", "json"].contains(&e.to_ascii_lowercase().as_str()) => {
                    e.to_ascii_lowercase()
                }
                _ => "jsonl".to_owned(),
            }
        }
        _ => "txt".to_owned(),
    };
    format!("{}.{ext}", input.name)
}

/// An input's import: its provenance and refusals by rule, or why its data was not used.
type InputOutcome = Result<(bundle::InputProvenance, BTreeMap<String, u64>), String>;

struct Imported {
    fingerprint: Sha256,
    /// Per input index: its provenance and refusals, or why its data could not be used.
    inputs: Vec<(usize, InputOutcome)>,
    /// New downloads that imported and now are the held copies.
    promoted: Vec<(String, HeldInput)>,
}

/// Imports every group into `feeds.next/`, adds the hand-made feeds, and fingerprints.
fn import_all(origin: &OriginConfig, dir: &Path, ready: Vec<Ready>) -> Result<Imported, String> {
    let out = dir.join("feeds.next");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut groups: BTreeMap<(FeedKind, String), Vec<Ready>> = BTreeMap::new();
    for r in ready {
        let input = &origin.inputs[r.index];
        groups
            .entry((input.kind, input.feed_name().to_owned()))
            .or_default()
            .push(r);
    }
    let limits = ImportLimits::default();
    let mut results = Vec::new();
    let mut promoted = Vec::new();
    // `<kind>/<file> <sha256>` of every feed file written, from the digests taken while
    // writing: nothing is read again to fingerprint.
    let mut files = Vec::new();
    for ((kind, feed), mut members) in groups {
        let format = origin.inputs[members[0].index].format.clone();
        let run = |members: &[Ready]| {
            let inputs: Vec<Input> = members.iter().map(|m| m.input.clone()).collect();
            import_group(kind, format.as_deref(), &inputs, &out, &feed, &limits)
        };
        let report = match run(&members) {
            Ok(report) => report,
            Err(e) if members.iter().any(|m| m.new_download.is_some()) => {
                // A new download broke the group: import from what was held instead.
                let mut fallback = Vec::new();
                for m in members.drain(..) {
                    match (&m.new_download, &m.held) {
                        (Some(new), held) => {
                            let _ = std::fs::remove_file(new);
                            results.push((m.index, Err(format!("new data refused: {e}"))));
                            if let Some(held) = held {
                                let mut input = m.input.clone();
                                input.path = held.clone();
                                fallback.push(Ready {
                                    index: m.index,
                                    input,
                                    new_download: None,
                                    held: None,
                                });
                            }
                        }
                        (None, _) => fallback.push(m),
                    }
                }
                if fallback.is_empty() {
                    continue;
                }
                members = fallback;
                match run(&members) {
                    Ok(report) => report,
                    Err(e) => {
                        for m in &members {
                            results.push((m.index, Err(e.to_string())));
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                for m in &members {
                    results.push((m.index, Err(e.to_string())));
                }
                continue;
            }
        };
        if let Some(name) = report.output.file_name() {
            files.push(format!(
                "{kind}/{} {}\n",
                name.to_string_lossy(),
                report.sha256
            ));
        }
        for (m, r) in members.iter().zip(report.inputs) {
            results.push((m.index, Ok((r.provenance, r.refusals.by_rule))));
            if let Some(new) = &m.new_download {
                let input = &origin.inputs[m.index];
                let held = dir.join("inputs").join(held_name(input));
                let meta_path = dir.join("inputs").join(format!("{}.new.json", input.name));
                let meta = std::fs::read(&meta_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<HeldInput>(&b).ok());
                if std::fs::rename(new, &held).is_ok()
                    && let Some(meta) = meta
                {
                    promoted.push((input.name.clone(), meta));
                }
                let _ = std::fs::remove_file(meta_path);
            }
        }
    }
    if let Some(extra) = &origin.feeds {
        copy_feeds(extra, &out, &mut files)?;
    }
    Ok(Imported {
        fingerprint: fingerprint(files),
        inputs: results,
        promoted,
    })
}

fn import_group(
    kind: FeedKind,
    format: Option<&str>,
    inputs: &[Input],
    out: &Path,
    feed: &str,
    limits: &ImportLimits,
) -> Result<import::ImportReport, import::ImportError> {
    match kind {
        FeedKind::Osv => import::osv::import(inputs, out, feed, limits),
        FeedKind::Domains => {
            let format = match format {
                Some("hosts") => DomainFormat::Hosts,
                Some("adblock") => DomainFormat::Adblock,
                Some("rpz") => DomainFormat::Rpz,
                _ => DomainFormat::List,
            };
            import::domains::import(inputs, format, out, feed, limits)
        }
        FeedKind::Ips => import::ips::import(inputs, out, feed, limits),
        FeedKind::Apps => Err(import::ImportError::NoInputs),
    }
}

/// Copies the hand-made feed files (`<kind>/<file>`, no links) into the build directory,
/// adding `<kind>/<file> <sha256>` of each to `files`.
fn copy_feeds(from: &Path, to: &Path, files: &mut Vec<String>) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("origin.feeds {}: {e}", p.display());
    for kind in FeedKind::ALL {
        let src = from.join(kind.as_str());
        let Ok(entries) = std::fs::read_dir(&src) else {
            continue;
        };
        let dst = to.join(kind.as_str());
        std::fs::create_dir_all(&dst).map_err(|e| err(&dst, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| err(&src, e))?;
            if !entry.file_type().map_err(|e| err(&src, e))?.is_file() {
                continue;
            }
            let target = dst.join(entry.file_name());
            if target.exists() {
                return Err(format!(
                    "origin.feeds: {} is also an imported feed",
                    target.display()
                ));
            }
            let mut source = File::open(entry.path()).map_err(|e| err(&entry.path(), e))?;
            let mut copy =
                bundle::HashingWriter::new(File::create(&target).map_err(|e| err(&target, e))?);
            std::io::copy(&mut source, &mut copy).map_err(|e| err(&target, e))?;
            let (_, sha256, _) = copy.into_parts();
            files.push(format!(
                "{kind}/{} {sha256}\n",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// SHA-256 of the sorted `<kind>/<file> <sha256>` lines of the feed files of a build.
fn fingerprint(mut files: Vec<String>) -> Sha256 {
    use sha2::Digest;
    files.sort();
    let mut hasher = sha2::Sha256::new();
    for line in files {
        hasher.update(line.as_bytes());
    }
    Sha256::from_hasher(hasher)
}

fn load_state(dir: &Path) -> Result<Persisted, String> {
    let path = dir.join("state.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: {e} (the origin will not guess its last sequence; fix or remove the file \
                 knowing the last sequence published)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn save_state(dir: &Path, state: &Persisted) -> Result<(), String> {
    let path = dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    crate::bundle::durable::write(&path, &json, crate::bundle::durable::Access::Exactly(0o644))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_location_never_shows_a_password() {
        let input: OriginInput = toml::from_str(
            "name = \"go\"\nkind = \"osv\"\n\
             source = { kind = \"custom_location\", url = \"https://feeds:s3cret@127.0.0.1:9/all.zip\" }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(location(&input), "https://***@127.0.0.1:9/all.zip");
    }
}
