//! Matching installed packages against the OSV records of a bundle's `osv` feed.
//!
//! The feed is JSON Lines, one OSV record per line (`relay/FORMAT.md`); a bundle holds
//! any number of such files under `feeds/osv/`. [`VulnIndexBuilder`] reads them
//! ([`VulnIndexBuilder::add_dir`], [`VulnIndexBuilder::add_jsonl`]), keeps the newest
//! copy of each id, drops withdrawn records, and [`VulnIndexBuilder::build`] makes a
//! [`VulnIndex`]: every event version parsed once under its ecosystem's
//! [`Scheme`], entries keyed by ecosystem family and normalized package name.
//! [`VulnIndex::lookup`] and [`VulnIndex::lookup_package`] answer "which records
//! affect this package at this version", with the severity and the version that fixes
//! it. Reading package databases is the scanner's business; printing is `report`'s.
//! The relay's feed validator keeps its OSV types to itself (it checks structure, not
//! meaning), so [`OsvRecord`] here reads the fields matching needs.
//!
//! Matching follows the OSV schema's evaluation: a version is affected if it is listed
//! in `versions` (verbatim, or equal under the scheme), or if, in some `ECOSYSTEM` or
//! `SEMVER` range, it is below one of the range's `limit`s (none means no limit) and
//! walking the events sorted by version (`introduced: "0"` first; at equal versions
//! `introduced` first) leaves it inside an `[introduced, fixed)` or
//! `[introduced, last_affected]` interval. `GIT` ranges need the repository and are
//! ignored, as are `database_specific` and `ecosystem_specific` except for severity. An
//! event version its scheme cannot read is dropped (and counted in
//! [`IndexStats::unreadable_versions`]): a lost `fixed` widens the range, so the error
//! is a reported finding, never a silent miss; a range left without an `introduced` is
//! dropped. An installed version its scheme cannot read (PyPI `0.7.1.fix1`) still
//! matches the `versions` lists that write it out, and the lookup says that ranges
//! went unevaluated ([`UnreadableVersion`]).
//!
//! Severity comes from the record's CVSS vectors, scored here (v4.0, else v3.x, else
//! v2: [`cvss_base_score`]), then from the words databases add ([`Severity`]).
//!
//! Packages are keyed by ecosystem family (`Debian` of `Debian:12`, case-insensitive)
//! and name, normalized where the ecosystem treats names loosely (PyPI per PEP 503,
//! crates.io, NuGet and Packagist case-insensitively). A record scoped to a release
//! (`Debian:12`, `Alpine:v3.19`) matches only a query for that release (Alpine's `v` is
//! optional); a record without one matches every release, and a query without one
//! matches records of every release. Debian and Ubuntu records name source packages:
//! [`VulnIndex::lookup_package`] matches a binary package by its source name too.
//!
//! Cost, measured on the 2-core machine (release build, other builds running):
//! 100,000 synthetic one-package records (41 MB of JSON) read in about 0.5 s, index in
//! about 0.3 s, and leave the process at about 155 MB resident (peak 210 MB with the
//! test's 41 MB input held in memory); a lookup, with the test's checks around it,
//! takes 2-5 µs. A debug build takes about 3 s for the same. The test
//! `osv_index::a_hundred_thousand_records_index_and_match` rebuilds that index and
//! prints these figures (`-- --nocapture`); it asserts only correctness.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use relay::bundle::Timestamp;
use serde::{Deserialize, Deserializer};

use crate::version::{Scheme, Version, VersionError};

/// The version ordering an OSV ecosystem string uses (`Debian:12` -> dpkg).
///
/// Ecosystems without a comparator here get [`Scheme::Generic`]: Maven, NuGet,
/// RubyGems, Packagist, Hackage, CRAN and the rest.
pub fn scheme_for(ecosystem: &str) -> Scheme {
    let (family, release) = split_ecosystem(ecosystem);
    match family.to_ascii_lowercase().as_str() {
        "debian" | "ubuntu" => Scheme::Dpkg,
        "alpine"
        | "alpaquita"
        | "bellsoft hardened containers"
        | "chainguard"
        | "minimos"
        | "wolfi" => Scheme::Apk,
        "red hat" | "rocky linux" | "almalinux" | "suse" | "opensuse" | "photon os" | "mageia"
        | "openeuler" | "azure linux" => Scheme::Rpm,
        "pypi" => Scheme::Pep440,
        "npm" | "crates.io" | "hex" | "pub" | "swifturl" | "bitnami" => Scheme::Semver,
        "go" | "kubernetes" => Scheme::Go,
        // Root's ecosystems name the one they patch: `Root:Alpine:3.18`, `Root:PyPI`.
        "root" => release.map_or(Scheme::Generic, scheme_for),
        _ => Scheme::Generic,
    }
}

/// Normalizes a package name the way its ecosystem compares names: PEP 503 for PyPI
/// (`Jinja2`, `jinja_2` -> `jinja2`, `jinja-2`), lower case for crates.io (with `_` as
/// `-`), NuGet and Packagist; other ecosystems compare names exactly.
pub fn normalize_name(ecosystem: &str, name: &str) -> String {
    let (family, _) = split_ecosystem(ecosystem);
    match family.to_ascii_lowercase().as_str() {
        "pypi" => {
            let mut out = String::with_capacity(name.len());
            let mut in_separator = false;
            for c in name.trim().chars() {
                if matches!(c, '-' | '_' | '.') {
                    if !in_separator {
                        out.push('-');
                    }
                    in_separator = true;
                } else {
                    out.extend(c.to_lowercase());
                    in_separator = false;
                }
            }
            out
        }
        "crates.io" => name.trim().to_ascii_lowercase().replace('_', "-"),
        "nuget" | "packagist" => name.trim().to_lowercase(),
        _ => name.trim().to_owned(),
    }
}

/// A severity level. Ordered: `Unknown < Low < Medium < High < Critical`.
///
/// From a CVSS vector, the level is the qualitative rating of the base score computed
/// from the vector ([`cvss_base_score`]): v4 and v3 0.1-3.9 Low, 4.0-6.9 Medium,
/// 7.0-8.9 High, 9.0-10.0 Critical; v2 (NVD's ratings) 0.0-3.9 Low, 4.0-6.9 Medium,
/// 7.0-10.0 High. There is no "None" level: a score of 0.0, which advisories do not
/// publish in practice, reads as Low.
///
/// Words ([`FromStr`], case-insensitive): `critical`; `high`, `important`; `medium`,
/// `moderate`; `low`, `negligible`, `unimportant`; and `unknown`, `unspecified`,
/// `not yet assigned` or nothing for Unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The CVSS v3 qualitative rating of a base score (0.0 reads as Low).
    pub fn from_cvss3_score(score: f64) -> Severity {
        match score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    /// The CVSS v4.0 qualitative rating of a base score: v3's scale (0.0 reads as Low).
    pub fn from_cvss4_score(score: f64) -> Severity {
        Severity::from_cvss3_score(score)
    }

    /// NVD's rating of a CVSS v2 base score.
    pub fn from_cvss2_score(score: f64) -> Severity {
        match score {
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity word that is none of [`Severity`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?}")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(text: &str) -> Result<Self, UnknownSeverity> {
        match text.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" | "important" => Ok(Severity::High),
            "medium" | "moderate" => Ok(Severity::Medium),
            "low" | "negligible" | "unimportant" => Ok(Severity::Low),
            "" | "unknown" | "unspecified" | "not yet assigned" => Ok(Severity::Unknown),
            _ => Err(UnknownSeverity(text.to_owned())),
        }
    }
}

/// A CVSS vector that could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CVSS vector {vector:?}: {reason}")]
pub struct CvssError {
    pub vector: String,
    pub reason: String,
}

/// The base score of a CVSS v4.0 (`CVSS:4.0/AV:N/...`), v3.0/v3.1 (`CVSS:3.1/AV:N/...`)
/// or v2 (`AV:N/AC:L/Au:N/...`, in parentheses or not) vector, computed by the `cvss`
/// crate (FIRST's formulas; for v4, FIRST's macrovector tables). Every base metric
/// must be present. Only base metrics count: v3 and v2 temporal and environmental
/// metrics are ignored, and so are v4's threat, environmental and supplemental metrics
/// (the score is CVSS-B: an `E:U` written by the advisory would only lower it, so
/// leaving it out never hides a finding from `--fail-on`).
pub fn cvss_base_score(vector: &str) -> Result<f64, CvssError> {
    let vector = vector.trim();
    let invalid = |reason: String| CvssError {
        vector: vector.to_owned(),
        reason,
    };
    let text = vector.trim_start_matches('(').trim_end_matches(')');
    match text.parse::<cvss::Cvss>() {
        Ok(cvss::Cvss::CvssV20(v2)) => Ok(v2.score().value()),
        Ok(cvss::Cvss::CvssV30(v3) | cvss::Cvss::CvssV31(v3)) => {
            // The crate scores a missing v3 metric as 0 instead of refusing it.
            let base = [
                v3.av.is_some(),
                v3.ac.is_some(),
                v3.pr.is_some(),
                v3.ui.is_some(),
                v3.s.is_some(),
                v3.c.is_some(),
                v3.i.is_some(),
                v3.a.is_some(),
            ];
            if base.contains(&false) {
                return Err(invalid("a base metric is missing".to_owned()));
            }
            Ok(v3.base_score().value())
        }
        // Parsed whole first, so that a bad threat or environmental metric is refused
        // too; then scored on the base metrics alone.
        Ok(cvss::Cvss::CvssV40(_)) => cvss4_base(text).map_err(|e| invalid(e.to_string())),
        Ok(_) => Err(invalid("unsupported CVSS version".to_owned())),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// The CVSS-B score of a v4.0 vector: its base metrics only.
fn cvss4_base(vector: &str) -> Result<f64, cvss::Error> {
    const BASE: [&str; 11] = [
        "AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA",
    ];
    let mut base = String::with_capacity(vector.len());
    for (i, piece) in vector.split('/').enumerate() {
        let key = piece.split_once(':').map_or(piece, |(key, _)| key);
        if i == 0 || BASE.iter().any(|b| b.eq_ignore_ascii_case(key)) {
            if i > 0 {
                base.push('/');
            }
            base.push_str(piece);
        }
    }
    Ok(base.parse::<cvss::v4::Vector>()?.score().value())
}

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
    fn merge(&mut self, other: LoadStats) {
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
}

/// Collects OSV records, then builds a [`VulnIndex`].
#[derive(Debug, Default)]
pub struct VulnIndexBuilder {
    records: HashMap<String, Record>,
    /// One copy of each ecosystem string (`Debian:12` appears thousands of times).
    ecosystems: HashMap<String, Arc<str>>,
    /// Ids withdrawn, with the withdrawal's `modified`: older copies stay out.
    withdrawn: HashMap<String, Timestamp>,
}

impl VulnIndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record; of two copies of one id, the later `modified` wins (the later
    /// added on a tie). A withdrawn copy retracts the id, and copies older than the
    /// withdrawal stay out.
    pub fn add(&mut self, record: OsvRecord) -> Added {
        if record.withdrawn.is_some() {
            self.records.remove(&record.id);
            let when = self.withdrawn.entry(record.id).or_insert(record.modified);
            *when = (*when).max(record.modified);
            return Added::Withdrawn;
        }
        if let Some(withdrawn) = self.withdrawn.get(&record.id) {
            if *withdrawn >= record.modified {
                return Added::Duplicate;
            }
            self.withdrawn.remove(&record.id);
        }
        let record = Record::from_osv(record, &mut self.ecosystems);
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
            match serde_json::from_slice::<OsvRecord>(text) {
                Ok(record) => match self.add(record) {
                    Added::New | Added::Replaced => stats.records += 1,
                    Added::Duplicate => stats.duplicates += 1,
                    Added::Withdrawn => stats.withdrawn += 1,
                },
                Err(e) => {
                    stats.invalid += 1;
                    if stats.first_invalid.is_none() {
                        stats.first_invalid = Some(format!("line {number}: {e}"));
                    }
                }
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
    vulnerabilities: Vec<Vulnerability>,
    entries: Vec<Entry>,
    by_package: HashMap<String, Vec<usize>>,
    unreadable_versions: usize,
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
    fn collect<'s>(
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
struct Match<'s> {
    vuln: usize,
    entry: usize,
    matched: NameMatch,
    fixed: Option<(&'s Version, &'s str)>,
}

/// The installed version, parsed under each scheme a range asks for (a `SEMVER` range
/// of a PyPI record reads it as SemVer), at most once per scheme, without allocating.
struct Installed<'t> {
    text: &'t str,
    /// By `Scheme as usize`: not tried yet, or the parse's outcome.
    parsed: [Option<Option<Version>>; Scheme::ALL.len()],
}

impl<'t> Installed<'t> {
    fn new(text: &'t str) -> Self {
        Installed {
            text: text.trim(),
            parsed: [const { None }; Scheme::ALL.len()],
        }
    }

    /// Reads the version under `scheme` now, to tell whether it can be.
    fn read_as(&mut self, scheme: Scheme) -> Result<(), VersionError> {
        let outcome = scheme.parse(self.text);
        let result = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
        self.parsed[scheme as usize] = Some(outcome.ok());
        result
    }

    fn get(&mut self, scheme: Scheme) -> Option<&Version> {
        let text = self.text;
        self.parsed[scheme as usize]
            .get_or_insert_with(|| scheme.parse(text).ok())
            .as_ref()
    }
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

/// One `affected[]` entry with its versions parsed.
#[derive(Debug)]
struct Entry {
    vuln: usize,
    ecosystem: Arc<str>,
    package: Box<str>,
    scheme: Scheme,
    ranges: Vec<Range>,
    versions: Vec<(Box<str>, Option<Version>)>,
    severity: Severity,
    cvss_score: Option<f64>,
}

#[derive(Debug)]
struct Range {
    scheme: Scheme,
    /// `introduced`, `fixed` and `last_affected`, sorted.
    events: Vec<Event>,
    limits: Vec<Bound>,
}

#[derive(Debug)]
struct Event {
    kind: EventKind,
    bound: Bound,
    /// A `fixed` version as the record writes it, to report.
    fixed: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    // At equal versions an interval opens before it closes: `introduced: X, fixed: X`
    // is empty, `introduced: X, last_affected: X` is X alone.
    Introduced,
    Fixed,
    LastAffected,
}

#[derive(Debug)]
enum Bound {
    /// `introduced: "0"`: before every version.
    Zero,
    At(Version),
    /// A `limit` containing `*`: after every version.
    Infinity,
}

impl Bound {
    /// Where `version` stands relative to this bound.
    fn cmp_version(&self, version: &Version) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match self {
            Bound::Zero => Ordering::Less,
            Bound::Infinity => Ordering::Greater,
            // Bounds are parsed under the range's scheme, as is the version they meet.
            Bound::At(bound) => bound.partial_cmp(version).unwrap_or(Ordering::Greater),
        }
    }

    fn cmp(&self, other: &Bound) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Bound::Zero, Bound::Zero) | (Bound::Infinity, Bound::Infinity) => Ordering::Equal,
            (Bound::Zero, _) | (_, Bound::Infinity) => Ordering::Less,
            (_, Bound::Zero) | (Bound::Infinity, _) => Ordering::Greater,
            (Bound::At(a), Bound::At(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        }
    }
}

impl Entry {
    /// Parses an `affected[]` entry's versions; what cannot be read is counted in
    /// `unreadable` and left out.
    fn build(
        ecosystem: Arc<str>,
        package: &str,
        raw_ranges: Vec<OsvRange>,
        raw_versions: Vec<String>,
        (severity, cvss_score): (Severity, Option<f64>),
        unreadable: &mut usize,
    ) -> Entry {
        let scheme = scheme_for(&ecosystem);
        let mut ranges = Vec::new();
        for range in raw_ranges {
            let range_scheme = match range.kind.as_str() {
                "ECOSYSTEM" => scheme,
                "SEMVER" if scheme == Scheme::Go => Scheme::Go,
                "SEMVER" => Scheme::Semver,
                _ => continue,
            };
            if let Some(range) = Range::build(range_scheme, range.events, unreadable) {
                ranges.push(range);
            }
        }
        let versions = raw_versions
            .into_iter()
            .map(|text| {
                let parsed = scheme.parse(&text).ok();
                if parsed.is_none() {
                    *unreadable += 1;
                }
                (text.trim().into(), parsed)
            })
            .collect();
        ranges.shrink_to_fit();
        Entry {
            // Set when the index is built.
            vuln: 0,
            ecosystem,
            package: package.trim().into(),
            scheme,
            ranges,
            versions,
            severity,
            cvss_score,
        }
    }

    fn affects(&self, installed: &mut Installed<'_>) -> bool {
        for range in &self.ranges {
            if let Some(version) = installed.get(range.scheme)
                && range.contains(version)
            {
                return true;
            }
        }
        if self.versions.is_empty() {
            return false;
        }
        // The schema's test is the exact string, which holds whether or not the scheme
        // reads the version; equal versions written differently (PEP 440's `1.0` and
        // `1.0.0`) match too.
        let text = installed.text;
        let own = installed.get(self.scheme);
        self.versions.iter().any(|(listed, parsed)| {
            **listed == *text || matches!((own, parsed), (Some(own), Some(parsed)) if own == parsed)
        })
    }

    /// The smallest `fixed` above the installed version, in any of the entry's ranges.
    fn fixed_above(&self, installed: &mut Installed<'_>) -> Option<(&Version, &str)> {
        let mut best: Option<(&Version, &str)> = None;
        for range in &self.ranges {
            let Some(version) = installed.get(range.scheme) else {
                continue;
            };
            for event in &range.events {
                if let (Bound::At(fixed), Some(text)) = (&event.bound, &event.fixed)
                    && fixed > version
                    && best.is_none_or(|(held, _)| fixed < held)
                {
                    best = Some((fixed, text));
                }
            }
        }
        best
    }
}

impl Range {
    fn build(scheme: Scheme, raw: Vec<OsvEvent>, unreadable: &mut usize) -> Option<Range> {
        let mut events = Vec::new();
        let mut limits = Vec::new();
        let mut read = |text: &str| {
            let parsed = scheme.parse(text).ok();
            if parsed.is_none() {
                *unreadable += 1;
            }
            parsed
        };
        for event in raw {
            if let Some(text) = event.introduced {
                let bound = if text.trim() == "0" {
                    Some(Bound::Zero)
                } else {
                    read(&text).map(Bound::At)
                };
                if let Some(bound) = bound {
                    events.push(Event {
                        kind: EventKind::Introduced,
                        bound,
                        fixed: None,
                    });
                }
            }
            if let Some(text) = event.fixed
                && let Some(version) = read(&text)
            {
                events.push(Event {
                    kind: EventKind::Fixed,
                    bound: Bound::At(version),
                    fixed: Some(text.trim().into()),
                });
            }
            if let Some(text) = event.last_affected
                && let Some(version) = read(&text)
            {
                events.push(Event {
                    kind: EventKind::LastAffected,
                    bound: Bound::At(version),
                    fixed: None,
                });
            }
            if let Some(text) = event.limit {
                if text.contains('*') {
                    limits.push(Bound::Infinity);
                } else if let Some(version) = read(&text) {
                    limits.push(Bound::At(version));
                }
            }
        }
        if !events.iter().any(|e| e.kind == EventKind::Introduced) {
            return None;
        }
        events.sort_by(|a, b| a.bound.cmp(&b.bound).then(a.kind.cmp(&b.kind)));
        events.shrink_to_fit();
        limits.shrink_to_fit();
        Some(Range {
            scheme,
            events,
            limits,
        })
    }

    /// The OSV schema's `IncludedInRanges` for one range.
    fn contains(&self, version: &Version) -> bool {
        use std::cmp::Ordering;
        let below_limits = self.limits.is_empty()
            || self
                .limits
                .iter()
                .any(|limit| limit.cmp_version(version) == Ordering::Greater);
        if !below_limits {
            return false;
        }
        let mut vulnerable = false;
        for event in &self.events {
            let bound = event.bound.cmp_version(version);
            match event.kind {
                EventKind::Introduced if bound != Ordering::Greater => vulnerable = true,
                EventKind::Fixed if bound != Ordering::Greater => vulnerable = false,
                EventKind::LastAffected if bound == Ordering::Less => vulnerable = false,
                _ => {}
            }
        }
        vulnerable
    }
}

/// An OSV record: the fields matching uses. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct OsvRecord {
    pub id: String,
    pub modified: Timestamp,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub severity: Vec<OsvSeverity>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub affected: Vec<OsvAffected>,
    /// Only `severity` is read.
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvAffected {
    #[serde(default)]
    pub package: Option<OsvPackage>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub severity: Vec<OsvSeverity>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ranges: Vec<OsvRange>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
    /// Only `severity` is read.
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    /// Only `severity` is read.
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvPackage {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvRange {
    /// `ECOSYSTEM`, `SEMVER` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<OsvEvent>,
}

/// One event; the schema allows exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OsvEvent {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvSeverity {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A record as the builder holds it: versions parsed, severities resolved, the rest of
/// the JSON dropped.
#[derive(Debug)]
struct Record {
    vulnerability: Vulnerability,
    entries: Vec<Entry>,
    unreadable_versions: usize,
}

impl Record {
    fn from_osv(record: OsvRecord, ecosystems: &mut HashMap<String, Arc<str>>) -> Record {
        let record_word = severity_word(record.database_specific.as_ref());
        let mut unreadable_versions = 0;
        let entries = record
            .affected
            .into_iter()
            .filter_map(|affected| {
                let package = affected.package?;
                // The schema's order of authority: the entry's vectors, the record's,
                // then the words databases add.
                let severity = from_vectors(&affected.severity)
                    .or_else(|| from_vectors(&record.severity))
                    .or_else(|| {
                        severity_word(affected.ecosystem_specific.as_ref())
                            .or_else(|| severity_word(affected.database_specific.as_ref()))
                            .or(record_word)
                            .map(|severity| (severity, None))
                    })
                    .unwrap_or_default();
                let ecosystem = package.ecosystem.trim();
                let ecosystem = match ecosystems.get(ecosystem) {
                    Some(interned) => interned.clone(),
                    None => {
                        let interned: Arc<str> = Arc::from(ecosystem);
                        ecosystems.insert(ecosystem.to_owned(), interned.clone());
                        interned
                    }
                };
                Some(Entry::build(
                    ecosystem,
                    &package.name,
                    affected.ranges,
                    affected.versions,
                    severity,
                    &mut unreadable_versions,
                ))
            })
            .collect();
        Record {
            vulnerability: Vulnerability {
                id: record.id,
                aliases: record.aliases,
                summary: record.summary,
                modified: record.modified,
            },
            entries,
            unreadable_versions,
        }
    }
}

/// The level from `severity[]`: the highest CVSS v4 score, else the highest v3, else
/// v2, else an Ubuntu priority.
///
/// The newest CVSS version the advisory publishes wins, as NVD chooses its primary
/// score: it is the publisher's latest assessment, under the standard FIRST maintains.
/// A vector that cannot be scored counts as absent, so an older version still speaks.
fn from_vectors(list: &[OsvSeverity]) -> Option<(Severity, Option<f64>)> {
    let best = |kind: &str| {
        list.iter()
            .filter(|s| s.kind.eq_ignore_ascii_case(kind))
            .filter_map(|s| cvss_base_score(&s.score).ok())
            .max_by(f64::total_cmp)
    };
    if let Some(score) = best("CVSS_V4") {
        return Some((Severity::from_cvss4_score(score), Some(score)));
    }
    if let Some(score) = best("CVSS_V3") {
        return Some((Severity::from_cvss3_score(score), Some(score)));
    }
    if let Some(score) = best("CVSS_V2") {
        return Some((Severity::from_cvss2_score(score), Some(score)));
    }
    list.iter()
        .filter(|s| s.kind.eq_ignore_ascii_case("Ubuntu"))
        .filter_map(|s| s.score.parse::<Severity>().ok())
        .filter(|s| *s != Severity::Unknown)
        .max()
        .map(|severity| (severity, None))
}

/// `{"severity": "HIGH"}` in a `database_specific` or `ecosystem_specific` object.
fn severity_word(specific: Option<&serde_json::Value>) -> Option<Severity> {
    specific?
        .get("severity")?
        .as_str()?
        .parse::<Severity>()
        .ok()
        .filter(|s| *s != Severity::Unknown)
}

/// `Debian:12` -> (`Debian`, `12`); `PyPI` -> (`PyPI`, none).
fn split_ecosystem(ecosystem: &str) -> (&str, Option<&str>) {
    match ecosystem.split_once(':') {
        Some((family, release)) if !release.trim().is_empty() => {
            (family.trim(), Some(release.trim()))
        }
        Some((family, _)) => (family.trim(), None),
        None => (ecosystem.trim(), None),
    }
}

fn same_release(ecosystem: &str, a: &str, b: &str) -> bool {
    let (family, _) = split_ecosystem(ecosystem);
    if family.eq_ignore_ascii_case("alpine") {
        a.trim_start_matches('v') == b.trim_start_matches('v')
    } else {
        a == b
    }
}

pub(crate) fn package_key(ecosystem: &str, name: &str) -> String {
    let (family, _) = split_ecosystem(ecosystem);
    let mut key = family.to_ascii_lowercase();
    key.push('\0');
    key.push_str(&normalize_name(ecosystem, name));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_per_ecosystem() {
        for (ecosystem, scheme) in [
            ("Debian:12", Scheme::Dpkg),
            ("Ubuntu:22.04:LTS", Scheme::Dpkg),
            ("Alpine:v3.19", Scheme::Apk),
            ("Wolfi", Scheme::Apk),
            ("Red Hat:enterprise_linux:9::appstream", Scheme::Rpm),
            ("Rocky Linux:9", Scheme::Rpm),
            ("AlmaLinux:8", Scheme::Rpm),
            ("openSUSE:Tumbleweed", Scheme::Rpm),
            ("PyPI", Scheme::Pep440),
            ("npm", Scheme::Semver),
            ("crates.io", Scheme::Semver),
            ("Go", Scheme::Go),
            ("Root:Alpine:3.18", Scheme::Apk),
            ("Root:PyPI", Scheme::Pep440),
            ("Maven", Scheme::Generic),
            ("Something New", Scheme::Generic),
        ] {
            assert_eq!(scheme_for(ecosystem), scheme, "{ecosystem}");
        }
    }

    #[test]
    fn names_normalize_per_ecosystem() {
        assert_eq!(normalize_name("PyPI", "Jinja2"), "jinja2");
        assert_eq!(
            normalize_name("PyPI", "Foo__Bar..baz-Qux"),
            "foo-bar-baz-qux"
        );
        assert_eq!(normalize_name("crates.io", "Serde_JSON"), "serde-json");
        assert_eq!(
            normalize_name("Go", "github.com/BurntSushi/toml"),
            "github.com/BurntSushi/toml"
        );
        assert_eq!(normalize_name("Debian:12", "glibc"), "glibc");
        assert_eq!(package_key("debian:12", "x"), package_key("Debian", "x"));
    }

    #[test]
    fn severity_words() {
        for (word, level) in [
            ("HIGH", Severity::High),
            ("Important", Severity::High),
            ("MODERATE", Severity::Medium),
            ("medium", Severity::Medium),
            ("low", Severity::Low),
            ("negligible", Severity::Low),
            ("unimportant", Severity::Low),
            ("CRITICAL", Severity::Critical),
            ("not yet assigned", Severity::Unknown),
            ("", Severity::Unknown),
        ] {
            assert_eq!(word.parse::<Severity>(), Ok(level), "{word:?}");
        }
        assert!("severe".parse::<Severity>().is_err());
        assert!(Severity::Unknown < Severity::Low && Severity::High < Severity::Critical);
    }

    #[test]
    fn cvss_rejects_what_it_cannot_score() {
        for bad in [
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/XX:Y",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:Q",
            "CVSS:5.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:2.9/AV:N",
            "AV:N/AC:L/Au:N/C:P/I:P",
            "nonsense",
        ] {
            assert!(cvss_base_score(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_sort_their_events() {
        let events = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(kind, v)| {
                    let v = Some(v.to_string());
                    match *kind {
                        "introduced" => OsvEvent {
                            introduced: v,
                            ..Default::default()
                        },
                        "fixed" => OsvEvent {
                            fixed: v,
                            ..Default::default()
                        },
                        "last_affected" => OsvEvent {
                            last_affected: v,
                            ..Default::default()
                        },
                        _ => OsvEvent {
                            limit: v,
                            ..Default::default()
                        },
                    }
                })
                .collect::<Vec<_>>()
        };
        let mut unreadable = 0;
        // Written out of order: [1.0, 1.2) and [2.0, 2.1).
        let range = Range::build(
            Scheme::Semver,
            events(&[
                ("fixed", "2.1.0"),
                ("introduced", "2.0.0"),
                ("fixed", "1.2.0"),
                ("introduced", "1.0.0"),
            ]),
            &mut unreadable,
        )
        .unwrap();
        let v = |s: &str| Scheme::Semver.parse(s).unwrap();
        assert!(range.contains(&v("1.1.0")));
        assert!(!range.contains(&v("1.5.0")));
        assert!(range.contains(&v("2.0.5")));
        assert!(!range.contains(&v("2.1.0")));
        // No introduced at all: not a range.
        assert!(
            Range::build(
                Scheme::Semver,
                events(&[("fixed", "1.0.0")]),
                &mut unreadable
            )
            .is_none()
        );
        assert_eq!(unreadable, 0);
    }
}
