//! The image tar reader (`defender-lite`'s `Image::open_with` on a file: flat tar or
//! `docker save`, plain or gzip, with gzip layers), then what a scan does with an image:
//! every entry listed, every file read back, the package inventory collected. Seeds: the
//! image tests' own forms of a filesystem built from the inventory fixtures.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use defender_lite::image::{EntryKind, Image, Limits};
use fuzz::image_fixtures::{self as fx, Item};
use libfuzzer_sys::fuzz_target;

fn limits() -> Limits {
    Limits {
        max_entries: 4_096,
        max_layers: 16,
        max_metadata: 1 << 20,
        max_read: 1 << 20,
        max_archive_bytes: 32 << 20,
        ..Limits::default()
    }
}

fn seeds() -> Vec<fuzz::Seed> {
    let inv = "defender-lite/tests/fixtures/inventory";
    let f = |rel: &str| fuzz::fixture(&format!("{inv}/{rel}"));
    let esbuild = f("go/esbuild-0.20.2.go.buildinfo");
    let merged = vec![
        fx::dir("etc"),
        fx::file("etc/os-release", f("debian/os-release")),
        fx::file("var/lib/dpkg/status", f("debian/status")),
        fx::file("var/lib/dpkg/status.d/tzdata", f("distroless/tzdata")),
        fx::file("lib/apk/db/installed", f("alpine/installed")),
        fx::file(
            "usr/lib/python3/dist-packages/PyYAML-6.0.dist-info/METADATA",
            f("python/PyYAML-6.0.METADATA"),
        ),
        fx::file("app/node_modules/ms/package.json", f("npm/ms.package.json")),
        fx::exec("usr/bin/esbuild", fx::elf(&esbuild, &[], true)),
        fx::symlink("usr/bin/sh", "../../bin/dash"),
        fx::hardlink("usr/bin/esbuild2", "usr/bin/esbuild"),
    ];
    let lower = vec![
        fx::file("etc/os-release", f("alpine/os-release")),
        fx::file("lib/apk/db/installed", f("alpine/installed")),
        fx::file("tmp/gone", "x"),
        fx::dir("opt/old"),
    ];
    let upper = vec![
        fx::whiteout("tmp/gone"),
        fx::opaque("opt/old"),
        fx::file("etc/os-release", f("debian/os-release")),
        fx::file("var/lib/dpkg/status", f("debian/status")),
    ];
    let hostile = vec![Item::Raw {
        name: "../escape".into(),
        data: b"x".to_vec(),
    }];
    let config = r#"{"config":{"ExposedPorts":{"80/tcp":{}},"Env":["PATH=/usr/bin"],"Entrypoint":["nginx"],"Cmd":["-g","daemon off;"]}}"#;
    let forms = fx::all_forms(&merged, &[lower, upper], &hostile, config);
    forms
        .forms
        .iter()
        .filter(|(_, path)| path.is_file())
        .map(|(name, path)| (fuzz::seed_name(name), std::fs::read(path).unwrap()))
        .collect()
}

/// The file each input is written to (an image is opened by path).
fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fuzz::scratch_dir().join("image.tar"))
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let path = input_path();
    std::fs::write(path, data).expect("writing the input file");
    let Ok(image) = Image::open_with(path, limits()) else {
        return;
    };
    let _ = image.config();
    let _ = image.repo_tags();
    let files: Vec<String> = image
        .entries()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.path.to_owned())
        .collect();
    let _ = image.read_each(&files, 64 << 10, |_, _| {});
    for entry in image.entries().take(64) {
        let _ = image.metadata(entry.path);
        let _ = image.read_dir(entry.path);
    }
    let _ = image.glob("**/*.json");
    let _ = defender_lite::inventory::collect(&image);
});
