//! The feeds of an applied bundle, and the indexes built from them once per bundle.
//!
//! When `sync` applies a bundle it calls [`build_indexes`] on the unpacked directory
//! before making it current, so every bundle the agent uses has, next to its verified
//! `feeds/`:
//!
//! ```text
//! index/osv.idx        package key -> byte ranges of the records naming it (osv_index)
//! index/domains.txt    known-bad names, normalized, sorted (netsets::DomainSet)
//! index/ips.bin        known-bad ranges, merged, sorted (netsets::IpSet)
//! index/apps.json      the app documents, parsed and checked, as one JSON array
//! index/summary.json   counts, for status and reports
//! ```
//!
//! [`Feeds`] opens them for the commands: the bundle `sync` applied (the default), or
//! any directory given with `--feeds` (an applied bundle, or an unpacked `feeds/`
//! directory such as `relay/samples/feeds`, indexed in memory).

pub mod netsets;
pub mod osv_index;

use std::path::{Path, PathBuf};

use relay::bundle::{AppSpec, FeedKind, Manifest};
use serde::{Deserialize, Serialize};

pub use netsets::{DomainSet, IpSet};
pub use osv_index::{OsvIndexFile, OsvIndexStats};

use crate::osv::{LoadStats, VulnIndex, VulnIndexBuilder};

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

/// `index/summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSummary {
    pub osv: OsvIndexStats,
    pub domains: usize,
    /// Disjoint ranges after merging.
    pub ip_ranges: usize,
    pub apps: usize,
    /// Feed lines or documents that could not be read (the bundle validator refuses
    /// them, so none in a verified bundle), with where the first is.
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
}

const INDEX_DIR: &str = "index";

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

/// Everything but the OSV index, read from feed files.
struct Parsed {
    domains: DomainSet,
    ips: IpSet,
    apps: Vec<AppSpec>,
    unreadable: usize,
    first_unreadable: Option<String>,
}

fn parse_feeds(base: &Path, files: &[(FeedKind, PathBuf)]) -> Result<Parsed, FeedsError> {
    let mut parsed = Parsed {
        domains: DomainSet::default(),
        ips: IpSet::default(),
        apps: Vec::new(),
        unreadable: 0,
        first_unreadable: None,
    };
    let mut ranges = String::new();
    let note = |parsed: &mut Parsed, what: String| {
        parsed.unreadable += 1;
        parsed.first_unreadable.get_or_insert(what);
    };
    for (kind, rel) in files {
        match kind {
            FeedKind::Osv => {}
            FeedKind::Domains => {
                let (set, bad) = DomainSet::from_feed_text(&read_text(base, rel)?);
                for name in set.to_index().lines() {
                    parsed.domains.insert(name);
                }
                for (line, text) in bad {
                    note(&mut parsed, format!("{}:{line}: {text:?}", rel.display()));
                }
            }
            FeedKind::Ips => {
                let text = read_text(base, rel)?;
                let (_, bad) = IpSet::from_feed_text(&text);
                for (line, entry) in bad {
                    note(&mut parsed, format!("{}:{line}: {entry:?}", rel.display()));
                }
                ranges.push_str(&text);
                ranges.push('\n');
            }
            FeedKind::Apps => match serde_json::from_str::<AppSpec>(&read_text(base, rel)?) {
                Ok(app) => match app.check() {
                    Ok(()) => parsed.apps.push(app),
                    Err(e) => note(&mut parsed, format!("{}: {e}", rel.display())),
                },
                Err(e) => note(&mut parsed, format!("{}: {e}", rel.display())),
            },
        }
    }
    parsed.ips = IpSet::from_feed_text(&ranges).0;
    parsed.apps.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    Ok(parsed)
}

/// Writes `index/` into an unpacked bundle directory (`bundle/manifest.json`,
/// `bundle/feeds/...`). Written to `index.tmp/` first and renamed, so an index directory
/// that exists is whole.
pub fn build_indexes(bundle: &Path) -> Result<IndexSummary, FeedsError> {
    let files = manifest_files(bundle)?;
    let tmp = bundle.join("index.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| FeedsError::io(&tmp, e))?;
    let osv: Vec<PathBuf> = files
        .iter()
        .filter(|(k, _)| *k == FeedKind::Osv)
        .map(|(_, p)| p.clone())
        .collect();
    let osv_stats = osv_index::write(bundle, &osv, &tmp.join("osv.idx"))?;
    let parsed = parse_feeds(bundle, &files)?;
    let summary = IndexSummary {
        unreadable: parsed.unreadable + osv_stats.invalid as usize,
        first_unreadable: parsed.first_unreadable,
        osv: osv_stats,
        domains: parsed.domains.len(),
        ip_ranges: parsed.ips.len(),
        apps: parsed.apps.len(),
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = tmp.join(name);
        std::fs::write(&path, bytes).map_err(|e| FeedsError::io(&path, e))
    };
    write("domains.txt", parsed.domains.to_index().as_bytes())?;
    write("ips.bin", &parsed.ips.to_index())?;
    let apps =
        serde_json::to_vec(&parsed.apps).map_err(|e| FeedsError::bad(&tmp, &e.to_string()))?;
    write("apps.json", &apps)?;
    let json =
        serde_json::to_vec_pretty(&summary).map_err(|e| FeedsError::bad(&tmp, &e.to_string()))?;
    write("summary.json", &json)?;
    let dest = bundle.join(INDEX_DIR);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| FeedsError::io(&dest, e))?;
    Ok(summary)
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
    /// An applied bundle with its index.
    Indexed { bundle: PathBuf },
    /// Feed files, indexed in memory on use (`base` holds `osv/`, `apps/`, ...).
    Raw {
        base: PathBuf,
        files: Vec<(FeedKind, PathBuf)>,
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
        if !bundle.join(INDEX_DIR).is_dir() {
            // Applied by a build that wrote no index: write it now.
            build_indexes(&bundle)?;
        }
        Ok(Feeds {
            origin: Origin::Indexed { bundle },
            description: format!(
                "bundle sequence {} from {}, created {}",
                current.sequence, current.origin, current.created
            ),
        })
    }

    /// `--feeds DIR`: an applied bundle's directory (it has `manifest.json`), a bundle's
    /// `feeds/` directory, or a directory of feed kinds like `relay/samples/feeds`.
    pub fn open_dir(dir: &Path) -> Result<Feeds, FeedsError> {
        let description = format!("feeds in {}", dir.display());
        if dir.join(INDEX_DIR).join("osv.idx").is_file() && dir.join("manifest.json").is_file() {
            return Ok(Feeds {
                origin: Origin::Indexed {
                    bundle: dir.to_owned(),
                },
                description,
            });
        }
        let (base, files) = if dir.join("manifest.json").is_file() {
            (dir.to_owned(), manifest_files(dir)?)
        } else {
            (dir.to_owned(), directory_files(dir)?)
        };
        if files.is_empty() {
            return Err(FeedsError::bad(
                dir,
                "no feeds here: expected osv/, domains/, ips/ or apps/ (or a bundle directory)",
            ));
        }
        Ok(Feeds {
            origin: Origin::Raw { base, files },
            description,
        })
    }

    /// The OSV records that name any of `packages` (ecosystem, name), indexed.
    pub fn vulnerabilities<'p>(
        &self,
        packages: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(VulnIndex, LoadStats), FeedsError> {
        match &self.origin {
            Origin::Indexed { bundle } => {
                OsvIndexFile::open(bundle, &bundle.join(INDEX_DIR).join("osv.idx"))?
                    .load_for(packages)
            }
            Origin::Raw { base, files } => {
                let mut builder = VulnIndexBuilder::new();
                let mut stats = LoadStats::default();
                for (kind, rel) in files {
                    if *kind == FeedKind::Osv {
                        let s = builder
                            .add_file(&base.join(rel))
                            .map_err(|e| FeedsError::bad(&base.join(rel), &e.to_string()))?;
                        stats.records += s.records;
                        stats.invalid += s.invalid;
                    }
                }
                Ok((builder.build(), stats))
            }
        }
    }

    pub fn domains(&self) -> Result<DomainSet, FeedsError> {
        match &self.origin {
            Origin::Indexed { bundle } => {
                let path = bundle.join(INDEX_DIR).join("domains.txt");
                let text = std::fs::read_to_string(&path).map_err(|e| FeedsError::io(&path, e))?;
                Ok(DomainSet::from_index(&text))
            }
            Origin::Raw { base, files } => Ok(parse_feeds(base, files)?.domains),
        }
    }

    pub fn ips(&self) -> Result<IpSet, FeedsError> {
        match &self.origin {
            Origin::Indexed { bundle } => {
                let path = bundle.join(INDEX_DIR).join("ips.bin");
                let bytes = std::fs::read(&path).map_err(|e| FeedsError::io(&path, e))?;
                IpSet::from_index(&bytes).ok_or_else(|| FeedsError::bad(&path, "damaged index"))
            }
            Origin::Raw { base, files } => Ok(parse_feeds(base, files)?.ips),
        }
    }

    /// The app documents, checked.
    pub fn apps(&self) -> Result<Vec<AppSpec>, FeedsError> {
        match &self.origin {
            Origin::Indexed { bundle } => {
                let path = bundle.join(INDEX_DIR).join("apps.json");
                let bytes = std::fs::read(&path).map_err(|e| FeedsError::io(&path, e))?;
                serde_json::from_slice(&bytes).map_err(|e| FeedsError::bad(&path, &e.to_string()))
            }
            Origin::Raw { base, files } => Ok(parse_feeds(base, files)?.apps),
        }
    }

    /// Where an index file of an applied bundle is (for raw feed directories, the
    /// directory itself).
    pub fn index_path(&self, name: &str) -> PathBuf {
        match &self.origin {
            Origin::Indexed { bundle } => bundle.join(INDEX_DIR).join(name),
            Origin::Raw { base, .. } => base.clone(),
        }
    }

    /// The index summary of an applied bundle (`None` for raw feed directories).
    pub fn summary(&self) -> Option<IndexSummary> {
        match &self.origin {
            Origin::Indexed { bundle } => {
                let bytes = std::fs::read(bundle.join(INDEX_DIR).join("summary.json")).ok()?;
                serde_json::from_slice(&bytes).ok()
            }
            Origin::Raw { .. } => None,
        }
    }
}
