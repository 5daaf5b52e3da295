//! OSV importer: vulnerability records from the forms they are published in, into one
//! `osv` feed file (JSON Lines, one record per id, sorted by id).
//!
//! Inputs, told apart by what the path is:
//!
//! - a directory: every `*.json` file below it, one record each, walked in sorted order
//!   without following links (the Go vulnerability database's `data/osv/`, the RustSec
//!   OSV export, the GitHub advisory database's `advisories/`);
//! - a `.zip` file: osv.dev's per-ecosystem `all.zip`, one record per entry;
//! - a `.json` file: one record;
//! - any other file: JSON Lines (an `osv` feed file of another bundle).
//!
//! Each record is kept as published (every field; keys in sorted order, compact), after
//! the same check the bundle builder runs ([`crate::bundle::check_osv_record`]). One
//! record per id: the newest `modified` wins (the first seen on a tie); the others count
//! as merged. A record whose winning version is withdrawn is left out of the feed and
//! counted as withdrawn, so it never matches. A record the check refuses is set aside
//! under its rule's name; it never stops the import.
//!
//! Memory: records go to a spool file as they are read; what stays in memory is the id,
//! `modified` and spool position of each id (about 100 bytes a record).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::{
    ImportError, ImportLimits, ImportReport, Input, Tally, check_feed_name, digest_file, finish,
    read_lines,
};
use crate::bundle::{FeedKind, HashingReader, Sha256, Timestamp, check_osv_record};

/// Imports `inputs` into `FEEDS_DIR/osv/<name>.jsonl`.
pub fn import(
    inputs: &[Input],
    feeds_dir: &Path,
    name: &str,
    limits: &ImportLimits,
) -> Result<ImportReport, ImportError> {
    check_feed_name(name)?;
    if inputs.is_empty() {
        return Err(ImportError::NoInputs);
    }
    let spool_dir = feeds_dir.to_owned();
    std::fs::create_dir_all(&spool_dir).map_err(|e| ImportError::io(&spool_dir, e))?;
    let spool = tempfile::tempfile_in(&spool_dir).map_err(|e| ImportError::io(&spool_dir, e))?;
    let mut state = State {
        spool: BufWriter::with_capacity(1 << 16, spool),
        spooled: 0,
        winners: HashMap::new(),
        tallies: vec![Tally::default(); inputs.len()],
        limits: *limits,
    };
    let mut digests = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        digests.push(read_input(&mut state, i, &input.path)?);
    }

    let spool_path = PathBuf::from("(spool)");
    let spool = state
        .spool
        .into_inner()
        .map_err(|e| ImportError::io(&spool_path, e.into_error()))?;
    let mut winners: Vec<(String, Winner)> = state.winners.into_iter().collect();
    winners.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut tallies = state.tallies;
    let mut records = 0u64;
    for (_, w) in &winners {
        if w.withdrawn {
            tallies[w.input].counts.withdrawn += 1;
        } else {
            tallies[w.input].counts.kept += 1;
            records += 1;
        }
    }
    finish(
        feeds_dir,
        FeedKind::Osv,
        &format!("{name}.jsonl"),
        inputs,
        digests.into_iter().zip(tallies).collect(),
        records,
        |out| {
            let mut buf = Vec::new();
            for (_, w) in winners.iter().filter(|(_, w)| !w.withdrawn) {
                buf.resize(w.len as usize, 0);
                spool
                    .read_exact_at(&mut buf, w.offset)
                    .map_err(|e| ImportError::io(&spool_path, e))?;
                out.write_all(&buf)
                    .map_err(|e| ImportError::io(&spool_path, e))?;
            }
            Ok(())
        },
    )
}

struct Winner {
    modified: Timestamp,
    /// Where the record's line (with its newline) is in the spool.
    offset: u64,
    len: u32,
    input: usize,
    withdrawn: bool,
}

struct State {
    spool: BufWriter<File>,
    spooled: u64,
    winners: HashMap<String, Winner>,
    tallies: Vec<Tally>,
    limits: ImportLimits,
}

impl State {
    /// One record as read from input `input`, at `place` (for messages).
    fn record(&mut self, input: usize, place: &str, bytes: &[u8]) -> Result<(), ImportError> {
        self.tallies[input].counts.read += 1;
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                self.refuse(input, "not-json", place, &format!("not JSON: {e}"));
                return Ok(());
            }
        };
        // Compact, keys sorted (serde_json's map is ordered): every field kept, one line.
        let mut line = value.to_string();
        let key = match check_osv_record(&line) {
            Ok(key) => key,
            Err(problem) => {
                self.refuse(input, problem.rule, place, &problem.message);
                return Ok(());
            }
        };
        line.push('\n');
        let len = u32::try_from(line.len()).map_err(|_| {
            ImportError::input(Path::new(place), "record too large to spool".to_owned())
        })?;
        let candidate = Winner {
            modified: key.modified,
            offset: self.spooled,
            len,
            input,
            withdrawn: key.withdrawn,
        };
        match self.winners.entry(key.id) {
            Entry::Vacant(v) => {
                v.insert(candidate);
            }
            Entry::Occupied(mut o) => {
                if candidate.modified > o.get().modified {
                    let loser = o.get().input;
                    self.tallies[loser].counts.merged += 1;
                    o.insert(candidate);
                } else {
                    self.tallies[input].counts.merged += 1;
                    // The loser's line is not needed: do not spool it.
                    return Ok(());
                }
            }
        }
        self.spool
            .write_all(line.as_bytes())
            .map_err(|e| ImportError::io(Path::new("(spool)"), e))?;
        self.spooled += u64::from(len);
        Ok(())
    }

    fn refuse(&mut self, input: usize, rule: &str, place: &str, why: &str) {
        self.tallies[input].refuse(rule, place, why);
    }
}

/// Reads one input; returns its digest and size.
fn read_input(state: &mut State, i: usize, path: &Path) -> Result<(Sha256, u64), ImportError> {
    let meta = std::fs::metadata(path).map_err(|e| ImportError::io(path, e))?;
    if meta.is_dir() {
        return read_tree(state, i, path);
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("zip") => {
            let digest = digest_file(path)?;
            read_zip(state, i, path)?;
            Ok(digest)
        }
        Some("json") => {
            let (bytes, digest) = read_capped(path, state.limits.max_record)?;
            let place = path.display().to_string();
            match bytes {
                Some(bytes) => state.record(i, &place, &bytes)?,
                None => {
                    state.tallies[i].counts.read += 1;
                    state.refuse(i, "record-too-large", &place, "larger than the record cap");
                }
            }
            Ok(digest)
        }
        _ => {
            let mut err = None;
            let name = path.display().to_string();
            let limits = state.limits;
            let digest = read_lines(path, &limits, |n, line| {
                if err.is_some() {
                    return;
                }
                let place = format!("{name}:{n}");
                match line {
                    Ok(text) if text.trim().is_empty() => {}
                    Ok(text) => {
                        if let Err(e) = state.record(i, &place, text.as_bytes()) {
                            err = Some(e);
                        }
                    }
                    Err(len) => {
                        state.tallies[i].counts.read += 1;
                        state.refuse(
                            i,
                            "record-too-large",
                            &place,
                            &format!("a line of {len} bytes"),
                        );
                    }
                }
            })?;
            match err {
                Some(e) => Err(e),
                None => Ok(digest),
            }
        }
    }
}

/// A file's bytes (`None` when over the cap) and the digest and size of all of it.
type Capped = (Option<Vec<u8>>, (Sha256, u64));

/// Reads a file of at most `max` bytes (`None` when larger), with the digest of all of it.
fn read_capped(path: &Path, max: u64) -> Result<Capped, ImportError> {
    let file = File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut hashed = HashingReader::new(file);
    let mut bytes = Vec::new();
    (&mut hashed)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImportError::io(path, e))?;
    let digest = hashed.finish().map_err(|e| ImportError::io(path, e))?;
    Ok(((bytes.len() as u64 <= max).then_some(bytes), digest))
}

/// A directory tree of `*.json` records. Its digest is the SHA-256 of the sorted lines
/// `<relative path> <sha256 of the file>`, its size the sum of the files' sizes.
fn read_tree(state: &mut State, i: usize, root: &Path) -> Result<(Sha256, u64), ImportError> {
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files, state.limits.max_entries)?;
    files.sort();
    let mut listing = sha2::Sha256::new();
    let mut total = 0u64;
    for rel in &files {
        let path = root.join(rel);
        let (bytes, (sha, size)) = read_capped(&path, state.limits.max_record)?;
        listing.update(format!("{} {sha}\n", rel.display()).as_bytes());
        total += size;
        let place = rel.display().to_string();
        match bytes {
            Some(bytes) => state.record(i, &place, &bytes)?,
            None => {
                state.tallies[i].counts.read += 1;
                state.refuse(i, "record-too-large", &place, "larger than the record cap");
            }
        }
    }
    Ok((Sha256::from_hasher(listing), total))
}

/// Collects the `*.json` regular files under `dir` (relative to the root); links are not
/// followed.
fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
    max_entries: u64,
) -> Result<(), ImportError> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(|e| ImportError::io(&dir, e))? {
        let entry = entry.map_err(|e| ImportError::io(&dir, e))?;
        let file_type = entry.file_type().map_err(|e| ImportError::io(&dir, e))?;
        let name = entry.file_name();
        let child = rel.join(&name);
        if name.to_string_lossy().starts_with('.') {
            continue; // .git and friends
        }
        if file_type.is_dir() {
            walk(root, &child, out, max_entries)?;
        } else if file_type.is_file()
            && Path::new(&name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            out.push(child);
            if out.len() as u64 > max_entries {
                return Err(ImportError::input(
                    root,
                    format!("more than {max_entries} files"),
                ));
            }
        }
    }
    Ok(())
}

/// osv.dev's `all.zip`: one record per `*.json` entry. Sizes are capped as inflated, not
/// as declared (a zip can lie about them).
fn read_zip(state: &mut State, i: usize, path: &Path) -> Result<(), ImportError> {
    let file = File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| ImportError::input(path, format!("not a readable zip file: {e}")))?;
    if archive.len() as u64 > state.limits.max_entries {
        return Err(ImportError::input(
            path,
            format!(
                "{} entries, more than the cap of {}",
                archive.len(),
                state.limits.max_entries
            ),
        ));
    }
    let mut inflated = 0u64;
    let mut bytes = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ImportError::input(path, format!("entry {index}: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        // A name that is not UTF-8 (or not a record's) is no OSV record: passed over.
        let Ok(entry_name) = entry.name().map(|n| n.into_owned()) else {
            continue;
        };
        let place = format!("{}:{entry_name}", path.display());
        if !entry_name.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        bytes.clear();
        (&mut entry)
            .take(state.limits.max_record + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImportError::input(path, format!("{place}: {e}")))?;
        inflated += bytes.len() as u64;
        if inflated > state.limits.max_inflated {
            return Err(ImportError::input(
                path,
                format!(
                    "inflates to more than {} bytes (the cap)",
                    state.limits.max_inflated
                ),
            ));
        }
        drop(entry);
        if bytes.len() as u64 > state.limits.max_record {
            state.tallies[i].counts.read += 1;
            state.refuse(i, "record-too-large", &place, "larger than the record cap");
            continue;
        }
        state.record(i, &place, &bytes)?;
    }
    Ok(())
}
