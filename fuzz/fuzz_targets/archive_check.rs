//! The vendor archive checker (`relay::archive::check`) on arbitrary files. Seeds:
//! `.tar.gz` archives of fixture trees, like a vendor feed archive.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use relay::bundle::{Limits, Sha256};

const LIMITS: Limits = Limits {
    max_uncompressed: 8 << 20,
    max_entries: 1_000,
    max_ratio: 200,
    max_manifest: 1 << 20,
};

fn targz(files: &[(String, Vec<u8>)], dirs: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut seen = std::collections::BTreeSet::new();
    for (path, bytes) in files {
        if dirs
            && let Some((parent, _)) = path.rsplit_once('/')
            && seen.insert(parent.to_owned())
        {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, format!("{parent}/"), &[][..])
                .unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(1_700_000_000);
        builder.append_data(&mut header, path, &bytes[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn seeds() -> Vec<fuzz::Seed> {
    let apps = fuzz::fixture_tree("relay/samples/feeds/apps");
    let ips = fuzz::fixture_tree("relay/samples/feeds/ips");
    let redis = fuzz::fixture_tree("defender-lite/tests/fixtures/apps/redis-debian");
    vec![
        ("apps.tar.gz".into(), targz(&apps, false)),
        ("ips-with-dirs.tar.gz".into(), targz(&ips, true)),
        ("redis-with-dirs.tar.gz".into(), targz(&redis, true)),
    ]
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    match relay::archive::check(data, &LIMITS, None) {
        Ok(info) => {
            assert_eq!(info.size, data.len() as u64);
            assert_eq!(info.sha256, Sha256::of(data));
            // Stating the right digest changes nothing.
            let again = relay::archive::check(data, &LIMITS, Some(info.sha256.clone()));
            assert_eq!(again.ok(), Some(info));
        }
        Err(_) => {}
    }
});
