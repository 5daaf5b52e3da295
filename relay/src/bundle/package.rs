//! Segment packages: what the holder of one bundle (the base) needs to build another, in
//! one request body (a central relay pushing to a supervisor that holds the bundle it
//! delivered before; `relay/FORMAT.md`, "Segments and deltas").
//!
//! Layout: the magic, the base bundle's SHA-256, the new bundle's index (its length as a
//! u32, then its bytes); in version 2, a delta from the base to the new bundle (its length
//! as a u32, then its bytes, [`super::delta`]); then the segments of the new bundle that
//! the base does not have and the delta does not rebuild, whole, in order. Version 1 (no
//! delta) is still read. Nothing in a package is trusted: every segment is checked against
//! the index as it is placed, and the file built is verified as any upload.

use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::delta::{Delta, DeltaError, MAX_DELTA_BYTES};
use super::index::{
    self, IndexError, MAGIC as INDEX_MAGIC, MAX_HEAD, MAX_SEGMENTS, Piece, RebuildError,
    SegmentIndex,
};
use super::types::Sha256;

/// Version 1: the changed segments, whole.
pub const MAGIC_V1: &[u8; 16] = b"relay-segpack-1\n";
/// Version 2: a delta, then the changed segments it does not rebuild.
pub const MAGIC: &[u8; 16] = b"relay-segpack-2\n";
/// Its `Content-Type`.
pub const CONTENT_TYPE: &str = "application/vnd.relay.segments";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a package says before its segments.
pub struct Header {
    /// The bundle the package builds on.
    pub base: Sha256,
    pub new: SegmentIndex,
    /// The delta's bytes (version 2; `None` in version 1 or when it carries none).
    pub delta: Option<Vec<u8>>,
}

/// Writes a package for a holder of the bundle `base` indexes to build `new` (whose file is
/// `new_file`), with `delta` (from the base to `new`) when there is one: version 2, and
/// the segments the delta rebuilds are left out; without, version 1, which older
/// receivers read too. The bytes written.
pub fn write(
    base: &SegmentIndex,
    new: &SegmentIndex,
    new_file: &mut (impl Read + Seek),
    delta: Option<&[u8]>,
    out: &mut impl Write,
) -> Result<u64, PackageError> {
    let plan = index::plan(new, Some(base));
    let covered: std::collections::HashSet<usize> = match delta {
        Some(bytes) => Delta::read(bytes, base, new)?.segments().collect(),
        None => Default::default(),
    };
    let encoded = new.encode();
    out.write_all(if delta.is_some() { MAGIC } else { MAGIC_V1 })?;
    out.write_all(&base.bundle_sha256.0)?;
    out.write_all(&u32_len(encoded.len())?.to_le_bytes())?;
    out.write_all(&encoded)?;
    let mut written = (MAGIC.len() + 32 + 4 + encoded.len()) as u64;
    if let Some(bytes) = delta {
        out.write_all(&u32_len(bytes.len())?.to_le_bytes())?;
        out.write_all(bytes)?;
        written += 4 + bytes.len() as u64;
    }
    for (i, ((at, segment), source)) in new.placed().zip(&plan.sources).enumerate() {
        if source.is_some() || covered.contains(&i) {
            continue;
        }
        new_file.seek(SeekFrom::Start(at))?;
        let n = io::copy(&mut (&mut *new_file).take(u64::from(segment.size)), out)?;
        if n != u64::from(segment.size) {
            return Err(PackageError::Invalid(format!(
                "the new bundle's file ends inside segment {i}"
            )));
        }
        written += n;
    }
    out.flush()?;
    Ok(written)
}

fn u32_len(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other("a package part over 4 GiB"))
}

/// Reads a package's header, from anyone; the input is left at the first segment.
pub fn read_header(input: &mut impl Read) -> Result<Header, PackageError> {
    let truncated = |_| IndexError::Truncated;
    let mut magic = [0u8; 16];
    input.read_exact(&mut magic).map_err(truncated)?;
    let version = match &magic {
        m if m == MAGIC_V1 => 1,
        m if m == MAGIC => 2,
        _ => return Err(IndexError::Magic.into()),
    };
    let mut sha = [0u8; 32];
    input.read_exact(&mut sha).map_err(truncated)?;
    let read_len = |input: &mut dyn Read, max: usize, what: &str| {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(truncated)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(PackageError::Invalid(format!("{what} of {len} bytes")));
        }
        // Grown as bytes arrive: a length that lies costs what was really sent.
        let mut bytes = Vec::new();
        input.take(len as u64).read_to_end(&mut bytes)?;
        if bytes.len() != len {
            return Err(IndexError::Truncated.into());
        }
        Ok(bytes)
    };
    let max_index = INDEX_MAGIC.len() + 32 + 4 + MAX_HEAD + 4 + 40 * MAX_SEGMENTS + 10;
    let new = SegmentIndex::decode(&read_len(input, max_index, "an index")?)?;
    let delta = match version {
        2 => Some(read_len(input, MAX_DELTA_BYTES as usize, "a delta")?),
        _ => None,
    };
    Ok(Header {
        base: Sha256(sha),
        new,
        delta,
    })
}

/// Builds the bundle a package describes into `out`: the segments the base has from
/// `base_file` (the file `base` indexes, at `base_path`), those the delta rebuilds, and the
/// rest from `input` (left at the first segment by [`read_header`]); `spool`, an empty
/// scratch file, holds the latter two meanwhile. Every segment is checked against the new
/// index as it is placed; a delta that rebuilds any segment wrong, a package cut short or
/// with bytes after its last segment is refused. The result still has to be verified.
pub fn build(
    header: &Header,
    base: &SegmentIndex,
    base_path: &Path,
    input: &mut impl Read,
    spool: &mut std::fs::File,
    out: &mut impl Write,
) -> Result<(), PackageError> {
    let new = &header.new;
    let plan = index::plan(new, Some(base));
    let mut pieces: Vec<Option<Piece>> = plan.sources.iter().map(|s| s.map(Piece::Held)).collect();
    let mut at = 0u64;
    {
        let mut writer = io::BufWriter::new(&mut *spool);
        if let Some(bytes) = &header.delta {
            let delta = Delta::read(&bytes[..], base, new)?;
            let open = || std::fs::File::open(base_path).map(BufReader::new);
            let (rebuilt, failed) = delta.apply_to(open, base, new, &mut writer, 0)?;
            at = rebuilt
                .last()
                .map_or(0, |&(i, offset)| offset + u64::from(new.segments[i].size));
            if let Some(i) = failed.first() {
                return Err(PackageError::Invalid(format!(
                    "the delta rebuilds {} segment(s) wrong (the first: {i})",
                    failed.len()
                )));
            }
            for (i, offset) in rebuilt {
                if pieces[i].is_some() {
                    return Err(PackageError::Invalid(format!(
                        "the delta rebuilds segment {i}, which the base has"
                    )));
                }
                pieces[i] = Some(Piece::Spool(offset));
            }
        }
        // The rest, in order, from the package.
        for (i, piece) in pieces.iter_mut().enumerate() {
            if piece.is_some() {
                continue;
            }
            let size = u64::from(new.segments[i].size);
            let n = io::copy(&mut (&mut *input).take(size), &mut writer)?;
            if n != size {
                return Err(RebuildError::Missing { index: i }.into());
            }
            *piece = Some(Piece::Spool(at));
            at += size;
        }
        writer.flush()?;
    }
    let mut rest = [0u8; 1];
    if input.read(&mut rest)? != 0 {
        return Err(PackageError::Invalid("bytes after the last segment".into()));
    }
    let pieces: Vec<Piece> = pieces.into_iter().flatten().collect();
    spool.seek(SeekFrom::Start(0))?;
    let mut base_file = BufReader::new(std::fs::File::open(base_path)?);
    index::assemble_pieces(
        new,
        &pieces,
        &mut base_file,
        &mut BufReader::new(&mut *spool),
        out,
    )?;
    Ok(())
}
