//! Projects, measured with real relay processes on 127.0.0.1.
//!
//! (a) Freshness through a project: origin -> central -> 3 supervisors (central follows the
//!     origin over its watch channel and pushes to the supervisors). 20 uploads to the
//!     origin; for each, the time from the origin's 201 until all three supervisors serve
//!     it. Each supervisor's own watch channel, opened before the upload, says when: it
//!     announces a bundle once it is committed and current (no polling interval to blur
//!     the figure). Goal: p95 <= 1 s.
//! (b) Fan-out: central with 50 supervisors (each its own process) and a 64 MiB bundle
//!     (OSV records whose `details` is base64 of random bytes, like tests/bench/vs-nginx),
//!     uploaded to central directly. The time until all 50 hold it, central's peak RSS
//!     (`VmHWM`), and the CPU central, the supervisors and the machine used meanwhile.
//!     All 51 relays share this machine, so the time is bounded by the supervisors'
//!     receiving and verifying (50 x 64 MiB) on its cores; central's own CPU and memory
//!     are what a real fleet, one supervisor per machine, would see.
//!
//! Run: `cargo bench -p end-to-end --bench projects`. Knobs (environment): UPLOADS (20),
//! SUPERVISORS (50), BUNDLE_MIB (64). The last line is `RESULT key=value ...`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use end_to_end::relays::{
    MachineCpu, RelayConfig, RelayProcess, build_bundle, cpu_time, generate_key, memory, password,
    poll, projects_section, supervisor_config, supervisor_entry, upstream_source,
};
use end_to_end::workspace_root;
use futures_util::StreamExt;

const MIB: f64 = 1024.0 * 1024.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let uploads = knob("UPLOADS", 20) as u64;
    let fanout = knob("SUPERVISORS", 50);
    let bundle_mib = knob("BUNDLE_MIB", 64);
    let root = tempfile::tempdir().unwrap();
    let (key, public) = generate_key(root.path(), "origin");

    let latencies = freshness(root.path(), &key, &public, uploads).await;
    let fan = fan_out(root.path(), &key, &public, fanout, bundle_mib).await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let (p50, p95, max) = (pct(0.50), pct(0.95), *latencies.last().unwrap());
    let mib = fan.bundle_bytes as f64 / MIB;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / fan.cpu.machine.total.as_secs_f64();
    let row = |label: &str, figure: String, goal: &str| {
        println!("{}", format!("{label:<62} {figure:>12}  {goal}").trim_end());
    };
    println!();
    row("measure", "figure".into(), "goal");
    row(
        &format!("(a) origin -> central -> 3 supervisors, {uploads} uploads to the origin,"),
        String::new(),
        "",
    );
    row(
        "    from the origin's 201 until all 3 serve it: p50",
        format!("{:.1} ms", ms(p50)),
        "",
    );
    let verdict = if p95 <= Duration::from_secs(1) {
        "met"
    } else {
        "MISSED"
    };
    row(
        "    p95",
        format!("{:.1} ms", ms(p95)),
        &format!("<= 1000 ms  {verdict}"),
    );
    row("    max", format!("{:.1} ms", ms(max)), "");
    row(
        &format!(
            "(b) fan-out of a {mib:.1} MiB bundle to {} supervisors:",
            fan.supervisors
        ),
        String::new(),
        "",
    );
    row(
        "    upload to central, until its 201",
        format!("{:.2} s", fan.upload.as_secs_f64()),
        "",
    );
    row(
        "    from central's 201 until the first supervisor holds it",
        format!("{:.2} s", fan.first.as_secs_f64()),
        "",
    );
    row(
        &format!(
            "    from central's 201 until all {} hold it",
            fan.supervisors
        ),
        format!("{:.2} s", fan.all.as_secs_f64()),
        "",
    );
    row(
        "    delivered over all supervisors",
        format!(
            "{:.1} MiB/s",
            fan.supervisors as f64 * mib / fan.all.as_secs_f64()
        ),
        "",
    );
    row(
        "    central peak RSS (VmHWM; idle before the upload)",
        format!("{:.1} MiB", fan.central_peak as f64 / MIB),
        &format!("({:.1} MiB)", fan.central_idle as f64 / MIB),
    );
    row(
        "    largest supervisor peak RSS (VmHWM)",
        format!("{:.1} MiB", fan.supervisor_peak as f64 / MIB),
        "",
    );
    row(
        "    CPU used by central",
        format!("{:.1} s", fan.cpu.central.as_secs_f64()),
        "",
    );
    row(
        &format!("    CPU used by the {} supervisors", fan.supervisors),
        format!("{:.1} s", fan.cpu.supervisors.as_secs_f64()),
        "",
    );
    row(
        &format!(
            "    machine busy, of {} cores (iowait)",
            std::thread::available_parallelism().map_or(0, usize::from)
        ),
        format!("{:.0}%", share(fan.cpu.machine.busy)),
        &format!("({:.0}%)", share(fan.cpu.machine.iowait)),
    );
    println!(
        "RESULT uploads={uploads} p50_ms={:.1} p95_ms={:.1} max_ms={:.1} fanout_supervisors={} bundle_mib={:.1} upload_s={:.2} fanout_first_s={:.2} fanout_all_s={:.2} central_peak_rss_mib={:.1} central_idle_rss_mib={:.1} supervisor_peak_rss_mib={:.1} central_cpu_s={:.1} supervisors_cpu_s={:.1} machine_busy_pct={:.0} machine_iowait_pct={:.0}",
        ms(p50),
        ms(p95),
        ms(max),
        fan.supervisors,
        fan.bundle_bytes as f64 / MIB,
        fan.upload.as_secs_f64(),
        fan.first.as_secs_f64(),
        fan.all.as_secs_f64(),
        fan.central_peak as f64 / MIB,
        fan.central_idle as f64 / MIB,
        fan.supervisor_peak as f64 / MIB,
        fan.cpu.central.as_secs_f64(),
        fan.cpu.supervisors.as_secs_f64(),
        share(fan.cpu.machine.busy),
        share(fan.cpu.machine.iowait),
    );
}

/// (a): sorted latencies, one per upload after a first one that sets the chain up.
async fn freshness(root: &Path, key: &Path, public: &Path, uploads: u64) -> Vec<Duration> {
    eprintln!("(a) starting origin, 3 supervisors, central");
    let dir = root.join("freshness");
    let quiet = |mut c: RelayConfig| {
        c.log = "warn".into();
        c
    };
    let origin = RelayProcess::start(
        "origin",
        &dir.join("origin"),
        &quiet(RelayConfig::ordinary(&[public])),
    );
    let supervisors: Vec<RelayProcess> = ["east", "west", "north"]
        .iter()
        .map(|n| RelayProcess::start(n, &dir.join(n), &quiet(supervisor_config(public))))
        .collect();
    let mut config = quiet(RelayConfig::ordinary(&[public]));
    config.extra = upstream_source(&origin) + &projects_section(8, "200ms", "1s");
    for s in &supervisors {
        config.extra += &supervisor_entry(s, &password("central"));
    }
    let central = RelayProcess::start("central", &dir.join("central"), &config);

    let feeds = workspace_root().join("relay/samples/feeds");
    let bundles: Vec<Vec<u8>> = (1..=uploads + 1)
        .map(|seq| build_bundle(&feeds, key, seq, &dir.join(format!("bundle-{seq}.tar.gz"))))
        .collect();

    let mut latencies = Vec::new();
    for (i, bundle) in bundles.into_iter().enumerate() {
        let sequence = i as u64 + 1;
        let mut watches = Vec::new();
        for s in &supervisors {
            watches.push(announcement(s, sequence - 1, sequence).await);
        }
        let (status, body) = origin.upload("uploader", bundle).await;
        assert_eq!(status, 201, "origin: {body}");
        let uploaded = Instant::now();
        let mut last = uploaded;
        for watch in watches {
            last = last.max(watch.await.unwrap());
        }
        // The first upload sets up the chain (central's source connects, pushes start).
        if sequence > 1 {
            latencies.push(last.saturating_duration_since(uploaded));
        }
    }
    // Every supervisor serves the last one, and central agrees.
    for s in &supervisors {
        let manifest = s
            .get_json("/api/v1/feeds/manifest", "reader")
            .await
            .unwrap();
        assert_eq!(manifest["sequence"], uploads + 1, "{}", s.name);
    }
    central_agrees(&central).await;
    latencies.sort();
    latencies
}

struct FanOut {
    supervisors: usize,
    bundle_bytes: u64,
    upload: Duration,
    first: Duration,
    all: Duration,
    central_idle: u64,
    central_peak: u64,
    supervisor_peak: u64,
    /// From the start of the upload until the last supervisor holds the bundle.
    cpu: Cpu,
}

struct Cpu {
    central: Duration,
    supervisors: Duration,
    machine: MachineCpu,
}

/// (b): one large bundle uploaded to central, pushed to `count` supervisors.
async fn fan_out(root: &Path, key: &Path, public: &Path, count: usize, mib: usize) -> FanOut {
    let dir = root.join("fan-out");
    eprintln!("(b) building a {mib} MiB bundle");
    let feeds = dir.join("feeds");
    write_random_osv(&feeds.join("osv/bench.jsonl"), mib);
    let bundle_path = dir.join("big.tar.gz");
    let bundle = build_bundle(&feeds, key, 1, &bundle_path);
    std::fs::remove_dir_all(&feeds).unwrap();
    let bundle_bytes = bundle.len() as u64;

    eprintln!("(b) starting {count} supervisors and central");
    let supervisors: Vec<RelayProcess> = (0..count)
        .map(|i| {
            let name = format!("s{i:02}");
            let mut config = supervisor_config(public);
            config.log = "warn".into();
            RelayProcess::start(&name, &dir.join(&name), &config)
        })
        .collect();
    let mut config = RelayConfig::ordinary(&[public]);
    config.log = "warn".into();
    config.extra = projects_section(8, "200ms", "1s");
    for s in &supervisors {
        config.extra += &supervisor_entry(s, &password("central"));
    }
    let central = RelayProcess::start("central", &dir.join("central"), &config);
    let central_pid = central.pid().unwrap();
    // Central's credential cache and connections are cold; its status answers once it
    // has started its push tasks.
    poll(Duration::from_secs(30), async || {
        let status = central.status().await?;
        match status["supervisors"].as_array() {
            Some(list) if list.len() == count => Ok(()),
            _ => Err(format!("central lists no {count} supervisors: {status}")),
        }
    })
    .await
    .unwrap();
    let central_idle = memory(central_pid).unwrap().0;

    let mut watches = Vec::new();
    for s in &supervisors {
        watches.push(announcement(s, 0, 1).await);
    }
    eprintln!(
        "(b) uploading {:.1} MiB to central",
        bundle_bytes as f64 / MIB
    );
    let supervisors_cpu =
        || -> Duration { supervisors.iter().filter_map(|s| cpu_time(s.pid()?)).sum() };
    let cpu_before = (
        cpu_time(central_pid).unwrap(),
        supervisors_cpu(),
        MachineCpu::now().unwrap(),
    );
    let started = Instant::now();
    let (status, body) = central.upload("uploader", bundle).await;
    assert_eq!(status, 201, "central: {body}");
    let uploaded = Instant::now();
    let mut arrivals = Vec::new();
    for watch in watches {
        arrivals.push(watch.await.unwrap().saturating_duration_since(uploaded));
    }
    let cpu = Cpu {
        central: cpu_time(central_pid).unwrap() - cpu_before.0,
        supervisors: supervisors_cpu() - cpu_before.1,
        machine: MachineCpu::now().unwrap().since(&cpu_before.2),
    };
    arrivals.sort();
    let central_peak = memory(central_pid).unwrap().0;
    let supervisor_peak = supervisors
        .iter()
        .filter_map(|s| memory(s.pid()?).map(|m| m.0))
        .max()
        .unwrap_or(0);
    central_agrees(&central).await;
    FanOut {
        supervisors: count,
        bundle_bytes,
        upload: uploaded - started,
        first: arrivals[0],
        all: *arrivals.last().unwrap(),
        central_idle,
        central_peak,
        supervisor_peak,
        cpu,
    }
}

/// Central's status shows no supervisor behind. It records a delivery when the
/// supervisor's 201 reaches it, a moment after the supervisor announced the bundle.
async fn central_agrees(central: &RelayProcess) {
    poll(Duration::from_secs(30), async || {
        let status = central.status().await?;
        if status["supervisors_behind"] == 0 {
            Ok(())
        } else {
            Err(format!("central: supervisors behind: {status}"))
        }
    })
    .await
    .unwrap();
}

/// Opens `relay`'s watch channel holding `after`, and returns a task that ends with the
/// instant `sequence` was announced. The channel is open when this returns, so nothing
/// committed later is missed.
async fn announcement(
    relay: &RelayProcess,
    after: u64,
    sequence: u64,
) -> tokio::task::JoinHandle<Instant> {
    let mut request = relay
        .client()
        .get(format!("{}/api/v1/feeds/watch", relay.url))
        .basic_auth("reader", Some(password("reader")));
    if after > 0 {
        request = request.header("last-event-id", after.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{}: watch", relay.name);
    let name = relay.name.clone();
    tokio::spawn(async move {
        let wanted = format!("\"sequence\":{sequence}");
        let mut stream = response.bytes_stream();
        let mut seen = String::new();
        while !seen.contains(&wanted) {
            let chunk = tokio::time::timeout(Duration::from_secs(600), stream.next())
                .await
                .unwrap_or_else(|_| panic!("{name} never announced {sequence}"))
                .unwrap_or_else(|| panic!("{name}: the watch channel ended"))
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        Instant::now()
    })
}

/// About `mib` MiB of random bytes as base64 in OSV records, 768 bytes (1024 characters)
/// per record: deflate cannot shrink it much below the random bytes.
fn write_random_osv(path: &Path, mib: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut chunk = [0u8; 768];
    for n in 0..(mib * 1024 * 1024).div_ceil(chunk.len()) {
        random.read_exact(&mut chunk).unwrap();
        writeln!(
            out,
            r#"{{"id":"BENCH-{n}","modified":"2026-01-01T00:00:00Z","details":"{}","affected":[{{"package":{{"ecosystem":"PyPI","name":"bench-{}"}},"versions":["1.0.0"]}}]}}"#,
            base64(&chunk),
            n % 1000
        )
        .unwrap();
    }
    out.flush().unwrap();
}

/// Standard base64 with padding (the bench needs nothing more).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
