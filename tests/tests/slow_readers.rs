//! Downloaders that stop reading cannot make the relay hold much for them (issue 13, item
//! 12). 200 TLS connections to a real `relay serve` each ask for a bundle of several MB,
//! read the response head and then nothing more; once the relay's RSS has stopped
//! growing, its growth per connection must stay under a bound. The TLS layer used to
//! queue up to 768 KiB of ciphertext per connection, and a bundle streamed from its file
//! came in 512 KiB chunks: several times these bounds. (`benches/slow_readers.rs` does the
//! same with 2,000 downloaders and prints the figures.)

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use end_to_end::downloaders::{Downloaders, Plan, kernel_send_queue, settled_memory};
use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, generate_key, password, write_large_feeds,
};

const READERS: usize = 200;
/// Larger than what the kernel and the relay together hold for one stalled connection,
/// so every downloader fills its share.
const BUNDLE_MB: u64 = 6;

/// The relay's RSS growth per stalled downloader, in KiB, and a line of figures.
async fn growth_per_reader(streamed: bool) -> (u64, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(tmp.path(), "origin");
    let feeds = tmp.path().join("feeds");
    write_large_feeds(&feeds, BUNDLE_MB);
    let bytes = build_bundle(&feeds, &secret, 1, &tmp.path().join("bundle.tar.gz"));
    let size = bytes.len() as u64;

    let mut config = RelayConfig::ordinary(&[&public]);
    // Streamed: a cache smaller than the bundle, so each download reads the file.
    let cache: u64 = if streamed { 1 << 20 } else { 256 << 20 };
    config.storage = format!("memory_cache_bytes = {cache}\n");
    config.listen = "idle_timeout = \"10m\"\n".into();
    let relay = RelayProcess::start("relay", &tmp.path().join("relay"), &config);
    let (status, body) = relay.upload("uploader", bytes).await;
    assert_eq!(status, 201, "{body}");
    let pid = relay.pid().unwrap();
    let before = settled_memory(pid, Duration::from_secs(10)).await.unwrap();

    let readers = Downloaders::open(Plan {
        addr: format!("127.0.0.1:{}", relay.port()).parse().unwrap(),
        ca: relay.ca(),
        path: "/api/v1/feeds/bundle".into(),
        user: "reader".into(),
        password: password("reader"),
        count: READERS,
        concurrency: 50,
        read_bytes: 0,
        read_every: Duration::ZERO,
    })
    .await;
    assert!(
        readers.open == READERS && readers.failed.is_empty(),
        "{} of {READERS} downloads started; failures: {:?}\n{}",
        readers.open,
        readers.failed,
        relay.tail(20)
    );
    let after = settled_memory(pid, Duration::from_secs(60)).await.unwrap();
    let (queued, sockets) = kernel_send_queue(relay.port()).unwrap_or_default();
    // The current bundle, when served from memory, is held once for all downloads.
    let shared = if streamed { 0 } else { size };
    let growth = after.rss.saturating_sub(before.rss).saturating_sub(shared);
    let per_reader = growth / READERS as u64 / 1024;
    let figures = format!(
        "{} bundle of {size} bytes, {READERS} stalled downloads: RSS {} -> {} KiB (settled: {}), \
         peak {} KiB, {per_reader} KiB per download; kernel send queues {} KiB over {sockets} sockets",
        if streamed { "streamed" } else { "in-memory" },
        before.rss / 1024,
        after.rss / 1024,
        after.settled,
        after.hwm / 1024,
        queued / 1024,
    );
    println!("{figures}");
    drop(readers);
    (per_reader, figures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_downloads_of_the_current_bundle_hold_a_bounded_buffer_each() {
    // The TLS write queue (64 KiB), rustls's and hyper's state: about 100 KiB measured;
    // 750 KiB before the queue was capped.
    const BOUND_KIB: u64 = 192;
    let (per_reader, figures) = growth_per_reader(false).await;
    assert!(per_reader <= BOUND_KIB, "over {BOUND_KIB} KiB: {figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_downloads_of_a_streamed_bundle_hold_a_bounded_buffer_each() {
    // As above, and the 64 KiB file chunk hyper holds: about 120 KiB measured; 1.3 MiB
    // before (512 KiB chunks).
    const BOUND_KIB: u64 = 256;
    let (per_reader, figures) = growth_per_reader(true).await;
    assert!(per_reader <= BOUND_KIB, "over {BOUND_KIB} KiB: {figures}");
}
