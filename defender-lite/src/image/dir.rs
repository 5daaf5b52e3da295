//! Directory images: a root filesystem on disk (a debootstrap tree, an unpacked image, a
//! container's merged rootfs).
//!
//! The tree is walked and read with `openat(2)` relative to a descriptor of the root, and
//! every component is opened with `O_NOFOLLOW`: the kernel refuses to follow any symbolic
//! link, so a link in the tree (even one swapped in while the scan runs) can never lead a
//! read outside the root. Links are recorded in the index and resolved there, against the
//! image root (`index::resolve`). The walk stays on the root's filesystem (like
//! `find -xdev`), so scanning `/` does not descend into `/proc` or network mounts.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use super::index::{Data, Index, Node, NodeKind};
use super::{ImageError, Limits, Warnings};

pub(crate) struct DirSource {
    root: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens a directory as an image and indexes its tree.
pub(crate) fn open(
    path: &Path,
    limits: &Limits,
    warnings: &mut Warnings,
) -> Result<(DirSource, Index), ImageError> {
    let display = path.display().to_string();
    let io_err = |e: io::Error| ImageError::Io {
        path: display.clone(),
        source: e,
    };
    // The root itself may be reached through a link: the caller chose it.
    let root = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(e.into()))?;
    let root_dev = rustix::fs::fstat(&root)
        .map_err(|e| io_err(e.into()))?
        .st_dev;
    let mut index = Index::new(limits.max_entries);

    struct Frame {
        dir: Dir,
        rel: String,
    }
    let first = Dir::read_from(&root).map_err(|e| io_err(e.into()))?;
    let mut stack = vec![Frame {
        dir: first,
        rel: String::new(),
    }];
    let mut not_utf8 = 0usize;
    let mut unreadable = 0usize;
    let mut other_fs = 0usize;
    let mut too_deep = 0usize;
    loop {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else {
            break;
        };
        let entry = match frame.dir.read() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(_)) => {
                unreadable += 1;
                stack.pop();
                continue;
            }
            Some(Ok(entry)) => entry,
        };
        let name_bytes = entry.file_name().to_bytes();
        if name_bytes == b"." || name_bytes == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name_bytes) else {
            not_utf8 += 1;
            continue;
        };
        let rel = if frame.rel.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", frame.rel)
        };
        if rel.len() > limits.max_path_len {
            not_utf8 += 1;
            continue;
        }
        let Ok(dir_fd) = frame.dir.fd() else {
            unreadable += 1;
            continue;
        };
        let stat = match rustix::fs::statat(dir_fd, name_bytes, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let mode = stat.st_mode & 0o7777;
        let file_type = FileType::from_raw_mode(stat.st_mode);
        let full = |_| ImageError::LimitExceeded {
            path: display.clone(),
            reason: format!("more than {} entries", limits.max_entries),
        };
        let mut descend = None;
        let node = match file_type {
            FileType::RegularFile => Node {
                kind: NodeKind::File,
                size: u64::try_from(stat.st_size).unwrap_or(0),
                mode,
                data: Data::Disk,
            },
            FileType::Directory => {
                if stat.st_dev != root_dev {
                    other_fs += 1;
                } else if depth > limits.max_depth {
                    too_deep += 1;
                } else {
                    match rustix::fs::openat(dir_fd, name_bytes, DIR_FLAGS, Mode::empty())
                        .and_then(Dir::new)
                    {
                        Ok(dir) => descend = Some(dir),
                        Err(_) => unreadable += 1,
                    }
                }
                Node {
                    kind: NodeKind::Dir,
                    size: 0,
                    mode,
                    data: Data::None,
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir_fd, name_bytes, Vec::new())
                    .ok()
                    .and_then(|t| t.into_string().ok());
                match target {
                    Some(target) if !target.is_empty() => Node {
                        kind: NodeKind::Symlink(target.into_boxed_str()),
                        size: 0,
                        mode,
                        data: Data::None,
                    },
                    _ => {
                        unreadable += 1;
                        continue;
                    }
                }
            }
            _ => Node {
                kind: NodeKind::Other,
                size: 0,
                mode,
                data: Data::None,
            },
        };
        index.insert(&rel, node).map_err(full)?;
        if let Some(dir) = descend {
            stack.push(Frame { dir, rel });
        }
    }
    for (count, what) in [
        (
            not_utf8,
            "entries with names that are not UTF-8 or too long",
        ),
        (unreadable, "entries that could not be read"),
        (other_fs, "directories on other filesystems (not descended)"),
        (too_deep, "directories nested too deep (not descended)"),
    ] {
        if count > 0 {
            warnings.push(format!("{display}: {count} {what}"));
        }
    }
    Ok((
        DirSource {
            root,
            path: path.to_owned(),
        },
        index,
    ))
}

impl DirSource {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file at a resolved path (no symbolic links in it), one component
    /// at a time with `O_NOFOLLOW`; fails if anything on the way is, or has become, a link,
    /// or if the file is not a regular file.
    pub fn open_file(&self, rel: &str) -> io::Result<(File, u64)> {
        let mut components = rel.split('/').filter(|c| !c.is_empty()).peekable();
        let mut current: Option<OwnedFd> = None;
        while let Some(component) = components.next() {
            if component == "." || component == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "unresolved path component",
                ));
            }
            let name = OsStr::new(component).as_bytes();
            let at = current.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let last = components.peek().is_none();
            let flags = if last {
                // NONBLOCK: a fifo swapped in must not hang the scan; NOCTTY: a terminal
                // swapped in must not become this process's controlling terminal. The
                // type is checked on the open descriptor, below.
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
            } else {
                DIR_FLAGS
            };
            current = Some(rustix::fs::openat(at, name, flags, Mode::empty())?);
        }
        let Some(fd) = current else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root is a directory",
            ));
        };
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok((File::from(fd), u64::try_from(stat.st_size).unwrap_or(0)))
    }
}
