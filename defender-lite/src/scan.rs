//! `defender-lite scan PATH`: the packages installed in an image, matched against the
//! feed's OSV records, reported as a table, JSON or SARIF.
//!
//! The image is read by [`crate::image`] (a root filesystem directory, a `docker export`
//! tar or a `docker save` archive), the packages by [`crate::inventory`], the records
//! by [`crate::feeds`] (only those naming an installed package are parsed) and matched
//! by [`crate::osv`]. A scan never reports a silent zero: when no package database is
//! found, the report says so (`coverage: "no_database"`), and `--fail-on` fails.
//!
//! # JSON (`--format json`), schema `defender-lite.scan/1`
//!
//! Fields are only ever added within a schema version; consumers should ignore fields
//! they do not know.
//!
//! ```json
//! {
//!   "schema": "defender-lite.scan/1",
//!   "target": "rootfs.tar",
//!   "image": { "kind": "directory | tar | docker-save", "repo_tags": ["app:1"] },
//!   "os": { "id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)" },
//!   "feeds": "bundle sequence 3 from origin, created 2026-12-01T00:00:00Z",
//!   "coverage": "complete | partial | no_database",
//!   "databases": [ { "kind": "dpkg", "path": "var/lib/dpkg/status", "status": "read", "packages": 88, "reason": null } ],
//!   "packages": [ { "ecosystem": "Debian:12", "name": "libssl3", "version": "3.0.11-1~deb12u2",
//!                   "source_name": "openssl", "source_version": null,
//!                   "declared_in": "var/lib/dpkg/status", "found_by": "dpkg" } ],
//!   "findings": [ { "id": "DSA-5532-1", "aliases": ["CVE-2023-5363"], "summary": "...",
//!                   "severity": "high", "cvss_score": 7.5,
//!                   "ecosystem": "Debian:12", "package": "libssl3", "version": "3.0.11-1~deb12u2",
//!                   "fixed": "3.0.11-1~deb12u3", "matched_by": "source", "advisory_package": "openssl",
//!                   "declared_in": "var/lib/dpkg/status", "found_by": "dpkg" } ],
//!   "summary": { "critical": 0, "high": 1, "medium": 0, "low": 0, "unknown": 0, "total": 1 },
//!   "notes": [ "..." ]
//! }
//! ```
//!
//! `severity` is one of `critical`, `high`, `medium`, `low`, `unknown`; `cvss_score`,
//! `fixed`, `summary` and `os` may be `null`; `matched_by` is `package` (the record names
//! the installed package) or `source` (it names its source package, as Debian's do).
//! Findings are sorted by severity (highest first), then package, then id.
//!
//! # Memory
//!
//! Held for the whole scan: the inventory and the OSV records of the installed packages
//! (parsed once, for matching); both grow with the image, not with its findings. The
//! findings themselves are bounded: matching encodes each as a record of about 100
//! bytes (references into those two, plus the few strings of the match) and sorts them
//! within an 8 MiB budget ([`ExternalSort`]); past it, sorted runs go to a private
//! directory under `TMPDIR` and are merged into one unnamed file, which every output
//! pass reads back. What else grows with findings is per advisory, not per finding
//! (SARIF's rules, one row each). The column widths, the counts and `--fail-on` are
//! taken while matching; a report is written as a stream ([`Report::write_table`],
//! [`Report::write_json`], [`Report::write_sarif`] take any `io::Write`), one finding
//! at a time.
//!
//! Measured on the 2-core machine (release build), an image of 400 `Cargo.lock` files
//! of 50 crates with 10 records each (200,000 findings): 1.98 GB peak for SARIF when
//! the whole output was rendered first, 42 MB when rows of references were sorted in
//! memory (about 110 bytes per finding), and now the same whatever the number of
//! findings (`tests/scan.rs` checks that four times the findings take no more memory).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::{self, Write};
use std::path::Path;

use serde::ser::{Error as _, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::feeds::external_sort::{ExternalSort, Replay, escape};
use crate::feeds::{Feeds, FeedsError};
use crate::image::{Image, ImageError, ImageKind};
use crate::inventory::{self, Coverage, Database, DatabaseStatus, Inventory, OsRelease};
use crate::osv::{Finding, NameMatch, Package, Severity, SourcePackage, VulnIndex, Vulnerability};

pub const SCHEMA: &str = "defender-lite.scan/1";

/// Findings held in memory before they are sorted through a temporary file: about
/// 80,000 of them.
const ROW_BUDGET: usize = 8 << 20;

const HEADER: [&str; 7] = [
    "PACKAGE",
    "INSTALLED",
    "FIXED",
    "SEVERITY",
    "ID",
    "ALIASES",
    "DECLARED IN",
];

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Feeds(#[from] FeedsError),
}

/// An image's packages with the feed's records of them: everything a [`Report`] refers
/// to. [`Scan::report`] matches them.
#[derive(Debug)]
pub struct Scan {
    target: String,
    image: ImageInfo,
    inventory: Inventory,
    index: VulnIndex,
    feeds: String,
    /// The image reader's warnings, the report's first notes.
    warnings: Vec<String>,
}

/// The counts per severity.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub unknown: usize,
    pub total: usize,
}

/// The findings of a [`Scan`], sorted, to be written as a table, JSON or SARIF.
pub struct Report<'a> {
    scan: &'a Scan,
    /// The findings, encoded by [`Row::encode`] and sorted (on disk past the budget).
    rows: Replay,
    /// The table's column widths.
    widths: [usize; 7],
    /// SARIF's rules: each advisory's first finding, by id.
    rules: Vec<Row<'a>>,
    worst: Option<Severity>,
    summary: Summary,
    /// The inventory's notes, then versions that could not be read.
    notes: Vec<String>,
}

/// Reads the image at `path` and the records of its packages from `feeds`.
pub fn scan(path: &Path, feeds: &Feeds) -> Result<Scan, ScanError> {
    let image = Image::open(path)?;
    let inventory = inventory::collect(&image)?;
    let mut scan = Scan::new(inventory, feeds)?;
    scan.target = path.display().to_string();
    scan.image = ImageInfo {
        kind: kind_name(image.kind()),
        repo_tags: image.repo_tags().to_vec(),
    };
    scan.warnings = image.warnings().to_vec();
    Ok(scan)
}

impl Scan {
    /// An inventory with the records of its packages (and their source packages).
    pub fn new(inventory: Inventory, feeds: &Feeds) -> Result<Scan, ScanError> {
        let keys = inventory.packages.iter().flat_map(|p| {
            std::iter::once((p.ecosystem.as_str(), p.name.as_str()))
                .chain(p.source_name.as_deref().map(|s| (p.ecosystem.as_str(), s)))
        });
        let (index, _) = feeds.vulnerabilities(keys)?;
        Ok(Scan {
            target: String::new(),
            image: ImageInfo {
                kind: "directory",
                repo_tags: Vec::new(),
            },
            inventory,
            index,
            feeds: feeds.description.clone(),
            warnings: Vec::new(),
        })
    }

    /// Matches every package against the records. Fails only if the findings outgrow
    /// memory and the temporary directory cannot take them.
    pub fn report(&self) -> io::Result<Report<'_>> {
        self.report_within(ROW_BUDGET)
    }

    /// [`report`](Self::report), holding at most `budget` bytes of findings in memory.
    fn report_within(&self, budget: usize) -> io::Result<Report<'_>> {
        let mut notes = self.inventory.notes.clone();
        let mut rows = ExternalSort::in_temp_dir("findings", budget);
        let mut widths = HEADER.map(str::len);
        let mut rules: BTreeMap<&str, (Row<'_>, u32)> = BTreeMap::new();
        let mut summary = Summary::default();
        let mut worst = None;
        let mut record = Vec::new();
        for (n, p) in self.inventory.packages.iter().enumerate() {
            let n = u32::try_from(n)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "over 2^32 packages"))?;
            let query = Package {
                ecosystem: &p.ecosystem,
                name: &p.name,
                version: &p.version,
                source: p.source_name.as_deref().map(|name| SourcePackage {
                    name,
                    version: p.source_version.as_deref(),
                }),
            };
            let hits = match self.index.lookup_package(&query) {
                Ok(hits) => hits,
                Err(unreadable) => {
                    notes.push(format!(
                        "{} {} ({}, {}): {unreadable}",
                        p.name, p.version, p.ecosystem, p.declared_in
                    ));
                    unreadable.findings
                }
            };
            for hit in &hits {
                let row = Row::new(p, hit);
                *match row.severity {
                    Severity::Critical => &mut summary.critical,
                    Severity::High => &mut summary.high,
                    Severity::Medium => &mut summary.medium,
                    Severity::Low => &mut summary.low,
                    Severity::Unknown => &mut summary.unknown,
                } += 1;
                summary.total += 1;
                worst = worst.max(Some(row.severity));
                for (w, cell) in widths.iter_mut().zip(row.cells()) {
                    *w = (*w).max(cell.chars().count());
                }
                // A rule is its advisory's first finding in the report's order.
                match rules.entry(row.vulnerability.id.as_str()) {
                    Entry::Vacant(e) => {
                        e.insert((row, n));
                    }
                    Entry::Occupied(mut e) => {
                        let (first, m) = e.get();
                        if row.order_key(n) < first.order_key(*m) {
                            e.insert((row, n));
                        }
                    }
                }
                row.encode(n, &self.index, &mut record);
                rows.push(&record)?;
            }
        }
        Ok(Report {
            scan: self,
            rows: rows.finish_replayable()?,
            widths,
            rules: rules.into_values().map(|(row, _)| row).collect(),
            worst,
            summary,
            notes,
        })
    }
}

impl Report<'_> {
    pub fn summary(&self) -> Summary {
        self.summary
    }

    pub fn coverage(&self) -> Coverage {
        self.scan.inventory.coverage()
    }

    /// `--fail-on`: a finding at or above `threshold`, or nothing to judge by.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.coverage() == Coverage::NoDatabase || self.worst.is_some_and(|w| w >= threshold)
    }

    /// Whether the findings outgrew memory and are read back from a temporary file.
    pub fn spilled(&self) -> bool {
        self.rows.spilled()
    }

    /// Calls `f` with each finding, in the report's order.
    fn each_row(&self, mut f: impl FnMut(&Row<'_>) -> io::Result<()>) -> io::Result<()> {
        let mut reader = self.rows.reader()?;
        let mut record = Vec::new();
        while reader.next_into(&mut record)? {
            let row = Row::decode(self.scan, &record).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the findings' temporary file was changed while the report was written",
                )
            })?;
            f(&row)?;
        }
        Ok(())
    }

    /// Every note: the image reader's, the inventory's, then unreadable versions.
    pub fn notes(&self) -> impl Iterator<Item = &str> {
        self.scan
            .warnings
            .iter()
            .chain(&self.notes)
            .map(String::as_str)
    }

    /// The table an operator reads.
    pub fn write_table(&self, mut out: impl Write) -> io::Result<()> {
        let scan = self.scan;
        let os = scan
            .inventory
            .os
            .as_ref()
            .map_or("unknown OS", |o| o.pretty_name.as_deref().unwrap_or(&o.id));
        writeln!(out, "{} ({}, {})", scan.target, scan.image.kind, os)?;
        writeln!(out, "feeds: {}", scan.feeds)?;
        match self.coverage() {
            Coverage::NoDatabase => writeln!(
                out,
                "NO PACKAGE DATABASE FOUND: nothing was scanned; this is not a clean result."
            )?,
            coverage => {
                let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
                for p in &scan.inventory.packages {
                    *by_kind.entry(p.found_by.as_str()).or_default() += 1;
                }
                let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
                writeln!(
                    out,
                    "packages: {} ({}) from {} database(s){}",
                    scan.inventory.packages.len(),
                    kinds.join(", "),
                    scan.inventory.databases.len(),
                    if coverage == Coverage::Partial {
                        "; SOME COULD NOT BE READ (see notes)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        if !self.rows.is_empty() {
            // The column widths were taken while matching.
            let mut line = String::new();
            write_line(&mut out, &mut line, HEADER, &self.widths)?;
            self.each_row(|row| {
                let cells = row.cells();
                write_line(
                    &mut out,
                    &mut line,
                    cells.each_ref().map(|c| &**c),
                    &self.widths,
                )
            })?;
        }
        let s = &self.summary;
        writeln!(
            out,
            "findings: {} (critical {}, high {}, medium {}, low {}, unknown {})",
            s.total, s.critical, s.high, s.medium, s.low, s.unknown
        )?;
        for note in self.notes() {
            writeln!(out, "note: {note}")?;
        }
        Ok(())
    }

    /// JSON, schema `defender-lite.scan/1` (the module's documentation), pretty-printed.
    pub fn write_json(&self, mut out: impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut out, self)?;
        writeln!(out)
    }

    /// SARIF 2.1.0: one rule per advisory, one result per affected package.
    pub fn write_sarif(&self, mut out: impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut out, &Sarif(self))?;
        writeln!(out)
    }
}

/// One finding: references into the scan's inventory and records, nothing copied.
#[derive(Debug, Clone, Copy)]
struct Row<'a> {
    vulnerability: &'a Vulnerability,
    package: &'a inventory::Package,
    /// The package name as the advisory writes it.
    advisory_package: &'a str,
    fixed: Option<&'a str>,
    cvss_score: Option<f64>,
    severity: Severity,
    matched: NameMatch,
}

impl<'a> Row<'a> {
    fn new(package: &'a inventory::Package, hit: &Finding<'a>) -> Self {
        Row {
            vulnerability: hit.vulnerability,
            package,
            advisory_package: hit.package,
            fixed: hit.fixed,
            cvss_score: hit.cvss_score,
            severity: hit.severity,
            matched: hit.matched,
        }
    }

    /// The table's cells; only an alias list of two or more is made here.
    fn cells(&self) -> [Cow<'a, str>; 7] {
        let aliases = &self.vulnerability.aliases;
        [
            Cow::Borrowed(self.package.name.as_str()),
            Cow::Borrowed(self.package.version.as_str()),
            Cow::Borrowed(self.fixed.unwrap_or("-")),
            Cow::Borrowed(match self.severity {
                Severity::Critical => "CRITICAL",
                Severity::High => "HIGH",
                Severity::Medium => "MEDIUM",
                Severity::Low => "LOW",
                Severity::Unknown => "UNKNOWN",
            }),
            Cow::Borrowed(self.vulnerability.id.as_str()),
            match aliases.as_slice() {
                [] => Cow::Borrowed("-"),
                [one] => Cow::Borrowed(one.as_str()),
                _ => Cow::Owned(aliases.join(",")),
            },
            Cow::Borrowed(self.package.declared_in.as_str()),
        ]
    }

    /// The report's order: severity (highest first), package, id, file, then the
    /// package's place in the inventory. [`encode`](Self::encode) keeps it bytewise.
    fn order_key(&self, package: u32) -> (std::cmp::Reverse<Severity>, &str, &str, &str, u32) {
        (
            std::cmp::Reverse(self.severity),
            &self.package.name,
            &self.vulnerability.id,
            &self.package.declared_in,
            package,
        )
    }

    /// The row as a sortable record: the order key (severity as one byte, the three
    /// strings escaped, the package's place big-endian), then what else the row holds,
    /// then that part's length (`u32`, little-endian, as every number after the key).
    fn encode(&self, package: u32, index: &VulnIndex, out: &mut Vec<u8>) {
        out.clear();
        out.push(match self.severity {
            Severity::Critical => 0,
            Severity::High => 1,
            Severity::Medium => 2,
            Severity::Low => 3,
            Severity::Unknown => 4,
        });
        escape(out, self.package.name.as_bytes());
        escape(out, self.vulnerability.id.as_bytes());
        escape(out, self.package.declared_in.as_bytes());
        out.extend_from_slice(&package.to_be_bytes());
        let rest = out.len();
        // The finding came from this index: its record is there.
        let vulnerability = index.position(&self.vulnerability.id).unwrap_or(usize::MAX);
        out.extend_from_slice(&(vulnerability as u64).to_le_bytes());
        out.push(match self.matched {
            NameMatch::Package => 0,
            NameMatch::Source => 1,
        });
        match self.cvss_score {
            Some(score) => {
                out.push(1);
                out.extend_from_slice(&score.to_le_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.advisory_package.len() as u64).to_le_bytes());
        out.extend_from_slice(self.advisory_package.as_bytes());
        if let Some(fixed) = self.fixed {
            out.extend_from_slice(fixed.as_bytes());
        }
        out.push(u8::from(self.fixed.is_some()));
        out.extend_from_slice(&((out.len() - rest) as u32).to_le_bytes());
    }

    /// A row back from [`encode`](Self::encode)'s record; `None` if it is not one.
    fn decode<'r>(scan: &'r Scan, record: &'r [u8]) -> Option<Row<'r>> {
        let (record, len) = record.split_last_chunk::<4>()?;
        let (key, rest) = record.split_at_checked(
            record
                .len()
                .checked_sub(usize::try_from(u32::from_le_bytes(*len)).ok()?)?,
        )?;
        let severity = match key.first()? {
            0 => Severity::Critical,
            1 => Severity::High,
            2 => Severity::Medium,
            3 => Severity::Low,
            4 => Severity::Unknown,
            _ => return None,
        };
        let (_, package) = key.split_last_chunk::<4>()?;
        let package = scan
            .inventory
            .packages
            .get(usize::try_from(u32::from_be_bytes(*package)).ok()?)?;
        let (vulnerability, rest) = rest.split_first_chunk::<8>()?;
        let vulnerability = scan
            .index
            .at(usize::try_from(u64::from_le_bytes(*vulnerability)).ok()?)?;
        let (matched, rest) = rest.split_first()?;
        let matched = match matched {
            0 => NameMatch::Package,
            1 => NameMatch::Source,
            _ => return None,
        };
        let (cvss_score, rest) = match rest.split_first()? {
            (0, rest) => (None, rest),
            (1, rest) => {
                let (score, rest) = rest.split_first_chunk::<8>()?;
                (Some(f64::from_le_bytes(*score)), rest)
            }
            _ => return None,
        };
        let (advisory_len, rest) = rest.split_first_chunk::<8>()?;
        let (advisory_package, rest) =
            rest.split_at_checked(usize::try_from(u64::from_le_bytes(*advisory_len)).ok()?)?;
        let (has_fixed, fixed) = rest.split_last()?;
        let fixed = match has_fixed {
            0 if fixed.is_empty() => None,
            1 => Some(std::str::from_utf8(fixed).ok()?),
            _ => return None,
        };
        Some(Row {
            vulnerability,
            package,
            advisory_package: std::str::from_utf8(advisory_package).ok()?,
            fixed,
            cvss_score,
            severity,
            matched,
        })
    }

    fn matched_by(&self) -> &'static str {
        match self.matched {
            NameMatch::Package => "package",
            NameMatch::Source => "source",
        }
    }
}

/// One table line: every cell but the last padded to its column, trailing blanks cut.
fn write_line(
    out: &mut impl Write,
    line: &mut String,
    cells: [&str; 7],
    widths: &[usize; 7],
) -> io::Result<()> {
    line.clear();
    for (i, cell) in cells.iter().enumerate() {
        line.push_str(cell);
        if i + 1 < cells.len() {
            let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.write_all(line.trim_end().as_bytes())?;
    out.write_all(b"\n")
}

fn kind_name(kind: ImageKind) -> &'static str {
    match kind {
        ImageKind::Directory => "directory",
        ImageKind::Tar { .. } => "tar",
        ImageKind::DockerSave { .. } => "docker-save",
    }
}

fn coverage_name(coverage: Coverage) -> &'static str {
    match coverage {
        Coverage::NoDatabase => "no_database",
        Coverage::Partial => "partial",
        Coverage::Complete => "complete",
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A sequence serialized item by item as `F` makes them, never collected.
struct Streamed<F>(F);

impl<F, I> Serialize for Streamed<F>
where
    F: Fn() -> I,
    I: IntoIterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// The findings of a report as a sequence, read from its rows as they are written.
struct Rows<'r, 'a>(&'r Report<'a>, Style);

#[derive(Clone, Copy)]
enum Style {
    Json,
    Sarif,
}

impl Serialize for Rows<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(usize::try_from(self.0.rows.len()).ok())?;
        let mut failed = None;
        let read = self.0.each_row(|row| {
            match self.1 {
                Style::Json => seq.serialize_element(&FindingInfo::from(row)),
                Style::Sarif => seq.serialize_element(&SarifResult::from(row)),
            }
            .map_err(|e| {
                failed = Some(e);
                io::Error::other("serializing a finding")
            })
        });
        if let Err(e) = read {
            return Err(failed.unwrap_or_else(|| S::Error::custom(e)));
        }
        seq.end()
    }
}

/// The JSON report, in the field order of the schema above.
impl Serialize for Report<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let scan = self.scan;
        let mut report = s.serialize_struct("Report", 11)?;
        report.serialize_field("schema", SCHEMA)?;
        report.serialize_field("target", &scan.target)?;
        report.serialize_field("image", &scan.image)?;
        report.serialize_field("os", &scan.inventory.os.as_ref().map(OsInfo::from))?;
        report.serialize_field("feeds", &scan.feeds)?;
        report.serialize_field("coverage", coverage_name(self.coverage()))?;
        report.serialize_field(
            "databases",
            &Streamed(|| scan.inventory.databases.iter().map(DatabaseInfo::from)),
        )?;
        report.serialize_field(
            "packages",
            &Streamed(|| scan.inventory.packages.iter().map(PackageInfo::from)),
        )?;
        report.serialize_field("findings", &Rows(self, Style::Json))?;
        report.serialize_field("summary", &self.summary)?;
        report.serialize_field("notes", &Streamed(|| self.notes()))?;
        report.end()
    }
}

#[derive(Debug, Serialize)]
struct ImageInfo {
    kind: &'static str,
    repo_tags: Vec<String>,
}

#[derive(Serialize)]
struct OsInfo<'a> {
    id: &'a str,
    version_id: Option<&'a str>,
    pretty_name: Option<&'a str>,
}

impl<'a> From<&'a OsRelease> for OsInfo<'a> {
    fn from(os: &'a OsRelease) -> Self {
        OsInfo {
            id: &os.id,
            version_id: os.version_id.as_deref(),
            pretty_name: os.pretty_name.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct DatabaseInfo<'a> {
    kind: &'static str,
    path: &'a str,
    status: &'static str,
    packages: usize,
    reason: Option<&'a str>,
}

impl<'a> From<&'a Database> for DatabaseInfo<'a> {
    fn from(db: &'a Database) -> Self {
        let (status, packages, reason) = match &db.status {
            DatabaseStatus::Read { packages } => ("read", *packages, None),
            DatabaseStatus::Unreadable { reason } => ("unreadable", 0, Some(reason.as_str())),
        };
        DatabaseInfo {
            kind: db.kind.as_str(),
            path: &db.path,
            status,
            packages,
            reason,
        }
    }
}

#[derive(Serialize)]
struct PackageInfo<'a> {
    ecosystem: &'a str,
    name: &'a str,
    version: &'a str,
    source_name: Option<&'a str>,
    source_version: Option<&'a str>,
    declared_in: &'a str,
    found_by: &'static str,
}

impl<'a> From<&'a inventory::Package> for PackageInfo<'a> {
    fn from(p: &'a inventory::Package) -> Self {
        PackageInfo {
            ecosystem: &p.ecosystem,
            name: &p.name,
            version: &p.version,
            source_name: p.source_name.as_deref(),
            source_version: p.source_version.as_deref(),
            declared_in: &p.declared_in,
            found_by: p.found_by.as_str(),
        }
    }
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    id: &'a str,
    aliases: &'a [String],
    summary: Option<&'a str>,
    severity: Severity,
    cvss_score: Option<f64>,
    ecosystem: &'a str,
    package: &'a str,
    version: &'a str,
    fixed: Option<&'a str>,
    matched_by: &'static str,
    advisory_package: &'a str,
    declared_in: &'a str,
    found_by: &'static str,
}

impl<'a> From<&Row<'a>> for FindingInfo<'a> {
    fn from(row: &Row<'a>) -> Self {
        FindingInfo {
            id: &row.vulnerability.id,
            aliases: &row.vulnerability.aliases,
            summary: row.vulnerability.summary.as_deref(),
            severity: row.severity,
            cvss_score: row.cvss_score,
            ecosystem: &row.package.ecosystem,
            package: &row.package.name,
            version: &row.package.version,
            fixed: row.fixed,
            matched_by: row.matched_by(),
            advisory_package: row.advisory_package,
            declared_in: &row.package.declared_in,
            found_by: row.package.found_by.as_str(),
        }
    }
}

/// The SARIF document. Object keys are written in sorted order, as before the report
/// was streamed.
struct Sarif<'r, 'a>(&'r Report<'a>);

impl Serialize for Sarif<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let report = self.0;
        let no_database = (report.coverage() == Coverage::NoDatabase).then_some(Notification {
            level: "error",
            message: Text {
                text: "no package database found: nothing was scanned",
            },
        });
        let run = SarifRun {
            invocations: [Invocation {
                execution_successful: true,
                tool_execution_notifications: Streamed(|| {
                    no_database
                        .iter()
                        .copied()
                        .chain(report.notes().map(|text| Notification {
                            level: "warning",
                            message: Text { text },
                        }))
                }),
            }],
            results: Rows(report, Style::Sarif),
            tool: Tool {
                driver: Driver {
                    name: "defender-lite",
                    // One rule per advisory, from its first finding (the most severe).
                    rules: Streamed(|| report.rules.iter().map(Rule::from)),
                    version: env!("CARGO_PKG_VERSION"),
                },
            },
        };
        let mut sarif = s.serialize_struct("Sarif", 3)?;
        sarif.serialize_field("$schema", "https://json.schemastore.org/sarif-2.1.0.json")?;
        sarif.serialize_field("runs", &[run])?;
        sarif.serialize_field("version", "2.1.0")?;
        sarif.end()
    }
}

#[derive(Serialize)]
struct SarifRun<N, R, U> {
    invocations: [Invocation<N>; 1],
    results: R,
    tool: Tool<U>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Invocation<N> {
    execution_successful: bool,
    tool_execution_notifications: N,
}

#[derive(Clone, Copy, Serialize)]
struct Notification<'a> {
    level: &'static str,
    message: Text<&'a str>,
}

#[derive(Clone, Copy, Serialize)]
struct Text<T> {
    text: T,
}

#[derive(Serialize)]
struct Tool<U> {
    driver: Driver<U>,
}

#[derive(Serialize)]
struct Driver<U> {
    name: &'static str,
    rules: U,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule<'a> {
    id: &'a str,
    name: &'a str,
    properties: RuleProperties<'a>,
    short_description: Text<&'a str>,
}

#[derive(Serialize)]
struct RuleProperties<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    aliases: &'a [String],
    #[serde(rename = "security-severity", skip_serializing_if = "Option::is_none")]
    security_severity: Option<String>,
    tags: [&'static str; 3],
}

impl<'a> From<&Row<'a>> for Rule<'a> {
    fn from(row: &Row<'a>) -> Self {
        let v = row.vulnerability;
        Rule {
            id: &v.id,
            name: &v.id,
            properties: RuleProperties {
                aliases: &v.aliases,
                security_severity: row.cvss_score.map(|score| format!("{score:.1}")),
                tags: ["vulnerability", "security", row.severity.as_str()],
            },
            short_description: Text {
                text: v.summary.as_deref().unwrap_or(&v.id),
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult<'a> {
    level: &'static str,
    locations: [Location<'a>; 1],
    message: Text<String>,
    properties: ResultProperties<'a>,
    rule_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location<'a> {
    physical_location: PhysicalLocation<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation<'a> {
    artifact_location: Uri<'a>,
}

#[derive(Serialize)]
struct Uri<'a> {
    uri: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultProperties<'a> {
    fixed_version: Option<&'a str>,
    installed_version: &'a str,
    package: &'a str,
    severity: &'static str,
}

impl<'a> From<&Row<'a>> for SarifResult<'a> {
    fn from(row: &Row<'a>) -> Self {
        let p = row.package;
        let fixed = row.fixed.map_or_else(
            || "no fixed version".to_owned(),
            |v| format!("fixed in {v}"),
        );
        SarifResult {
            level: match row.severity {
                Severity::Critical | Severity::High => "error",
                Severity::Medium => "warning",
                Severity::Low | Severity::Unknown => "note",
            },
            locations: [Location {
                physical_location: PhysicalLocation {
                    artifact_location: Uri {
                        uri: &p.declared_in,
                    },
                },
            }],
            message: Text {
                text: format!(
                    "{} {} ({}) is affected by {} ({}); {fixed}",
                    p.name, p.version, p.ecosystem, row.vulnerability.id, row.severity
                ),
            },
            properties: ResultProperties {
                fixed_version: row.fixed,
                installed_version: &p.version,
                package: &p.name,
                severity: row.severity.as_str(),
            },
            rule_id: &row.vulnerability.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(report: &Report<'_>) -> [Vec<u8>; 3] {
        let mut table = Vec::new();
        report.write_table(&mut table).unwrap();
        let mut json = Vec::new();
        report.write_json(&mut json).unwrap();
        let mut sarif = Vec::new();
        report.write_sarif(&mut sarif).unwrap();
        [table, json, sarif]
    }

    #[test]
    fn findings_past_the_budget_go_through_a_file_and_come_out_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        // 12 crates, each twice in every lock file (two versions, so rows tie on
        // package, id and file), 8 records each, 10 lock files: 1,920 findings.
        let mut jsonl = String::new();
        for c in 0..12 {
            for r in 0..8 {
                let severity = match r % 4 {
                    0 => {
                        serde_json::json!([{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" }])
                    }
                    1 => {
                        serde_json::json!([{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H" }])
                    }
                    _ => serde_json::json!([]),
                };
                let fixed = if r % 3 == 0 {
                    serde_json::json!([{ "introduced": "0" }])
                } else {
                    serde_json::json!([{ "introduced": "0" }, { "fixed": format!("9.{r}.0") }])
                };
                let record = serde_json::json!({
                    "id": format!("RUSTSEC-2099-{c:02}{r:02}"),
                    "modified": "2026-01-01T00:00:00Z",
                    "aliases": (0..r % 3).map(|a| format!("CVE-2099-{c:02}{r:02}{a}")).collect::<Vec<_>>(),
                    "summary": format!("advisory {r} of crate-{c}"),
                    "severity": severity,
                    "affected": [{
                        "package": { "ecosystem": "crates.io", "name": format!("crate-{c}") },
                        "ranges": [{ "type": "SEMVER", "events": fixed }],
                    }],
                });
                jsonl += &format!("{record}\n");
            }
        }
        let feeds_dir = tmp.path().join("feeds");
        std::fs::create_dir_all(feeds_dir.join("osv")).unwrap();
        std::fs::write(feeds_dir.join("osv/records.jsonl"), jsonl).unwrap();
        let mut lock = String::from("version = 3\n");
        for c in (0..12).rev() {
            for version in ["0.2.0", "0.1.0"] {
                lock += &format!(
                    "\n[[package]]\nname = \"crate-{c}\"\nversion = \"{version}\"\n\
                     source = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
                );
            }
        }
        let rootfs = tmp.path().join("rootfs");
        for l in 0..10 {
            let app = rootfs.join(format!("srv/app{l}"));
            std::fs::create_dir_all(&app).unwrap();
            std::fs::write(app.join("Cargo.lock"), &lock).unwrap();
        }
        let feeds = Feeds::open_dir(&feeds_dir).unwrap();
        let scan = scan(&rootfs, &feeds).unwrap();

        let held = scan.report().unwrap();
        assert!(!held.spilled());
        assert_eq!(held.summary().total, 1_920);
        // A 64 KiB budget (the least) is outgrown several times over.
        let spilled = scan.report_within(0).unwrap();
        assert!(spilled.spilled());
        assert_eq!(spilled.summary(), held.summary());
        let [table, json, sarif] = outputs(&held);
        assert_eq!(outputs(&spilled), [table.clone(), json, sarif]);
        // Written twice, the same: every output reads the rows again.
        assert_eq!(outputs(&spilled)[0], table);
        for threshold in [Severity::Critical, Severity::Medium, Severity::Low] {
            assert_eq!(spilled.fails(threshold), held.fails(threshold));
        }
        assert!(held.fails(Severity::Critical), "the records hold a 9.8");
    }
}
