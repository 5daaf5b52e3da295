//! Builds the same filesystem as a root filesystem directory, a flat tar and a
//! `docker save` archive, for the image and inventory tests. The merged view a set of
//! layers should produce is written out by hand in each test, not computed here, so the
//! layer logic under test is checked against an independent expectation.

// Each test crate uses a different part of this module.
#![allow(dead_code)]
// Test support: a panic is the failure report (STYLE.md), as in the tests themselves.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// One entry of a layer or of a root filesystem.
#[derive(Debug, Clone)]
pub enum Item {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir(String),
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    /// `dir/.wh.name`: deletes `path` from the layers below.
    Whiteout(String),
    /// `dir/.wh..wh..opq`: hides the directory's lower contents.
    Opaque(String),
    /// A tar entry whose name is written as given, unchecked (`../x`, `/x`).
    Raw {
        name: String,
        data: Vec<u8>,
    },
}

pub fn file(path: &str, data: impl AsRef<[u8]>) -> Item {
    Item::File {
        path: path.into(),
        data: data.as_ref().to_vec(),
        mode: 0o644,
    }
}

pub fn exec(path: &str, data: impl AsRef<[u8]>) -> Item {
    Item::File {
        path: path.into(),
        data: data.as_ref().to_vec(),
        mode: 0o755,
    }
}

pub fn dir(path: &str) -> Item {
    Item::Dir(path.into())
}

pub fn symlink(path: &str, target: &str) -> Item {
    Item::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

pub fn hardlink(path: &str, target: &str) -> Item {
    Item::HardLink {
        path: path.into(),
        target: target.into(),
    }
}

pub fn whiteout(path: &str) -> Item {
    Item::Whiteout(path.into())
}

pub fn opaque(dir: &str) -> Item {
    Item::Opaque(dir.into())
}

pub fn raw(name: &str, data: impl AsRef<[u8]>) -> Item {
    Item::Raw {
        name: name.into(),
        data: data.as_ref().to_vec(),
    }
}

/// A committed fixture file (`tests/fixtures/inventory/<name>`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inventory")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes items (no whiteouts or raw entries) as a directory tree under `root`.
pub fn write_rootfs(root: &Path, items: &[Item]) {
    fs::create_dir_all(root).unwrap();
    for item in items {
        match item {
            Item::File { path, data, mode } => {
                let target = root.join(path);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                fs::write(&target, data).unwrap();
                fs::set_permissions(&target, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Item::Dir(path) => fs::create_dir_all(root.join(path)).unwrap(),
            Item::Symlink { path, target } => {
                let link = root.join(path);
                fs::create_dir_all(link.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, &link).unwrap();
            }
            Item::HardLink { path, target } => {
                let link = root.join(path);
                fs::create_dir_all(link.parent().unwrap()).unwrap();
                fs::hard_link(root.join(target), &link).unwrap();
            }
            other => panic!("{other:?} has no place in a root filesystem"),
        }
    }
}

/// A tar stream of the items, as a layer or a flat root filesystem.
pub fn tar(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        match item {
            Item::File { path, data, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(*mode);
                builder.append_data(&mut header, path, &data[..]).unwrap();
            }
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                builder
                    .append_data(&mut header, format!("{path}/"), &[][..])
                    .unwrap();
            }
            Item::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::HardLink { path, target } => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                header.set_mode(0o644);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::Whiteout(path) => {
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
                let wh = if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                };
                empty_file(&mut builder, &wh);
            }
            Item::Opaque(dir) => empty_file(&mut builder, &format!("{dir}/.wh..wh..opq")),
            Item::Raw { name, data } => {
                // Bypass the builder's path checks: write the name bytes into the header.
                let bytes = name.as_bytes();
                header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append(&header, &data[..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn empty_file(builder: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    builder.append_data(&mut header, path, &[][..]).unwrap();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A `docker save` archive in the legacy layout (`<id>/layer.tar`, `<config>.json`,
/// `manifest.json` last, as docker writes it). The last layer is reached through a
/// symbolic link, as docker does for a layer it already wrote.
pub fn docker_save(layers: &[Vec<u8>], config: &str, tags: &[&str]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let name = format!("{id}/layer.tar");
        let last = i + 1 == layers.len() && layers.len() > 1;
        if last {
            // The bytes live under another name; the manifest names the link.
            let real = format!("{:064x}/layer.tar", 0xfeed);
            append(&mut builder, &real, layer);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &name, format!("../{:064x}/layer.tar", 0xfeed))
                .unwrap();
        } else {
            append(&mut builder, &name, layer);
        }
        append(&mut builder, &format!("{id}/VERSION"), b"1.0");
        names.push(name);
    }
    let config_name = format!("{:064x}.json", 0xc0);
    append(&mut builder, &config_name, config.as_bytes());
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": names,
    }]);
    append(
        &mut builder,
        "manifest.json",
        manifest.to_string().as_bytes(),
    );
    append(&mut builder, "repositories", b"{}");
    builder.into_inner().unwrap()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    builder.append_data(&mut header, path, data).unwrap();
}

/// The ways one filesystem is presented to `Image::open`.
pub struct Forms {
    pub dir: tempfile::TempDir,
    pub forms: Vec<(&'static str, PathBuf)>,
}

/// Writes `merged` as a root filesystem directory and as flat tars (plain and gzip), and
/// `layers` as `docker save` archives (plain layers; gzip layers; the whole archive
/// gzip), all under one temp dir. `hostile` entries go into every tar.
pub fn all_forms(merged: &[Item], layers: &[Vec<Item>], hostile: &[Item], config: &str) -> Forms {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let rootfs = base.join("rootfs");
    write_rootfs(&rootfs, merged);
    let mut forms = vec![("rootfs directory", rootfs)];

    let flat: Vec<Item> = merged.iter().chain(hostile).cloned().collect();
    let flat_tar = tar(&flat);
    let write = |name: &str, bytes: &[u8]| {
        let path = base.join(name);
        fs::write(&path, bytes).unwrap();
        path
    };
    forms.push(("flat tar", write("export.tar", &flat_tar)));
    forms.push(("flat tar.gz", write("export.tar.gz", &gzip(&flat_tar))));

    let mut layer_tars: Vec<Vec<u8>> = layers.iter().map(|l| tar(l)).collect();
    if let Some(last) = layer_tars.last_mut() {
        *last = tar(&layers[layers.len() - 1]
            .iter()
            .chain(hostile)
            .cloned()
            .collect::<Vec<_>>());
    }
    let save = docker_save(&layer_tars, config, &["example/app:1.0"]);
    forms.push(("docker save", write("save.tar", &save)));
    let gz_layers: Vec<Vec<u8>> = layer_tars.iter().map(|l| gzip(l)).collect();
    forms.push((
        "docker save, gzip layers",
        write(
            "save-gz-layers.tar",
            &docker_save(&gz_layers, config, &["example/app:1.0"]),
        ),
    ));
    forms.push(("docker save | gzip", write("save.tar.gz", &gzip(&save))));
    Forms { dir, forms }
}

/// A small ELF64 executable (x86-64, little-endian) with `data` as its writable data
/// segment at file offset 0x1000 (vaddr 0x401000) and `rodata` at file offset 0x800
/// (vaddr 0x400800). With `sections`, a section table names the data `.go.buildinfo`.
/// Its "text" holds two decoys: the build info magic unaligned, and aligned but followed
/// by garbage. Synthetic: only the fields build info readers look at are meaningful.
pub fn elf(data: &[u8], rodata: &[u8], sections: bool) -> Vec<u8> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    assert!(rodata.len() <= 0x800);
    let mut out = vec![0u8; 0x1000];
    out[0x201..0x201 + MAGIC.len()].copy_from_slice(MAGIC);
    out[0x400..0x400 + MAGIC.len()].copy_from_slice(MAGIC);
    out[0x400 + 14] = 8;
    out[0x400 + 15] = 2;
    out[0x400 + 32] = 5;
    out[0x400 + 33..0x400 + 38].copy_from_slice(b"nogo!");
    out[0x800..0x800 + rodata.len()].copy_from_slice(rodata);
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shstrtab_offset = out.len() as u64;
    let names = b"\0.go.buildinfo\0.shstrtab\0";
    out.extend_from_slice(names);
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    if sections {
        let section = |name: u32, kind: u32, flags: u64, addr: u64, offset: u64, size: u64| {
            let mut s = Vec::with_capacity(64);
            s.extend(name.to_le_bytes());
            s.extend(kind.to_le_bytes());
            s.extend(flags.to_le_bytes());
            s.extend(addr.to_le_bytes());
            s.extend(offset.to_le_bytes());
            s.extend(size.to_le_bytes());
            s.extend([0u8; 24]);
            s
        };
        out.extend(section(0, 0, 0, 0, 0, 0));
        out.extend(section(1, 1, 3, 0x401000, 0x1000, data.len() as u64));
        out.extend(section(15, 3, 0, 0, shstrtab_offset, names.len() as u64));
    }
    // ELF header.
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little-endian
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    out[40..48].copy_from_slice(&(if sections { shoff } else { 0 }).to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    out[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out[60..62].copy_from_slice(&(if sections { 3u16 } else { 0 }).to_le_bytes());
    out[62..64].copy_from_slice(&(if sections { 2u16 } else { 0 }).to_le_bytes());
    // Program headers: text+rodata (R X), data (R W).
    let program = |flags: u32, offset: u64, vaddr: u64, size: u64| {
        let mut p = Vec::with_capacity(56);
        p.extend(1u32.to_le_bytes()); // PT_LOAD
        p.extend(flags.to_le_bytes());
        p.extend(offset.to_le_bytes());
        p.extend(vaddr.to_le_bytes());
        p.extend(vaddr.to_le_bytes());
        p.extend(size.to_le_bytes());
        p.extend(size.to_le_bytes());
        p.extend(0x1000u64.to_le_bytes());
        p
    };
    let text = program(5, 0, 0x400000, 0x1000);
    let data_segment = program(6, 0x1000, 0x401000, data.len() as u64);
    out[64..120].copy_from_slice(&text);
    out[120..176].copy_from_slice(&data_segment);
    out
}
