//! Vendor archives: opaque `.tar.gz` files this project cannot sign (such as a
//! `twistlock_feed_*.tar.gz` made by `twistcli intelligence download`), mirrored so that
//! existing consoles can use the relay as their custom location.
//!
//! They are checked for integrity only: the SHA-256 the uploader states (when given), a
//! well-formed gzip stream (CRC and length), a well-formed tar with regular files and
//! directories under safe relative paths, and the same caps as bundles. Nothing here says
//! who made the archive; status says so plainly.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use crate::bundle::{Limits, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive failed: {0}")]
    Read(io::Error),
    #[error("not a gzip file")]
    NotGzip,
    #[error("archive is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("archive is larger than {limit} bytes uncompressed")]
    TooLarge { limit: u64 },
    #[error("compression ratio exceeds {limit}:1 (gzip bomb?)")]
    CompressionRatio { limit: u64 },
    #[error("more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("archive holds no files")]
    Empty,
    #[error("sha256 mismatch (expected {expected}, got {actual})")]
    DigestMismatch { expected: Sha256, actual: Sha256 },
}

/// What the check learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub sha256: Sha256,
    pub size: u64,
    pub entries: u64,
    pub uncompressed: u64,
}

/// Reads `input` once and checks it (see the module docs).
pub fn check(
    input: impl Read,
    limits: &Limits,
    expected: Option<Sha256>,
) -> Result<ArchiveInfo, ArchiveError> {
    let counts = Rc::new(Counts::default());
    let source = Hashing {
        inner: input,
        hasher: sha2::Sha256::default(),
        counts: Rc::clone(&counts),
    };
    let mut buffered = BufReader::with_capacity(1 << 16, source);
    {
        use io::BufRead;
        let head = buffered.fill_buf().map_err(ArchiveError::Read)?;
        if head.len() < 2 || head[..2] != [0x1f, 0x8b] {
            return Err(ArchiveError::NotGzip);
        }
    }
    let gz = flate2::bufread::MultiGzDecoder::new(buffered);
    let capped = Capped {
        inner: gz,
        limits: *limits,
        counts: Rc::clone(&counts),
    };
    let mut archive = tar::Archive::new(capped);
    let mut entries = 0u64;
    let io_err = |counts: &Counts, e: io::Error| {
        counts
            .violation
            .take()
            .unwrap_or(ArchiveError::Corrupt(e.to_string()))
    };
    for entry in archive.entries().map_err(|e| io_err(&counts, e))? {
        let mut entry = entry.map_err(|e| io_err(&counts, e))?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason: &str| ArchiveError::UnsafeEntry {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if path.starts_with('/') {
            return Err(unsafe_entry("absolute path"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(unsafe_entry("`..` in the path"));
        }
        if path.contains('\\') {
            // A Windows console would read it as a separator: `..\\..\\x`.
            return Err(unsafe_entry("a backslash in the path"));
        }
        let mode = entry.header().mode().map_err(|e| io_err(&counts, e))?;
        if mode & 0o7000 != 0 {
            return Err(unsafe_entry(&format!(
                "mode {mode:o} has setuid, setgid or sticky bits"
            )));
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            other => {
                return Err(unsafe_entry(&format!(
                    "{other:?} entries are not allowed, only files and directories"
                )));
            }
        }
        io::copy(&mut entry, &mut io::sink()).map_err(|e| io_err(&counts, e))?;
    }
    if entries == 0 {
        return Err(ArchiveError::Empty);
    }
    // Read to the very end, so the gzip CRC and length of every member are checked.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| io_err(&counts, e))?;
    let mut buffered = rest.inner.into_inner();
    io::copy(&mut buffered, &mut io::sink()).map_err(ArchiveError::Read)?;
    let source = buffered.into_inner();
    let sha256 = Sha256::from_hasher(source.hasher);
    if let Some(expected) = expected
        && expected != sha256
    {
        return Err(ArchiveError::DigestMismatch {
            expected,
            actual: sha256,
        });
    }
    Ok(ArchiveInfo {
        sha256,
        size: counts.compressed.get(),
        entries,
        uncompressed: counts.uncompressed.get(),
    })
}

#[derive(Default)]
struct Counts {
    compressed: Cell<u64>,
    uncompressed: Cell<u64>,
    violation: Cell<Option<ArchiveError>>,
}

struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    counts: Rc<Counts>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.counts
            .compressed
            .set(self.counts.compressed.get() + n as u64);
        Ok(n)
    }
}

struct Capped<R> {
    inner: R,
    limits: Limits,
    counts: Rc<Counts>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.counts.uncompressed.get() + n as u64;
        self.counts.uncompressed.set(total);
        let violation = if total > self.limits.max_uncompressed {
            Some(ArchiveError::TooLarge {
                limit: self.limits.max_uncompressed,
            })
        } else if total > (1 << 20)
            && total / self.counts.compressed.get().max(1) > self.limits.max_ratio
        {
            Some(ArchiveError::CompressionRatio {
                limit: self.limits.max_ratio,
            })
        } else {
            None
        };
        if let Some(v) = violation {
            self.counts.violation.set(Some(v));
            return Err(io::Error::other("archive limit exceeded"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn targz(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        targz_mode(entries, 0o644)
    }

    fn targz_mode(entries: &[(&str, tar::EntryType, &[u8])], mode: u32) -> Vec<u8> {
        let mut tar = Vec::new();
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_cksum();
            tar.extend_from_slice(h.as_bytes());
            tar.extend_from_slice(data);
            tar.resize(tar.len().next_multiple_of(512), 0);
        }
        tar.extend_from_slice(&[0; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn check_bytes(bytes: &[u8], expected: Option<Sha256>) -> Result<ArchiveInfo, ArchiveError> {
        check(bytes, &Limits::default(), expected)
    }

    #[test]
    fn a_good_archive_and_each_refusal() {
        let good = targz(&[
            ("feed/", tar::EntryType::Directory, b""),
            ("feed/cve.json", tar::EntryType::Regular, b"{}"),
        ]);
        let info = check_bytes(&good, Some(Sha256::of(&good))).unwrap();
        assert_eq!((info.entries, info.size), (2, good.len() as u64));
        assert!(matches!(
            check_bytes(&good, Some(Sha256::of(b"x"))),
            Err(ArchiveError::DigestMismatch { .. })
        ));
        assert!(matches!(
            check_bytes(b"PK\x03\x04", None),
            Err(ArchiveError::NotGzip)
        ));
        assert!(matches!(
            check_bytes(&good[..good.len() - 4], None),
            Err(ArchiveError::Corrupt(_))
        ));
        let mut flipped = good.clone();
        let i = flipped.len() - 6;
        flipped[i] ^= 0xff;
        assert!(check_bytes(&flipped, None).is_err());
        let evil = targz(&[("../etc/passwd", tar::EntryType::Regular, b"x")]);
        assert!(matches!(
            check_bytes(&evil, None),
            Err(ArchiveError::UnsafeEntry { .. })
        ));
        let link = targz(&[("a", tar::EntryType::Symlink, b"")]);
        assert!(matches!(
            check_bytes(&link, None),
            Err(ArchiveError::UnsafeEntry { .. })
        ));
        assert!(matches!(
            check_bytes(&targz(&[]), None),
            Err(ArchiveError::Empty)
        ));
        let setuid = targz_mode(&[("feed/run", tar::EntryType::Regular, b"x")], 0o4755);
        let err = check_bytes(&setuid, None).unwrap_err().to_string();
        assert!(err.contains("setuid, setgid or sticky"), "{err}");
        let backslash = targz(&[("feed\\..\\..\\x", tar::EntryType::Regular, b"x")]);
        assert!(matches!(
            check_bytes(&backslash, None),
            Err(ArchiveError::UnsafeEntry { .. })
        ));
        let bomb = targz(&[("zeros", tar::EntryType::Regular, &vec![0u8; 8 << 20])]);
        assert!(matches!(
            check_bytes(&bomb, None),
            Err(ArchiveError::CompressionRatio { .. })
        ));
    }
}
