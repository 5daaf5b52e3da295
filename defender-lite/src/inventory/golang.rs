//! Go binaries: the build info the Go linker embeds in every executable (Go's
//! `debug/buildinfo` and `runtime/debug.ParseBuildInfo` are the reference). Only regular
//! files with an execute bit that start with the ELF magic are read past their first
//! bytes.
//!
//! The blob is a 32-byte header, 16-byte aligned: the magic `\xff Go buildinf:`, the
//! pointer size, a flags byte. Since Go 1.18 (flag 2) the Go version and the module info
//! follow as varint-length-prefixed strings; before, the header holds two pointers to Go
//! string headers, resolved here through the ELF program headers. The module info, inside
//! 16-byte sentinels, is lines of `path`, `mod` (main module), `dep` and `=>` (the
//! replacement of the line before), tab-separated.
//!
//! Where the file can be read at random (a directory image, an uncompressed archive) the
//! ELF headers are read with the `object` crate's types and the blob is found like Go
//! finds it: the `.go.buildinfo` section, else the first writable
//! non-executable `PT_LOAD` segment; 64 KiB are searched. In a gzip stream the file is
//! scanned forward for the aligned magic instead (the section table sits at the end of the
//! file); the pre-1.18 pointer format cannot be followed backwards there and is reported.
//!
//! Packages: `stdlib` at the toolchain version, the main module and every dependency
//! (its replacement when one with a version is recorded; a replacement by a local
//! directory has no version and is left out), versions without the leading `v`, as OSV
//! writes Go versions. `go build` records the main module as `(devel)` (or, since Go 1.24,
//! a `v0.0.0-` pseudo-version for an untagged commit); release builds usually stamp the
//! real version with `-ldflags '-X pkg.version=1.2.3'`, which the build info keeps, so the
//! main module's version is taken from there (the same rule as Trivy's, see
//! `ldflags_version`), and left out when there is none.

use std::io::{self, Read, Seek, SeekFrom};

use memchr::memmem;
use object::Endianness;
use object::elf::{FileHeader32, FileHeader64, PF_W, PF_X, PT_LOAD};
use object::endian::Endian as _;
use object::read::elf::{FileHeader, ProgramHeader as _, SectionHeader as _};

use super::{Collector, DatabaseKind, Package};
use crate::image::{FileStream, ImageError};

/// The smallest file worth opening: an ELF header is 52 or 64 bytes.
pub(crate) const MIN_SIZE: u64 = 52;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const ALIGN: u64 = 16;
const HEADER: usize = 32;
const SEARCH_WINDOW: u64 = 64 * 1024;
const MAX_INFO: usize = 16 << 20;
const MAX_TABLE: u64 = 4 << 20;
const FLAG_INLINE: u8 = 2;

pub(crate) fn read(c: &mut Collector<'_>, paths: &[String]) -> Result<(), ImageError> {
    let mut found: Vec<(String, Result<Option<BuildInfo>, String>)> = Vec::new();
    c.image.stream_each(paths, |path, stream| {
        let outcome = match stream {
            Ok(stream) => match inspect(stream) {
                Ok(Outcome::Go(info)) => Ok(Some(info)),
                Ok(Outcome::NotGo) => Ok(None),
                Ok(Outcome::Unsupported(reason)) => Err(reason),
                Err(e) => Err(format!("reading: {e}")),
            },
            Err(e) => Err(e.to_string()),
        };
        if !matches!(outcome, Ok(None)) {
            found.push((path.to_owned(), outcome));
        }
    })?;
    for (path, outcome) in found {
        match outcome {
            Ok(Some(info)) => {
                let packages = info.packages(&path);
                c.read_ok(DatabaseKind::GoBinary, &path, packages);
            }
            Ok(None) => {}
            Err(reason) => c.unreadable(DatabaseKind::GoBinary, &path, reason),
        }
    }
    Ok(())
}

/// What the build info of a Go binary says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BuildInfo {
    pub go_version: String,
    pub path: Option<String>,
    pub main: Option<Module>,
    pub deps: Vec<Module>,
    /// The `-ldflags` build setting, unquoted.
    pub ldflags: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Module {
    pub path: String,
    pub version: String,
    /// `=>` line: replacement path and version (empty for a local directory).
    pub replace: Option<(String, String)>,
}

impl BuildInfo {
    pub fn packages(&self, declared_in: &str) -> Vec<Package> {
        let package = |name: &str, version: String| Package {
            ecosystem: "Go".into(),
            name: name.to_owned(),
            version,
            source_name: None,
            source_version: None,
            declared_in: declared_in.to_owned(),
            found_by: DatabaseKind::GoBinary,
        };
        let mut packages = Vec::new();
        if let Some(version) = crate::version::go_toolchain_semver(&self.go_version) {
            packages.push(package("stdlib", version));
        }
        if let Some(main) = &self.main {
            let stamped = || {
                let ldflags = self.ldflags.as_deref()?;
                ldflags_version(ldflags, &main.path)
            };
            match effective(main) {
                Some((path, version)) if version.starts_with("v0.0.0-") => {
                    packages.push(package(path, stamped().unwrap_or_else(|| trim_v(version))));
                }
                Some((path, version)) => packages.push(package(path, trim_v(version))),
                None if main.replace.is_none() && !main.path.is_empty() => {
                    if let Some(version) = stamped() {
                        packages.push(package(&main.path, version));
                    }
                }
                None => {}
            }
        }
        for module in &self.deps {
            if let Some((path, version)) = effective(module) {
                packages.push(package(path, trim_v(version)));
            }
        }
        packages
    }
}

/// A module's path and version as built: its replacement's when it has one. `None` when
/// there is no version (`(devel)`, a local directory).
fn effective(module: &Module) -> Option<(&str, &str)> {
    let (path, version) = match &module.replace {
        Some((path, version)) => (path.as_str(), version.as_str()),
        None => (module.path.as_str(), module.version.as_str()),
    };
    (!path.is_empty() && !version.is_empty() && version != "(devel)").then_some((path, version))
}

fn trim_v(version: &str) -> String {
    version.strip_prefix('v').unwrap_or(version).to_owned()
}

/// The version `-ldflags` stamps on the main module: among the `-X importpath.name=value`
/// definitions whose name ends in `.version` or `.ver` (any case) and whose value is a
/// semantic version (with or without `v`), those of a package under `<main module>/cmd/`
/// first, then those of a package named `main`, `common`, `version` or `cmd`, then any
/// other. Two different versions in the first group that has one give no version: the
/// binary does not say which is its own.
fn ldflags_version(ldflags: &str, main_path: &str) -> Option<String> {
    const USUAL_PACKAGES: [&str; 4] = ["main", "common", "version", "cmd"];
    let cmd_prefix = format!("{main_path}/cmd/");
    let words = split_flags(ldflags);
    let mut groups: [Vec<&str>; 3] = Default::default();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let definition = match word.as_str() {
            "-X" | "--X" => match words.next() {
                Some(next) => next.as_str(),
                None => break,
            },
            other => match other.strip_prefix("-X=").or(other.strip_prefix("--X=")) {
                Some(definition) => definition,
                None => continue,
            },
        };
        // `-X='pkg.version=1.0.0'`: the quotes are not at the start of a word, so they
        // are still there.
        let definition = definition.trim_matches(['\'', '"']);
        let Some((name, value)) = definition.split_once('=') else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if !(lower.ends_with(".version") || lower.ends_with(".ver"))
            || !crate::version::is_go_semver(value)
        {
            continue;
        }
        let package = lower.rsplit('/').next().unwrap_or("");
        let package = package.split('.').next().unwrap_or("");
        let group = if name.starts_with(&cmd_prefix) {
            0
        } else if USUAL_PACKAGES.contains(&package) {
            1
        } else {
            2
        };
        if !groups[group].contains(&value) {
            groups[group].push(value);
        }
    }
    match groups.iter().find(|group| !group.is_empty())?.as_slice() {
        [version] => Some(trim_v(version)),
        _ => None,
    }
}

/// Splits `-ldflags` into words as `go build` does (cmd/internal/quoted): fields separated
/// by white space, a field that starts with a `'` or `"` runs to the matching quote, with
/// no escapes. An unterminated quote ends the list.
fn split_flags(flags: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = flags;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
        let Some(first) = rest.chars().next() else {
            return words;
        };
        if first == '\'' || first == '"' {
            let Some(end) = rest[1..].find(first) else {
                return words;
            };
            words.push(rest[1..1 + end].to_owned());
            rest = &rest[end + 2..];
        } else {
            let end = rest.find([' ', '\t', '\n', '\r']).unwrap_or(rest.len());
            words.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
}

/// A Go string literal as `strconv.Quote` writes it (build settings with spaces or quotes
/// are written so): the common escapes; `None` for anything else.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = match chars.next()? {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            c @ ('\\' | '"' | '\'') => c,
            c @ ('x' | 'u' | 'U') => {
                let digits = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(digits).collect();
                if hex.len() != digits {
                    return None;
                }
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
            }
            _ => return None,
        };
        out.push(escaped);
    }
    Some(out)
}

/// Parses the module info text (between the sentinels), as `ParseBuildInfo` does; the Go
/// version is the caller's to fill in.
pub(crate) fn parse_modinfo(text: &str) -> BuildInfo {
    let mut path = None;
    let mut main: Option<Module> = None;
    let mut deps: Vec<Module> = Vec::new();
    let mut ldflags = None;
    // Which module an `=>` line replaces: the main one, the last dep, or none.
    enum Last {
        None,
        Main,
        Dep,
    }
    let mut last = Last::None;
    for line in text.lines() {
        let mut fields = line.split('\t');
        let kind = fields.next().unwrap_or("");
        let rest: Vec<&str> = fields.collect();
        match kind {
            "path" => path = rest.first().map(|p| (*p).to_owned()),
            "mod" | "dep" if rest.len() == 2 || rest.len() == 3 => {
                let module = Module {
                    path: rest[0].to_owned(),
                    version: rest[1].to_owned(),
                    replace: None,
                };
                if kind == "mod" {
                    main = Some(module);
                    last = Last::Main;
                } else {
                    deps.push(module);
                    last = Last::Dep;
                }
            }
            "=>" if rest.len() == 3 => {
                let replacement = Some((rest[0].to_owned(), rest[1].to_owned()));
                match last {
                    Last::Main => {
                        if let Some(main) = main.as_mut() {
                            main.replace = replacement;
                        }
                    }
                    Last::Dep => {
                        if let Some(dep) = deps.last_mut() {
                            dep.replace = replacement;
                        }
                    }
                    Last::None => {}
                }
                last = Last::None;
            }
            "build" => {
                if let Some(value) = rest.first().and_then(|s| s.strip_prefix("-ldflags=")) {
                    ldflags = if value.starts_with('"') {
                        unquote(value)
                    } else {
                        Some(value.to_owned())
                    };
                }
            }
            _ => {}
        }
    }
    BuildInfo {
        go_version: String::new(),
        path,
        main,
        deps,
        ldflags,
    }
}

pub(crate) enum Outcome {
    NotGo,
    Go(BuildInfo),
    /// A Go binary whose build info cannot be read here.
    Unsupported(String),
}

/// Reads the build info of one file, if it is a Go ELF executable.
pub(crate) fn inspect(stream: &mut FileStream<'_>) -> io::Result<Outcome> {
    let mut head = [0u8; 64];
    let n = read_up_to(stream, &mut head)?;
    let head = &head[..n];
    if !is_elf(head) {
        return Ok(Outcome::NotGo);
    }
    if stream.is_random_access() {
        match layout(stream, head)? {
            Some(layout) => random_access(stream, &layout),
            None => Ok(Outcome::NotGo),
        }
    } else {
        forward(stream, head)
    }
}

/// An ELF header object accepts (magic, class, byte order, version), 32- or 64-bit.
fn is_elf(head: &[u8]) -> bool {
    FileHeader64::<Endianness>::parse(head).is_ok()
        || FileHeader32::<Endianness>::parse(head).is_ok()
}

/// What is read of an ELF file's layout.
struct Layout {
    /// The `PT_LOAD` segments.
    segments: Vec<Segment>,
    /// The file offset of the `.go.buildinfo` section, if the section table names one.
    buildinfo: Option<u64>,
}

#[derive(Clone, Copy)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
    flags: u32,
}

/// The layout of an ELF file, read through the `object` crate's header types. The
/// tables are read here, each within `MAX_TABLE` bytes, rather than through object's
/// `ReadCache`, whose cache a crafted section table can make grow far past the file's
/// size (a name lookup per section, each cached apart).
fn layout(stream: &mut FileStream<'_>, head: &[u8]) -> io::Result<Option<Layout>> {
    if let Ok(header) = FileHeader64::<Endianness>::parse(head) {
        return read_layout(stream, header);
    }
    if let Ok(header) = FileHeader32::<Endianness>::parse(head) {
        return read_layout(stream, header);
    }
    Ok(None)
}

fn read_layout<H: FileHeader<Endian = Endianness>>(
    stream: &mut FileStream<'_>,
    header: &H,
) -> io::Result<Option<Layout>> {
    let Ok(endian) = header.endian() else {
        return Ok(None);
    };
    let phdrs = read_table(
        stream,
        header.e_phoff(endian).into(),
        header.e_phentsize(endian),
        header.e_phnum(endian),
    )?;
    let segments = entries::<H::ProgramHeader>(&phdrs, header.e_phentsize(endian))
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .map(|ph| Segment {
            offset: ph.p_offset(endian).into(),
            vaddr: ph.p_vaddr(endian).into(),
            filesz: ph.p_filesz(endian).into(),
            flags: ph.p_flags(endian).0,
        })
        .collect();
    let buildinfo = buildinfo_section::<H>(stream, header, endian)?;
    Ok(Some(Layout {
        segments,
        buildinfo,
    }))
}

fn buildinfo_section<H: FileHeader<Endian = Endianness>>(
    stream: &mut FileStream<'_>,
    header: &H,
    endian: Endianness,
) -> io::Result<Option<u64>> {
    let entsize = header.e_shentsize(endian);
    let table = read_table(
        stream,
        header.e_shoff(endian).into(),
        entsize,
        header.e_shnum(endian),
    )?;
    let sections: Vec<&H::SectionHeader> = entries::<H::SectionHeader>(&table, entsize).collect();
    let Some(names) = sections.get(usize::from(header.e_shstrndx(endian).0)) else {
        return Ok(None);
    };
    let names = read_at(
        stream,
        names.sh_offset(endian).into(),
        names.sh_size(endian).into().min(MAX_TABLE),
    )?;
    Ok(sections.iter().find_map(|section| {
        let name = names.get(section.sh_name(endian) as usize..)?;
        name.starts_with(b".go.buildinfo\0")
            .then(|| section.sh_offset(endian).into())
    }))
}

/// A header table's bytes (empty when the header names none), within `MAX_TABLE`.
fn read_table(
    stream: &mut FileStream<'_>,
    offset: u64,
    entsize: u16,
    count: u16,
) -> io::Result<Vec<u8>> {
    if offset == 0 || entsize == 0 || count == 0 {
        return Ok(Vec::new());
    }
    read_at(
        stream,
        offset,
        (u64::from(entsize) * u64::from(count)).min(MAX_TABLE),
    )
}

/// The entries of a table whose entries are `entsize` bytes (at least a `T`).
fn entries<T: object::Pod>(table: &[u8], entsize: u16) -> impl Iterator<Item = &T> {
    table
        .chunks_exact(usize::from(entsize).max(1))
        .filter_map(|raw| {
            object::pod::from_bytes::<T>(raw)
                .ok()
                .map(|(entry, _)| entry)
        })
}

/// Go's algorithm: the section (or segment), 64 KiB of it, the first aligned magic.
fn random_access(stream: &mut FileStream<'_>, layout: &Layout) -> io::Result<Outcome> {
    let segments = &layout.segments;
    let start = match layout.buildinfo {
        Some(offset) => offset,
        None => match segments
            .iter()
            .find(|s| s.flags & (PF_X.0 | PF_W.0) == PF_W.0)
        {
            Some(s) => s.offset,
            None => return Ok(Outcome::NotGo),
        },
    };
    let window = read_at(stream, start, SEARCH_WINDOW)?;
    let Some(at) = find_aligned(&window, 0) else {
        return Ok(Outcome::NotGo);
    };
    let blob_start = start + at as u64;
    let mut blob = window[at..].to_vec();
    loop {
        match decode(&blob) {
            Decoded::Strings(vers, modinfo) => return Ok(build_info(&vers, &modinfo)),
            Decoded::NeedMore(n) if n <= MAX_INFO && n > blob.len() => {
                blob = read_at(stream, blob_start, n as u64)?;
                if blob.len() < n {
                    return Ok(Outcome::NotGo);
                }
            }
            Decoded::Pointers {
                ptr_size,
                endian,
                version,
                modinfo,
            } => {
                let mut read_string = |addr: u64| -> io::Result<Option<Vec<u8>>> {
                    let Some(offset) = file_offset(segments, addr) else {
                        return Ok(None);
                    };
                    let header = read_at(stream, offset, 2 * ptr_size as u64)?;
                    let (Some(data), Some(len)) = (
                        word(endian, &header, 0, ptr_size),
                        word(endian, &header, ptr_size, ptr_size),
                    ) else {
                        return Ok(None);
                    };
                    if len > MAX_INFO as u64 {
                        return Ok(None);
                    }
                    let Some(data_offset) = file_offset(segments, data) else {
                        return Ok(None);
                    };
                    Ok(Some(read_at(stream, data_offset, len)?))
                };
                let vers = String::from_utf8(read_string(version)?.unwrap_or_default())
                    .unwrap_or_default();
                let modinfo = read_string(modinfo)?.unwrap_or_default();
                if !valid_version(&vers) {
                    return Ok(Outcome::NotGo);
                }
                return Ok(build_info(&vers, &modinfo));
            }
            _ => return Ok(Outcome::NotGo),
        }
    }
}

/// A pointer-sized word (4 or 8 bytes) at `at`.
fn word(endian: Endianness, bytes: &[u8], at: usize, size: usize) -> Option<u64> {
    let raw = bytes.get(at..at.checked_add(size)?)?;
    match size {
        4 => Some(endian.read_u32(raw.try_into().ok()?).into()),
        8 => Some(endian.read_u64(raw.try_into().ok()?)),
        _ => None,
    }
}

/// Scans a stream forward for an aligned magic whose blob decodes.
fn forward(stream: &mut FileStream<'_>, already: &[u8]) -> io::Result<Outcome> {
    let finder = memmem::Finder::new(MAGIC);
    let mut buf: Vec<u8> = already.to_vec();
    let mut base: u64 = 0; // file offset of buf[0]
    let mut from = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(rel) = finder.find(&buf[from..]) {
            let at = from + rel;
            from = at + 1;
            if !(base + at as u64).is_multiple_of(ALIGN) {
                continue;
            }
            loop {
                match decode(&buf[at..]) {
                    Decoded::Strings(vers, modinfo) => return Ok(build_info(&vers, &modinfo)),
                    Decoded::NeedMore(n) if n <= MAX_INFO => {
                        let want = at + n;
                        while buf.len() < want {
                            let read = stream.read(&mut chunk)?;
                            if read == 0 {
                                return Ok(Outcome::NotGo);
                            }
                            buf.extend_from_slice(&chunk[..read]);
                        }
                    }
                    Decoded::Pointers { .. } => {
                        return Ok(Outcome::Unsupported(
                            "Go build info in the pre-1.18 pointer format, in a compressed \
                             stream: not read"
                                .into(),
                        ));
                    }
                    _ => break,
                }
            }
        }
        // Keep the last bytes, which may hold the start of a magic cut by the chunk.
        let keep_from = buf.len().saturating_sub(MAGIC.len() - 1);
        buf.drain(..keep_from);
        base += keep_from as u64;
        from = 0;
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(Outcome::NotGo);
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

enum Decoded {
    /// The Go version and the raw module info (with its sentinels).
    Strings(String, Vec<u8>),
    Pointers {
        ptr_size: usize,
        endian: Endianness,
        version: u64,
        modinfo: u64,
    },
    /// The blob is longer than the bytes given: this many are needed.
    NeedMore(usize),
    Invalid,
}

/// Decodes a blob that starts with the magic.
fn decode(blob: &[u8]) -> Decoded {
    if blob.len() < HEADER {
        return Decoded::NeedMore(HEADER);
    }
    let ptr_size = blob[14] as usize;
    let flags = blob[15];
    if ptr_size != 4 && ptr_size != 8 {
        return Decoded::Invalid;
    }
    if flags & FLAG_INLINE == 0 {
        // Flag 1: big-endian pointers.
        let endian = if flags == 0 {
            Endianness::Little
        } else {
            Endianness::Big
        };
        return match (
            word(endian, blob, 16, ptr_size),
            word(endian, blob, 16 + ptr_size, ptr_size),
        ) {
            (Some(version), Some(modinfo)) => Decoded::Pointers {
                ptr_size,
                endian,
                version,
                modinfo,
            },
            _ => Decoded::Invalid,
        };
    }
    let mut at = HEADER;
    let mut strings = Vec::with_capacity(2);
    for _ in 0..2 {
        let Some((len, used)) = uvarint(&blob[at..]) else {
            return if blob.len() - at < 10 {
                Decoded::NeedMore(at + 10)
            } else {
                Decoded::Invalid
            };
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .filter(|len| *len <= MAX_INFO)
            .map(|len| at + used + len)
        else {
            return Decoded::Invalid;
        };
        if blob.len() < end {
            return Decoded::NeedMore(end);
        }
        // Raw bytes: the module info's sentinels are not UTF-8.
        strings.push(blob[at + used..end].to_vec());
        at = end;
    }
    let modinfo = strings.pop().unwrap_or_default();
    let Ok(vers) = String::from_utf8(strings.pop().unwrap_or_default()) else {
        return Decoded::Invalid;
    };
    if !valid_version(&vers) {
        return Decoded::Invalid;
    }
    Decoded::Strings(vers, modinfo)
}

fn valid_version(vers: &str) -> bool {
    !vers.is_empty() && vers.len() <= 128 && (vers.starts_with("go") || vers.starts_with("devel"))
}

fn build_info(vers: &str, modinfo: &[u8]) -> Outcome {
    // Strip the sentinels around the module info, as debug/buildinfo does.
    let inner = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16])
    } else {
        "".into()
    };
    Outcome::Go(BuildInfo {
        go_version: vers.to_owned(),
        ..parse_modinfo(&inner)
    })
}

/// The first occurrence of the magic at a 16-aligned index at or after `from`.
fn find_aligned(data: &[u8], from: usize) -> Option<usize> {
    let finder = memmem::Finder::new(MAGIC);
    let mut from = from;
    while let Some(rel) = finder.find(data.get(from..)?) {
        let at = from + rel;
        if (at as u64).is_multiple_of(ALIGN) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn file_offset(segments: &[Segment], addr: u64) -> Option<u64> {
    segments.iter().find_map(|s| {
        (addr >= s.vaddr && addr - s.vaddr < s.filesz).then(|| s.offset + (addr - s.vaddr))
    })
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Up to `len` bytes at `offset` (fewer at the end of the file).
fn read_at(stream: &mut FileStream<'_>, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    stream.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    stream.take(len).read_to_end(&mut out)?;
    Ok(out)
}

fn read_up_to(stream: &mut FileStream<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo() {
        let text = "path\texample.com/cmd/app\n\
                    mod\texample.com\tv1.2.3\th1:abc=\n\
                    dep\tgolang.org/x/net\tv0.17.0\th1:def=\n\
                    dep\tgithub.com/old/lib\tv1.0.0\th1:x=\n\
                    =>\tgithub.com/new/lib\tv1.1.0\th1:y=\n\
                    dep\texample.com/local\tv0.0.0\n\
                    =>\t../local\t\t\n\
                    build\t-compiler=gc\n";
        let info = BuildInfo {
            go_version: "go1.21.5".into(),
            ..parse_modinfo(text)
        };
        assert_eq!(info.path.as_deref(), Some("example.com/cmd/app"));
        let got: Vec<(String, String)> = info
            .packages("app")
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        let expected = [
            ("stdlib", "1.21.5"),
            ("example.com", "1.2.3"),
            ("golang.org/x/net", "0.17.0"),
            ("github.com/new/lib", "1.1.0"),
        ];
        assert_eq!(
            got,
            expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
        );
    }

    #[test]
    fn devel_main_module_takes_the_version_stamped_by_ldflags() {
        // As in trivy 0.59.1's release binary.
        let text = "path\tgithub.com/aquasecurity/trivy/cmd/trivy\n\
                    mod\tgithub.com/aquasecurity/trivy\t(devel)\t\n\
                    dep\tgolang.org/x/net\tv0.34.0\th1:x=\n\
                    build\t-buildmode=exe\n\
                    build\t-ldflags=\"-s -w -extldflags '-static' -X github.com/aquasecurity/trivy/pkg/version/app.ver=0.59.1\"\n\
                    build\tvcs=git\n";
        let packages = |text: &str| -> Vec<(String, String)> {
            BuildInfo {
                go_version: "go1.23.5".into(),
                ..parse_modinfo(text)
            }
            .packages("opt/trivy/trivy")
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect()
        };
        let expected = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            packages(text),
            expected(&[
                ("stdlib", "1.23.5"),
                ("github.com/aquasecurity/trivy", "0.59.1"),
                ("golang.org/x/net", "0.34.0"),
            ])
        );
        // No version in -ldflags: the main module is left out, as before.
        assert_eq!(
            packages("mod\texample.com/app\t(devel)\t\nbuild\t-ldflags=-s\n"),
            expected(&[("stdlib", "1.23.5")])
        );
        // Go 1.24 stamps an untagged commit as a pseudo-version: -ldflags knows better.
        let pseudo = "mod\texample.com/app\tv0.0.0-20250101000000-abcdef123456\th1:x=\n";
        assert_eq!(
            packages(&format!(
                "{pseudo}build\t-ldflags=\"-X main.version=1.4.0\"\n"
            )),
            expected(&[("stdlib", "1.23.5"), ("example.com/app", "1.4.0")])
        );
        assert_eq!(
            packages(pseudo),
            expected(&[
                ("stdlib", "1.23.5"),
                ("example.com/app", "0.0.0-20250101000000-abcdef123456")
            ])
        );
        // A tagged build keeps its own version whatever -ldflags says.
        assert_eq!(
            packages(
                "mod\texample.com/app\tv1.2.3\th1:x=\nbuild\t-ldflags=\"-X main.version=9.9.9\"\n"
            ),
            expected(&[("stdlib", "1.23.5"), ("example.com/app", "1.2.3")])
        );
    }

    #[test]
    fn ldflags_versions() {
        let check = |ldflags: &str, expected: Option<&str>| {
            assert_eq!(
                ldflags_version(ldflags, "example.com/app").as_deref(),
                expected,
                "{ldflags}"
            );
        };
        check("-s -w -X main.version=1.2.3", Some("1.2.3"));
        check("-X=main.Version=v2.0.0-rc.1", Some("2.0.0-rc.1"));
        check("-X='main.version=1.0.0'", Some("1.0.0"));
        check("--X \"example.com/app/version.Ver=3.0\"", Some("3.0"));
        // main, common, version, cmd packages before others; <module>/cmd/ before both.
        check(
            "-X example.com/app/internal/build.Version=1.0.0 -X main.version=2.0.0",
            Some("2.0.0"),
        );
        check(
            "-X example.com/app/cmd/app/cli.ver=3.1.0 -X main.version=2.0.0",
            Some("3.1.0"),
        );
        check("-X example.com/lib/build.version=1.0.0", Some("1.0.0"));
        // Two versions where one is expected: none. The same one twice is one.
        check("-X main.version=1.0.0 -X common.version=1.1.0", None);
        check(
            "-X main.version=1.0.0 -X common.version=1.0.0",
            Some("1.0.0"),
        );
        // Not a version, or not a version variable.
        check("-X main.version=dev", None);
        check("-X main.version=01.2.3", None);
        check("-X main.version=1.2-rc.1", None);
        check("-X main.version=1.2.3-rc.01", None);
        check("-X main.commit=1.2.3", None);
        check("-X main.myversion=1.2.3", None);
        check("-X", None);
        check("-X 'main.version=1.0.0", None);
        check("", None);
    }

    #[test]
    fn quoted_build_settings() {
        assert_eq!(
            unquote(r#""-s -X \"main.version=1.0\" \t\x41\u00e9""#).as_deref(),
            Some("-s -X \"main.version=1.0\" \tA\u{e9}")
        );
        assert_eq!(unquote(r#""\q""#), None);
        assert_eq!(unquote(r#""\x4""#), None);
        assert_eq!(unquote("no quotes"), None);
        assert_eq!(
            split_flags(" -s  '-X a.version=1' \"b c\"d -X='e' \"open"),
            ["-s", "-X a.version=1", "b c", "d", "-X='e'"]
        );
    }

    #[test]
    fn blobs() {
        let mut blob = MAGIC.to_vec();
        blob.extend([8, FLAG_INLINE]);
        blob.resize(HEADER, 0);
        blob.push(9);
        blob.extend(b"go1.20.12");
        assert!(matches!(decode(&blob), Decoded::NeedMore(_)));
        blob.push(0);
        match decode(&blob) {
            Decoded::Strings(vers, modinfo) => {
                assert_eq!(vers, "go1.20.12");
                assert!(modinfo.is_empty());
            }
            _ => panic!("expected strings"),
        }
        let mut bad = blob.clone();
        bad[14] = 3;
        assert!(matches!(decode(&bad), Decoded::Invalid));
        let mut not_go = blob.clone();
        not_go[HEADER + 1] = b'x';
        assert!(matches!(decode(&not_go), Decoded::Invalid));
        // Every truncation is handled without a panic.
        for cut in 0..blob.len() {
            let _ = decode(&blob[..cut]);
        }
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80; 11]), None);
        assert_eq!(find_aligned(&[b"x".as_slice(), MAGIC].concat(), 0), None);
    }
}
