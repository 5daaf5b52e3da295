//! Builds a bundle from a feeds directory: validate every file for its kind, compress the
//! payload, write the manifest that records it, sign it, and write the file (layout in
//! `framing`), cut into independently compressed segments (`segments`) with their index.
//! Deterministic: sorted entries, fixed owner, mode and mtime, canonical gzip headers,
//! content-defined segments, so the same inputs and `created` give the same bytes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::feeds::{FeedError, validate_feed};
use super::framing;
use super::index::SegmentIndex;
use super::keys::SecretKey;
use super::manifest::{FileEntry, check_path};
use super::segments::{Segment, SegmentWriter};
use super::types::{HashingReader, HashingWriter};
use super::{
    FEEDS_DIR, FORMAT_VERSION, FeedKind, InputProvenance, MANIFEST_PATH, Manifest, Payload,
    SIGNATURE_PATH, Sequence, Sha256, Signature, Timestamp,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{}: {}", .source.line, .source.reason)]
    BadFeed { path: PathBuf, source: FeedError },
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("{path} changed while the bundle was being built")]
    Changed { path: PathBuf },
    #[error(
        "no feed files under {dir}: put each feed file in a directory named after its kind (osv/, domains/, ips/, apps/)"
    )]
    Empty { dir: PathBuf },
    #[error("expires ({expires}) must be after created ({created})")]
    ExpiresBeforeCreated {
        created: Timestamp,
        expires: Timestamp,
    },
    #[error("origin must be 1-255 characters without control characters")]
    BadOrigin,
    #[error("writing the bundle: {0}")]
    Write(io::Error),
}

/// What goes into the manifest besides the files.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub sequence: Sequence,
    pub origin: String,
    pub created: Timestamp,
    pub expires: Timestamp,
}

/// Builds a bundle from `feeds_dir` (files under `<kind>/`) into `out` and returns its
/// manifest. Files named `README*` or starting with `.` are documentation and skipped.
pub fn build(
    feeds_dir: &Path,
    key: &SecretKey,
    options: &BuildOptions,
    out: impl Write,
) -> Result<Manifest, BuildError> {
    build_indexed(feeds_dir, key, options, out).map(|(manifest, _)| manifest)
}

/// [`build`], also returning the bundle's segment index (its `.idx` sidecar).
pub fn build_indexed(
    feeds_dir: &Path,
    key: &SecretKey,
    options: &BuildOptions,
    out: impl Write,
) -> Result<(Manifest, SegmentIndex), BuildError> {
    if options.expires <= options.created {
        return Err(BuildError::ExpiresBeforeCreated {
            created: options.created,
            expires: options.expires,
        });
    }
    if options.origin.is_empty()
        || options.origin.len() > 255
        || options.origin.chars().any(char::is_control)
    {
        return Err(BuildError::BadOrigin);
    }
    let sources = collect(feeds_dir)?;
    if sources.is_empty() {
        return Err(BuildError::Empty {
            dir: feeds_dir.to_owned(),
        });
    }
    let mut files = Vec::with_capacity(sources.len());
    for source in &sources {
        files.push(describe(source)?);
    }
    let mtime = u64::try_from(options.created.unix()).unwrap_or(0);

    // The payload member comes second in the file but first in the making: the manifest
    // records its digest. It goes to an anonymous temp file, so any size works.
    let spool = tempfile::tempfile().map_err(BuildError::Write)?;
    let (mut spool, payload, segments, tail) = write_payload(spool, &sources, &files, mtime)?;

    let manifest = Manifest {
        format: FORMAT_VERSION,
        sequence: options.sequence,
        created: options.created,
        expires: options.expires,
        origin: options.origin.clone(),
        key_id: key.key_id(),
        files,
        payload,
    };
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BuildError::Write(io::Error::other(e)))?;
    let signature = Signature::new(key.key_id(), &key.sign(&manifest_bytes));
    let signature_bytes = serde_json::to_vec_pretty(&signature)
        .map_err(|e| BuildError::Write(io::Error::other(e)))?;

    let mut head =
        framing::tar_entry(MANIFEST_PATH, &manifest_bytes, mtime).map_err(BuildError::Write)?;
    head.extend(
        framing::tar_entry(SIGNATURE_PATH, &signature_bytes, mtime).map_err(BuildError::Write)?,
    );
    let mut head_member = Vec::with_capacity(head.len() + 64);
    framing::write_head(&mut head_member, &head).map_err(BuildError::Write)?;
    let mut out = HashingWriter::new(out);
    out.write_all(&head_member).map_err(BuildError::Write)?;
    spool.seek(SeekFrom::Start(0)).map_err(BuildError::Write)?;
    let copied = io::copy(&mut spool, &mut out).map_err(BuildError::Write)?;
    if copied != payload.size {
        return Err(BuildError::Write(io::Error::other(
            "payload spool changed size",
        )));
    }
    out.flush().map_err(BuildError::Write)?;
    let (_, bundle_sha256, _) = out.into_parts();
    let index = SegmentIndex {
        bundle_sha256,
        head: head_member,
        segments,
        tail,
    };
    Ok((manifest, index))
}

/// Writes the payload member (feed entries, end-of-archive marker) to `spool`, returning
/// its size and digest.
type Written = (File, Payload, Vec<Segment>, [u8; 10]);

fn write_payload(
    spool: File,
    sources: &[Source],
    files: &[FileEntry],
    mtime: u64,
) -> Result<Written, BuildError> {
    let hashing = HashingWriter::new(BufWriter::new(spool));
    let segmented = SegmentWriter::new(hashing).map_err(BuildError::Write)?;
    let mut tar = tar::Builder::new(segmented);
    for (source, entry) in sources.iter().zip(files) {
        // Each file starts a segment: a change in one file leaves the others' segments be.
        tar.get_mut().cut().map_err(BuildError::Write)?;
        let file = File::open(&source.path).map_err(|e| io_err(&source.path, e))?;
        let len = file.metadata().map_err(|e| io_err(&source.path, e))?.len();
        if len != entry.size {
            return Err(BuildError::Changed {
                path: source.path.clone(),
            });
        }
        // Hash what is actually written, so a file changed between the two reads
        // cannot end up in a bundle whose manifest describes other bytes.
        let mut reader = HashingReader::new(file.take(entry.size));
        append_stream(&mut tar, &entry.path, mtime, entry.size, &mut reader)
            .map_err(BuildError::Write)?;
        if Sha256::from_hasher(reader.hasher) != entry.sha256 {
            return Err(BuildError::Changed {
                path: source.path.clone(),
            });
        }
    }
    let segmented = tar.into_inner().map_err(BuildError::Write)?;
    let (hashing, segments, tail) = segmented.finish().map_err(BuildError::Write)?;
    let (buffered, sha256, size) = hashing.into_parts();
    let spool = buffered
        .into_inner()
        .map_err(|e| BuildError::Write(e.into_error()))?;
    Ok((spool, Payload { sha256, size }, segments, tail))
}

/// A feed file found under the feeds directory.
struct Source {
    path: PathBuf,
    kind: FeedKind,
    bundle_path: String,
    stem: String,
    /// Where its provenance would be, if an importer wrote it.
    provenance: PathBuf,
}

/// The directory of a feeds directory where importers leave each feed file's provenance
/// (`.provenance/<kind>/<file>.json`); a dot directory, so older builders skip it.
pub const PROVENANCE_DIR: &str = ".provenance";

/// What an importer leaves beside a feed file it wrote: the file's digest (so provenance
/// never outlives an edit of the file) and its inputs. The builder copies `inputs` into
/// the file's manifest entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceRecord {
    pub sha256: Sha256,
    pub inputs: Vec<InputProvenance>,
}

/// Where the provenance of feed file `file_name` of `kind` lives.
pub fn provenance_path(feeds_dir: &Path, kind: FeedKind, file_name: &str) -> PathBuf {
    feeds_dir
        .join(PROVENANCE_DIR)
        .join(kind.as_str())
        .join(format!("{file_name}.json"))
}

/// Provenance records are small; a larger file is not one.
const MAX_PROVENANCE: u64 = 1 << 20;

/// Lists the feed files, sorted by their path in the bundle.
fn collect(feeds_dir: &Path) -> Result<Vec<Source>, BuildError> {
    let mut sources = Vec::new();
    for dir_entry in read_dir_sorted(feeds_dir)? {
        let name = file_name(&dir_entry)?;
        if is_documentation(&name) {
            continue;
        }
        let file_type = std::fs::symlink_metadata(&dir_entry)
            .map_err(|e| io_err(&dir_entry, e))?
            .file_type();
        let kind: FeedKind = name.parse().map_err(|reason| BuildError::Layout {
            path: dir_entry.clone(),
            reason,
        })?;
        if !file_type.is_dir() {
            return Err(BuildError::Layout {
                path: dir_entry,
                reason: "expected a directory named after a feed kind".into(),
            });
        }
        for path in read_dir_sorted(&dir_entry)? {
            let name = file_name(&path)?;
            if is_documentation(&name) {
                continue;
            }
            let file_type = std::fs::symlink_metadata(&path)
                .map_err(|e| io_err(&path, e))?
                .file_type();
            if !file_type.is_file() {
                return Err(BuildError::Layout {
                    path,
                    reason: "feed entries must be regular files (no directories or links)".into(),
                });
            }
            let bundle_path = format!("{FEEDS_DIR}/{kind}/{name}");
            check_path(&bundle_path).map_err(|reason| BuildError::Layout {
                path: path.clone(),
                reason: format!("file name not allowed in a bundle: {reason}"),
            })?;
            let stem = name.split('.').next().unwrap_or(&name).to_owned();
            sources.push(Source {
                provenance: provenance_path(feeds_dir, kind, &name),
                path,
                kind,
                bundle_path,
                stem,
            });
        }
    }
    sources.sort_by(|a, b| a.bundle_path.cmp(&b.bundle_path));
    Ok(sources)
}

/// Validates a feed file and hashes it in the same pass.
fn describe(source: &Source) -> Result<FileEntry, BuildError> {
    let file = File::open(&source.path).map_err(|e| io_err(&source.path, e))?;
    let mut reader = HashingReader::new(file);
    let validated = validate_feed(
        source.kind,
        &source.stem,
        BufReader::with_capacity(1 << 16, &mut reader),
    )
    .map_err(|source_err| BuildError::BadFeed {
        path: source.path.clone(),
        source: source_err,
    })?;
    // The validator may stop before the end (apps read everything; line readers stop at
    // EOF), so drain what is left to hash the whole file.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| io_err(&source.path, e))?;
    let sha256 = Sha256::from_hasher(reader.hasher);
    Ok(FileEntry {
        path: source.bundle_path.clone(),
        inputs: read_provenance(source, &sha256)?,
        sha256,
        size: reader.count,
        kind: source.kind,
        records: validated.records,
    })
}

/// The inputs recorded beside a feed file, checked to describe these very bytes.
fn read_provenance(source: &Source, sha256: &Sha256) -> Result<Vec<InputProvenance>, BuildError> {
    let path = &source.provenance;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut text = Vec::new();
    file.take(MAX_PROVENANCE + 1)
        .read_to_end(&mut text)
        .map_err(|e| io_err(path, e))?;
    let layout = |reason: String| BuildError::Layout {
        path: path.clone(),
        reason,
    };
    if text.len() as u64 > MAX_PROVENANCE {
        return Err(layout(format!(
            "larger than {MAX_PROVENANCE} bytes: not a provenance record"
        )));
    }
    let record: ProvenanceRecord = serde_json::from_slice(&text)
        .map_err(|e| layout(format!("not a provenance record: {e}")))?;
    if record.sha256 != *sha256 {
        return Err(layout(format!(
            "describes other content than {} (sha256 {} there, {} now): the feed file was \
             changed after it was imported; import it again or delete this record",
            source.path.display(),
            record.sha256,
            sha256
        )));
    }
    Ok(record.inputs)
}

/// Appends a regular file entry with fixed owner, mode and mtime. `data` must yield
/// exactly `size` bytes; the caller checks what it hashed.
fn append_stream<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    mtime: u64,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(size);
    tar.append_data(&mut header, path, data)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut paths = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_err(dir, e))?;
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> Result<String, BuildError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| BuildError::Layout {
            path: path.to_owned(),
            reason: "file name is not UTF-8".into(),
        })
}

fn is_documentation(name: &str) -> bool {
    name.starts_with('.') || name.starts_with("README")
}

fn io_err(path: &Path, source: io::Error) -> BuildError {
    BuildError::Io {
        path: path.to_owned(),
        source,
    }
}
