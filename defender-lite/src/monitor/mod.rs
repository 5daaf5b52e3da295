//! Runtime events from the host: the input of runtime defense (`defender-lite events`
//! now; models, rules and actions build on the same stream).
//!
//! | module | source | events |
//! |---|---|---|
//! | `proc_connector` | netlink process connector, `/proc` passes behind it | exec, exit, gap |
//! | `procfs` | `/proc/<pid>/net/*` per network namespace, `/proc/<pid>/fd` | listen, connect, raw_socket |
//! | `capture` | libpcap on named interfaces | dns_query, syn, gap |
//! | `input` | a JSON-lines file or stdin from another sensor | any |
//!
//! `event` is the type and its JSON-lines schema; `attribution` (with `docker`) fills in
//! each event's container: from `/proc/<pid>/cgroup` and the Docker Engine API for
//! events that name a process, from the engine's list of container addresses for
//! captured packets (their source address).
//!
//! Each host source is a blocking loop on its own thread that sends into one bounded
//! channel; [`Monitor`] owns the receiving end and attributes events as they come out.
//! Stopping sets a shared flag that every loop checks at least every 200 ms, and drops
//! the receiver, so a loop blocked on a full channel ends too.

pub mod attribution;
pub mod capture;
pub mod docker;
pub mod event;
pub mod input;
pub mod netns;
pub mod proc_connector;
pub mod processes;
pub mod procfs;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use attribution::Attributor;
use capture::{CaptureError, InterfaceCapture};
use docker::DockerClient;
use event::{Event, Source};
use proc_connector::ProcessConfig;
use procfs::{SocketScan, SocketScanner};

/// What to watch.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Interfaces to capture DNS and SYNs on; none means no capture. A name with `*`,
    /// `?` or `[` is a pattern (`veth*`): every interface matching it, now or later, is
    /// captured while it exists.
    pub interfaces: Vec<String>,
    /// Process exec/exit; `None` leaves processes out.
    pub processes: Option<ProcessConfig>,
    /// Socket scan interval; `None` leaves sockets out.
    pub sockets_every: Option<Duration>,
    /// Report what is already there at start (processes, sockets) as `snapshot` events.
    pub snapshot: bool,
    /// Docker Engine API socket, for container names and images; `None` for ids only.
    pub docker_socket: Option<std::path::PathBuf>,
    /// Events buffered between the sources and the consumer.
    pub channel_capacity: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interfaces: Vec::new(),
            processes: Some(ProcessConfig::default()),
            sockets_every: Some(Duration::from_secs(2)),
            snapshot: true,
            docker_socket: Some(docker::DEFAULT_SOCKET.into()),
            channel_capacity: 64 * 1024,
        }
    }
}

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("starting a source thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("interface pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
}

/// The sending end every source uses. `send` returns false once the consumer is gone,
/// which tells the source to end.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Event>,
}

impl Sink {
    pub fn send(&self, event: Event) -> bool {
        self.tx.blocking_send(event).is_ok()
    }
}

/// The running sources and the attributed event stream.
pub struct Monitor {
    rx: mpsc::Receiver<Event>,
    attributor: Attributor,
    /// An attributed event held back while the gap that concerns it goes first.
    held: Option<Event>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Starts every configured source. Captures are opened here, so a missing interface
    /// or missing capability is an error now rather than a silent gap later; the process
    /// connector falls back to `/proc` passes and says so in the stream instead.
    pub fn start(config: &MonitorConfig) -> Result<Monitor, StartError> {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let sink = Sink { tx };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (patterns, names): (Vec<&String>, Vec<&String>) = config
            .interfaces
            .iter()
            .partition(|i| i.contains(['*', '?', '[']));
        let patterns = patterns
            .into_iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| StartError::Pattern {
                    pattern: p.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let captures = names
            .iter()
            .map(|i| InterfaceCapture::open(i))
            .collect::<Result<Vec<_>, _>>()?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(StartError::Thread)
        };
        for (capture, interface) in captures.into_iter().zip(&names) {
            let (sink, stop) = (sink.clone(), stop.clone());
            threads.push(spawn(
                &format!("capture-{interface}"),
                Box::new(move || capture.run(&sink, &stop)),
            )?);
        }
        if !patterns.is_empty() {
            let (sink, stop) = (sink.clone(), stop.clone());
            let named: Vec<String> = names.into_iter().cloned().collect();
            // The first pass opens what exists now before `start` returns.
            let mut watch = capture::Watch::new(patterns, named);
            watch.pass(&sink);
            threads.push(spawn(
                "capture-watch",
                Box::new(move || watch.run(&sink, &stop)),
            )?);
        }
        if let Some(processes) = &config.processes {
            let mut processes = processes.clone();
            processes.snapshot = config.snapshot;
            let (sink, stop) = (sink.clone(), stop.clone());
            let (ready, subscribed) = std::sync::mpsc::channel();
            threads.push(spawn(
                "processes",
                Box::new(move || proc_connector::run(&processes, &sink, &stop, ready)),
            )?);
            // Return once execs can no longer be missed (the connector is subscribed and
            // the first /proc pass is done); a source that takes longer still runs, and
            // its events follow.
            let _ = subscribed.recv_timeout(std::time::Duration::from_secs(5));
        }
        if let Some(every) = config.sockets_every {
            let (sink, stop) = (sink.clone(), stop.clone());
            let snapshot = config.snapshot;
            // The first scan is taken before `start` returns, as the processes' first pass
            // is: a socket opened once the monitor is started is new, never part of what
            // was there before.
            let scanner = SocketScanner::default();
            let first = scanner.scan();
            threads.push(spawn(
                "sockets",
                Box::new(move || run_sockets(scanner, first, every, snapshot, &sink, &stop)),
            )?);
        }
        let docker = config
            .docker_socket
            .as_deref()
            .filter(|p| Path::new(p).exists())
            .map(DockerClient::new);
        Ok(Monitor {
            rx,
            attributor: Attributor::new(docker),
            held: None,
            stop,
            threads,
        })
    }

    /// The next event, attributed to its container; `None` once every source ended.
    /// When the engine fails during attribution, a `gap` saying so comes first, then
    /// the event it left unattributed.
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.held.take() {
            return Some(event);
        }
        let mut event = self.rx.recv().await?;
        self.attributor.attribute(&mut event).await;
        if let Some(gap) = self.attributor.take_gap() {
            self.held = Some(event);
            return Some(gap);
        }
        Some(event)
    }

    /// Stops the sources and waits for their threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.rx);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Socket scans on an interval; each reports the sockets that are new since the last.
fn run_sockets(
    scanner: SocketScanner,
    first: SocketScan,
    every: Duration,
    snapshot: bool,
    sink: &Sink,
    stop: &Arc<AtomicBool>,
) {
    let mut previous = first;
    if snapshot {
        for kind in previous.all() {
            if !sink.send(Event::now(Source::Snapshot, kind)) {
                return;
            }
        }
    }
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100).min(every));
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        let mut current = scanner.scan();
        for kind in current.new_since(&previous) {
            if !sink.send(Event::now(Source::ProcNet, kind)) {
                return;
            }
        }
        previous = current;
    }
}
