//! The `domains` and `ips` feeds as sets the runtime checks every DNS query and
//! connection against, read in place from index files written once per bundle.
//!
//! - [`DomainSet`]: known-bad names, a finite-state map (`fst`) keyed by the name's
//!   labels in reverse order (`evil.example` -> `example` `0x01` `evil`). An entry
//!   `name` matches the name and every name under it; `*.name` only the names under it.
//!   A lookup walks the query's labels from the last one down the map once, checking at
//!   each label boundary whether a listed name ends there.
//! - [`IpSet`]: known-bad addresses and CIDR ranges, merged into sorted, disjoint
//!   ranges over one 128-bit space (IPv4 as `::ffff:a.b.c.d`, so an IPv4-mapped IPv6
//!   address matches its IPv4 entry). Lookup is one binary search in the table.
//!
//! Feed lines are read with the format library's parser (`relay::bundle::lines`), the one
//! the relay validates bundles with, so the agent lists exactly what the relay accepted;
//! lines it refuses are counted as unreadable. Building streams the feed files with
//! bounded memory ([`super::external_sort`] for names; address ranges are 32 bytes
//! each, sorted in memory). Opening maps the files ([`super::mapped`]).
//!
//! ```text
//! index/domains.fst  an fst 0.4 map (format version 3, fst type "DLDOM1" as a u64):
//!                    key = the labels in reverse order joined by 0x01 (below every label
//!                    byte, so key order is label-by-label order), value 0 = `name`, 1 =
//!                    `*.name`; an entry another one covers is merged into it
//! index/ips.bin      "DLIPSET1", u64 LE n, then n × (u128 BE first, u128 BE last), sorted,
//!                    disjoint, not adjacent; the file is exactly 16 + 32 n bytes
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use fst::raw::{Builder, Fst, Output};
use ipnet::IpNet;
use relay::bundle::lines::{DomainRule, parse_domain_line, parse_ip_line};

use super::external_sort::{DEFAULT_BUDGET, ExternalSort};
use super::mapped::{FileDigest, IndexBytes};
use super::{FeedsError, Unreadable, for_each_line};

/// `index/domains.fst`.
pub const DOMAINS_FILE: &str = "domains.fst";
/// `index/ips.bin`.
pub const IPS_FILE: &str = "ips.bin";

/// Between reversed labels in a key: below every byte a label may hold, so keys sort as
/// the names compare label by label (the origin's importer writes feeds in this order).
const SEPARATOR: u8 = 0x01;
/// The fst type word of `domains.fst` ("DLDOM1"), checked when it is opened.
const DOMAINS_FST_TYPE: u64 = 0x444c_444f_4d31;
/// Values: the name and its subdomains; its subdomains only.
const NAME: u64 = 0;
const SUBDOMAINS: u64 = 1;

const IPS_MAGIC: &[u8; 8] = b"DLIPSET1";
const IPS_HEADER: usize = 16;
const RANGE: usize = 32;

/// Known-bad domain names.
#[derive(Clone, Default)]
pub struct DomainSet {
    /// `None`: the empty set (no fst to walk).
    fst: Option<Fst<IndexBytes>>,
}

/// A name as the set compares it: lower case, without a trailing dot.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())).then_some(name)
}

impl DomainSet {
    /// Maps `index/domains.fst`, once it matches `expected` (see [`IndexBytes::map`]).
    pub fn open(path: &Path, expected: Option<&FileDigest>) -> Result<DomainSet, FeedsError> {
        let bytes = IndexBytes::map(path, expected, "domain index")?;
        Self::from_bytes(bytes).ok_or_else(|| FeedsError::bad(path, "damaged domain index"))
    }

    fn from_bytes(bytes: IndexBytes) -> Option<DomainSet> {
        // The footer as fst 0.4 (format version 3) writes it: ..., u64 root address,
        // u32 checksum; the root node ends 21 bytes before the end. `Fst::new` checks
        // that only for an empty set, so a truncated file would pass it: check it here.
        let b = bytes.as_ref();
        let len = b.len();
        let word = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let root = usize::try_from(word(len.checked_sub(12)?)?).ok()?;
        let whole = root.checked_add(21) == Some(len) || (root == 0 && len == 36);
        if word(0)? != 3 || !whole {
            return None;
        }
        let fst = Fst::new(bytes).ok()?;
        (fst.fst_type() == DOMAINS_FST_TYPE).then_some(DomainSet { fst: Some(fst) })
    }

    /// Reads feed text (the `domains` grammar) into a set in memory. Returns the set and
    /// the lines the grammar refuses (line number, text), which a verified bundle has none of.
    pub fn from_feed_text(text: &str) -> (DomainSet, Vec<(usize, String)>) {
        let mut records = Vec::new();
        let mut bad = Vec::new();
        for (n, line) in text.lines().enumerate() {
            match parse_domain_line(line) {
                Ok(Some(rule)) => {
                    let mut record = Vec::new();
                    sort_record(&mut record, rule);
                    records.push(record);
                }
                Ok(None) => {}
                Err(_) => bad.push((n + 1, line.trim().to_owned())),
            }
        }
        (Self::from_records(records), bad)
    }

    /// A set in memory of names that each match themselves and their subdomains, as the
    /// runtime rules list them (any case, trailing dot allowed; others are skipped).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> DomainSet {
        let records = names
            .into_iter()
            .filter_map(normalize_domain)
            .map(|name| {
                let mut record = Vec::new();
                sort_record(&mut record, DomainRule::Name(&name));
                record
            })
            .collect();
        Self::from_records(records)
    }

    fn from_records(mut records: Vec<Vec<u8>>) -> DomainSet {
        records.sort_unstable();
        let built = (|| {
            let mut map = CoverMerge::new(Vec::new())?;
            for record in &records {
                map.add(record)?;
            }
            map.finish()
        })();
        // Building in memory fails only on keys out of order, which sorting rules out.
        built
            .ok()
            .and_then(|(bytes, _)| Self::from_bytes(bytes.into()))
            .unwrap_or_default()
    }

    /// Listed entries (after merging those another covers).
    pub fn len(&self) -> usize {
        self.fst.as_ref().map_or(0, Fst::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry `query` is listed by, as the feed writes it (`evil.example` or
    /// `*.evil.example`). `query` may have a trailing dot and any case.
    pub fn matches(&self, query: &str) -> Option<String> {
        let query = query.trim_end_matches('.');
        let lowered;
        let query = if query.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = query.to_ascii_lowercase();
            lowered.as_str()
        } else {
            query
        };
        if query.is_empty() || query.as_bytes().contains(&SEPARATOR) {
            return None;
        }
        let fst = self.fst.as_ref()?;
        let mut node = fst.root();
        let mut out = Output::zero();
        let mut end = query.len();
        for (n, label) in query.rsplit('.').enumerate() {
            let separator = (n > 0).then_some(SEPARATOR);
            for b in separator.into_iter().chain(label.bytes()) {
                let t = node.transition(node.find_input(b)?);
                out = out.cat(t.out);
                node = fst.node(t.addr);
            }
            let start = end - label.len();
            if node.is_final() {
                let suffix = &query[start..];
                match out.cat(node.final_output()).value() {
                    NAME => return Some(suffix.to_owned()),
                    // `*.name` lists what is under the name, not the name itself.
                    SUBDOMAINS if start > 0 => return Some(format!("*.{suffix}")),
                    _ => {}
                }
            }
            end = start.saturating_sub(1);
        }
        None
    }
}

impl std::fmt::Debug for DomainSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainSet")
            .field("entries", &self.len())
            .field("bytes", &self.fst.as_ref().map(Fst::as_inner))
            .finish()
    }
}

/// What building an index file read.
#[derive(Debug, Default)]
pub struct Built {
    /// Entries in the index: names after merging, or disjoint ranges.
    pub entries: u64,
    pub unreadable: Unreadable,
}

/// Writes `domains.fst` from the `domains` feed files (relative to `base`) to `out`.
/// Feeds already in key order (as the origin's importer writes them) go straight into
/// the map; otherwise the names are sorted through run files in `scratch`.
pub fn write_domain_index(
    base: &Path,
    files: &[PathBuf],
    out: &Path,
    scratch: &Path,
) -> Result<Built, FeedsError> {
    write_domains(base, files, out, scratch, DEFAULT_BUDGET)
}

fn write_domains(
    base: &Path,
    files: &[PathBuf],
    out: &Path,
    scratch: &Path,
    budget: usize,
) -> Result<Built, FeedsError> {
    match write_domains_in_order(base, files, out)? {
        Some(built) => Ok(built),
        None => write_domains_sorted(base, files, out, scratch, budget),
    }
}

/// Why a pass over feed lines stopped.
enum Stop {
    OutOfOrder,
    Failed(FeedsError),
}

impl From<FeedsError> for Stop {
    fn from(e: FeedsError) -> Self {
        Stop::Failed(e)
    }
}

/// The fast path: `None` at the first name out of key order (nothing is kept of it).
fn write_domains_in_order(
    base: &Path,
    files: &[PathBuf],
    out: &Path,
) -> Result<Option<Built>, FeedsError> {
    let mut map = CoverMerge::new(create(out)?).map_err(|e| fst_error(out, e))?;
    let mut unreadable = Unreadable::default();
    let (mut record, mut last) = (Vec::new(), Vec::new());
    for rel in files {
        let path = base.join(rel);
        let pass = for_each_line(&path, |n, line| {
            match line.map(parse_domain_line) {
                Some(Ok(Some(rule))) => {
                    record.clear();
                    sort_record(&mut record, rule);
                    if record < last {
                        return Err(Stop::OutOfOrder);
                    }
                    map.add(&record).map_err(|e| fst_error(out, e))?;
                    std::mem::swap(&mut record, &mut last);
                }
                Some(Ok(None)) => {}
                _ => unreadable.note(rel, n, line),
            }
            Ok(())
        });
        match pass {
            Ok(()) => {}
            Err(Stop::OutOfOrder) => {
                drop(map);
                let _ = std::fs::remove_file(out);
                return Ok(None);
            }
            Err(Stop::Failed(e)) => return Err(e),
        }
    }
    let (file, entries) = map.finish().map_err(|e| fst_error(out, e))?;
    finish_file(out, file)?;
    Ok(Some(Built {
        entries,
        unreadable,
    }))
}

fn write_domains_sorted(
    base: &Path,
    files: &[PathBuf],
    out: &Path,
    scratch: &Path,
    budget: usize,
) -> Result<Built, FeedsError> {
    let mut sort = ExternalSort::new(scratch, "domains", budget);
    let mut unreadable = Unreadable::default();
    let mut record = Vec::new();
    for rel in files {
        let path = base.join(rel);
        for_each_line(&path, |n, line| {
            match line.map(parse_domain_line) {
                Some(Ok(Some(rule))) => {
                    record.clear();
                    sort_record(&mut record, rule);
                    sort.push(&record).map_err(|e| FeedsError::io(scratch, e))?;
                }
                Some(Ok(None)) => {}
                _ => unreadable.note(rel, n, line),
            }
            Ok::<(), FeedsError>(())
        })?;
    }
    let mut sorted = sort.finish().map_err(|e| FeedsError::io(scratch, e))?;
    let mut map = CoverMerge::new(create(out)?).map_err(|e| fst_error(out, e))?;
    while sorted
        .next_into(&mut record)
        .map_err(|e| FeedsError::io(scratch, e))?
    {
        map.add(&record).map_err(|e| fst_error(out, e))?;
    }
    let (file, entries) = map.finish().map_err(|e| fst_error(out, e))?;
    finish_file(out, file)?;
    Ok(Built {
        entries,
        unreadable,
    })
}

/// The sort record of a rule: its key, `0x00`, its value. Bytewise order is key order
/// (no key holds `0x00`), and at one name `name` comes before `*.name`.
fn sort_record(out: &mut Vec<u8>, rule: DomainRule<'_>) {
    for (n, label) in rule.name().rsplit('.').enumerate() {
        if n > 0 {
            out.push(SEPARATOR);
        }
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.push(match rule {
        DomainRule::Name(_) => NAME as u8,
        DomainRule::Subdomains(_) => SUBDOMAINS as u8,
    });
}

/// Sort records in order -> the fst, leaving out what the entry before covers (a name
/// under a listed name, `*.name` after `name`, duplicates). Covered entries come right
/// after the one covering them, since the separator sorts below every label byte.
struct CoverMerge<W: Write> {
    builder: Builder<W>,
    cover: Option<Vec<u8>>,
    entries: u64,
}

impl<W: Write> CoverMerge<W> {
    fn new(out: W) -> fst::Result<Self> {
        Ok(CoverMerge {
            builder: Builder::new_type(out, DOMAINS_FST_TYPE)?,
            cover: None,
            entries: 0,
        })
    }

    fn add(&mut self, record: &[u8]) -> fst::Result<()> {
        let (key, value) = match record {
            [key @ .., 0, value] => (key, u64::from(*value)),
            _ => return Ok(()),
        };
        if let Some(cover) = &self.cover {
            let under =
                key.len() > cover.len() && key.starts_with(cover) && key[cover.len()] == SEPARATOR;
            if under || key == cover.as_slice() {
                return Ok(());
            }
        }
        self.builder.insert(key, value)?;
        self.entries += 1;
        let cover = self.cover.get_or_insert_with(Vec::new);
        cover.clear();
        cover.extend_from_slice(key);
        Ok(())
    }

    fn finish(self) -> fst::Result<(W, u64)> {
        Ok((self.builder.into_inner()?, self.entries))
    }
}

fn fst_error(path: &Path, e: fst::Error) -> FeedsError {
    match e {
        fst::Error::Io(e) => FeedsError::io(path, e),
        other => FeedsError::bad(path, &other.to_string()),
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, FeedsError> {
    Ok(BufWriter::with_capacity(
        1 << 16,
        File::create(path).map_err(|e| FeedsError::io(path, e))?,
    ))
}

fn finish_file(path: &Path, out: BufWriter<File>) -> Result<(), FeedsError> {
    let file = out
        .into_inner()
        .map_err(|e| FeedsError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| FeedsError::io(path, e))
}

/// Known-bad addresses and ranges.
#[derive(Clone)]
pub struct IpSet {
    /// The whole index: header, then the table.
    bytes: IndexBytes,
    len: usize,
}

/// An address in the set's 128-bit space.
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address a key stands for (IPv4 when it is IPv4-mapped).
pub fn key_ip(key: u128) -> IpAddr {
    Ipv6Addr::from(key).to_canonical()
}

fn net_range(net: IpNet) -> (u128, u128) {
    let (start, end) = match net {
        IpNet::V4(n) => (IpAddr::V4(n.network()), IpAddr::V4(n.broadcast())),
        IpNet::V6(n) => (IpAddr::V6(n.network()), IpAddr::V6(n.broadcast())),
    };
    (ip_key(start), ip_key(end))
}

impl IpSet {
    /// Maps `index/ips.bin`, once it matches `expected` (see [`IndexBytes::map`]).
    pub fn open(path: &Path, expected: Option<&FileDigest>) -> Result<IpSet, FeedsError> {
        let bytes = IndexBytes::map(path, expected, "address index")?;
        Self::from_bytes(bytes).ok_or_else(|| FeedsError::bad(path, "damaged address index"))
    }

    fn from_bytes(bytes: IndexBytes) -> Option<IpSet> {
        let b = bytes.as_ref();
        if b.get(..8)? != IPS_MAGIC {
            return None;
        }
        let len = usize::try_from(u64::from_le_bytes(b.get(8..16)?.try_into().ok()?)).ok()?;
        (len.checked_mul(RANGE)?.checked_add(IPS_HEADER)? == b.len())
            .then_some(IpSet { bytes, len })
    }

    /// Reads feed text (the `ips` grammar) into a set in memory. Returns the set and the
    /// lines the grammar refuses (line number, text).
    pub fn from_feed_text(text: &str) -> (IpSet, Vec<(usize, String)>) {
        let mut ranges = Vec::new();
        let mut bad = Vec::new();
        for (n, line) in text.lines().enumerate() {
            match parse_ip_line(line) {
                Ok(Some(net)) => ranges.push(net_range(net)),
                Ok(None) => {}
                Err(_) => bad.push((n + 1, line.trim().to_owned())),
            }
        }
        (IpSet::from_ranges(ranges), bad)
    }

    /// A set in memory of inclusive ranges (merged here).
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> IpSet {
        merge_ranges(&mut ranges);
        let mut bytes = Vec::with_capacity(IPS_HEADER + ranges.len() * RANGE);
        // Writing to a Vec cannot fail.
        let _ = write_ranges(&mut bytes, &ranges);
        IpSet {
            len: ranges.len(),
            bytes: bytes.into(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_key(ip_key(ip))
    }

    pub fn contains_key(&self, key: u128) -> bool {
        // The last range starting at or before `key`, then whether it reaches it.
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.range(mid).0 <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo > 0 && self.range(lo - 1).1 >= key
    }

    /// Disjoint ranges after merging.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th range (`i < len`, which `from_bytes` checked against the file's length).
    fn range(&self, i: usize) -> (u128, u128) {
        let at = IPS_HEADER + i * RANGE;
        let b = &self.bytes.as_ref()[at..at + RANGE];
        let mut first = [0u8; 16];
        let mut last = [0u8; 16];
        first.copy_from_slice(&b[..16]);
        last.copy_from_slice(&b[16..]);
        (u128::from_be_bytes(first), u128::from_be_bytes(last))
    }
}

impl Default for IpSet {
    fn default() -> Self {
        IpSet::from_ranges(Vec::new())
    }
}

impl PartialEq for IpSet {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_ref() == other.bytes.as_ref()
    }
}

impl Eq for IpSet {}

impl std::fmt::Debug for IpSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpSet")
            .field("ranges", &self.len)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Writes `ips.bin` from the `ips` feed files (relative to `base`) to `out`. The ranges
/// are held in memory while they are sorted (32 bytes each: 32 MB for a million).
pub fn write_ip_index(base: &Path, files: &[PathBuf], out: &Path) -> Result<Built, FeedsError> {
    let mut ranges = Vec::new();
    let mut unreadable = Unreadable::default();
    for rel in files {
        let path = base.join(rel);
        for_each_line(&path, |n, line| {
            match line.map(parse_ip_line) {
                Some(Ok(Some(net))) => ranges.push(net_range(net)),
                Some(Ok(None)) => {}
                _ => unreadable.note(rel, n, line),
            }
            Ok::<(), FeedsError>(())
        })?;
    }
    merge_ranges(&mut ranges);
    let mut file = create(out)?;
    write_ranges(&mut file, &ranges).map_err(|e| FeedsError::io(out, e))?;
    finish_file(out, file)?;
    Ok(Built {
        entries: ranges.len() as u64,
        unreadable,
    })
}

/// Sorts and merges overlapping or adjacent ranges, in place.
fn merge_ranges(ranges: &mut Vec<(u128, u128)>) {
    ranges.retain(|(a, b)| a <= b);
    ranges.sort_unstable();
    let mut kept = 0;
    for i in 0..ranges.len() {
        let (start, end) = ranges[i];
        if kept > 0 && start <= ranges[kept - 1].1.saturating_add(1) {
            ranges[kept - 1].1 = ranges[kept - 1].1.max(end);
        } else {
            ranges[kept] = (start, end);
            kept += 1;
        }
    }
    ranges.truncate(kept);
    ranges.shrink_to_fit();
}

fn write_ranges(out: &mut impl Write, ranges: &[(u128, u128)]) -> std::io::Result<()> {
    out.write_all(IPS_MAGIC)?;
    out.write_all(&(ranges.len() as u64).to_le_bytes())?;
    for (first, last) in ranges {
        out.write_all(&first.to_be_bytes())?;
        out.write_all(&last.to_be_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
