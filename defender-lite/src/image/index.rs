//! The in-memory index of an image's filesystem: normalised path -> kind, size, mode and
//! where the bytes are. Layers are applied to it in order (whiteouts, opaque directories,
//! hard links), and symbolic links are resolved against it the way `chroot` would: an
//! absolute target starts again at the image root and `..` never climbs above it.
//!
//! Nothing here touches a file; reading bytes is `archive.rs` and `dir.rs`.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Where a regular file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Data {
    /// Directories, symbolic links, devices, implicit parents.
    None,
    /// In the directory image, at the same relative path.
    Disk,
    /// In a tar stream: layer slot and offset of the first data byte in its uncompressed
    /// stream.
    Layer { slot: u32, offset: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    File,
    Dir,
    Symlink(Box<str>),
    /// Devices, fifos, sockets, and tar entries that are not readable here (sparse files).
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub data: Data,
}

static ROOT: Node = Node {
    kind: NodeKind::Dir,
    size: 0,
    mode: 0o755,
    data: Data::None,
};

/// A parent created because an entry below it came first or alone (tars need not list
/// directories).
fn implicit_dir() -> Node {
    Node {
        kind: NodeKind::Dir,
        size: 0,
        mode: 0o755,
        data: Data::None,
    }
}

/// The entry cap was reached.
#[derive(Debug)]
pub(crate) struct IndexFull;

/// A path resolution failed because of too many symbolic links (a loop or a chain).
#[derive(Debug)]
pub(crate) struct SymlinkLoop;

pub(crate) struct Index {
    map: BTreeMap<Box<str>, Node>,
    max_entries: usize,
}

impl Index {
    pub fn new(max_entries: usize) -> Index {
        Index {
            map: BTreeMap::new(),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The node at a normalised path, symbolic links not followed; "" is the root.
    pub fn get(&self, path: &str) -> Option<&Node> {
        if path.is_empty() {
            return Some(&ROOT);
        }
        self.map.get(path)
    }

    /// Adds or replaces the entry at a normalised, non-empty path. Parents that are
    /// missing, or are not directories, become directories. A non-directory that replaces
    /// a directory takes the directory's contents with it.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), IndexFull> {
        if path.is_empty() {
            return Ok(()); // the root always exists; its metadata is not kept
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        let replaces_dir = match self.map.get(path) {
            Some(old) => old.kind == NodeKind::Dir && node.kind != NodeKind::Dir,
            None => {
                if self.map.len() >= self.max_entries {
                    return Err(IndexFull);
                }
                false
            }
        };
        if replaces_dir {
            self.remove_children(path);
        }
        self.map.insert(path.into(), node);
        Ok(())
    }

    fn ensure_dir(&mut self, dir: &str) -> Result<(), IndexFull> {
        if self.map.get(dir).is_some_and(|n| n.kind == NodeKind::Dir) {
            return Ok(());
        }
        if let Some((parent, _)) = dir.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        // Missing, or a file or link in the way: a non-directory has no children to drop.
        if !self.map.contains_key(dir) && self.map.len() >= self.max_entries {
            return Err(IndexFull);
        }
        self.map.insert(dir.into(), implicit_dir());
        Ok(())
    }

    /// Removes a path and everything below it (a whiteout).
    pub fn remove_tree(&mut self, path: &str) {
        if path.is_empty() {
            self.map.clear();
            return;
        }
        self.map.remove(path);
        self.remove_children(path);
    }

    /// Removes everything below a directory, keeping the directory (an opaque marker).
    pub fn remove_children(&mut self, dir: &str) {
        if dir.is_empty() {
            self.map.clear();
            return;
        }
        let keys: Vec<Box<str>> = self
            .children_range(dir)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            self.map.remove(&key);
        }
    }

    /// Every entry below `dir` (all depths), in path order.
    fn children_range<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a Box<str>, &'a Node)> {
        // Children of "a" sort in ["a/", "a0"): '0' is the byte after '/'.
        let lo = format!("{dir}/");
        let hi = format!("{dir}0");
        self.map
            .range::<str, _>((Bound::Included(lo.as_str()), Bound::Excluded(hi.as_str())))
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.map.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Every entry whose path starts with `prefix` (a plain string prefix), in path order.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Node)> + use<'a> {
        let owned = prefix.to_owned();
        self.map
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(owned.as_str()))
            .map(|(k, v)| (k.as_ref(), v))
    }

    /// The direct children of a directory (normalised path, "" for the root).
    pub fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a Node)> {
        let all: Box<dyn Iterator<Item = (&'a str, &'a Node)>> = if dir.is_empty() {
            Box::new(self.iter())
        } else {
            Box::new(self.children_range(dir).map(|(k, v)| (k.as_ref(), v)))
        };
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        all.filter(move |(k, _)| !k[skip..].contains('/'))
    }

    /// Resolves a path inside the image, following symbolic links against the image root
    /// (an absolute target restarts at the root; `..` stops at the root), at most
    /// `max_hops` links. `follow_last`: whether a link in the last component is followed.
    /// Returns the resolved normalised path and its node, or `None` when a component is
    /// missing or a non-directory is used as a directory.
    pub fn resolve(
        &self,
        path: &str,
        follow_last: bool,
        max_hops: u32,
    ) -> Result<Option<(&str, &Node)>, SymlinkLoop> {
        // Components still to walk, last first (so `pop` yields the next one).
        let mut todo: Vec<&str> = components(path).rev().collect();
        let mut current = String::new();
        let mut hops = 0u32;
        while let Some(component) = todo.pop() {
            if component == ".." {
                match current.rfind('/') {
                    Some(i) => current.truncate(i),
                    None => current.clear(),
                }
                continue;
            }
            let candidate = if current.is_empty() {
                component.to_owned()
            } else {
                format!("{current}/{component}")
            };
            let Some(node) = self.map.get(candidate.as_str()) else {
                return Ok(None);
            };
            let last = todo.is_empty();
            match &node.kind {
                NodeKind::Symlink(target) if !last || follow_last => {
                    hops += 1;
                    if hops > max_hops {
                        return Err(SymlinkLoop);
                    }
                    if target.starts_with('/') {
                        current.clear();
                    }
                    todo.extend(components(target).rev());
                }
                NodeKind::Dir => current = candidate,
                _ if last => current = candidate,
                _ => return Ok(None),
            }
        }
        if current.is_empty() {
            return Ok(Some(("", &ROOT)));
        }
        // The index's own copy of the path, which lives as long as the index.
        Ok(self
            .map
            .get_key_value(current.as_str())
            .map(|(path, node)| (path.as_ref(), node)))
    }
}

/// The meaningful components of a path: no empty ones, no ".".
pub(crate) fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Why an archive path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathRejected {
    NotUtf8,
    /// A `..` component: a legitimate layer never needs one, and it could point outside.
    DotDot,
    TooLong,
    /// A NUL byte (tar fields are NUL-terminated; one inside the path is forged).
    Nul,
}

impl PathRejected {
    pub fn reason(self) -> &'static str {
        match self {
            PathRejected::NotUtf8 => "path is not UTF-8",
            PathRejected::DotDot => "path has a '..' component",
            PathRejected::TooLong => "path is too long",
            PathRejected::Nul => "path has a NUL byte",
        }
    }
}

/// Normalises a path from an archive: leading `/` and `./` dropped (absolute paths are
/// taken relative to the image root), empty and `.` components dropped, and anything with
/// a `..` component refused rather than interpreted. "" is the root itself.
pub(crate) fn clean_archive_path(raw: &[u8], max_len: usize) -> Result<String, PathRejected> {
    if raw.contains(&0) {
        return Err(PathRejected::Nul);
    }
    let text = std::str::from_utf8(raw).map_err(|_| PathRejected::NotUtf8)?;
    if text.len() > max_len {
        return Err(PathRejected::TooLong);
    }
    let mut out = String::with_capacity(text.len());
    for component in components(text) {
        if component == ".." {
            return Err(PathRejected::DotDot);
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(component);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Node {
        Node {
            kind: NodeKind::File,
            size: 1,
            mode: 0o644,
            data: Data::Disk,
        }
    }

    fn link(target: &str) -> Node {
        Node {
            kind: NodeKind::Symlink(target.into()),
            size: 0,
            mode: 0o777,
            data: Data::None,
        }
    }

    fn index(entries: &[(&str, Node)]) -> Index {
        let mut index = Index::new(1000);
        for (path, node) in entries {
            index.insert(path, node.clone()).unwrap();
        }
        index
    }

    fn check_resolve(index: &Index, path: &str, expected: Option<&str>) {
        let got = index.resolve(path, true, 40).unwrap().map(|(p, _)| p);
        assert_eq!(got, expected, "resolving {path}");
    }

    #[test]
    fn clean_paths() {
        let check = |raw: &str, expected: Result<&str, PathRejected>| {
            let got = clean_archive_path(raw.as_bytes(), 4096);
            assert_eq!(got.as_deref().map_err(|e| *e), expected, "{raw}");
        };
        check("./etc/passwd", Ok("etc/passwd"));
        check("/etc//passwd", Ok("etc/passwd"));
        check("etc/./x/", Ok("etc/x"));
        check("./", Ok(""));
        check("../etc/passwd", Err(PathRejected::DotDot));
        check("a/../../b", Err(PathRejected::DotDot));
        check("a/b..c", Ok("a/b..c"));
        assert_eq!(
            clean_archive_path(b"a/\xff", 4096),
            Err(PathRejected::NotUtf8)
        );
        assert_eq!(clean_archive_path(b"a\0b", 4096), Err(PathRejected::Nul));
        assert_eq!(
            clean_archive_path(&[b'a'; 5000], 4096),
            Err(PathRejected::TooLong)
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let index = index(&[
            ("usr/lib/os-release", file()),
            ("etc/os-release", link("../usr/lib/os-release")),
            ("etc/abs", link("/usr/lib/os-release")),
            ("etc/escape", link("../../../../../usr/lib/os-release")),
            ("etc/host-passwd", link("/etc/passwd")),
            ("lib", link("usr/lib")),
            ("loop1", link("loop2")),
            ("loop2", link("/loop1")),
            ("etc/dotdot-after-link", link("/lib/../lib/os-release")),
        ]);
        check_resolve(&index, "etc/os-release", Some("usr/lib/os-release"));
        check_resolve(&index, "/etc/abs", Some("usr/lib/os-release"));
        // `..` stops at the image root, as in a chroot.
        check_resolve(&index, "etc/escape", Some("usr/lib/os-release"));
        check_resolve(
            &index,
            "../../usr/lib/os-release",
            Some("usr/lib/os-release"),
        );
        // An absolute target is looked up in the image, never on the host.
        check_resolve(&index, "etc/host-passwd", None);
        check_resolve(&index, "lib/os-release", Some("usr/lib/os-release"));
        // `..` after a link applies to the link's target (usr/lib/.. = usr).
        check_resolve(&index, "etc/dotdot-after-link", Some("usr/lib/os-release"));
        check_resolve(&index, "usr/lib/os-release/x", None);
        check_resolve(&index, "", Some(""));
        assert!(index.resolve("loop1", true, 40).is_err());
        let (path, node) = index.resolve("etc/abs", false, 40).unwrap().unwrap();
        assert_eq!(path, "etc/abs");
        assert!(matches!(node.kind, NodeKind::Symlink(_)));
    }

    #[test]
    fn whiteouts_and_replacements() {
        let mut index = index(&[
            ("a/b/c", file()),
            ("a/b0", file()),
            ("a.b", file()),
            ("d/e", file()),
        ]);
        assert_eq!(index.get("a").unwrap().kind, NodeKind::Dir);
        index.remove_children("a");
        assert!(index.get("a").is_some());
        assert!(index.get("a/b").is_none() && index.get("a/b0").is_none());
        assert!(index.get("a.b").is_some());
        // A file replacing a directory takes its contents with it.
        index.insert("d", file()).unwrap();
        assert!(index.get("d/e").is_none());
        // A directory entry below a file turns the file into a directory.
        index.insert("d/f", file()).unwrap();
        assert_eq!(index.get("d").unwrap().kind, NodeKind::Dir);
        index.remove_tree("d");
        assert!(index.get("d").is_none() && index.get("d/f").is_none());
        let names: Vec<&str> = index.children("").map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "a.b"]);
    }

    #[test]
    fn entry_cap() {
        let mut index = Index::new(2);
        index.insert("a", file()).unwrap();
        index.insert("b", file()).unwrap();
        assert!(index.insert("c", file()).is_err());
        index.insert("a", file()).unwrap(); // replacing does not grow it
    }
}
