//! Verify throughput against the floor set by standard tools.
//!
//! Builds a bundle of about 100 MiB uncompressed (synthetic OSV records, which compress
//! like real ones), then times, on the same file, `bundle::verify` (inflate, SHA-256 of
//! every feed file, SHA-256 of the payload member and of the whole file, all checks) and
//! `gzip -dc FILE | sha256sum` (inflate and one hash, in two processes). Prints both and
//! their ratio; the goal is a ratio of at least 0.8.
//!
//! Run: `cargo bench -p relay --bench verify`. Set `BENCH_MIB` to change the size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use relay::bundle::{self, BuildOptions, Limits, SecretKey, Sequence, Timestamp, TrustStore};

const ROUNDS: usize = 3;

fn main() {
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let feeds = dir.path().join("feeds");
    let files = write_feeds(&feeds, mib << 20);

    let key = SecretKey::from_seed([3; 32]);
    let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let options = BuildOptions {
        sequence: Sequence(1),
        origin: "bench".into(),
        created,
        expires: "2036-01-01T00:00:00Z".parse().unwrap(),
    };
    let path = dir.path().join("bundle.tar.gz");
    let started = Instant::now();
    let manifest = bundle::build(
        &feeds,
        &key,
        &options,
        BufWriter::new(File::create(&path).unwrap()),
    )
    .unwrap();
    let build_time = started.elapsed();
    let compressed = fs::metadata(&path).unwrap().len();
    let uncompressed: u64 = manifest.files.iter().map(|f| f.size).sum();
    println!(
        "bundle: {files} feed files, {:.1} MiB uncompressed, {:.1} MiB on disk, built in {:.2} s",
        mib_of(uncompressed),
        mib_of(compressed),
        build_time.as_secs_f64()
    );

    let trust = TrustStore::new([key.public()]);
    let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
    let verify = best_of(|| {
        let file = File::open(&path).unwrap();
        bundle::verify(file, &trust, &Limits::default(), now, None).unwrap();
    });
    let gzip = best_of(|| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc '{}' | sha256sum", path.display()))
            .output()
            .expect("run gzip -dc | sha256sum");
        assert!(out.status.success(), "gzip -dc | sha256sum failed");
    });

    let rate = |t: Duration| mib_of(uncompressed) / t.as_secs_f64();
    println!(
        "relay bundle verify:        {:>8.1} MiB/s  ({:.3} s, best of {ROUNDS})",
        rate(verify),
        verify.as_secs_f64()
    );
    println!(
        "gzip -dc | sha256sum:       {:>8.1} MiB/s  ({:.3} s, best of {ROUNDS})",
        rate(gzip),
        gzip.as_secs_f64()
    );
    println!(
        "ratio verify / gzip+sha256: {:>8.2}   (goal >= 0.8)",
        gzip.as_secs_f64() / verify.as_secs_f64()
    );
}

fn best_of(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn mib_of(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Writes OSV files of 8 MiB each until `total` bytes; returns how many.
fn write_feeds(dir: &Path, total: u64) -> u64 {
    let osv = dir.join("osv");
    fs::create_dir_all(&osv).unwrap();
    let ecosystems = [
        "PyPI",
        "npm",
        "Go",
        "crates.io",
        "Debian:12",
        "Alpine:v3.19",
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64: reproducible filler, not cryptography.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut written, mut files, mut id) = (0u64, 0u64, 0u64);
    while written < total {
        let mut out =
            BufWriter::new(File::create(osv.join(format!("part-{files:03}.jsonl"))).unwrap());
        let mut in_file = 0u64;
        while in_file < 8 << 20 && written + in_file < total {
            id += 1;
            let r = next();
            let line = format!(
                r#"{{"id":"BENCH-{id:08}","modified":"2026-0{}-1{}T0{}:00:00Z","summary":"synthetic advisory {id} for package pkg-{:x} in {eco}","aliases":["CVE-2026-{:05}"],"affected":[{{"package":{{"ecosystem":"{eco}","name":"pkg-{:x}"}},"ranges":[{{"type":"ECOSYSTEM","events":[{{"introduced":"0"}},{{"fixed":"{}.{}.{}"}}]}}]}}],"database_specific":{{"severity":"HIGH"}}}}"#,
                1 + r % 9,
                r % 10,
                r % 10,
                r % 50_000,
                r % 99_999,
                r % 50_000,
                r % 20,
                (r >> 8) % 40,
                (r >> 16) % 100,
                eco = ecosystems[(r % 6) as usize],
            );
            out.write_all(line.as_bytes()).unwrap();
            out.write_all(b"\n").unwrap();
            in_file += line.len() as u64 + 1;
        }
        out.flush().unwrap();
        written += in_file;
        files += 1;
    }
    files
}
