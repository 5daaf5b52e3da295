//! Segment deltas: the changed segments of a new bundle written as edits of the old
//! bundle's segments (`relay/FORMAT.md`, "Segments and deltas"). A day's churn scattered
//! over a sorted list (a few names added and removed in every 32 KiB) changes nearly every
//! segment, yet each by a few lines: fetching those segments whole would cost most of the
//! file, their edits a few bytes each.
//!
//! For each segment of the new bundle whose SHA-256 the old one does not have, the delta
//! names a base (one to [`MAX_BASE`] consecutive segments of the old bundle: those that
//! hold the most of a sample of its lines) and a list of operations on the base's
//! uncompressed bytes: copy a range, or insert bytes (the lines that are not in the base,
//! narrowed token by token to what changed in the lines they replaced). A client rebuilds the segment's content, compresses it
//! as the builder does, and keeps it only if it hashes as the new index says; a segment
//! that does not (a wrong delta, or a compressor that differs) is fetched by range
//! instead. Nothing in a delta is trusted.
//!
//! Layout (all integers little-endian), gzip-compressed as a whole:
//!
//! | bytes | field |
//! |---|---|
//! | 16 | magic `relay-deltas-v1\n` |
//! | 32, 32 | SHA-256 of the old bundle file, of the new one |
//! | 4 | entries |
//! | each | new segment number (u32), first base segment (u32), base segments (u8, 1 to 3), operations (u32), then each operation: `0`, offset in the base and length (u32 each), or `1`, length (u32) and the bytes |

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use flate2::read::DeflateDecoder;

use super::index::SegmentIndex;
use super::segments::{MAX, compress_segment};
use super::types::Sha256;

pub const MAGIC: &[u8; 16] = b"relay-deltas-v1\n";
/// Most old segments one new segment is edited from.
pub const MAX_BASE: u8 = 3;
/// The largest delta a client reads (inflated): more than any real one.
pub const MAX_DELTA_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("not a delta (bad magic)")]
    Magic,
    #[error("the delta is for another pair of bundles")]
    OtherBundles,
    #[error("delta: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

enum Op {
    Copy { offset: u32, len: u32 },
    Insert(Vec<u8>),
}

/// The uncompressed content of old segment `i`: inflates its bytes from the file.
fn inflate_segment(
    file: &mut (impl Read + Seek),
    index: &SegmentIndex,
    offsets: &[u64],
    i: usize,
) -> io::Result<Vec<u8>> {
    let s = &index.segments[i];
    file.seek(SeekFrom::Start(offsets[i]))?;
    let mut compressed = vec![0u8; s.size as usize];
    file.read_exact(&mut compressed)?;
    if Sha256::of(&compressed) != s.sha256 {
        return Err(io::Error::other(format!(
            "old segment {i} does not hash as its index says"
        )));
    }
    let mut raw = Vec::with_capacity(s.raw_size as usize);
    // A segment ends with a full flush, not a final block: read what it inflates to.
    let mut decoder = DeflateDecoder::new(&compressed[..]);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX {
                    return Err(io::Error::other("a segment inflates past its cap"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    if raw.len() != s.raw_size as usize {
        return Err(io::Error::other(format!(
            "old segment {i} inflates to {} bytes, not {}",
            raw.len(),
            s.raw_size
        )));
    }
    Ok(raw)
}

fn offsets(index: &SegmentIndex) -> Vec<u64> {
    index.placed().map(|(at, _)| at).collect()
}

fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split_inclusive(|&b| b == b'\n')
}

/// Writes the delta that rebuilds `new` from `old` (both files with their indexes).
/// Deterministic. Returns the number of segments it covers.
pub fn make(
    old_file: &mut (impl Read + Seek),
    old: &SegmentIndex,
    new_file: &mut (impl Read + Seek),
    new: &SegmentIndex,
    out: impl Write,
) -> Result<usize, DeltaError> {
    let old_offsets = offsets(old);
    let new_offsets = offsets(new);
    // Old segments by their SHA-256 (the first one wins).
    let mut held: HashMap<Sha256, usize> = HashMap::new();
    for (i, s) in old.segments.iter().enumerate() {
        held.entry(s.sha256).or_insert(i);
    }
    // Old segments by their lines: a sample of them (one in SAMPLE, by hash), enough to
    // place a new segment among the old ones, at a fraction of the memory.
    let mut by_line: HashMap<u64, u32> = HashMap::new();
    for i in 0..old.segments.len() {
        let raw = inflate_segment(old_file, old, &old_offsets, i)?;
        let i = u32::try_from(i).map_err(io::Error::other)?;
        for line in lines(&raw).filter_map(sampled) {
            by_line.entry(line).or_insert(i);
        }
    }
    let mut body = Vec::new();
    let mut entries = 0u32;
    // The old segment the previous new one came from: the next is likely its neighbour's.
    let mut previous: Option<usize> = None;
    for (i, s) in new.segments.iter().enumerate() {
        if let Some(&j) = held.get(&s.sha256) {
            previous = Some(j);
            continue;
        }
        let raw = inflate_segment(new_file, new, &new_offsets, i)?;
        // The old segments that hold most of its (sampled) lines, or else the one after
        // the old segment the previous one came from.
        let start = placed(&raw, &by_line, old.segments.len())
            .or_else(|| previous.map(|p| p + 1).filter(|&p| p < old.segments.len()));
        // Else (records past the old bundle's end) the last old segment: what it shares
        // with the new one is copied, the rest inserted.
        let Some(start) = start.or(old.segments.len().checked_sub(1)) else {
            continue; // nothing to edit from: fetched by range
        };
        previous = Some(start);
        let count = (old.segments.len() - start).min(usize::from(MAX_BASE));
        let mut base = Vec::new();
        for j in start..start + count {
            base.extend(inflate_segment(old_file, old, &old_offsets, j)?);
        }
        let ops = diff(&base, &raw);
        let inserted: usize = ops
            .iter()
            .map(|o| match o {
                Op::Insert(b) => b.len(),
                Op::Copy { .. } => 0,
            })
            .sum();
        // Worth it when what it inserts and its operations cost less than the segment:
        // inserts compressed a tenth better than the segment is (the delta is one gzip
        // -9 stream over every insert, a segment is compressed on its own), operations
        // 9 bytes each. Else fetched by range.
        let estimate = inserted as u64 * u64::from(s.size) * 9 / (raw.len().max(1) as u64 * 10)
            + 9 * ops.len() as u64;
        if estimate > u64::from(s.size) {
            continue;
        }
        entries += 1;
        body.extend_from_slice(&u32::try_from(i).map_err(io::Error::other)?.to_le_bytes());
        body.extend_from_slice(
            &u32::try_from(start)
                .map_err(io::Error::other)?
                .to_le_bytes(),
        );
        body.push(u8::try_from(count).map_err(io::Error::other)?);
        body.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        for op in ops {
            match op {
                Op::Copy { offset, len } => {
                    body.push(0);
                    body.extend_from_slice(&offset.to_le_bytes());
                    body.extend_from_slice(&len.to_le_bytes());
                }
                Op::Insert(bytes) => {
                    body.push(1);
                    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    body.extend_from_slice(&bytes);
                }
            }
        }
    }
    let mut gz = flate2::GzBuilder::new().write(out, flate2::Compression::best());
    gz.write_all(MAGIC)?;
    gz.write_all(&old.bundle_sha256.0)?;
    gz.write_all(&new.bundle_sha256.0)?;
    gz.write_all(&entries.to_le_bytes())?;
    gz.write_all(&body)?;
    gz.finish()?.flush()?;
    Ok(entries as usize)
}

/// One line in SAMPLE is kept to place segments (the lines whose hash it divides).
const SAMPLE: u64 = 4;

/// The line's hash when it is one of the sample (and long enough to say something).
fn sampled(line: &[u8]) -> Option<u64> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    if line.len() < 16 {
        return None;
    }
    // SipHash with fixed keys: the same on every run, as the delta must be.
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(line);
    (h % SAMPLE == 0).then_some(h)
}

/// The first of the [`MAX_BASE`] consecutive old segments that hold the most of `raw`'s
/// sampled lines (the earliest on a tie); `None` when none holds any.
fn placed(raw: &[u8], by_line: &HashMap<u64, u32>, old_segments: usize) -> Option<usize> {
    let mut hits: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for h in lines(raw).filter_map(sampled) {
        if let Some(&j) = by_line.get(&h) {
            *hits.entry(j as usize).or_default() += 1;
        }
    }
    let window = usize::from(MAX_BASE);
    let mut best: Option<(usize, usize)> = None;
    for &j in hits.keys() {
        // Windows that start at a hit (any best window can be moved to start at one).
        let start = j.min(old_segments.saturating_sub(window));
        let count: usize = hits.range(start..start + window).map(|(_, n)| n).sum();
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((start, count));
        }
    }
    best.map(|(start, _)| start)
}

/// Edits turning `base` into `target`: runs of lines found in the base are copies; the
/// lines between are edits of the base lines they replaced ([`refine`]).
fn diff(base: &[u8], target: &[u8]) -> Vec<Op> {
    refine(base, diff_lines(base, target))
}

/// Line-wise edits turning `base` into `target`: runs of lines found in the base are
/// copies, the rest inserts.
fn diff_lines(base: &[u8], target: &[u8]) -> Vec<Op> {
    let mut at: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut starts = Vec::new();
    let mut pos = 0;
    for line in lines(base) {
        at.entry(line).or_default().push(starts.len());
        starts.push(pos);
        pos += line.len();
    }
    starts.push(pos);
    let base_lines: Vec<&[u8]> = lines(base).collect();
    let mut ops: Vec<Op> = Vec::new();
    // The base line after the last copied one: where a run continues.
    let mut next: Option<usize> = None;
    for line in lines(target) {
        let continues = next.filter(|&n| base_lines.get(n) == Some(&line));
        let found = continues.or_else(|| at.get(line).and_then(|v| v.first().copied()));
        match found {
            Some(n) => {
                let (offset, len) = (starts[n] as u32, line.len() as u32);
                match ops.last_mut() {
                    Some(Op::Copy { offset: o, len: l }) if continues.is_some() => {
                        debug_assert_eq!(*o + *l, offset);
                        *l += len;
                    }
                    _ => ops.push(Op::Copy { offset, len }),
                }
                next = Some(n + 1);
            }
            None => {
                match ops.last_mut() {
                    Some(Op::Insert(bytes)) => bytes.extend_from_slice(line),
                    _ => ops.push(Op::Insert(line.to_vec())),
                }
                next = None;
            }
        }
    }
    ops
}

/// Most tokens on either side of one refined gap: Myers' diff costs (N + M) x D, and this
/// keeps the worst gap to a few milliseconds. Larger gaps stay whole lines.
const REFINE_MAX_TOKENS: usize = 2048;
/// The shortest copy worth its operation (9 bytes) over inserting the bytes (which the
/// delta's gzip compresses).
const MIN_COPY: usize = 24;

/// A record that changed is mostly the record it was (a date, a range, a reference
/// more): each inserted run of lines is diffed, token by token, against the base bytes
/// it took the place of (between the copies around it), and becomes copies of what
/// stayed and inserts of what is new. Deterministic: no deadline, a token cap instead.
fn refine(base: &[u8], ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    // Where the base continues after the last copy.
    let mut after_copy = 0usize;
    let mut ops = ops.into_iter().peekable();
    while let Some(op) = ops.next() {
        match op {
            Op::Copy { offset, len } => {
                after_copy = (offset + len) as usize;
                push(&mut out, Op::Copy { offset, len });
            }
            Op::Insert(bytes) => {
                let until = match ops.peek() {
                    Some(Op::Copy { offset, .. }) => *offset as usize,
                    _ => base.len(),
                };
                if after_copy >= until {
                    push(&mut out, Op::Insert(bytes));
                    continue;
                }
                for op in diff_tokens(base, after_copy..until, &bytes) {
                    push(&mut out, op);
                }
            }
        }
    }
    out
}

/// Edits turning `base[gap]` into `target`, token by token (a token ends after any of
/// `,:{}[]"` or a space): copies carry offsets in the whole base.
fn diff_tokens(base: &[u8], gap: std::ops::Range<usize>, target: &[u8]) -> Vec<Op> {
    let old = tokens(&base[gap.clone()]);
    let new = tokens(target);
    if old.len() > REFINE_MAX_TOKENS || new.len() > REFINE_MAX_TOKENS {
        return vec![Op::Insert(target.to_vec())];
    }
    // Byte offset where each token starts, and one past the last.
    let starts = |toks: &[&[u8]]| {
        let mut at = Vec::with_capacity(toks.len() + 1);
        let mut pos = 0usize;
        for t in toks {
            at.push(pos);
            pos += t.len();
        }
        at.push(pos);
        at
    };
    let (old_at, new_at) = (starts(&old), starts(&new));
    let mut ops = Vec::new();
    for d in similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new) {
        let (new_range, copy_from) = match d {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => (new_index..new_index + len, Some(old_index)),
            similar::DiffOp::Delete { .. } => continue,
            similar::DiffOp::Insert {
                new_index, new_len, ..
            }
            | similar::DiffOp::Replace {
                new_index, new_len, ..
            } => (new_index..new_index + new_len, None),
        };
        let bytes = &target[new_at[new_range.start]..new_at[new_range.end]];
        match copy_from {
            Some(o) if bytes.len() >= MIN_COPY => ops.push(Op::Copy {
                offset: (gap.start + old_at[o]) as u32,
                len: bytes.len() as u32,
            }),
            _ => ops.push(Op::Insert(bytes.to_vec())),
        }
    }
    ops
}

fn tokens(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split_inclusive(|b| matches!(b, b',' | b':' | b'{' | b'}' | b'[' | b']' | b'"' | b' '))
        .collect()
}

/// Appends `op`, joining it to the last one when they continue each other.
fn push(ops: &mut Vec<Op>, op: Op) {
    match (ops.last_mut(), op) {
        (Some(Op::Insert(last)), Op::Insert(bytes)) => last.extend_from_slice(&bytes),
        (Some(Op::Copy { offset: o, len: l }), Op::Copy { offset, len }) if *o + *l == offset => {
            *l += len
        }
        (_, op) => ops.push(op),
    }
}

/// A delta read and checked against the bundles it claims to join.
pub struct Delta {
    entries: Vec<Entry>,
}

struct Entry {
    segment: usize,
    base_start: usize,
    base_count: usize,
    ops: Vec<Op>,
}

impl Delta {
    /// Reads a delta (gzip) from anyone: it must join `old` to `new`, and every number in
    /// it must fit them.
    pub fn read(
        input: impl Read,
        old: &SegmentIndex,
        new: &SegmentIndex,
    ) -> Result<Delta, DeltaError> {
        let mut r = flate2::read::GzDecoder::new(input).take(MAX_DELTA_BYTES);
        let mut magic = [0u8; 16];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(DeltaError::Magic);
        }
        let mut sha = [0u8; 32];
        r.read_exact(&mut sha)?;
        let from = Sha256(sha);
        r.read_exact(&mut sha)?;
        if from != old.bundle_sha256 || Sha256(sha) != new.bundle_sha256 {
            return Err(DeltaError::OtherBundles);
        }
        let count = read_u32(&mut r)? as usize;
        if count > new.segments.len() {
            return Err(DeltaError::Invalid(format!("{count} entries")));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let segment = read_u32(&mut r)? as usize;
            let base_start = read_u32(&mut r)? as usize;
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            let base_count = usize::from(b[0]);
            if segment >= new.segments.len()
                || base_count == 0
                || base_count > usize::from(MAX_BASE)
                || base_start + base_count > old.segments.len()
            {
                return Err(DeltaError::Invalid(format!(
                    "an entry for segment {segment} from {base_count} at {base_start}: out of range"
                )));
            }
            let base_len: u64 = old.segments[base_start..base_start + base_count]
                .iter()
                .map(|s| u64::from(s.raw_size))
                .sum();
            let target = u64::from(new.segments[segment].raw_size);
            let n_ops = read_u32(&mut r)? as usize;
            if n_ops as u64 > target {
                return Err(DeltaError::Invalid(format!(
                    "segment {segment}: {n_ops} operations"
                )));
            }
            let mut ops = Vec::with_capacity(n_ops);
            let mut built = 0u64;
            for _ in 0..n_ops {
                r.read_exact(&mut b)?;
                let op = match b[0] {
                    0 => {
                        let (offset, len) = (read_u32(&mut r)?, read_u32(&mut r)?);
                        if u64::from(offset) + u64::from(len) > base_len {
                            return Err(DeltaError::Invalid(format!(
                                "segment {segment}: a copy past its base"
                            )));
                        }
                        built += u64::from(len);
                        Op::Copy { offset, len }
                    }
                    1 => {
                        let len = read_u32(&mut r)?;
                        built += u64::from(len);
                        if built > target {
                            return Err(DeltaError::Invalid(format!(
                                "segment {segment}: longer than the index says"
                            )));
                        }
                        let mut bytes = vec![0u8; len as usize];
                        r.read_exact(&mut bytes)?;
                        Op::Insert(bytes)
                    }
                    t => return Err(DeltaError::Invalid(format!("operation type {t}"))),
                };
                if built > target {
                    return Err(DeltaError::Invalid(format!(
                        "segment {segment}: longer than the index says"
                    )));
                }
                ops.push(op);
            }
            if built != target {
                return Err(DeltaError::Invalid(format!(
                    "segment {segment}: {built} bytes, the index says {target}"
                )));
            }
            entries.push(Entry {
                segment,
                base_start,
                base_count,
                ops,
            });
        }
        let mut rest = [0u8; 1];
        if r.read(&mut rest)? != 0 {
            return Err(DeltaError::Invalid("bytes after the last entry".into()));
        }
        Ok(Delta { entries })
    }

    /// The segments of the new bundle this delta covers.
    pub fn segments(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|e| e.segment)
    }

    /// Rebuilds the segments the delta covers from the old file (`open_old` opens it once
    /// per worker: the segments are rebuilt and compressed on every core, a batch at a
    /// time): each entry's content, compressed as the builder does; `found(segment,
    /// bytes)` gets, in order, those whose compressed bytes hash as the new index says.
    /// Returns the segments that did not (to fetch by range).
    pub fn apply<R: Read + Seek>(
        &self,
        open_old: impl Fn() -> io::Result<R> + Sync,
        old: &SegmentIndex,
        new: &SegmentIndex,
        mut found: impl FnMut(usize, &[u8]) -> io::Result<()>,
    ) -> Result<Vec<usize>, DeltaError> {
        let old_offsets = offsets(old);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let mut failed = Vec::new();
        // A batch bounds the memory: at most BATCH rebuilt segments held at once.
        const BATCH: usize = 64;
        for batch in self.entries.chunks(BATCH) {
            let part = batch.len().div_ceil(workers);
            let results: Vec<Result<Rebuilt, DeltaError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .chunks(part)
                    .map(|entries| {
                        let (open_old, old_offsets) = (&open_old, &old_offsets);
                        scope.spawn(move || {
                            let mut file = open_old()?;
                            rebuild(entries, &mut file, old, old_offsets, new)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(DeltaError::Invalid("a rebuilding thread failed".into()))
                        })
                    })
                    .collect()
            });
            for result in results {
                for (segment, bytes) in result? {
                    match bytes {
                        Some(bytes) => found(segment, &bytes)?,
                        None => failed.push(segment),
                    }
                }
            }
        }
        Ok(failed)
    }
    /// [`apply`](Self::apply) into `out`, whose first byte sits at offset `start` of its
    /// file: the rebuilt segments written one after another. Returns where each landed
    /// (segment number, offset), and the segments that did not rebuild.
    pub fn apply_to<R: Read + Seek>(
        &self,
        open_old: impl Fn() -> io::Result<R> + Sync,
        old: &SegmentIndex,
        new: &SegmentIndex,
        out: &mut impl Write,
        start: u64,
    ) -> Result<(Placed, Vec<usize>), DeltaError> {
        let mut at = start;
        let mut placed = Vec::new();
        let failed = self.apply(open_old, old, new, |i, bytes| {
            out.write_all(bytes)?;
            placed.push((i, at));
            at += bytes.len() as u64;
            Ok(())
        })?;
        Ok((placed, failed))
    }
}

/// Where rebuilt segments landed in a file: (segment number, offset), in order.
pub type Placed = Vec<(usize, u64)>;

/// Per segment rebuilt: its number, and its compressed bytes if they hash as they must.
type Rebuilt = Vec<(usize, Option<Vec<u8>>)>;

/// Rebuilds `entries` (one worker's share): each segment's compressed bytes, or `None`
/// when they do not hash as the new index says.
fn rebuild(
    entries: &[Entry],
    old_file: &mut (impl Read + Seek),
    old: &SegmentIndex,
    old_offsets: &[u64],
    new: &SegmentIndex,
) -> Result<Rebuilt, DeltaError> {
    let mut out = Vec::with_capacity(entries.len());
    // Old segments inflated, by number: neighbouring entries share most of their bases
    // (segment i from old i..i+3, i+1 from i+1..i+4), each is inflated once.
    let mut inflated: std::collections::BTreeMap<usize, Vec<u8>> = Default::default();
    let mut base = Vec::new();
    for e in entries {
        let range = e.base_start..e.base_start + e.base_count;
        // Bases mostly ascend: what lies before this one is done with.
        inflated = inflated.split_off(&range.start);
        if inflated.len() > 2 * usize::from(MAX_BASE) {
            inflated.retain(|j, _| range.contains(j));
        }
        base.clear();
        for j in range {
            let raw = match inflated.entry(j) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(inflate_segment(old_file, old, old_offsets, j)?)
                }
            };
            base.extend_from_slice(raw);
        }
        let mut raw = Vec::with_capacity(new.segments[e.segment].raw_size as usize);
        for op in &e.ops {
            match op {
                Op::Copy { offset, len } => {
                    let (a, n) = (*offset as usize, *len as usize);
                    raw.extend_from_slice(&base[a..a + n]);
                }
                Op::Insert(bytes) => raw.extend_from_slice(bytes),
            }
        }
        let compressed = compress_segment(&raw)?;
        let ok = Sha256::of(&compressed) == new.segments[e.segment].sha256;
        out.push((e.segment, ok.then_some(compressed)));
    }
    Ok(out)
}

/// Where a delta from the bundle `from` is published beside a bundle at `bundle`:
/// `<bundle>.delta-<the first 16 hex digits of from's SHA-256>`.
pub fn sidecar_url(bundle: &str, from: &Sha256) -> String {
    format!("{bundle}.delta-{}", &from.to_hex()[..16])
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(base: &[u8], ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Copy { offset, len } => {
                    out.extend_from_slice(&base[*offset as usize..(*offset + *len) as usize])
                }
                Op::Insert(bytes) => out.extend_from_slice(bytes),
            }
        }
        out
    }

    fn inserted(ops: &[Op]) -> usize {
        ops.iter()
            .map(|o| match o {
                Op::Insert(b) => b.len(),
                Op::Copy { .. } => 0,
            })
            .sum()
    }

    fn record(id: u32, modified: &str, extra: &str) -> String {
        format!(
            "{{\"id\":\"GO-2024-{id:04}\",\"modified\":\"{modified}\",\"summary\":\"A flaw in \
             the parser of package example.com/pkg{id} lets a crafted input exhaust memory\",\
             \"affected\":[{{\"package\":{{\"ecosystem\":\"Go\",\"name\":\"example.com/pkg{id}\"}},\
             \"ranges\":[{{\"type\":\"SEMVER\",\"events\":[{{\"introduced\":\"0\"}},\
             {{\"fixed\":\"1.{id}.3\"}}]}}]}}],\"references\":[{{\"type\":\"FIX\",\
             \"url\":\"https://example.com/pkg{id}/commit/{id}\"}}{extra}]}}\n"
        )
    }

    #[test]
    fn a_changed_record_costs_what_changed_in_it() {
        let base: String = (1..=8)
            .map(|i| record(i, "2024-01-01T00:00:00Z", ""))
            .collect();
        let mut target = String::new();
        for i in 1..=8 {
            target += &if i == 4 {
                record(
                    i,
                    "2024-02-03T04:05:06Z",
                    ",{\"type\":\"WEB\",\"url\":\"https://example.com/advisory/4\"}",
                )
            } else {
                record(i, "2024-01-01T00:00:00Z", "")
            };
        }
        let lines = diff_lines(base.as_bytes(), target.as_bytes());
        let refined = diff(base.as_bytes(), target.as_bytes());
        assert_eq!(replay(base.as_bytes(), &lines), target.as_bytes());
        assert_eq!(replay(base.as_bytes(), &refined), target.as_bytes());
        // Line by line the whole record is new; refined, the date and the reference.
        assert_eq!(
            inserted(&lines),
            record(
                4,
                "2024-02-03T04:05:06Z",
                ",{\"type\":\"WEB\",\"url\":\"https://example.com/advisory/4\"}"
            )
            .len()
        );
        assert!(
            inserted(&refined) < 120,
            "{} bytes inserted",
            inserted(&refined)
        );
    }

    #[test]
    fn refining_keeps_any_edit_exact() {
        // Inserts at the start and the end, a removed record, repeated tokens, no
        // newline at the end: whatever the edits, replaying them gives the target.
        let base = format!(
            "{}{}{}",
            record(1, "a", ""),
            record(2, "b", ""),
            record(3, "c", "")
        );
        let cases = [
            format!("{}{}", record(0, "z", ""), base),
            format!("{}{}", base, record(9, "z", ",{}")),
            format!("{}{}", record(1, "a", ""), record(3, "c", ",[]")),
            "{\"a\":\"b\",\"a\":\"b\"}".to_owned(),
            String::new(),
            format!("{}tail without a newline", record(2, "b", "")),
        ];
        for target in cases {
            let ops = diff(base.as_bytes(), target.as_bytes());
            assert_eq!(replay(base.as_bytes(), &ops), target.as_bytes(), "{target}");
        }
    }
}
