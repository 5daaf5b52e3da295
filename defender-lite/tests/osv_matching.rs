//! OSV matching rules, one test each, on small hand-made records: events and their
//! order, `last_affected`, `limit`, `versions` lists, ignored `GIT` ranges, withdrawn
//! and duplicate records, severity (CVSS scores checked against published ones),
//! the fixed version reported, ecosystems, releases, names and source packages.

#![allow(clippy::unwrap_used)]

use defender_lite::osv::{
    Finding, NameMatch, Package, Severity, SourcePackage, VulnIndex, VulnIndexBuilder,
    cvss_base_score,
};
use defender_lite::version::VersionError;
use serde_json::{Value, json};

/// A record with one affected package; `extra` fields are merged into the record.
fn record(id: &str, ecosystem: &str, name: &str, ranges: Value, extra: Value) -> Value {
    let mut record = json!({
        "id": id,
        "modified": "2024-01-01T00:00:00Z",
        "affected": [{ "package": { "ecosystem": ecosystem, "name": name }, "ranges": ranges }],
    });
    if let (Some(record), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            record.insert(k.clone(), v.clone());
        }
    }
    record
}

fn range(kind: &str, events: Value) -> Value {
    json!([{ "type": kind, "events": events }])
}

fn index(records: &[Value]) -> VulnIndex {
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    let mut builder = VulnIndexBuilder::new();
    let stats = builder.add_jsonl(jsonl.as_bytes()).unwrap();
    assert_eq!(stats.invalid, 0, "{:?}", stats.first_invalid);
    builder.build()
}

fn ids<'a>(findings: &[Finding<'a>]) -> Vec<&'a str> {
    findings
        .iter()
        .map(|f| f.vulnerability.id.as_str())
        .collect()
}

/// Which of `versions` the index finds affected by `id` (for `ecosystem`/`name`).
fn affected(index: &VulnIndex, ecosystem: &str, name: &str, versions: &[&str]) -> Vec<String> {
    versions
        .iter()
        .filter(|v| !index.lookup(ecosystem, name, v).unwrap().is_empty())
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn introduced_zero_and_fixed() {
    let index = index(&[record(
        "X-1",
        "npm",
        "pkg",
        range(
            "SEMVER",
            json!([{ "introduced": "0" }, { "fixed": "1.2.0" }]),
        ),
        json!({}),
    )]);
    assert_eq!(
        affected(
            &index,
            "npm",
            "pkg",
            &["0.0.1", "1.1.9", "1.2.0-rc.1", "1.2.0", "1.2.1", "2.0.0"]
        ),
        ["0.0.1", "1.1.9", "1.2.0-rc.1"]
    );
    let found = index.lookup("npm", "pkg", "1.0.0").unwrap();
    assert_eq!(found[0].fixed, Some("1.2.0"));
    assert_eq!(found[0].matched, NameMatch::Package);
}

#[test]
fn events_are_sorted_before_walking() {
    // Two intervals written backwards: [1.0, 1.5) and [2.0, 2.3).
    let index = index(&[record(
        "X-1",
        "crates.io",
        "c",
        range(
            "SEMVER",
            json!([{ "fixed": "2.3.0" }, { "introduced": "2.0.0" }, { "fixed": "1.5.0" }, { "introduced": "1.0.0" }]),
        ),
        json!({}),
    )]);
    assert_eq!(
        affected(
            &index,
            "crates.io",
            "c",
            &[
                "0.9.0", "1.0.0", "1.4.9", "1.5.0", "1.9.9", "2.0.0", "2.2.0", "2.3.0"
            ]
        ),
        ["1.0.0", "1.4.9", "2.0.0", "2.2.0"]
    );
    // The reported fix is the smallest one above the installed version.
    assert_eq!(
        index.lookup("crates.io", "c", "1.1.0").unwrap()[0].fixed,
        Some("1.5.0")
    );
    assert_eq!(
        index.lookup("crates.io", "c", "2.1.0").unwrap()[0].fixed,
        Some("2.3.0")
    );
}

#[test]
fn an_interval_introduced_and_fixed_at_one_version_is_empty() {
    let index = index(&[record(
        "X-1",
        "PyPI",
        "p",
        range(
            "ECOSYSTEM",
            json!([{ "introduced": "1.0" }, { "fixed": "1.0" }]),
        ),
        json!({}),
    )]);
    assert!(affected(&index, "PyPI", "p", &["0.9", "1.0", "1.1"]).is_empty());
}

#[test]
fn last_affected_is_inclusive() {
    let index = index(&[record(
        "X-1",
        "Debian:12",
        "src",
        range(
            "ECOSYSTEM",
            json!([{ "introduced": "1.0-1" }, { "last_affected": "1.4-2" }]),
        ),
        json!({}),
    )]);
    assert_eq!(
        affected(
            &index,
            "Debian:12",
            "src",
            &["0.9-1", "1.0-1", "1.4-2", "1.4-2+deb12u1", "1.5-1"]
        ),
        ["1.0-1", "1.4-2"]
    );
    // Nothing fixes it: no fixed version to report.
    assert_eq!(
        index.lookup("Debian:12", "src", "1.2-1").unwrap()[0].fixed,
        None
    );
}

#[test]
fn limits_bound_the_range() {
    let index = index(&[
        record(
            "LIMITED",
            "npm",
            "a",
            range(
                "SEMVER",
                json!([{ "introduced": "0" }, { "limit": "2.0.0" }]),
            ),
            json!({}),
        ),
        // Below any one of several limits; `*` is no limit.
        record(
            "TWO-LIMITS",
            "npm",
            "b",
            range(
                "SEMVER",
                json!([{ "introduced": "1.0.0" }, { "limit": "1.5.0" }, { "limit": "3.0.0" }]),
            ),
            json!({}),
        ),
        record(
            "STAR",
            "npm",
            "c",
            range(
                "SEMVER",
                json!([{ "introduced": "1.0.0" }, { "limit": "*" }]),
            ),
            json!({}),
        ),
    ]);
    assert_eq!(
        affected(&index, "npm", "a", &["1.9.9", "2.0.0", "3.0.0"]),
        ["1.9.9"]
    );
    assert_eq!(
        affected(&index, "npm", "b", &["0.9.0", "1.6.0", "2.9.0", "3.0.0"]),
        ["1.6.0", "2.9.0"]
    );
    assert_eq!(
        affected(&index, "npm", "c", &["0.9.0", "1.0.0", "99.0.0"]),
        ["1.0.0", "99.0.0"]
    );
}

#[test]
fn explicit_versions_lists() {
    let mut listed = record("LISTED", "PyPI", "p", json!([]), json!({}));
    listed["affected"][0]["versions"] = json!(["1.0", "1.1.post1", "not a version"]);
    let index = index(&[listed]);
    // Compared under the ecosystem's scheme (1.0.0 is 1.0), or as text.
    assert_eq!(
        affected(
            &index,
            "PyPI",
            "p",
            &["1.0", "1.0.0", "1.1", "1.1-1", "1.2"]
        ),
        ["1.0", "1.0.0", "1.1-1"]
    );
    assert_eq!(index.stats().unreadable_versions, 1);
    // A listed version has no range, so no fix to report.
    assert_eq!(index.lookup("PyPI", "p", "1.0").unwrap()[0].fixed, None);
}

#[test]
fn git_ranges_are_ignored() {
    let mut git = record(
        "GIT-ONLY",
        "Go",
        "example.com/m",
        json!([{ "type": "GIT", "repo": "https://example.com/m", "events": [{ "introduced": "0" }, { "fixed": "abc123" }] }]),
        json!({}),
    );
    git["affected"][0]["versions"] = json!([]);
    let index = index(&[git]);
    assert!(
        index
            .lookup("Go", "example.com/m", "v1.0.0")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn withdrawn_records_are_ignored() {
    let live = record(
        "X-1",
        "npm",
        "p",
        range("SEMVER", json!([{ "introduced": "0" }])),
        json!({}),
    );
    let withdrawn = record(
        "X-2",
        "npm",
        "p",
        range("SEMVER", json!([{ "introduced": "0" }])),
        json!({ "withdrawn": "2024-02-01T00:00:00Z" }),
    );
    let index1 = index(&[live.clone(), withdrawn.clone()]);
    assert_eq!(ids(&index1.lookup("npm", "p", "1.0.0").unwrap()), ["X-1"]);
    // A withdrawn copy of a record retracts it.
    let mut retraction = live.clone();
    retraction["withdrawn"] = json!("2024-02-01T00:00:00Z");
    let mut builder = VulnIndexBuilder::new();
    let stats = builder
        .add_jsonl(format!("{live}\n{withdrawn}\n{retraction}\n").as_bytes())
        .unwrap();
    assert_eq!((stats.records, stats.withdrawn), (1, 2));
    // A copy older than the withdrawal, read after it, stays out.
    let stats = builder.add_jsonl(format!("{live}\n").as_bytes()).unwrap();
    assert_eq!((stats.records, stats.duplicates), (0, 1));
    assert!(
        builder
            .build()
            .lookup("npm", "p", "1.0.0")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_newest_copy_of_a_record_wins() {
    let old = record(
        "X-1",
        "npm",
        "p",
        range(
            "SEMVER",
            json!([{ "introduced": "0" }, { "fixed": "1.0.0" }]),
        ),
        json!({ "modified": "2024-01-01T00:00:00Z" }),
    );
    let new = record(
        "X-1",
        "npm",
        "p",
        range(
            "SEMVER",
            json!([{ "introduced": "0" }, { "fixed": "2.0.0" }]),
        ),
        json!({ "modified": "2024-03-01T12:00:00.5Z" }),
    );
    for order in [[&old, &new], [&new, &old]] {
        let mut builder = VulnIndexBuilder::new();
        let stats = builder
            .add_jsonl(format!("{}\n{}\n", order[0], order[1]).as_bytes())
            .unwrap();
        assert_eq!(stats.records + stats.duplicates, 2);
        let index = builder.build();
        assert_eq!(index.stats().records, 1);
        let found = index.lookup("npm", "p", "1.5.0").unwrap();
        assert_eq!(found[0].fixed, Some("2.0.0"));
    }
}

#[test]
fn severity_from_vectors_words_and_their_precedence() {
    let events = range("SEMVER", json!([{ "introduced": "0" }]));
    let mut per_package = record(
        "PER-PACKAGE",
        "npm",
        "p",
        events.clone(),
        json!({ "database_specific": { "severity": "LOW" } }),
    );
    per_package["affected"][0]["severity"] =
        json!([{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" }]);
    let mut ecosystem_word = record("ECOSYSTEM-WORD", "npm", "p", events.clone(), json!({}));
    ecosystem_word["affected"][0]["ecosystem_specific"] = json!({ "severity": "Important" });
    let index = index(&[
        record(
            "V3",
            "npm",
            "p",
            events.clone(),
            json!({
                "severity": [
                    { "type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:C/I:C/A:C" },
                    { "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H" },
                ],
                "database_specific": { "severity": "CRITICAL" },
            }),
        ),
        record(
            "V2",
            "npm",
            "p",
            events.clone(),
            json!({ "severity": [{ "type": "CVSS_V2", "score": "AV:N/AC:M/Au:N/C:N/I:P/A:N" }] }),
        ),
        record(
            "V4-AND-WORD",
            "npm",
            "p",
            events.clone(),
            json!({
                "severity": [{ "type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N" }],
                "database_specific": { "severity": "MODERATE" },
            }),
        ),
        record(
            "UBUNTU",
            "npm",
            "p",
            events.clone(),
            json!({ "severity": [{ "type": "Ubuntu", "score": "negligible" }] }),
        ),
        record(
            "NOTHING",
            "npm",
            "p",
            events.clone(),
            json!({ "database_specific": { "severity": 3, "cwe_ids": ["CWE-79"] } }),
        ),
        per_package,
        ecosystem_word,
    ]);
    let found = index.lookup("npm", "p", "1.0.0").unwrap();
    let got: Vec<(&str, Severity, Option<f64>)> = found
        .iter()
        .map(|f| (f.vulnerability.id.as_str(), f.severity, f.cvss_score))
        .collect();
    assert_eq!(
        got,
        [
            ("ECOSYSTEM-WORD", Severity::High, None),
            ("NOTHING", Severity::Unknown, None),
            // The package's own vector outranks the record's word.
            ("PER-PACKAGE", Severity::Critical, Some(9.8)),
            ("UBUNTU", Severity::Low, None),
            // v2 ratings: 4.3 is Medium.
            ("V2", Severity::Medium, Some(4.3)),
            // A v3 vector outranks v2 and the word.
            ("V3", Severity::Medium, Some(6.5)),
            ("V4-AND-WORD", Severity::Medium, None),
        ]
    );
}

#[test]
fn cvss_scores_match_published_ones() {
    // Vectors with the base scores NVD or GitHub publish for them (for the CVE named),
    // or FIRST's and NVD's calculators give.
    for (vector, published) in [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0), // CVE-2021-44228
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),  // CVE-2023-38545
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),  // FIRST calculator
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:H", 9.1),  // CVE-2021-32714
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),  // CVE-2023-4911
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),  // CVE-2023-0464
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),  // CVE-2023-5363
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:N", 7.5),  // CVE-2023-37920
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),  // CVE-2021-23337
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H", 6.5),  // CVE-2023-2650
        ("CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 6.2),  // CVE-2020-26235
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  // CVE-2024-29041
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N", 6.1),  // CVE-2023-32681
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),  // CVE-2023-27536
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:N", 5.9),  // CVE-2023-48795
        ("CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:H/I:H/A:N", 5.6),  // CVE-2024-35195
        ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H", 5.5),  // CVE-2022-48303
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N", 5.4),  // CVE-2024-22195
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 5.3),  // CVE-2022-25883
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", 5.3),  // CVE-2022-29526
        ("CVSS:3.1/AV:N/AC:H/PR:H/UI:N/S:U/C:H/I:N/A:N", 4.4),  // CVE-2024-37891
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  // CVE-2018-14040
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ("AV:N/AC:L/Au:N/C:C/I:C/A:C", 10.0), // CVE-2014-6271
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5),  // NVD v2 calculator
        ("AV:L/AC:L/Au:N/C:C/I:C/A:C", 7.2),  // CVE-2016-5195
        ("AV:N/AC:M/Au:N/C:P/I:P/A:P", 6.8),  // NVD v2 calculator
        ("AV:N/AC:L/Au:N/C:P/I:N/A:N", 5.0),  // CVE-2014-0160
        ("AV:N/AC:M/Au:N/C:N/I:P/A:N", 4.3),  // CVE-2019-11358
    ] {
        assert_eq!(cvss_base_score(vector), Ok(published), "{vector}");
    }
    assert_eq!(Severity::from_cvss3_score(9.0), Severity::Critical);
    assert_eq!(Severity::from_cvss3_score(8.9), Severity::High);
    assert_eq!(Severity::from_cvss3_score(6.9), Severity::Medium);
    assert_eq!(Severity::from_cvss3_score(3.9), Severity::Low);
    assert_eq!(Severity::from_cvss2_score(10.0), Severity::High);
}

#[test]
fn entries_of_one_record_merge_into_one_finding() {
    let mut two = record(
        "TWO-ENTRIES",
        "npm",
        "p",
        range(
            "SEMVER",
            json!([{ "introduced": "1.0.0" }, { "fixed": "1.2.6" }]),
        ),
        json!({ "aliases": ["CVE-2000-1", "GHSA-xxxx-yyyy-zzzz"] }),
    );
    two["affected"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "package": { "ecosystem": "npm", "name": "p" }, "ranges": range("SEMVER", json!([{ "introduced": "0" }, { "fixed": "0.2.4" }])) }));
    two["affected"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "package": { "ecosystem": "npm", "name": "p" }, "ranges": range("SEMVER", json!([{ "introduced": "0" }, { "fixed": "1.1.0" }])) }));
    let index = index(&[two]);
    let found = index.lookup("npm", "p", "0.1.0").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fixed, Some("0.2.4"));
    assert_eq!(
        found[0].vulnerability.aliases,
        ["CVE-2000-1", "GHSA-xxxx-yyyy-zzzz"]
    );
    // 1.0.5 is in two entries: [1.0.0, 1.2.6) and [0, 1.1.0); the smaller fix wins.
    let found = index.lookup("npm", "p", "1.0.5").unwrap();
    assert_eq!((found.len(), found[0].fixed), (1, Some("1.1.0")));
    assert!(index.lookup("npm", "p", "1.2.6").unwrap().is_empty());
}

#[test]
fn releases_scope_records() {
    let index = index(&[
        record(
            "DEB12",
            "Debian:12",
            "openssl",
            range(
                "ECOSYSTEM",
                json!([{ "introduced": "0" }, { "fixed": "3.0.11-1~deb12u2" }]),
            ),
            json!({}),
        ),
        record(
            "DEB-ANY",
            "Debian",
            "openssl",
            range(
                "ECOSYSTEM",
                json!([{ "introduced": "0" }, { "fixed": "3.0.12-1" }]),
            ),
            json!({}),
        ),
        record(
            "ALPINE",
            "Alpine:v3.19",
            "openssl",
            range(
                "ECOSYSTEM",
                json!([{ "introduced": "0" }, { "fixed": "3.1.4-r0" }]),
            ),
            json!({}),
        ),
    ]);
    let at =
        |ecosystem: &str, version: &str| ids(&index.lookup(ecosystem, "openssl", version).unwrap());
    assert_eq!(at("Debian:12", "3.0.11-1~deb12u1"), ["DEB-ANY", "DEB12"]);
    assert_eq!(at("Debian:11", "3.0.11-1~deb12u1"), ["DEB-ANY"]);
    // A query without a release matches records of every release.
    assert_eq!(at("Debian", "3.0.11-1~deb12u1"), ["DEB-ANY", "DEB12"]);
    assert_eq!(at("debian:12", "3.0.11-1"), ["DEB-ANY"]);
    assert_eq!(at("Alpine:v3.19", "3.1.3-r0"), ["ALPINE"]);
    assert_eq!(at("Alpine:3.19", "3.1.3-r0"), ["ALPINE"]);
    assert!(at("Alpine:v3.18", "3.1.3-r0").is_empty());
    // Ecosystems do not mix: Debian records say nothing of Ubuntu.
    assert!(at("Ubuntu:22.04:LTS", "3.0.2-0ubuntu1").is_empty());
}

#[test]
fn names_are_normalized_per_ecosystem() {
    let index = index(&[
        record(
            "PY",
            "PyPI",
            "Zope.Interface",
            range("ECOSYSTEM", json!([{ "introduced": "0" }])),
            json!({}),
        ),
        record(
            "NPM",
            "npm",
            "Lodash",
            range("SEMVER", json!([{ "introduced": "0" }])),
            json!({}),
        ),
    ]);
    for name in [
        "zope-interface",
        "zope_interface",
        "ZOPE.INTERFACE",
        "zope__interface",
    ] {
        assert_eq!(
            ids(&index.lookup("PyPI", name, "5.0").unwrap()),
            ["PY"],
            "{name}"
        );
    }
    // npm names are compared exactly.
    assert!(index.lookup("npm", "lodash", "1.0.0").unwrap().is_empty());
    assert_eq!(
        ids(&index.lookup("npm", "Lodash", "1.0.0").unwrap()),
        ["NPM"]
    );
}

#[test]
fn debian_binary_packages_match_by_source() {
    let index = index(&[record(
        "DEBIAN-CVE-2023-4911",
        "Debian:12",
        "glibc",
        range(
            "ECOSYSTEM",
            json!([{ "introduced": "0" }, { "fixed": "2.36-9+deb12u3" }]),
        ),
        json!({}),
    )]);
    let libc6 = |version, source_version| Package {
        ecosystem: "Debian:12",
        name: "libc6",
        version,
        source: Some(SourcePackage {
            name: "glibc",
            version: source_version,
        }),
    };
    let found = index
        .lookup_package(&libc6("2.36-9+deb12u1", None))
        .unwrap();
    assert_eq!(ids(&found), ["DEBIAN-CVE-2023-4911"]);
    assert_eq!(found[0].matched, NameMatch::Source);
    assert_eq!(
        (found[0].package, found[0].fixed),
        ("glibc", Some("2.36-9+deb12u3"))
    );
    assert!(
        index
            .lookup_package(&libc6("2.36-9+deb12u3", None))
            .unwrap()
            .is_empty()
    );
    // A binNMU: the binary's version is not the source's; the source version decides.
    assert!(
        index
            .lookup_package(&libc6("2.36-9+deb12u3+b1", Some("2.36-9+deb12u2")))
            .unwrap()
            .len()
            == 1
    );
    // By binary name alone, nothing.
    assert!(
        index
            .lookup("Debian:12", "libc6", "2.36-9")
            .unwrap()
            .is_empty()
    );
    // A source package named like its binary is found once.
    let same = Package {
        ecosystem: "Debian:12",
        name: "glibc",
        version: "2.36-9",
        source: Some(SourcePackage {
            name: "glibc",
            version: None,
        }),
    };
    let found = index.lookup_package(&same).unwrap();
    assert_eq!((found.len(), found[0].matched), (1, NameMatch::Package));
}

#[test]
fn unreadable_versions() {
    let index = index(&[
        // A lost `fixed` widens the range: reported, never silently missed.
        record(
            "BAD-FIX",
            "npm",
            "p",
            range(
                "SEMVER",
                json!([{ "introduced": "1.0.0" }, { "fixed": "one point two" }]),
            ),
            json!({}),
        ),
        // A lost `introduced` leaves no range.
        record(
            "BAD-INTRO",
            "npm",
            "p",
            range(
                "SEMVER",
                json!([{ "introduced": "banana" }, { "fixed": "2.0.0" }]),
            ),
            json!({}),
        ),
    ]);
    assert_eq!(index.stats().unreadable_versions, 2);
    assert_eq!(
        ids(&index.lookup("npm", "p", "5.0.0").unwrap()),
        ["BAD-FIX"]
    );
    assert!(index.lookup("npm", "p", "0.5.0").unwrap().is_empty());
    // An installed version its scheme cannot read is an error, not "not affected".
    assert!(matches!(
        index.lookup("npm", "p", "not-a-version"),
        Err(VersionError::Invalid { .. })
    ));
    assert!(index.lookup("npm", "p", "").is_err());
}

#[test]
fn semver_ranges_in_any_ecosystem_read_the_version_as_semver() {
    let index = index(&[record(
        "PY-SEMVER",
        "PyPI",
        "p",
        range(
            "SEMVER",
            json!([{ "introduced": "0" }, { "fixed": "1.2.0" }]),
        ),
        json!({}),
    )]);
    assert_eq!(
        affected(&index, "PyPI", "p", &["1.1.9", "1.2.0", "1.2.0rc1"]),
        ["1.1.9"]
    );
}

#[test]
fn jsonl_loading() {
    let good = record(
        "X-1",
        "npm",
        "p",
        range("SEMVER", json!([{ "introduced": "0" }])),
        json!({}),
    );
    let input = format!(
        "\n{good}\r\n   \nnot json\n{{\"id\": \"X-2\"}}\n{}",
        record("X-3", "npm", "p", json!([]), json!({}))
    );
    let mut builder = VulnIndexBuilder::new();
    let stats = builder.add_jsonl(input.as_bytes()).unwrap();
    assert_eq!((stats.records, stats.invalid), (2, 2));
    assert!(
        stats
            .first_invalid
            .as_deref()
            .unwrap()
            .starts_with("line 4:"),
        "{stats:?}"
    );
    // Directories: feed files in name order; README and dot files skipped.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.jsonl"), format!("{good}\n")).unwrap();
    std::fs::write(dir.path().join("README.md"), "# not records\n").unwrap();
    std::fs::write(dir.path().join(".hidden"), "junk\n").unwrap();
    std::fs::write(dir.path().join("a.jsonl"), "junk\n").unwrap();
    let (index, stats) = VulnIndex::load_dir(dir.path()).unwrap();
    assert_eq!((stats.records, stats.duplicates, stats.invalid), (1, 0, 1));
    assert!(
        stats
            .first_invalid
            .as_deref()
            .unwrap()
            .contains("a.jsonl: line 1:"),
        "{stats:?}"
    );
    assert_eq!(index.stats().records, 1);
    assert!(index.get("X-1").is_some() && index.get("X-9").is_none());
    assert!(VulnIndex::load_dir(&dir.path().join("missing")).is_err());
}
