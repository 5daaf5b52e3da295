//! The bundle verifier (`relay::bundle::verify_with_sink`, and `inspect`, which parses the
//! manifest without a key) on arbitrary files. Seeds: bundles built from the sample feeds,
//! signed with the test key the target trusts, so mutations reach the payload.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use relay::bundle::{self, BuildOptions, ExpiryCheck, Limits, Sequence, Sha256};

/// Caps small enough that no input costs more than a few milliseconds.
const LIMITS: Limits = Limits {
    max_uncompressed: 8 << 20,
    max_entries: 1_000,
    max_ratio: 200,
    max_manifest: 256 << 10,
};

fn seeds() -> Vec<fuzz::Seed> {
    let samples = fuzz::repo("relay/samples/feeds");
    let mut sets: Vec<(&str, Vec<&str>)> = vec![("all", vec![])];
    for kind in ["domains", "ips", "apps", "osv"] {
        sets.push((kind, vec![kind]));
    }
    let mut out = Vec::new();
    for (name, kinds) in sets {
        let dir = tempfile::tempdir().unwrap();
        let feeds = if kinds.is_empty() {
            samples.clone()
        } else {
            for kind in kinds {
                let target = dir.path().join(kind);
                std::fs::create_dir_all(&target).unwrap();
                for (rel, bytes) in fuzz::fixture_tree(&format!("relay/samples/feeds/{kind}")) {
                    std::fs::write(target.join(rel), bytes).unwrap();
                }
            }
            dir.path().to_owned()
        };
        let options = BuildOptions {
            sequence: Sequence(7),
            origin: "fuzz".into(),
            created: "2026-01-01T00:00:00Z".parse().unwrap(),
            expires: "2027-01-01T00:00:00Z".parse().unwrap(),
        };
        let mut bytes = Vec::new();
        bundle::build(&feeds, &fuzz::origin_key(), &options, &mut bytes).unwrap();
        out.push((format!("bundle-{name}"), bytes));
    }
    out
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let mut sink = |_: &bundle::FileEntry, entry: &mut dyn io::Read| {
        io::copy(entry, &mut io::sink()).map(drop)
    };
    let verified = bundle::verify_with_sink(
        data,
        fuzz::trust(),
        &LIMITS,
        fuzz::now(),
        None,
        ExpiryCheck::Enforce,
        &mut sink,
    );
    if let Ok(v) = verified {
        // A verified bundle is exactly the bytes read: nothing before, after or skipped.
        assert_eq!(v.size(), data.len() as u64);
        assert_eq!(v.sha256(), Sha256::of(data));
    }
    let _ = bundle::inspect(data, &LIMITS);
});
