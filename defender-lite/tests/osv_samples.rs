//! Matching against the real OSV records shipped in `relay/samples/feeds/osv` (Debian 12,
//! Alpine, PyPI, npm, Go, crates.io): package versions known affected or fixed per
//! each record, severities against the records' own ratings, fixed versions, aliases.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use defender_lite::osv::{Finding, NameMatch, Package, Severity, SourcePackage, VulnIndex};

fn samples() -> VulnIndex {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds/osv");
    let (index, stats) = VulnIndex::load_dir(&dir).unwrap();
    assert_eq!(stats.invalid, 0, "{:?}", stats.first_invalid);
    assert_eq!((stats.withdrawn, stats.duplicates), (0, 0));
    assert_eq!(stats.records as usize, index.stats().records);
    assert_eq!(index.stats().unreadable_versions, 0);
    index
}

/// (id, fixed) of each finding.
fn found<'a>(findings: &[Finding<'a>]) -> Vec<(&'a str, Option<&'a str>)> {
    findings
        .iter()
        .map(|f| (f.vulnerability.id.as_str(), f.fixed))
        .collect()
}

fn lookup<'a>(
    index: &'a VulnIndex,
    ecosystem: &str,
    name: &str,
    version: &str,
) -> Vec<(&'a str, Option<&'a str>)> {
    found(&index.lookup(ecosystem, name, version).unwrap())
}

#[test]
fn every_sample_record_is_indexed() {
    let index = samples();
    assert_eq!(index.stats().records, 38);
    let glibc = index.get("DEBIAN-CVE-2023-4911").unwrap();
    assert_eq!(glibc.aliases, ["CVE-2023-4911"]);
    assert!(
        glibc
            .summary
            .as_deref()
            .unwrap()
            .contains("Looney Tunables")
    );
    assert_eq!(
        index.get("RUSTSEC-2020-0071").unwrap().aliases,
        ["CVE-2020-26235", "GHSA-wcg3-cvx6-7396"]
    );
}

#[test]
fn debian_12() {
    let index = samples();
    // glibc is the source of libc6: Debian records name source packages.
    let libc6 = |version| Package {
        ecosystem: "Debian:12",
        name: "libc6",
        version,
        source: Some(SourcePackage {
            name: "glibc",
            version: None,
        }),
    };
    let findings = index.lookup_package(&libc6("2.36-9+deb12u1")).unwrap();
    assert_eq!(
        found(&findings),
        [("DEBIAN-CVE-2023-4911", Some("2.36-9+deb12u3"))]
    );
    assert_eq!(findings[0].matched, NameMatch::Source);
    assert_eq!(
        (findings[0].severity, findings[0].cvss_score),
        (Severity::High, Some(7.8))
    );
    for fixed in ["2.36-9+deb12u3", "2.36-9+deb12u4", "2.36-9+deb12u10"] {
        assert!(
            index.lookup_package(&libc6(fixed)).unwrap().is_empty(),
            "{fixed}"
        );
    }
    // Not for another release.
    let bullseye = Package {
        ecosystem: "Debian:11",
        ..libc6("2.31-13")
    };
    assert!(index.lookup_package(&bullseye).unwrap().is_empty());

    // openssl's fix is a `~deb12u2` revision: below 3.0.11-1 itself.
    assert_eq!(
        lookup(&index, "Debian:12", "openssl", "3.0.11-1~deb12u1"),
        [("DEBIAN-CVE-2023-5363", Some("3.0.11-1~deb12u2"))]
    );
    assert_eq!(
        lookup(&index, "Debian:12", "openssl", "3.0.9-1"),
        [("DEBIAN-CVE-2023-5363", Some("3.0.11-1~deb12u2"))]
    );
    for fixed in ["3.0.11-1~deb12u2", "3.0.11-1", "3.0.13-1~deb12u1"] {
        assert!(lookup(&index, "Debian:12", "openssl", fixed).is_empty());
    }
    // openssh has an epoch: 9.9p1 without it is older than 1:9.2p1.
    assert_eq!(
        lookup(&index, "Debian:12", "openssh", "1:9.2p1-2+deb12u1"),
        [("DEBIAN-CVE-2023-48795", Some("1:9.2p1-2+deb12u2"))]
    );
    assert_eq!(lookup(&index, "Debian:12", "openssh", "9.9p1-1").len(), 1);
    assert!(lookup(&index, "Debian:12", "openssh", "1:9.2p1-2+deb12u2").is_empty());
    assert_eq!(
        lookup(&index, "Debian:12", "curl", "7.88.1-10+deb12u3"),
        [("DEBIAN-CVE-2023-38545", Some("7.88.1-10+deb12u4"))]
    );
    assert!(lookup(&index, "Debian:12", "curl", "7.88.1-10+deb12u10").is_empty());
    assert_eq!(
        lookup(&index, "Debian:12", "tar", "1.34+dfsg-1.2"),
        [("DEBIAN-CVE-2022-48303", Some("1.34+dfsg-1.2+deb12u1"))]
    );
    // perl's record has no vector: the severity is its database's word.
    let perl = index.lookup("Debian:12", "perl", "5.36.0-7").unwrap();
    assert_eq!(
        (perl[0].severity, perl[0].cvss_score),
        (Severity::High, None)
    );
}

#[test]
fn alpine() {
    let index = samples();
    assert_eq!(
        lookup(&index, "Alpine:v3.18", "openssl", "3.1.0-r0"),
        [
            ("ALPINE-CVE-2023-0464", Some("3.1.0-r1")),
            ("ALPINE-CVE-2023-2650", Some("3.1.1-r0")),
        ]
    );
    assert_eq!(
        lookup(&index, "Alpine:v3.18", "openssl", "3.1.0-r1"),
        [("ALPINE-CVE-2023-2650", Some("3.1.1-r0"))]
    );
    assert!(lookup(&index, "Alpine:v3.18", "openssl", "3.1.1-r0").is_empty());
    // The v3.18 records say nothing of v3.19, which has its own.
    for ecosystem in ["Alpine:v3.19", "Alpine:3.19"] {
        assert_eq!(
            lookup(&index, ecosystem, "openssl", "3.1.3-r0"),
            [("ALPINE-CVE-2023-5363", Some("3.1.4-r0"))]
        );
    }
    assert!(lookup(&index, "Alpine:v3.19", "openssl", "3.1.4-r0").is_empty());
    assert_eq!(
        lookup(&index, "Alpine:v3.19", "curl", "8.3.0-r0"),
        [("ALPINE-CVE-2023-38545", Some("8.4.0-r0"))]
    );
    assert!(lookup(&index, "Alpine:v3.19", "curl", "8.4.0-r0").is_empty());
    assert_eq!(lookup(&index, "Alpine:v3.18", "curl", "7.88.1-r1").len(), 1);
    let curl = index.lookup("Alpine:v3.19", "curl", "8.3.0-r0").unwrap();
    assert_eq!(
        (curl[0].severity, curl[0].cvss_score),
        (Severity::Critical, Some(9.8))
    );
}

#[test]
fn pypi() {
    let index = samples();
    assert_eq!(
        lookup(&index, "PyPI", "requests", "2.30.0"),
        [
            ("GHSA-9wx4-h78v-vm56", Some("2.32.2")),
            ("GHSA-j8r2-6x86-q33q", Some("2.31.0")),
        ]
    );
    assert_eq!(
        lookup(&index, "PyPI", "requests", "2.31.0"),
        [("GHSA-9wx4-h78v-vm56", Some("2.32.2"))]
    );
    // Before 2.3.0 the proxy leak was not there yet.
    assert_eq!(
        lookup(&index, "PyPI", "Requests", "2.2.1"),
        [("GHSA-9wx4-h78v-vm56", Some("2.32.2"))]
    );
    assert!(lookup(&index, "PyPI", "requests", "2.32.2").is_empty());
    // One record names `jinja2`, the other `Jinja2`: one PEP 503 name.
    for name in ["Jinja2", "jinja2", "JINJA2"] {
        assert_eq!(
            lookup(&index, "PyPI", name, "3.1.2"),
            [
                ("GHSA-h5c8-rqwp-cp95", Some("3.1.3")),
                ("GHSA-h75v-3vvj-5mfj", Some("3.1.4")),
            ]
        );
    }
    assert_eq!(
        lookup(&index, "PyPI", "jinja2", "3.1.3"),
        [("GHSA-h75v-3vvj-5mfj", Some("3.1.4"))]
    );
    // urllib3 records have an entry per branch; the fix reported is the branch's.
    assert_eq!(
        lookup(&index, "PyPI", "urllib3", "1.26.16"),
        [
            ("GHSA-34jh-p97f-mpxf", Some("1.26.19")),
            ("GHSA-v845-jxx5-vc9f", Some("1.26.17")),
        ]
    );
    assert_eq!(
        lookup(&index, "PyPI", "urllib3", "2.0.5"),
        [
            ("GHSA-34jh-p97f-mpxf", Some("2.2.2")),
            ("GHSA-v845-jxx5-vc9f", Some("2.0.6")),
        ]
    );
    assert!(lookup(&index, "PyPI", "urllib3", "2.2.2").is_empty());
    // certifi's calendar versions, written with leading zeros in the record.
    assert_eq!(
        lookup(&index, "PyPI", "certifi", "2022.12.7"),
        [("GHSA-xqr8-7jwr-rhp7", Some("2023.07.22"))]
    );
    assert!(lookup(&index, "PyPI", "certifi", "2023.7.22").is_empty());
    assert!(lookup(&index, "PyPI", "certifi", "2015.4.1").is_empty());
    assert_eq!(lookup(&index, "PyPI", "setuptools", "65.5.0").len(), 1);
    assert!(lookup(&index, "PyPI", "setuptools", "65.5.1").is_empty());
}

#[test]
fn npm() {
    let index = samples();
    assert_eq!(
        lookup(&index, "npm", "minimist", "1.2.5"),
        [("GHSA-xvch-5gv4-984h", Some("1.2.6"))]
    );
    assert_eq!(
        lookup(&index, "npm", "minimist", "0.0.8"),
        [("GHSA-xvch-5gv4-984h", Some("0.2.4"))]
    );
    for fixed in ["0.2.4", "0.2.5", "1.2.6", "1.2.8"] {
        assert!(
            lookup(&index, "npm", "minimist", fixed).is_empty(),
            "{fixed}"
        );
    }
    for name in ["lodash", "lodash-es"] {
        assert_eq!(
            lookup(&index, "npm", name, "4.17.20"),
            [("GHSA-35jh-r3h4-6jhm", Some("4.17.21"))]
        );
    }
    for (version, fixed) in [("7.5.1", "7.5.2"), ("6.3.0", "6.3.1"), ("5.7.1", "5.7.2")] {
        assert_eq!(
            lookup(&index, "npm", "semver", version),
            [("GHSA-c2qf-rxjj-qqgw", Some(fixed))]
        );
    }
    assert!(lookup(&index, "npm", "semver", "7.5.2").is_empty());
    // express 5's pre-releases have their own range.
    assert_eq!(
        lookup(&index, "npm", "express", "5.0.0-beta.1"),
        [("GHSA-rv95-896h-c2vc", Some("5.0.0-beta.3"))]
    );
    assert!(lookup(&index, "npm", "express", "5.0.0").is_empty());
    assert_eq!(lookup(&index, "npm", "express", "4.18.2").len(), 1);
    assert!(lookup(&index, "npm", "express", "4.19.2").is_empty());
    let cookie = index.lookup("npm", "cookie", "0.6.0").unwrap();
    assert_eq!(
        (cookie[0].severity, cookie[0].cvss_score),
        (Severity::Low, None)
    );
}

#[test]
fn go() {
    let index = samples();
    // The toolchain, as a binary reports it.
    assert_eq!(
        lookup(&index, "Go", "stdlib", "go1.18.5"),
        [("GO-2022-0969", Some("1.18.6"))]
    );
    assert_eq!(
        lookup(&index, "Go", "stdlib", "go1.17.9"),
        [
            ("GO-2022-0493", Some("1.17.10")),
            ("GO-2022-0969", Some("1.18.6")),
        ]
    );
    assert_eq!(
        lookup(&index, "Go", "stdlib", "go1.19"),
        [("GO-2022-0969", Some("1.19.1"))]
    );
    assert_eq!(
        lookup(&index, "Go", "stdlib", "go1.19rc2"),
        [("GO-2022-0969", Some("1.19.1"))]
    );
    assert!(lookup(&index, "Go", "stdlib", "go1.19.1").is_empty());
    // Modules at pseudo-versions, as go.sum and build info write them.
    assert_eq!(
        lookup(
            &index,
            "Go",
            "golang.org/x/crypto",
            "v0.0.0-20211202192323-5770296d904e"
        ),
        [("GO-2021-0356", Some("0.0.0-20220314234659-1baeb1ce4c0b"))]
    );
    assert_eq!(
        lookup(
            &index,
            "Go",
            "golang.org/x/crypto",
            "v0.0.0-20200115085410-6d4e4cb37c7d"
        )
        .len(),
        3
    );
    assert!(lookup(&index, "Go", "golang.org/x/crypto", "v0.1.0").is_empty());
    assert_eq!(
        lookup(
            &index,
            "Go",
            "golang.org/x/net",
            "v0.0.0-20211209124913-491a49abca63"
        ),
        [("GO-2022-0969", Some("0.0.0-20220906165146-f3363e06e74c"))]
    );
}

#[test]
fn crates_io() {
    let index = samples();
    assert_eq!(
        lookup(&index, "crates.io", "time", "0.1.43"),
        [("RUSTSEC-2020-0071", Some("0.2.0"))]
    );
    assert_eq!(
        lookup(&index, "crates.io", "time", "0.2.7"),
        [("RUSTSEC-2020-0071", Some("0.2.23"))]
    );
    for fixed in ["0.2.0", "0.2.1", "0.2.6", "0.2.23", "0.3.36"] {
        assert!(
            lookup(&index, "crates.io", "time", fixed).is_empty(),
            "{fixed}"
        );
    }
    assert_eq!(
        lookup(&index, "crates.io", "smallvec", "1.6.0"),
        [("RUSTSEC-2021-0003", Some("1.6.1"))]
    );
    assert!(lookup(&index, "crates.io", "smallvec", "0.6.2").is_empty());
    assert_eq!(
        lookup(&index, "crates.io", "h2", "0.3.16"),
        [
            ("RUSTSEC-2023-0034", Some("0.3.17")),
            ("RUSTSEC-2024-0003", Some("0.3.24")),
        ]
    );
    assert_eq!(
        lookup(&index, "crates.io", "h2", "0.4.1"),
        [("RUSTSEC-2024-0003", Some("0.4.2"))]
    );
    assert_eq!(lookup(&index, "crates.io", "hyper", "0.14.9").len(), 2);
    assert!(lookup(&index, "crates.io", "hyper", "0.14.10").is_empty());
    assert_eq!(
        lookup(&index, "crates.io", "regex", "1.5.4"),
        [("RUSTSEC-2022-0013", Some("1.5.5"))]
    );
}

#[test]
fn severities_agree_with_the_records_own_ratings() {
    // Where a sample record has both a CVSS vector and its database's word, the level
    // computed from the vector is the word's (GitHub, Alpine and Debian rate from the
    // same vector).
    let index = samples();
    let word = |id: &str| -> Severity {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds/osv");
        for entry in std::fs::read_dir(dir).unwrap() {
            for line in std::fs::read_to_string(entry.unwrap().path())
                .unwrap()
                .lines()
            {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                if record["id"] == id {
                    return record["database_specific"]["severity"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                }
            }
        }
        panic!("{id} not in the samples");
    };
    let mut checked = 0;
    for (ecosystem, name, version) in [
        ("Debian:12", "glibc", "0"),
        ("Debian:12", "openssl", "0"),
        ("Debian:12", "curl", "0"),
        ("Debian:12", "openssh", "0"),
        ("Debian:12", "tar", "0"),
        ("Alpine:v3.18", "openssl", "0"),
        ("Alpine:v3.18", "curl", "0"),
        ("Alpine:v3.19", "openssl", "0"),
        ("Alpine:v3.19", "curl", "0"),
        ("PyPI", "requests", "2.30.0"),
        ("PyPI", "urllib3", "2.0.0"),
        ("PyPI", "jinja2", "0"),
        ("PyPI", "setuptools", "0"),
        ("PyPI", "certifi", "2020.1.1"),
        ("npm", "minimist", "1.0.0"),
        ("npm", "lodash", "0.0.1"),
        ("npm", "semver", "7.0.0"),
        ("npm", "express", "4.0.0"),
        ("npm", "braces", "0.0.1"),
        ("Go", "stdlib", "1.0.0"),
        (
            "Go",
            "golang.org/x/crypto",
            "v0.0.0-20190101000000-000000000000",
        ),
        ("crates.io", "time", "0.1.0"),
        ("crates.io", "smallvec", "1.0.0"),
        ("crates.io", "hyper", "0.14.0"),
        ("crates.io", "regex", "1.0.0"),
    ] {
        for finding in index.lookup(ecosystem, name, version).unwrap() {
            if finding.cvss_score.is_some() {
                assert_eq!(
                    finding.severity,
                    word(&finding.vulnerability.id),
                    "{} scored {:?}",
                    finding.vulnerability.id,
                    finding.cvss_score
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "{checked} records checked");
}
