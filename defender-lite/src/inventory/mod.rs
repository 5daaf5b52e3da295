//! The packages installed in an image, from every package database this module can read:
//! dpkg (`var/lib/dpkg/status`, distroless `status.d/`), apk (`lib/apk/db/installed`),
//! rpm (`rpmdb.sqlite`), Python (`*.dist-info/METADATA`, `*.egg-info`), npm
//! (`node_modules/**/package.json`), Go binaries (embedded build info) and Rust
//! (`Cargo.lock`). One reader per file, each with its own `parse` and tests.
//!
//! An inventory says what it looked at: every database found is listed with its status,
//! and `coverage()` is `NoDatabase` when nothing was found, so a scanner can never mistake
//! "found nothing to read" for "no vulnerable package". Matching packages against
//! advisories is the scanner's job; reading the image is `image`'s.

mod apk;
mod cargo;
mod dpkg;
mod golang;
mod npm;
mod os;
mod python;
mod rpm;

use std::collections::BTreeMap;

use crate::image::{EntryKind, Image, ImageError};

pub use os::OsRelease;

/// The package database parsers on raw text, for the fuzz targets (`fuzz/`). Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::Package;

    /// `var/lib/dpkg/status` (`require_status`) or one `status.d/` file.
    pub fn dpkg(text: &str, require_status: bool) -> Vec<Package> {
        super::dpkg::parse(text, "Debian:12", "var/lib/dpkg/status", require_status)
    }

    /// `lib/apk/db/installed`.
    pub fn apk(text: &str) -> Vec<Package> {
        super::apk::parse(text, "Alpine:v3.19", "lib/apk/db/installed")
    }

    /// One rpm header blob, as a row of rpmdb.sqlite's `Packages` table holds it.
    pub fn rpm_header(blob: &[u8]) -> Result<Package, String> {
        super::rpm::parse_header(blob)
            .map(|h| h.into_package("Red Hat", "var/lib/rpm/rpmdb.sqlite"))
    }
}

/// Which reader found a package or a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatabaseKind {
    Dpkg,
    Apk,
    Rpm,
    Python,
    Npm,
    GoBinary,
    CargoLock,
}

impl DatabaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Dpkg => "dpkg",
            DatabaseKind::Apk => "apk",
            DatabaseKind::Rpm => "rpm",
            DatabaseKind::Python => "python",
            DatabaseKind::Npm => "npm",
            DatabaseKind::GoBinary => "go-binary",
            DatabaseKind::CargoLock => "cargo-lock",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Package {
    /// The OSV ecosystem: `Debian:12`, `Alpine:v3.19`, `Red Hat`, `PyPI`, `npm`, `Go`,
    /// `crates.io`...
    pub ecosystem: String,
    pub name: String,
    /// As the ecosystem writes it: dpkg `1:2.3-4`, rpm `[epoch:]version-release`, Go
    /// without the leading `v` (as OSV writes Go versions).
    pub version: String,
    /// The source package, for distribution packages (dpkg `Source:`, apk origin, rpm
    /// source rpm); the binary's own name when the database names none. `None` for
    /// language packages.
    pub source_name: Option<String>,
    /// The source package's version (dpkg `Source: openssl (3.0.11-1)`), else the binary's.
    pub source_version: Option<String>,
    /// The file inside the image that declared the package.
    pub declared_in: String,
    pub found_by: DatabaseKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseStatus {
    Read {
        packages: usize,
    },
    /// Found but not read: its packages are missing from the inventory.
    Unreadable {
        reason: String,
    },
}

/// A package database found in the image (for language packages: a `site-packages`
/// directory, a top-level `node_modules`, a Go binary, a `Cargo.lock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub kind: DatabaseKind,
    pub path: String,
    pub status: DatabaseStatus,
}

/// How much of the image the inventory covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// No package database at all: the package list is empty because nothing was found.
    NoDatabase,
    /// Some databases were found but could not be read (see `databases` and `notes`).
    Partial,
    Complete,
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub os: Option<OsRelease>,
    /// Sorted; the same package declared in two places is listed twice.
    pub packages: Vec<Package>,
    pub databases: Vec<Database>,
    /// What was skipped and why, for the report.
    pub notes: Vec<String>,
}

impl Inventory {
    pub fn coverage(&self) -> Coverage {
        if self.databases.is_empty() {
            Coverage::NoDatabase
        } else if self
            .databases
            .iter()
            .any(|db| matches!(db.status, DatabaseStatus::Unreadable { .. }))
        {
            Coverage::Partial
        } else {
            Coverage::Complete
        }
    }

    /// The paths of the databases found, read or not.
    pub fn databases_found(&self) -> Vec<&str> {
        self.databases.iter().map(|db| db.path.as_str()).collect()
    }
}

/// What the inventory looked for, named in the note when nothing was found.
const LOOKED_FOR: &str = "var/lib/dpkg/status, var/lib/dpkg/status.d/, lib/apk/db/installed, \
    var/lib/rpm/rpmdb.sqlite, usr/lib/sysimage/rpm/rpmdb.sqlite, *.dist-info/METADATA, \
    *.egg-info, node_modules/*/package.json, Go executables, Cargo.lock";

/// Reads every package database in the image. Errors are the image's (an archive that
/// cannot be read); a database that cannot be parsed is listed as `Unreadable` instead.
pub fn collect(image: &Image) -> Result<Inventory, ImageError> {
    let os = os::read(image)?;
    let mut collector = Collector {
        image,
        os,
        packages: Vec::new(),
        databases: Vec::new(),
        notes: Notes::default(),
    };
    dpkg::read(&mut collector)?;
    apk::read(&mut collector)?;
    rpm::read(&mut collector)?;

    // One walk of the index finds the language packages' files.
    let mut found = Found::default();
    for entry in image.entries() {
        if entry.kind != EntryKind::File {
            continue;
        }
        let path = entry.path;
        if python::is_metadata(path) {
            found.python.push(path.to_owned());
        } else if npm::is_package_json(path) {
            found.npm.push(path.to_owned());
        } else if entry.file_name() == "Cargo.lock" {
            found.cargo.push(path.to_owned());
        } else if entry.is_executable() && entry.size >= golang::MIN_SIZE {
            found.executables.push(path.to_owned());
        }
    }
    python::read(&mut collector, &found.python)?;
    npm::read(&mut collector, &found.npm)?;
    cargo::read(&mut collector, &found.cargo)?;
    golang::read(&mut collector, &found.executables)?;

    let Collector {
        os,
        mut packages,
        mut databases,
        mut notes,
        ..
    } = collector;
    if databases.is_empty() {
        notes.push(format!(
            "no package database found (looked for {LOOKED_FOR}): the package list is empty \
             because nothing was found, not because nothing is installed"
        ));
    }
    packages.sort();
    packages.dedup();
    databases.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    Ok(Inventory {
        os,
        packages,
        databases,
        notes: notes.finish("notes"),
    })
}

#[derive(Default)]
struct Found {
    python: Vec<String>,
    npm: Vec<String>,
    cargo: Vec<String>,
    executables: Vec<String>,
}

/// The inventory under construction, handed to each reader.
pub(crate) struct Collector<'i> {
    image: &'i Image,
    os: Option<OsRelease>,
    packages: Vec<Package>,
    databases: Vec<Database>,
    notes: Notes,
}

impl Collector<'_> {
    /// Records a database that was read, with the packages it declared.
    fn read_ok(&mut self, kind: DatabaseKind, path: &str, packages: Vec<Package>) {
        self.databases.push(Database {
            kind,
            path: path.to_owned(),
            status: DatabaseStatus::Read {
                packages: packages.len(),
            },
        });
        self.packages.extend(packages);
    }

    /// Records a database that was found but could not be read.
    fn unreadable(&mut self, kind: DatabaseKind, path: &str, reason: String) {
        self.notes.push(format!(
            "{path}: {} database not read: {reason}",
            kind.as_str()
        ));
        self.databases.push(Database {
            kind,
            path: path.to_owned(),
            status: DatabaseStatus::Unreadable { reason },
        });
    }

    fn note(&mut self, message: String) {
        self.notes.push(message);
    }
}

/// Language packages are many small files: each group of them (a `site-packages`, a
/// top-level `node_modules`) is one database; files in it that cannot be read are notes.
struct Groups {
    kind: DatabaseKind,
    groups: BTreeMap<String, Vec<Package>>,
}

impl Groups {
    fn new(kind: DatabaseKind) -> Groups {
        Groups {
            kind,
            groups: BTreeMap::new(),
        }
    }

    fn add(&mut self, group: &str, packages: impl IntoIterator<Item = Package>) {
        self.groups
            .entry(group.to_owned())
            .or_default()
            .extend(packages);
    }

    fn finish(self, collector: &mut Collector<'_>) {
        for (group, packages) in self.groups {
            collector.read_ok(self.kind, &group, packages);
        }
    }
}

/// Notes, capped so a hostile image cannot grow them without bound.
type Notes = crate::image::Capped<200>;

/// The parent directory of a path ("" at the top).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Splits an RFC 822-style header block (dpkg, Python metadata) into fields: `Key: value`
/// lines; continuation lines (leading space or tab) belong to the field before and are
/// dropped here; the block ends at the first empty line.
fn header_fields(block: &str) -> impl Iterator<Item = (&str, &str)> {
    block
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| !line.starts_with([' ', '\t']))
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim(), value.trim()))
        })
}
