//! The watch channel under load: what 10,000 open watchers cost the relay in memory, and how
//! long one new bundle takes to reach all of them.
//!
//! Talks to a relay that is already running (`tests/bench/vs-nginx` starts one and runs this
//! program against it):
//!
//! 1. opens `WATCHERS` TLS connections (at most `OPEN_CONCURRENCY` handshakes at a time), each
//!    a raw HTTP/1.1 `GET /api/v1/feeds/watch` with basic auth, and waits until every one has
//!    its response headers (200, `text/event-stream`);
//! 2. reads the relay's `VmRSS` from `/proc/RELAY_PID/status`, and its `relay_watchers` gauge;
//! 3. uploads `UPLOAD_FILE` (a bundle with sequence `EXPECT_SEQUENCE`), noting the instant the
//!    request is sent and the instant its 201 arrives;
//! 4. notes the instant each watcher reads the `data:` line of the event for that sequence,
//!    and prints the time from the 201, and from sending the upload, to the last watcher's
//!    event, then the relay's RSS again.
//!
//! Environment: `RELAY_URL` (https://127.0.0.1:18443; an `http://` URL talks plain HTTP to a
//! relay run with `--insecure-http`, to tell TLS's share of the memory), `RELAY_CA` (PEM), `RELAY_USER`,
//! `RELAY_PASSWORD`, `RELAY_PID`, `UPLOAD_FILE`; optional `WATCHERS` (10000),
//! `EXPECT_SEQUENCE` (2), `OPEN_CONCURRENCY` (200), `EVENT_TIMEOUT_SECS` (60).
//! The process needs more than `WATCHERS` file descriptors (`ulimit -n`).
//!
//! The last line of output is machine-readable: `RESULT key=value ...`.
//!
//! Build and run: `cargo bench -p relay --bench watchers` with the environment set (without
//! `RELAY_URL` it prints a note and does nothing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsConnector;

/// A watcher's connection: TLS, or plain TCP for an `http://` URL.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Settings {
    url: reqwest::Url,
    tls: bool,
    addr: String,
    host: String,
    ca: PathBuf,
    user: String,
    password: String,
    pid: Option<u32>,
    watchers: usize,
    upload: PathBuf,
    sequence: u64,
    concurrency: usize,
    event_timeout: Duration,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("watchers: set {name} (see the top of relay/benches/watchers.rs)");
        std::process::exit(2)
    })
}

fn optional<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("watchers: {name}={v} is not valid");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let url: reqwest::Url = required("RELAY_URL").parse().expect("RELAY_URL is a URL");
        let host = url.host_str().expect("RELAY_URL has a host").to_owned();
        let port = url.port_or_known_default().expect("RELAY_URL has a port");
        Self {
            addr: format!("{host}:{port}"),
            tls: url.scheme() == "https",
            host,
            url,
            ca: required("RELAY_CA").into(),
            user: required("RELAY_USER"),
            password: required("RELAY_PASSWORD"),
            pid: std::env::var("RELAY_PID").ok().and_then(|p| p.parse().ok()),
            watchers: optional("WATCHERS", 10_000),
            upload: required("UPLOAD_FILE").into(),
            sequence: optional("EXPECT_SEQUENCE", 2),
            concurrency: optional("OPEN_CONCURRENCY", 200),
            event_timeout: Duration::from_secs(optional("EVENT_TIMEOUT_SECS", 60)),
        }
    }
}

/// How every watcher connects, and what it sends and waits for.
struct Dial {
    connector: TlsConnector,
    addr: String,
    name: ServerName<'static>,
    request: Vec<u8>,
    tls: bool,
    sequence: u64,
}

/// What a watcher task reports.
enum Msg {
    /// Response headers received: 200, `text/event-stream`.
    Ready,
    /// Could not open the channel (connect, TLS, status, headers).
    OpenFailed(String),
    /// Read the `data:` line of the awaited event.
    Event(Instant),
    /// The channel ended or broke before the event came.
    Lost(String),
}

fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("installing the ring crypto provider");
    // Without a relay to talk to, step aside, so that `cargo bench -p relay` (every bench)
    // still succeeds.
    if std::env::var_os("RELAY_URL").is_none() {
        eprintln!("watchers: RELAY_URL is not set; skipped (tests/bench/vs-nginx runs this bench)");
        return;
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let code = runtime.block_on(run(settings));
    // Dropping the runtime closes the open watch connections.
    drop(runtime);
    std::process::exit(code);
}

async fn run(s: Settings) -> i32 {
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.ca)
        .expect("reading RELAY_CA")
        .collect::<Result<_, _>>()
        .expect("parsing RELAY_CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in &ca_certs {
        roots.add(cert.clone()).expect("adding the CA certificate");
    }
    let tls_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(tls_config));
    let server_name = ServerName::try_from(s.host.clone()).expect("RELAY_URL host as TLS name");
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.user, s.password));
    let request = format!(
        "GET /api/v1/feeds/watch HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {credentials}\r\n\
         Accept: text/event-stream\r\nUser-Agent: relay-bench-watchers\r\n\r\n",
        s.addr
    )
    .into_bytes();

    let rss_idle = rss(s.pid);
    println!(
        "relay VmRSS before the watchers: {}",
        rss_idle.map_or_else(|| "unknown (RELAY_PID unset?)".into(), fmt_kib)
    );

    // 1. Open the watchers, `concurrency` handshakes at a time.
    let dial = Arc::new(Dial {
        connector,
        addr: s.addr.clone(),
        name: server_name,
        request,
        tls: s.tls,
        sequence: s.sequence,
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let gate = Arc::new(Semaphore::new(s.concurrency.max(1)));
    let started = Instant::now();
    for _ in 0..s.watchers {
        tokio::spawn(watcher(Arc::clone(&dial), Arc::clone(&gate), tx.clone()));
    }
    drop(tx);

    let mut ready = 0usize;
    let mut open_failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut early: Vec<Msg> = Vec::new();
    let open_deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while ready + open_failed.values().sum::<usize>() < s.watchers {
        match tokio::time::timeout_at(open_deadline, rx.recv()).await {
            Ok(Some(Msg::Ready)) => ready += 1,
            Ok(Some(Msg::OpenFailed(e))) => *open_failed.entry(e).or_default() += 1,
            Ok(Some(other)) => early.push(other),
            Ok(None) | Err(_) => break,
        }
    }
    let open_time = started.elapsed();
    println!(
        "watchers: {ready}/{} open (200, text/event-stream) after {:.2} s",
        s.watchers,
        open_time.as_secs_f64()
    );
    for (error, n) in &open_failed {
        println!("  {n} failed to open: {error}");
    }
    let lost_early = early.iter().filter(|m| matches!(m, Msg::Lost(_))).count();
    if lost_early > 0 {
        println!("  {lost_early} channels ended before the upload");
    }

    // Let the relay settle (allocator, idle tasks) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = rss(s.pid);
    let client = reqwest::Client::builder()
        .tls_certs_only(
            ca_certs
                .iter()
                .map(|c| reqwest::Certificate::from_der(c).expect("CA certificate for reqwest")),
        )
        .no_proxy()
        .build()
        .expect("building the HTTP client");
    let gauge = relay_watchers_gauge(&client, &s).await;
    println!(
        "relay VmRSS with {ready} watchers: {}; relay_watchers gauge: {}",
        rss_open.map_or_else(|| "unknown".into(), fmt_kib),
        gauge.map_or_else(|| "unknown".into(), |g| g.to_string())
    );

    // 2. Upload the next bundle; the clock runs from here.
    let body = tokio::fs::read(&s.upload)
        .await
        .expect("reading UPLOAD_FILE");
    let upload_bytes = body.len();
    let url = s.url.join("/api/v1/feeds/bundle").expect("upload URL");
    let sent = Instant::now();
    let response = client
        .put(url)
        .basic_auth(&s.user, Some(&s.password))
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await;
    let answered = Instant::now();
    let status = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            if status != 201 {
                let text = r.text().await.unwrap_or_default();
                println!("upload: HTTP {status}, expected 201: {text}");
            }
            status
        }
        Err(e) => {
            println!("upload failed: {e}");
            0
        }
    };
    println!(
        "upload: {upload_bytes} bytes, HTTP {status} after {:.3} s",
        (answered - sent).as_secs_f64()
    );

    // 3. Collect every watcher's event instant.
    let mut events: Vec<Instant> = early
        .iter()
        .filter_map(|m| match m {
            Msg::Event(at) => Some(*at),
            _ => None,
        })
        .collect();
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();
    let event_deadline = tokio::time::Instant::now() + s.event_timeout;
    while events.len() + lost.values().sum::<usize>() < ready {
        match tokio::time::timeout_at(event_deadline, rx.recv()).await {
            Ok(Some(Msg::Event(at))) => events.push(at),
            Ok(Some(Msg::Lost(e))) => *lost.entry(e).or_default() += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    events.sort();
    let delivered = events.len();
    println!(
        "event: {delivered}/{ready} watchers read the data line of sequence {}",
        s.sequence
    );
    for (error, n) in &lost {
        println!("  {n} channels lost: {error}");
    }
    let signed = |a: Instant, b: Instant| {
        if b >= a {
            (b - a).as_secs_f64()
        } else {
            -(a - b).as_secs_f64()
        }
    };
    let (from_201, from_send, first_from_201, median_from_201) = match events.last() {
        Some(&last) => (
            signed(answered, last),
            signed(sent, last),
            signed(answered, events[0]),
            signed(answered, events[delivered / 2]),
        ),
        None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    };
    println!(
        "  from the 201 to the first / median / last watcher's event: {first_from_201:.3} / \
         {median_from_201:.3} / {from_201:.3} s (negative: before the 201 arrived)"
    );
    println!("  from sending the upload to the last watcher's event: {from_send:.3} s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss(s.pid);
    let hwm = hwm(s.pid);
    println!(
        "relay VmRSS after the event: {}; peak (VmHWM) so far: {}",
        rss_after.map_or_else(|| "unknown".into(), fmt_kib),
        hwm.map_or_else(|| "unknown".into(), fmt_kib)
    );
    let kib = |v: Option<u64>| v.map_or_else(|| "NA".into(), |v| v.to_string());
    println!(
        "RESULT watchers={} opened={ready} open_secs={:.3} rss_idle_kib={} rss_kib={} \
         rss_after_kib={} hwm_kib={} gauge={} upload_status={status} delivered={delivered} \
         from_201_s={from_201:.4} from_send_s={from_send:.4}",
        s.watchers,
        open_time.as_secs_f64(),
        kib(rss_idle),
        kib(rss_open),
        kib(rss_after),
        kib(hwm),
        gauge.map_or_else(|| "NA".into(), |g| g.to_string()),
    );
    i32::from(status != 201)
}

/// One watch channel: open it (holding a `gate` permit until the headers are in), then read
/// the event stream until the awaited sequence's `data:` line, then keep the connection
/// open until the process ends.
async fn watcher(dial: Arc<Dial>, gate: Arc<Semaphore>, tx: mpsc::UnboundedSender<Msg>) {
    let permit = gate.acquire_owned().await.expect("semaphore open");
    let opened = async {
        let tcp = TcpStream::connect(&dial.addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let mut io: Box<dyn Io> = if dial.tls {
            Box::new(
                dial.connector
                    .connect(dial.name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?,
            )
        } else {
            Box::new(tcp)
        };
        io.write_all(&dial.request)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        io.flush()
            .await
            .map_err(|e| format!("flush: {}", e.kind()))?;
        let mut reader = BufReader::with_capacity(4096, io);
        let chunked = read_head(&mut reader).await?;
        Ok::<_, String>((reader, chunked))
    }
    .await;
    drop(permit);
    let (mut reader, chunked) = match opened {
        Ok(v) => v,
        Err(e) => {
            let _ = tx.send(Msg::OpenFailed(e));
            return;
        }
    };
    let _ = tx.send(Msg::Ready);
    match read_events(&mut reader, chunked, dial.sequence).await {
        Ok(()) => {
            let _ = tx.send(Msg::Event(Instant::now()));
            // Hold the channel open: closing it now would add work to the relay while
            // the other watchers are still being served.
            let mut sink = [0u8; 1024];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        }
        Err(e) => {
            let _ = tx.send(Msg::Lost(e));
        }
    }
}

/// Reads the status line and headers; checks 200 and `text/event-stream`. Returns whether
/// the body is chunked.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Result<bool, String> {
    let mut line = String::new();
    let mut read = async |line: &mut String| {
        line.clear();
        match reader.read_line(line).await {
            Ok(0) => Err("connection closed in the response head".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("reading the head: {}", e.kind())),
        }
    };
    read(&mut line).await?;
    let status = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    if status != "200" {
        return Err(format!("HTTP status {status}, expected 200"));
    }
    let (mut event_stream, mut chunked) = (false, false);
    loop {
        read(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-type" && value.starts_with("text/event-stream") {
                event_stream = true;
            }
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    if !event_stream {
        return Err("content-type is not text/event-stream".to_owned());
    }
    Ok(chunked)
}

/// Reads the event stream (de-chunking it if needed) until a `data:` line whose JSON has
/// `"sequence": sequence`.
async fn read_events<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    chunked: bool,
    sequence: u64,
) -> Result<(), String> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if chunked {
            let mut size_line = String::new();
            match reader.read_line(&mut size_line).await {
                Ok(0) => return Err("channel closed before the event".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading: {}", e.kind())),
            }
            let hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| format!("bad chunk size line {size_line:?}"))?;
            if size == 0 {
                return Err("stream ended before the event".to_owned());
            }
            buf.resize(size + 2, 0);
            reader
                .read_exact(&mut buf)
                .await
                .map_err(|e| format!("reading a chunk: {}", e.kind()))?;
            buf.truncate(size);
        } else {
            buf.resize(4096, 0);
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading: {}", e.kind()))?;
            if n == 0 {
                return Err("channel closed before the event".to_owned());
            }
            buf.truncate(n);
        }
        pending.extend_from_slice(&buf);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(data) = line.trim_end().strip_prefix("data:")
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(data.trim())
                && value.get("sequence").and_then(serde_json::Value::as_u64) == Some(sequence)
            {
                return Ok(());
            }
        }
    }
}

/// The relay's own count of open watch channels (`relay_watchers` on `/metrics`).
async fn relay_watchers_gauge(client: &reqwest::Client, s: &Settings) -> Option<i64> {
    let text = client
        .get(s.url.join("/metrics").ok()?)
        .basic_auth(&s.user, Some(&s.password))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("relay_watchers "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

fn hwm(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn fmt_kib(kib: u64) -> String {
    format!(
        "{:.1} MB ({:.1} MiB)",
        kib as f64 * 1024.0 / 1e6,
        kib as f64 / 1024.0
    )
}
