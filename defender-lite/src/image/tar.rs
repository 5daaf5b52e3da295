//! A streaming walk over the headers of a tar archive, with caps.
//!
//! Header fields are decoded by the `tar` crate (`tar::Header`, `tar::PaxExtensions`); the
//! loop is ours because `tar::Archive` reads GNU long names and PAX extension records into
//! memory whole, with no cap, so a hostile archive could make it allocate gigabytes. Here
//! those records are capped, every header checksum is checked, the data of each entry is
//! skipped (seeked over when the input allows), and each entry is reported with the offset
//! of its data in the uncompressed stream, so its bytes can be fetched later without
//! walking the archive again. Paths are reported raw; cleaning them is the caller's job.

use std::borrow::Cow;
use std::io::{self, Read};

const BLOCK: u64 = 512;

/// A forward-only input that can skip bytes cheaply when it is seekable.
pub(crate) trait Input: Read {
    /// Skips exactly `n` bytes; an error if the input ends first.
    fn skip(&mut self, n: u64) -> io::Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    File,
    Dir,
    Symlink,
    HardLink,
    /// Character and block devices, fifos.
    Other,
    /// An entry whose data cannot be read as one contiguous run (GNU sparse), or an
    /// unknown type: listed, never read.
    Unsupported,
}

#[derive(Debug)]
pub(crate) struct RawEntry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: RawKind,
    pub mode: u32,
    pub size: u64,
    /// Offset of the first data byte in the (uncompressed) stream walked.
    pub offset: u64,
}

/// How a walk past [`TarLimits::max_bytes`] ends its reason.
pub(crate) const BYTES_LIMIT_SUFFIX: &str = "bytes of archive";

#[derive(Debug, Clone, Copy)]
pub(crate) struct TarLimits {
    /// Largest GNU long name / long link / PAX extension record read into memory.
    pub max_extension: u64,
    /// Most entries reported.
    pub max_entries: usize,
    /// Most bytes walked (headers plus data skipped): bounds the work a decompression
    /// bomb can cause.
    pub max_bytes: u64,
}

#[derive(Debug)]
pub(crate) enum WalkError {
    Io(io::Error),
    /// Not a tar archive, or a damaged one.
    Malformed(String),
    /// A cap in `TarLimits` was reached.
    Limit(String),
}

impl From<io::Error> for WalkError {
    fn from(err: io::Error) -> WalkError {
        WalkError::Io(err)
    }
}

/// Walks every header of the archive in `input`, calling `on_entry` for each file,
/// directory, link and special file. Stops at the end-of-archive marker or at end of input
/// on a block boundary. `on_entry` returning an error stops the walk with that error.
pub(crate) fn walk<I: Input, E: From<WalkError>>(
    input: &mut I,
    limits: &TarLimits,
    mut on_entry: impl FnMut(RawEntry) -> Result<(), E>,
) -> Result<(), E> {
    let mut pos: u64 = 0;
    let mut entries = 0usize;
    let mut block = [0u8; BLOCK as usize];
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    loop {
        if !read_block(input, &mut block).map_err(WalkError::from)? {
            break;
        }
        pos += BLOCK;
        if block.iter().all(|b| *b == 0) {
            break; // end-of-archive marker; whatever follows is padding
        }
        let header = tar::Header::from_byte_slice(&block);
        check_checksum(header)?;
        let header_size = header
            .entry_size()
            .map_err(|e| WalkError::Malformed(format!("bad size field at offset {pos}: {e}")))?;
        let type_byte = header.entry_type().as_byte();
        match type_byte {
            b'x' | b'L' | b'K' => {
                if header_size > limits.max_extension {
                    return Err(WalkError::Limit(format!(
                        "extended header of {header_size} bytes at offset {pos} (cap {})",
                        limits.max_extension
                    ))
                    .into());
                }
                let data = read_exact_vec(input, header_size).map_err(WalkError::from)?;
                skip_padding(input, header_size).map_err(WalkError::from)?;
                pos += padded(header_size)?;
                match type_byte {
                    b'x' => pax = Some(data),
                    b'L' => long_name = Some(trim_nul(data)),
                    _ => long_link = Some(trim_nul(data)),
                }
                continue;
            }
            b'g' => {
                // Global PAX records set defaults for the whole archive (usually comments);
                // none of them changes where entries are.
                let skip = padded(header_size)?;
                input.skip(skip).map_err(WalkError::from)?;
                pos += skip;
                continue;
            }
            _ => {}
        }

        let mut path = match long_name.take() {
            Some(name) => name,
            None => header.path_bytes().into_owned(),
        };
        let mut link = match long_link.take() {
            Some(name) => name,
            None => header
                .link_name_bytes()
                .map(Cow::into_owned)
                .unwrap_or_default(),
        };
        let mut size = header_size;
        if let Some(records) = pax.take() {
            for record in tar::PaxExtensions::new(&records) {
                let record = record.map_err(|_| {
                    WalkError::Malformed(format!("bad PAX record before offset {pos}"))
                })?;
                match record.key_bytes() {
                    b"path" => path = record.value_bytes().to_vec(),
                    b"linkpath" => link = record.value_bytes().to_vec(),
                    b"size" => {
                        size = std::str::from_utf8(record.value_bytes())
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| {
                                WalkError::Malformed(format!("bad PAX size before offset {pos}"))
                            })?;
                    }
                    _ => {}
                }
            }
        }
        let kind = match type_byte {
            b'0' | b'\0' | b'7' => RawKind::File,
            b'1' => RawKind::HardLink,
            b'2' => RawKind::Symlink,
            b'5' => RawKind::Dir,
            b'3' | b'4' | b'6' => RawKind::Other,
            _ => RawKind::Unsupported,
        };
        let mode = header.mode().unwrap_or(0o644);
        if type_byte == b'S' {
            // Old GNU sparse: extension blocks of the sparse map follow the header.
            let mut extended = header.as_gnu().is_some_and(|gnu| gnu.is_extended());
            while extended {
                if !read_block(input, &mut block).map_err(WalkError::from)? {
                    return Err(WalkError::Malformed("truncated sparse header".into()).into());
                }
                pos += BLOCK;
                extended = block[504] != 0; // GnuExtSparseHeader::isextended
            }
        }
        entries += 1;
        if entries > limits.max_entries {
            return Err(
                WalkError::Limit(format!("more than {} entries", limits.max_entries)).into(),
            );
        }
        let data_span = padded(size)?;
        let end = pos
            .checked_add(data_span)
            .ok_or_else(|| WalkError::Malformed("entry size overflows".into()))?;
        if end > limits.max_bytes {
            return Err(WalkError::Limit(format!(
                "more than {} {BYTES_LIMIT_SUFFIX}",
                limits.max_bytes
            ))
            .into());
        }
        on_entry(RawEntry {
            path,
            link,
            kind,
            mode: mode & 0o7777,
            size,
            offset: pos,
        })?;
        input.skip(data_span).map_err(WalkError::from)?;
        pos = end;
    }
    Ok(())
}

/// Reads one 512-byte block. `Ok(false)` at a clean end of input (no byte read); an error
/// if the input ends inside the block.
fn read_block<R: Read>(input: &mut R, block: &mut [u8; BLOCK as usize]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "archive ends inside a header",
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn check_checksum(header: &tar::Header) -> Result<(), WalkError> {
    let bytes = header.as_bytes();
    let stored = header
        .cksum()
        .map_err(|_| WalkError::Malformed("not a tar header (bad checksum field)".into()))?;
    // The checksum field counts as eight spaces. Some old writers summed signed bytes.
    let fields = bytes[..148].iter().chain(&bytes[156..]);
    let unsigned: u32 = fields.clone().map(|b| u32::from(*b)).sum::<u32>() + 8 * 32;
    let signed: i64 = fields.map(|b| i64::from(*b as i8)).sum::<i64>() + 8 * 32;
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err(WalkError::Malformed(
            "not a tar header (checksum mismatch)".into(),
        ))
    }
}

fn padded(size: u64) -> Result<u64, WalkError> {
    size.checked_add(BLOCK - 1)
        .map(|s| s / BLOCK * BLOCK)
        .ok_or_else(|| WalkError::Malformed("entry size overflows".into()))
}

fn skip_padding<I: Input>(input: &mut I, size: u64) -> io::Result<()> {
    let rest = (BLOCK - size % BLOCK) % BLOCK;
    input.skip(rest)
}

fn read_exact_vec<R: Read>(input: &mut R, size: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    input.take(size).read_to_end(&mut data)?;
    if (data.len() as u64) < size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "archive ends inside an extended header",
        ));
    }
    Ok(data)
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// An `Input` over any reader: skipping reads and discards.
#[cfg(test)]
pub(crate) struct Forward<R> {
    pub inner: R,
}

#[cfg(test)]
impl<R: Read> Read for Forward<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
impl<R: Read> Input for Forward<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        skip_by_reading(&mut self.inner, n)
    }
}

/// Reads and discards exactly `n` bytes.
pub(crate) fn skip_by_reading<R: Read + ?Sized>(reader: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "archive ends inside an entry",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TarLimits = TarLimits {
        max_extension: 1024,
        max_entries: 100,
        max_bytes: 1 << 30,
    };

    fn collect(bytes: &[u8], limits: &TarLimits) -> Result<Vec<RawEntry>, WalkError> {
        let mut out = Vec::new();
        let mut input = Forward { inner: bytes };
        walk::<_, WalkError>(&mut input, limits, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, data).unwrap();
    }

    #[test]
    fn offsets_point_at_the_data() {
        let long = format!("{}/file", "d".repeat(200));
        let bytes = archive(|b| {
            file(b, "a.txt", b"hello");
            file(b, &long, b"world!");
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            b.append_link(&mut header, "ln", "/etc/../../x").unwrap();
        });
        let entries = collect(&bytes, &LIMITS).unwrap();
        assert_eq!(entries.len(), 3);
        for (entry, data) in entries.iter().zip([&b"hello"[..], b"world!"]) {
            let start = entry.offset as usize;
            assert_eq!(&bytes[start..start + entry.size as usize], data);
            assert_eq!(entry.kind, RawKind::File);
            assert_eq!(entry.mode, 0o755);
        }
        assert_eq!(entries[1].path, long.as_bytes());
        assert_eq!(entries[2].kind, RawKind::Symlink);
        assert_eq!(entries[2].link, b"/etc/../../x");
    }

    #[test]
    fn pax_path_and_caps() {
        let long = "p".repeat(300);
        let bytes = archive(|b| {
            let mut header = tar::Header::new_ustar();
            header.set_size(2);
            header.set_entry_type(tar::EntryType::Regular);
            b.append_pax_extensions([("path", long.as_bytes())])
                .unwrap();
            b.append_data(&mut header, "short", &b"ok"[..]).unwrap();
        });
        let entries = collect(&bytes, &LIMITS).unwrap();
        assert_eq!(entries[0].path, long.as_bytes());
        let tight = TarLimits {
            max_extension: 100,
            ..LIMITS
        };
        assert!(matches!(collect(&bytes, &tight), Err(WalkError::Limit(_))));
        let few = TarLimits {
            max_entries: 0,
            ..LIMITS
        };
        assert!(matches!(collect(&bytes, &few), Err(WalkError::Limit(_))));
    }

    #[test]
    fn damaged_input() {
        let mut bytes = archive(|b| file(b, "a", b"x"));
        assert!(matches!(
            collect(&b"not a tar at all, certainly not"[..].repeat(40), &LIMITS),
            Err(WalkError::Malformed(_))
        ));
        bytes[0] ^= 1;
        assert!(matches!(
            collect(&bytes, &LIMITS),
            Err(WalkError::Malformed(_))
        ));
        let bytes = archive(|b| file(b, "a", &[7u8; 2000]));
        assert!(matches!(
            collect(&bytes[..1000], &LIMITS),
            Err(WalkError::Io(_))
        ));
        assert!(collect(&[], &LIMITS).unwrap().is_empty());
    }
}
