//! The `osv` feed's package index: which lines of the bundle's OSV files name which
//! package, written once when a bundle is applied and read in place.
//!
//! A scan looks up a few hundred packages; a feed holds hundreds of thousands of
//! records. So instead of parsing every record at each scan, the index maps each
//! package key (ecosystem family and normalized name, as [`crate::osv`] keys them) to
//! the byte ranges of the records that name it, in the bundle's own (verified,
//! immutable) feed files. A scan binary-searches the mapped key table, then parses only
//! the records of the packages it found, and builds a small [`VulnIndex`] from them with
//! the same matching code as everything else.
//!
//! Duplicate ids and withdrawn records are resolved when the index is written: of the
//! copies of an id, the newest `modified` wins (at equal times a withdrawal, then the
//! later line); an id whose winner is withdrawn is left out. Writing streams the feed
//! and sorts through run files ([`super::external_sort`]): first by id (to pick the
//! winners), then by package key (to write the table), so memory stays bounded whatever
//! the number of records.
//!
//! File `index/osv.idx` (integers little-endian):
//!
//! ```text
//! 0         "DLOSVIX2"
//! 8         u32 files, u32 0
//! 16        u64 keys, u64 rows
//! 32        u64 keys_at, u64 blob_at, u64 paths_at, u64 length of the file
//! 64        rows, grouped by key, each group by file and offset:
//!             u32 file, u32 length, u64 offset (a record's line, without its newline)
//! keys_at   per key, sorted bytewise: u64 offset in the blob, u32 length, u32 first row
//!           (a key's rows run to the next key's first row)
//! blob_at   the keys' bytes
//! paths_at  per file: u32 length, the path relative to the bundle directory
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::FeedsError;
use super::external_sort::{DEFAULT_BUDGET, ExternalSort, escape, unescape};
use super::mapped::{FileDigest, IndexBytes};
use crate::osv::{LoadStats, OsvRecord, VulnIndex, VulnIndexBuilder, package_key};

/// `index/osv.idx`.
pub const OSV_FILE: &str = "osv.idx";
const MAGIC: &[u8; 8] = b"DLOSVIX2";
const HEADER: usize = 64;
const ROW: usize = 16;
const KEY: usize = 16;
/// No OSV record is anywhere near this long; a longer row means a damaged index.
const MAX_RECORD: u32 = 16 << 20;

/// What writing the index found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OsvIndexStats {
    /// Ids indexed (their newest copy, not withdrawn).
    pub records: u64,
    /// Ids whose newest copy is a withdrawal.
    pub withdrawn: u64,
    /// Older copies of an id, left out.
    pub duplicates: u64,
    /// Lines that are not OSV records (the bundle validator refuses them, so 0).
    pub invalid: u64,
    /// Distinct package keys.
    pub packages: u64,
}

/// The key table of an applied bundle's OSV feed, mapped.
#[derive(Debug)]
pub struct OsvIndexFile {
    base: PathBuf,
    files: Vec<PathBuf>,
    bytes: IndexBytes,
    keys: usize,
    rows: usize,
    keys_at: usize,
    blob: std::ops::Range<usize>,
}

/// Reads the OSV files (paths relative to `base`), resolves duplicates and withdrawals,
/// and writes the index to `out`; run files go to `scratch`.
pub fn write(
    base: &Path,
    files: &[PathBuf],
    out: &Path,
    scratch: &Path,
) -> Result<OsvIndexStats, FeedsError> {
    let mut stats = OsvIndexStats::default();
    let sort_err = |e| FeedsError::io(scratch, e);

    // By id: escaped id, modified, withdrawn, file, offset, length, then the escaped
    // package keys. The last record of an id is its winner.
    let mut by_id = ExternalSort::new(scratch, "osv-ids", DEFAULT_BUDGET);
    let mut record_bytes = Vec::new();
    for (file_no, rel) in files.iter().enumerate() {
        let path = base.join(rel);
        let file_no =
            u32::try_from(file_no).map_err(|_| FeedsError::bad(&path, "too many files"))?;
        for_each_record(&path, |offset, text| {
            let Ok(record) = serde_json::from_slice::<OsvRecord>(text) else {
                stats.invalid += 1;
                return Ok(());
            };
            let Ok(modified) = record.modified else {
                stats.invalid += 1;
                return Ok(());
            };
            let len = u32::try_from(text.len())
                .ok()
                .filter(|&l| l <= MAX_RECORD)
                .ok_or_else(|| FeedsError::bad(&path, "an OSV record over 16 MiB"))?;
            let mut keys: Vec<String> = record
                .affected
                .iter()
                .filter_map(|a| a.package.as_ref())
                .map(|p| package_key(&p.ecosystem, &p.name))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            record_bytes.clear();
            escape(&mut record_bytes, record.id.as_bytes());
            let modified = (modified.unix() as u64) ^ (1 << 63);
            record_bytes.extend_from_slice(&modified.to_be_bytes());
            record_bytes.push(u8::from(record.withdrawn.is_some()));
            record_bytes.extend_from_slice(&file_no.to_be_bytes());
            record_bytes.extend_from_slice(&offset.to_be_bytes());
            record_bytes.extend_from_slice(&len.to_be_bytes());
            for key in &keys {
                escape(&mut record_bytes, key.as_bytes());
            }
            by_id.push(&record_bytes).map_err(sort_err)
        })?;
    }

    // The winners' package keys: escaped key, file, offset, length.
    let mut by_key = ExternalSort::new(scratch, "osv-keys", DEFAULT_BUDGET);
    let mut sorted = by_id.finish().map_err(sort_err)?;
    let (mut winner, mut next) = (Vec::new(), Vec::new());
    let mut more = sorted.next_into(&mut winner).map_err(sort_err)?;
    while more {
        let Some((id, _)) = unescape(&winner) else {
            return Err(FeedsError::bad(scratch, "damaged sort run"));
        };
        let mut copies = 1;
        loop {
            more = sorted.next_into(&mut next).map_err(sort_err)?;
            if !more || unescape(&next).is_none_or(|(next_id, _)| next_id != id) {
                break;
            }
            std::mem::swap(&mut winner, &mut next);
            copies += 1;
        }
        stats.duplicates += copies - 1;
        add_winner(&winner, &mut stats, &mut by_key).map_err(|e| match e {
            Some(e) => sort_err(e),
            None => FeedsError::bad(scratch, "damaged sort run"),
        })?;
        std::mem::swap(&mut winner, &mut next);
    }
    drop(sorted);

    let sorted = by_key.finish().map_err(sort_err)?;
    stats.packages = write_table(files, sorted, out, scratch)?;
    Ok(stats)
}

/// Queues the package rows of an id's winning copy (`None` error: a damaged record).
fn add_winner(
    winner: &[u8],
    stats: &mut OsvIndexStats,
    by_key: &mut ExternalSort,
) -> Result<(), Option<std::io::Error>> {
    let (_, rest) = unescape(winner).ok_or(None)?;
    // modified (8), withdrawn (1), file (4), offset (8), length (4)
    let (fields, mut keys) = rest.split_at_checked(25).ok_or(None)?;
    if fields[8] != 0 {
        stats.withdrawn += 1;
        return Ok(());
    }
    stats.records += 1;
    let location = &fields[9..25];
    let mut row = Vec::new();
    while !keys.is_empty() {
        let (key, rest) = unescape(keys).ok_or(None)?;
        row.clear();
        escape(&mut row, &key);
        row.extend_from_slice(location);
        by_key.push(&row).map_err(Some)?;
        keys = rest;
    }
    Ok(())
}

/// Writes the index file from the rows sorted by key; returns the number of keys.
fn write_table(
    files: &[PathBuf],
    mut sorted: super::external_sort::Sorted,
    out: &Path,
    scratch: &Path,
) -> Result<u64, FeedsError> {
    let out_err = |e| FeedsError::io(out, e);
    let scratch_err = |e| FeedsError::io(scratch, e);
    let mut main = BufWriter::with_capacity(1 << 16, File::create(out).map_err(out_err)?);
    main.write_all(&[0; HEADER]).map_err(out_err)?;
    // The key table and the blob go to files of their own, appended at the end.
    let table_path = scratch.join("osv-key-table");
    let blob_path = scratch.join("osv-key-blob");
    let mut table = BufWriter::new(File::create(&table_path).map_err(scratch_err)?);
    let mut blob = BufWriter::new(File::create(&blob_path).map_err(scratch_err)?);
    let (mut rows, mut keys, mut blob_len) = (0u64, 0u64, 0u64);
    let mut current: Option<Vec<u8>> = None;
    let mut record = Vec::new();
    while sorted.next_into(&mut record).map_err(scratch_err)? {
        let Some((key, location)) = unescape(&record) else {
            return Err(FeedsError::bad(scratch, "damaged sort run"));
        };
        let [
            f0,
            f1,
            f2,
            f3,
            o0,
            o1,
            o2,
            o3,
            o4,
            o5,
            o6,
            o7,
            l0,
            l1,
            l2,
            l3,
        ] = *location
        else {
            return Err(FeedsError::bad(scratch, "damaged sort run"));
        };
        if current.as_ref() != Some(&key) {
            let len = u32::try_from(key.len())
                .map_err(|_| FeedsError::bad(out, "a package key over 4 GiB"))?;
            let first = u32::try_from(rows).map_err(|_| FeedsError::bad(out, "too many rows"))?;
            table
                .write_all(&blob_len.to_le_bytes())
                .map_err(scratch_err)?;
            table.write_all(&len.to_le_bytes()).map_err(scratch_err)?;
            table.write_all(&first.to_le_bytes()).map_err(scratch_err)?;
            blob.write_all(&key).map_err(scratch_err)?;
            blob_len += u64::from(len);
            keys += 1;
            current = Some(key);
        }
        let file = u32::from_be_bytes([f0, f1, f2, f3]);
        let offset = u64::from_be_bytes([o0, o1, o2, o3, o4, o5, o6, o7]);
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        main.write_all(&file.to_le_bytes()).map_err(out_err)?;
        main.write_all(&len.to_le_bytes()).map_err(out_err)?;
        main.write_all(&offset.to_le_bytes()).map_err(out_err)?;
        rows += 1;
    }
    drop(sorted);
    for (path, part) in [(&table_path, table), (&blob_path, blob)] {
        let part = part
            .into_inner()
            .map_err(|e| FeedsError::io(path, e.into_error()))?;
        drop(part);
        let mut input = File::open(path).map_err(|e| FeedsError::io(path, e))?;
        std::io::copy(&mut input, &mut main).map_err(out_err)?;
        std::fs::remove_file(path).map_err(|e| FeedsError::io(path, e))?;
    }
    let keys_at = HEADER as u64 + rows * ROW as u64;
    let blob_at = keys_at + keys * KEY as u64;
    let paths_at = blob_at + blob_len;
    let mut end = paths_at;
    for f in files {
        let s = f.to_string_lossy();
        let len = u32::try_from(s.len()).map_err(|_| FeedsError::bad(f, "path too long"))?;
        main.write_all(&len.to_le_bytes()).map_err(out_err)?;
        main.write_all(s.as_bytes()).map_err(out_err)?;
        end += 4 + u64::from(len);
    }
    let n_files = u32::try_from(files.len()).map_err(|_| FeedsError::bad(out, "too many files"))?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&n_files.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    for n in [keys, rows, keys_at, blob_at, paths_at, end] {
        header.extend_from_slice(&n.to_le_bytes());
    }
    let mut file = main.into_inner().map_err(|e| out_err(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(out_err)?;
    file.write_all(&header).map_err(out_err)?;
    file.sync_all().map_err(out_err)?;
    Ok(keys)
}

/// Calls `f` with each non-blank line of an OSV file: its byte offset and its text
/// (without the line end, `\r` included).
fn for_each_record(
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), FeedsError>,
) -> Result<(), FeedsError> {
    let mut input = BufReader::with_capacity(
        1 << 16,
        File::open(path).map_err(|e| FeedsError::io(path, e))?,
    );
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| FeedsError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        let start = offset;
        offset += n as u64;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.iter().all(u8::is_ascii_whitespace) {
            f(start, text)?;
        }
    }
}

/// A cursor over the index bytes that fails instead of reading past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
}

impl OsvIndexFile {
    /// Maps `index` (feed paths in it are relative to `base`, the bundle directory) once
    /// it matches `expected` (see [`IndexBytes::map`]), and checks its layout: lengths against the file size, keys in order, rows in range.
    pub fn open(
        base: &Path,
        index: &Path,
        expected: Option<&FileDigest>,
    ) -> Result<OsvIndexFile, FeedsError> {
        let bytes = IndexBytes::map(index, expected, "OSV index")?;
        Self::parse(base, bytes).ok_or_else(|| FeedsError::bad(index, "damaged OSV index"))
    }

    fn parse(base: &Path, bytes: IndexBytes) -> Option<OsvIndexFile> {
        let all = bytes.as_ref();
        let mut c = Cursor(all);
        if c.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let n_files = c.u32()? as usize;
        c.u32()?;
        let (keys, rows) = (c.usize()?, c.usize()?);
        let (keys_at, blob_at, paths_at, len) = (c.usize()?, c.usize()?, c.usize()?, c.usize()?);
        let layout_ok = len == all.len()
            && keys_at == rows.checked_mul(ROW)?.checked_add(HEADER)?
            && blob_at == keys.checked_mul(KEY)?.checked_add(keys_at)?
            && blob_at <= paths_at
            && paths_at <= len;
        if !layout_ok {
            return None;
        }
        let mut c = Cursor(&all[paths_at..]);
        let mut files = Vec::with_capacity(n_files.min(all.len()));
        for _ in 0..n_files {
            let n = c.u32()? as usize;
            let rel = PathBuf::from(std::str::from_utf8(c.take(n)?).ok()?);
            // Only paths inside the bundle directory.
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return None;
            }
            files.push(rel);
        }
        if !c.0.is_empty() {
            return None;
        }
        let index = OsvIndexFile {
            base: base.to_owned(),
            files,
            keys,
            rows,
            keys_at,
            blob: blob_at..paths_at,
            bytes,
        };
        // One pass over the key table (not the rows): every key in the blob and after the
        // one before it, every first row in order; so a lookup can trust what it reads.
        let mut last: Option<&[u8]> = None;
        let mut last_first = 0;
        for i in 0..keys {
            let (key, first) = index.key(i)?;
            if last.is_some_and(|l| l >= key) || first < last_first || first > rows {
                return None;
            }
            if i == 0 && first != 0 {
                return None;
            }
            last = Some(key);
            last_first = first;
        }
        Some(index)
    }

    /// Distinct package keys.
    pub fn packages(&self) -> usize {
        self.keys
    }

    /// Key `i` and its first row; `None` when its bytes are outside the blob.
    fn key(&self, i: usize) -> Option<(&[u8], usize)> {
        let all = self.bytes.as_ref();
        let mut c = Cursor(all.get(self.keys_at + i * KEY..)?);
        let (offset, len, first) = (c.usize()?, c.u32()? as usize, c.u32()? as usize);
        let start = self.blob.start.checked_add(offset)?;
        let end = start.checked_add(len)?;
        (end <= self.blob.end).then(|| (&all[start..end], first))
    }

    /// The rows of `key`: (file, offset, length).
    fn rows_of(&self, key: &[u8]) -> impl Iterator<Item = (u32, u64, u32)> + '_ {
        let (mut lo, mut hi) = (0, self.keys);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid) {
                Some((k, _)) if k < key => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let range = match self.key(lo) {
            Some((k, first)) if k == key => {
                let end = self.key(lo + 1).map_or(self.rows, |(_, next)| next);
                first..end
            }
            _ => 0..0,
        };
        range.filter_map(|r| {
            let mut c = Cursor(self.bytes.as_ref().get(HEADER + r * ROW..)?);
            let (file, len, offset) = (c.u32()?, c.u32()?, c.u64()?);
            Some((file, offset, len))
        })
    }

    /// A [`VulnIndex`] of the records that name any of `packages` (ecosystem, name).
    pub fn load_for<'p>(
        &self,
        packages: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(VulnIndex, LoadStats), FeedsError> {
        let mut wanted: BTreeSet<(u32, u64, u32)> = BTreeSet::new();
        for (ecosystem, name) in packages {
            let key = package_key(ecosystem, name);
            wanted.extend(self.rows_of(key.as_bytes()));
        }
        let mut builder = VulnIndexBuilder::new();
        let mut stats = LoadStats::default();
        let mut open: Option<(u32, File)> = None;
        let mut buf = Vec::new();
        for (file_no, offset, len) in wanted {
            let (Some(rel), true) = (self.files.get(file_no as usize), len <= MAX_RECORD) else {
                return Err(FeedsError::bad(
                    &self.base,
                    "damaged OSV index: a row out of range",
                ));
            };
            let path = self.base.join(rel);
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
        let stats = write(dir.path(), &files, &out, dir.path()).unwrap();
        assert_eq!(stats.records, 2, "{stats:?}");
        assert_eq!(stats.withdrawn, 1);
        assert_eq!(stats.packages, 2);

        let index = OsvIndexFile::open(dir.path(), &out, None).unwrap();
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
        let base = dir.path().join("bundle");
        std::fs::create_dir_all(&base).unwrap();
        let line = record("DSA-1", "2026-01-01T00:00:00Z", "Debian:12", "zlib", "1");
        std::fs::write(base.join("a.jsonl"), &line).unwrap();
        std::fs::write(dir.path().join("outside.jsonl"), &line).unwrap();
        let out = dir.path().join("osv.idx");
        write(&base, &[PathBuf::from("a.jsonl")], &out, dir.path()).unwrap();
        let good = std::fs::read(&out).unwrap();
        let parse = |bytes: &[u8]| OsvIndexFile::parse(&base, bytes.to_vec().into());
        assert_eq!(parse(&good).unwrap().packages(), 1);
        let mut wrong_magic = good.clone();
        wrong_magic[7] = b'1';
        let mut bad_key_length = good.clone();
        let keys_at = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
        bad_key_length[keys_at + 8] = 200;
        for bad in [
            &good[..good.len() - 1],
            &wrong_magic[..],
            &bad_key_length[..],
            &good[..HEADER],
            b"",
        ] {
            assert!(parse(bad).is_none());
        }
        write(
            &base,
            &[PathBuf::from("../outside.jsonl")],
            &out,
            dir.path(),
        )
        .unwrap();
        assert!(
            parse(&std::fs::read(&out).unwrap()).is_none(),
            "escaping path"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("osv-")),
            "no sort files left"
        );
    }
}
