//! The index at the scale of a full feed: 100,000 synthetic records over several
//! ecosystems load, index and answer lookups correctly. The time taken is printed
//! (`cargo test -p defender-lite --test integration osv_index:: -- --nocapture`), never asserted.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use defender_lite::osv::VulnIndexBuilder;

const RECORDS: usize = 100_000;

/// Record `i`: package `pkg-{i % 20_000}` of one of five ecosystems, affected from
/// `1.{i % 7}.0` to the fix `1.{i % 7}.{5 + i % 3}` (in each ecosystem's spelling).
fn record(i: usize) -> String {
    let minor = i % 7;
    let patch = 5 + i % 3;
    let (ecosystem, introduced, fixed) = match i % 5 {
        0 => ("npm", format!("1.{minor}.0"), format!("1.{minor}.{patch}")),
        1 => ("PyPI", format!("1.{minor}"), format!("1.{minor}.{patch}")),
        2 => (
            "Debian:12",
            format!("1.{minor}-1"),
            format!("1.{minor}.{patch}-1"),
        ),
        3 => (
            "Alpine:v3.19",
            format!("1.{minor}-r0"),
            format!("1.{minor}.{patch}-r0"),
        ),
        _ => ("Go", format!("1.{minor}.0"), format!("1.{minor}.{patch}")),
    };
    let kind = if matches!(ecosystem, "npm" | "Go") {
        "SEMVER"
    } else {
        "ECOSYSTEM"
    };
    format!(
        concat!(
            r#"{{"id":"SYN-{i:06}","modified":"2024-01-01T00:00:00Z","summary":"synthetic record {i}","#,
            r#""aliases":["CVE-2099-{i}"],"affected":[{{"package":{{"ecosystem":"{ecosystem}","name":"pkg-{pkg}"}},"#,
            r#""ranges":[{{"type":"{kind}","events":[{{"introduced":"{introduced}"}},{{"fixed":"{fixed}"}}]}}]}}],"#,
            r#""severity":[{{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}],"#,
            r#""database_specific":{{"severity":"CRITICAL","cwe_ids":["CWE-79"]}}}}"#,
        ),
        i = i,
        ecosystem = ecosystem,
        pkg = i % 20_000,
        kind = kind,
        introduced = introduced,
        fixed = fixed,
    )
}

#[test]
fn a_hundred_thousand_records_index_and_match() {
    let jsonl: String = (0..RECORDS).map(|i| record(i) + "\n").collect();
    let started = Instant::now();
    let mut builder = VulnIndexBuilder::new();
    let stats = builder.add_jsonl(jsonl.as_bytes()).unwrap();
    let loaded = started.elapsed();
    let index = builder.build();
    let built = started.elapsed();
    assert_eq!((stats.records, stats.invalid), (RECORDS as u64, 0));
    let feed_mb = jsonl.len() / 1_000_000;
    drop(jsonl);
    let resident = resident_memory();
    let index_stats = index.stats();
    assert_eq!(index_stats.records, RECORDS);
    assert_eq!(index_stats.unreadable_versions, 0);

    // Package pkg-{p} of ecosystem e holds the records i with i % 20_000 == p and
    // i % 5 == e: p itself (when p % 5 == e) and p + 20_000k.
    let started = Instant::now();
    let mut lookups = 0;
    for i in (0..RECORDS).step_by(97) {
        let minor = i % 7;
        let (ecosystem, inside, outside) = match i % 5 {
            0 => ("npm", format!("1.{minor}.2"), format!("1.{minor}.9")),
            1 => ("PyPI", format!("1.{minor}.2"), format!("1.{minor}.9")),
            2 => (
                "Debian:12",
                format!("1.{minor}.2-1"),
                format!("1.{minor}.9-1"),
            ),
            3 => (
                "Alpine:v3.19",
                format!("1.{minor}.2-r0"),
                format!("1.{minor}.9-r0"),
            ),
            _ => ("Go", format!("v1.{minor}.2"), format!("v1.{minor}.9")),
        };
        let name = format!("pkg-{}", i % 20_000);
        let found = index.lookup(ecosystem, &name, &inside).unwrap();
        let id = format!("SYN-{i:06}");
        let finding = found
            .iter()
            .find(|f| f.vulnerability.id == id)
            .unwrap_or_else(|| panic!("{id} not found for {ecosystem} {name} {inside}"));
        assert_eq!(finding.vulnerability.aliases, [format!("CVE-2099-{i}")]);
        assert_eq!(finding.cvss_score, Some(9.8));
        // Every record of this package with the same minor matches; no other does.
        assert!(found.iter().all(|f| {
            let j: usize = f.vulnerability.id[4..].parse().unwrap();
            j % 20_000 == i % 20_000 && j % 5 == i % 5 && j % 7 == minor
        }));
        assert!(
            index
                .lookup(ecosystem, &name, &outside)
                .unwrap()
                .iter()
                .all(|f| f.vulnerability.id != id)
        );
        lookups += 2;
    }
    let looked_up = started.elapsed();
    eprintln!(
        "{RECORDS} records ({feed_mb} MB of JSON): read {loaded:?}, indexed {:?}; \
         {lookups} lookups in {looked_up:?}; resident after indexing: {resident}",
        built - loaded,
    );
}

/// The process's resident memory and its peak, where Linux says (for the printout).
fn resident_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}
