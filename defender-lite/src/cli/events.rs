//! `defender-lite events`: prints the runtime event stream, from the host or from a
//! JSON-lines file. The `monitor` command judges the same stream; this one only shows it,
//! so sensors and permissions can be checked on a host before enforcing.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::Outcome;
use crate::monitor::event::Event;
use crate::monitor::input::EventReader;
use crate::monitor::proc_connector::ProcessConfig;
use crate::monitor::{Monitor, MonitorConfig};

/// Arguments of `defender-lite events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Capture DNS queries and SYNs on this interface (repeat for several; `lo` works).
    #[arg(long = "interface", short = 'i', value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Print JSON lines (the schema of EVENTS.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read events from a JSON-lines file (`-` for stdin) instead of watching the host.
    /// Bad lines are reported on stderr with their line number and skipped.
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
    /// Leave out what was already running and listening at start.
    #[arg(long)]
    pub no_snapshot: bool,
    /// Process and socket `/proc` pass interval, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub scan_every: f64,
    /// Use `/proc` passes only, not the netlink process connector.
    #[arg(long)]
    pub no_connector: bool,
    /// Docker Engine API socket, for container names and images.
    #[arg(long, value_name = "PATH", default_value = crate::monitor::docker::DEFAULT_SOCKET)]
    pub docker_socket: PathBuf,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,
}

/// Runs the command; `CheckFailed` when input lines were rejected.
pub fn run(args: EventsArgs) -> anyhow::Result<Outcome> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if let Some(path) = &args.events {
        let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(BufReader::new(io::stdin()))
        } else {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Box::new(BufReader::new(file))
        };
        let mut reader = EventReader::new(input);
        while let Some(item) = reader
            .next_event()
            .with_context(|| format!("reading {}", path.display()))?
        {
            match item {
                Ok(event) => print(&mut out, &event, args.json)?,
                Err(bad) => tracing::warn!("{}: {bad}", path.display()),
            }
        }
        if reader.bad_lines() > 0 {
            tracing::warn!(
                "{}: {} bad line(s) skipped",
                path.display(),
                reader.bad_lines()
            );
        }
        return Ok(Outcome::of_check(reader.bad_lines() == 0));
    }

    let every = Duration::try_from_secs_f64(args.scan_every)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--scan-every must be a positive number of seconds")?;
    let config = MonitorConfig {
        interfaces: args.interfaces.clone(),
        processes: Some(ProcessConfig {
            scan_every: every,
            snapshot: !args.no_snapshot,
            connector: !args.no_connector,
        }),
        sockets_every: Some(every),
        snapshot: !args.no_snapshot,
        docker_socket: Some(args.docker_socket.clone()),
        channel_capacity: 64 * 1024,
    };
    if !args.docker_socket.exists() {
        tracing::warn!(
            "no Docker Engine socket at {}: containers are named by id only",
            args.docker_socket.display()
        );
    }
    let deadline = match args.seconds {
        Some(s) => {
            Some(Duration::try_from_secs_f64(s).context("--seconds must be a positive number")?)
        }
        None => None,
    };
    super::runtime()?.block_on(async {
        let mut monitor = Monitor::start(&config)?;
        let end = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(end);
        let result = loop {
            tokio::select! {
                _ = &mut end => break Ok(()),
                event = monitor.next() => match event {
                    Some(event) => {
                        if let Err(e) = print(&mut out, &event, args.json) {
                            break Err(e);
                        }
                    }
                    None => break Ok(()),
                },
            }
        };
        monitor.stop();
        result
    })?;
    Ok(Outcome::Success)
}

fn print(out: &mut impl Write, event: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, event)?;
        out.write_all(b"\n")?;
    } else {
        writeln!(out, "{event}")?;
    }
    // One event at a time: whoever reads the pipe sees events as they happen.
    out.flush()?;
    Ok(())
}
