//! The bytes of an index file, mapped into memory: the one module of the workspace that
//! uses `unsafe` (the workspace lint denies it everywhere else).
//!
//! The indexes are read in place (a binary search touches a few pages, an fst lookup a
//! few nodes), so a monitor costs the pages its lookups touch, not the size of the feed,
//! and starts without reading them into memory. This module checks a file against the
//! size and SHA-256 recorded when it was written ([`FileDigest`], in `summary.json`) and
//! maps it; checking what the bytes mean (magic, lengths, order) is each reader's job
//! ([`super::netsets`], [`super::osv_index`]).

#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use relay::bundle::{HashingSink, Sha256};
use serde::{Deserialize, Serialize};

use super::FeedsError;

/// Size and SHA-256 of an index file: recorded in `summary.json` when the index is
/// written, checked when the file is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: Sha256,
}

impl FileDigest {
    /// Reads `file` from its current position to the end.
    pub fn of(mut file: &File) -> io::Result<FileDigest> {
        let mut sink = HashingSink::default();
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            io::Write::write_all(&mut sink, &buf[..n])?;
            size += n as u64;
        }
        Ok(FileDigest {
            size,
            sha256: sink.finish(),
        })
    }
}

/// An index's bytes: a read-only mapping of an index file, or bytes built in memory
/// (the small sets of rules and tests). Cheap to clone.
#[derive(Clone)]
pub struct IndexBytes(Inner);

#[derive(Clone)]
enum Inner {
    Mapped(Arc<memmap2::Mmap>),
    Owned(Arc<[u8]>),
}

impl IndexBytes {
    /// Maps the index file at `path`, read-only, once it matches `expected` (the digest
    /// recorded when it was written; `None` for a file this process just wrote). `what`
    /// names the index in the error when it does not match ("damaged {what}").
    pub fn map(
        path: &Path,
        expected: Option<&FileDigest>,
        what: &str,
    ) -> Result<IndexBytes, FeedsError> {
        let io_err = |e| FeedsError::io(path, e);
        let file = File::open(path).map_err(io_err)?;
        if let Some(expected) = expected {
            // Hashed through read(), not through the mapping: the page cache serves it,
            // and the process does not end up with every page of the index resident.
            if FileDigest::of(&file).map_err(io_err)? != *expected {
                return Err(FeedsError::bad(
                    path,
                    &format!(
                        "damaged {what}: it does not match the digest recorded when it was \
                         written (remove the bundle's index/ directory to have it rebuilt)"
                    ),
                ));
            }
        }
        if file.metadata().map_err(io_err)?.len() == 0 {
            // A zero-length mapping is refused by the kernel; there is nothing to map.
            return Ok(IndexBytes::from(Vec::new()));
        }
        // SAFETY: a mapped file must not change while it is mapped (Rust assumes the
        // `&[u8]` never changes; a truncated file raises SIGBUS on access). That holds
        // for the files mapped here because of how they are made and kept:
        // - they are index files, written once when a bundle is applied (`build_indexes`
        //   writes `index.tmp/`, fsyncs the files, then renames it to `index/`) into the
        //   agent's own data directory (`--feeds` naming an applied bundle maps that
        //   bundle's files, made the same way), or, for `--feeds` on raw feed files, into
        //   a temp directory private to this process;
        // - nothing opens them for writing again: a newer bundle gets a new directory,
        //   and an old directory is removed by unlinking, which leaves a live mapping's
        //   inode intact until it is unmapped (the same holds when `Feeds::applied`
        //   rebuilds an index: the old directory is removed, new files renamed in);
        // - the data directory is the agent's own (root's, as the service runs): whoever
        //   else can write to it can change what the agent trusts anyway.
        // What can still happen is damage from outside the agent (a disk error, an
        // operator editing a file by hand, a copy cut short). An applied bundle's index
        // files are checked against the size and SHA-256 its summary recorded before they
        // are mapped: affordable at every open because it reads through the page cache
        // (about 30 ms for the ~45 MB a real-size monitor maps, with the CPU's SHA
        // extensions) and leaves nothing resident. Each reader also checks what it
        // relies on (magic or fst type and version, lengths and offsets against the
        // file's size, the order of the OSV key table).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        // Lookups jump around (binary search, fst nodes): no read-ahead.
        let _ = map.advise(memmap2::Advice::Random);
        Ok(IndexBytes(Inner::Mapped(Arc::new(map))))
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Inner::Mapped(_))
    }
}

impl From<Vec<u8>> for IndexBytes {
    fn from(bytes: Vec<u8>) -> Self {
        IndexBytes(Inner::Owned(bytes.into()))
    }
}

impl AsRef<[u8]> for IndexBytes {
    fn as_ref(&self) -> &[u8] {
        match &self.0 {
            Inner::Mapped(map) => map,
            Inner::Owned(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for IndexBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.is_mapped() {
            "mapped"
        } else {
            "in memory"
        };
        write!(f, "IndexBytes({} bytes, {how})", self.as_ref().len())
    }
}
