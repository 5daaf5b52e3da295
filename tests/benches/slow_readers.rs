//! What slow-reading downloaders cost the relay (issue 13, item 12), and what capping
//! their buffers costs fast ones.
//!
//! 1. Builds a bundle of `BUNDLE_MB` and uploads it to a real `relay serve` on 127.0.0.1.
//! 2. Fast clients: `curl` downloads the bundle over HTTP/1.1 and over HTTP/2, one at a
//!    time, `FAST_RUNS` each, then `FAST_PARALLEL` at once; prints the best MiB/s of one
//!    download, the MiB/s of all the parallel ones together, and the relay's CPU per MiB.
//! 3. Slow clients: opens `READERS` TLS connections (`OPEN_CONCURRENCY` at a time) that
//!    ask for the bundle over HTTP/1.1 with a small receive buffer, read the response head,
//!    then `READ_BYTES` every `READ_EVERY_MS` (0 bytes: nothing more). Once the relay's RSS
//!    holds still, prints its `VmRSS` and `VmHWM` before and after, the growth per
//!    connection, and what the kernel holds in the relay's send queues (not part of RSS).
//!    With `SLOW_CLIENT=curl-http2` the slow clients are instead `READERS` curl processes
//!    downloading over HTTP/2 at `READ_BYTES` a second (`--limit-rate`; use a few hundred).
//!
//! Environment: `READERS` (2000), `BUNDLE_MB` (64), `STREAMED` (0: the current bundle,
//! served from memory and shared; 1: a memory cache smaller than the bundle, so every
//! download streams its file), `READ_BYTES` (1024), `READ_EVERY_MS` (1000),
//! `OPEN_CONCURRENCY` (100), `FAST_RUNS` (5), `FAST_PARALLEL` (8), `SLOW_CLIENT` (`tls`). This process and the relay each need more than
//! `READERS` file descriptors (`ulimit -n`).
//!
//! The last line is machine-readable: `RESULT key=value ...`.
//!
//! Run: `cargo bench -p end-to-end --bench slow_readers`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use end_to_end::downloaders::{Downloaders, Plan, kernel_send_queue, settled_memory};
use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, cpu_time, generate_key, memory, password,
    write_large_feeds,
};

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("slow_readers: {name}={v} is not valid");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// A `curl` that downloads the bundle to /dev/null and prints its size and speed.
fn curl(relay: &RelayProcess, flags: &[&str]) -> Command {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--fail", "--noproxy", "*", "--cacert"])
        .arg(relay.ca())
        .args(["-u", &format!("reader:{}", password("reader"))])
        .args(flags)
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{speed_download}",
        ])
        .arg(format!("{}/api/v1/feeds/bundle", relay.url));
    command
}

/// One download: MiB/s, as curl measured it.
fn curl_download(relay: &RelayProcess, size: u64, flags: &[&str]) -> f64 {
    let out = curl(relay, flags).output().expect("curl is installed");
    check_download(&out, size, flags)
}

/// `count` downloads at once: MiB/s of all of them together, over the wall time.
fn curl_parallel(relay: &RelayProcess, size: u64, flags: &[&str], count: usize) -> f64 {
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..count)
        .map(|_| {
            curl(relay, flags)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl is installed")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("curl ran");
        check_download(&out, size, flags);
    }
    (size * count as u64) as f64 / f64::from(1 << 20) / started.elapsed().as_secs_f64()
}

/// `count` curl processes downloading the bundle over HTTP/2 at `rate` bytes a second.
fn slow_curls(relay: &RelayProcess, count: usize, rate: usize) -> Vec<std::process::Child> {
    (0..count)
        .map(|_| {
            curl(
                relay,
                &["--http2", "--limit-rate", &rate.max(1).to_string()],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("curl is installed")
        })
        .collect()
}

/// curl's speed in MiB/s, once its exit status and the size it got are checked.
fn check_download(out: &std::process::Output, size: u64, flags: &[&str]) -> f64 {
    assert!(out.status.success(), "curl {flags:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let got: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    assert_eq!(got, size, "curl {flags:?} downloaded {got} bytes");
    let speed: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    speed / f64::from(1 << 20)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let readers: usize = setting("READERS", 2000);
    let bundle_mb: u64 = setting("BUNDLE_MB", 64);
    let streamed = setting::<u8>("STREAMED", 0) != 0;
    let read_bytes: usize = setting("READ_BYTES", 1024);
    let read_every = Duration::from_millis(setting("READ_EVERY_MS", 1000));
    let concurrency: usize = setting("OPEN_CONCURRENCY", 100);
    let fast_runs: usize = setting("FAST_RUNS", 5);
    let fast_parallel: usize = setting("FAST_PARALLEL", 8);
    let curl_http2 = match setting::<String>("SLOW_CLIENT", "tls".into()).as_str() {
        "tls" => false,
        "curl-http2" => true,
        other => {
            eprintln!("slow_readers: SLOW_CLIENT={other}: tls or curl-http2");
            std::process::exit(2)
        }
    };

    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let feeds = tmp.path().join("feeds");
    write_large_feeds(&feeds, bundle_mb);
    let bytes = build_bundle(&feeds, &secret, 1, &tmp.path().join("bundle.tar.gz"));
    std::fs::remove_dir_all(&feeds).unwrap();
    let size = bytes.len() as u64;

    let mut config = RelayConfig::ordinary(&[&public]);
    let cache = if streamed { 8 << 20 } else { 256 << 20 };
    assert!(
        !streamed || size > cache,
        "STREAMED needs a bundle over 8 MiB"
    );
    config.storage = format!("memory_cache_bytes = {cache}\n");
    let slots = readers + 100;
    config.listen = format!(
        "max_connections = {slots}\nmax_connections_per_address = {slots}\nidle_timeout = \"10m\"\n"
    );
    config.log = "warn".into();
    let relay = RelayProcess::start("relay", &tmp.path().join("relay"), &config);
    let (status, body) = relay.upload("uploader", bytes).await;
    assert_eq!(status, 201, "{body}");
    let pid = relay.pid().unwrap();
    println!(
        "bundle: {size} bytes ({}), {}; relay pid {pid}",
        mib(size),
        if streamed {
            "streamed from its file (memory_cache_bytes 8 MiB)"
        } else {
            "served from memory, shared by the downloads in progress"
        }
    );

    // 2. Fast clients first, on an otherwise idle relay.
    let mut fast = Vec::new();
    for (label, flags) in [
        ("HTTP/1.1", &["--http1.1"][..]),
        ("HTTP/2", &["--http2"][..]),
    ] {
        let cpu_before = cpu_time(pid).unwrap_or_default();
        let best = (0..fast_runs.max(1))
            .map(|_| curl_download(&relay, size, flags))
            .fold(0.0, f64::max);
        let together = curl_parallel(&relay, size, flags, fast_parallel.max(1));
        let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
        let downloads = (fast_runs.max(1) + fast_parallel.max(1)) as u64;
        let total_mib = (size * downloads) as f64 / f64::from(1 << 20);
        let cpu_per_mib = cpu.as_secs_f64() * 1000.0 / total_mib;
        println!(
            "fast {label}: one download, best of {fast_runs}: {best:.0} MiB/s; {fast_parallel} at \
             once: {together:.0} MiB/s together; relay CPU {cpu_per_mib:.2} ms per MiB"
        );
        fast.push((best, together, cpu_per_mib));
    }

    // 3. Slow clients.
    let before = settled_memory(pid, Duration::from_secs(30)).await.unwrap();
    println!(
        "relay before the slow downloads: VmRSS {}, VmHWM {}",
        mib(before.rss),
        mib(before.hwm)
    );
    let mut curls = Vec::new();
    let mut downloads = None;
    if curl_http2 {
        curls = slow_curls(&relay, readers, read_bytes);
        println!("{readers} curl --http2 --limit-rate {read_bytes} started");
    } else {
        let opened = Downloaders::open(Plan {
            addr: format!("127.0.0.1:{}", relay.port()).parse().unwrap(),
            ca: relay.ca(),
            path: "/api/v1/feeds/bundle".into(),
            user: "reader".into(),
            password: password("reader"),
            count: readers,
            concurrency,
            read_bytes,
            read_every,
        })
        .await;
        println!(
            "{} of {readers} slow downloads started in {:.1} s{}",
            opened.open,
            opened.opening.as_secs_f64(),
            if opened.failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {:?}", opened.failed)
            }
        );
        downloads = Some(opened);
    }
    let after = settled_memory(pid, Duration::from_secs(120)).await.unwrap();
    let (queued, sockets) = kernel_send_queue(relay.port()).unwrap_or_default();
    let shared = if streamed { 0 } else { size };
    let growth = after.rss.saturating_sub(before.rss);
    let running = curls
        .iter_mut()
        .map(|c| c.try_wait())
        .filter(|status| matches!(status, Ok(None)))
        .count();
    let open = downloads.as_ref().map_or(running, |d| d.open).max(1) as u64;
    let per = growth.saturating_sub(shared) / open;
    let peak_per = after.hwm.saturating_sub(before.rss).saturating_sub(shared) / open;
    println!(
        "relay with them: VmRSS {} (settled: {}), VmHWM {}",
        mib(after.rss),
        after.settled,
        mib(after.hwm)
    );
    println!(
        "per slow download: {:.1} KiB of RSS ({:.1} KiB at the peak){}",
        per as f64 / 1024.0,
        peak_per as f64 / 1024.0,
        if streamed {
            String::new()
        } else {
            format!(", the shared bundle ({}) left out", mib(size))
        }
    );
    println!(
        "kernel send queues of the relay: {} over {sockets} connections ({:.1} KiB each; not in RSS)",
        mib(queued),
        queued as f64 / 1024.0 / sockets.max(1) as f64
    );
    if let Some(downloads) = &downloads {
        println!(
            "body bytes the slow downloads read after their heads: {}",
            downloads.bytes_read()
        );
    }
    let (_, rss_end) = memory(pid).unwrap_or_default();
    drop(downloads);
    for mut child in curls {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!(
        "RESULT readers={} streamed={} bundle_bytes={size} rss_before_kib={} rss_after_kib={} \
         hwm_kib={} per_reader_kib={:.1} peak_per_reader_kib={:.1} kernel_send_queue_kib={} \
         fast_h1_mibs={:.0} fast_h1_parallel_mibs={:.0} fast_h1_cpu_ms_per_mib={:.2} \
         fast_h2_mibs={:.0} fast_h2_parallel_mibs={:.0} fast_h2_cpu_ms_per_mib={:.2} rss_end_kib={}",
        open,
        u8::from(streamed),
        before.rss / 1024,
        after.rss / 1024,
        after.hwm / 1024,
        per as f64 / 1024.0,
        peak_per as f64 / 1024.0,
        queued / 1024,
        fast[0].0,
        fast[0].1,
        fast[0].2,
        fast[1].0,
        fast[1].1,
        fast[1].2,
        rss_end / 1024,
    );
}
