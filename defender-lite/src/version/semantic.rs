//! SemVer 2.0 versions (npm, crates.io, OSV `SEMVER` ranges) and Go versions, ordered
//! by SemVer precedence: build metadata does not count (`1.0.0+a == 1.0.0+b`).
//!
//! Parsing is the `semver` crate's, after two allowances that npm's loose mode and
//! OSV's own matcher make too: a leading `v` or `=` is dropped, and a missing minor or
//! patch number reads as 0 (`1.2` is `1.2.0`, `1` is `1.0.0`). Go versions also drop a
//! leading `go` and read the toolchain's release names (`go1.20` is `1.20.0`, `go1.21rc2`
//! is `1.21.0-rc.2`); module versions, pseudo-versions
//! (`v0.0.0-20220906165146-f3363e06e74c`) and `+incompatible` are SemVer already.

use std::cmp::Ordering;
use std::fmt;

/// A SemVer version ordered by precedence.
#[derive(Debug, Clone)]
pub struct SemverVersion(::semver::Version);

impl SemverVersion {
    /// Parses a SemVer version, with the allowances described in the module docs.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text
            .strip_prefix('v')
            .or_else(|| text.strip_prefix('='))
            .unwrap_or(text);
        parse_padded(text).map(SemverVersion)
    }

    /// Parses a Go module or toolchain version.
    pub fn parse_go(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text
            .strip_prefix("go")
            .or_else(|| text.strip_prefix('v'))
            .unwrap_or(text);
        if let Some(release) = go_release(text) {
            return parse_padded(&release).map(SemverVersion);
        }
        parse_padded(text).map(SemverVersion)
    }

    /// The version as the `semver` crate holds it.
    pub fn as_semver(&self) -> &::semver::Version {
        &self.0
    }
}

/// A Go toolchain's version (a build info's `go` line, `runtime.Version()`) as OSV names
/// the `stdlib` package's: `go1.20.12` -> `1.20.12`, `go1.21` -> `1.21.0`, `go1.21rc2` ->
/// `1.21.0-rc.2`, `go1.22.1 X:boringcrypto` -> `1.22.1`. Development toolchains and
/// release words Go does not use (`go1.21foo1`) -> `None`, as [`SemverVersion::parse_go`]
/// refuses them.
pub fn go_toolchain_semver(go_version: &str) -> Option<String> {
    let version = go_version.split_whitespace().next()?.strip_prefix("go")?;
    if version.contains(|c: char| c.is_ascii_alphabetic()) {
        return go_release(version);
    }
    let parts: Vec<&str> = version.split('.').collect();
    let numbers = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numbers || parts.len() > 3 {
        return None;
    }
    let mut release = version.to_owned();
    for _ in parts.len()..3 {
        release.push_str(".0");
    }
    Some(release)
}

/// Whether `version` is a semantic version as Go's `golang.org/x/mod/semver` accepts one,
/// the `v` optional: `1`, `1.2` or `1.2.3`, the last with an optional `-prerelease` and
/// `+build` (stricter than [`SemverVersion::parse_go`], which orders what OSV writes).
pub fn is_go_semver(version: &str) -> bool {
    let version = version.strip_prefix('v').unwrap_or(version);
    let (version, build) = match version.split_once('+') {
        Some((version, build)) => (version, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let number = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    let identifiers = |s: &str| {
        s.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() <= 3
        && parts.iter().all(|p| number(p))
        && (parts.len() == 3 || (pre.is_none() && build.is_none()))
        && pre.is_none_or(|pre| {
            // Numeric identifiers have no leading zeros; others are alphanumerics and `-`.
            identifiers(pre)
                && pre
                    .split('.')
                    .all(|id| !id.bytes().all(|b| b.is_ascii_digit()) || number(id))
        })
        && build.is_none_or(identifiers)
}

/// `1.21rc2` -> `1.21.0-rc.2`, `1.19beta1` -> `1.19.0-beta.1`: Go's pre-release
/// toolchain names. Anything else is left to the SemVer parser.
fn go_release(text: &str) -> Option<String> {
    let at = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (core, tag) = text.split_at(at);
    let digits = tag.find(|c: char| c.is_ascii_digit())?;
    let (word, number) = tag.split_at(digits);
    let numeric_core = !core.is_empty()
        && core.split('.').count() <= 3
        && core
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    let known = matches!(word, "alpha" | "beta" | "rc");
    let numeric_tail = number.bytes().all(|b| b.is_ascii_digit());
    (numeric_core && known && numeric_tail).then(|| {
        let mut core = core.to_owned();
        while core.split('.').count() < 3 {
            core.push_str(".0");
        }
        format!("{core}-{word}.{number}")
    })
}

/// Parses with the `semver` crate, first padding a short numeric core (`1.2-rc.1` ->
/// `1.2.0-rc.1`).
fn parse_padded(text: &str) -> Result<::semver::Version, String> {
    let strict = ::semver::Version::parse(text);
    if let Ok(version) = strict {
        return Ok(version);
    }
    let split = text.find(['-', '+']).unwrap_or(text.len());
    let (core, tail) = text.split_at(split);
    let parts = core.split('.').count();
    if parts < 3
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        let mut padded = core.to_owned();
        for _ in parts..3 {
            padded.push_str(".0");
        }
        padded.push_str(tail);
        if let Ok(version) = ::semver::Version::parse(&padded) {
            return Ok(version);
        }
    }
    strict.map_err(|e| e.to_string())
}

impl Ord for SemverVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }
}

equal_by_order!(SemverVersion);

impl fmt::Display for SemverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn semver(text: &str) -> SemverVersion {
        SemverVersion::parse(text).unwrap()
    }

    fn go(text: &str) -> SemverVersion {
        SemverVersion::parse_go(text).unwrap()
    }

    #[test]
    fn precedence_ignores_build_metadata() {
        assert_eq!(semver("1.0.0+a"), semver("1.0.0+b"));
        assert!(semver("1.0.0-alpha") < semver("1.0.0-alpha.1"));
        assert!(semver("1.0.0-rc.1") < semver("1.0.0"));
    }

    #[test]
    fn allowances() {
        assert_eq!(semver("v1.2.3"), semver("1.2.3"));
        assert_eq!(semver("=1.2.3"), semver("1.2.3"));
        assert_eq!(semver("1.2"), semver("1.2.0"));
        assert_eq!(semver("1"), semver("1.0.0"));
        assert_eq!(semver("1.2-rc.1"), semver("1.2.0-rc.1"));
        for bad in ["01.2.3", "1.2.3.4", "x", "1.2.x", "v", "1..2"] {
            assert!(SemverVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_versions() {
        assert_eq!(go("go1.20"), go("1.20.0"));
        assert_eq!(go("go1.21rc2"), go("1.21.0-rc.2"));
        assert!(go("go1.21rc2") < go("go1.21.0"));
        assert!(go("go1.19beta1") < go("go1.19rc1"));
        assert!(go("v0.0.0-20211209124913-491a49abca63") < go("0.0.0-20220906165146-f3363e06e74c"));
        assert!(go("v0.0.0-20220906165146-f3363e06e74c") < go("v0.1.0"));
        assert_eq!(go("v2.0.0+incompatible"), go("2.0.0"));
    }

    #[test]
    fn go_toolchain_names() {
        let check = |go: &str, expected: Option<&str>| {
            assert_eq!(go_toolchain_semver(go).as_deref(), expected, "{go}");
            // What it names, the ordering reads as the same version.
            if let Some(expected) = expected {
                assert_eq!(
                    SemverVersion::parse_go(go.split_whitespace().next().unwrap()).unwrap(),
                    semver(expected),
                    "{go}"
                );
            }
        };
        check("go1.20.12", Some("1.20.12"));
        check("go1.21", Some("1.21.0"));
        check("go1", Some("1.0.0"));
        check("go1.21rc2", Some("1.21.0-rc.2"));
        check("go1.19beta1", Some("1.19.0-beta.1"));
        check("go1.22.1 X:boringcrypto", Some("1.22.1"));
        check("devel go1.23-abcdef", None);
        check("go1.21foo2", None);
        check("go1.2.3.4", None);
        check("go", None);
        check("gox.y", None);
    }

    #[test]
    fn go_semver_acceptance() {
        for good in [
            "v1.2.3-rc.1+build.5",
            "1",
            "1.2",
            "v1.2.3",
            "0.0.0-20220906165146-f3363e06e74c",
        ] {
            assert!(is_go_semver(good), "{good}");
        }
        for bad in [
            "1.2.3.4",
            "v1.2.3-",
            "01.2.3",
            "1.2-rc.1",
            "1.2.3-rc.01",
            "dev",
            "",
        ] {
            assert!(!is_go_semver(bad), "{bad}");
        }
    }
}
