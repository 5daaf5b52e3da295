//! The inventory of whole images: the same filesystem as a root filesystem directory, a
//! flat tar (plain, gzip) and a `docker save` archive (plain layers, gzip layers, gzip
//! whole) must give the same inventory, with layers applied and links kept inside.

// Test helpers unwrap too: a panic is the failure report (STYLE.md).
#![allow(clippy::unwrap_used)]

use crate::image_fixtures;

use std::fs;
use std::path::Path;

use defender_lite::image::Image;
use defender_lite::inventory::{self, Coverage, DatabaseKind, DatabaseStatus, Inventory};
use image_fixtures::*;

/// (ecosystem, name, version, source name, source version, declared in)
type Row = (String, String, String, String, String, String);

fn rows(inventory: &Inventory, skip: &[&str]) -> Vec<Row> {
    inventory
        .packages
        .iter()
        .filter(|p| !skip.contains(&p.ecosystem.as_str()))
        .map(|p| {
            (
                p.ecosystem.clone(),
                p.name.clone(),
                p.version.clone(),
                p.source_name.clone().unwrap_or_default(),
                p.source_version.clone().unwrap_or_default(),
                p.declared_in.clone(),
            )
        })
        .collect()
}

fn row(e: &str, n: &str, v: &str, sn: &str, sv: &str, d: &str) -> Row {
    (e.into(), n.into(), v.into(), sn.into(), sv.into(), d.into())
}

fn databases(inventory: &Inventory) -> Vec<(DatabaseKind, String, DatabaseStatus)> {
    inventory
        .databases
        .iter()
        .map(|d| (d.kind, d.path.clone(), d.status.clone()))
        .collect()
}

fn read(packages: usize) -> DatabaseStatus {
    DatabaseStatus::Read { packages }
}

/// Collects the inventory of every form and checks they are all the same; returns it.
fn same_everywhere(forms: &Forms) -> Inventory {
    let mut first: Option<(String, Inventory)> = None;
    for (name, path) in &forms.forms {
        let image = Image::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let inventory = inventory::collect(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
        match &first {
            None => first = Some((name.to_string(), inventory)),
            Some((first_name, expected)) => {
                assert_eq!(inventory.os, expected.os, "{name} vs {first_name}");
                assert_eq!(
                    inventory.packages, expected.packages,
                    "{name} vs {first_name}"
                );
                assert_eq!(
                    databases(&inventory),
                    databases(expected),
                    "{name} vs {first_name}"
                );
                assert_eq!(inventory.notes, expected.notes, "{name} vs {first_name}");
            }
        }
    }
    first.unwrap().1
}

fn go_binary() -> Vec<u8> {
    elf(&fixture("go/esbuild-0.20.2.go.buildinfo"), &[], true)
}

/// A Debian image with a bit of everything, in two layers.
fn debian_mixed(outside: &Path) -> (Vec<Vec<Item>>, Vec<Item>) {
    let status = String::from_utf8(fixture("debian/status")).unwrap();
    let old_status = status.replace("Version: 3.0.19-1~deb12u2", "Version: 3.0.11-1~deb12u1");
    assert_ne!(status, old_status);
    // A host file an escaping link points at: followed, it would add Alpine packages.
    let host_apk = outside.join("installed");
    fs::write(&host_apk, fixture("alpine/installed")).unwrap();
    let climb = format!(
        "{}{}",
        "../".repeat(40),
        host_apk.display().to_string().trim_start_matches('/')
    );
    let site = "usr/local/lib/python3.11/site-packages";
    let base = vec![
        file("usr/lib/os-release", fixture("debian/os-release")),
        symlink("etc/os-release", "../usr/lib/os-release"),
        symlink("lib/apk/db/installed", &climb),
        file(
            "usr/lib/python3/dist-packages/PyYAML-6.0.dist-info/METADATA",
            fixture("python/PyYAML-6.0.METADATA"),
        ),
        file("app/package.json", r#"{"name":"my-app","version":"1.0.0"}"#),
    ];
    let mut layer1 = base.clone();
    layer1.extend([
        file("var/lib/dpkg/status", &old_status),
        file(
            &format!("{site}/removed-1.0.dist-info/METADATA"),
            "Metadata-Version: 2.1\nName: removed\nVersion: 1.0\n",
        ),
        file(
            "app/node_modules/left-pad/package.json",
            r#"{"name":"left-pad","version":"1.3.0"}"#,
        ),
    ]);
    let top = vec![
        file("var/lib/dpkg/status", &status),
        file(
            &format!("{site}/pip-24.2.dist-info/METADATA"),
            fixture("python/pip-24.2.METADATA"),
        ),
        file(
            "usr/lib/python3/dist-packages/PyJWT-2.6.0.egg-info/PKG-INFO",
            fixture("python/PyJWT-2.6.0.PKG-INFO"),
        ),
        file(
            "usr/lib/python2.7/wsgiref-0.1.2-py2.7.egg-info",
            fixture("python/wsgiref-0.1.2.egg-info"),
        ),
        file(
            "app/node_modules/ms/package.json",
            fixture("npm/ms.package.json"),
        ),
        file(
            "app/node_modules/semver/package.json",
            fixture("npm/semver.package.json"),
        ),
        file(
            "app/node_modules/@npmcli/fs/package.json",
            fixture("npm/npmcli-fs.package.json"),
        ),
        file(
            "app/node_modules/glob/dist/esm/package.json",
            fixture("npm/glob-dist-esm.package.json"),
        ),
        file(
            "srv/tool/Cargo.lock",
            fixture("cargo/tempfile-3.27.0.Cargo.lock"),
        ),
        exec("usr/local/bin/esbuild", go_binary()),
        exec(
            "usr/local/bin/entrypoint.sh",
            "#!/bin/sh\nexec esbuild \"$@\"\n",
        ),
    ];
    let mut layer2 = vec![
        whiteout(&format!("{site}/removed-1.0.dist-info")),
        opaque("app/node_modules"),
    ];
    layer2.extend(top.clone());
    let mut merged = base;
    merged.extend(top);
    merged.push(dir(site));
    (vec![layer1, layer2], merged)
}

#[test]
fn debian_image_with_language_packages() {
    let outside = tempfile::tempdir().unwrap();
    let (layers, merged) = debian_mixed(outside.path());
    let forms = all_forms(&merged, &layers, &[], "{}");
    let inventory = same_everywhere(&forms);

    let os = inventory.os.as_ref().unwrap();
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("debian", Some("12"))
    );
    let status = "var/lib/dpkg/status";
    let site = "usr/local/lib/python3.11/site-packages";
    let dist = "usr/lib/python3/dist-packages";
    let nm = "app/node_modules";
    let esbuild = "usr/local/bin/esbuild";
    let expected = vec![
        row(
            "Debian:12",
            "base-files",
            "12.4+deb12u11",
            "base-files",
            "12.4+deb12u11",
            status,
        ),
        row(
            "Debian:12",
            "bash",
            "5.2.15-2+b8",
            "bash",
            "5.2.15-2",
            status,
        ),
        row(
            "Debian:12",
            "libc6",
            "2.36-9+deb12u14",
            "glibc",
            "2.36-9+deb12u14",
            status,
        ),
        row(
            "Debian:12",
            "libssl3",
            "3.0.19-1~deb12u2",
            "openssl",
            "3.0.19-1~deb12u2",
            status,
        ),
        row(
            "Debian:12",
            "tzdata",
            "2025b-0+deb12u2",
            "tzdata",
            "2025b-0+deb12u2",
            status,
        ),
        row(
            "Debian:12",
            "zlib1g",
            "1:1.2.13.dfsg-1",
            "zlib",
            "1:1.2.13.dfsg-1",
            status,
        ),
        row(
            "Go",
            "golang.org/x/sys",
            "0.0.0-20220715151400-c0bba94af5f8",
            "",
            "",
            esbuild,
        ),
        row("Go", "stdlib", "1.20.12", "", "", esbuild),
        row(
            "PyPI",
            "PyJWT",
            "2.6.0",
            "",
            "",
            &format!("{dist}/PyJWT-2.6.0.egg-info/PKG-INFO"),
        ),
        row(
            "PyPI",
            "PyYAML",
            "6.0",
            "",
            "",
            &format!("{dist}/PyYAML-6.0.dist-info/METADATA"),
        ),
        row(
            "PyPI",
            "pip",
            "24.2",
            "",
            "",
            &format!("{site}/pip-24.2.dist-info/METADATA"),
        ),
        row(
            "PyPI",
            "wsgiref",
            "0.1.2",
            "",
            "",
            "usr/lib/python2.7/wsgiref-0.1.2-py2.7.egg-info",
        ),
        row(
            "npm",
            "@npmcli/fs",
            "5.0.0",
            "",
            "",
            &format!("{nm}/@npmcli/fs/package.json"),
        ),
        row(
            "npm",
            "ms",
            "2.1.3",
            "",
            "",
            &format!("{nm}/ms/package.json"),
        ),
        row(
            "npm",
            "semver",
            "7.8.5",
            "",
            "",
            &format!("{nm}/semver/package.json"),
        ),
    ];
    assert_eq!(rows(&inventory, &["crates.io"]), expected);

    let crates: Vec<&str> = inventory
        .packages
        .iter()
        .filter(|p| p.ecosystem == "crates.io")
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(crates.len(), 48);
    assert!(crates.contains(&"rustix") && !crates.contains(&"tempfile"));

    assert_eq!(
        databases(&inventory),
        vec![
            (DatabaseKind::Dpkg, status.into(), read(6)),
            (DatabaseKind::Python, "usr/lib/python2.7".into(), read(1)),
            (DatabaseKind::Python, dist.into(), read(2)),
            (DatabaseKind::Python, site.into(), read(1)),
            (DatabaseKind::Npm, nm.into(), read(3)),
            (DatabaseKind::GoBinary, esbuild.into(), read(2)),
            (
                DatabaseKind::CargoLock,
                "srv/tool/Cargo.lock".into(),
                read(48)
            ),
        ]
    );
    assert_eq!(inventory.coverage(), Coverage::Complete);
    assert!(inventory.notes.is_empty(), "{:?}", inventory.notes);
}

#[test]
fn alpine_image() {
    let items = vec![
        file("etc/os-release", fixture("alpine/os-release")),
        file("lib/apk/db/installed", fixture("alpine/installed")),
        exec("bin/busybox", "\x7fELF not really"),
    ];
    let forms = all_forms(&items, std::slice::from_ref(&items), &[], "{}");
    let inventory = same_everywhere(&forms);
    let db = "lib/apk/db/installed";
    assert_eq!(
        rows(&inventory, &[]),
        vec![
            row(
                "Alpine:v3.19",
                "busybox",
                "1.36.1-r15",
                "busybox",
                "1.36.1-r15",
                db
            ),
            row(
                "Alpine:v3.19",
                "libcrypto3",
                "3.1.4-r5",
                "openssl",
                "3.1.4-r5",
                db
            ),
            row(
                "Alpine:v3.19",
                "musl",
                "1.2.4_git20230717-r4",
                "musl",
                "1.2.4_git20230717-r4",
                db
            ),
            row(
                "Alpine:v3.19",
                "ssl_client",
                "1.36.1-r15",
                "busybox",
                "1.36.1-r15",
                db
            ),
        ]
    );
    assert_eq!(inventory.coverage(), Coverage::Complete);
}

#[test]
fn rhel_image_with_an_sqlite_rpm_database() {
    // Fedora and RHEL 9 keep the database in usr/lib/sysimage/rpm, with var/lib/rpm a link.
    let items = vec![
        file("etc/os-release", fixture("rpm/os-release")),
        file(
            "usr/lib/sysimage/rpm/rpmdb.sqlite",
            fixture("rpm/rpmdb.sqlite"),
        ),
        symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm"),
    ];
    let forms = all_forms(&items, std::slice::from_ref(&items), &[], "{}");
    let inventory = same_everywhere(&forms);
    let db = "usr/lib/sysimage/rpm/rpmdb.sqlite";
    assert_eq!(
        rows(&inventory, &[]),
        vec![
            row("Red Hat", "bash", "5.1.8-9.el9", "bash", "5.1.8-9.el9", db),
            row(
                "Red Hat",
                "openssl",
                "1:3.0.7-24.el9",
                "openssl",
                "1:3.0.7-24.el9",
                db
            ),
            row(
                "Red Hat",
                "openssl-libs",
                "1:3.0.7-24.el9",
                "openssl",
                "1:3.0.7-24.el9",
                db
            ),
        ]
    );
    assert_eq!(
        databases(&inventory),
        vec![(DatabaseKind::Rpm, db.into(), read(3))]
    );
    assert_eq!(inventory.coverage(), Coverage::Complete);
}

#[test]
fn unreadable_rpm_databases_are_reported() {
    let items = vec![
        file("etc/os-release", fixture("rpm/os-release")),
        // RHEL 8 and older: Berkeley DB.
        file("var/lib/rpm/Packages", vec![0x61u8; 8192]),
        // A damaged sqlite database elsewhere.
        file(
            "usr/lib/sysimage/rpm/rpmdb.sqlite",
            "SQLite format 3\0".repeat(20),
        ),
    ];
    let forms = all_forms(&items, std::slice::from_ref(&items), &[], "{}");
    let inventory = same_everywhere(&forms);
    assert!(inventory.packages.is_empty());
    assert_eq!(inventory.coverage(), Coverage::Partial);
    let kinds: Vec<(String, bool)> = inventory
        .databases
        .iter()
        .map(|d| {
            (
                d.path.clone(),
                matches!(d.status, DatabaseStatus::Unreadable { .. }),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("usr/lib/sysimage/rpm/rpmdb.sqlite".to_owned(), true),
            ("var/lib/rpm/Packages".to_owned(), true)
        ]
    );
    assert!(inventory.notes.iter().any(|n| n.contains("Berkeley DB")));
}

#[test]
fn distroless_status_d() {
    let items = vec![
        file("etc/os-release", fixture("debian/os-release")),
        file(
            "var/lib/dpkg/status.d/base-files",
            fixture("distroless/base-files"),
        ),
        file("var/lib/dpkg/status.d/libc6", fixture("distroless/libc6")),
        file(
            "var/lib/dpkg/status.d/libc6.md5sums",
            fixture("distroless/libc6.md5sums"),
        ),
        file("var/lib/dpkg/status.d/tzdata", fixture("distroless/tzdata")),
    ];
    let forms = all_forms(&items, std::slice::from_ref(&items), &[], "{}");
    let inventory = same_everywhere(&forms);
    let dir = "var/lib/dpkg/status.d";
    assert_eq!(
        rows(&inventory, &[]),
        vec![
            row(
                "Debian:12",
                "base-files",
                "12.4+deb12u11",
                "base-files",
                "12.4+deb12u11",
                &format!("{dir}/base-files")
            ),
            row(
                "Debian:12",
                "libc6",
                "2.36-9+deb12u14",
                "glibc",
                "2.36-9+deb12u14",
                &format!("{dir}/libc6")
            ),
            row(
                "Debian:12",
                "tzdata",
                "2025b-0+deb12u2",
                "tzdata",
                "2025b-0+deb12u2",
                &format!("{dir}/tzdata")
            ),
        ]
    );
    assert_eq!(
        databases(&inventory),
        vec![(DatabaseKind::Dpkg, dir.into(), read(3))]
    );
}

#[test]
fn an_image_without_any_database_says_so() {
    let items = vec![
        exec("bin/sh", "#!/bin/false\n"),
        file("etc/hostname", "scratch"),
    ];
    let forms = all_forms(&items, std::slice::from_ref(&items), &[], "{}");
    let inventory = same_everywhere(&forms);
    assert!(inventory.packages.is_empty());
    assert!(inventory.databases_found().is_empty());
    assert_eq!(inventory.coverage(), Coverage::NoDatabase);
    assert!(
        inventory.notes[0].starts_with("no package database found"),
        "{:?}",
        inventory.notes
    );
}
