//! Version ordering per packaging ecosystem, behind one small API: [`Scheme`] names an
//! ordering, [`Scheme::parse`] turns a string into a [`Version`], and [`compare`] orders
//! two strings.
//!
//! Each scheme follows the tool that decides the order in its ecosystem, not a
//! description of it: `dpkg` (cross-checked against the `dpkg` binary in the tests),
//! `apk-tools` 3, `rpm`'s `rpmvercmp`, PEP 440 (`pep440_rs`, as in uv), SemVer 2.0
//! precedence (`semver`) and the Go toolchain's module and release versions. Which
//! ecosystem uses which scheme is `osv`'s business ([`crate::osv::scheme_for`]).
//!
//! Parsing is where a scheme says no: every scheme refuses an empty string, and each
//! refuses what its tool refuses (a dpkg epoch that is not a number, a SemVer with a
//! leading zero). What a tool merely warns about and still orders (a dpkg upstream
//! version starting with a letter, an apk version with an unknown suffix), we order
//! the same way it does.

/// `PartialEq`, `Eq` and `PartialOrd` from a scheme's `Ord`: two versions are equal when
/// their scheme orders them equal (`1.0` and `1.0.0`, `1:2` and `1:2-0`), not when their
/// text is.
macro_rules! equal_by_order {
    ($($version:ty),+) => {$(
        impl PartialOrd for $version {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl PartialEq for $version {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other) == std::cmp::Ordering::Equal
            }
        }

        impl Eq for $version {}
    )+};
}

mod apk;
mod dpkg;
mod generic;
mod pep440;
mod rpm;
mod semantic;

use std::cmp::Ordering;
use std::fmt;

pub use apk::ApkVersion;
pub use dpkg::DpkgVersion;
pub use generic::GenericVersion;
pub use pep440::Pep440Version;
pub use rpm::{RpmVersion, rpmvercmp};
pub use semantic::{SemverVersion, go_toolchain_semver, is_go_semver};

/// A version ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Debian and Ubuntu: `[epoch:]upstream[-revision]`, dpkg's `verrevcmp`.
    Dpkg,
    /// Alpine, Wolfi, Chainguard: apk-tools' `digit{.digit}{letter}{_suffix{n}}{~hash}{-rN}`.
    Apk,
    /// Red Hat and its rebuilds, SUSE: `[epoch:]version[-release]`, rpm's `rpmvercmp`.
    Rpm,
    /// Python packages: PEP 440.
    Pep440,
    /// npm, crates.io and OSV `SEMVER` ranges: SemVer 2.0 precedence (build metadata
    /// ignored). A leading `v` or `=` is dropped and a missing minor or patch number
    /// reads as 0 (`1.2` is `1.2.0`), as npm's loose mode and OSV's own matcher do.
    Semver,
    /// Go modules (`v1.2.3`, pseudo-versions `v0.0.0-20220906165146-f3363e06e74c`,
    /// `+incompatible`) and Go releases (`go1.21.0`, `go1.20`, `go1.21rc2`), as SemVer.
    Go,
    /// Anything else: runs of digits compare as numbers, runs of letters as
    /// case-insensitive words, a version that ends where the other goes on with a
    /// letter (`1.0` vs `1.0-beta1`) is the greater one. An approximation for
    /// ecosystems without a comparator of their own here (Maven, NuGet, RubyGems, ...).
    Generic,
}

impl Scheme {
    /// Every scheme, for tests and listings.
    pub const ALL: [Scheme; 7] = [
        Scheme::Dpkg,
        Scheme::Apk,
        Scheme::Rpm,
        Scheme::Pep440,
        Scheme::Semver,
        Scheme::Go,
        Scheme::Generic,
    ];

    /// The scheme's short name, as in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Dpkg => "dpkg",
            Scheme::Apk => "apk",
            Scheme::Rpm => "rpm",
            Scheme::Pep440 => "pep440",
            Scheme::Semver => "semver",
            Scheme::Go => "go",
            Scheme::Generic => "generic",
        }
    }

    /// Parses `text` as a version of this scheme.
    pub fn parse(self, text: &str) -> Result<Version, VersionError> {
        if text.trim().is_empty() {
            return Err(VersionError::Empty { scheme: self });
        }
        let invalid = |reason: String| VersionError::Invalid {
            scheme: self,
            version: text.to_owned(),
            reason,
        };
        Ok(match self {
            Scheme::Dpkg => Version::Dpkg(text.parse().map_err(invalid)?),
            Scheme::Apk => Version::Apk(text.parse().map_err(invalid)?),
            Scheme::Rpm => Version::Rpm(text.parse().map_err(invalid)?),
            Scheme::Pep440 => Version::Pep440(text.parse().map_err(invalid)?),
            Scheme::Semver => Version::Semver(SemverVersion::parse(text).map_err(invalid)?),
            Scheme::Go => Version::Go(SemverVersion::parse_go(text).map_err(invalid)?),
            Scheme::Generic => Version::Generic(text.parse().map_err(invalid)?),
        })
    }

    /// Orders two version strings of this scheme.
    pub fn compare(self, a: &str, b: &str) -> Result<Ordering, VersionError> {
        let a = self.parse(a)?;
        let b = self.parse(b)?;
        Ok(a.cmp_same_scheme(&b))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Orders two version strings under `scheme`.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Result<Ordering, VersionError> {
    scheme.compare(a, b)
}

/// A version string that could not be read under a scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("empty {scheme} version")]
    Empty { scheme: Scheme },
    #[error("{scheme} version {version:?}: {reason}")]
    Invalid {
        scheme: Scheme,
        version: String,
        reason: String,
    },
}

/// A parsed version of one scheme. Versions of the same scheme are totally ordered;
/// versions of different schemes are not comparable (`partial_cmp` is `None`).
#[derive(Debug, Clone)]
pub enum Version {
    Dpkg(DpkgVersion),
    Apk(ApkVersion),
    Rpm(RpmVersion),
    Pep440(Pep440Version),
    Semver(SemverVersion),
    Go(SemverVersion),
    Generic(GenericVersion),
}

impl Version {
    /// The scheme this version was parsed under.
    pub fn scheme(&self) -> Scheme {
        match self {
            Version::Dpkg(_) => Scheme::Dpkg,
            Version::Apk(_) => Scheme::Apk,
            Version::Rpm(_) => Scheme::Rpm,
            Version::Pep440(_) => Scheme::Pep440,
            Version::Semver(_) => Scheme::Semver,
            Version::Go(_) => Scheme::Go,
            Version::Generic(_) => Scheme::Generic,
        }
    }

    /// Orders two versions of the same scheme; versions of different schemes order by
    /// scheme, which is arbitrary but keeps this total (use `partial_cmp` to tell).
    fn cmp_same_scheme(&self, other: &Version) -> Ordering {
        match (self, other) {
            (Version::Dpkg(a), Version::Dpkg(b)) => a.cmp(b),
            (Version::Apk(a), Version::Apk(b)) => a.cmp(b),
            (Version::Rpm(a), Version::Rpm(b)) => a.cmp(b),
            (Version::Pep440(a), Version::Pep440(b)) => a.cmp(b),
            (Version::Semver(a), Version::Semver(b)) | (Version::Go(a), Version::Go(b)) => a.cmp(b),
            (Version::Generic(a), Version::Generic(b)) => a.cmp(b),
            _ => self.scheme().cmp(&other.scheme()),
        }
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.partial_cmp(other) == Some(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self.scheme() == other.scheme()).then(|| self.cmp_same_scheme(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Dpkg(v) => v.fmt(f),
            Version::Apk(v) => v.fmt(f),
            Version::Rpm(v) => v.fmt(f),
            Version::Pep440(v) => v.fmt(f),
            Version::Semver(v) | Version::Go(v) => v.fmt(f),
            Version::Generic(v) => v.fmt(f),
        }
    }
}

/// Compares two runs of ASCII digits as numbers of any size (leading zeros ignored).
fn compare_digit_runs(a: &[u8], b: &[u8]) -> Ordering {
    fn trim(s: &[u8]) -> &[u8] {
        let zeros = s.iter().take_while(|&&d| d == b'0').count();
        &s[zeros..]
    }
    let (a, b) = (trim(a), trim(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_refuses_an_empty_version() {
        for scheme in Scheme::ALL {
            assert!(
                matches!(scheme.parse("  "), Err(VersionError::Empty { scheme: s }) if s == scheme),
                "{scheme}"
            );
        }
    }

    #[test]
    fn versions_of_different_schemes_do_not_compare() {
        let a = Scheme::Semver.parse("1.0.0").unwrap();
        let b = Scheme::Generic.parse("1.0.0").unwrap();
        assert_eq!(a.partial_cmp(&b), None);
        assert_ne!(a, b);
        assert_eq!(a, Scheme::Semver.parse("v1.0").unwrap());
    }

    #[test]
    fn compare_orders_strings() {
        assert_eq!(compare(Scheme::Dpkg, "1.0~rc1", "1.0"), Ok(Ordering::Less));
        assert_eq!(
            compare(Scheme::Rpm, "1.0^git1", "1.0"),
            Ok(Ordering::Greater)
        );
        assert!(matches!(
            compare(Scheme::Semver, "1.0.0", "banana"),
            Err(VersionError::Invalid {
                scheme: Scheme::Semver,
                ..
            })
        ));
    }
}
