//! Runtime defense throughput (issue 7, item 7): `observe` + `Engine::evaluate` over a
//! recorded stream of 1.2 million mixed events, against a feed of 100,000 domains and
//! 100,000 IP ranges. The goal is 1 million events per second on one core.
//!
//! `cargo bench -p defender-lite --bench evaluate`. Everything is generated here from a
//! fixed seed, so runs are comparable: the feed, 20 images with their usual behaviour,
//! 200 containers, and a recording (JSON lines, the `--events` form, in a temp file) in
//! which the images behave as usual, then, after the learning period, now and then do
//! something new (a shell, a listener on 4444, an IRC port), talk to the feed's
//! addresses and domains, open raw sockets, and scan ports. The verdicts are counted, so
//! a run shows the engine detecting, not only running.
//!
//! What is timed, separately: building the feed sets from feed text, writing their index
//! files and opening them; one streaming pass as `--events` runs (read, parse, decide,
//! one event at a time: its peak RSS is the agent's); parsing alone (`EventReader` into a
//! `Vec`); and the decision path alone (`observe` + `evaluate`) over the events already
//! in memory, on the main thread, three passes with a fresh engine each, without a model
//! store (sled write-through is the runner's cost, paid only when a model changes).
//! Generating the recording is not timed. Plain `main`, no harness: the figures are
//! printed, the last line is `RESULT ...` for scripts. A `verdict digest` line
//! fingerprints every decision, so a performance change can show it changed none.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use defender_lite::defense::portscan::{PortScanDetector, PortScanSettings};
use defender_lite::defense::rules::{PortRange, Rules};
use defender_lite::defense::{self, Area, Engine, Knowledge};
use defender_lite::feeds::{DomainSet, IpSet, netsets};
use defender_lite::monitor::event::{
    Connect, Container, DnsQuery, Event, EventKind, Exec, Exit, Listen, Proto, RawFamily,
    RawSocket, Source, Syn, Timestamp,
};
use defender_lite::monitor::input::EventReader;

const SEED: u64 = 0x5eed_7e1e_b0a7_0007;
const FEED_DOMAINS: usize = 100_000;
const FEED_RANGES: usize = 100_000;
const EVENTS: usize = 1_200_000;
const CONTAINERS: usize = 200;
/// Simulated time the recording spans, and the learning period of each image's model.
const SPAN_SECS: i64 = 3600;
const LEARNING_SECS: i64 = 600;
/// Unusual behaviour starts after this: what a model learned stays learned.
const ANOMALIES_AFTER_SECS: i64 = 660;
/// The last image's containers start this late, so its model is still learning at the
/// end of the recording (the "most images" of the brief).
const LATE_START_SECS: i64 = 3300;
/// 2026-08-01T00:00:00Z.
const T0_SECS: i64 = 1_785_542_400;
const EVALUATE_PASSES: usize = 3;

const RULES: &str = r#"
[[rules]]
name = "web tier"
scope = { images = ["nginx:*", "httpd:*", "traefik:*"] }
processes = { effect = "prevent", deny = ["nc*", "/tmp/*"] }
outbound_ips = { effect = "block", deny = ["203.0.113.0/24"] }
dns = { allow = ["internal.example"], deny = ["*.pastebin.example"] }
port_scan = { effect = "block" }

[[rules]]
name = "network tools"
scope = { images = ["nicolaka/netshoot:*"] }
raw_sockets = { effect = "disable" }
port_scan = { effect = "disable" }

[[rules]]
name = "batch jobs"
scope = { containers = ["batch-*"] }
listening_ports = { effect = "disable" }
outbound_ports = { allow = ["1024-65535/tcp"] }
"#;

fn main() -> Result<()> {
    let mut rng = Rng(SEED);
    println!("defense evaluate benchmark (issue 7 item 7)");

    // The feed, as text, then as the sets the engine uses.
    let feed = Feed::generate(&mut rng);
    let t = Instant::now();
    let (domains, bad_domains) = DomainSet::from_feed_text(&feed.domains_text);
    let domains_text_time = t.elapsed();
    let t = Instant::now();
    let (ips, bad_ips) = IpSet::from_feed_text(&feed.ips_text);
    let ips_text_time = t.elapsed();
    if !bad_domains.is_empty() || !bad_ips.is_empty() {
        bail!("generated feed has bad lines: {bad_domains:?} {bad_ips:?}");
    }
    // The index files as `sync` writes them, then opened (mapped) as the monitor does.
    let index_dir = tempfile::tempdir().context("temp dir")?;
    let at = index_dir.path();
    std::fs::write(at.join("domains.txt"), &feed.domains_text)?;
    std::fs::write(at.join("ips.txt"), &feed.ips_text)?;
    let t = Instant::now();
    netsets::write_domain_index(at, &["domains.txt".into()], &at.join("domains.fst"), at)?;
    netsets::write_ip_index(at, &["ips.txt".into()], &at.join("ips.bin"))?;
    let index_write_time = t.elapsed();
    let t = Instant::now();
    let domains_again = DomainSet::open(&at.join("domains.fst"), None)?;
    let domains_index_time = t.elapsed();
    let t = Instant::now();
    let ips_again = IpSet::open(&at.join("ips.bin"), None)?;
    let ips_index_time = t.elapsed();
    if domains_again.len() != domains.len() || ips_again != ips {
        bail!("index round trip changed the feed sets");
    }
    drop((domains_again, ips_again, index_dir));
    println!(
        "feed: {} domains ({} KiB text), {} IP entries ({} KiB text) -> {} disjoint ranges",
        domains.len(),
        feed.domains_text.len() / 1024,
        FEED_RANGES,
        feed.ips_text.len() / 1024,
        ips.len()
    );
    println!(
        "feed load from feed text: domains {}, ips {}",
        ms(domains_text_time),
        ms(ips_text_time)
    );
    println!(
        "index files: written in {}; opened: domains {} (DomainSet::open), ips {} (IpSet::open)",
        ms(index_write_time),
        ms(domains_index_time),
        ms(ips_index_time)
    );

    // The recording.
    let world = World::new(&mut rng, &domains, &ips);
    let dir = tempfile::tempdir().context("temp dir")?;
    let path = dir.path().join("recording.jsonl");
    let t = Instant::now();
    let written = world.record(&mut rng, &feed, &path)?;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "recording: {} events, {} MiB of JSON lines, {} containers of {} images, generated in {} (not timed below)",
        written.total,
        bytes / (1024 * 1024),
        CONTAINERS,
        world.images.len(),
        ms(t.elapsed())
    );
    println!("  mix: {}", written.mix());
    let knowledge = Knowledge {
        domains,
        ips,
        app_ports: world.app_ports(),
    };
    let rss_before_events = status_kib("VmRSS:");
    let rules = Rules::parse(RULES, "bench-rules.toml")?;

    // As the agent runs `--events FILE`: read, parse, decide, one event at a time, so
    // memory stays what the agent needs (the peak RSS the issue asks about).
    let mut engine = Engine::new(
        rules.clone(),
        knowledge.clone(),
        None,
        LEARNING_SECS,
        PortScanDetector::new(PortScanSettings::default()),
    )?;
    let (mut streamed, mut stream_verdicts) = (0usize, 0u64);
    let t = Instant::now();
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    for item in EventReader::new(BufReader::with_capacity(1 << 16, file)) {
        let event = match item? {
            Ok(e) => e,
            Err(bad) => bail!("the recording has a bad line: {bad}"),
        };
        streamed += 1;
        if let Some(obs) = defense::observe(&event)
            && engine.evaluate(&obs)?.is_some()
        {
            stream_verdicts += 1;
        }
    }
    let stream_time = t.elapsed();
    let stream_peak = status_kib("VmHWM:");
    drop(engine);
    println!(
        "stream (read + parse + observe + evaluate, one event at a time, as `--events`): {} events in {}: {:.0} events/s, {} verdicts; peak RSS so far {} MiB",
        streamed,
        ms(stream_time),
        streamed as f64 / stream_time.as_secs_f64(),
        stream_verdicts,
        stream_peak / 1024
    );

    // Parsing alone: `--events` input, from the file (page cache) into memory.
    let t = Instant::now();
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut reader = EventReader::new(BufReader::with_capacity(1 << 20, file));
    let mut events = Vec::with_capacity(written.total);
    for item in reader.by_ref() {
        match item? {
            Ok(e) => events.push(e),
            Err(bad) => bail!("the recording has a bad line: {bad}"),
        }
    }
    let parse_time = t.elapsed();
    if events.len() != written.total {
        bail!("read {} events, wrote {}", events.len(), written.total);
    }
    let parse_rate = events.len() as f64 / parse_time.as_secs_f64();
    println!(
        "parse (EventReader, JSON lines -> Vec<Event>, one thread): {} events in {}: {:.0} events/s, {:.0} MiB/s",
        events.len(),
        ms(parse_time),
        parse_rate,
        bytes as f64 / (1024.0 * 1024.0) / parse_time.as_secs_f64()
    );

    // The decision path: a fresh engine per pass (each learns from the first slice, then
    // enforces), no model store.
    println!(
        "engine: {} rules (+ default), learning period {LEARNING_SECS} s per image, no sled model store; evaluating on the main thread",
        rules.len() - 1
    );
    let mut times = Vec::new();
    let mut counts = Counts::default();
    for pass in 0..EVALUATE_PASSES {
        let mut engine = Engine::new(
            rules.clone(),
            knowledge.clone(),
            None,
            LEARNING_SECS,
            PortScanDetector::new(PortScanSettings::default()),
        )?;
        let mut c = Counts::default();
        let t = Instant::now();
        for event in &events {
            let Some(obs) = defense::observe(event) else {
                c.not_judged += 1;
                continue;
            };
            if let Some(v) = engine.evaluate(&obs)? {
                c.add(&v);
            }
        }
        let elapsed = t.elapsed();
        std::hint::black_box(&c);
        let learning = engine
            .models()
            .filter(|m| m.learning(T0_SECS + SPAN_SECS))
            .count();
        println!(
            "  pass {}: {} in {}: {:.0} events/s ({} verdicts; {} of {} models still learning at the end)",
            pass + 1,
            events.len(),
            ms(elapsed),
            events.len() as f64 / elapsed.as_secs_f64(),
            c.total(),
            learning,
            engine.models().count()
        );
        times.push(elapsed);
        counts = c;
    }
    times.sort();
    let median = times[times.len() / 2];
    let rate = events.len() as f64 / median.as_secs_f64();
    println!(
        "evaluate (observe + Engine::evaluate): median {:.0} events/s, best {:.0} events/s, {:.0} ns/event",
        rate,
        events.len() as f64 / times[0].as_secs_f64(),
        median.as_nanos() as f64 / events.len() as f64
    );
    println!(
        "verdicts by area ({} of {} events; {} events not judged: exits):",
        counts.total(),
        events.len(),
        counts.not_judged
    );
    for (area, n) in &counts.by_area {
        println!(
            "  {:<16} {:>7}  e.g. [{}] {}",
            area.as_str(),
            n,
            counts.example_rule[area],
            counts.example[area]
        );
    }
    let mut effects: Vec<_> = counts.by_effect.iter().collect();
    effects.sort();
    println!(
        "verdicts by effect: {}",
        effects
            .iter()
            .map(|(e, n)| format!("{}={n}", e.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("verdict digest: {:016x}", counts.digest);
    println!(
        "expected from the recording: {} feed-domain queries, {} feed-address connections, {} scan bursts (of which {} in a port_scan-disabled image)",
        written.feed_dns, written.feed_ip, written.scans, written.scans_disabled
    );

    let peak = status_kib("VmHWM:");
    println!(
        "memory: RSS {} MiB with the feed sets loaded; peak RSS (VmHWM) {} MiB while streaming (the agent's case), {} MiB in all, which includes the {} events held in memory for the timed passes",
        rss_before_events / 1024,
        stream_peak / 1024,
        peak / 1024,
        events.len()
    );
    if counts.total() == 0 {
        bail!("no verdicts: the benchmark detected nothing");
    }
    println!(
        "RESULT events={} events_per_sec={:.0} parse_events_per_sec={:.0} stream_events_per_sec={:.0} peak_rss_mb={} stream_peak_rss_mb={} verdicts={}",
        events.len(),
        rate,
        parse_rate,
        streamed as f64 / stream_time.as_secs_f64(),
        peak / 1024,
        stream_peak / 1024,
        counts.total()
    );
    Ok(())
}

/// SplitMix64: a few lines, deterministic, good enough to shuffle a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "zu", "mi", "tor", "rex", "lo", "vin", "qa", "sel", "dar", "xo", "pen", "ul", "bri",
    "fan", "gor", "hex", "jin", "kol", "nym",
];
const FEED_TLDS: &[&str] = &[
    "com", "net", "org", "info", "xyz", "top", "biz", "ru", "io", "cc",
];

/// The generated feed, as text, and what the recording draws its bad traffic from.
struct Feed {
    domains_text: String,
    ips_text: String,
    domain_list: Vec<String>,
    /// (first address, host bits) per entry.
    nets: Vec<(IpAddr, u32)>,
}

impl Feed {
    fn generate(rng: &mut Rng) -> Feed {
        let mut domains_text = String::from("# generated known-bad domains\n");
        let mut domain_list = Vec::with_capacity(FEED_DOMAINS);
        for i in 0..FEED_DOMAINS {
            let mut name = String::new();
            if rng.chance(0.2) {
                let sub: &&str = rng.pick(&["cdn.", "login.", "update.", "api."]);
                name.push_str(sub);
            }
            for _ in 0..2 + rng.below(2) {
                let syllable: &&str = rng.pick(SYLLABLES);
                name.push_str(syllable);
            }
            name.push_str(&format!("{i}.{}", rng.pick(FEED_TLDS)));
            domains_text.push_str(&name);
            domains_text.push('\n');
            domain_list.push(name);
        }
        let mut ips_text = String::from("# generated known-bad addresses and ranges\n");
        let mut nets = Vec::with_capacity(FEED_RANGES);
        for _ in 0..FEED_RANGES {
            let r = rng.next();
            // First octets 11..=99 and 150..=223: never the private ranges and the
            // benign public pool (100..=149) the containers use.
            let first = if r.is_multiple_of(2) {
                11 + (r >> 8) % 89
            } else {
                150 + (r >> 8) % 74
            } as u32;
            let v4 = (first << 24) | ((r >> 16) as u32 & 0x00ff_ffff);
            let (ip, host_bits) = match rng.below(100) {
                0..60 => (IpAddr::V4(Ipv4Addr::from(v4)), 0),
                60..80 => (IpAddr::V4(Ipv4Addr::from(v4 & !0xff)), 8),
                80..85 => (IpAddr::V4(Ipv4Addr::from(v4 & !0xffff)), 16),
                85..92 => (
                    v6(0x2a0b_0000 | (r >> 40) as u32 & 0xffff, rng.next(), 0),
                    0,
                ),
                92..97 => (v6(0x2a0b_0000 | (r >> 40) as u32 & 0xffff, 0, 0), 64),
                _ => (v6(0x2a0c_0000 | (r >> 40) as u32 & 0xffff, 0, 16), 80),
            };
            let prefix = match ip {
                IpAddr::V4(_) => 32 - host_bits,
                IpAddr::V6(_) => 128 - host_bits,
            };
            if host_bits == 0 {
                ips_text.push_str(&format!("{ip}\n"));
            } else {
                ips_text.push_str(&format!("{ip}/{prefix}\n"));
            }
            nets.push((ip, host_bits));
        }
        Feed {
            domains_text,
            ips_text,
            domain_list,
            nets,
        }
    }

    /// An address inside a random feed entry.
    fn bad_ip(&self, rng: &mut Rng) -> IpAddr {
        let (ip, host_bits) = *rng.pick(&self.nets);
        let bits = rng.next() & ((1u64 << host_bits.min(63)) - 1);
        match ip {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | bits as u32)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | u128::from(bits))),
        }
    }
}

/// An IPv6 address: a 32-bit prefix, 64 interface bits, and a /48-style middle.
fn v6(prefix: u32, iid: u64, middle: u16) -> IpAddr {
    let n = (u128::from(prefix) << 96) | (u128::from(middle) << 80) | u128::from(iid);
    IpAddr::V6(Ipv6Addr::from(n))
}

/// What an image's containers usually do.
struct Image {
    name: String,
    exes: Vec<String>,
    listen: Vec<(Proto, u16)>,
    /// Usual destinations: (address, port).
    remotes: Vec<(IpAddr, u16)>,
    names: Vec<String>,
    /// Raw sockets are its job (the rules disable the area for it).
    raw_ok: bool,
    /// The image whose model is still learning at the end.
    late: bool,
}

struct Host {
    container: Option<Arc<Container>>,
    image: usize,
    ip: IpAddr,
    ip6: IpAddr,
}

impl Host {
    /// The local address towards `remote`, of its family.
    fn source_for(&self, remote: IpAddr) -> IpAddr {
        match remote {
            IpAddr::V4(_) => self.ip,
            IpAddr::V6(_) => self.ip6,
        }
    }
}

struct World {
    images: Vec<Image>,
    hosts: Vec<Host>,
}

const IMAGES: &[(&str, &[&str], &[u16])] = &[
    (
        "nginx:1.27",
        &["/usr/sbin/nginx", "/docker-entrypoint.sh"],
        &[80, 443],
    ),
    ("httpd:2.4", &["/usr/local/apache2/bin/httpd"], &[80]),
    ("redis:7.2", &["/usr/local/bin/redis-server"], &[6379]),
    (
        "postgres:16",
        &["/usr/lib/postgresql/16/bin/postgres", "/usr/bin/pg_isready"],
        &[5432],
    ),
    ("mysql:8.4", &["/usr/sbin/mysqld"], &[3306, 33060]),
    ("mongo:7", &["/usr/bin/mongod"], &[27017]),
    (
        "rabbitmq:3.13",
        &["/opt/erlang/bin/beam.smp"],
        &[5672, 15672],
    ),
    (
        "python:3.12-slim",
        &["/usr/local/bin/python3.12", "/usr/local/bin/gunicorn"],
        &[8000],
    ),
    (
        "node:22",
        &["/usr/local/bin/node", "/usr/local/bin/npm"],
        &[3000],
    ),
    (
        "eclipse-temurin:21",
        &["/opt/java/openjdk/bin/java"],
        &[8080],
    ),
    (
        "golang:1.23",
        &["/app/server", "/usr/local/go/bin/go"],
        &[9090],
    ),
    ("alpine:3.20", &["/bin/busybox", "/usr/bin/crond"], &[]),
    ("busybox:1.36", &["/bin/sh", "/bin/sleep"], &[]),
    ("traefik:3.1", &["/usr/local/bin/traefik"], &[80, 443, 8080]),
    (
        "grafana/grafana:11",
        &["/usr/share/grafana/bin/grafana"],
        &[3000],
    ),
    ("prom/prometheus:v2.54", &["/bin/prometheus"], &[9090]),
    (
        "elasticsearch:8.15",
        &["/usr/share/elasticsearch/jdk/bin/java"],
        &[9200, 9300],
    ),
    ("memcached:1.6", &["/usr/local/bin/memcached"], &[11211]),
    (
        "nicolaka/netshoot:v0.13",
        &["/usr/bin/ping", "/usr/bin/curl", "/usr/bin/tcpdump"],
        &[],
    ),
    ("late-deploy/app:1.0", &["/app/bin/app"], &[8081]),
];

const BENIGN_SUFFIXES: &[&str] = &[
    "svc.cluster.local",
    "amazonaws.com",
    "googleapis.com",
    "docker.io",
    "internal.example",
    "github.com",
    "cloudfront.net",
    "pypi.org",
];

impl World {
    fn new(rng: &mut Rng, domains: &DomainSet, ips: &IpSet) -> World {
        // Benign destinations: none of them may be in the feed.
        let mut pool_ips = Vec::new();
        while pool_ips.len() < 3000 {
            let ip = if rng.chance(0.85) {
                let first = if rng.chance(0.5) {
                    10
                } else {
                    100 + rng.below(50) as u32
                };
                IpAddr::V4(Ipv4Addr::from(
                    (first << 24) | (rng.next() as u32 & 0x00ff_ffff),
                ))
            } else {
                v6(0x2001_0db8 + rng.below(4) as u32, rng.next(), 7)
            };
            if !ips.contains(ip) {
                pool_ips.push(ip);
            }
        }
        let mut pool_names = Vec::new();
        while pool_names.len() < 3000 {
            let name = format!(
                "{}{}.{}",
                rng.pick(SYLLABLES),
                rng.below(100_000),
                rng.pick(BENIGN_SUFFIXES)
            );
            if domains.matches(&name).is_none() {
                pool_names.push(name);
            }
        }
        let images: Vec<Image> = IMAGES
            .iter()
            .map(|(name, exes, ports)| {
                let mut exes: Vec<String> = exes.iter().map(|e| (*e).to_owned()).collect();
                exes.push("/bin/sh".into());
                let ports_out = [443u16, 80, 5432, 6379, 9200, 53, 8080];
                Image {
                    name: (*name).to_owned(),
                    exes,
                    listen: ports.iter().map(|p| (Proto::Tcp, *p)).collect(),
                    remotes: (0..5 + rng.below(40))
                        .map(|_| {
                            let ports = &ports_out[..2 + rng.below(5)];
                            (*rng.pick(&pool_ips), *rng.pick(ports))
                        })
                        .collect(),
                    names: (0..5 + rng.below(30))
                        .map(|_| rng.pick(&pool_names).clone())
                        .collect(),
                    raw_ok: name.starts_with("nicolaka/netshoot"),
                    late: name.starts_with("late-deploy"),
                }
            })
            .collect();
        let mut hosts = Vec::with_capacity(CONTAINERS + 1);
        for i in 0..CONTAINERS {
            let image = i % images.len();
            let short = images[image]
                .name
                .rsplit('/')
                .next()
                .and_then(|s| s.split(':').next())
                .unwrap_or("app");
            // Every tenth container is a batch job (the "batch jobs" rule).
            let name = if i % 10 == 7 {
                format!("batch-{short}-{i}")
            } else {
                format!("{short}-{i}")
            };
            let id = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rng.next(),
                rng.next(),
                rng.next(),
                rng.next()
            );
            hosts.push(Host {
                container: Some(Arc::new(Container {
                    id,
                    name: Some(name),
                    image: Some(images[image].name.clone()),
                    labels: Vec::new(),
                })),
                image,
                ip: IpAddr::V4(Ipv4Addr::new(172, 17, (i / 250) as u8, (i % 250 + 2) as u8)),
                ip6: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16 + 2)),
            });
        }
        // The host itself: behaves like the first image, without a container.
        hosts.push(Host {
            container: None,
            image: 0,
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            ip6: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        });
        World { images, hosts }
    }

    fn app_ports(&self) -> HashMap<String, Vec<PortRange>> {
        // The feed's app knowledge covers a few images: their configured ports are
        // expected without being learned.
        self.images
            .iter()
            .filter(|i| {
                ["nginx", "redis", "postgres"]
                    .iter()
                    .any(|p| i.name.starts_with(p))
            })
            .map(|i| {
                let ports = i
                    .listen
                    .iter()
                    .map(|(_, p)| PortRange {
                        low: *p,
                        high: *p,
                        proto: None,
                    })
                    .collect();
                (i.name.clone(), ports)
            })
            .collect()
    }

    /// Writes the recording; returns what it holds.
    fn record(&self, rng: &mut Rng, feed: &Feed, path: &std::path::Path) -> Result<Written> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut w = Written::default();
        let step_ns = i128::from(SPAN_SECS) * 1_000_000_000 / EVENTS as i128;
        // Scan bursts: (start index, source host); the last two from the host-side
        // scanner outside any container, two from netshoot (port_scan disabled).
        let netshoot = self.images.iter().position(|i| i.raw_ok).unwrap_or(0);
        let mut bursts: Vec<(usize, Option<usize>)> = (0..8)
            .map(|k| {
                let start = EVENTS / 5 + k * EVENTS / 10;
                let src = if k < 2 {
                    netshoot + self.images.len() * (1 + k)
                } else {
                    rng.below(CONTAINERS)
                };
                (start, Some(src))
            })
            .collect();
        bursts.extend([(EVENTS / 3, None), (EVENTS * 2 / 3, None)]);
        let scanner = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 66));
        const BURST: usize = 120;
        let mut i = 0;
        while i < EVENTS {
            let ts_ns = i128::from(T0_SECS) * 1_000_000_000
                + i as i128 * step_ns
                + (rng.below(1000) as i128);
            let secs = (ts_ns / 1_000_000_000) as i64 - T0_SECS;
            let ts = Timestamp(ts_ns);
            if let Some((start, src)) = bursts.iter().find(|(s, _)| (*s..*s + BURST).contains(&i)) {
                // A vertical scan: one source, BURST distinct ports on one host, in a
                // fraction of a second; one event per step, as it would be recorded.
                let (container, src_ip) = match src {
                    Some(h) => (self.hosts[*h].container.clone(), self.hosts[*h].ip),
                    None => (None, scanner),
                };
                if i == *start {
                    w.scans += 1;
                    if src.is_some_and(|h| self.hosts[h].image == netshoot) {
                        w.scans_disabled += 1;
                    }
                }
                let port = 1 + (i - start) as u16 * 7;
                let event = Event {
                    ts,
                    source: Source::Capture,
                    kind: EventKind::Syn(Syn {
                        src: SocketAddr::new(src_ip, 40000 + rng.below(20000) as u16),
                        dst: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2)), port),
                        interface: Some("docker0".into()),
                    }),
                    container,
                    attributed_by: None,
                    entered: None,
                };
                w.count(&event);
                serde_json::to_writer(&mut out, &event)?;
                out.write_all(b"\n")?;
                i += 1;
                continue;
            }
            // A host that exists at this time: the late image's containers only after
            // LATE_START_SECS; 3% of events are the host's own.
            let h = loop {
                let h = if rng.chance(0.03) {
                    CONTAINERS
                } else {
                    rng.below(CONTAINERS)
                };
                if !self.images[self.hosts[h].image].late || secs >= LATE_START_SECS {
                    break h;
                }
            };
            let host = &self.hosts[h];
            let img = &self.images[host.image];
            let odd = secs >= ANOMALIES_AFTER_SECS;
            let ephemeral = || 32768 + (i % 28000) as u16;
            let r = rng.below(1000);
            let (source, kind) = match r {
                // 30% DNS.
                0..300 => {
                    let name = if rng.chance(0.003) {
                        w.feed_dns += 1;
                        let d = rng.pick(&feed.domain_list);
                        if rng.chance(0.5) {
                            d.clone()
                        } else {
                            format!("{}.{d}", rng.pick(&["c2", "x", "beacon", "a.b"]))
                        }
                    } else if odd && rng.chance(0.002) {
                        format!("new{}.{}", rng.below(50), rng.pick(BENIGN_SUFFIXES))
                    } else {
                        rng.pick(&img.names).clone()
                    };
                    let qtype = if rng.chance(0.7) { "A" } else { "AAAA" };
                    (
                        Source::Capture,
                        EventKind::DnsQuery(DnsQuery {
                            name,
                            qtype: qtype.into(),
                            proto: Proto::Udp,
                            src: SocketAddr::new(host.ip, ephemeral()),
                            dst: "127.0.0.11:53".parse()?,
                            interface: Some("docker0".into()),
                        }),
                    )
                }
                // 30% connections.
                300..600 => {
                    let (remote, port) = if rng.chance(0.003) {
                        w.feed_ip += 1;
                        (feed.bad_ip(rng), 443)
                    } else if odd && rng.chance(0.002) {
                        (rng.pick(&img.remotes).0, *rng.pick(&[6667, 4444, 9001]))
                    } else {
                        *rng.pick(&img.remotes)
                    };
                    let local = host.source_for(remote);
                    (
                        Source::ProcNet,
                        EventKind::Connect(Connect {
                            proto: Proto::Tcp,
                            local: SocketAddr::new(local, ephemeral()),
                            remote: SocketAddr::new(remote, port),
                            pid: Some(1000 + h as u32),
                            inode: rng.next() % 1_000_000,
                            netns: Some(4_026_532_000 + h as u64),
                        }),
                    )
                }
                // 15% exec.
                600..750 => {
                    let exe = if odd && rng.chance(0.005) {
                        (*rng.pick(&["/usr/bin/nc.openbsd", "/tmp/.x/xmrig", "/usr/bin/wget"]))
                            .to_owned()
                    } else {
                        rng.pick(&img.exes).clone()
                    };
                    let comm: String = exe
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(15)
                        .collect();
                    (
                        Source::Connector,
                        EventKind::Exec(Exec {
                            pid: 1000 + rng.below(60000) as u32,
                            ppid: Some(1),
                            uid: Some(0),
                            argv: vec![comm.clone(), "--config".into(), "/etc/app.conf".into()],
                            comm,
                            exe: Some(exe),
                        }),
                    )
                }
                // 10% SYNs: the usual destinations.
                750..850 => {
                    let (remote, port) = *rng.pick(&img.remotes);
                    let src = host.source_for(remote);
                    (
                        Source::Capture,
                        EventKind::Syn(Syn {
                            src: SocketAddr::new(src, ephemeral()),
                            dst: SocketAddr::new(remote, port),
                            interface: Some("docker0".into()),
                        }),
                    )
                }
                // 10% listening sockets (seen again on every /proc pass).
                850..950 => {
                    let (proto, port) = if odd && rng.chance(0.005) {
                        (Proto::Tcp, *rng.pick(&[4444, 31337, 1337]))
                    } else if img.listen.is_empty() {
                        (Proto::Udp, 68)
                    } else {
                        *rng.pick(&img.listen)
                    };
                    (
                        Source::ProcNet,
                        EventKind::Listen(Listen {
                            proto,
                            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                            pid: Some(1000 + h as u32),
                            inode: rng.next() % 1_000_000,
                            netns: Some(4_026_532_000 + h as u64),
                        }),
                    )
                }
                // Raw sockets: ping and tcpdump in netshoot; rarely a packet socket
                // elsewhere.
                950..953 if img.raw_ok || rng.chance(0.1) => (
                    Source::ProcNet,
                    EventKind::RawSocket(RawSocket {
                        family: if img.raw_ok {
                            RawFamily::Inet
                        } else {
                            RawFamily::Packet
                        },
                        protocol: if img.raw_ok { 1 } else { 3 },
                        pid: Some(1000 + h as u32),
                        inode: rng.next() % 1_000_000,
                        netns: Some(4_026_532_000 + h as u64),
                    }),
                ),
                // The rest: exits.
                _ => (
                    Source::Connector,
                    EventKind::Exit(Exit {
                        pid: 1000 + rng.below(60000) as u32,
                        code: Some(0),
                        signal: None,
                    }),
                ),
            };
            let event = Event {
                ts,
                source,
                kind,
                container: host.container.clone(),
                attributed_by: None,
                entered: None,
            };
            w.count(&event);
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n")?;
            i += 1;
        }
        out.flush()?;
        Ok(w)
    }
}

/// What the recording holds.
#[derive(Default)]
struct Written {
    total: usize,
    kinds: HashMap<&'static str, usize>,
    feed_dns: usize,
    feed_ip: usize,
    scans: usize,
    scans_disabled: usize,
}

impl Written {
    fn count(&mut self, e: &Event) {
        self.total += 1;
        *self.kinds.entry(e.kind.name()).or_default() += 1;
    }

    fn mix(&self) -> String {
        let mut kinds: Vec<_> = self.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        kinds
            .iter()
            .map(|(k, n)| format!("{k} {:.2}%", **n as f64 * 100.0 / self.total as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Verdicts by area and effect, with one example reason per area.
#[derive(Default)]
struct Counts {
    by_area: Vec<(Area, u64)>,
    by_effect: HashMap<defense::Effect, u64>,
    example: HashMap<Area, String>,
    example_rule: HashMap<Area, String>,
    not_judged: u64,
    /// FNV-1a over every verdict in order: the same digest before and after a change
    /// to the engine means the same decisions, word for word.
    digest: u64,
}

impl Counts {
    fn add(&mut self, v: &defense::Verdict) {
        match self.by_area.iter_mut().find(|(a, _)| *a == v.area) {
            Some((_, n)) => *n += 1,
            None => {
                self.by_area.push((v.area, 1));
                self.example.insert(v.area, v.reason.clone());
                self.example_rule.insert(v.area, v.rule.clone());
            }
        }
        *self.by_effect.entry(v.effect).or_default() += 1;
        let text = format!(
            "{}|{}|{}|{}|{:?}\n",
            v.area.as_str(),
            v.effect.as_str(),
            v.rule,
            v.reason,
            v.pid
        );
        if self.digest == 0 {
            self.digest = 0xcbf2_9ce4_8422_2325;
        }
        for b in text.bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn total(&self) -> u64 {
        self.by_area.iter().map(|(_, n)| n).sum()
    }
}

/// A `/proc/self/status` field in KiB (0 if it cannot be read: not Linux).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
