//! A read-only view of a container image's root filesystem, from a directory, a flat tar
//! (`docker export`, optionally gzip-compressed) or a `docker save` archive (layers applied
//! in manifest order, whiteouts and opaque directories honoured).
//!
//! Opening builds an in-memory index (path -> kind, size, mode, where the bytes are);
//! nothing is extracted to disk. Reads fetch only the files asked for, in storage order,
//! so a compressed stream is decompressed once per batch (`read_each`, `stream_each`).
//!
//! Safety, for images that may be hostile:
//! - symbolic links are resolved by this module against the image root, like `chroot`
//!   (an absolute target restarts at the image root, `..` stops there), at most
//!   `Limits::max_symlink_hops` of them; the host's filesystem is never consulted, and a
//!   directory image is read with `openat(O_NOFOLLOW)` one component at a time;
//! - tar paths are normalised (a leading `/` or `./` is dropped) and any entry with a `..`
//!   component, a NUL, a non-UTF-8 or over-long name is skipped and counted in
//!   `warnings()`; hard links must name an earlier entry of the image;
//! - sizes are capped (`Limits`): entries, layers, extended tar headers, metadata files,
//!   bytes walked, bytes read per file.
//!
//! What to look for, and what it means, is the caller's business (`inventory`).

mod archive;
mod config;
mod dir;
mod index;
mod tar;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

pub use config::{ContainerConfig, ImageConfig};

use archive::{LayerAccess, Loc, TarSource};
use dir::DirSource;
use index::{Data, Index, Node, NodeKind};

/// Caps that bound the memory and work any image can cause.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most entries in the index (all layers' entries count while layers are walked).
    pub max_entries: usize,
    /// Most layers in a `docker save` archive.
    pub max_layers: usize,
    /// Longest path or link target, in bytes.
    pub max_path_len: usize,
    /// Largest GNU long-name or PAX extended header read into memory.
    pub max_extension: u64,
    /// Largest `manifest.json` or image config read.
    pub max_metadata: u64,
    /// Default cap of `Image::read`.
    pub max_read: u64,
    /// Most symbolic links followed while resolving one path.
    pub max_symlink_hops: u32,
    /// Most uncompressed archive bytes walked while opening (bounds decompression bombs).
    pub max_archive_bytes: u64,
    /// Most uncompressed bytes walked per byte of the archive file, beyond a first
    /// [`EXPANSION_ALLOWANCE`]: a small gzip bomb is refused after seconds of work, not
    /// after hours (deflate can expand 1,000 times; real layers, 2 to 10).
    pub max_expansion: u64,
    /// Deepest directory descended into in a directory image.
    pub max_depth: usize,
}

/// Uncompressed bytes always allowed, whatever the archive's size ([`Limits::max_expansion`]).
pub const EXPANSION_ALLOWANCE: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 1_000_000,
            max_layers: 256,
            max_path_len: 4096,
            max_extension: 1 << 20,
            max_metadata: 16 << 20,
            max_read: 64 << 20,
            max_symlink_hops: 40,
            max_archive_bytes: 256 << 30,
            max_expansion: 100,
            max_depth: 256,
        }
    }
}

/// What an image was opened from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Directory,
    /// A flat root filesystem tar (`docker export`).
    Tar {
        gzip: bool,
    },
    /// A `docker save` archive, with the number of layers its manifest lists.
    DockerSave {
        gzip: bool,
        layers: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Devices, fifos, sockets, and tar entries that cannot be read (sparse files).
    Other,
}

/// One entry of the image's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Normalised, relative to the image root: `usr/lib/os-release` ("" is the root).
    pub path: &'a str,
    pub kind: EntryKind,
    /// Bytes, for regular files; 0 otherwise.
    pub size: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// A symbolic link's target, as written in the image.
    pub link_target: Option<&'a str>,
}

impl Entry<'_> {
    /// A regular file with any execute bit.
    pub fn is_executable(&self) -> bool {
        self.kind == EntryKind::File && self.mode & 0o111 != 0
    }

    /// The last component of the path.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a directory, a tar archive or a docker save archive")]
    UnknownFormat { path: String },
    #[error("{path}: damaged tar archive: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path}: limit exceeded: {reason}")]
    LimitExceeded { path: String, reason: String },
    #[error("{path}: docker save manifest: {reason}")]
    Manifest { path: String, reason: String },
    #[error("{path}: more than {limit} symbolic links to follow")]
    SymlinkLoop { path: String, limit: u32 },
    #[error("{path}: {size} bytes, over the {limit}-byte cap")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// Messages (warnings, notes) capped at `MAX`, so hostile input cannot grow them without
/// bound; those past the cap are counted, and the count is the last message.
#[derive(Debug, Default)]
pub(crate) struct Capped<const MAX: usize> {
    list: Vec<String>,
    dropped: usize,
}

/// Warnings gathered while opening an image.
pub(crate) type Warnings = Capped<100>;

impl<const MAX: usize> Capped<MAX> {
    pub fn push(&mut self, message: String) {
        if self.list.len() < MAX {
            self.list.push(message);
        } else {
            self.dropped += 1;
        }
    }

    /// The messages, then `N more <noun> not shown` if any were dropped.
    pub fn finish(mut self, noun: &str) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("{} more {noun} not shown", self.dropped));
        }
        self.list
    }
}

impl<const MAX: usize> Extend<String> for Capped<MAX> {
    fn extend<T: IntoIterator<Item = String>>(&mut self, iter: T) {
        for message in iter {
            self.push(message);
        }
    }
}

enum Source {
    Dir(DirSource),
    Tar(TarSource),
}

/// A container image's root filesystem, read-only.
pub struct Image {
    source: Source,
    index: Index,
    limits: Limits,
    kind: ImageKind,
    config: Option<ImageConfig>,
    config_json: Option<serde_json::Value>,
    repo_tags: Vec<String>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.source_path())
            .field("kind", &self.kind)
            .field("entries", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl Image {
    /// Opens a directory, a flat tar or a `docker save` archive (gzip or not), with the
    /// default `Limits`.
    pub fn open(path: impl AsRef<Path>) -> Result<Image, ImageError> {
        Image::open_with(path, Limits::default())
    }

    pub fn open_with(path: impl AsRef<Path>, limits: Limits) -> Result<Image, ImageError> {
        let path = path.as_ref();
        let metadata = std::fs::metadata(path).map_err(|source| ImageError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut warnings = Warnings::default();
        let image = if metadata.is_dir() {
            let (source, index) = dir::open(path, &limits, &mut warnings)?;
            Image {
                source: Source::Dir(source),
                index,
                limits,
                kind: ImageKind::Directory,
                config: None,
                config_json: None,
                repo_tags: Vec::new(),
                warnings: Vec::new(),
            }
        } else {
            let opened = archive::open(path, &limits, &mut warnings)?;
            let config_json = match &opened.config {
                Some(bytes) => Some(serde_json::from_slice::<serde_json::Value>(bytes).map_err(
                    |e| ImageError::Manifest {
                        path: path.display().to_string(),
                        reason: format!("image config is not JSON: {e}"),
                    },
                )?),
                None => None,
            };
            let config = match &config_json {
                Some(value) => match serde_json::from_value::<ImageConfig>(value.clone()) {
                    Ok(config) => Some(config),
                    Err(e) => {
                        warnings.push(format!("image config not understood: {e}"));
                        None
                    }
                },
                None => None,
            };
            Image {
                source: Source::Tar(opened.source),
                index: opened.index,
                limits,
                kind: opened.kind,
                config,
                config_json,
                repo_tags: opened.repo_tags,
                warnings: Vec::new(),
            }
        };
        Ok(Image {
            warnings: warnings.finish("warnings"),
            ..image
        })
    }

    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// Entries skipped or changed while opening (unsafe tar paths, dangling hard links,
    /// unreadable directories...), for the report.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The image config of a `docker save` archive; `None` for other kinds.
    pub fn config(&self) -> Option<&ImageConfig> {
        self.config.as_ref()
    }

    /// The same config as raw JSON, for fields `ImageConfig` does not name.
    pub fn config_json(&self) -> Option<&serde_json::Value> {
        self.config_json.as_ref()
    }

    /// The `RepoTags` of a `docker save` archive's image.
    pub fn repo_tags(&self) -> &[String] {
        &self.repo_tags
    }

    /// How many entries the filesystem has.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Every entry, in path order, as stored (symbolic links are entries, not followed).
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.index.iter().map(|(path, node)| entry(path, node))
    }

    /// The entries whose stored path matches a glob pattern: `*` and `?` stay within one
    /// component, `**` spans any number of them, `[...]` is a class. Symbolic links in
    /// the pattern's path are not followed (each file is found once, at its real path).
    /// A leading `/` is ignored.
    pub fn glob(&self, pattern: &str) -> Result<Vec<Entry<'_>>, ImageError> {
        let pattern = pattern.trim_start_matches('/');
        let compiled = glob::Pattern::new(pattern).map_err(|e| ImageError::Pattern {
            pattern: pattern.to_owned(),
            reason: e.msg.to_owned(),
        })?;
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        // Only paths that start with the pattern's literal prefix can match.
        let literal = pattern
            .find(['*', '?', '['])
            .map_or(pattern, |i| &pattern[..i]);
        Ok(self
            .index
            .with_prefix(literal)
            .filter(|(path, _)| compiled.matches_with(path, options))
            .map(|(path, node)| entry(path, node))
            .collect())
    }

    /// The entry at `path` after following symbolic links (its `path` is the resolved
    /// one); `None` if nothing is there.
    pub fn metadata(&self, path: &str) -> Result<Option<Entry<'_>>, ImageError> {
        Ok(self
            .resolve(path, true)?
            .map(|(path, node)| entry(path, node)))
    }

    /// The entry at `path`, a symbolic link in the last component not followed.
    pub fn symlink_metadata(&self, path: &str) -> Result<Option<Entry<'_>>, ImageError> {
        Ok(self
            .resolve(path, false)?
            .map(|(path, node)| entry(path, node)))
    }

    /// The entries directly inside the directory at `path` (links followed to get there);
    /// `None` if there is no directory there.
    pub fn read_dir(&self, path: &str) -> Result<Option<Vec<Entry<'_>>>, ImageError> {
        match self.resolve(path, true)? {
            Some((dir, node)) if node.kind == NodeKind::Dir => Ok(Some(
                self.index
                    .children(dir)
                    .map(|(path, node)| entry(path, node))
                    .collect(),
            )),
            _ => Ok(None),
        }
    }

    /// The bytes of the regular file at `path` (links followed), at most
    /// `Limits::max_read` of them. `Ok(None)` if nothing is there; `NotAFile` for a
    /// directory or device; `TooLarge` over the cap.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        self.read_capped(path, self.limits.max_read)
    }

    /// `read` with an explicit cap.
    pub fn read_capped(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let mut out = None;
        self.read_each(&[path], max, |_, result| out = Some(result))?;
        out.unwrap_or(Ok(None))
    }

    /// Reads many files in one pass, in storage order (not the order given): `f` gets each
    /// requested path with what `read_capped` would return for it. Only a failure to open
    /// the image's archive is returned as an error.
    pub fn read_each<P, F>(&self, paths: &[P], max: u64, mut f: F) -> Result<(), ImageError>
    where
        P: AsRef<str>,
        F: FnMut(&str, Result<Option<Vec<u8>>, ImageError>),
    {
        let mut wanted: Vec<(&str, Loc, String)> = Vec::new();
        let mut disk: Vec<(&str, String, u64)> = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let found = match self.file_location(path) {
                Ok(found) => found,
                Err(e) => {
                    f(path, Err(e));
                    continue;
                }
            };
            match found {
                None => f(path, Ok(None)),
                Some((resolved, size, _)) if size > max => f(
                    path,
                    Err(ImageError::TooLarge {
                        path: resolved,
                        size,
                        limit: max,
                    }),
                ),
                Some((resolved, size, Where::Disk)) => disk.push((path, resolved, size)),
                Some((resolved, size, Where::Layer(slot, offset))) => {
                    wanted.push((path, Loc { slot, offset, size }, resolved))
                }
            }
        }
        for (path, resolved, _) in disk {
            let result = self.with_disk_file(&resolved, |stream| read_all(stream, max));
            f(path, result.map(Some));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let Source::Tar(source) = &self.source else {
            return Ok(());
        };
        let items = wanted
            .iter()
            .enumerate()
            .map(|(i, (_, loc, _))| (i, *loc))
            .collect();
        source.stream_locs(items, &mut |i, stream| {
            let (path, _, resolved) = &wanted[i];
            let result = read_all(stream, max).map_err(|source| ImageError::Io {
                path: resolved.clone(),
                source,
            });
            f(path, result.map(Some));
        })
    }

    /// Streams many regular files in one pass, in storage order: `f` gets each requested
    /// path that names a regular file (links followed) with a stream of its bytes, or the
    /// error that kept it from being opened. Paths with nothing or no regular file there
    /// are left out. Only a failure to open the image's archive is returned as an error.
    pub fn stream_each<P, F>(&self, paths: &[P], mut f: F) -> Result<(), ImageError>
    where
        P: AsRef<str>,
        F: FnMut(&str, Result<&mut FileStream<'_>, ImageError>),
    {
        let mut wanted: Vec<(&str, Loc)> = Vec::new();
        for path in paths {
            let path = path.as_ref();
            match self.file_location(path) {
                Ok(None) => {}
                Ok(Some((resolved, _, Where::Disk))) => {
                    let Source::Dir(dir) = &self.source else {
                        continue;
                    };
                    match dir.open_file(&resolved) {
                        Ok((file, len)) => {
                            let mut stream = FileStream {
                                inner: StreamInner::Disk(file),
                                len,
                                pos: 0,
                            };
                            f(path, Ok(&mut stream));
                        }
                        Err(source) => f(
                            path,
                            Err(ImageError::Io {
                                path: resolved,
                                source,
                            }),
                        ),
                    }
                }
                Ok(Some((_, size, Where::Layer(slot, offset)))) => {
                    wanted.push((path, Loc { slot, offset, size }))
                }
                Err(ImageError::NotAFile { .. }) => {}
                Err(e) => f(path, Err(e)),
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let Source::Tar(source) = &self.source else {
            return Ok(());
        };
        let items = wanted
            .iter()
            .enumerate()
            .map(|(i, (_, loc))| (i, *loc))
            .collect();
        source.stream_locs(items, &mut |i, stream| f(wanted[i].0, Ok(stream)))
    }

    fn source_path(&self) -> &Path {
        source_path_of(&self.source)
    }

    fn resolve(&self, path: &str, follow_last: bool) -> Result<Option<(&str, &Node)>, ImageError> {
        let resolved = self
            .index
            .resolve(path, follow_last, self.limits.max_symlink_hops)
            .map_err(|_| ImageError::SymlinkLoop {
                path: path.to_owned(),
                limit: self.limits.max_symlink_hops,
            })?;
        Ok(resolved)
    }

    /// Where the regular file at `path` is: resolved path, size, location.
    fn file_location(&self, path: &str) -> Result<Option<(String, u64, Where)>, ImageError> {
        let Some((resolved, node)) = self.resolve(path, true)? else {
            return Ok(None);
        };
        match (&node.kind, node.data) {
            (NodeKind::File, Data::Disk) => Ok(Some((resolved.to_owned(), node.size, Where::Disk))),
            (NodeKind::File, Data::Layer { slot, offset }) => Ok(Some((
                resolved.to_owned(),
                node.size,
                Where::Layer(slot, offset),
            ))),
            _ => Err(ImageError::NotAFile {
                path: resolved.to_owned(),
            }),
        }
    }

    fn with_disk_file<T>(
        &self,
        resolved: &str,
        read: impl FnOnce(&mut FileStream<'_>) -> io::Result<T>,
    ) -> Result<T, ImageError> {
        let io_err = |source| ImageError::Io {
            path: resolved.to_owned(),
            source,
        };
        let Source::Dir(dir) = &self.source else {
            return Err(io_err(io::Error::other("not a directory image")));
        };
        let (file, len) = dir.open_file(resolved).map_err(io_err)?;
        let mut stream = FileStream {
            inner: StreamInner::Disk(file),
            len,
            pos: 0,
        };
        read(&mut stream).map_err(io_err)
    }
}

enum Where {
    Disk,
    Layer(u32, u64),
}

fn source_path_of(source: &Source) -> &Path {
    match source {
        Source::Dir(dir) => dir.path(),
        Source::Tar(tar) => tar.path(),
    }
}

fn entry<'a>(path: &'a str, node: &'a Node) -> Entry<'a> {
    let (kind, link_target) = match &node.kind {
        NodeKind::File => (EntryKind::File, None),
        NodeKind::Dir => (EntryKind::Dir, None),
        NodeKind::Symlink(target) => (EntryKind::Symlink, Some(target.as_ref())),
        NodeKind::Other => (EntryKind::Other, None),
    };
    Entry {
        path,
        kind,
        size: node.size,
        mode: node.mode,
        link_target,
    }
}

/// Reads a stream whole, refusing more than `max` bytes (a file that grew on disk).
fn read_all(stream: &mut FileStream<'_>, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(stream.len().min(max)).unwrap_or(0));
    stream.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::other(format!("grew past the {max}-byte cap")));
    }
    if (out.len() as u64) < stream.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file's data ends early",
        ));
    }
    Ok(out)
}

/// A regular file's bytes: `Read` and `Seek` within the file. Moving backwards is cheap
/// only when `is_random_access()`; in a gzip stream it restarts decompression.
pub struct FileStream<'a> {
    inner: StreamInner<'a>,
    len: u64,
    pos: u64,
}

enum StreamInner<'a> {
    Disk(File),
    Layer {
        layer: &'a mut dyn LayerAccess,
        offset: u64,
    },
}

impl<'a> FileStream<'a> {
    pub(crate) fn layer(layer: &'a mut dyn LayerAccess, offset: u64, len: u64) -> FileStream<'a> {
        FileStream {
            inner: StreamInner::Layer { layer, offset },
            len,
            pos: 0,
        }
    }

    /// The file's size.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether seeking backwards is cheap (a file on disk or in an uncompressed archive).
    pub fn is_random_access(&self) -> bool {
        match &self.inner {
            StreamInner::Disk(_) => true,
            StreamInner::Layer { layer, .. } => layer.random_access(),
        }
    }
}

impl Read for FileStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let read = match &mut self.inner {
            StreamInner::Disk(file) => file.read(&mut buf[..n])?,
            StreamInner::Layer { layer, offset } => {
                let at = *offset + self.pos;
                if layer.position() != at {
                    layer.seek_to(at)?;
                }
                layer.read_here(&mut buf[..n])?
            }
        };
        self.pos += read as u64;
        Ok(read)
    }
}

impl Seek for FileStream<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if let StreamInner::Disk(file) = &mut self.inner {
            file.seek(SeekFrom::Start(target))?;
        }
        // Layers are positioned lazily, on the next read.
        self.pos = target;
        Ok(target)
    }
}
