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

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::feeds::{Feeds, FeedsError};
use crate::image::{Image, ImageError, ImageKind};
use crate::inventory::{self, Coverage, DatabaseStatus, Inventory};
use crate::osv::{NameMatch, Package, Severity, SourcePackage};

pub const SCHEMA: &str = "defender-lite.scan/1";

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Feeds(#[from] FeedsError),
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub target: String,
    pub image: ImageInfo,
    pub os: Option<OsInfo>,
    pub feeds: String,
    pub coverage: &'static str,
    pub databases: Vec<DatabaseInfo>,
    pub packages: Vec<PackageInfo>,
    pub findings: Vec<FindingInfo>,
    pub summary: Summary,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub kind: &'static str,
    pub repo_tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OsInfo {
    pub id: String,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    pub kind: &'static str,
    pub path: String,
    pub status: &'static str,
    pub packages: usize,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageInfo {
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub source_name: Option<String>,
    pub source_version: Option<String>,
    pub declared_in: String,
    pub found_by: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingInfo {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: Option<String>,
    pub severity: Severity,
    pub cvss_score: Option<f64>,
    pub ecosystem: String,
    pub package: String,
    pub version: String,
    pub fixed: Option<String>,
    pub matched_by: &'static str,
    /// The package name as the advisory writes it.
    pub advisory_package: String,
    pub declared_in: String,
    pub found_by: &'static str,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub unknown: usize,
    pub total: usize,
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn kind_name(kind: ImageKind) -> &'static str {
    match kind {
        ImageKind::Directory => "directory",
        ImageKind::Tar { .. } => "tar",
        ImageKind::DockerSave { .. } => "docker-save",
    }
}

/// Scans the image at `path` against `feeds`.
pub fn scan(path: &Path, feeds: &Feeds) -> Result<Report, ScanError> {
    let image = Image::open(path)?;
    let inventory = inventory::collect(&image)?;
    let mut report = match_inventory(&inventory, feeds)?;
    report.target = path.display().to_string();
    report.image = ImageInfo {
        kind: kind_name(image.kind()),
        repo_tags: image.repo_tags().to_vec(),
    };
    let mut notes: Vec<String> = image.warnings().to_vec();
    notes.append(&mut report.notes);
    report.notes = notes;
    Ok(report)
}

/// Matches an inventory against the feeds' OSV records.
pub fn match_inventory(inventory: &Inventory, feeds: &Feeds) -> Result<Report, ScanError> {
    let keys = inventory.packages.iter().flat_map(|p| {
        std::iter::once((p.ecosystem.as_str(), p.name.as_str()))
            .chain(p.source_name.as_deref().map(|s| (p.ecosystem.as_str(), s)))
    });
    let (index, _) = feeds.vulnerabilities(keys)?;
    let mut notes = inventory.notes.clone();
    let mut findings = Vec::new();
    for p in &inventory.packages {
        let query = Package {
            ecosystem: &p.ecosystem,
            name: &p.name,
            version: &p.version,
            source: p.source_name.as_deref().map(|name| SourcePackage {
                name,
                version: p.source_version.as_deref(),
            }),
        };
        let hits = match index.lookup_package(&query) {
            Ok(hits) => hits,
            Err(e) => {
                notes.push(format!(
                    "{} {} ({}, {}): version not matched: {e}",
                    p.name, p.version, p.ecosystem, p.declared_in
                ));
                continue;
            }
        };
        for hit in hits {
            findings.push(FindingInfo {
                id: hit.vulnerability.id.clone(),
                aliases: hit.vulnerability.aliases.clone(),
                summary: hit.vulnerability.summary.clone(),
                severity: hit.severity,
                cvss_score: hit.cvss_score,
                ecosystem: p.ecosystem.clone(),
                package: p.name.clone(),
                version: p.version.clone(),
                fixed: hit.fixed.map(str::to_owned),
                matched_by: match hit.matched {
                    NameMatch::Package => "package",
                    NameMatch::Source => "source",
                },
                advisory_package: hit.package.to_owned(),
                declared_in: p.declared_in.clone(),
                found_by: p.found_by.as_str(),
            });
        }
    }
    findings.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| {
            (&a.package, &a.id, &a.declared_in).cmp(&(&b.package, &b.id, &b.declared_in))
        })
    });
    let mut summary = Summary::default();
    for f in &findings {
        *match f.severity {
            Severity::Critical => &mut summary.critical,
            Severity::High => &mut summary.high,
            Severity::Medium => &mut summary.medium,
            Severity::Low => &mut summary.low,
            Severity::Unknown => &mut summary.unknown,
        } += 1;
        summary.total += 1;
    }
    Ok(Report {
        schema: SCHEMA,
        target: String::new(),
        image: ImageInfo {
            kind: "directory",
            repo_tags: Vec::new(),
        },
        os: inventory.os.as_ref().map(|os| OsInfo {
            id: os.id.clone(),
            version_id: os.version_id.clone(),
            pretty_name: os.pretty_name.clone(),
        }),
        feeds: feeds.description.clone(),
        coverage: match inventory.coverage() {
            Coverage::NoDatabase => "no_database",
            Coverage::Partial => "partial",
            Coverage::Complete => "complete",
        },
        databases: inventory
            .databases
            .iter()
            .map(|db| {
                let (status, packages, reason) = match &db.status {
                    DatabaseStatus::Read { packages } => ("read", *packages, None),
                    DatabaseStatus::Unreadable { reason } => {
                        ("unreadable", 0, Some(reason.clone()))
                    }
                };
                DatabaseInfo {
                    kind: db.kind.as_str(),
                    path: db.path.clone(),
                    status,
                    packages,
                    reason,
                }
            })
            .collect(),
        packages: inventory
            .packages
            .iter()
            .map(|p| PackageInfo {
                ecosystem: p.ecosystem.clone(),
                name: p.name.clone(),
                version: p.version.clone(),
                source_name: p.source_name.clone(),
                source_version: p.source_version.clone(),
                declared_in: p.declared_in.clone(),
                found_by: p.found_by.as_str(),
            })
            .collect(),
        findings,
        summary,
        notes,
    })
}

impl Report {
    /// `--fail-on`: a finding at or above `threshold`, or nothing to judge by.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.coverage == "no_database" || self.findings.iter().any(|f| f.severity >= threshold)
    }

    /// The table an operator reads.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let os = self
            .os
            .as_ref()
            .and_then(|o| o.pretty_name.clone().or_else(|| Some(o.id.clone())))
            .unwrap_or_else(|| "unknown OS".to_owned());
        out += &format!("{} ({}, {})\n", self.target, self.image.kind, os);
        out += &format!("feeds: {}\n", self.feeds);
        if self.coverage == "no_database" {
            out += "NO PACKAGE DATABASE FOUND: nothing was scanned; this is not a clean result.\n";
        } else {
            let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
            for p in &self.packages {
                *by_kind.entry(p.found_by).or_default() += 1;
            }
            let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out += &format!(
                "packages: {} ({}) from {} database(s){}\n",
                self.packages.len(),
                kinds.join(", "),
                self.databases.len(),
                if self.coverage == "partial" {
                    "; SOME COULD NOT BE READ (see notes)"
                } else {
                    ""
                }
            );
        }
        if !self.findings.is_empty() {
            let rows: Vec<[String; 7]> = self
                .findings
                .iter()
                .map(|f| {
                    [
                        f.package.clone(),
                        f.version.clone(),
                        f.fixed.clone().unwrap_or_else(|| "-".into()),
                        f.severity.as_str().to_uppercase(),
                        f.id.clone(),
                        if f.aliases.is_empty() {
                            "-".into()
                        } else {
                            f.aliases.join(",")
                        },
                        f.declared_in.clone(),
                    ]
                })
                .collect();
            let header = [
                "PACKAGE",
                "INSTALLED",
                "FIXED",
                "SEVERITY",
                "ID",
                "ALIASES",
                "DECLARED IN",
            ]
            .map(str::to_owned);
            let mut widths = header.clone().map(|h| h.len());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    if i + 1 == row.len() {
                        line += cell;
                    } else {
                        line += &format!("{cell:<w$}  ", w = widths[i]);
                    }
                }
                out += line.trim_end();
                out.push('\n');
            }
        }
        let s = &self.summary;
        out += &format!(
            "findings: {} (critical {}, high {}, medium {}, low {}, unknown {})\n",
            s.total, s.critical, s.high, s.medium, s.low, s.unknown
        );
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    /// SARIF 2.1.0: one rule per advisory, one result per affected package.
    pub fn sarif(&self) -> serde_json::Value {
        let mut rules: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
        for f in &self.findings {
            rules.entry(f.id.as_str()).or_insert_with(|| {
                let mut rule = serde_json::json!({
                    "id": f.id,
                    "name": f.id,
                    "shortDescription": { "text": f.summary.clone().unwrap_or_else(|| f.id.clone()) },
                    "properties": { "tags": ["vulnerability", "security", f.severity.as_str()] },
                });
                if let Some(score) = f.cvss_score {
                    rule["properties"]["security-severity"] = format!("{score:.1}").into();
                }
                if !f.aliases.is_empty() {
                    rule["properties"]["aliases"] = f.aliases.clone().into();
                }
                rule
            });
        }
        let results: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                let level = match f.severity {
                    Severity::Critical | Severity::High => "error",
                    Severity::Medium => "warning",
                    Severity::Low | Severity::Unknown => "note",
                };
                serde_json::json!({
                    "ruleId": f.id,
                    "level": level,
                    "message": { "text": format!(
                        "{} {} ({}) is affected by {} ({}); {}",
                        f.package, f.version, f.ecosystem, f.id, f.severity,
                        f.fixed.as_ref().map_or_else(|| "no fixed version".to_owned(), |v| format!("fixed in {v}"))
                    )},
                    "locations": [{ "physicalLocation": { "artifactLocation": { "uri": f.declared_in } } }],
                    "properties": { "package": f.package, "installedVersion": f.version, "fixedVersion": f.fixed, "severity": f.severity.as_str() },
                })
            })
            .collect();
        let mut notifications: Vec<serde_json::Value> = self
            .notes
            .iter()
            .map(|n| serde_json::json!({ "level": "warning", "message": { "text": n } }))
            .collect();
        if self.coverage == "no_database" {
            notifications.insert(
                0,
                serde_json::json!({ "level": "error", "message": { "text": "no package database found: nothing was scanned" } }),
            );
        }
        serde_json::json!({
            "version": "2.1.0",
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "runs": [{
                "tool": { "driver": {
                    "name": "defender-lite",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules.into_values().collect::<Vec<_>>(),
                }},
                "invocations": [{ "executionSuccessful": true, "toolExecutionNotifications": notifications }],
                "results": results,
            }]
        })
    }
}
