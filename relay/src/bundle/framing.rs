//! The byte layout of a bundle file: two gzip members, concatenated (any gzip tool reads
//! them as one `.tar.gz`).
//!
//! 1. The head member: `manifest.json` and `manifest.sig` as tar entries, deflated with
//!    *stored* blocks only, in one canonical framing. It is small and byte-exact, so it is
//!    cheap to read first and cannot be re-encoded.
//! 2. The payload member: the feed entries and the tar end-of-archive marker, deflated
//!    normally. The manifest records this member's size and SHA-256, so the signature
//!    binds every byte of the file, not only what it inflates to (deflate lets the same
//!    content be encoded in many ways).
//!
//! Both members start with [`CANONICAL_GZIP_HEADER`].

use std::io::{self, Read, Write};

/// The gzip header every member starts with: no flags, mtime 0, no extra flags, OS
/// unknown.
pub const CANONICAL_GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Largest stored block; all but the last block of the head are exactly this long.
const STORED_BLOCK: usize = 65535;

/// Tar blocks (header and padded data) of one regular file entry, without the
/// end-of-archive marker.
pub(crate) fn tar_entry(path: &str, data: &[u8], mtime: u64) -> io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut out = Vec::with_capacity(512 + data.len().next_multiple_of(512));
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(512 + data.len().next_multiple_of(512), 0);
    Ok(out)
}

/// Writes `data` as the head member: canonical header, stored blocks, CRC32 and length.
pub(crate) fn write_head(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(&CANONICAL_GZIP_HEADER)?;
    let mut chunks = data.chunks(STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.write_all(&[1, 0, 0, 0xff, 0xff])?;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = u16::try_from(chunk.len()).map_err(io::Error::other)?;
        out.write_all(&[u8::from(last)])?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&(!len).to_le_bytes())?;
        out.write_all(chunk)?;
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&(data.len() as u32).to_le_bytes())
}

/// Why the head member could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    NotGzip,
    NonCanonical(&'static str),
    TooLarge { size: u64 },
    Corrupt(&'static str),
    Io(io::Error),
}

/// Reads the head member, refusing anything but the canonical framing and more than
/// `cap` bytes of content.
pub(crate) fn read_head(input: &mut impl Read, cap: u64) -> Result<Vec<u8>, HeadError> {
    let mut header = [0u8; 10];
    let got = read_full(input, &mut header).map_err(HeadError::Io)?;
    if got < 2 || header[..2] != CANONICAL_GZIP_HEADER[..2] {
        return Err(HeadError::NotGzip);
    }
    if got < header.len() {
        return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    if header != CANONICAL_GZIP_HEADER {
        return Err(HeadError::NonCanonical(
            "gzip header has flags, mtime or OS set",
        ));
    }
    let mut data = Vec::new();
    loop {
        let mut block = [0u8; 5];
        input.read_exact(&mut block).map_err(HeadError::Io)?;
        let last = match block[0] {
            0 => false,
            1 => true,
            _ => return Err(HeadError::NonCanonical("head is not made of stored blocks")),
        };
        let len = u16::from_le_bytes([block[1], block[2]]);
        let nlen = u16::from_le_bytes([block[3], block[4]]);
        if nlen != !len {
            return Err(HeadError::Corrupt("stored block length check failed"));
        }
        let canonical_len = if last {
            len > 0 || data.is_empty()
        } else {
            usize::from(len) == STORED_BLOCK
        };
        if !canonical_len {
            return Err(HeadError::NonCanonical(
                "head stored blocks are not split canonically",
            ));
        }
        let size = data.len() as u64 + u64::from(len);
        if size > cap {
            return Err(HeadError::TooLarge { size });
        }
        let start = data.len();
        data.resize(start + usize::from(len), 0);
        input
            .read_exact(&mut data[start..])
            .map_err(HeadError::Io)?;
        if last {
            break;
        }
    }
    let mut trailer = [0u8; 8];
    input.read_exact(&mut trailer).map_err(HeadError::Io)?;
    let mut crc = flate2::Crc::new();
    crc.update(&data);
    let expected_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let expected_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if crc.sum() != expected_crc || data.len() as u32 != expected_len {
        return Err(HeadError::Corrupt("head CRC or length mismatch"));
    }
    Ok(data)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips_and_flate2_reads_it() {
        for len in [0, 1, 65535, 65536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            write_head(&mut out, &data).unwrap();
            assert_eq!(read_head(&mut &out[..], u64::MAX).unwrap(), data);
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(inflated, data);
        }
    }
}
