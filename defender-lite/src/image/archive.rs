//! Tar-based images: a flat root filesystem tar (`docker export`) or a `docker save`
//! archive, either one optionally gzip-compressed as a whole, with plain or gzip layers.
//!
//! Nothing is extracted. Opening walks the headers once (seeking over file data when the
//! file is not compressed) and, for `docker save`, walks each layer's headers once more, in
//! the order the layers sit in the archive; the layers are then applied to one index in
//! manifest order. A file's bytes are found again by (layer slot, offset): on an
//! uncompressed archive by seeking, in a gzip stream by decompressing forward, which is
//! why reads come in batches sorted by position (`stream_locs`). A backward move in a gzip
//! stream restarts it: correct, only slower.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::config::ManifestItem;
use super::index::{Data, Index, Node, NodeKind, clean_archive_path};
use super::tar::{
    self as tarwalk, BYTES_LIMIT_SUFFIX, Input, RawEntry, RawKind, TarLimits, WalkError,
};
use super::{FileStream, ImageError, ImageKind, Limits, Warnings};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// A tar stream inside the archive file: the whole (decompressed) file for a flat tar, or
/// one layer's bytes for `docker save`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// Offset in the archive's (decompressed) stream.
    pub start: u64,
    /// Length there, compressed; `u64::MAX` when unknown (a flat gzip archive).
    pub len: u64,
    pub compression: Compression,
}

/// Where a regular file's bytes are in a tar-based image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loc {
    pub slot: u32,
    pub offset: u64,
    pub size: u64,
}

pub(crate) struct TarSource {
    path: PathBuf,
    gzip: bool,
    slots: Vec<Slot>,
}

/// What opening a tar-based image yields.
pub(crate) struct Opened {
    pub source: TarSource,
    pub index: Index,
    pub kind: ImageKind,
    pub config: Option<Vec<u8>>,
    pub repo_tags: Vec<String>,
}

/// Opens a file as a flat tar or a `docker save` archive (detected by a `manifest.json`
/// at the top that parses as a docker save manifest).
pub(crate) fn open(
    path: &Path,
    limits: &Limits,
    warnings: &mut Warnings,
) -> Result<Opened, ImageError> {
    let display = path.display().to_string();
    let io_err = |source: io::Error| ImageError::Io {
        path: display.clone(),
        source,
    };
    let file_len = std::fs::metadata(path).map_err(io_err)?.len();
    let mut magic = [0u8; 2];
    let gzip = {
        let mut file = File::open(path).map_err(io_err)?;
        let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
        n == 2 && magic == GZIP_MAGIC
    };
    let mut source = TarSource {
        path: path.to_owned(),
        gzip,
        slots: vec![Slot {
            start: 0,
            len: if gzip { u64::MAX } else { file_len },
            compression: Compression::None,
        }],
    };
    // Uncompressed bytes walked: the absolute cap, or the expansion cap when smaller.
    let by_ratio = file_len
        .saturating_mul(limits.max_expansion)
        .saturating_add(super::EXPANSION_ALLOWANCE);
    let mut budget = Budget {
        left: limits.max_archive_bytes.min(by_ratio),
        note: if by_ratio < limits.max_archive_bytes {
            format!(
                " ({} times the archive's {file_len} bytes, plus {} MiB: a decompression bomb?)",
                limits.max_expansion,
                super::EXPANSION_ALLOWANCE >> 20
            )
        } else {
            String::new()
        },
    };
    let mut flat = Index::new(limits.max_entries);
    {
        let mut outer = source.outer().map_err(io_err)?;
        let mut first = [0u8; 512];
        let n = read_up_to(&mut outer, &mut first).map_err(io_err)?;
        if n < first.len() || !looks_like_tar(&first) {
            return Err(ImageError::UnknownFormat { path: display });
        }
        outer.seek_to(0).map_err(io_err)?;
        let mut stream = LayerStream::open(&mut outer, &source.slots[0]).map_err(io_err)?;
        let mut hard_link_warnings = Vec::new();
        let skipped = walk_layer(
            &mut stream,
            0,
            false,
            limits,
            &mut budget,
            &display,
            &mut |op| apply_op(&mut flat, op, &mut hard_link_warnings, &display),
        )?;
        warnings.extend(skipped.into_iter().chain(hard_link_warnings));
    }

    let Some(manifest) = docker_manifest(&source, &flat, limits, &display)? else {
        // An OCI image layout (`skopeo copy ... oci-archive:`) has no manifest.json; read as
        // a flat root filesystem it would look like an image with nothing installed.
        let is_file = |path: &str| flat.get(path).is_some_and(|n| n.kind == NodeKind::File);
        if is_file("oci-layout") && is_file("index.json") {
            return Err(ImageError::Manifest {
                path: display,
                reason: "an OCI image layout without manifest.json is not supported; \
                         save the image with `docker save` or `skopeo copy ... docker-archive:`"
                    .into(),
            });
        }
        return Ok(Opened {
            source,
            index: flat,
            kind: ImageKind::Tar { gzip },
            config: None,
            repo_tags: Vec::new(),
        });
    };
    let manifest_err = |reason: String| ImageError::Manifest {
        path: display.clone(),
        reason,
    };
    let Some(item) = manifest.first() else {
        return Err(manifest_err("lists no image".into()));
    };
    if manifest.len() > 1 {
        warnings.push(format!(
            "{display}: the archive holds {} images; only the first ({}) is scanned",
            manifest.len(),
            item.repo_tags
                .as_ref()
                .and_then(|tags| tags.first())
                .map_or("untagged", String::as_str)
        ));
    }
    if item.layers.len() > limits.max_layers {
        return Err(ImageError::LimitExceeded {
            path: display,
            reason: format!("{} layers (cap {})", item.layers.len(), limits.max_layers),
        });
    }
    let locate = |member: &str| -> Result<(u64, u64), ImageError> {
        let clean = clean_archive_path(member.as_bytes(), limits.max_path_len)
            .map_err(|r| manifest_err(format!("{member:?}: {}", r.reason())))?;
        let resolved = flat
            .resolve(&clean, true, limits.max_symlink_hops)
            .map_err(|_| manifest_err(format!("{member:?}: symbolic link loop")))?;
        match resolved {
            Some((
                _,
                Node {
                    kind: NodeKind::File,
                    size,
                    data: Data::Layer { offset, .. },
                    ..
                },
            )) => Ok((*offset, *size)),
            _ => Err(manifest_err(format!("{member:?} is not in the archive"))),
        }
    };

    let config = {
        let (offset, size) = locate(&item.config)?;
        if size > limits.max_metadata {
            return Err(ImageError::TooLarge {
                path: format!("{display}: {}", item.config),
                size,
                limit: limits.max_metadata,
            });
        }
        source.read_small(Loc {
            slot: 0,
            offset,
            size,
        })?
    };

    // Layers, as slots; a layer listed twice (or reached twice through the legacy format's
    // symbolic links) is one slot, walked once.
    let mut order: Vec<usize> = Vec::with_capacity(item.layers.len());
    for layer in &item.layers {
        let (start, len) = locate(layer)?;
        let slot = match source.slots[1..].iter().position(|s| s.start == start) {
            Some(i) => i + 1,
            None => {
                source.slots.push(Slot {
                    start,
                    len,
                    compression: Compression::None,
                });
                source.slots.len() - 1
            }
        };
        order.push(slot);
    }
    let mut walk_order: Vec<usize> = (1..source.slots.len()).collect();
    walk_order.sort_by_key(|&s| source.slots[s].start);
    let mut ops: Vec<Vec<LayerOp>> = vec![Vec::new(); source.slots.len()];
    {
        let mut outer = source.outer().map_err(io_err)?;
        for &s in &walk_order {
            let slot = source.slots[s];
            let layer_name = format!("{display}: layer {}", layer_name(item, &order, s));
            let layer_err = |source: io::Error| ImageError::Io {
                path: layer_name.clone(),
                source,
            };
            let (mut stream, compression) =
                LayerStream::open_sniffing(&mut outer, slot.start, slot.len).map_err(layer_err)?;
            source.slots[s].compression = compression;
            let slot_id = u32::try_from(s).map_err(|_| manifest_err("too many layers".into()))?;
            let list = &mut ops[s];
            let skipped = walk_layer(
                &mut stream,
                slot_id,
                true,
                limits,
                &mut budget,
                &layer_name,
                &mut |op| {
                    list.push(op);
                    Ok(())
                },
            )?;
            warnings.extend(skipped);
        }
    }
    drop(flat);
    let mut index = Index::new(limits.max_entries);
    for &s in &order {
        apply_layer(&mut index, &ops[s], warnings, &display)?;
    }
    Ok(Opened {
        source,
        index,
        kind: ImageKind::DockerSave {
            gzip,
            layers: item.layers.len(),
        },
        config: Some(config),
        repo_tags: item.repo_tags.clone().unwrap_or_default(),
    })
}

fn layer_name(item: &ManifestItem, order: &[usize], slot: usize) -> String {
    order
        .iter()
        .position(|&s| s == slot)
        .and_then(|i| item.layers.get(i))
        .cloned()
        .unwrap_or_default()
}

/// The docker save manifest, if the archive has a `manifest.json` that is one.
fn docker_manifest(
    source: &TarSource,
    flat: &Index,
    limits: &Limits,
    display: &str,
) -> Result<Option<Vec<ManifestItem>>, ImageError> {
    let Some(Node {
        kind: NodeKind::File,
        size,
        data: Data::Layer { offset, .. },
        ..
    }) = flat.get("manifest.json")
    else {
        return Ok(None);
    };
    if *size > limits.max_metadata {
        return Err(ImageError::TooLarge {
            path: format!("{display}: manifest.json"),
            size: *size,
            limit: limits.max_metadata,
        });
    }
    let bytes = source.read_small(Loc {
        slot: 0,
        offset: *offset,
        size: *size,
    })?;
    // A root filesystem may have a manifest.json of its own: only a list of images with
    // layers makes this a docker save archive.
    Ok(serde_json::from_slice::<Vec<ManifestItem>>(&bytes).ok())
}

/// True if the block is a tar header (its checksum matches).
fn looks_like_tar(block: &[u8; 512]) -> bool {
    let header = tar::Header::from_byte_slice(block);
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * 32;
    sum == stored
}

/// One change a layer makes to the filesystem below it.
#[derive(Debug, Clone)]
enum LayerOp {
    /// `.wh.NAME`: NAME (and whatever is below it) is deleted.
    Whiteout(String),
    /// `.wh..wh..opq`: the directory's lower contents are hidden.
    Opaque(String),
    Put(String, Node),
    /// A hard link: the entry shares the bytes of `target`, an earlier entry.
    HardLink(String, String),
}

/// Walks a layer's headers, turning each entry into a `LayerOp`. Entries that could
/// escape the root or cannot be named are left out, never interpreted: the returned
/// warning (if any) says how many and shows a few.
fn walk_layer(
    stream: &mut LayerStream<'_>,
    slot: u32,
    whiteouts: bool,
    limits: &Limits,
    budget: &mut Budget,
    what: &str,
    emit: &mut dyn FnMut(LayerOp) -> Result<(), ImageError>,
) -> Result<Option<String>, ImageError> {
    let tar_limits = TarLimits {
        max_extension: limits.max_extension,
        max_entries: limits.max_entries,
        max_bytes: budget.left,
    };
    let mut skipped: Vec<String> = Vec::new();
    let mut count = 0usize;
    let result = tarwalk::walk::<_, LayerError>(stream, &tar_limits, |raw| {
        match make_op(raw, slot, whiteouts, limits) {
            Ok(Some(op)) => emit(op).map_err(LayerError::Image),
            Ok(None) => Ok(()),
            Err(message) => {
                count += 1;
                if skipped.len() < 3 {
                    skipped.push(message);
                }
                Ok(())
            }
        }
    });
    budget.left = budget.left.saturating_sub(stream.pos);
    let path = what.to_owned();
    match result {
        Ok(()) => {}
        Err(LayerError::Image(e)) => return Err(e),
        Err(LayerError::Walk(WalkError::Io(source))) => {
            return Err(ImageError::Io { path, source });
        }
        Err(LayerError::Walk(WalkError::Malformed(reason))) => {
            return Err(ImageError::Malformed { path, reason });
        }
        Err(LayerError::Walk(WalkError::Limit(reason))) => {
            let reason = if reason.ends_with(BYTES_LIMIT_SUFFIX) {
                reason + &budget.note
            } else {
                reason
            };
            return Err(ImageError::LimitExceeded { path, reason });
        }
    }
    if count == 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "{what}: {count} unsafe or unusable entries skipped, such as {}",
        skipped.join("; ")
    )))
}

/// Uncompressed bytes left to walk, and what bounds them when it is not the absolute cap.
struct Budget {
    left: u64,
    note: String,
}

enum LayerError {
    Walk(WalkError),
    Image(ImageError),
}

impl From<WalkError> for LayerError {
    fn from(err: WalkError) -> LayerError {
        LayerError::Walk(err)
    }
}

/// Turns a raw tar entry into a filesystem change: `Ok(None)` for entries that change
/// nothing (the root, aufs metadata), `Err(reason)` for entries refused.
fn make_op(
    raw: RawEntry,
    slot: u32,
    whiteouts: bool,
    limits: &Limits,
) -> Result<Option<LayerOp>, String> {
    let shown = String::from_utf8_lossy(&raw.path).into_owned();
    let path = clean_archive_path(&raw.path, limits.max_path_len)
        .map_err(|r| format!("{shown:?}: {}", r.reason()))?;
    if path.is_empty() {
        return Ok(None);
    }
    if whiteouts {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", path.as_str()),
        };
        if name == ".wh..wh..opq" {
            return Ok(Some(LayerOp::Opaque(parent.to_owned())));
        }
        if let Some(victim) = name.strip_prefix(".wh.") {
            if victim.starts_with(".wh.") {
                return Ok(None); // aufs bookkeeping such as .wh..wh.plnk
            }
            if victim.is_empty() || victim == "." || victim == ".." {
                return Err(format!("{shown:?}: whiteout of {victim:?}"));
            }
            let target = if parent.is_empty() {
                victim.to_owned()
            } else {
                format!("{parent}/{victim}")
            };
            return Ok(Some(LayerOp::Whiteout(target)));
        }
    }
    let node = |kind: NodeKind, size: u64, data: Data| Node {
        kind,
        size,
        mode: raw.mode,
        data,
    };
    let op = match raw.kind {
        RawKind::File => LayerOp::Put(
            path,
            node(
                NodeKind::File,
                raw.size,
                Data::Layer {
                    slot,
                    offset: raw.offset,
                },
            ),
        ),
        RawKind::Dir => LayerOp::Put(path, node(NodeKind::Dir, 0, Data::None)),
        RawKind::Symlink => {
            let target = String::from_utf8(raw.link)
                .map_err(|_| format!("{shown:?}: link target is not UTF-8"))?;
            if target.is_empty() || target.len() > limits.max_path_len || target.contains('\0') {
                return Err(format!("{shown:?}: bad link target"));
            }
            // Kept as written: resolution against the image root happens on lookup.
            LayerOp::Put(
                path,
                node(NodeKind::Symlink(target.into_boxed_str()), 0, Data::None),
            )
        }
        RawKind::HardLink => {
            let target = clean_archive_path(&raw.link, limits.max_path_len)
                .map_err(|r| format!("{shown:?}: hard link target {}", r.reason()))?;
            if target.is_empty() {
                return Err(format!("{shown:?}: hard link to the root"));
            }
            LayerOp::HardLink(path, target)
        }
        RawKind::Other => LayerOp::Put(path, node(NodeKind::Other, 0, Data::None)),
        RawKind::Unsupported => LayerOp::Put(path, node(NodeKind::Other, 0, Data::None)),
    };
    Ok(Some(op))
}

/// Applies one change to the index (flat archives: entries in archive order).
fn apply_op(
    index: &mut Index,
    op: LayerOp,
    warnings: &mut Vec<String>,
    what: &str,
) -> Result<(), ImageError> {
    let full = |_| ImageError::LimitExceeded {
        path: what.to_owned(),
        reason: "too many entries".into(),
    };
    match op {
        LayerOp::Put(path, node) => index.insert(&path, node).map_err(full),
        LayerOp::HardLink(path, target) => match index.get(&target) {
            Some(node) if node.kind != NodeKind::Dir => {
                let node = node.clone();
                index.insert(&path, node).map_err(full)
            }
            _ => {
                warnings.push(format!(
                    "{what}: hard link {path} -> {target}: no such file before it; skipped"
                ));
                Ok(())
            }
        },
        // Not reached for flat archives (whiteouts off); harmless otherwise.
        LayerOp::Whiteout(path) => {
            index.remove_tree(&path);
            Ok(())
        }
        LayerOp::Opaque(dir) => {
            index.remove_children(&dir);
            Ok(())
        }
    }
}

/// Applies a layer on top of the layers below it. Whiteouts and opaque markers hide what
/// the lower layers hold, never what this layer adds, so they go first.
fn apply_layer(
    index: &mut Index,
    ops: &[LayerOp],
    warnings: &mut Warnings,
    what: &str,
) -> Result<(), ImageError> {
    for op in ops {
        match op {
            LayerOp::Whiteout(path) => index.remove_tree(path),
            LayerOp::Opaque(dir) => index.remove_children(dir),
            _ => {}
        }
    }
    let mut link_warnings = Vec::new();
    for op in ops {
        if matches!(op, LayerOp::Put(..) | LayerOp::HardLink(..)) {
            apply_op(index, op.clone(), &mut link_warnings, what)?;
        }
    }
    warnings.extend(link_warnings);
    Ok(())
}

impl TarSource {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn outer(&self) -> io::Result<Outer> {
        Outer::open(&self.path, self.gzip)
    }

    fn io_err(&self, source: io::Error) -> ImageError {
        ImageError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Reads a small member whole (manifest, config).
    fn read_small(&self, loc: Loc) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        let mut failure = None;
        self.stream_locs(vec![(0, loc)], &mut |_, stream| {
            if let Err(e) = stream.read_to_end(&mut out) {
                failure = Some(e);
            }
        })?;
        match failure {
            Some(e) => Err(self.io_err(e)),
            None => Ok(out),
        }
    }

    /// Calls `f` with a stream of each file's bytes, in storage order (not the order
    /// given), each tagged with its `usize`. An error means the archive itself could not be
    /// opened; read errors inside a file surface from the stream.
    pub fn stream_locs(
        &self,
        mut items: Vec<(usize, Loc)>,
        f: &mut dyn FnMut(usize, &mut FileStream<'_>),
    ) -> Result<(), ImageError> {
        let slot_start = |loc: &Loc| {
            self.slots
                .get(loc.slot as usize)
                .map_or(u64::MAX, |s| s.start)
        };
        items.sort_by_key(|(_, loc)| (slot_start(loc), loc.offset));
        let mut outer = self.outer().map_err(|e| self.io_err(e))?;
        let mut i = 0;
        while i < items.len() {
            let slot_id = items[i].1.slot;
            let group_end = items[i..]
                .iter()
                .position(|(_, loc)| loc.slot != slot_id)
                .map_or(items.len(), |n| i + n);
            let Some(slot) = self.slots.get(slot_id as usize) else {
                i = group_end;
                continue;
            };
            match LayerStream::open(&mut outer, slot) {
                Ok(mut layer) => {
                    for (tag, loc) in &items[i..group_end] {
                        let mut stream = FileStream::layer(&mut layer, loc.offset, loc.size);
                        f(*tag, &mut stream);
                    }
                }
                Err(e) => {
                    // The layer cannot be positioned: every file in it reports that.
                    let message = e.to_string();
                    for (tag, loc) in &items[i..group_end] {
                        let mut broken = BrokenLayer(message.clone());
                        let mut stream = FileStream::layer(&mut broken, loc.offset, loc.size);
                        f(*tag, &mut stream);
                    }
                }
            }
            i = group_end;
        }
        Ok(())
    }
}

/// Positioned access to a layer's uncompressed stream, as `FileStream` needs it.
pub(crate) trait LayerAccess {
    fn seek_to(&mut self, pos: u64) -> io::Result<()>;
    fn position(&self) -> u64;
    fn read_here(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Whether moving backwards is cheap (no decompression restart).
    fn random_access(&self) -> bool;
}

/// A layer whose stream could not be opened: every read fails with the reason.
struct BrokenLayer(String);

impl LayerAccess for BrokenLayer {
    fn seek_to(&mut self, _pos: u64) -> io::Result<()> {
        Err(io::Error::other(self.0.clone()))
    }
    fn position(&self) -> u64 {
        u64::MAX
    }
    fn read_here(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other(self.0.clone()))
    }
    fn random_access(&self) -> bool {
        false
    }
}

/// The archive file's stream, decompressed if the file is gzip: seekable when plain,
/// forward-only (restart to go back) when gzip.
struct Outer {
    path: PathBuf,
    state: OuterState,
    pos: u64,
}

enum OuterState {
    Plain(BufReader<File>),
    Gzip(Box<MultiGzDecoder<BufReader<File>>>),
}

impl Outer {
    fn open(path: &Path, gzip: bool) -> io::Result<Outer> {
        let file = BufReader::with_capacity(64 * 1024, File::open(path)?);
        let state = if gzip {
            OuterState::Gzip(Box::new(MultiGzDecoder::new(file)))
        } else {
            OuterState::Plain(file)
        };
        Ok(Outer {
            path: path.to_owned(),
            state,
            pos: 0,
        })
    }

    fn random_access(&self) -> bool {
        matches!(self.state, OuterState::Plain(_))
    }

    fn seek_to(&mut self, target: u64) -> io::Result<()> {
        if target == self.pos {
            return Ok(());
        }
        match &mut self.state {
            OuterState::Plain(file) => {
                file.seek(SeekFrom::Start(target))?;
            }
            OuterState::Gzip(_) => {
                if target < self.pos {
                    *self = Outer::open(&self.path, true)?;
                }
                let ahead = target - self.pos;
                tarwalk::skip_by_reading(self, ahead)?;
            }
        }
        self.pos = target;
        Ok(())
    }
}

impl Read for Outer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.state {
            OuterState::Plain(file) => file.read(buf)?,
            OuterState::Gzip(decoder) => decoder.read(buf)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// A slot's bytes in the outer stream: [start, end), with a few bytes already read kept
/// in front (compression sniffing must not move backwards in a gzip stream).
struct Window<'o> {
    outer: &'o mut Outer,
    start: u64,
    end: u64,
    head: Vec<u8>,
    head_at: usize,
}

impl<'o> Window<'o> {
    fn open(outer: &'o mut Outer, start: u64, len: u64) -> io::Result<Window<'o>> {
        outer.seek_to(start)?;
        Ok(Window {
            outer,
            start,
            end: start.saturating_add(len),
            head: Vec::new(),
            head_at: 0,
        })
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.head.clear();
        self.head_at = 0;
        self.outer.seek_to(self.start)
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let in_head = (self.head.len() - self.head_at) as u64;
        let from_head = n.min(in_head);
        self.head_at += from_head as usize;
        n -= from_head;
        if n == 0 {
            return Ok(());
        }
        let target = self
            .outer
            .pos
            .checked_add(n)
            .filter(|t| *t <= self.end)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the layer")
            })?;
        self.outer.seek_to(target)
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_at < self.head.len() {
            let n = (self.head.len() - self.head_at).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.head_at..self.head_at + n]);
            self.head_at += n;
            return Ok(n);
        }
        let left = self.end.saturating_sub(self.outer.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.outer.read(&mut buf[..n])
    }
}

/// A layer's uncompressed tar stream, with its position.
pub(crate) struct LayerStream<'o> {
    body: Body<'o>,
    pos: u64,
    random_access: bool,
}

enum Body<'o> {
    Plain(Window<'o>),
    Gzip(Box<MultiGzDecoder<Window<'o>>>),
    /// Only while a gzip body is being restarted.
    Empty,
}

impl<'o> LayerStream<'o> {
    fn open(outer: &'o mut Outer, slot: &Slot) -> io::Result<LayerStream<'o>> {
        let random_access = outer.random_access() && slot.compression == Compression::None;
        let window = Window::open(outer, slot.start, slot.len)?;
        let body = match slot.compression {
            Compression::None => Body::Plain(window),
            Compression::Gzip => Body::Gzip(Box::new(MultiGzDecoder::new(window))),
        };
        Ok(LayerStream {
            body,
            pos: 0,
            random_access,
        })
    }

    /// Opens a layer whose compression is not known yet, by its first bytes.
    fn open_sniffing(
        outer: &'o mut Outer,
        start: u64,
        len: u64,
    ) -> io::Result<(LayerStream<'o>, Compression)> {
        let outer_random = outer.random_access();
        let mut window = Window::open(outer, start, len)?;
        let mut magic = [0u8; 6];
        let n = read_up_to(&mut window, &mut magic)?;
        window.head = magic[..n].to_vec();
        let magic = &magic[..n];
        let compression = if magic.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if let Some(name) = unsupported_compression(magic) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{name}-compressed layers are not supported"),
            ));
        } else {
            Compression::None
        };
        let body = match compression {
            Compression::None => Body::Plain(window),
            Compression::Gzip => Body::Gzip(Box::new(MultiGzDecoder::new(window))),
        };
        Ok((
            LayerStream {
                body,
                pos: 0,
                random_access: outer_random && compression == Compression::None,
            },
            compression,
        ))
    }

    fn restart(&mut self) -> io::Result<()> {
        match std::mem::replace(&mut self.body, Body::Empty) {
            Body::Plain(mut window) => {
                window.rewind()?;
                self.body = Body::Plain(window);
            }
            Body::Gzip(decoder) => {
                let mut window = decoder.into_inner();
                window.rewind()?;
                self.body = Body::Gzip(Box::new(MultiGzDecoder::new(window)));
            }
            Body::Empty => return Err(io::Error::other("layer stream lost")),
        }
        self.pos = 0;
        Ok(())
    }
}

fn unsupported_compression(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.body {
            Body::Plain(window) => window.read(buf)?,
            Body::Gzip(decoder) => decoder.read(buf)?,
            Body::Empty => return Err(io::Error::other("layer stream lost")),
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Input for LayerStream<'_> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        match &mut self.body {
            Body::Plain(window) => window.skip(n)?,
            Body::Gzip(decoder) => tarwalk::skip_by_reading(decoder.as_mut(), n)?,
            Body::Empty => return Err(io::Error::other("layer stream lost")),
        }
        self.pos += n;
        Ok(())
    }
}

impl LayerAccess for LayerStream<'_> {
    fn seek_to(&mut self, target: u64) -> io::Result<()> {
        if target < self.pos {
            self.restart()?;
        }
        let ahead = target - self.pos;
        if ahead > 0 {
            self.skip(ahead)?;
        }
        Ok(())
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn read_here(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn random_access(&self) -> bool {
        self.random_access
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_up_to<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
