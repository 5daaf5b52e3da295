//! The OSV record parser: the relay's record rules (`relay::bundle::check_osv_record`,
//! which the builder and the importer run on every line) and the agent's reader
//! (`VulnIndexBuilder::add_jsonl`), then lookups of the packages the records name at the
//! versions they name, which evaluates their ranges and severities. Seeds: the sample
//! feeds' records, one per seed, and the agent's OSV fixtures.
#![no_main]

use defender_lite::osv::{OsvRecord, Package, SourcePackage, VulnIndexBuilder};
use libfuzzer_sys::fuzz_target;

/// Lookups per input: enough to evaluate every range of a small input.
const MAX_LOOKUPS: usize = 64;

fn seeds() -> Vec<fuzz::Seed> {
    let mut out = Vec::new();
    let mut files = fuzz::fixture_tree("relay/samples/feeds/osv");
    files.extend(fuzz::fixture_tree("defender-lite/tests/fixtures/osv"));
    for (name, bytes) in files {
        if !name.ends_with(".jsonl") {
            continue;
        }
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if !line.is_empty() {
                out.push((fuzz::seed_name(&format!("{name}-{i}")), line.to_vec()));
            }
        }
        out.push((fuzz::seed_name(&name), bytes));
    }
    out
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = relay::bundle::check_osv_record(line);
    }
    let mut builder = VulnIndexBuilder::new();
    builder.add_jsonl(data).expect("reading from memory");
    let index = builder.build();
    let _ = index.stats();

    // (ecosystem, name, version) of every package and event the input names.
    let mut wanted: Vec<(String, String, String)> = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        let Ok(record) = serde_json::from_slice::<OsvRecord>(line) else {
            continue;
        };
        for affected in &record.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let mut versions: Vec<&str> = affected.versions.iter().map(String::as_str).collect();
            for range in &affected.ranges {
                for event in &range.events {
                    versions.push(event.version());
                }
            }
            for version in versions {
                wanted.push((package.ecosystem.clone(), package.name.clone(), version.to_owned()));
            }
        }
    }
    for (ecosystem, name, version) in wanted.iter().take(MAX_LOOKUPS) {
        let _ = index.lookup(ecosystem, name, version);
        let _ = index.lookup_package(&Package {
            ecosystem,
            name: "binary",
            version: "0",
            source: Some(SourcePackage {
                name,
                version: Some(version),
            }),
        });
    }
});
