//! OSV matching rules, one test each, on small hand-made records: events and their
//! order, `last_affected`, `limit`, `versions` lists (also for installed versions the
//! ecosystem's scheme cannot read), ignored `GIT` ranges, withdrawn and duplicate
//! records, severity (CVSS v2, v3 and v4 scores checked against published ones, and
//! real RustSec records scored only with v4), the fixed version reported, ecosystems,
//! releases, names and source packages.

#![allow(clippy::unwrap_used)]

use defender_lite::osv::{
    Finding, NameMatch, Package, Severity, SourcePackage, UnreadableVersion, VulnIndex,
    VulnIndexBuilder, cvss_base_score,
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
            "V4-AND-V3",
            "npm",
            "p",
            events.clone(),
            json!({
                "severity": [
                    { "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" },
                    { "type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N" },
                ],
            }),
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
            // The newest CVSS version the record publishes wins, even when lower.
            ("V4-AND-V3", Severity::High, Some(8.7)),
            // A v4 vector outranks the word.
            ("V4-AND-WORD", Severity::Critical, Some(9.3)),
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
        ("AV:N/AC:L/Au:N/C:C/I:C/A:C", 10.0),  // CVE-2014-6271
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5),   // NVD v2 calculator
        ("AV:L/AC:L/Au:N/C:C/I:C/A:C", 7.2),   // CVE-2016-5195
        ("AV:N/AC:M/Au:N/C:P/I:P/A:P", 6.8),   // NVD v2 calculator
        ("AV:N/AC:L/Au:N/C:P/I:N/A:N", 5.0),   // CVE-2014-0160
        ("AV:N/AC:M/Au:N/C:N/I:P/A:N", 4.3),   // CVE-2019-11358
        ("(AV:N/AC:M/Au:N/C:N/I:P/A:N)", 4.3), // NVD's parentheses
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            9.3,
        ), // FIRST v4.0 calculator
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N",
            8.7,
        ), // GHSA-6xvm-j4wr-6v98
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N",
            6.9,
        ), // FIRST v4.0 calculator
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
            0.0,
        ),
        // Threat, environmental and supplemental metrics are not base metrics: CVSS-B.
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N/E:U/CR:L/MAV:P/S:P",
            8.7,
        ),
    ] {
        assert_eq!(cvss_base_score(vector), Ok(published), "{vector}");
    }
    assert_eq!(Severity::from_cvss3_score(9.0), Severity::Critical);
    assert_eq!(Severity::from_cvss3_score(8.9), Severity::High);
    assert_eq!(Severity::from_cvss3_score(6.9), Severity::Medium);
    assert_eq!(Severity::from_cvss3_score(3.9), Severity::Low);
    assert_eq!(Severity::from_cvss2_score(10.0), Severity::High);
    assert_eq!(Severity::from_cvss4_score(9.3), Severity::Critical);
    assert_eq!(Severity::from_cvss4_score(8.7), Severity::High);
    assert_eq!(Severity::from_cvss4_score(6.9), Severity::Medium);
    assert_eq!(Severity::from_cvss4_score(0.0), Severity::Low);
}

#[test]
fn rustsec_records_scored_only_with_cvss_v4() {
    // Real RustSec advisories whose one severity is a CVSS v4.0 vector (57 of the
    // database's records in 2026): they used to read as Unknown.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/osv/rustsec-cvss-v4-only.jsonl"
    );
    let mut builder = VulnIndexBuilder::new();
    let stats = builder.add_file(std::path::Path::new(path)).unwrap();
    assert_eq!((stats.records, stats.invalid), (3, 0));
    let index = builder.build();
    let one = |name: &str, version: &str| {
        let found = index.lookup("crates.io", name, version).unwrap();
        assert_eq!(found.len(), 1, "{name} {version}");
        let f = &found[0];
        (
            f.vulnerability.id.as_str(),
            f.severity,
            f.cvss_score,
            f.fixed,
        )
    };
    assert_eq!(
        one("quinn-proto", "0.11.13"),
        (
            "RUSTSEC-2026-0037",
            Severity::High,
            Some(8.7),
            Some("0.11.14")
        )
    );
    // `.../SA:N/E:P`: scored on its base metrics (E:P would only lower it).
    assert_eq!(
        one("deno", "2.2.4"),
        (
            "RUSTSEC-2025-0138",
            Severity::Medium,
            Some(6.9),
            Some("2.2.5")
        )
    );
    // No impact at all scores 0.0, which reads as Low.
    assert_eq!(
        one("libcrux-psq", "0.0.6"),
        ("RUSTSEC-2026-0024", Severity::Low, Some(0.0), Some("0.0.7"))
    );
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
        Err(UnreadableVersion {
            error: VersionError::Invalid { .. },
            ..
        })
    ));
    assert!(index.lookup("npm", "p", "").is_err());
}

/// What an unreadable version's lookup still found: (ids, whether the error names it).
fn listed_only(index: &VulnIndex, ecosystem: &str, name: &str, version: &str) -> Vec<String> {
    let unreadable = index
        .lookup(ecosystem, name, version)
        .expect_err("the scheme should refuse this version");
    assert!(
        matches!(&unreadable.error, VersionError::Invalid { version: v, .. } if v == version),
        "{unreadable}"
    );
    ids(&unreadable.findings)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn versions_the_scheme_cannot_read_still_match_versions_lists_verbatim() {
    // As PyPI advisories (PYSEC, GHSA) list every release, including ones PEP 440 refuses.
    let mut pysec = record(
        "PYSEC-LISTED",
        "PyPI",
        "p",
        range(
            "ECOSYSTEM",
            json!([{ "introduced": "0" }, { "fixed": "2.0.2" }]),
        ),
        json!({}),
    );
    pysec["affected"][0]["versions"] = json!(["0.7.0", "0.7.1.fix1", "2.0.1rc1", "2.0.1rc2-git"]);
    // Go (module versions are SemVer), crates.io (SemVer) and Debian (dpkg) alike.
    let mut go = record("GO-LISTED", "Go", "example.com/m", json!([]), json!({}));
    go["affected"][0]["versions"] = json!(["1.0.0", "1.0.0.1"]);
    let mut crate_listed = record("CRATE-LISTED", "crates.io", "c", json!([]), json!({}));
    crate_listed["affected"][0]["versions"] = json!(["0.1.0", "0.1.0.beta"]);
    let mut debian = record("DEB-LISTED", "Debian:12", "d", json!([]), json!({}));
    debian["affected"][0]["versions"] = json!(["1.0-1", "x:1.0-1"]);
    let index = index(&[pysec, go, crate_listed, debian]);

    for version in ["0.7.1.fix1", "2.0.1rc2-git"] {
        assert_eq!(listed_only(&index, "PyPI", "p", version), ["PYSEC-LISTED"]);
    }
    // Verbatim means verbatim: an unreadable version that is not listed matches nothing.
    assert!(listed_only(&index, "PyPI", "p", "0.7.1.fix2").is_empty());
    assert_eq!(
        listed_only(&index, "Go", "example.com/m", "1.0.0.1"),
        ["GO-LISTED"]
    );
    assert_eq!(
        listed_only(&index, "crates.io", "c", "0.1.0.beta"),
        ["CRATE-LISTED"]
    );
    assert_eq!(
        listed_only(&index, "Debian:12", "d", "x:1.0-1"),
        ["DEB-LISTED"]
    );
    // A source version (a binNMU's `Source: d (x:1.0-1)`) the scheme cannot read is
    // matched the same way, and said so.
    let binnmu = Package {
        ecosystem: "Debian:12",
        name: "libd1",
        version: "1.0-1+b1",
        source: Some(SourcePackage {
            name: "d",
            version: Some("x:1.0-1"),
        }),
    };
    let unreadable = index.lookup_package(&binnmu).unwrap_err();
    assert_eq!(ids(&unreadable.findings), ["DEB-LISTED"]);
    assert_eq!(unreadable.findings[0].matched, NameMatch::Source);
    // Readable versions are unchanged: listed, in the range, or neither.
    assert_eq!(
        affected(
            &index,
            "PyPI",
            "p",
            &["0.7.0", "2.0.1rc1", "2.0.1", "2.0.2"]
        ),
        ["0.7.0", "2.0.1rc1", "2.0.1"]
    );
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
