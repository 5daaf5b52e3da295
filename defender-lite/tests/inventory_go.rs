//! Go build info in ELF executables, read from each kind of image.
//!
//! What is real and what is not: Go is not installed here, so no binary is compiled. The
//! modern (Go 1.18+) blob is the real `.go.buildinfo` section of esbuild 0.20.2 (from the
//! npm package `@esbuild/linux-x64`, committed as a 544-byte fixture), wrapped in a small
//! synthetic ELF file built by `image_fixtures::elf` with the layout Go's linker uses
//! (section table naming `.go.buildinfo`, or only program headers when stripped). The
//! pre-1.18 pointer format is synthetic throughout, built from Go's `debug/buildinfo`
//! source. The same reader was also run by hand on the whole 9.6 MB esbuild binary, from
//! a directory and from a gzip tar, and found the same two packages.

// Test helpers unwrap too: a panic is the failure report (STYLE.md).
#![allow(clippy::unwrap_used)]

use crate::image_fixtures;

use defender_lite::image::Image;
use defender_lite::inventory::{self, DatabaseKind, DatabaseStatus, Inventory};
use image_fixtures::*;

const INFO_START: [u8; 16] = [
    0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
];
const INFO_END: [u8; 16] = [
    0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
];

/// A Go 1.16-style binary: the header holds pointers to string headers in the data
/// segment, which point at the strings in read-only data.
fn pointer_format_binary() -> Vec<u8> {
    let version = b"go1.16.15";
    let mut modinfo = INFO_START.to_vec();
    modinfo.extend_from_slice(
        b"path\texample.com/app\nmod\texample.com/app\tv1.4.0\th1:aaaa=\n\
          dep\tgithub.com/pkg/errors\tv0.9.1\th1:bbbb=\n",
    );
    modinfo.extend_from_slice(&INFO_END);
    // Read-only data at vaddr 0x400800: the version, then the module info at +16.
    let mut rodata = version.to_vec();
    rodata.resize(16, 0);
    rodata.extend_from_slice(&modinfo);
    // Data at vaddr 0x401000: the 32-byte header, then two string headers.
    let mut data = b"\xff Go buildinf:".to_vec();
    data.extend([8, 0]); // pointer size, little-endian, no inline strings
    data.extend(0x401020u64.to_le_bytes());
    data.extend(0x401030u64.to_le_bytes());
    data.extend(0x400800u64.to_le_bytes());
    data.extend((version.len() as u64).to_le_bytes());
    data.extend(0x400810u64.to_le_bytes());
    data.extend((modinfo.len() as u64).to_le_bytes());
    elf(&data, &rodata, true)
}

fn go_rows(inventory: &Inventory) -> Vec<(String, String, String)> {
    inventory
        .packages
        .iter()
        .filter(|p| p.ecosystem == "Go")
        .map(|p| (p.declared_in.clone(), p.name.clone(), p.version.clone()))
        .collect()
}

fn row(path: &str, name: &str, version: &str) -> (String, String, String) {
    (path.into(), name.into(), version.into())
}

#[test]
fn build_info_from_every_kind_of_image() {
    let esbuild = fixture("go/esbuild-0.20.2.go.buildinfo");
    let items = vec![
        exec("usr/bin/esbuild", elf(&esbuild, &[], true)),
        // Section headers stripped: found through the writable PT_LOAD segment.
        exec("usr/bin/esbuild-stripped", elf(&esbuild, &[], false)),
        exec("usr/bin/legacy", pointer_format_binary()),
        // An ELF file without build info (with decoy magics in its text) and a script.
        exec(
            "usr/bin/not-go",
            elf(b"plain C data, nothing to see", &[], true),
        ),
        exec("usr/bin/script", "#!/bin/sh\necho \"\\xff Go buildinf:\"\n"),
        // Not executable: not looked at.
        file("usr/share/esbuild.copy", elf(&esbuild, &[], true)),
    ];
    let forms = all_forms(&items, std::slice::from_ref(&items), &[], "{}");
    let modern = |path: &str| {
        vec![
            row(
                path,
                "golang.org/x/sys",
                "0.0.0-20220715151400-c0bba94af5f8",
            ),
            row(path, "stdlib", "1.20.12"),
        ]
    };
    for (name, path) in &forms.forms {
        let image = Image::open(path).unwrap();
        let inventory = inventory::collect(&image).unwrap();
        let mut expected = modern("usr/bin/esbuild");
        expected.extend(modern("usr/bin/esbuild-stripped"));
        // Seekable images follow the old format's pointers; a gzip stream cannot go back
        // to them, and says so.
        let seekable = matches!(*name, "rootfs directory" | "flat tar" | "docker save");
        if seekable {
            expected.extend([
                row("usr/bin/legacy", "example.com/app", "1.4.0"),
                row("usr/bin/legacy", "github.com/pkg/errors", "0.9.1"),
                row("usr/bin/legacy", "stdlib", "1.16.15"),
            ]);
        }
        expected.sort();
        let mut got = go_rows(&inventory);
        got.sort();
        assert_eq!(got, expected, "{name}");
        let legacy = inventory
            .databases
            .iter()
            .find(|d| d.path == "usr/bin/legacy")
            .unwrap();
        assert_eq!(legacy.kind, DatabaseKind::GoBinary);
        if seekable {
            assert_eq!(
                legacy.status,
                DatabaseStatus::Read { packages: 3 },
                "{name}"
            );
        } else {
            assert!(
                matches!(&legacy.status, DatabaseStatus::Unreadable { reason } if reason.contains("pre-1.18")),
                "{name}: {:?}",
                legacy.status
            );
        }
        assert!(
            inventory
                .databases
                .iter()
                .all(|d| !d.path.ends_with("not-go") && !d.path.ends_with("script")),
            "{name}"
        );
    }
}
