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
//! Records are read with the format library's OSV types (`relay::bundle::osv`, re-exported
//! here), the same the relay validates bundles with: this module gives them meaning.
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

mod index;
mod range;
mod record;
mod severity;
#[cfg(test)]
mod tests;

pub use index::{
    Added, Finding, IndexStats, LoadError, LoadStats, NameMatch, Package, SourcePackage,
    UnreadableVersion, VulnIndex, VulnIndexBuilder, Vulnerability,
};
pub use record::{
    OsvAffected, OsvEvent, OsvPackage, OsvRange, OsvRecord, OsvSeverity, RangeType, Specific,
};
pub use severity::{CvssError, Severity, UnknownSeverity, cvss_base_score};

use crate::version::Scheme;

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
