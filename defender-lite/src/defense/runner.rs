//! `defender-lite monitor`: runtime defense, running. Events come from the host
//! (`monitor::Monitor`) or from a JSON-lines stream (`--events FILE|-`); each goes through
//! `defense::observe` and `Engine::evaluate`; each verdict is throttled, acted on, and
//! audited (a line on stdout, sled, the JSON-lines file, and the webhook if one is set).
//!
//! What each effect does here:
//!
//! - `alert`: the audit only.
//! - `prevent`: SIGKILL to the offending process (`actions::kill_process`: never pid 0, 1
//!   or the agent). Before the signal, the pid's executable is compared with the one the
//!   exec event named, so a pid reused since is left alone. A DNS lookup cannot be dropped
//!   by a sensor that is not inline, and a port scan is seen on the wire without a pid:
//!   for those, prevent alerts, and the audit says so.
//! - `block`: the container is stopped and kept stopped (`actions::block`). A host
//!   process has no container: the audit says it could not be blocked.
//!
//! `--dry-run` decides and audits but does neither (the audit says what it would have
//! done), for trying rules on a live host or replaying another host's events.
//!
//! Models and audits live in one database, `<data_dir>/runtime.sled` (`store.rs`), which
//! allows one process at a time, so `model` and `audits` say so while the monitor runs. The
//! first time a container of an image is seen, its apps' configured ports are read from
//! its root filesystem (`app_ports`), once per image.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::actions;
use super::app_ports::{self, AppPorts};
use super::audit::{Audit, AuditLog, Throttle, ThrottleSettings};
use super::model::ModelStore;
use super::portscan::{PortScanDetector, PortScanSettings};
use super::rules::Rules;
use super::store::RuntimeDb;
use super::webhook::{Webhook, WebhookSettings};
use super::{Area, Effect, Engine, Knowledge, Verdict};
use crate::config::Config;
use crate::monitor::docker::DockerClient;
use crate::monitor::event::{AttributedBy, Event, EventKind, short_id};
use crate::monitor::input::EventReader;
use crate::monitor::proc_connector::ProcessConfig;
use crate::monitor::{Monitor, MonitorConfig};

/// Where each audit is shown as it is made (the monitor command prints it); an error is
/// said on stderr and never stops enforcement.
pub type AuditSink = Box<dyn FnMut(&Audit) -> std::io::Result<()>>;

/// Arguments of `defender-lite monitor`.
#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// Agent configuration: data_dir, and the [monitor] section.
    #[arg(
        long,
        value_name = "FILE",
        default_value = crate::config::DEFAULT_PATH
    )]
    pub config: PathBuf,
    /// Judge the events of a JSON-lines file (`-` for stdin; schema in EVENTS.md)
    /// instead of watching the host; ends at the end of the input.
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
    /// Runtime rules file, instead of monitor.rules.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Learning period of new models (`2s`, `30m`, `1h`), instead of monitor.learning.
    #[arg(long, value_name = "DURATION")]
    pub learning: Option<String>,
    /// Capture DNS queries and SYNs on this interface (repeat for several), instead of
    /// monitor.interfaces. A pattern ('veth*') captures every matching interface as it
    /// appears; on a container's veth, packets are placed by the namespace that sent them.
    #[arg(long = "interface", short = 'i', value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Use these feeds (known-bad domains and IPs, app knowledge) instead of the applied
    /// bundle: a bundle directory or a directory like relay/samples/feeds.
    #[arg(long, value_name = "DIR")]
    pub feeds: Option<PathBuf>,
    /// The app knowledge of IMAGE from this image (directory, tar, `docker save`), instead
    /// of reading a running container's filesystem; for replayed events. Repeatable.
    #[arg(long = "app-image", value_name = "IMAGE=PATH")]
    pub app_images: Vec<String>,
    /// Decide and audit, but kill and stop nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --events: carry out prevent and block on this host's processes and
    /// containers (the input's pids and containers are this host's, now). Without it,
    /// events from a file are judged and audited, and nothing is signalled or stopped.
    #[arg(long, requires = "events")]
    pub act_on_this_host: bool,
    /// Print audits as JSON lines (the audit file's form) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `2s`, `30m`, `1h`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is not a duration like \"30s\", \"10m\" or \"1h\""))
}

/// The engine and everything around it.
pub struct Runner {
    db: RuntimeDb,
    engine: Engine,
    throttle: Throttle,
    /// Verdicts acted on (audited or not).
    actions: u64,
    audits: AuditLog,
    webhook: Option<Webhook>,
    docker: DockerClient,
    apps: AppPorts,
    /// Images' app knowledge being read, in the background.
    reading: tokio::task::JoinSet<Result<app_ports::ImagePorts, String>>,
    /// The image each read is of.
    reading_images: HashMap<tokio::task::Id, String>,
    dry_run: bool,
    /// Shows each audit to whoever runs the monitor (the command prints it on stdout).
    show: AuditSink,
    /// Events come from this host: pids are real, `/proc/<pid>/root` is the container.
    live: bool,
    /// Act on this host (watching it live, or --act-on-this-host with --events).
    act_on_host: bool,
    audited: u64,
    errors: u64,
}

impl Runner {
    /// Opens the runner; `show` is given every audit as it is made.
    pub fn open(config: &Config, args: &MonitorArgs, show: AuditSink) -> anyhow::Result<Runner> {
        let m = &config.monitor;
        let learning = match &args.learning {
            Some(text) => parse_duration(text).context("--learning")?,
            None => m.learning.0,
        };
        let rules = match args.rules.as_ref().or(m.rules.as_ref()) {
            Some(path) => Rules::load(path)?,
            None => Rules::default(),
        };
        let (knowledge, app_knowledge) = load_feeds(config, args.feeds.as_deref())?;
        let db = RuntimeDb::open(&config.data_dir)?;
        let store = ModelStore::open(&db)?;
        let audit_file = m.audit_file(&config.data_dir);
        let audits = AuditLog::open(&db, Some(&audit_file))?;
        let learning_secs = i64::try_from(learning.as_secs()).unwrap_or(i64::MAX);
        let mut engine = Engine::new(
            rules,
            knowledge,
            Some(store),
            learning_secs,
            PortScanDetector::new(PortScanSettings {
                window: config.monitor.port_scan_window.0,
                ports: config.monitor.port_scan_ports,
                hosts: config.monitor.port_scan_hosts,
            }),
        )?
        .with_model_cap(config.monitor.model_max_entries);
        let mut apps = AppPorts::new(app_knowledge)
            .with_retry(config.monitor.app_read_retry.0)
            .with_max_entries(config.monitor.app_read_max_entries);
        for spec in &args.app_images {
            let (image, path) = spec
                .split_once('=')
                .filter(|(i, p)| !i.is_empty() && !p.is_empty())
                .with_context(|| format!("--app-image {spec:?}: expected IMAGE=PATH"))?;
            let knowledge = apps
                .knowledge()
                .context("--app-image needs app knowledge: the feeds have no apps")?;
            let read = app_ports::read(Path::new(path), image, knowledge, apps.max_entries())
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--app-image {spec}"))?;
            tracing::info!("app knowledge for {image}: {}", read.summary);
            engine.set_app_ports(image, read.ports);
            apps.read_done(image);
        }
        let webhook = match &m.webhook {
            Some(url) => Some(Webhook::start(WebhookSettings::new(url))?),
            None => None,
        };
        tracing::info!(
            "models and audits in {}, audit file {}, learning period {}",
            db.path().display(),
            audit_file.display(),
            humantime::format_duration(learning)
        );
        Ok(Runner {
            db,
            engine,
            actions: 0,
            throttle: Throttle::new(ThrottleSettings {
                window: m.throttle_window.0,
                burst: m.throttle_burst,
            }),
            audits,
            webhook,
            docker: DockerClient::new(&m.docker_socket),
            apps,
            reading: tokio::task::JoinSet::new(),
            reading_images: HashMap::new(),
            dry_run: args.dry_run,
            show,
            live: false,
            act_on_host: args.act_on_this_host,
            audited: 0,
            errors: 0,
        })
    }

    /// Judges the events of a file or stdin; false if any line was bad.
    pub async fn replay(&mut self, path: &Path) -> anyhow::Result<bool> {
        let input: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
            Box::new(BufReader::new(io::stdin()))
        } else {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Box::new(BufReader::new(file))
        };
        // Reading blocks (stdin may be a live sensor): on its own thread, so the webhook
        // keeps delivering while it waits.
        let (tx, mut rx) = mpsc::channel::<Event>(1024);
        let name = path.display().to_string();
        let reader = std::thread::Builder::new()
            .name("events-input".into())
            .spawn(move || -> io::Result<u64> {
                let mut reader = EventReader::new(input);
                while let Some(item) = reader.next_event()? {
                    match item {
                        Ok(event) => {
                            if tx.blocking_send(event).is_err() {
                                break;
                            }
                        }
                        Err(bad) => tracing::warn!("{name}: {bad}"),
                    }
                }
                Ok(reader.bad_lines())
            })
            .context("starting the input thread")?;
        let mut stop = std::pin::pin!(shutdown()?);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = rx.recv() => match event {
                    Some(event) => {
                        self.handle(&event).await;
                    }
                    None => break,
                },
            }
        }
        drop(rx);
        let bad = match reader.join() {
            Ok(result) => result.with_context(|| format!("reading {}", path.display()))?,
            Err(_) => anyhow::bail!("the input thread panicked"),
        };
        if bad > 0 {
            tracing::warn!("{}: {bad} bad line(s) skipped", path.display());
        }
        Ok(bad == 0)
    }

    /// Watches the host until SIGTERM or SIGINT.
    pub async fn watch(&mut self, config: &Config, args: &MonitorArgs) -> anyhow::Result<()> {
        let m = &config.monitor;
        let interfaces = if args.interfaces.is_empty() {
            m.interfaces.clone()
        } else {
            args.interfaces.clone()
        };
        let every = m.scan_every.0;
        let monitor_config = MonitorConfig {
            interfaces: interfaces.clone(),
            processes: Some(ProcessConfig {
                scan_every: every,
                snapshot: true,
                connector: true,
            }),
            sockets_every: Some(every),
            snapshot: true,
            docker_socket: Some(m.docker_socket.clone()),
            channel_capacity: 64 * 1024,
        };
        if !m.docker_socket.exists() {
            tracing::warn!(
                "no Docker Engine socket at {}: containers are named by id only, and block cannot stop them",
                m.docker_socket.display()
            );
        }
        let mut monitor = Monitor::start(&monitor_config)?;
        let mut stop = std::pin::pin!(shutdown()?);
        self.live = true;
        self.act_on_host = true;
        tracing::info!(
            "monitoring (capture on {}){}",
            if interfaces.is_empty() {
                "no interface".to_owned()
            } else {
                interfaces.join(", ")
            },
            if self.dry_run { ", dry run" } else { "" }
        );
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = monitor.next() => match event {
                    Some(event) => {
                        self.handle(&event).await;
                    }
                    None => break,
                },
                Some(read) = self.reading.join_next_with_id(), if !self.reading.is_empty() => {
                    self.app_ports_read(read);
                }
            }
        }
        monitor.stop();
        Ok(())
    }

    /// Judges one event: the audit written, if any.
    pub async fn handle(&mut self, event: &Event) -> Option<Audit> {
        if let EventKind::Gap(g) = &event.kind {
            tracing::warn!(
                "events incomplete: {}: {}{}",
                g.what,
                g.reason,
                g.lost.map(|n| format!(" ({n} lost)")).unwrap_or_default()
            );
            return None;
        }
        if self.live {
            self.learn_apps(event);
        }
        let obs = super::observe(event)?;
        let verdict = match self.engine.evaluate(&obs) {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(e) => {
                self.error(format_args!("evaluating an event: {e}"));
                return None;
            }
        };
        let who = event
            .container
            .as_ref()
            .map_or("host", |c| c.id.as_str())
            .to_owned();
        // Every violation is acted on; the throttle holds back only the audit output of a
        // storm (counted in the next audit's `suppressed`). A throttle before the action
        // would let the eleventh violation in a minute through unpunished.
        let action = self.act(&verdict, event).await;
        self.actions += 1;
        let suppressed = self.throttle.admit(&who, verdict.area, event.ts.0)?;
        let audit = Audit {
            time: event.ts.to_string(),
            ts: event.ts.0,
            container_id: event.container.as_ref().map(|c| c.id.clone()),
            container_name: event.container.as_ref().and_then(|c| c.name.clone()),
            image: event.container.as_ref().and_then(|c| c.image.clone()),
            rule: verdict.rule,
            area: verdict.area,
            effect: verdict.effect,
            action,
            message: verdict.reason,
            pid: verdict.pid,
            suppressed,
        };
        // A closed stdout never stops enforcement: said on stderr, and the audit is still
        // recorded and sent below.
        if let Err(e) = (self.show)(&audit) {
            self.error(format_args!("printing an audit: {e}"));
        }
        if let Err(e) = self.audits.record(&audit) {
            self.error(format_args!("recording an audit: {e}"));
        }
        if let Some(w) = &mut self.webhook {
            w.send(&audit);
        }
        self.audited += 1;
        Some(audit)
    }

    /// Flushes the database, and gives the webhook a few seconds to deliver the rest.
    pub async fn close(self) -> anyhow::Result<()> {
        if let Some(w) = self.webhook {
            let s = w.finish(Duration::from_secs(5)).await;
            if s.failed + s.dropped + s.abandoned > 0 {
                tracing::warn!(
                    "webhook: {} delivered, {} failed, {} dropped (queue full), {} not sent at exit",
                    s.delivered,
                    s.failed,
                    s.dropped,
                    s.abandoned
                );
            }
        }
        self.db.flush_async().await?;
        tracing::info!(
            "{} verdict(s) acted on, {} audit(s){}",
            self.actions,
            self.audited,
            if self.errors > 0 {
                format!(", {} error(s) (see above)", self.errors)
            } else {
                String::new()
            }
        );
        Ok(())
    }

    /// Carries out the verdict's effect; what was done, in words for the audit.
    async fn act(&self, v: &Verdict, event: &Event) -> String {
        let done = self.carry_out(v, event).await;
        match &event.entered {
            Some(entered) if event.attributed_by == Some(AttributedBy::Namespace) => format!(
                "{done} (attributed by network namespace: the packet came in on {}, the \
                 container's own veth)",
                entered.interface
            ),
            _ => done,
        }
    }

    async fn carry_out(&self, v: &Verdict, event: &Event) -> String {
        // Packets placed by their source address only; one that came in on the
        // container's own veth is the container's, as surely as a process is.
        let packet = match &event.kind {
            _ if event.attributed_by == Some(AttributedBy::Namespace) => None,
            EventKind::DnsQuery(_) => Some("a DNS query"),
            EventKind::Syn(_) => Some("a TCP SYN"),
            _ => None,
        };
        match v.effect {
            Effect::Disable | Effect::Alert => "alerted".to_owned(),
            // A captured packet is tied to a container by its source address alone, and
            // any container with NET_RAW (Docker's default) can send its neighbour's:
            // acting on it would let one container get another stopped.
            Effect::Prevent | Effect::Block if let Some(what) = packet => format!(
                "alerted only: the evidence is {what} seen on the wire, attributed {} by its \
                 source address, which another container can forge; packets never stop \
                 or kill anything",
                event.container.as_ref().map_or_else(
                    || "to the host".to_owned(),
                    |c| format!(
                        "to container {}",
                        c.name.as_deref().unwrap_or(short_id(&c.id))
                    )
                )
            ),
            Effect::Prevent if v.area == Area::Dns => {
                "alerted only: prevent cannot drop a DNS lookup, the agent is not inline \
                 (block stops the container instead)"
                    .to_owned()
            }
            Effect::Prevent => match v.pid {
                None => "alerted only: seen on the wire, with no process to kill".to_owned(),
                Some(pid) if self.dry_run => format!("dry run: would kill process {pid}"),
                Some(pid) if !self.act_on_host => format!(
                    "not killed: process {pid} is from a recording (--act-on-this-host to act on this host's processes)"
                ),
                Some(pid) => {
                    let exe = match &event.kind {
                        EventKind::Exec(e) => e.exe.as_deref(),
                        _ => None,
                    };
                    prevent(pid, exe, event)
                }
            },
            Effect::Block => match &event.container {
                None => {
                    "not blocked: a host process has no container to stop; alerted only".to_owned()
                }
                Some(c) if self.dry_run => format!(
                    "dry run: would block container {}",
                    c.name.as_deref().unwrap_or(&c.id)
                ),
                Some(c) if !self.act_on_host => format!(
                    "not blocked: container {} is from a recording (--act-on-this-host to act on this host's containers)",
                    c.name.as_deref().unwrap_or(&c.id)
                ),
                Some(c) => match actions::block(&self.docker, &c.id).await {
                    Ok(done) => done,
                    Err(e) => format!("block failed: {e}"),
                },
            },
        }
    }

    /// The first time an image is seen on this host (or once a failed read's wait is
    /// over): its apps' ports are read from the container's root filesystem, in the
    /// background. This event, and those after it until the read is done, are judged by
    /// what is known already.
    fn learn_apps(&mut self, event: &Event) {
        let (Some(c), Some(pid)) = (&event.container, event.pid()) else {
            return;
        };
        let Some(image) = c.image.clone() else { return };
        if !self.apps.start_reading(&image, std::time::Instant::now()) {
            return;
        }
        let Some(knowledge) = self.apps.knowledge().cloned() else {
            return;
        };
        let name = image.clone();
        let max_entries = self.apps.max_entries();
        let task = self.reading.spawn_blocking(move || {
            app_ports::read(
                &app_ports::process_root(pid),
                &name,
                &knowledge,
                max_entries,
            )
            .map_err(|e| format!("{e} (read from pid {pid}'s root)"))
        });
        self.reading_images.insert(task.id(), image);
    }

    /// A background read of an image's app knowledge has ended.
    fn app_ports_read(
        &mut self,
        read: Result<
            (tokio::task::Id, Result<app_ports::ImagePorts, String>),
            tokio::task::JoinError,
        >,
    ) {
        let (id, read) = match read {
            Ok((id, read)) => (id, read),
            Err(e) => (e.id(), Err(format!("the reading task failed: {e}"))),
        };
        let Some(image) = self.reading_images.remove(&id) else {
            return;
        };
        match read {
            Ok(read) => {
                tracing::info!("app knowledge for {image}: {}", read.summary);
                self.engine.set_app_ports(&image, read.ports);
                self.apps.read_done(&image);
            }
            Err(e) => {
                let wait = self.apps.read_failed(&image, std::time::Instant::now());
                self.error(format_args!(
                    "app knowledge for {image}: {e}; judged by its model alone, tried again on an event after {}",
                    humantime::format_duration(wait)
                ));
            }
        }
    }

    fn error(&mut self, what: std::fmt::Arguments<'_>) {
        self.errors += 1;
        tracing::error!("{what}");
    }
}

/// SIGKILL to `pid`, unless it now runs another executable than the exec event named,
/// started after the event, left the event's container (the pid was reused), or is one
/// the agent never kills.
fn prevent(pid: u32, exe: Option<&str>, event: &Event) -> String {
    if let Some(exe) = exe.filter(|e| e.starts_with('/'))
        && let Ok(now) = std::fs::read_link(format!("/proc/{pid}/exe"))
    {
        let now = now.to_string_lossy();
        let now = now.trim_end_matches(" (deleted)");
        if now != exe {
            return format!("not killed: pid {pid} now runs {now}, not {exe} (the pid was reused)");
        }
    }
    let container = event.container.as_ref().map(|c| c.id.as_str());
    match actions::kill_event_process(pid, event.ts.0, container) {
        Ok(done) => done.to_string(),
        Err(
            e @ (actions::KillError::NotTheProcess { .. } | actions::KillError::Runtime { .. }),
        ) => e.to_string(),
        Err(e) => format!("not killed: {e}"),
    }
}

/// Feed knowledge: from `--feeds`, or the applied bundle (none applied is said, not an
/// error: models and rules still work).
fn load_feeds(
    config: &Config,
    dir: Option<&Path>,
) -> anyhow::Result<(Knowledge, Option<crate::apps::Knowledge>)> {
    let feeds = match dir {
        Some(dir) => crate::feeds::Feeds::open_dir(dir)?,
        None => match crate::feeds::Feeds::applied(&config.data_dir) {
            Ok(f) => f,
            Err(crate::feeds::FeedsError::NothingApplied(_)) => {
                tracing::warn!(
                    "no bundle applied yet (defender-lite sync): no known-bad domains or IPs, no app knowledge"
                );
                return Ok((Knowledge::default(), None));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let knowledge = Knowledge {
        domains: feeds.domains()?,
        ips: feeds.ips()?,
        app_ports: Default::default(),
    };
    let apps = feeds.apps()?;
    let apps = if apps.is_empty() {
        None
    } else {
        Some(
            crate::apps::Knowledge::from_apps(apps, PathBuf::from(&feeds.description))
                .map_err(anyhow::Error::msg)?,
        )
    };
    tracing::info!(
        "feeds: {}: {} known-bad domains, {} known-bad address ranges, {} apps",
        feeds.description,
        knowledge.domains.len(),
        knowledge.ips.len(),
        apps.as_ref().map_or(0, |a| a.apps().len())
    );
    Ok((knowledge, apps))
}

/// Resolves on SIGTERM or SIGINT. Both are watched from this call on, not from the
/// first poll: a signal sent as soon as a banner is read is heard.
fn shutdown() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("watching for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watching for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
