//! The segment index of a bundle (`<bundle>.idx`), and building a new bundle from the
//! segments a client already holds plus the ones it fetches.
//!
//! Layout, all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 16 | magic `relay-segments1\n` |
//! | 32 | SHA-256 of the bundle file it describes |
//! | 4 + n | the bundle's head member: its length, then its bytes (manifest and signature) |
//! | 4 | segment count |
//! | 40 each | a segment: compressed size, uncompressed size (u32 each), SHA-256 of its compressed bytes |
//! | 10 | the payload's tail: the final empty block `03 00`, CRC-32 and size |
//!
//! The file is the head, the canonical gzip header, the segments in order, and the tail.
//! Nothing in an index is trusted: it only says where to look. Its head is verified like
//! any bundle's before anything is fetched, each segment is checked against its SHA-256
//! as it is placed, and the file built is verified whole before it is used.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::framing::CANONICAL_GZIP_HEADER;
use super::segments::{FINAL_BLOCK, MAX, Segment};
use super::types::Sha256;

pub const MAGIC: &[u8; 16] = b"relay-segments1\n";
/// Most segments an index may list (2 GiB of payload in 8 KiB segments, and then some).
pub const MAX_SEGMENTS: usize = 1 << 20;
/// Largest head an index may carry (the verifier's manifest cap, signature and framing).
pub const MAX_HEAD: usize = (1 << 20) + 64 * 1024;
/// Largest compressed segment: deflate's worst case for [`MAX`] bytes, with margin.
pub const MAX_SEGMENT_SIZE: u32 = (MAX + MAX / 8 + 1024) as u32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentIndex {
    pub bundle_sha256: Sha256,
    pub head: Vec<u8>,
    pub segments: Vec<Segment>,
    pub tail: [u8; 10],
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("not a segment index (bad magic)")]
    Magic,
    #[error("segment index truncated")]
    Truncated,
    #[error("segment index: {0}")]
    Invalid(String),
    #[error("segment index does not match the bundle: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SegmentIndex {
    /// Where the payload's first segment starts in the bundle file.
    pub fn payload_start(&self) -> u64 {
        self.head.len() as u64 + CANONICAL_GZIP_HEADER.len() as u64
    }

    /// The bundle file's size.
    pub fn bundle_size(&self) -> u64 {
        self.payload_start()
            + self.segments.iter().map(|s| u64::from(s.size)).sum::<u64>()
            + self.tail.len() as u64
    }

    /// Each segment with its offset in the bundle file.
    pub fn placed(&self) -> impl Iterator<Item = (u64, &Segment)> {
        let mut at = self.payload_start();
        self.segments.iter().map(move |s| {
            let here = at;
            at += u64::from(s.size);
            (here, s)
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MAGIC.len() + 32 + 4 + self.head.len() + 4 + 40 * self.segments.len() + 10,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.bundle_sha256.0);
        out.extend_from_slice(&(self.head.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in &self.segments {
            out.extend_from_slice(&s.size.to_le_bytes());
            out.extend_from_slice(&s.raw_size.to_le_bytes());
            out.extend_from_slice(&s.sha256.0);
        }
        out.extend_from_slice(&self.tail);
        out
    }

    /// Parses an index from anyone, within the caps above.
    pub fn decode(bytes: &[u8]) -> Result<SegmentIndex, IndexError> {
        let mut r = Cursor(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(IndexError::Magic);
        }
        let bundle_sha256 = Sha256(r.array()?);
        let head_len = r.u32()? as usize;
        if head_len > MAX_HEAD {
            return Err(IndexError::Invalid(format!(
                "a head of {head_len} bytes (at most {MAX_HEAD})"
            )));
        }
        let head = r.take(head_len)?.to_vec();
        let count = r.u32()? as usize;
        if count > MAX_SEGMENTS {
            return Err(IndexError::Invalid(format!(
                "{count} segments (at most {MAX_SEGMENTS})"
            )));
        }
        if r.0.len() < count.saturating_mul(40) {
            return Err(IndexError::Truncated);
        }
        let mut segments = Vec::with_capacity(count);
        for i in 0..count {
            let size = r.u32()?;
            let raw_size = r.u32()?;
            let sha256 = Sha256(r.array()?);
            if size == 0 || size > MAX_SEGMENT_SIZE || raw_size == 0 || raw_size as usize > MAX {
                return Err(IndexError::Invalid(format!(
                    "segment {i}: {size} compressed bytes for {raw_size} (sizes out of range)"
                )));
            }
            segments.push(Segment {
                size,
                raw_size,
                sha256,
            });
        }
        let tail: [u8; 10] = r.array()?;
        if tail[..2] != FINAL_BLOCK {
            return Err(IndexError::Invalid(
                "the tail is not a final empty block".into(),
            ));
        }
        if !r.0.is_empty() {
            return Err(IndexError::Invalid("bytes after the tail".into()));
        }
        Ok(SegmentIndex {
            bundle_sha256,
            head,
            segments,
            tail,
        })
    }

    /// Checks the index against the bundle file it claims to describe: every byte where
    /// it says, every segment hashing as listed. A held bundle's index is checked once,
    /// before its segments are offered for reuse.
    pub fn check_against(&self, file: &mut (impl Read + Seek)) -> Result<(), IndexError> {
        let len = file.seek(SeekFrom::End(0))?;
        if len != self.bundle_size() {
            return Err(IndexError::Mismatch(format!(
                "the index adds up to {} bytes, the file has {len}",
                self.bundle_size()
            )));
        }
        file.seek(SeekFrom::Start(0))?;
        let mut whole = sha2::Sha256::default();
        let mut head = vec![0u8; self.head.len()];
        file.read_exact(&mut head)?;
        if head != self.head {
            return Err(IndexError::Mismatch("the head differs".into()));
        }
        let mut gz = [0u8; 10];
        file.read_exact(&mut gz)?;
        if gz != CANONICAL_GZIP_HEADER {
            return Err(IndexError::Mismatch(
                "the payload's gzip header differs".into(),
            ));
        }
        use sha2::Digest;
        whole.update(&head);
        whole.update(gz);
        let mut buf = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            buf.resize(s.size as usize, 0);
            file.read_exact(&mut buf)?;
            if Sha256::of(&buf) != s.sha256 {
                return Err(IndexError::Mismatch(format!("segment {i} differs")));
            }
            whole.update(&buf);
        }
        let mut tail = [0u8; 10];
        file.read_exact(&mut tail)?;
        if tail != self.tail {
            return Err(IndexError::Mismatch("the tail differs".into()));
        }
        whole.update(tail);
        if Sha256::from_hasher(whole) != self.bundle_sha256 {
            return Err(IndexError::Mismatch("the file's SHA-256 differs".into()));
        }
        Ok(())
    }
}

/// Where each segment of a new bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Per segment of the new index: `Some(offset)` in the held file, or `None` to fetch.
    pub sources: Vec<Option<u64>>,
    /// Byte ranges of the new file to fetch (start, end exclusive), merged where adjacent.
    pub fetch: Vec<(u64, u64)>,
    pub fetch_bytes: u64,
    pub reused_bytes: u64,
}

/// Which segments of `new` the held bundle has (by SHA-256), and the ranges of the new
/// file that must be fetched: its head and tail always come with the index.
pub fn plan(new: &SegmentIndex, held: Option<&SegmentIndex>) -> Plan {
    let have: std::collections::HashMap<Sha256, u64> = held
        .map(|h| h.placed().map(|(at, s)| (s.sha256, at)).collect())
        .unwrap_or_default();
    let mut sources = Vec::with_capacity(new.segments.len());
    let mut fetch: Vec<(u64, u64)> = Vec::new();
    let (mut fetch_bytes, mut reused_bytes) = (0, 0);
    for (at, s) in new.placed() {
        let size = u64::from(s.size);
        match have.get(&s.sha256) {
            Some(&held_at) => {
                sources.push(Some(held_at));
                reused_bytes += size;
            }
            None => {
                sources.push(None);
                fetch_bytes += size;
                match fetch.last_mut() {
                    Some((_, end)) if *end == at => *end = at + size,
                    _ => fetch.push((at, at + size)),
                }
            }
        }
    }
    Plan {
        sources,
        fetch,
        fetch_bytes,
        reused_bytes,
    }
}

/// The ranges to fetch given where each segment comes from (`None`: fetch it).
pub fn ranges_for(new: &SegmentIndex, sources: &[Option<u64>]) -> Plan {
    let mut fetch: Vec<(u64, u64)> = Vec::new();
    let (mut fetch_bytes, mut reused_bytes) = (0, 0);
    for ((at, s), source) in new.placed().zip(sources) {
        let size = u64::from(s.size);
        if source.is_some() {
            reused_bytes += size;
            continue;
        }
        fetch_bytes += size;
        match fetch.last_mut() {
            Some((_, end)) if *end == at => *end = at + size,
            _ => fetch.push((at, at + size)),
        }
    }
    Plan {
        sources: sources.to_vec(),
        fetch,
        fetch_bytes,
        reused_bytes,
    }
}

/// Why a bundle could not be built from segments.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("segment {index} ({origin}) does not hash as the index says")]
    BadSegment { index: usize, origin: &'static str },
    #[error("a fetched range is missing or short: segment {index}")]
    Missing { index: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes the new bundle file: the index's head, the gzip header, each segment from the
/// held file or from `fetched` (the plan's segments, concatenated in order from where it
/// stands), checked against its SHA-256, and the tail (see [`assemble_pieces`]). The
/// result still has to be verified as a bundle.
pub fn assemble(
    new: &SegmentIndex,
    plan: &Plan,
    held: Option<&mut (impl Read + Seek)>,
    fetched: &mut (impl Read + Seek),
    out: &mut impl Write,
) -> Result<(), RebuildError> {
    let mut at = fetched.stream_position()?;
    let pieces: Vec<Piece> = new
        .segments
        .iter()
        .zip(&plan.sources)
        .map(|(s, source)| match source {
            Some(held_at) => Piece::Held(*held_at),
            None => {
                let here = at;
                at += u64::from(s.size);
                Piece::Spool(here)
            }
        })
        .collect();
    match held {
        Some(held) => assemble_pieces(new, &pieces, held, fetched, out),
        // Nothing held: a held piece reads as missing.
        None => assemble_pieces(new, &pieces, &mut io::Cursor::new(&[][..]), fetched, out),
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        if self.0.len() < n {
            return Err(IndexError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], IndexError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

/// The index of the bundle file at `path`: its sidecar (`<bundle>.idx`) when that
/// describes the file exactly, else derived from the file; `None` when it has no segments.
pub fn of_file(path: &std::path::Path) -> Result<Option<SegmentIndex>, IndexError> {
    let mut file = io::BufReader::new(std::fs::File::open(path)?);
    if let Ok(bytes) = std::fs::read(sidecar_path(path))
        && let Ok(index) = SegmentIndex::decode(&bytes)
        && index.check_against(&mut file).is_ok()
    {
        return Ok(Some(index));
    }
    derive(&mut file)
}

/// Where a bundle's index lives beside it: `<bundle>.idx`.
pub fn sidecar_path(bundle: &std::path::Path) -> std::path::PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".idx");
    std::path::PathBuf::from(name)
}

/// Works out the index of a bundle file by cutting its payload again, as the builder
/// did: `None` if the file's payload is not what this builder makes of the same content
/// (an older builder, another compressor), so its segments cannot be offered. Reads the
/// file once and compresses it once; what it returns is checked against the file.
pub fn derive(file: &mut (impl Read + Seek)) -> Result<Option<SegmentIndex>, IndexError> {
    derive_until(file, &std::sync::atomic::AtomicBool::new(false))
}

/// [`derive`], given up with an error as soon as `cancel` is set (a relay
/// shutting down does not wait for a large bundle's index).
pub fn derive_until(
    file: &mut (impl Read + Seek),
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Option<SegmentIndex>, IndexError> {
    file.seek(SeekFrom::Start(0))?;
    let mut counted = CountingReader {
        inner: &mut *file,
        count: 0,
    };
    if super::framing::read_head(&mut counted, MAX_HEAD as u64).is_err() {
        return Ok(None);
    }
    let head_len = counted.count;
    let mut head = vec![0u8; usize::try_from(head_len).map_err(io::Error::other)?];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    // One pass: the payload's bytes feed its own digest and the whole file's.
    let mut payload = sha2::Sha256::default();
    let mut whole = {
        use sha2::Digest;
        sha2::Sha256::new_with_prefix(&head)
    };
    let mut tee = TeeReader {
        inner: &mut *file,
        hashers: [&mut payload, &mut whole],
    };
    let (sink, segments, tail) = {
        let mut gz = flate2::read::GzDecoder::new(&mut tee);
        let writer = super::segments::SegmentWriter::new(super::types::HashingSink::default())?;
        let mut cutter = TarCutter {
            cancel,
            segments: writer,
            block: Vec::with_capacity(512),
            remaining: 0,
            ended: false,
            joined: false,
        };
        if io::copy(&mut gz, &mut cutter).is_err() {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(IndexError::Io(io::Error::other("cancelled")));
            }
            // Not a payload this builder reads: no segments to offer.
            return Ok(None);
        }
        cutter.segments.finish()?
    };
    // Whatever follows the payload member (nothing, in a bundle) is read too.
    io::copy(&mut tee, &mut io::sink())?;
    if sink.finish() != Sha256::from_hasher(payload) {
        return Ok(None);
    }
    Ok(Some(SegmentIndex {
        bundle_sha256: Sha256::from_hasher(whole),
        head,
        segments,
        tail,
    }))
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

struct TeeReader<'a, R> {
    inner: R,
    hashers: [&'a mut sha2::Sha256; 2],
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        for h in &mut self.hashers {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Passes a tar stream to a segment writer, cutting before each entry as the builder
/// does (before a long-name or pax entry, not again before the header it introduces),
/// and not before the end-of-archive blocks.
struct TarCutter<'c, W: Write> {
    cancel: &'c std::sync::atomic::AtomicBool,
    segments: super::segments::SegmentWriter<W>,
    block: Vec<u8>,
    /// Data and padding of the current entry still to pass.
    remaining: u64,
    ended: bool,
    /// The next header belongs to the extension entry before it.
    joined: bool,
}

impl<W: Write> Write for TarCutter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        let mut rest = buf;
        while !rest.is_empty() {
            if self.ended {
                self.segments.write_all(rest)?;
                break;
            }
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining.min(rest.len() as u64))
                    .map_err(io::Error::other)?;
                self.segments.write_all(&rest[..n])?;
                self.remaining -= n as u64;
                rest = &rest[n..];
                continue;
            }
            let n = (512 - self.block.len()).min(rest.len());
            self.block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.block.len() < 512 {
                continue;
            }
            if self.block.iter().all(|&b| b == 0) {
                self.ended = true;
            } else {
                let header = tar::Header::from_byte_slice(&self.block);
                let size = header.entry_size()?;
                if !self.joined {
                    self.segments.cut()?;
                }
                self.joined = matches!(header.entry_type().as_byte(), b'L' | b'K' | b'x' | b'g');
                self.remaining = size.next_multiple_of(512);
            }
            self.segments.write_all(&self.block)?;
            self.block.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where one segment of a new bundle is read from when it is assembled: the held file or
/// a spool of fetched and rebuilt segments, at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    Held(u64),
    Spool(u64),
}

/// [`assemble`] from pieces in two random-access files; every piece checked against the
/// index's SHA-256 as it is placed.
pub fn assemble_pieces(
    new: &SegmentIndex,
    pieces: &[Piece],
    held: &mut (impl Read + Seek),
    spool: &mut (impl Read + Seek),
    out: &mut impl Write,
) -> Result<(), RebuildError> {
    out.write_all(&new.head)?;
    out.write_all(&CANONICAL_GZIP_HEADER)?;
    let mut buf = Vec::new();
    for (index, (s, piece)) in new.segments.iter().zip(pieces).enumerate() {
        buf.resize(s.size as usize, 0);
        let (file, at, origin): (&mut dyn ReadSeek, u64, &'static str) = match *piece {
            Piece::Held(at) => (held, at, "held"),
            Piece::Spool(at) => (spool, at, "fetched"),
        };
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => RebuildError::Missing { index },
            _ => RebuildError::Io(e),
        })?;
        if Sha256::of(&buf) != s.sha256 {
            return Err(RebuildError::BadSegment { index, origin });
        }
        out.write_all(&buf)?;
    }
    out.write_all(&new.tail)?;
    out.flush()?;
    Ok(())
}

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}
