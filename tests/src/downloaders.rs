//! Downloaders that hardly read: TLS connections to a relay that each ask for a bundle
//! over HTTP/1.1, read the response head, and then take a little now and then, or
//! nothing. Their sockets are made as a slow client's would be (a small receive buffer,
//! and an Ethernet-sized MSS, set before connect), so the kernel absorbs little on either
//! side and what is left waits in the relay's own buffers: what the relay holds per
//! connection then is what the tests and benches measure, from outside
//! ([`settled_memory`], [`kernel_send_queue`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// `SO_RCVBUF` of a downloader's socket (Linux doubles it).
const RECEIVE_BUFFER: usize = 4096;
/// The MSS a downloader announces: Ethernet's, rather than loopback's 64 KiB, whose
/// send buffers the kernel would size for a fast local peer.
const MSS: u32 = 1460;
/// Time allowed to connect, shake hands and read the response head.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Who downloads what, how many, and how slowly.
#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    /// The relay's CA (PEM).
    pub ca: PathBuf,
    /// The path requested, e.g. `/api/v1/feeds/bundle`.
    pub path: String,
    pub user: String,
    pub password: String,
    pub count: usize,
    /// Connections opened at once.
    pub concurrency: usize,
    /// Bytes of body each downloader asks for every `read_every` once it has the head;
    /// 0: it never reads again.
    pub read_bytes: usize,
    pub read_every: Duration,
}

/// Open downloaders; dropping this closes their connections.
pub struct Downloaders {
    /// Connections whose response head said 200.
    pub open: usize,
    /// Why the others failed, and how many each.
    pub failed: BTreeMap<String, usize>,
    /// How long opening them all took.
    pub opening: Duration,
    read: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Downloaders {
    /// Opens `plan.count` downloaders and returns once each has its response head or has
    /// failed.
    pub async fn open(plan: Plan) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dial = Arc::new(Dial::new(&plan));
        let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
        let read = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(plan.count);
        let mut heads = Vec::with_capacity(plan.count);
        for _ in 0..plan.count {
            let (tx, rx) = oneshot::channel();
            heads.push(rx);
            tasks.push(tokio::spawn(downloader(
                Arc::clone(&dial),
                Arc::clone(&gate),
                tx,
                Arc::clone(&read),
            )));
        }
        let mut open = 0;
        let mut failed = BTreeMap::new();
        for head in heads {
            match head.await {
                Ok(Ok(())) => open += 1,
                Ok(Err(e)) => *failed.entry(e).or_default() += 1,
                Err(_) => *failed.entry("task ended".to_owned()).or_default() += 1,
            }
        }
        Self {
            open,
            failed,
            opening: started.elapsed(),
            read,
            tasks,
        }
    }

    /// Body bytes read by all downloaders after their heads.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl Drop for Downloaders {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every downloader connects to and sends.
struct Dial {
    addr: SocketAddr,
    connector: TlsConnector,
    request: Vec<u8>,
    read_bytes: usize,
    read_every: Duration,
}

impl Dial {
    fn new(plan: &Plan) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&plan.ca).expect("read the relay's CA") {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("add the relay's CA");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", plan.user, plan.password));
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {credentials}\r\n\
             User-Agent: slow-reader\r\n\r\n",
            plan.path, plan.addr
        );
        Self {
            addr: plan.addr,
            connector: TlsConnector::from(Arc::new(config)),
            request: request.into_bytes(),
            read_bytes: plan.read_bytes,
            read_every: plan.read_every,
        }
    }
}

async fn downloader(
    dial: Arc<Dial>,
    gate: Arc<Semaphore>,
    head: oneshot::Sender<Result<(), String>>,
    read: Arc<AtomicU64>,
) {
    let opened = {
        let _permit = gate.acquire().await;
        match tokio::time::timeout(OPEN_TIMEOUT, open_one(&dial)).await {
            Ok(result) => result,
            Err(_) => Err("timed out before the response head".to_owned()),
        }
    };
    let mut tls = match opened {
        Ok(tls) => tls,
        Err(e) => {
            let _ = head.send(Err(e));
            return;
        }
    };
    let _ = head.send(Ok(()));
    if dial.read_bytes == 0 {
        // Holds the connection, reading nothing, until dropped.
        std::future::pending::<()>().await;
    }
    let mut buf = vec![0u8; dial.read_bytes];
    loop {
        tokio::time::sleep(dial.read_every).await;
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Connects as a slow client, sends the request and reads up to the end of the response
/// head, which must say 200. Errors are short, so that they can be counted by kind.
async fn open_one(dial: &Dial) -> Result<TlsStream<TcpStream>, String> {
    let tcp = slow_socket(dial.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address is a server name");
    let mut tls = dial
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tls.write_all(&dial.request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = tls
            .read(&mut buf)
            .await
            .map_err(|e| format!("response: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".to_owned());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > 16 * 1024 {
            return Err("response head too long".to_owned());
        }
    }
    let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("status: {}", String::from_utf8_lossy(status)));
    }
    Ok(tls)
}

/// A TCP connection to `addr` with a small receive buffer and MSS, both set before
/// connecting so that the handshake announces them.
async fn slow_socket(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
    socket.set_tcp_mss(MSS)?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.connect(addr).await
}

/// A process's memory once it has stopped changing.
#[derive(Clone, Copy, Debug)]
pub struct Settled {
    /// `VmRSS`, bytes.
    pub rss: u64,
    /// `VmHWM` (peak RSS), bytes.
    pub hwm: u64,
    /// True if RSS held still (within 1% or 1 MiB over 2 s) before `limit` ran out;
    /// false: these are the last figures read.
    pub settled: bool,
}

/// Reads the memory of process `pid` every 250 ms until its RSS holds still for 2 s, or
/// until `limit` has passed. None if the process is gone.
pub async fn settled_memory(pid: u32, limit: Duration) -> Option<Settled> {
    const WINDOW: usize = 8;
    let deadline = Instant::now() + limit;
    let mut samples: Vec<u64> = Vec::new();
    loop {
        let (hwm, rss) = crate::relays::memory(pid)?;
        samples.push(rss);
        let recent = &samples[samples.len().saturating_sub(WINDOW)..];
        let spread = recent.iter().max().unwrap_or(&0) - recent.iter().min().unwrap_or(&0);
        let settled = recent.len() == WINDOW && spread <= (rss / 100).max(1 << 20);
        if settled || Instant::now() >= deadline {
            return Some(Settled { rss, hwm, settled });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Bytes waiting in the kernel's send queues of the established TCP connections whose
/// local port is `port` (a server's side of its connections), and how many there are,
/// from `/proc/net/tcp`. This memory is the kernel's, not part of the process's RSS.
pub fn kernel_send_queue(port: u16) -> Option<(u64, usize)> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let mut bytes = 0;
    let mut sockets = 0;
    for line in text.lines().skip(1) {
        // sl local_address rem_address st tx_queue:rx_queue ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(queues)) =
            (fields.get(1), fields.get(3), fields.get(4))
        else {
            continue;
        };
        let local_port = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if local_port != Some(port) || *state != "01" {
            continue;
        }
        if let Some(tx) = queues
            .split(':')
            .next()
            .and_then(|q| u64::from_str_radix(q, 16).ok())
        {
            bytes += tx;
            sockets += 1;
        }
    }
    Some((bytes, sockets))
}
