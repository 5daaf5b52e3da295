//! Process exec and exit as they happen, from the kernel's netlink process connector
//! (`NETLINK_CONNECTOR`, group `CN_IDX_PROC`), with a periodic `/proc` pass behind it.
//!
//! The socket is plain rustix (no unsafe here): bind to the group, send
//! `PROC_CN_MCAST_LISTEN`, wait for the kernel's acknowledgement, then read
//! `struct proc_event`s. The kernel only tells *that* a pid exec'd; path, argv and uid
//! are read from `/proc/<pid>` at once (`processes.rs`), so a process that is gone by
//! then is reported with its pid and whatever was left.
//!
//! What can go wrong, and what the stream then says (as `gap` events, never silently):
//! - the socket buffer overflows under a burst (`ENOBUFS`): a gap, then an immediate
//!   `/proc` pass that reports the processes that are still running;
//! - the kernel refuses the connector: binding to the group needs `CAP_NET_ADMIN`
//!   (`EPERM` at bind), and the kernel ignores subscriptions from outside the initial
//!   user and PID namespaces (no acknowledgement at all). The source then runs on `/proc`
//!   passes alone, and the gap says why.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::sockopt::{self, Timeout};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

use super::Sink;
use super::event::{Event, EventKind, Exit, Gap, Source};
use super::processes::{ProcReader, ProcessTable};

/// How the process source runs.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Full `/proc` pass interval (reconciliation, or the only source without connector).
    pub scan_every: Duration,
    /// Report the processes already running at start (`source: snapshot`).
    pub snapshot: bool,
    /// Leave the connector out and run on `/proc` passes alone.
    pub connector: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            scan_every: Duration::from_secs(5),
            snapshot: true,
            connector: true,
        }
    }
}

/// Runs the process source until `stop` is set or the sink closes. Blocking: give it a
/// thread. `ready` is told once the connector is subscribed (or refused) and the first
/// `/proc` pass is done: from then on no exec is missed.
pub fn run(
    config: &ProcessConfig,
    sink: &Sink,
    stop: &Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let reader = ProcReader::default();
    let mut table = ProcessTable::default();
    // Subscribe before the first pass, so nothing falls between the two.
    let mut connector = if config.connector {
        match ProcConnector::open() {
            Ok(c) => Some(c),
            Err(e) => {
                sink.send(gap(format!(
                    "{e}; falling back to /proc passes every {}s (short-lived processes can be missed)",
                    config.scan_every.as_secs_f32()
                )));
                None
            }
        }
    } else {
        None
    };
    let first = table.reconcile(&reader);
    // The receiver may have given up waiting; the source runs on regardless.
    let _ = ready.send(());
    if config.snapshot {
        for exec in first.started {
            if !sink.send(Event::now(Source::Snapshot, EventKind::Exec(exec))) {
                return;
            }
        }
    }
    let mut last_pass = Instant::now();
    let mut events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut pass_now = false;
        match connector.as_mut() {
            Some(c) => match c.recv(&mut events) {
                Ok(()) => {
                    for e in events.drain(..) {
                        if let Some(event) = on_proc_event(e, &reader, &mut table)
                            && !sink.send(event)
                        {
                            return;
                        }
                    }
                }
                Err(RecvError::TimedOut) => {}
                Err(RecvError::Overrun) => {
                    sink.send(gap(
                        "process connector socket buffer overflowed (ENOBUFS): events were dropped; running a /proc pass now".into(),
                    ));
                    pass_now = true;
                }
                Err(RecvError::Io(e)) => {
                    sink.send(gap(format!(
                        "process connector receive failed: {e}; falling back to /proc passes"
                    )));
                    connector = None;
                }
            },
            None => std::thread::sleep(Duration::from_millis(100)),
        }
        if pass_now || last_pass.elapsed() >= config.scan_every {
            last_pass = Instant::now();
            let found = table.reconcile(&reader);
            for exit in found.ended {
                if !sink.send(Event::now(Source::ProcScan, EventKind::Exit(exit))) {
                    return;
                }
            }
            for exec in found.started {
                if !sink.send(Event::now(Source::ProcScan, EventKind::Exec(exec))) {
                    return;
                }
            }
        }
    }
}

fn gap(reason: String) -> Event {
    Event::now(
        Source::Agent,
        EventKind::Gap(Gap {
            what: "proc_connector".into(),
            reason,
            lost: None,
        }),
    )
}

fn on_proc_event(e: ProcEvent, reader: &ProcReader, table: &mut ProcessTable) -> Option<Event> {
    match e {
        ProcEvent::Fork {
            child_pid,
            child_tgid,
        } if child_pid == child_tgid => {
            // A new process (not a thread): known, so the next pass does not report it
            // as a missed exec. Its start time is read by that pass.
            table.insert(child_tgid, None);
            None
        }
        ProcEvent::Exec { tgid, .. } => {
            let (exec, start) = reader.exec(tgid);
            table.insert(tgid, start);
            Some(Event::now(Source::Connector, EventKind::Exec(exec)))
        }
        ProcEvent::Exit {
            pid,
            tgid,
            code,
            signal,
        } if pid == tgid => {
            table.remove(pid);
            Some(Event::now(
                Source::Connector,
                EventKind::Exit(Exit { pid, code, signal }),
            ))
        }
        _ => None,
    }
}

/// Why the connector could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("process connector: cannot create a NETLINK_CONNECTOR socket: {0}")]
    Socket(#[source] io::Error),
    #[error(
        "process connector: binding to the proc events group was refused ({0}): it needs CAP_NET_ADMIN"
    )]
    Bind(#[source] io::Error),
    #[error("process connector: sending the subscription failed: {0}")]
    Subscribe(#[source] io::Error),
    #[error(
        "process connector: the kernel refused the subscription (errno {0}): it needs CAP_NET_ADMIN in the initial user namespace"
    )]
    Refused(u32),
    #[error(
        "process connector: the kernel did not acknowledge the subscription within {0:?}: it ignores processes outside the initial user and PID namespaces (is the agent in a container without --pid=host, or in a user namespace?)"
    )]
    NoAck(Duration),
}

/// Why a receive returned without events.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing within the socket timeout.
    TimedOut,
    /// The kernel dropped messages: the socket buffer was full.
    Overrun,
    Io(io::Error),
}

/// A process event as the kernel sends it (the kinds this module uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// `PROC_EVENT_NONE`: the acknowledgement of a (un)subscription, `err` 0 on success.
    /// The kernel answers with the request's `cn_msg.ack` plus one (it does not echo
    /// `seq`), and to every listener of the group.
    Ack {
        ack: u32,
        err: u32,
    },
    Fork {
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        pid: u32,
        tgid: u32,
    },
    Exit {
        pid: u32,
        tgid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// A subscribed process connector socket.
pub struct ProcConnector {
    fd: OwnedFd,
    buf: Vec<u8>,
}

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CN_MSG_LEN: usize = 20;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Receive timeout: how often the loop looks at the stop flag and the pass schedule.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

impl ProcConnector {
    /// Opens, subscribes and waits for the kernel's acknowledgement.
    pub fn open() -> Result<ProcConnector, ConnectorError> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            Some(netlink::CONNECTOR),
        )
        .map_err(|e| ConnectorError::Socket(e.into()))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, CN_IDX_PROC))
            .map_err(|e| ConnectorError::Bind(e.into()))?;
        // A large buffer rides out exec storms (a build, a fork bomb); ENOBUFS past it.
        // The forced variant exceeds rmem_max as root; fall back to the plain one.
        if sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20).is_err() {
            let _ = sockopt::set_socket_recv_buffer_size(&fd, 8 << 20);
        }
        sockopt::set_socket_timeout(&fd, Timeout::Recv, Some(RECV_TIMEOUT))
            .map_err(|e| ConnectorError::Socket(e.into()))?;
        let token = std::process::id();
        rustix::net::sendto(
            &fd,
            &subscribe_message(token),
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| ConnectorError::Subscribe(e.into()))?;
        let mut c = ProcConnector {
            fd,
            buf: vec![0; 64 * 1024],
        };
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut events = Vec::new();
        while Instant::now() < deadline {
            match c.recv(&mut events) {
                Ok(()) => {
                    for e in events.drain(..) {
                        if let ProcEvent::Ack { ack, err } = e
                            && ack == token.wrapping_add(1)
                        {
                            return if err == 0 {
                                Ok(c)
                            } else {
                                Err(ConnectorError::Refused(err))
                            };
                        }
                    }
                }
                Err(RecvError::TimedOut | RecvError::Overrun) => {}
                Err(RecvError::Io(e)) => return Err(ConnectorError::Subscribe(e)),
            }
        }
        Err(ConnectorError::NoAck(ACK_TIMEOUT))
    }

    /// Receives one datagram (which may hold several events) into `out`.
    pub fn recv(&mut self, out: &mut Vec<ProcEvent>) -> Result<(), RecvError> {
        match rustix::net::recvfrom(&self.fd, &mut self.buf[..], RecvFlags::empty()) {
            Ok((n, _, from)) => {
                // Only the kernel (port id 0) speaks for the proc connector.
                let from_kernel = from
                    .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                    .is_some_and(|a| a.pid() == 0);
                if from_kernel {
                    parse_messages(self.buf.get(..n).unwrap_or_default(), out);
                }
                Ok(())
            }
            Err(Errno::AGAIN | Errno::INTR) => Err(RecvError::TimedOut),
            Err(Errno::NOBUFS) => Err(RecvError::Overrun),
            Err(e) => Err(RecvError::Io(e.into())),
        }
    }
}

/// `nlmsghdr` + `cn_msg` + `PROC_CN_MCAST_LISTEN`, in native byte order. `token` goes
/// in `cn_msg.ack`, so the kernel's acknowledgement can be told from others'.
fn subscribe_message(token: u32) -> Vec<u8> {
    let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // cn_msg.seq
    m.extend_from_slice(&token.to_ne_bytes()); // cn_msg.ack, answered with token + 1
    m.extend_from_slice(&4u16.to_ne_bytes()); // len of data
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

/// Parses the netlink messages of one datagram; anything short or foreign is skipped.
pub fn parse_messages(mut buf: &[u8], out: &mut Vec<ProcEvent>) {
    while buf.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(buf, 0).map(|l| l as usize) else {
            return;
        };
        if len < NLMSG_HDRLEN || len > buf.len() {
            return;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if ty != NLMSG_ERROR
            && let Some(e) = parse_cn_msg(&buf[NLMSG_HDRLEN..len])
        {
            out.push(e);
        }
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or_default();
    }
}

fn parse_cn_msg(m: &[u8]) -> Option<ProcEvent> {
    if u32_at(m, 0)? != CN_IDX_PROC || u32_at(m, 4)? != CN_VAL_PROC {
        return None;
    }
    let ack = u32_at(m, 12)?;
    let data_len = u16::from_ne_bytes([*m.get(16)?, *m.get(17)?]) as usize;
    let ev = m.get(CN_MSG_LEN..CN_MSG_LEN + data_len)?;
    // struct proc_event: what, cpu, timestamp_ns (u64), event_data at 16.
    let what = u32_at(ev, 0)?;
    let d = |i: usize| u32_at(ev, 16 + 4 * i);
    Some(match what {
        PROC_EVENT_NONE => ProcEvent::Ack { ack, err: d(0)? },
        PROC_EVENT_FORK => ProcEvent::Fork {
            child_pid: d(2)?,
            child_tgid: d(3)?,
        },
        PROC_EVENT_EXEC => ProcEvent::Exec {
            pid: d(0)?,
            tgid: d(1)?,
        },
        PROC_EVENT_EXIT => {
            // exit_code is a wait(2) status.
            let status = d(2)? as i32;
            let sig = status & 0x7f;
            ProcEvent::Exit {
                pid: d(0)?,
                tgid: d(1)?,
                code: (sig == 0).then_some((status >> 8) & 0xff),
                signal: (sig != 0).then_some(sig),
            }
        }
        _ => return None,
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&123u64.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        let mut cn = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 1234, 9] {
            cn.extend_from_slice(&v.to_ne_bytes());
        }
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend_from_slice(&ev);
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + cn.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&cn);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn parses_exec_exit_fork_and_ack_and_skips_truncation() {
        let mut buf = message(PROC_EVENT_EXEC, &[10, 10]);
        buf.extend(message(PROC_EVENT_EXIT, &[10, 10, 3 << 8, 17, 1, 1]));
        buf.extend(message(PROC_EVENT_EXIT, &[11, 11, 9, 17, 1, 1]));
        buf.extend(message(PROC_EVENT_FORK, &[1, 1, 12, 12]));
        buf.extend(message(PROC_EVENT_NONE, &[0]));
        let truncated = message(PROC_EVENT_EXEC, &[13, 13]);
        buf.extend_from_slice(&truncated[..truncated.len() - 6]);
        let mut out = Vec::new();
        parse_messages(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                ProcEvent::Exec { pid: 10, tgid: 10 },
                ProcEvent::Exit {
                    pid: 10,
                    tgid: 10,
                    code: Some(3),
                    signal: None
                },
                ProcEvent::Exit {
                    pid: 11,
                    tgid: 11,
                    code: None,
                    signal: Some(9)
                },
                ProcEvent::Fork {
                    child_pid: 12,
                    child_tgid: 12
                },
                ProcEvent::Ack { ack: 9, err: 0 },
            ]
        );
    }

    #[test]
    fn subscription_message_layout() {
        let m = subscribe_message(77);
        assert_eq!(m.len(), 40);
        assert_eq!(u32_at(&m, 0), Some(40));
        assert_eq!(u32_at(&m, 16), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&m, 28), Some(77));
        assert_eq!(u32_at(&m, 36), Some(PROC_CN_MCAST_LISTEN));
    }
}
