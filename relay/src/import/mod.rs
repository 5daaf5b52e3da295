//! The origin's importers: public sources in the forms they are published (OSV trees and
//! osv.dev's `all.zip`, hosts files, AdBlock and RPZ blocklists, netsets) turned into feed
//! files in their normal form, with a record of where every file came from.
//!
//! One module per feed kind ([`osv`], [`domains`], [`ips`]); each reads its inputs once,
//! as streams, and writes one feed file under `FEEDS_DIR/<kind>/` that the bundle builder
//! accepts as it is: every entry it writes has passed the same grammar the builder
//! validates with (`bundle::lines`, `bundle::check_osv_record`). Nothing is dropped
//! silently: each record read is counted as kept, merged (into a newer or wider one),
//! withdrawn, or refused by a named rule, and the first few refusals are quoted.
//!
//! Beside the feed file goes its provenance (`bundle::ProvenanceRecord`, under
//! `FEEDS_DIR/.provenance/`), which `bundle::build` copies into the signed manifest.
//! Fetching inputs is not done here: the origin service (or the operator) hands in files.

pub mod domains;
pub mod ips;
pub mod osv;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::bundle::{
    FeedKind, HashingReader, HashingWriter, ImportCounts, InputProvenance, ProvenanceRecord,
    Sha256, Timestamp, provenance_path,
};

/// One input to import: a local file or directory, and what to record about it.
#[derive(Debug, Clone)]
pub struct Input {
    /// The operator's name for it (`go-vulndb`); defaults to the file's name.
    pub name: String,
    /// Where it came from (a URL), or the path it was read from.
    pub location: String,
    pub license: Option<String>,
    /// When it was fetched; for a local file, when it was read.
    pub retrieved: Timestamp,
    /// The file (or, for OSV, the directory) to read.
    pub path: PathBuf,
}

impl Input {
    /// A local file or directory, named after itself and read now.
    pub fn local(path: &Path) -> Input {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Input {
            name,
            location: path.display().to_string(),
            license: None,
            retrieved: Timestamp::now(),
            path: path.to_owned(),
        }
    }
}

/// Records refused by a rule: counts per rule and the first few, quoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Rule name -> records it set aside.
    pub by_rule: BTreeMap<String, u64>,
    /// `where: why`, for the first [`Refusals::QUOTED`] refusals.
    pub first: Vec<String>,
}

impl Refusals {
    pub const QUOTED: usize = 5;

    pub(crate) fn add(&mut self, rule: &str, place: impl std::fmt::Display, why: &str) {
        *self.by_rule.entry(rule.to_owned()).or_default() += 1;
        if self.first.len() < Self::QUOTED {
            self.first.push(format!("{place}: {why}"));
        }
    }

    pub fn total(&self) -> u64 {
        self.by_rule.values().sum()
    }
}

/// What importing one input did.
#[derive(Debug, Clone)]
pub struct InputReport {
    pub provenance: InputProvenance,
    pub refusals: Refusals,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub kind: FeedKind,
    /// The feed file written.
    pub output: PathBuf,
    /// Records (entries) in it.
    pub records: u64,
    pub sha256: Sha256,
    pub size: u64,
    pub inputs: Vec<InputReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("output name {0:?}: use letters, digits, '-', '_' and '.' (it names a feed file)")]
    BadName(String),
    #[error("nothing to import: no inputs given")]
    NoInputs,
}

impl ImportError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        ImportError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn input(path: &Path, reason: impl Into<String>) -> Self {
        ImportError::Input {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Caps that bound what an input can make an import spend (zip bombs, endless lines).
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// One OSV record, one zip entry, one line.
    pub max_record: u64,
    /// Entries of a zip or files of a directory tree.
    pub max_entries: u64,
    /// Bytes inflated from one zip.
    pub max_inflated: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_record: 16 << 20,
            max_entries: 4_000_000,
            max_inflated: 16 << 30,
        }
    }
}

/// Checks the name of the feed file to write (`<name>.<ext>` under `<kind>/`).
pub fn check_feed_name(name: &str) -> Result<(), ImportError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && !name.starts_with("README")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ImportError::BadName(name.to_owned()))
    }
}

/// The digest and size of a file, read once.
pub(crate) fn digest_file(path: &Path) -> Result<(Sha256, u64), ImportError> {
    let file = File::open(path).map_err(|e| ImportError::io(path, e))?;
    HashingReader::new(file)
        .finish()
        .map_err(|e| ImportError::io(path, e))
}

/// Reads lines of at most `max` bytes from `input`, calling `each(line_number, line)` for
/// each; bytes that are not UTF-8 are replaced (the grammar then refuses the line, by
/// name, instead of the whole input failing). A longer line is passed as `Err(length)`,
/// its newline included.
pub(crate) fn for_each_line(
    input: impl Read,
    max: u64,
    path: &Path,
    mut each: impl FnMut(u64, Result<&str, u64>),
) -> Result<(), ImportError> {
    use std::io::BufRead;
    let mut reader = io::BufReader::with_capacity(1 << 16, input);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(max + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| ImportError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') && n as u64 > max {
            // Skip the rest of the overlong line (its length counts its newline).
            let rest = reader
                .skip_until(b'\n')
                .map_err(|e| ImportError::io(path, e))?;
            each(line_no, Err(n as u64 + rest as u64));
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        each(line_no, Ok(text));
    }
}

/// Writes the feed file `FEEDS_DIR/<kind>/<name>.<ext>` through a temp file (fsynced,
/// renamed), then its provenance record. Returns the file's path, digest and size.
fn write_feed(
    feeds_dir: &Path,
    kind: FeedKind,
    file_name: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<(), ImportError>,
    inputs: &[InputProvenance],
) -> Result<(PathBuf, Sha256, u64), ImportError> {
    let dir = feeds_dir.join(kind.as_str());
    std::fs::create_dir_all(&dir).map_err(|e| ImportError::io(&dir, e))?;
    let path = dir.join(file_name);
    // A feed file is not a secret: 0666 less the umask, as a plain create would make it
    // (tempfile's default is 0600).
    let mut tmp = tempfile::Builder::new()
        .prefix(".import-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(|e| ImportError::io(&dir, e))?;
    let (sha256, size) = {
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 16, tmp.as_file_mut()));
        write(&mut out)?;
        let (buffered, sha256, size) = out.into_parts();
        buffered
            .into_inner()
            .map_err(|e| ImportError::io(&path, e.into_error()))?;
        (sha256, size)
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| ImportError::io(&path, e))?;
    tmp.persist(&path)
        .map_err(|e| ImportError::io(&path, e.error))?;
    crate::bundle::durable::sync_dir(&dir).map_err(|e| ImportError::io(&dir, e))?;

    let record = ProvenanceRecord {
        sha256,
        inputs: inputs.to_vec(),
    };
    let prov = provenance_path(feeds_dir, kind, file_name);
    if let Some(parent) = prov.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ImportError::io(parent, e))?;
    }
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| ImportError::io(&prov, io::Error::other(e)))?;
    crate::bundle::durable::write(&prov, &json, crate::bundle::durable::Access::Exactly(0o644))
        .map_err(|e| ImportError::io(&prov, e))?;
    Ok((path, sha256, size))
}

/// What one input has given so far: the counts of its records, and its refusals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub(crate) counts: ImportCounts,
    pub(crate) refusals: Refusals,
}

impl Tally {
    /// A record set aside by `rule` (counted as read by the caller).
    pub(crate) fn refuse(&mut self, rule: &str, place: impl std::fmt::Display, why: &str) {
        self.counts.refused += 1;
        self.refusals.add(rule, place, why);
    }
}

/// Reads `path` line by line ([`for_each_line`], lines capped at `max_record`) through a
/// hasher: its digest and size, for the provenance.
pub(crate) fn read_lines(
    path: &Path,
    limits: &ImportLimits,
    each: impl FnMut(u64, Result<&str, u64>),
) -> Result<(Sha256, u64), ImportError> {
    let file = File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut hashed = HashingReader::new(file);
    for_each_line(&mut hashed, limits.max_record, path, each)?;
    hashed.finish().map_err(|e| ImportError::io(path, e))
}

/// The end of every import: writes the feed file `FEEDS_DIR/<kind>/<file_name>` with
/// `write` (holding `records` records) and its provenance, and reports per input.
/// `read` goes with `inputs`, one each: the input's digest and size, and its tally.
pub(crate) fn finish(
    feeds_dir: &Path,
    kind: FeedKind,
    file_name: &str,
    inputs: &[Input],
    read: Vec<((Sha256, u64), Tally)>,
    records: u64,
    write: impl FnOnce(&mut dyn Write) -> Result<(), ImportError>,
) -> Result<ImportReport, ImportError> {
    let provenances: Vec<InputProvenance> = inputs
        .iter()
        .zip(&read)
        .map(|(input, ((sha256, size), tally))| InputProvenance {
            name: input.name.clone(),
            location: input.location.clone(),
            license: input.license.clone(),
            retrieved: input.retrieved,
            sha256: *sha256,
            size: *size,
            counts: tally.counts,
        })
        .collect();
    let (output, sha256, size) = write_feed(feeds_dir, kind, file_name, write, &provenances)?;
    Ok(ImportReport {
        kind,
        output,
        records,
        sha256,
        size,
        inputs: provenances
            .into_iter()
            .zip(read)
            .map(|(provenance, (_, tally))| InputReport {
                provenance,
                refusals: tally.refusals,
            })
            .collect(),
    })
}
