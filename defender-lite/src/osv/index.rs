//! The index: records collected by `VulnIndexBuilder` (newest copy of each id, withdrawn
//! ones dropped), built into `VulnIndex`, and its lookups and what they return.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use relay::bundle::Timestamp;

use crate::version::{Version, VersionError};

use super::range::{Entry, Installed};
use super::record::{OsvRecord, Record};
use super::severity::Severity;
use super::{package_key, same_release, scheme_for, split_ecosystem};

/// The package at a version, as a scanner found it installed.
#[derive(Debug, Clone, Copy)]
pub struct Package<'a> {
    /// OSV ecosystem, with the release where the ecosystem has them (`Debian:12`,
    /// `Alpine:v3.19`, `PyPI`).
    pub ecosystem: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    /// The source package a binary package was built from (Debian's `Source:` field),
    /// when the scanner knows it.
    pub source: Option<SourcePackage<'a>>,
}

/// A binary package's source package.
#[derive(Debug, Clone, Copy)]
pub struct SourcePackage<'a> {
    pub name: &'a str,
    /// The source version when it differs from the binary's (`Source: glibc (2.36-9)`
    /// for a binNMU); the binary's version is used otherwise.
    pub version: Option<&'a str>,
}

/// How a finding's package matched the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// The record names the installed package.
    Package,
    /// The record names the installed package's source package.
    Source,
}

/// A vulnerability record as the index keeps it.
#[derive(Debug, Clone)]
pub struct Vulnerability {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: Option<String>,
    pub modified: Timestamp,
}

/// One record that affects a looked-up package.
#[derive(Debug, Clone)]
pub struct Finding<'a> {
    pub vulnerability: &'a Vulnerability,
    /// The ecosystem and package name as the record writes them.
    pub ecosystem: &'a str,
    pub package: &'a str,
    pub matched: NameMatch,
    pub severity: Severity,
    /// The CVSS base score the severity came from, if it came from a vector.
    pub cvss_score: Option<f64>,
    /// The smallest `fixed` version above the installed one, if any.
    pub fixed: Option<&'a str>,
}

/// What reading feed files found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Records kept (new ids, or newer copies of ids already read).
    pub records: u64,
    /// Records ignored because they are withdrawn.
    pub withdrawn: u64,
    /// Copies of ids already read that were not newer.
    pub duplicates: u64,
    /// Lines that are not OSV records, and where the first of them is.
    pub invalid: u64,
    pub first_invalid: Option<String>,
}

impl LoadStats {
    pub(super) fn merge(&mut self, other: LoadStats) {
        self.records += other.records;
        self.withdrawn += other.withdrawn;
        self.duplicates += other.duplicates;
        self.invalid += other.invalid;
        if self.first_invalid.is_none() {
            self.first_invalid = other.first_invalid;
        }
    }
}

/// What the index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub records: usize,
    /// Distinct (ecosystem family, package name) keys.
    pub packages: usize,
    /// `affected` entries indexed.
    pub entries: usize,
    /// Event or `versions` strings their scheme could not read.
    pub unreadable_versions: usize,
}

/// A feed file or directory that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`VulnIndexBuilder::add`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// It replaced an older copy of the same id.
    Replaced,
    /// A copy at least as new was already held, or the id was withdrawn since.
    Duplicate,
    Withdrawn,
    /// Its `modified` is not a timestamp: it cannot be ordered against other copies.
    Unreadable,
}

/// Collects OSV records, then builds a [`VulnIndex`].
#[derive(Debug, Default)]
pub struct VulnIndexBuilder {
    pub(super) records: HashMap<String, Record>,
    /// One copy of each ecosystem string (`Debian:12` appears thousands of times).
    pub(super) ecosystems: HashMap<String, Arc<str>>,
    /// Ids withdrawn, with the withdrawal's `modified`: older copies stay out.
    pub(super) withdrawn: HashMap<String, Timestamp>,
}

impl VulnIndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record; of two copies of one id, the later `modified` wins (the later
    /// added on a tie). A withdrawn copy retracts the id, and copies older than the
    /// withdrawal stay out.
    pub fn add(&mut self, record: OsvRecord) -> Added {
        let Ok(modified) = record.modified else {
            return Added::Unreadable;
        };
        if record.withdrawn.is_some() {
            self.records.remove(&record.id);
            let when = self.withdrawn.entry(record.id).or_insert(modified);
            *when = (*when).max(modified);
            return Added::Withdrawn;
        }
        if let Some(withdrawn) = self.withdrawn.get(&record.id) {
            if *withdrawn >= modified {
                return Added::Duplicate;
            }
            self.withdrawn.remove(&record.id);
        }
        let record = Record::from_osv(record, modified, &mut self.ecosystems);
        match self.records.get(&record.vulnerability.id) {
            Some(held) if held.vulnerability.modified > record.vulnerability.modified => {
                Added::Duplicate
            }
            Some(_) => {
                self.records.insert(record.vulnerability.id.clone(), record);
                Added::Replaced
            }
            None => {
                self.records.insert(record.vulnerability.id.clone(), record);
                Added::New
            }
        }
    }

    /// Reads JSON Lines: one OSV record per line. Blank lines are skipped, a trailing
    /// `\r` is tolerated, and a line that is not an OSV record is counted, not fatal.
    pub fn add_jsonl(&mut self, mut input: impl BufRead) -> io::Result<LoadStats> {
        let mut stats = LoadStats::default();
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Ok(stats);
            }
            number += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let why = match serde_json::from_slice::<OsvRecord>(text) {
                Ok(record) => {
                    let modified = record.modified.clone();
                    match self.add(record) {
                        Added::New | Added::Replaced => stats.records += 1,
                        Added::Duplicate => stats.duplicates += 1,
                        Added::Withdrawn => stats.withdrawn += 1,
                        Added::Unreadable => {}
                    }
                    match modified {
                        Ok(_) => continue,
                        Err(text) => format!("modified {text:?} is not an RFC 3339 timestamp"),
                    }
                }
                Err(e) => e.to_string(),
            };
            stats.invalid += 1;
            if stats.first_invalid.is_none() {
                stats.first_invalid = Some(format!("line {number}: {why}"));
            }
        }
    }

    /// Reads one feed file.
    pub fn add_file(&mut self, path: &Path) -> Result<LoadStats, LoadError> {
        let read_error = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let mut stats = self.add_jsonl(BufReader::new(file)).map_err(read_error)?;
        if let Some(first) = &mut stats.first_invalid {
            *first = format!("{}: {first}", path.display());
        }
        Ok(stats)
    }

    /// Reads every feed file in `dir` (an unpacked bundle's `feeds/osv`), in name
    /// order, skipping `README*` and dot files as the bundle builder does.
    pub fn add_dir(&mut self, dir: &Path) -> Result<LoadStats, LoadError> {
        let read_error = |source| LoadError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with("README") {
                continue;
            }
            if entry.file_type().map_err(read_error)?.is_file() {
                paths.push(entry.path());
            }
        }
        paths.sort();
        let mut stats = LoadStats::default();
        for path in paths {
            stats.merge(self.add_file(&path)?);
        }
        Ok(stats)
    }

    /// Indexes the records by package.
    pub fn build(self) -> VulnIndex {
        let mut records: Vec<Record> = self.records.into_values().collect();
        // Deterministic order: findings come out sorted by id.
        records.sort_by(|a, b| a.vulnerability.id.cmp(&b.vulnerability.id));
        let mut index = VulnIndex {
            vulnerabilities: Vec::with_capacity(records.len()),
            ..VulnIndex::default()
        };
        for record in records {
            let vuln = index.vulnerabilities.len();
            index.vulnerabilities.push(record.vulnerability);
            index.unreadable_versions += record.unreadable_versions;
            for mut entry in record.entries {
                entry.vuln = vuln;
                let key = package_key(&entry.ecosystem, &entry.package);
                index
                    .by_package
                    .entry(key)
                    .or_default()
                    .push(index.entries.len());
                index.entries.push(entry);
            }
        }
        index.entries.shrink_to_fit();
        index
    }
}

/// OSV records indexed by package, ready for lookups.
#[derive(Debug, Default)]
pub struct VulnIndex {
    pub(super) vulnerabilities: Vec<Vulnerability>,
    pub(super) entries: Vec<Entry>,
    pub(super) by_package: HashMap<String, Vec<usize>>,
    pub(super) unreadable_versions: usize,
}

impl VulnIndex {
    /// Reads every feed file in `dir` and builds the index.
    pub fn load_dir(dir: &Path) -> Result<(VulnIndex, LoadStats), LoadError> {
        let mut builder = VulnIndexBuilder::new();
        let stats = builder.add_dir(dir)?;
        Ok((builder.build(), stats))
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            records: self.vulnerabilities.len(),
            packages: self.by_package.len(),
            entries: self.entries.len(),
            unreadable_versions: self.unreadable_versions,
        }
    }

    /// The record with this id, if the index holds it.
    pub fn get(&self, id: &str) -> Option<&Vulnerability> {
        self.position(id).map(|i| &self.vulnerabilities[i])
    }

    /// Where the record with this id is held: [`at`](Self::at) gives it back.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.vulnerabilities
            .binary_search_by(|v| v.id.as_str().cmp(id))
            .ok()
    }

    pub fn at(&self, position: usize) -> Option<&Vulnerability> {
        self.vulnerabilities.get(position)
    }

    /// The records that affect `name` at `version` in `ecosystem`, sorted by id.
    ///
    /// A version the ecosystem's scheme cannot read is still looked for, verbatim, in
    /// the records' `versions` lists (the schema's first test needs no ordering), but
    /// its ranges cannot be evaluated: that lookup fails with [`UnreadableVersion`],
    /// which carries what did match.
    pub fn lookup(
        &self,
        ecosystem: &str,
        name: &str,
        version: &str,
    ) -> Result<Vec<Finding<'_>>, UnreadableVersion<'_>> {
        self.lookup_package(&Package {
            ecosystem,
            name,
            version,
            source: None,
        })
    }

    /// Like [`lookup`](Self::lookup), also matching records that name the package's
    /// source package (at the source version when given). One finding per record: of
    /// several matching entries, the highest severity and the smallest fix are kept.
    pub fn lookup_package(
        &self,
        package: &Package<'_>,
    ) -> Result<Vec<Finding<'_>>, UnreadableVersion<'_>> {
        let scheme = scheme_for(package.ecosystem);
        let mut binary = Installed::new(package.version);
        let mut unreadable = binary.read_as(scheme).err();
        let mut matches = Vec::new();
        self.collect(
            package,
            package.name,
            &mut binary,
            NameMatch::Package,
            &mut matches,
        );
        if let Some(source) = &package.source {
            match source.version {
                Some(version) => {
                    let mut installed = Installed::new(version);
                    if let Err(e) = installed.read_as(scheme) {
                        unreadable.get_or_insert(e);
                    }
                    self.collect(
                        package,
                        source.name,
                        &mut installed,
                        NameMatch::Source,
                        &mut matches,
                    );
                }
                None => self.collect(
                    package,
                    source.name,
                    &mut binary,
                    NameMatch::Source,
                    &mut matches,
                ),
            }
        }
        matches.sort_by_key(|m| (m.vuln, m.matched == NameMatch::Source));
        let mut findings: Vec<Finding<'_>> = Vec::new();
        let mut last: Option<(usize, Option<&Version>)> = None;
        for m in matches {
            let entry = &self.entries[m.entry];
            match (&mut last, findings.last_mut()) {
                (Some((vuln, fixed)), Some(finding)) if *vuln == m.vuln => {
                    if entry.severity > finding.severity {
                        finding.severity = entry.severity;
                        finding.cvss_score = entry.cvss_score;
                    }
                    if let Some((version, text)) = m.fixed
                        && fixed.is_none_or(|held| version < held)
                    {
                        *fixed = Some(version);
                        finding.fixed = Some(text);
                    }
                }
                _ => {
                    last = Some((m.vuln, m.fixed.map(|(version, _)| version)));
                    findings.push(Finding {
                        vulnerability: &self.vulnerabilities[m.vuln],
                        ecosystem: &entry.ecosystem,
                        package: &entry.package,
                        matched: m.matched,
                        severity: entry.severity,
                        cvss_score: entry.cvss_score,
                        fixed: m.fixed.map(|(_, text)| text),
                    });
                }
            }
        }
        match unreadable {
            None => Ok(findings),
            Some(error) => Err(UnreadableVersion { error, findings }),
        }
    }

    /// Adds the entries under `name` that affect `installed` to `matches`.
    pub(super) fn collect<'s>(
        &'s self,
        package: &Package<'_>,
        name: &str,
        installed: &mut Installed<'_>,
        matched: NameMatch,
        matches: &mut Vec<Match<'s>>,
    ) {
        let Some(entries) = self.by_package.get(&package_key(package.ecosystem, name)) else {
            return;
        };
        let (_, release) = split_ecosystem(package.ecosystem);
        for &index in entries {
            let entry = &self.entries[index];
            if matches.iter().any(|m| m.entry == index) {
                continue;
            }
            if let (Some(want), (_, Some(have))) = (release, split_ecosystem(&entry.ecosystem))
                && !same_release(package.ecosystem, want, have)
            {
                continue;
            }
            if entry.affects(installed) {
                matches.push(Match {
                    vuln: entry.vuln,
                    entry: index,
                    matched,
                    fixed: entry.fixed_above(installed),
                });
            }
        }
    }
}

/// An entry that affects the looked-up version.
pub(super) struct Match<'s> {
    pub(super) vuln: usize,
    pub(super) entry: usize,
    pub(super) matched: NameMatch,
    pub(super) fixed: Option<(&'s Version, &'s str)>,
}

/// A lookup of a version its ecosystem's scheme cannot read (PyPI `0.7.1.fix1`): the
/// ranges under that scheme were not evaluated, so "not affected" cannot be said.
#[derive(Debug, thiserror::Error)]
#[error("{error}: matched against `versions` lists only, ranges not evaluated")]
pub struct UnreadableVersion<'a> {
    pub error: VersionError,
    /// What matched all the same: records listing the version verbatim in `versions`
    /// (and ranges of another scheme that reads it, such as `SEMVER` in PyPI).
    pub findings: Vec<Finding<'a>>,
}
