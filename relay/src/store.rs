//! The relay's store: bundle files content-addressed on disk, metadata in sled. The only
//! file that imports sled.
//!
//! A bundle is committed in this order: its verified file is renamed into `blobs/<sha256>`
//! and the directory fsynced; then one sled transaction records it, makes it current and
//! logs its event; then `flush_async` makes that durable; only then do watchers hear of
//! it. A crash at any instant leaves the previous current bundle, or the new one, current
//! and servable: an unreferenced file is removed at start-up, and a current file that is
//! missing or damaged is replaced by the newest intact one. If sled cannot open its
//! database at all, the store rebuilds it from the bundle files, which verify themselves.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use tokio::sync::watch;

use crate::bundle::durable::sync_dir;
use crate::bundle::{
    self, ExpiryCheck, Limits, Sequence, Sha256, Signature, Timestamp, TrustStore, VerifiedBundle,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("metadata database: {0}")]
    Db(#[from] sled::Error),
    #[error("metadata database: {0}")]
    Corrupt(String),
    #[error("sequence {sequence} is not newer than the current sequence {held}")]
    NotNewer { sequence: Sequence, held: Sequence },
    #[error("store task failed: {0}")]
    Task(String),
    #[error("{dir} is in use by another relay process (its lock file is held)")]
    InUse { dir: PathBuf },
}

/// What the store knows of a held bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub sha256: Sha256,
    pub size: u64,
    pub sequence: Sequence,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub origin: String,
    pub key_id: crate::bundle::KeyId,
    /// When this relay stored it.
    pub stored_at: Timestamp,
    /// Where it came from: `upload by NAME`, `sample`, a source URL.
    pub source: String,
    /// The exact signed `manifest.json`.
    pub manifest: String,
    pub signature: Signature,
}

impl BundleRecord {
    fn new(v: &VerifiedBundle, source: &str, now: Timestamp) -> Self {
        let m = v.manifest();
        Self {
            sha256: v.sha256(),
            size: v.size(),
            sequence: m.sequence,
            created: m.created,
            expires: m.expires,
            origin: m.origin.clone(),
            key_id: m.key_id.clone(),
            stored_at: now,
            source: source.to_owned(),
            manifest: String::from_utf8_lossy(v.manifest_bytes()).into_owned(),
            signature: v.signature().clone(),
        }
    }
}

/// The current bundle, ready to serve.
#[derive(Debug)]
pub struct Current {
    pub record: BundleRecord,
    pub path: PathBuf,
    /// Whether downloads may hold the whole file in memory (it is at most
    /// `storage.memory_cache_bytes`).
    pub in_memory: bool,
    /// The file's bytes while downloads hold them: loaded by the first download, shared by
    /// every download that overlaps it, freed with the last. An idle relay holds none.
    pub loaded: tokio::sync::Mutex<std::sync::Weak<Vec<u8>>>,
    /// Its HTTP validators, made by the server on first use and kept for the bundle's
    /// life as current: every consumer's conditional check compares and sends these.
    pub validators: std::sync::OnceLock<Validators>,
}

/// A file's `ETag` and `Last-Modified`, as the bytes of their header values.
#[derive(Debug, Clone)]
pub struct Validators {
    pub etag: bytes::Bytes,
    pub last_modified: bytes::Bytes,
}

/// Central's record of one supervisor (see `server/projects.rs`), kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    /// The sequence the supervisor holds, as far as central knows (a push it accepted,
    /// or a 409 for a sequence it already had).
    pub sequence: Option<Sequence>,
    /// When that bundle was made (for the age of the oldest bundle in the fleet).
    pub created: Option<Timestamp>,
    pub last_attempt: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    /// `unreachable`, `tls`, `auth`, `rejected`, `timeout` or `other`.
    pub last_error_kind: Option<String>,
    /// The bundle a push delivered (201): what the next push may send only the changed
    /// segments against. Absent in records of earlier versions.
    #[serde(default)]
    pub sha256: Option<Sha256>,
    /// How the last push went: by segments (bytes sent) or whole (and why).
    #[serde(default)]
    pub last_transfer: Option<String>,
}

/// One entry of the watch channel's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub sequence: Sequence,
    pub sha256: Sha256,
    pub size: u64,
}

/// A held vendor archive (opaque, unsigned; see `archive`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub name: String,
    pub sha256: Sha256,
    pub size: u64,
    pub entries: u64,
    pub stored_at: Timestamp,
    pub source: String,
}

/// Settings of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub retention: usize,
    pub memory_cache_bytes: u64,
    pub sled_cache_bytes: u64,
}

pub struct Store {
    settings: StoreSettings,
    /// Held (with an exclusive lock) for as long as the store is open, so a second
    /// process on the same directory is refused instead of "repairing" a live store.
    _lock: fs::File,
    /// One JSON record per vendor archive, beside the blobs: the archives' names survive
    /// a rebuild of the metadata.
    archive_records: PathBuf,
    blobs: PathBuf,
    incoming: PathBuf,
    db: sled::Db,
    bundles: sled::Tree,
    meta: sled::Tree,
    events: sled::Tree,
    archives: sled::Tree,
    /// Central's record of each supervisor (`SupervisorState`), by name.
    supervisors: sled::Tree,
    current: watch::Sender<Option<Arc<Current>>>,
    commit_lock: tokio::sync::Mutex<()>,
    /// Segment indexes of held bundles (`<sha256>`, or `<sha256>.none` when the bundle has
    /// none), derived from the files on first use.
    indexes: PathBuf,
    index_lock: std::sync::Mutex<()>,
}

const CURRENT_KEY: &[u8] = b"current";
/// Events kept for `Last-Event-ID` catch-up.
const EVENTS_KEPT: usize = 1000;

impl Store {
    /// Opens (or makes) the store under `settings.dir`, checks it, and reports what it
    /// repaired. Blocking: call from a blocking context.
    pub fn open(
        settings: StoreSettings,
        trust: &TrustStore,
        limits: &Limits,
    ) -> Result<(Self, Vec<String>), StoreError> {
        let dir = &settings.dir;
        let blobs = dir.join("blobs");
        let incoming = dir.join("incoming");
        let archive_records = dir.join("archives");
        let indexes = dir.join("indexes");
        for d in [dir, &blobs, &incoming, &archive_records, &indexes] {
            fs::create_dir_all(d).map_err(|source| io_err(d, source))?;
        }
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse { dir: dir.clone() });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }
        let mut notes = Vec::new();
        // Uploads and downloads cut short by a crash are never resumed from here.
        for entry in fs::read_dir(&incoming).map_err(|e| io_err(&incoming, e))? {
            let path = entry.map_err(|e| io_err(&incoming, e))?.path();
            let _ = fs::remove_file(&path);
        }

        let meta_dir = dir.join("meta");
        let sled_config = |path: &Path| {
            sled::Config::new()
                .path(path)
                .cache_capacity(settings.sled_cache_bytes)
                .mode(sled::Mode::LowSpace)
        };
        let (db, rebuilt) = match sled_config(&meta_dir).open() {
            Ok(db) => (db, false),
            Err(e) => {
                let aside = dir.join(format!("meta.broken-{}", Timestamp::now().unix()));
                fs::rename(&meta_dir, &aside).map_err(|source| io_err(&meta_dir, source))?;
                notes.push(format!(
                    "metadata database could not be opened ({e}); moved to {} and rebuilt from the bundle files",
                    aside.display()
                ));
                (sled_config(&meta_dir).open()?, true)
            }
        };
        let store = Self {
            _lock: lock,
            archive_records,
            bundles: db.open_tree("bundles")?,
            meta: db.open_tree("meta")?,
            events: db.open_tree("events")?,
            archives: db.open_tree("archives")?,
            supervisors: db.open_tree("supervisors")?,
            db,
            blobs,
            incoming,
            settings,
            current: watch::channel(None).0,
            commit_lock: tokio::sync::Mutex::new(()),
            indexes,
            index_lock: std::sync::Mutex::new(()),
        };
        if rebuilt {
            store.rebuild(trust, limits, &mut notes)?;
        }
        // A key removed from the trust list demotes what it signed (key rotation and
        // revocation): before anything is served.
        let demoted = store.demote_blocking(&|r: &BundleRecord| untrusted(trust, r))?;
        if !demoted.is_empty() {
            store.audit(&serde_json::json!({
                "at": Timestamp::now(),
                "action": "demote-untrusted",
                "when": "start",
                "demoted": demoted,
            }))?;
        }
        notes.extend(demoted);
        store.check(&mut notes)?;
        store.db.flush()?;
        Ok((store, notes))
    }

    /// A temp file for an incoming bundle or archive, on the same filesystem as the blobs
    /// so the commit is a rename. Created 0666 less the umask (tempfile's default is 0600):
    /// a bundle is not a secret, and an operator's tools (a backup, a web server serving a
    /// copy) read it as any other file the umask allows.
    pub fn incoming_file(&self) -> io::Result<tempfile::NamedTempFile> {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .prefix("bundle-")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&self.incoming)
    }

    /// Makes a verified bundle current (see the module docs for the order of steps).
    /// Commits run one at a time; a bundle not newer than the current one is refused.
    pub async fn commit(
        self: &Arc<Self>,
        verified: VerifiedBundle,
        file: tempfile::TempPath,
        source: &str,
        now: Timestamp,
    ) -> Result<Arc<Current>, StoreError> {
        let _one_at_a_time = self.commit_lock.lock().await;
        if let Some(current) = self.current()
            && verified.manifest().sequence <= current.record.sequence
        {
            return Err(StoreError::NotNewer {
                sequence: verified.manifest().sequence,
                held: current.record.sequence,
            });
        }
        let record = BundleRecord::new(&verified, source, now);
        let this = Arc::clone(self);
        let pruned = tokio::task::spawn_blocking(move || this.write_commit(record, file))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        // The durable point: nothing is announced before it.
        self.db.flush_async().await?;
        for sha in pruned {
            if !self.referenced(&sha)? {
                let _ = fs::remove_file(self.blob_path(&sha));
                self.forget_index(&sha);
            }
        }
        let this = Arc::clone(self);
        let current = tokio::task::spawn_blocking(move || this.load_current())
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??
            .ok_or_else(|| StoreError::Corrupt("committed bundle vanished".into()))?;
        self.current.send_replace(Some(Arc::clone(&current)));
        Ok(current)
    }

    /// Makes `file` the held archive `name`, replacing the previous one. Integrity was
    /// checked by the caller (`archive::check`).
    pub async fn commit_archive(
        self: &Arc<Self>,
        name: &str,
        info: &crate::archive::ArchiveInfo,
        file: tempfile::TempPath,
        source: &str,
        now: Timestamp,
    ) -> Result<ArchiveRecord, StoreError> {
        let _one_at_a_time = self.commit_lock.lock().await;
        let record = ArchiveRecord {
            name: name.to_owned(),
            sha256: info.sha256,
            size: info.size,
            entries: info.entries,
            stored_at: now,
            source: source.to_owned(),
        };
        let this = Arc::clone(self);
        let stored = record.clone();
        let old =
            tokio::task::spawn_blocking(move || -> Result<Option<ArchiveRecord>, StoreError> {
                let target = this.blob_path(&stored.sha256);
                file.persist(&target)
                    .map_err(|e| io_err(&target, e.error))?;
                sync_dir(&this.blobs).map_err(|e| io_err(&this.blobs, e))?;
                let sidecar = this.archive_records.join(format!("{}.json", stored.name));
                crate::bundle::durable::write(
                    &sidecar,
                    &encode(&stored)?,
                    crate::bundle::durable::Access::Exactly(0o644),
                )
                .map_err(|e| io_err(&sidecar, e))?;
                let old = this
                    .archives
                    .insert(stored.name.as_bytes(), encode(&stored)?)?
                    .map(|v| decode::<ArchiveRecord>(&v))
                    .transpose()?;
                Ok(old)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        self.db.flush_async().await?;
        if let Some(old) = old
            && old.sha256 != record.sha256
            && !self.referenced(&old.sha256)?
        {
            let _ = fs::remove_file(self.blob_path(&old.sha256));
        }
        Ok(record)
    }

    /// A held archive by name, with the path of its file.
    pub fn archive(&self, name: &str) -> Result<Option<(ArchiveRecord, PathBuf)>, StoreError> {
        Ok(self
            .archives
            .get(name.as_bytes())?
            .map(|v| decode::<ArchiveRecord>(&v))
            .transpose()?
            .map(|r| {
                let path = self.blob_path(&r.sha256);
                (r, path)
            }))
    }

    /// What central last learned of supervisor `name`.
    pub fn supervisor(&self, name: &str) -> Result<Option<SupervisorState>, StoreError> {
        self.supervisors
            .get(name.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Records what central learned of supervisor `name`. Not flushed at once: losing
    /// the last few records in a crash costs at most a push that a 409 then answers.
    pub fn set_supervisor(&self, name: &str, state: &SupervisorState) -> Result<(), StoreError> {
        self.supervisors.insert(name.as_bytes(), encode(state)?)?;
        Ok(())
    }

    pub fn archives(&self) -> Result<Vec<ArchiveRecord>, StoreError> {
        self.archives.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Whether a bundle or an archive still uses this file.
    fn referenced(&self, sha256: &Sha256) -> Result<bool, StoreError> {
        Ok(self.record(sha256)?.is_some() || self.archives()?.iter().any(|a| a.sha256 == *sha256))
    }

    pub fn current(&self) -> Option<Arc<Current>> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new current bundle.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Current>>> {
        self.current.subscribe()
    }

    /// A held bundle by digest, with the path of its file.
    pub fn held(&self, sha256: &Sha256) -> Result<Option<(BundleRecord, PathBuf)>, StoreError> {
        Ok(self.record(sha256)?.map(|r| (r, self.blob_path(sha256))))
    }

    /// Every held bundle, newest first.
    pub fn held_all(&self) -> Result<Vec<BundleRecord>, StoreError> {
        let mut all = self
            .bundles
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect::<Result<Vec<BundleRecord>, StoreError>>()?;
        all.sort_by_key(|r| std::cmp::Reverse(r.sequence));
        Ok(all)
    }

    /// Forgets the held bundles signed by a key `trust` no longer holds (SIGHUP after a
    /// key was removed); see [`Store::demote`].
    pub async fn demote_untrusted(
        self: &Arc<Self>,
        trust: &TrustStore,
    ) -> Result<Vec<String>, StoreError> {
        let trust = trust.clone();
        let demoted = self.demote(move |r| untrusted(&trust, r)).await?;
        if !demoted.is_empty() {
            self.audit(&serde_json::json!({
                "at": Timestamp::now(),
                "action": "demote-untrusted",
                "when": "reload",
                "demoted": demoted,
            }))?;
        }
        Ok(demoted)
    }

    /// An admin's reset of the held sequence: forgets every held bundle above `to`, so a
    /// bundle of a lower sequence can be current again (see [`Store::demote`]).
    pub async fn reset_sequence(self: &Arc<Self>, to: u64) -> Result<Vec<String>, StoreError> {
        self.demote(move |r| {
            (r.sequence.0 > to).then(|| format!("its sequence is above the reset to {to}"))
        })
        .await
    }

    /// Forgets each held bundle `refuse` gives a reason for: its record and watch-channel
    /// event go, its file moves to `quarantine/` (evidence, never served), and the newest
    /// remaining intact bundle becomes current (none if none is left). Runs under the
    /// commit lock; returns one line per bundle demoted.
    pub async fn demote(
        self: &Arc<Self>,
        refuse: impl Fn(&BundleRecord) -> Option<String> + Send + 'static,
    ) -> Result<Vec<String>, StoreError> {
        let _one_at_a_time = self.commit_lock.lock().await;
        let this = Arc::clone(self);
        let notes = tokio::task::spawn_blocking(move || this.demote_blocking(&refuse))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        if !notes.is_empty() {
            self.db.flush_async().await?;
            let this = Arc::clone(self);
            let current = tokio::task::spawn_blocking(move || this.load_current())
                .await
                .map_err(|e| StoreError::Task(e.to_string()))??;
            self.current.send_replace(current);
        }
        Ok(notes)
    }

    fn demote_blocking(
        &self,
        refuse: &dyn Fn(&BundleRecord) -> Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        let mut notes = Vec::new();
        let records = self.held_all()?;
        let (demoted, kept): (Vec<_>, Vec<_>) = records
            .into_iter()
            .map(|r| (refuse(&r), r))
            .partition(|(why, _)| why.is_some());
        if demoted.is_empty() {
            return Ok(notes);
        }
        let quarantine = self.settings.dir.join("quarantine");
        fs::create_dir_all(&quarantine).map_err(|e| io_err(&quarantine, e))?;
        for (why, r) in &demoted {
            let from = self.blob_path(&r.sha256);
            let to = quarantine.join(r.sha256.to_hex());
            if let Err(e) = fs::rename(&from, &to)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(io_err(&from, e));
            }
            notes.push(format!(
                "bundle sequence {} ({}) from {} signed by key {} demoted: {}; its file is in {}",
                r.sequence,
                r.sha256,
                r.origin,
                r.key_id,
                why.as_deref().unwrap_or(""),
                to.display()
            ));
        }
        let current = self
            .meta
            .get(CURRENT_KEY)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<Sha256>().ok());
        let replacement = kept
            .iter()
            .map(|(_, r)| r)
            .find(|r| self.file_digest_is(&r.sha256));
        let current_demoted = current.is_some_and(|c| demoted.iter().any(|(_, r)| r.sha256 == c));
        (&self.bundles, &self.meta, &self.events)
            .transaction(|(bundles, meta, events)| {
                for (_, r) in &demoted {
                    bundles.remove(r.sha256.to_hex().as_bytes())?;
                    events.remove(&r.sequence.0.to_be_bytes())?;
                }
                if current_demoted {
                    match replacement {
                        Some(r) => {
                            meta.insert(CURRENT_KEY, r.sha256.to_hex().as_bytes())?;
                        }
                        None => {
                            meta.remove(CURRENT_KEY)?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| {
                StoreError::Corrupt(format!("demote transaction: {e:?}"))
            })?;
        sync_dir(&quarantine).map_err(|e| io_err(&quarantine, e))?;
        if current_demoted {
            notes.push(match replacement {
                Some(r) => format!("sequence {} ({}) is current now", r.sequence, r.sha256),
                None => "no bundle is current now: none held is trusted".to_owned(),
            });
        }
        Ok(notes)
    }

    /// Appends an audit record (one JSON line) to `audit.jsonl` beside the store, fsynced:
    /// what an admin did to the held bundles outlives the log.
    pub fn audit(&self, record: &serde_json::Value) -> Result<(), StoreError> {
        use std::io::Write;
        let path = self.settings.dir.join("audit.jsonl");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut line =
            serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        file.write_all(&line).map_err(|e| io_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))
    }

    /// Events with a sequence above `after`, oldest first.
    pub fn events_after(&self, after: u64) -> Result<Vec<Event>, StoreError> {
        let start = after.saturating_add(1).to_be_bytes();
        self.events
            .range(start..)
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// The segment index of a held bundle (`relay/FORMAT.md`, "Segments and deltas"),
    /// encoded: read from the cache, or derived from the bundle file (seconds for a large
    /// one) and cached. `None` when the bundle is not held, or has no segments to offer
    /// (built by an older builder). Blocking.
    pub fn segment_index(&self, sha256: &Sha256) -> Result<Option<Vec<u8>>, StoreError> {
        self.segment_index_until(sha256, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`segment_index`](Self::segment_index), given up (an error, nothing cached) as
    /// soon as `cancel` is set.
    pub fn segment_index_until(
        &self,
        sha256: &Sha256,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let cached = self.indexes.join(sha256.to_hex());
        let none = self.indexes.join(format!("{}.none", sha256.to_hex()));
        let read_cached = || -> Result<Option<Option<Vec<u8>>>, StoreError> {
            if none.exists() {
                return Ok(Some(None));
            }
            match fs::read(&cached) {
                Ok(bytes) => Ok(Some(Some(bytes))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(&cached, e)),
            }
        };
        if let Some(known) = read_cached()? {
            return Ok(known);
        }
        // One derivation at a time: a second asker waits for the first's result.
        let _one = self
            .index_lock
            .lock()
            .map_err(|_| StoreError::Task("index lock poisoned".into()))?;
        if let Some(known) = read_cached()? {
            return Ok(known);
        }
        let Some((_, path)) = self.held(sha256)? else {
            return Ok(None);
        };
        let mut file = fs::File::open(&path).map_err(|e| io_err(&path, e))?;
        let derived = bundle::index::derive_until(
            &mut io::BufReader::with_capacity(1 << 16, &mut file),
            cancel,
        )
        .map_err(|e| io_err(&path, io::Error::other(e)))?;
        let (target, bytes) = match &derived {
            Some(index) if &index.bundle_sha256 == sha256 => (&cached, index.encode()),
            _ => (&none, Vec::new()),
        };
        self.cache(target, &bytes)?;
        Ok((!bytes.is_empty()).then_some(bytes))
    }

    /// Caches an index already checked against its bundle's file (one a source sent with
    /// the bundle), so it is not derived again.
    pub fn remember_segment_index(
        &self,
        index: &bundle::index::SegmentIndex,
    ) -> Result<(), StoreError> {
        self.cache(
            &self.indexes.join(index.bundle_sha256.to_hex()),
            &index.encode(),
        )
    }

    fn forget_index(&self, sha256: &Sha256) {
        // Its index, its no-index marker, and the deltas to and from it.
        let hex = sha256.to_hex();
        if let Ok(entries) = fs::read_dir(&self.indexes) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains(&hex) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The delta that builds held bundle `to` from held bundle `from` (`bundle::delta`),
    /// gzip-compressed: made from the two files on first use (inflating `from` once) and
    /// cached. `None` when either is not held or has no segments. Blocking.
    pub fn delta(&self, to: &Sha256, from: &Sha256) -> Result<Option<Vec<u8>>, StoreError> {
        let cached = self
            .indexes
            .join(format!("{}.from-{}.delta", to.to_hex(), from.to_hex()));
        match fs::read(&cached) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&cached, e)),
        }
        let index = |sha: &Sha256| -> Result<Option<bundle::index::SegmentIndex>, StoreError> {
            Ok(self
                .segment_index(sha)?
                .and_then(|b| bundle::index::SegmentIndex::decode(&b).ok()))
        };
        let (Some(new), Some(old)) = (index(to)?, index(from)?) else {
            return Ok(None);
        };
        let (Some((_, new_path)), Some((_, old_path))) = (self.held(to)?, self.held(from)?) else {
            return Ok(None);
        };
        let _one = self
            .index_lock
            .lock()
            .map_err(|_| StoreError::Task("index lock poisoned".into()))?;
        let open = |p: &Path| {
            fs::File::open(p)
                .map(|f| io::BufReader::with_capacity(1 << 16, f))
                .map_err(|e| io_err(p, e))
        };
        let mut bytes = Vec::new();
        bundle::delta::make(
            &mut open(&old_path)?,
            &old,
            &mut open(&new_path)?,
            &new,
            &mut bytes,
        )
        .map_err(|e| io_err(&new_path, io::Error::other(e)))?;
        self.cache(&cached, &bytes)?;
        Ok(Some(bytes))
    }

    /// Writes a file of `indexes/` whole or not at all (a temp file renamed over it).
    fn cache(&self, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.indexes).map_err(|e| io_err(&self.indexes, e))?;
        io::Write::write_all(&mut tmp, bytes).map_err(|e| io_err(target, e))?;
        tmp.persist(target).map_err(|e| io_err(target, e.error))?;
        Ok(())
    }

    fn blob_path(&self, sha256: &Sha256) -> PathBuf {
        self.blobs.join(sha256.to_hex())
    }

    fn record(&self, sha256: &Sha256) -> Result<Option<BundleRecord>, StoreError> {
        self.bundles
            .get(sha256.to_hex())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Blocking part of a commit: file into place, then the metadata transaction.
    /// Returns the digests pruned by retention (their files go after the flush).
    fn write_commit(
        &self,
        record: BundleRecord,
        file: tempfile::TempPath,
    ) -> Result<Vec<Sha256>, StoreError> {
        let target = self.blob_path(&record.sha256);
        file.persist(&target)
            .map_err(|e| io_err(&target, e.error))?;
        sync_dir(&self.blobs).map_err(|e| io_err(&self.blobs, e))?;

        let mut held = self.held_all()?;
        held.retain(|r| r.sha256 != record.sha256);
        held.push(record.clone());
        held.sort_by_key(|r| std::cmp::Reverse(r.sequence));
        let pruned: Vec<Sha256> = held
            .iter()
            .skip(self.settings.retention)
            .map(|r| r.sha256)
            .collect();
        let event = Event {
            sequence: record.sequence,
            sha256: record.sha256,
            size: record.size,
        };
        let old_events: Vec<sled::IVec> = {
            let count = self.events.len();
            self.events
                .iter()
                .keys()
                .take((count + 1).saturating_sub(EVENTS_KEPT))
                .collect::<Result<_, _>>()?
        };
        let record_bytes = encode(&record)?;
        let event_bytes = encode(&event)?;
        (&self.bundles, &self.meta, &self.events)
            .transaction(|(bundles, meta, events)| {
                bundles.insert(record.sha256.to_hex().as_bytes(), record_bytes.as_slice())?;
                meta.insert(CURRENT_KEY, record.sha256.to_hex().as_bytes())?;
                events.insert(&record.sequence.0.to_be_bytes(), event_bytes.as_slice())?;
                for sha in &pruned {
                    bundles.remove(sha.to_hex().as_bytes())?;
                }
                for key in &old_events {
                    events.remove(key)?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| {
                StoreError::Corrupt(format!("commit transaction: {e:?}"))
            })?;
        Ok(pruned)
    }

    /// Reads the current record and, when small enough, its file into memory.
    fn load_current(&self) -> Result<Option<Arc<Current>>, StoreError> {
        let Some(sha) = self.meta.get(CURRENT_KEY)? else {
            return Ok(None);
        };
        let sha: Sha256 = std::str::from_utf8(&sha)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("current pointer is not a digest".into()))?;
        let Some(record) = self.record(&sha)? else {
            return Ok(None);
        };
        let path = self.blob_path(&sha);
        let in_memory = record.size <= self.settings.memory_cache_bytes;
        Ok(Some(Arc::new(Current {
            record,
            path,
            in_memory,
            loaded: tokio::sync::Mutex::new(std::sync::Weak::new()),
            validators: std::sync::OnceLock::new(),
        })))
    }

    /// Start-up check: every record has its file; the current file is intact, else the
    /// newest intact bundle becomes current; files nobody references are removed.
    fn check(&self, notes: &mut Vec<String>) -> Result<(), StoreError> {
        let mut records = self.held_all()?;
        records.retain(|r| {
            let ok = fs::metadata(self.blob_path(&r.sha256)).is_ok_and(|m| m.len() == r.size);
            if !ok {
                notes.push(format!(
                    "bundle {} (sequence {}) lost its file; forgotten",
                    r.sha256, r.sequence
                ));
                let _ = self.bundles.remove(r.sha256.to_hex());
            }
            ok
        });
        let current = self
            .meta
            .get(CURRENT_KEY)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<Sha256>().ok());
        let current_ok = current.is_some_and(|sha| {
            records.iter().any(|r| r.sha256 == sha) && self.file_digest_is(&sha)
        });
        if !current_ok {
            let replacement = records.iter().find(|r| self.file_digest_is(&r.sha256));
            match (current, replacement) {
                (_, Some(r)) => {
                    if current.is_some() {
                        notes.push(format!(
                            "current bundle was missing or damaged; sequence {} ({}) is current now",
                            r.sequence, r.sha256
                        ));
                    }
                    self.meta
                        .insert(CURRENT_KEY, r.sha256.to_hex().as_bytes())?;
                }
                (Some(_), None) => {
                    notes.push(
                        "current bundle was missing or damaged and no intact bundle is held".into(),
                    );
                    self.meta.remove(CURRENT_KEY)?;
                }
                (None, None) => {}
            }
        }
        let mut known: HashSet<String> = records.iter().map(|r| r.sha256.to_hex()).collect();
        for archive in self.archives()? {
            if fs::metadata(self.blob_path(&archive.sha256)).is_ok_and(|m| m.len() == archive.size)
            {
                known.insert(archive.sha256.to_hex());
            } else {
                notes.push(format!("archive {} lost its file; forgotten", archive.name));
                self.archives.remove(archive.name.as_bytes())?;
            }
        }
        for entry in fs::read_dir(&self.blobs).map_err(|e| io_err(&self.blobs, e))? {
            let entry = entry.map_err(|e| io_err(&self.blobs, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                let _ = fs::remove_file(entry.path());
                notes.push(format!("removed unreferenced file blobs/{name}"));
            }
        }
        for entry in fs::read_dir(&self.indexes).map_err(|e| io_err(&self.indexes, e))? {
            let entry = entry.map_err(|e| io_err(&self.indexes, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<sha>`, `<sha>.none`, `<sha>.from-<sha>.delta`: every digest named must be held.
            let held = |hex: &str| records.iter().any(|r| r.sha256.to_hex() == hex);
            let named: Vec<&str> = name.split(['.', '-']).filter(|p| p.len() == 64).collect();
            if named.is_empty() || !named.iter().all(|h| held(h)) {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.current.send_replace(self.load_current()?);
        Ok(())
    }

    /// Re-creates the metadata from the bundle files: each is verified again (expiry
    /// aside: an expired bundle is still what was held).
    fn rebuild(
        &self,
        trust: &TrustStore,
        limits: &Limits,
        notes: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let mut archive_files = HashSet::new();
        for entry in
            fs::read_dir(&self.archive_records).map_err(|e| io_err(&self.archive_records, e))?
        {
            let path = entry.map_err(|e| io_err(&self.archive_records, e))?.path();
            let record = fs::read(&path)
                .ok()
                .and_then(|bytes| decode::<ArchiveRecord>(&bytes).ok());
            match record {
                Some(r)
                    if fs::metadata(self.blob_path(&r.sha256)).is_ok_and(|m| m.len() == r.size) =>
                {
                    self.archives.insert(r.name.as_bytes(), encode(&r)?)?;
                    archive_files.insert(r.sha256.to_hex());
                }
                _ => notes.push(format!(
                    "{} names no intact archive; ignored",
                    path.display()
                )),
            }
        }
        let mut newest: Option<BundleRecord> = None;
        for entry in fs::read_dir(&self.blobs).map_err(|e| io_err(&self.blobs, e))? {
            let path = entry.map_err(|e| io_err(&self.blobs, e))?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| archive_files.contains(n))
            {
                continue;
            }
            let verified = fs::File::open(&path)
                .map_err(|e| io_err(&path, e))
                .and_then(|f| {
                    bundle::verify_with_sink(
                        io::BufReader::new(f),
                        trust,
                        limits,
                        now,
                        None,
                        ExpiryCheck::DangerouslySkip,
                        &mut |_, _| Ok(()),
                    )
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
                });
            let name_matches = |v: &VerifiedBundle| {
                path.file_name().and_then(|n| n.to_str()) == Some(&v.sha256().to_hex())
            };
            match verified {
                Ok(v) if name_matches(&v) => {
                    let record = BundleRecord::new(&v, "recovered from the bundle files", now);
                    self.bundles
                        .insert(record.sha256.to_hex(), encode(&record)?)?;
                    if newest.as_ref().is_none_or(|n| record.sequence > n.sequence) {
                        newest = Some(record);
                    }
                }
                _ => {
                    notes.push(format!("{} does not verify; removed", path.display()));
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if let Some(r) = newest {
            self.meta
                .insert(CURRENT_KEY, r.sha256.to_hex().as_bytes())?;
        }
        Ok(())
    }

    fn file_digest_is(&self, sha256: &Sha256) -> bool {
        let path = self.blob_path(sha256);
        let Ok(mut file) = fs::File::open(&path) else {
            return false;
        };
        let mut hasher = crate::bundle::HashingSink::default();
        io::copy(&mut file, &mut hasher).is_ok() && hasher.finish() == *sha256
    }
}

/// Why a held bundle is no longer trusted, if it is not.
fn untrusted(trust: &TrustStore, r: &BundleRecord) -> Option<String> {
    trust
        .get(&r.key_id)
        .is_none()
        .then(|| format!("key {} is no longer in the trust list", r.key_id))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}
