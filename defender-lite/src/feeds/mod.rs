//! The feeds of an applied bundle, and the indexes built from them once per bundle.
//!
//! When `sync` applies a bundle it calls [`build_indexes`] on the unpacked directory
//! before making it current, so every bundle the agent uses has, next to its verified
//! `feeds/`:
//!
//! ```text
//! index/osv.idx        package key -> byte ranges of the records naming it (osv_index)
//! index/domains.fst    known-bad names and suffixes, a finite-state map (netsets)
//! index/ips.bin        known-bad ranges, merged, sorted (netsets)
//! index/apps.json      the app documents, parsed and checked, as one JSON array
//! index/summary.json   counts, the index format, and the size and SHA-256 of the
//!                      three mapped files
//! ```
//!
//! Building streams the feed files with bounded memory (`external_sort`), whatever
//! their size; the readers check a file's digest, map it and search it in place
//! (`mapped`), so opening a real-size feed keeps almost nothing in memory. [`Feeds`]
//! opens them for the commands: the bundle `sync` applied (the default), or any
//! directory given with `--feeds` (an applied bundle, or feed files such as
//! `relay/samples/feeds`, indexed on use into a private temp directory the same way).

pub mod external_sort;
mod mapped;
pub mod netsets;
pub mod osv_index;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use relay::bundle::{AppSpec, FeedKind, Manifest};
use serde::{Deserialize, Serialize};

pub use mapped::FileDigest;
pub use netsets::{DomainSet, IpSet};
pub use osv_index::{OsvIndexFile, OsvIndexStats};

use crate::osv::{LoadStats, VulnIndex};

#[derive(Debug, thiserror::Error)]
pub enum FeedsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("no bundle applied yet in {0}: run `defender-lite sync` first, or give --feeds DIR")]
    NothingApplied(PathBuf),
}

impl FeedsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        FeedsError::Io {
            path: path.to_owned(),
            source,
        }
    }
    pub(crate) fn bad(path: &Path, reason: &str) -> Self {
        FeedsError::Bad {
            path: path.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// The layout of `index/`: an index of another format is rebuilt, not misread.
pub const INDEX_FORMAT: u32 = 2;

/// `index/summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSummary {
    /// [`INDEX_FORMAT`] of the build that wrote it (0: before formats were numbered).
    #[serde(default)]
    pub format: u32,
    pub osv: OsvIndexStats,
    /// Entries in the domain index (after merging those another covers).
    pub domains: usize,
    /// Disjoint ranges after merging.
    pub ip_ranges: usize,
    pub apps: usize,
    /// Feed lines or documents that could not be read (the bundle validator refuses
    /// them, so none in a verified bundle), with where the first is.
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
    /// Size and SHA-256 of each mapped index file (`osv.idx`, `domains.fst`, `ips.bin`),
    /// checked before it is mapped.
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
}

/// Feed lines or documents an index left out, and where the first one is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unreadable {
    pub count: usize,
    pub first: Option<String>,
}

impl Unreadable {
    /// Line `line` of `rel` (its text, `None` when it is not UTF-8).
    pub(crate) fn note(&mut self, rel: &Path, line: usize, text: Option<&str>) {
        self.count += 1;
        self.first.get_or_insert_with(|| match text {
            Some(text) => format!("{}:{line}: {:?}", rel.display(), text.trim()),
            None => format!("{}:{line}: not UTF-8", rel.display()),
        });
    }

    fn add(&mut self, other: Unreadable) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// Calls `f` with each line of a feed file: its number (from 1) and its text without the
/// line end (`None` when it is not UTF-8). Streams: one line in memory at a time.
pub(crate) fn for_each_line<E: From<FeedsError>>(
    path: &Path,
    mut f: impl FnMut(usize, Option<&str>) -> Result<(), E>,
) -> Result<(), E> {
    let file = File::open(path).map_err(|e| FeedsError::io(path, e))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| FeedsError::io(path, e))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        f(n, std::str::from_utf8(text).ok())?;
    }
}

const INDEX_DIR: &str = "index";
const SUMMARY_FILE: &str = "summary.json";
const APPS_FILE: &str = "apps.json";

/// The feed files of each kind in a bundle directory, from its manifest (paths relative
/// to the directory).
fn manifest_files(bundle: &Path) -> Result<Vec<(FeedKind, PathBuf)>, FeedsError> {
    let path = bundle.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|e| FeedsError::io(&path, e))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| FeedsError::bad(&path, &e.to_string()))?;
    Ok(manifest
        .files
        .into_iter()
        .map(|f| (f.kind, PathBuf::from(f.path)))
        .collect())
}

/// The feed files of each kind in an unpacked `feeds/` directory (`osv/`, `domains/`,
/// `ips/`, `apps/`; `README*` and dot files skipped, as the bundle builder does).
fn directory_files(feeds: &Path) -> Result<Vec<(FeedKind, PathBuf)>, FeedsError> {
    let mut out = Vec::new();
    for kind in FeedKind::ALL {
        let dir = feeds.join(kind.as_str());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FeedsError::io(&dir, e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FeedsError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with("README") {
                continue;
            }
            if entry
                .file_type()
                .map_err(|e| FeedsError::io(&dir, e))?
                .is_file()
            {
                files.push((kind, PathBuf::from(kind.as_str()).join(name)));
            }
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

fn read_text(base: &Path, rel: &Path) -> Result<String, FeedsError> {
    let path = base.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| FeedsError::io(&path, e))?;
    String::from_utf8(bytes).map_err(|_| FeedsError::bad(&path, "not UTF-8"))
}

/// The files of one kind.
fn of_kind(files: &[(FeedKind, PathBuf)], kind: FeedKind) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, p)| p.clone())
        .collect()
}

/// The app documents, checked and sorted by id; the others are noted as unreadable.
fn read_apps(
    base: &Path,
    files: &[(FeedKind, PathBuf)],
) -> Result<(Vec<AppSpec>, Unreadable), FeedsError> {
    let mut apps = Vec::new();
    let mut unreadable = Unreadable::default();
    for rel in of_kind(files, FeedKind::Apps) {
        let why = match serde_json::from_str::<AppSpec>(&read_text(base, &rel)?) {
            Ok(app) => match app.check() {
                Ok(()) => {
                    apps.push(app);
                    continue;
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        unreadable.count += 1;
        unreadable
            .first
            .get_or_insert_with(|| format!("{}: {why}", rel.display()));
    }
    apps.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    Ok((apps, unreadable))
}

/// A scratch directory for sort runs inside `dir`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: &Path) -> Result<Scratch, FeedsError> {
        let path = dir.join(".sort");
        std::fs::create_dir_all(&path).map_err(|e| FeedsError::io(&path, e))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `index/` into an unpacked bundle directory (`bundle/manifest.json`,
/// `bundle/feeds/...`). Written to `index.tmp/` first and renamed, so an index directory
/// that exists is whole.
pub fn build_indexes(bundle: &Path) -> Result<IndexSummary, FeedsError> {
    let files = manifest_files(bundle)?;
    let tmp = bundle.join("index.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| FeedsError::io(&tmp, e))?;
    let summary = write_indexes(bundle, &files, &tmp)?;
    let dest = bundle.join(INDEX_DIR);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| FeedsError::io(&dest, e))?;
    Ok(summary)
}

/// Every index of `files` (relative to `base`) into `dir`. The OSV index is written on a
/// thread of its own while the others are written on this one: the two halves take
/// about as long, and each holds its own bounded sort budget.
fn write_indexes(
    base: &Path,
    files: &[(FeedKind, PathBuf)],
    dir: &Path,
) -> Result<IndexSummary, FeedsError> {
    let scratch = Scratch::new(dir)?;
    let (osv, domains, ips) = std::thread::scope(|s| {
        let osv = s.spawn(|| {
            osv_index::write(
                base,
                &of_kind(files, FeedKind::Osv),
                &dir.join(osv_index::OSV_FILE),
                &scratch.0,
            )
        });
        let domains = netsets::write_domain_index(
            base,
            &of_kind(files, FeedKind::Domains),
            &dir.join(netsets::DOMAINS_FILE),
            &scratch.0,
        );
        let ips = netsets::write_ip_index(
            base,
            &of_kind(files, FeedKind::Ips),
            &dir.join(netsets::IPS_FILE),
        );
        let osv = osv
            .join()
            .unwrap_or_else(|_| Err(FeedsError::bad(dir, "the OSV index writer panicked")));
        (osv, domains, ips)
    });
    let (osv, domains, ips) = (osv?, domains?, ips?);
    let (apps, mut unreadable) = read_apps(base, files)?;
    drop(scratch);
    unreadable.add(domains.unreadable);
    unreadable.add(ips.unreadable);
    let mut digests = BTreeMap::new();
    for name in [
        osv_index::OSV_FILE,
        netsets::DOMAINS_FILE,
        netsets::IPS_FILE,
    ] {
        let path = dir.join(name);
        let file = File::open(&path).map_err(|e| FeedsError::io(&path, e))?;
        let digest = FileDigest::of(&file).map_err(|e| FeedsError::io(&path, e))?;
        digests.insert(name.to_owned(), digest);
    }
    let summary = IndexSummary {
        format: INDEX_FORMAT,
        files: digests,
        unreadable: unreadable.count + osv.invalid as usize,
        first_unreadable: unreadable.first,
        osv,
        domains: domains.entries as usize,
        ip_ranges: ips.entries as usize,
        apps: apps.len(),
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| FeedsError::io(&path, e))
    };
    let apps = serde_json::to_vec(&apps).map_err(|e| FeedsError::bad(dir, &e.to_string()))?;
    write(APPS_FILE, &apps)?;
    let json =
        serde_json::to_vec_pretty(&summary).map_err(|e| FeedsError::bad(dir, &e.to_string()))?;
    write(SUMMARY_FILE, &json)?;
    Ok(summary)
}

/// The summary of the index in `bundle`, when it is of this build's format.
fn current_summary(bundle: &Path) -> Option<IndexSummary> {
    let bytes = std::fs::read(bundle.join(INDEX_DIR).join(SUMMARY_FILE)).ok()?;
    let summary: IndexSummary = serde_json::from_slice(&bytes).ok()?;
    (summary.format == INDEX_FORMAT).then_some(summary)
}

/// Whether `bundle` lacks an index, or has one an earlier build wrote in another format
/// (its summary says so). An index directory is whole (it is renamed into place).
fn needs_index(bundle: &Path) -> bool {
    let index = bundle.join(INDEX_DIR);
    if !index.is_dir() {
        return true;
    }
    index.join(SUMMARY_FILE).exists() && current_summary(bundle).is_none()
}

/// Where a command's feeds come from.
#[derive(Debug)]
pub struct Feeds {
    origin: Origin,
    /// For reports: which bundle, or which directory.
    pub description: String,
}

#[derive(Debug)]
enum Origin {
    /// An applied bundle with its index, and the digests its summary recorded (`None`:
    /// an index without a summary, as tests write them by hand).
    Indexed {
        bundle: PathBuf,
        digests: Option<BTreeMap<String, FileDigest>>,
    },
    /// Feed files (`base` holds `osv/`, `apps/`, ...), indexed on use into `scratch`,
    /// removed with it.
    Raw {
        base: PathBuf,
        files: Vec<(FeedKind, PathBuf)>,
        scratch: tempfile::TempDir,
    },
}

impl Feeds {
    /// The bundle `sync` applied into `data_dir`.
    pub fn applied(data_dir: &Path) -> Result<Feeds, FeedsError> {
        let state = crate::sync::State::load(data_dir)
            .map_err(|e| FeedsError::bad(data_dir, &e.to_string()))?;
        let current = state
            .current
            .ok_or_else(|| FeedsError::NothingApplied(data_dir.to_owned()))?;
        let bundle = data_dir.join(&current.dir);
        if needs_index(&bundle) {
            // Applied by a build that wrote no index, or one of another format: write
            // it now (new files, renamed into place; mappings of the old ones stay valid).
            build_indexes(&bundle)?;
        }
        Ok(Feeds {
            origin: Origin::indexed(bundle),
            description: format!(
                "bundle sequence {} from {}, created {}",
                current.sequence, current.origin, current.created
            ),
        })
    }

    /// `--feeds DIR`: an applied bundle's directory (it has `manifest.json` and an
    /// index), a bundle's `feeds/` directory, or a directory of feed kinds like
    /// `relay/samples/feeds`. Feed files are indexed on use, into a temp directory.
    pub fn open_dir(dir: &Path) -> Result<Feeds, FeedsError> {
        let description = format!("feeds in {}", dir.display());
        let manifest = dir.join("manifest.json").is_file();
        if manifest && !needs_index(dir) {
            return Ok(Feeds {
                origin: Origin::indexed(dir.to_owned()),
                description,
            });
        }
        let files = if manifest {
            manifest_files(dir)?
        } else {
            directory_files(dir)?
        };
        if files.is_empty() {
            return Err(FeedsError::bad(
                dir,
                "no feeds here: expected osv/, domains/, ips/ or apps/ (or a bundle directory)",
            ));
        }
        let scratch = tempfile::Builder::new()
            .prefix("defender-lite-feeds-")
            .tempdir()
            .map_err(|e| FeedsError::io(&std::env::temp_dir(), e))?;
        Ok(Feeds {
            origin: Origin::Raw {
                base: dir.to_owned(),
                files,
                scratch,
            },
            description,
        })
    }

    /// The OSV records that name any of `packages` (ecosystem, name), indexed.
    pub fn vulnerabilities<'p>(
        &self,
        packages: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(VulnIndex, LoadStats), FeedsError> {
        let (base, index, digest) = match &self.origin {
            Origin::Indexed { bundle, .. } => (
                bundle.as_path(),
                bundle.join(INDEX_DIR).join(osv_index::OSV_FILE),
                self.origin.digest(osv_index::OSV_FILE)?,
            ),
            Origin::Raw {
                base,
                files,
                scratch,
            } => {
                let index = scratch.path().join(osv_index::OSV_FILE);
                let sort = Scratch::new(scratch.path())?;
                osv_index::write(base, &of_kind(files, FeedKind::Osv), &index, &sort.0)?;
                (base.as_path(), index, None)
            }
        };
        OsvIndexFile::open(base, &index, digest.as_ref())?.load_for(packages)
    }

    pub fn domains(&self) -> Result<DomainSet, FeedsError> {
        let (path, digest) = match &self.origin {
            Origin::Indexed { bundle, .. } => (
                bundle.join(INDEX_DIR).join(netsets::DOMAINS_FILE),
                self.origin.digest(netsets::DOMAINS_FILE)?,
            ),
            Origin::Raw {
                base,
                files,
                scratch,
            } => {
                let path = scratch.path().join(netsets::DOMAINS_FILE);
                let sort = Scratch::new(scratch.path())?;
                let domain_files = of_kind(files, FeedKind::Domains);
                netsets::write_domain_index(base, &domain_files, &path, &sort.0)?;
                (path, None)
            }
        };
        DomainSet::open(&path, digest.as_ref())
    }

    pub fn ips(&self) -> Result<IpSet, FeedsError> {
        let (path, digest) = match &self.origin {
            Origin::Indexed { bundle, .. } => (
                bundle.join(INDEX_DIR).join(netsets::IPS_FILE),
                self.origin.digest(netsets::IPS_FILE)?,
            ),
            Origin::Raw {
                base,
                files,
                scratch,
            } => {
                let path = scratch.path().join(netsets::IPS_FILE);
                netsets::write_ip_index(base, &of_kind(files, FeedKind::Ips), &path)?;
                (path, None)
            }
        };
        IpSet::open(&path, digest.as_ref())
    }

    /// The app documents, checked.
    pub fn apps(&self) -> Result<Vec<AppSpec>, FeedsError> {
        match &self.origin {
            Origin::Indexed { bundle, .. } => {
                let path = bundle.join(INDEX_DIR).join(APPS_FILE);
                let bytes = std::fs::read(&path).map_err(|e| FeedsError::io(&path, e))?;
                serde_json::from_slice(&bytes).map_err(|e| FeedsError::bad(&path, &e.to_string()))
            }
            Origin::Raw { base, files, .. } => Ok(read_apps(base, files)?.0),
        }
    }

    /// Where an index file of an applied bundle is (for raw feed directories, the
    /// directory itself).
    pub fn index_path(&self, name: &str) -> PathBuf {
        match &self.origin {
            Origin::Indexed { bundle, .. } => bundle.join(INDEX_DIR).join(name),
            Origin::Raw { base, .. } => base.clone(),
        }
    }

    /// The index summary of an applied bundle (`None` for raw feed directories).
    pub fn summary(&self) -> Option<IndexSummary> {
        match &self.origin {
            Origin::Indexed { bundle, .. } => current_summary(bundle),
            Origin::Raw { .. } => None,
        }
    }
}

impl Origin {
    fn indexed(bundle: PathBuf) -> Origin {
        let digests = current_summary(&bundle).map(|s| s.files);
        Origin::Indexed { bundle, digests }
    }

    /// The digest an index file must match before it is mapped (`None`: an index without
    /// a summary, which records none).
    fn digest(&self, name: &str) -> Result<Option<FileDigest>, FeedsError> {
        match self {
            Origin::Indexed {
                digests: Some(digests),
                bundle,
            } => match digests.get(name) {
                Some(d) => Ok(Some(*d)),
                None => Err(FeedsError::bad(
                    &bundle.join(INDEX_DIR).join(SUMMARY_FILE),
                    &format!("no digest recorded for {name}"),
                )),
            },
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `relay/samples/feeds` copied into a temp dir, indexed there as an applied bundle's
    /// index is (`index/` beside the feed kinds).
    fn indexed_samples() -> (tempfile::TempDir, Feeds) {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
        let dir = tempfile::tempdir().unwrap();
        for (_, rel) in directory_files(&samples).unwrap() {
            std::fs::create_dir_all(dir.path().join(&rel).parent().unwrap()).unwrap();
            std::fs::copy(samples.join(&rel), dir.path().join(&rel)).unwrap();
        }
        let files = directory_files(dir.path()).unwrap();
        let index = dir.path().join(INDEX_DIR);
        std::fs::create_dir(&index).unwrap();
        let summary = write_indexes(dir.path(), &files, &index).unwrap();
        assert_eq!(summary.format, INDEX_FORMAT);
        assert_eq!(summary.files.len(), 3, "{summary:?}");
        assert!(!index.join(".sort").exists());
        let feeds = Feeds {
            origin: Origin::indexed(dir.path().to_owned()),
            description: String::new(),
        };
        (dir, feeds)
    }

    #[test]
    fn an_index_file_that_does_not_match_its_digest_is_refused() {
        let (dir, feeds) = indexed_samples();
        assert!(!feeds.domains().unwrap().is_empty());
        assert!(feeds.ips().is_ok());
        assert!(feeds.vulnerabilities([("Debian:12", "openssl")]).is_ok());

        // (Nothing maps the file now: changing a mapped file is what the agent never does.)
        let path = dir.path().join(INDEX_DIR).join(netsets::DOMAINS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = feeds.domains().unwrap_err().to_string();
        assert!(
            err.contains("damaged domain index: it does not match"),
            "{err}"
        );
        assert!(feeds.ips().is_ok(), "the other files are still good");
    }

    #[test]
    fn an_index_of_another_format_is_rebuilt_and_one_without_a_summary_is_used() {
        let (dir, _) = indexed_samples();
        assert!(!needs_index(dir.path()));
        let summary = dir.path().join(INDEX_DIR).join(SUMMARY_FILE);
        std::fs::write(&summary, r#"{"osv":{"records":1,"withdrawn":0,"duplicates":0,"invalid":0,"packages":1},"domains":1,"ip_ranges":1,"apps":0,"unreadable":0,"first_unreadable":null}"#).unwrap();
        assert!(needs_index(dir.path()), "format 1 (no format field)");
        std::fs::remove_file(&summary).unwrap();
        assert!(!needs_index(dir.path()), "an index written by hand");
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
        assert!(needs_index(dir.path()));
    }

    #[test]
    fn raw_feed_directories_are_indexed_into_a_temp_dir_on_use() {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
        let raw = Feeds::open_dir(&samples).unwrap();
        let (_dir, indexed) = indexed_samples();
        assert_eq!(raw.ips().unwrap(), indexed.ips().unwrap());
        assert_eq!(
            raw.domains().unwrap().len(),
            indexed.domains().unwrap().len()
        );
        let scratch = match &raw.origin {
            Origin::Raw { scratch, .. } => scratch.path().to_owned(),
            Origin::Indexed { .. } => panic!("not indexed"),
        };
        assert!(scratch.join(netsets::DOMAINS_FILE).is_file());
        drop(raw);
        assert!(!scratch.exists(), "removed with the feeds");
    }
}
