//! Applying a bundle at real size (issue 12 item 4): what `defender-lite sync` does once a
//! bundle is downloaded (verify, unpack, build the indexes), timed, with its peak memory.
//!
//! `cargo bench -p defender-lite --bench apply -- [FEEDS_DIR] [--keep DIR]`
//!
//! FEEDS_DIR is a feeds directory in the bundle's layout (`osv/`, `domains/`, `ips/`,
//! `apps/`), such as the one `tests/bench/realsize/generate OUT --size realistic` writes;
//! by default `relay/samples/feeds`. A signed bundle of it is built first (not timed),
//! then a child process applies it with `defender_lite::sync::apply`, so the peak RSS
//! printed (`VmHWM`) is the apply's alone; then the indexes are built again, timed
//! alone. With `--keep DIR` the data directory stays in DIR (the applied bundle is
//! `DIR/data/bundles/<seq>-<sha256>`, ready for `defender-lite scan --feeds` and
//! `monitor --feeds`). Plain `main`, no harness; the last line is `RESULT ...` for
//! scripts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use relay::bundle::{BuildOptions, Limits, PublicKey, SecretKey, Sequence, Timestamp, TrustStore};

/// Set in the child: the work directory to apply in.
const CHILD_ENV: &str = "DEFENDER_LITE_APPLY_BENCH_CHILD";

fn main() -> Result<()> {
    if let Some(work) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&work));
    }
    let mut feeds = None;
    let mut keep = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--keep" => keep = Some(PathBuf::from(args.next().context("--keep DIR")?)),
            _ if feeds.is_none() => feeds = Some(PathBuf::from(arg)),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let feeds = feeds
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds"));
    let temp = tempfile::tempdir().context("temp dir")?;
    let work = match &keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };

    let key = SecretKey::generate()?;
    key.public().save(&work.join("origin.pub"), true)?;
    let now = Timestamp::now();
    let bundle = work.join("bundle.tar.gz");
    let t = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(&bundle)?);
    let manifest = relay::bundle::build(
        &feeds,
        &key,
        &BuildOptions {
            sequence: Sequence(1),
            origin: "apply-bench".into(),
            created: now,
            expires: Timestamp::from_unix(now.unix() + 86_400).context("expiry")?,
        },
        out,
    )
    .with_context(|| format!("building a bundle of {}", feeds.display()))?;
    let feed_bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    println!(
        "bundle of {}: {} files, {:.1} MB of feeds, {:.1} MB compressed, built in {:.1} s (not timed below)",
        feeds.display(),
        manifest.files.len(),
        feed_bytes as f64 / 1e6,
        std::fs::metadata(&bundle)?.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let status = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, &work)
        .status()
        .context("starting the apply child")?;
    if !status.success() {
        bail!("apply child failed: {status}");
    }
    if keep.is_some() {
        println!("kept: {}", work.join("data").display());
    }
    Ok(())
}

/// Applies `work/bundle.tar.gz` into `work/data` as `sync` does, and reports.
fn child(work: &Path) -> Result<()> {
    let trust = TrustStore::new([PublicKey::load(&work.join("origin.pub"))?]);
    let data = work.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(data.join("bundles"))?;
    let t = Instant::now();
    let applied = defender_lite::sync::apply(
        &data,
        &trust,
        &Limits::default(),
        &work.join("bundle.tar.gz"),
        "apply-bench",
        None,
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let wall = t.elapsed();
    let cpu = cpu_secs()?;
    let hwm = peak_rss_kib()?;
    let index = data.join(&applied.dir).join("index");
    let summary = std::fs::read_to_string(index.join("summary.json"))?;
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(&index)? {
        let entry = entry?;
        sizes.push(format!(
            "{} {:.1} MB",
            entry.file_name().to_string_lossy(),
            entry.metadata()?.len() as f64 / 1e6
        ));
    }
    sizes.sort();
    println!("index files: {}", sizes.join(", "));
    println!(
        "summary: {}",
        summary.split_whitespace().collect::<String>()
    );
    println!(
        "apply (verify, unpack, indexes): {:.2} s, CPU {cpu:.2} s (user + system, all threads), peak RSS {:.1} MiB",
        wall.as_secs_f64(),
        hwm as f64 / 1024.0
    );
    // The indexes alone, built again over the unpacked bundle: apply minus this is
    // verifying and unpacking.
    let t = Instant::now();
    defender_lite::feeds::build_indexes(&data.join(&applied.dir))?;
    let indexes = t.elapsed();
    println!(
        "of which indexes: {:.2} s (built again), verify and unpack: {:.2} s",
        indexes.as_secs_f64(),
        wall.saturating_sub(indexes).as_secs_f64()
    );
    println!(
        "RESULT apply_secs={:.3} cpu_secs={cpu:.2} peak_rss_mib={:.1} index_secs={:.3}",
        wall.as_secs_f64(),
        hwm as f64 / 1024.0,
        indexes.as_secs_f64()
    );
    Ok(())
}

/// `VmHWM` of this process, in KiB.
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/self/status")
}

/// User and system CPU time of this process so far (all threads), in seconds: on a
/// shared machine, steadier than wall time.
fn cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces, so split after its ')'):
    // state is field 3, utime 14 and stime 15, in USER_HZ ticks (100 per second).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("/proc/self/stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
