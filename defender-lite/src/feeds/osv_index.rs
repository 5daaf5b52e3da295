//! The `osv` feed's package index: which lines of the bundle's OSV files name which
//! package, written once when a bundle is applied.
//!
//! A scan looks up a few hundred packages; a feed holds hundreds of thousands of
//! records. So instead of parsing every record at each scan, the index maps each
//! package key (ecosystem family and normalized name, as [`crate::osv`] keys them) to
//! the byte ranges of the records that name it, in the bundle's own (verified,
//! immutable) feed files. A scan reads the key table, then parses only the records of
//! the packages it found, and builds a small [`VulnIndex`] from them with the same
//! matching code as everything else. Duplicate ids (the newest `modified` wins) and
//! withdrawn records are resolved when the index is written.
//!
//! File `index/osv.idx` (all integers little-endian):
//!
//! ```text
//! "DLOSVIX1"
//! u32 files, then per file: u32 length, the path relative to the bundle directory
//! u32 rows, then per row (sorted by key): u16 key length, key, u32 file, u64 offset, u32 length
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use relay::bundle::Timestamp;

use super::FeedsError;
use crate::osv::{LoadStats, OsvRecord, VulnIndex, VulnIndexBuilder, package_key};

const MAGIC: &[u8; 8] = b"DLOSVIX1";
/// No OSV record is anywhere near this long; a longer row means a damaged index.
const MAX_RECORD: u32 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key: Box<str>,
    file: u32,
    offset: u64,
    len: u32,
}

/// What writing the index found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OsvIndexStats {
    pub records: u64,
    pub withdrawn: u64,
    pub duplicates: u64,
    /// Lines that are not OSV records (the bundle validator refuses them, so 0).
    pub invalid: u64,
    /// Distinct package keys.
    pub packages: u64,
}

/// The key table of an applied bundle's OSV feed.
#[derive(Debug)]
pub struct OsvIndexFile {
    base: PathBuf,
    files: Vec<PathBuf>,
    rows: Vec<Row>,
}

struct Held {
    modified: Timestamp,
    file: u32,
    offset: u64,
    len: u32,
    keys: Vec<String>,
}

/// Reads the OSV files (paths relative to `base`), resolves duplicates and withdrawals,
/// and writes the index to `out`.
pub fn write(base: &Path, files: &[PathBuf], out: &Path) -> Result<OsvIndexStats, FeedsError> {
    let mut stats = OsvIndexStats::default();
    let mut held: HashMap<String, Held> = HashMap::new();
    let mut withdrawn: HashMap<String, Timestamp> = HashMap::new();
    for (file_no, rel) in files.iter().enumerate() {
        let path = base.join(rel);
        let read_err = |e| FeedsError::io(&path, e);
        let mut input = BufReader::new(File::open(&path).map_err(read_err)?);
        let file_no =
            u32::try_from(file_no).map_err(|_| FeedsError::bad(&path, "too many files"))?;
        let mut offset = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| FeedsError::io(&path, e))?;
            if n == 0 {
                break;
            }
            let start = offset;
            offset += n as u64;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<OsvRecord>(text) else {
                stats.invalid += 1;
                continue;
            };
            let len = u32::try_from(text.len())
                .ok()
                .filter(|&l| l <= MAX_RECORD)
                .ok_or_else(|| FeedsError::bad(&path, "an OSV record over 16 MiB"))?;
            if record.withdrawn.is_some() {
                held.remove(&record.id);
                let when = withdrawn.entry(record.id).or_insert(record.modified);
                *when = (*when).max(record.modified);
                continue;
            }
            if let Some(w) = withdrawn.get(&record.id) {
                if *w >= record.modified {
                    stats.duplicates += 1;
                    continue;
                }
                withdrawn.remove(&record.id);
            }
            if held
                .get(&record.id)
                .is_some_and(|h| h.modified > record.modified)
            {
                stats.duplicates += 1;
                continue;
            }
            let mut keys: Vec<String> = record
                .affected
                .iter()
                .filter_map(|a| a.package.as_ref())
                .map(|p| package_key(&p.ecosystem, &p.name))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let entry = Held {
                modified: record.modified,
                file: file_no,
                offset: start,
                len,
                keys,
            };
            if held.insert(record.id, entry).is_some() {
                stats.duplicates += 1;
            }
        }
    }
    stats.withdrawn = withdrawn.len() as u64;
    stats.records = held.len() as u64;
    let mut rows: Vec<Row> = held
        .into_values()
        .flat_map(|h| {
            h.keys.into_iter().map(move |key| Row {
                key: key.into(),
                file: h.file,
                offset: h.offset,
                len: h.len,
            })
        })
        .collect();
    rows.sort_unstable_by(|a, b| (&a.key, a.file, a.offset).cmp(&(&b.key, b.file, b.offset)));
    stats.packages = rows.iter().map(|r| &r.key).collect::<BTreeSet<_>>().len() as u64;

    let mut bytes = Vec::with_capacity(16 + rows.len() * 48);
    bytes.extend_from_slice(MAGIC);
    push_u32(&mut bytes, files.len())?;
    for f in files {
        let s = f.to_string_lossy();
        push_u32(&mut bytes, s.len())?;
        bytes.extend_from_slice(s.as_bytes());
    }
    push_u32(&mut bytes, rows.len())?;
    for row in &rows {
        let key_len = u16::try_from(row.key.len())
            .map_err(|_| FeedsError::bad(out, "a package name over 64 KiB"))?;
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(row.key.as_bytes());
        bytes.extend_from_slice(&row.file.to_le_bytes());
        bytes.extend_from_slice(&row.offset.to_le_bytes());
        bytes.extend_from_slice(&row.len.to_le_bytes());
    }
    std::fs::write(out, bytes).map_err(|e| FeedsError::io(out, e))?;
    Ok(stats)
}

fn push_u32(bytes: &mut Vec<u8>, n: usize) -> Result<(), FeedsError> {
    let n = u32::try_from(n).map_err(|_| FeedsError::Bad {
        path: PathBuf::new(),
        reason: "index too large".into(),
    })?;
    bytes.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

/// A cursor over the index bytes that fails instead of reading past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self, n: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(n)?).ok()
    }
}

impl OsvIndexFile {
    /// Reads `index` (feed paths in it are relative to `base`, the bundle directory).
    pub fn open(base: &Path, index: &Path) -> Result<OsvIndexFile, FeedsError> {
        let bytes = std::fs::read(index).map_err(|e| FeedsError::io(index, e))?;
        Self::parse(base, &bytes).ok_or_else(|| FeedsError::bad(index, "damaged OSV index"))
    }

    fn parse(base: &Path, bytes: &[u8]) -> Option<OsvIndexFile> {
        let mut c = Cursor(bytes);
        if c.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let n_files = c.u32()?;
        let mut files = Vec::new();
        for _ in 0..n_files {
            let len = c.u32()? as usize;
            let rel = PathBuf::from(c.str(len)?);
            // Only paths inside the bundle directory.
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return None;
            }
            files.push(rel);
        }
        let n_rows = c.u32()? as usize;
        let mut rows = Vec::with_capacity(n_rows.min(bytes.len() / 18));
        for _ in 0..n_rows {
            let key_len = c.u16()? as usize;
            let key = c.str(key_len)?.into();
            let (file, offset, len) = (c.u32()?, c.u64()?, c.u32()?);
            if file as usize >= files.len() || len > MAX_RECORD {
                return None;
            }
            rows.push(Row {
                key,
                file,
                offset,
                len,
            });
        }
        if !c.0.is_empty() || !rows.is_sorted_by(|a, b| a.key <= b.key) {
            return None;
        }
        Some(OsvIndexFile {
            base: base.to_owned(),
            files,
            rows,
        })
    }

    /// Distinct package keys.
    pub fn packages(&self) -> usize {
        let mut n = 0;
        let mut last: Option<&str> = None;
        for row in &self.rows {
            if last != Some(&row.key) {
                n += 1;
                last = Some(&row.key);
            }
        }
        n
    }

    /// A [`VulnIndex`] of the records that name any of `packages` (ecosystem, name).
    pub fn load_for<'p>(
        &self,
        packages: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(VulnIndex, LoadStats), FeedsError> {
        let mut wanted: BTreeSet<(u32, u64, u32)> = BTreeSet::new();
        for (ecosystem, name) in packages {
            let key = package_key(ecosystem, name);
            let start = self.rows.partition_point(|r| *r.key < *key);
            for row in self.rows[start..].iter().take_while(|r| *r.key == *key) {
                wanted.insert((row.file, row.offset, row.len));
            }
        }
        let mut builder = VulnIndexBuilder::new();
        let mut stats = LoadStats::default();
        let mut open: Option<(u32, File)> = None;
        let mut buf = Vec::new();
        for (file_no, offset, len) in wanted {
            let path = self.base.join(&self.files[file_no as usize]);
            if open.as_ref().is_none_or(|(n, _)| *n != file_no) {
                let f = File::open(&path).map_err(|e| FeedsError::io(&path, e))?;
                open = Some((file_no, f));
            }
            let Some((_, file)) = &open else { continue };
            buf.resize(len as usize, 0);
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| FeedsError::io(&path, e))?;
            match serde_json::from_slice::<OsvRecord>(&buf) {
                Ok(record) => {
                    builder.add(record);
                    stats.records += 1;
                }
                Err(e) => {
                    return Err(FeedsError::bad(
                        &path,
                        &format!(
                            "the index points at a line that is not an OSV record ({e}): the index does not belong to this feed"
                        ),
                    ));
                }
            }
        }
        Ok((builder.build(), stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, modified: &str, eco: &str, name: &str, fixed: &str) -> String {
        format!(
            r#"{{"id":"{id}","modified":"{modified}","affected":[{{"package":{{"ecosystem":"{eco}","name":"{name}"}},"ranges":[{{"type":"ECOSYSTEM","events":[{{"introduced":"0"}},{{"fixed":"{fixed}"}}]}}]}}]}}"#
        )
    }

    #[test]
    fn the_index_finds_only_the_newest_live_records_of_the_packages_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("feeds/osv")).unwrap();
        let a = [
            record("DSA-1", "2026-01-01T00:00:00Z", "Debian:12", "openssl", "3.0.1-1"),
            record("DSA-1", "2026-02-01T00:00:00Z", "Debian:12", "openssl", "3.0.2-1"),
            record("DSA-2", "2026-01-01T00:00:00Z", "Debian:12", "zlib", "1:1.3-1"),
            String::new(),
            r#"{"id":"DSA-2","modified":"2026-03-01T00:00:00Z","withdrawn":"2026-03-01T00:00:00Z"}"#.to_owned(),
        ]
        .join("\n");
        let b = record("PYSEC-1", "2026-01-01T00:00:00Z", "PyPI", "Jinja2", "3.1.4");
        std::fs::write(dir.path().join("feeds/osv/a.jsonl"), a).unwrap();
        std::fs::write(dir.path().join("feeds/osv/b.jsonl"), b + "\r\n").unwrap();
        let files = vec![
            PathBuf::from("feeds/osv/a.jsonl"),
            PathBuf::from("feeds/osv/b.jsonl"),
        ];
        let out = dir.path().join("osv.idx");
        let stats = write(dir.path(), &files, &out).unwrap();
        assert_eq!(stats.records, 2, "{stats:?}");
        assert_eq!(stats.withdrawn, 1);
        assert_eq!(stats.packages, 2);

        let index = OsvIndexFile::open(dir.path(), &out).unwrap();
        assert_eq!(index.packages(), 2);
        let (vulns, loaded) = index
            .load_for([
                ("Debian:12", "openssl"),
                ("PyPI", "jinja_2"),
                ("PyPI", "jinja2"),
            ])
            .unwrap();
        assert_eq!(loaded.records, 2);
        let hits = vulns.lookup("Debian:12", "openssl", "3.0.1-1").unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].fixed, Some("3.0.2-1"), "the newer copy wins");
        assert_eq!(vulns.lookup("PyPI", "Jinja2", "3.1.3").unwrap().len(), 1);
        let (none, _) = index.load_for([("Debian:12", "zlib")]).unwrap();
        assert_eq!(none.stats().records, 0, "withdrawn");
    }

    #[test]
    fn a_damaged_index_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("osv.idx");
        write(dir.path(), &[], &out).unwrap();
        let good = std::fs::read(&out).unwrap();
        assert!(OsvIndexFile::parse(dir.path(), &good).is_some());
        for bad in [&good[..good.len() - 1], b"DLOSVIX2\0\0\0\0\0\0\0\0", b""] {
            assert!(OsvIndexFile::parse(dir.path(), bad).is_none());
        }
        let mut escaping = MAGIC.to_vec();
        escaping.extend_from_slice(&1u32.to_le_bytes());
        escaping.extend_from_slice(&9u32.to_le_bytes());
        escaping.extend_from_slice(b"../passwd");
        escaping.extend_from_slice(&0u32.to_le_bytes());
        assert!(OsvIndexFile::parse(dir.path(), &escaping).is_none());
    }
}
