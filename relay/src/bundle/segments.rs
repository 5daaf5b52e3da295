//! The payload's deflate stream, cut into segments that are compressed independently,
//! and the segment index that lets a client fetch only the segments it does not hold
//! (`relay/FORMAT.md`, "Segments and deltas").
//!
//! The payload member is still one gzip member whose deflate data any inflater reads.
//! The builder cuts the uncompressed tar stream into segments and compresses each with a
//! fresh deflate state, ending it with a full flush (an empty stored block, `00 00 ff ff`,
//! byte-aligned): a segment's compressed bytes depend on its content alone, so a segment
//! whose content did not change between two bundles has the same bytes, and the same
//! SHA-256, in both. After the last segment come a final empty block (`03 00`) and the gzip
//! trailer.
//!
//! Cut points are defined by content, so an insertion moves only the cut points around
//! it: a segment ends at a file's end (each file's tar header starts a new segment), or
//! after a line whose last bytes hash below a threshold proportional to the line's length
//! (so segments average [`TARGET`] bytes whatever the line lengths), within [`MIN`] and
//! [`MAX`] bytes.
//!
//! The index (a bundle's sidecar file, `<bundle>.idx`) is not signed, and needs not be:
//! a client checks every segment it builds against the index, and the whole file it builds
//! against the signed manifest, before using or serving it.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress};

use super::framing::CANONICAL_GZIP_HEADER;
use super::types::Sha256;

/// Average uncompressed segment size (the deflate window: compression barely suffers).
pub const TARGET: u64 = 32 * 1024;
/// No cut at a line end before this many bytes (except at a file's end).
pub const MIN: usize = 8 * 1024;
/// A cut at this many bytes, mid-line if need be.
pub const MAX: usize = 128 * 1024;

/// The final empty deflate block (fixed Huffman, BFINAL set) that ends every payload.
pub const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// One segment: where it lies in the compressed payload, what it inflates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Compressed bytes, the closing full flush included.
    pub size: u32,
    /// Uncompressed bytes.
    pub raw_size: u32,
    /// SHA-256 of the compressed bytes.
    pub sha256: Sha256,
}

/// A gzip member written as independently compressed segments. Write the tar stream in,
/// call [`cut`](Self::cut) where a segment must end (before each file), then
/// [`finish`](Self::finish).
pub struct SegmentWriter<W: Write> {
    out: W,
    raw: Vec<u8>,
    /// Gear hash of the current line's last bytes; bytes of the current line so far.
    gear: u64,
    line: u64,
    compress: Compress,
    compressed: Vec<u8>,
    crc: flate2::Crc,
    segments: Vec<Segment>,
}

impl<W: Write> SegmentWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&CANONICAL_GZIP_HEADER)?;
        Ok(SegmentWriter {
            out,
            raw: Vec::with_capacity(MAX),
            gear: 0,
            line: 0,
            compress: Compress::new(Compression::default(), false),
            compressed: Vec::with_capacity(MAX + MAX / 8),
            crc: flate2::Crc::new(),
            segments: Vec::new(),
        })
    }

    /// Ends the current segment here (nothing happens if it is empty).
    pub fn cut(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        self.compress.reset();
        self.compressed.clear();
        compress_all(&mut self.compress, &self.raw, &mut self.compressed)?;
        self.out.write_all(&self.compressed)?;
        self.crc.update(&self.raw);
        self.segments.push(Segment {
            size: u32::try_from(self.compressed.len()).map_err(io::Error::other)?,
            raw_size: u32::try_from(self.raw.len()).map_err(io::Error::other)?,
            sha256: Sha256::of(&self.compressed),
        });
        self.raw.clear();
        self.gear = 0;
        self.line = 0;
        Ok(())
    }

    /// Ends the last segment and the member; the writer and the segments.
    pub fn finish(mut self) -> io::Result<(W, Vec<Segment>, [u8; 10])> {
        self.cut()?;
        let tail = tail(&self.crc);
        self.out.write_all(&tail)?;
        Ok((self.out, self.segments, tail))
    }
}

impl<W: Write> Write for SegmentWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.raw.push(b);
            self.gear = (self.gear << 1).wrapping_add(GEAR[usize::from(b)]);
            self.line += 1;
            let full = self.raw.len() >= MAX;
            let line_end =
                b == b'\n' && self.raw.len() >= MIN && (self.gear >> 32) % TARGET < self.line;
            if b == b'\n' {
                self.line = 0;
            }
            if full || line_end {
                self.cut()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Compresses `raw` as one segment: a fresh raw deflate stream, ended with a full flush.
pub fn compress_segment(raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    compress_all(&mut c, raw, &mut out)?;
    Ok(out)
}

fn compress_all(c: &mut Compress, raw: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let start = c.total_in();
    loop {
        out.reserve(raw.len() / 2 + 4096);
        let consumed = usize::try_from(c.total_in() - start).map_err(io::Error::other)?;
        c.compress_vec(&raw[consumed..], out, FlushCompress::Full)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in() - start).map_err(io::Error::other)?;
        // zlib's rule: a flush is complete once all input is in and it left output room.
        if consumed == raw.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

/// The final empty block and the gzip trailer (CRC-32 and size of everything inflated).
pub fn tail(crc: &flate2::Crc) -> [u8; 10] {
    let mut t = [0u8; 10];
    t[..2].copy_from_slice(&FINAL_BLOCK);
    t[2..6].copy_from_slice(&crc.sum().to_le_bytes());
    t[6..].copy_from_slice(&crc.amount().to_le_bytes());
    t
}

/// 256 fixed pseudo-random words for the gear hash (splitmix64 from a constant seed):
/// part of the format, since they decide where segments end.
const GEAR: [u64; 256] = gear_table();

const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut state: u64 = 0x5245_4c41_5953_4547; // "RELAYSEG"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}
