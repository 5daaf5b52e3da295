//! Sorting more records than should be held in memory, for the index builders: records
//! (byte strings, ordered bytewise) are gathered up to a memory budget, sorted and
//! written as a run to a file in a scratch directory; at the end the runs are merged in
//! one streaming pass. Memory is the budget plus a read buffer per run, whatever the
//! number of records; when everything fits in the budget nothing is written.
//!
//! The callers encode what they sort so that bytewise order is the order they need
//! ([`escape`] keeps a string's order when it is followed by more fields).
//!
//! [`ExternalSort::finish`] gives the records once, as the merge makes them;
//! [`ExternalSort::finish_replayable`] gives a [`Replay`] that can be read again and
//! again (the scan's report reads its findings once per output pass), merging the runs
//! into one unnamed temporary file when there are runs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Records and their bookkeeping held before a run is written.
pub const DEFAULT_BUDGET: usize = 16 << 20;
/// Bytes of bookkeeping per record.
const SPAN: usize = std::mem::size_of::<(u64, u32, u32)>();
/// Read buffer of each run while merging.
const RUN_BUFFER: usize = 64 << 10;

/// A sort in progress: [`push`](Self::push) records, then [`finish`](Self::finish).
pub struct ExternalSort {
    scratch: Scratch,
    name: &'static str,
    budget: usize,
    arena: Vec<u8>,
    /// (the record's first 8 bytes, big-endian, zero-padded; offset; length): comparing
    /// the prefix first keeps most comparisons out of the arena.
    spans: Vec<(u64, u32, u32)>,
    runs: Vec<PathBuf>,
}

/// Where runs are written.
enum Scratch {
    /// A directory the caller owns.
    Dir(PathBuf),
    /// A private directory under the system's temporary directory (`TMPDIR`), made at
    /// the first run, removed when the sort is done.
    Temp(Option<tempfile::TempDir>),
}

impl Scratch {
    fn dir(&mut self) -> io::Result<&Path> {
        match self {
            Scratch::Dir(dir) => Ok(dir),
            Scratch::Temp(slot) => {
                let dir = match slot.take() {
                    Some(dir) => dir,
                    None => tempfile::Builder::new()
                        .prefix("defender-lite-")
                        .tempdir()?,
                };
                Ok(slot.insert(dir).path())
            }
        }
    }
}

impl ExternalSort {
    /// Runs go to `scratch/<name>-<n>.run` (the directory must exist).
    pub fn new(scratch: &Path, name: &'static str, budget: usize) -> ExternalSort {
        Self::with_scratch(Scratch::Dir(scratch.to_owned()), name, budget)
    }

    /// Runs go to a private directory under the system's temporary directory, made only
    /// if the records outgrow the budget.
    pub fn in_temp_dir(name: &'static str, budget: usize) -> ExternalSort {
        Self::with_scratch(Scratch::Temp(None), name, budget)
    }

    fn with_scratch(scratch: Scratch, name: &'static str, budget: usize) -> ExternalSort {
        ExternalSort {
            scratch,
            name,
            budget: budget.max(1 << 16),
            arena: Vec::new(),
            spans: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, record: &[u8]) -> io::Result<()> {
        let Ok(len) = u32::try_from(record.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record over 4 GiB",
            ));
        };
        if self.arena.capacity() == 0 {
            // Reserved once and never outgrown (a run is written first), so memory stays
            // within the budget: 5/8 for the bytes, 3/8 for the spans.
            self.arena.reserve_exact(self.budget / 8 * 5);
            self.spans.reserve_exact(self.budget / 8 * 3 / SPAN);
        }
        if !self.spans.is_empty()
            && (self.arena.len() + record.len() > self.arena.capacity()
                || self.spans.len() == self.spans.capacity())
        {
            self.spill()?;
        }
        let Ok(offset) = u32::try_from(self.arena.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sort budget over 4 GiB",
            ));
        };
        self.spans.push((prefix(record), offset, len));
        self.arena.extend_from_slice(record);
        Ok(())
    }

    /// The records in order, to be read as many times as needed. Past the budget, the
    /// runs are merged into one unnamed file in the scratch directory (nothing is left
    /// behind, whatever happens to the process).
    pub fn finish_replayable(mut self) -> io::Result<Replay> {
        if self.runs.is_empty() {
            self.sort_spans();
            return Ok(Replay::Memory {
                arena: self.arena,
                spans: self.spans,
            });
        }
        let file = tempfile::tempfile_in(self.scratch.dir()?)?;
        let mut out = BufWriter::with_capacity(RUN_BUFFER, file);
        let mut sorted = self.finish()?;
        let mut record = Vec::new();
        let mut records = 0;
        while sorted.next_into(&mut record)? {
            write_record(&mut out, &record)?;
            records += 1;
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        Ok(Replay::File { file, records })
    }

    /// The records in order.
    pub fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            self.sort_spans();
            return Ok(Sorted(Source::Memory {
                arena: self.arena,
                spans: self.spans.into_iter(),
            }));
        }
        if !self.spans.is_empty() {
            self.spill()?;
        }
        drop(self.arena);
        let mut heap = BinaryHeap::with_capacity(self.runs.len());
        let mut readers = Vec::with_capacity(self.runs.len());
        for (n, path) in self.runs.iter().enumerate() {
            let file = File::open(path)?;
            // The open file keeps the data; nothing is left behind if the merge stops.
            std::fs::remove_file(path)?;
            let mut reader = BufReader::with_capacity(RUN_BUFFER, file);
            let mut first = Vec::new();
            if read_record(&mut reader, &mut first)? {
                heap.push(Reverse((first, n)));
            }
            readers.push(reader);
        }
        Ok(Sorted(Source::Merge { heap, readers }))
    }

    fn sort_spans(&mut self) {
        let arena = &self.arena;
        self.spans.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                arena[a.1 as usize..][..a.2 as usize].cmp(&arena[b.1 as usize..][..b.2 as usize])
            })
        });
    }

    fn spill(&mut self) -> io::Result<()> {
        self.sort_spans();
        let path = self
            .scratch
            .dir()?
            .join(format!("{}-{}.run", self.name, self.runs.len()));
        let mut out = BufWriter::with_capacity(RUN_BUFFER, File::create(&path)?);
        for &(_, offset, len) in &self.spans {
            write_record(&mut out, &self.arena[offset as usize..][..len as usize])?;
        }
        out.into_inner().map_err(io::IntoInnerError::into_error)?;
        self.runs.push(path);
        self.arena.clear();
        self.spans.clear();
        Ok(())
    }
}

/// The sorted records, read one at a time.
pub struct Sorted(Source);

enum Source {
    Memory {
        arena: Vec<u8>,
        spans: std::vec::IntoIter<(u64, u32, u32)>,
    },
    Merge {
        heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
        readers: Vec<BufReader<File>>,
    },
}

impl Sorted {
    /// The next record into `out` (replacing what it held); `false` at the end.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        match &mut self.0 {
            Source::Memory { arena, spans } => match spans.next() {
                Some((_, offset, len)) => {
                    out.clear();
                    out.extend_from_slice(&arena[offset as usize..][..len as usize]);
                    Ok(true)
                }
                None => Ok(false),
            },
            Source::Merge { heap, readers } => {
                let Some(Reverse((record, run))) = heap.pop() else {
                    return Ok(false);
                };
                // The caller's old buffer takes the run's next record: no allocation per
                // record once the buffers have grown.
                let mut next = std::mem::replace(out, record);
                if read_record(&mut readers[run], &mut next)? {
                    heap.push(Reverse((next, run)));
                }
                Ok(true)
            }
        }
    }
}

/// Sorted records that can be read again: [`Replay::reader`] starts a pass.
pub enum Replay {
    /// Everything fitted in the budget.
    Memory {
        arena: Vec<u8>,
        spans: Vec<(u64, u32, u32)>,
    },
    /// The merged runs, in one unnamed file.
    File { file: File, records: u64 },
}

impl Replay {
    pub fn len(&self) -> u64 {
        match self {
            Replay::Memory { spans, .. } => spans.len() as u64,
            Replay::File { records, .. } => *records,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the records outgrew the budget and are read from a file.
    pub fn spilled(&self) -> bool {
        matches!(self, Replay::File { .. })
    }

    /// A pass over the records, from the first. Passes are meant one after another:
    /// those over a file share its offset.
    pub fn reader(&self) -> io::Result<ReplayReader<'_>> {
        Ok(ReplayReader(match self {
            Replay::Memory { arena, spans } => Pass::Memory {
                arena,
                spans: spans.iter(),
            },
            Replay::File { file, .. } => {
                let mut file = file;
                file.seek(SeekFrom::Start(0))?;
                Pass::File(BufReader::with_capacity(RUN_BUFFER, file))
            }
        }))
    }
}

/// One pass over a [`Replay`].
pub struct ReplayReader<'r>(Pass<'r>);

enum Pass<'r> {
    Memory {
        arena: &'r [u8],
        spans: std::slice::Iter<'r, (u64, u32, u32)>,
    },
    File(BufReader<&'r File>),
}

impl ReplayReader<'_> {
    /// The next record into `out` (replacing what it held); `false` at the end.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        match &mut self.0 {
            Pass::Memory { arena, spans } => Ok(match spans.next() {
                Some(&(_, offset, len)) => {
                    out.clear();
                    out.extend_from_slice(&arena[offset as usize..][..len as usize]);
                    true
                }
                None => false,
            }),
            Pass::File(reader) => read_record(reader, out),
        }
    }
}

fn write_record(out: &mut impl Write, record: &[u8]) -> io::Result<()> {
    // `push` refuses records over u32::MAX bytes.
    let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
    out.write_all(&len.to_le_bytes())?;
    out.write_all(record)
}

/// The first 8 bytes, big-endian, zero-padded: ordered as the records are, up to ties.
fn prefix(record: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = record.len().min(8);
    bytes[..n].copy_from_slice(&record[..n]);
    u64::from_be_bytes(bytes)
}

/// One `u32` length and its bytes; `false` at a clean end of the run.
fn read_record<R: Read>(input: &mut BufReader<R>, out: &mut Vec<u8>) -> io::Result<bool> {
    if input.fill_buf()?.is_empty() {
        return Ok(false);
    }
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    out.clear();
    out.resize(u32::from_le_bytes(len) as usize, 0);
    input.read_exact(out)?;
    Ok(true)
}

/// Appends `s` so that bytewise order of what is appended is the order of the strings,
/// even when more bytes follow: `0x00` is written `0x00 0xff`, and the end `0x00 0x01`.
pub fn escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// Reads back what [`escape`] wrote at the start of `bytes`: the string and the rest.
pub fn unescape(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut s = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != 0 {
            s.push(bytes[i]);
            i += 1;
            continue;
        }
        match *bytes.get(i + 1)? {
            0xff => s.push(0),
            1 => return Some((s, &bytes[i + 2..])),
            _ => return None,
        }
        i += 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(records: &[Vec<u8>], budget: usize) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let mut sort = ExternalSort::new(dir.path(), "t", budget);
        for r in records {
            sort.push(r).unwrap();
        }
        let mut out = Vec::new();
        let mut sorted = sort.finish().unwrap();
        let mut buf = Vec::new();
        while sorted.next_into(&mut buf).unwrap() {
            out.push(buf.clone());
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "runs are removed"
        );
        out
    }

    fn replayed(records: &[Vec<u8>], budget: usize) -> (Replay, Vec<Vec<u8>>) {
        let mut sort = ExternalSort::in_temp_dir("t", budget);
        for r in records {
            sort.push(r).unwrap();
        }
        let replay = sort.finish_replayable().unwrap();
        let mut passes = Vec::new();
        for _ in 0..2 {
            let mut reader = replay.reader().unwrap();
            let mut pass = Vec::new();
            let mut buf = Vec::new();
            while reader.next_into(&mut buf).unwrap() {
                pass.push(buf.clone());
            }
            passes.push(pass);
        }
        assert_eq!(passes[0], passes[1], "every pass reads the same records");
        assert_eq!(replay.len(), records.len() as u64);
        let pass = passes.pop().unwrap();
        (replay, pass)
    }

    #[test]
    fn records_come_back_in_order_in_memory_and_through_runs() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let records: Vec<Vec<u8>> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = (x % 13) as usize;
                x.to_le_bytes().iter().cycle().take(len).copied().collect()
            })
            .collect();
        let mut expected = records.clone();
        expected.sort();
        assert_eq!(sorted(&records, 1 << 30), expected);
        // A 64 KiB budget: several runs.
        assert_eq!(sorted(&records, 0), expected);

        let (replay, pass) = replayed(&records, 1 << 30);
        assert!(!replay.spilled());
        assert_eq!(pass, expected);
        let (replay, pass) = replayed(&records, 0);
        assert!(replay.spilled(), "a 64 KiB budget is outgrown");
        assert_eq!(pass, expected);
    }

    #[test]
    fn escaped_strings_keep_their_order_before_more_fields() {
        let strings: [&[u8]; 6] = [b"", b"\0", b"\0\0", b"a", b"a\0", b"a\x01"];
        let encode = |s: &[u8], tail: u8| {
            let mut out = Vec::new();
            escape(&mut out, s);
            out.push(tail);
            out
        };
        for (i, a) in strings.iter().enumerate() {
            for (j, b) in strings.iter().enumerate() {
                assert_eq!(
                    encode(a, 0xff).cmp(&encode(b, 0)),
                    if i == j {
                        std::cmp::Ordering::Greater
                    } else {
                        i.cmp(&j)
                    },
                    "{a:?} {b:?}"
                );
            }
            let enc = encode(a, 7);
            assert_eq!(unescape(&enc), Some((a.to_vec(), &[7u8][..])));
        }
    }
}
