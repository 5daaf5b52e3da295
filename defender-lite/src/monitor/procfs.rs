//! Sockets from `/proc`: listening sockets, outbound connections, raw and packet sockets,
//! each with the process that holds it and its network namespace.
//!
//! A scan reads `/proc/<pid>/fd` of every process (socket inode -> pid) and, once per
//! network namespace, the socket tables `/proc/<pid>/net/{tcp,tcp6,udp,udp6,raw,raw6,packet}`
//! of one process in it. Containers have their own network namespace, so `/proc/net`
//! alone (the agent's namespace) would miss them; reading each namespace once through
//! any of its processes sees all of them without entering any.
//!
//! The scanner reports state, not changes: [`SocketScan::new_since`] diffs two scans into
//! the events a monitor wants. Sockets opened and closed between two scans are not seen;
//! that is the price of polling, and why DNS and SYNs come from packet capture instead.
//! The agent's own sockets (its capture socket is a packet socket) are left out.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::event::{Connect, EventKind, Listen, Proto, RawFamily, RawSocket};

/// A socket, by network namespace and inode (inodes are unique host-wide; the namespace
/// keeps two scans of the same socket equal even if it changes hands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub netns: u64,
    pub inode: u64,
}

/// The sockets of interest on the host at one moment.
#[derive(Debug, Default, Clone)]
pub struct SocketScan {
    pub sockets: HashMap<SocketKey, EventKind>,
    /// Network namespaces read.
    pub namespaces: usize,
    /// Sockets of this scan seen for the first time without an owner, not yet reported.
    held: HashSet<SocketKey>,
}

impl SocketScan {
    /// Sockets present now and not reported before, as events, in (namespace, inode)
    /// order.
    ///
    /// A new socket without an owner is held back one pass. A scan maps socket inodes to
    /// processes before it reads the socket tables, so a socket opened between the two
    /// shows up once without the process that holds it; the next pass finds its owner,
    /// or confirms that no process it can see holds it, and reports it then.
    pub fn new_since(&mut self, previous: &SocketScan) -> Vec<EventKind> {
        let mut new: Vec<_> = self
            .sockets
            .iter()
            .filter(|(k, _)| !previous.sockets.contains_key(k) || previous.held.contains(k))
            .collect();
        new.sort_by_key(|(k, _)| (k.netns, k.inode));
        let mut events = Vec::with_capacity(new.len());
        for (key, event) in new {
            if event.pid().is_none() && !previous.held.contains(key) {
                self.held.insert(*key);
            } else {
                events.push(event.clone());
            }
        }
        events
    }

    /// Every socket of the scan, as events (the snapshot at start), owned or not.
    pub fn all(&self) -> Vec<EventKind> {
        let mut all: Vec<_> = self.sockets.iter().collect();
        all.sort_by_key(|(k, _)| (k.netns, k.inode));
        all.into_iter().map(|(_, e)| e.clone()).collect()
    }
}

/// Reads sockets under a proc mount (normally `/proc`).
#[derive(Debug, Clone)]
pub struct SocketScanner {
    proc: PathBuf,
    own_pid: u32,
}

impl Default for SocketScanner {
    fn default() -> Self {
        SocketScanner::new("/proc")
    }
}

impl SocketScanner {
    pub fn new(proc: impl Into<PathBuf>) -> Self {
        SocketScanner {
            proc: proc.into(),
            own_pid: std::process::id(),
        }
    }

    /// One pass over all processes. Processes that end during the pass, or whose files
    /// cannot be read, are skipped: the next pass sees whatever they left.
    pub fn scan(&self) -> SocketScan {
        let mut owner: HashMap<u64, u32> = HashMap::new();
        let mut own_inodes: HashSet<u64> = HashSet::new();
        let mut namespaces: HashMap<u64, u32> = HashMap::new();
        for pid in pids(&self.proc) {
            let dir = self.proc.join(pid.to_string());
            let Some(netns) = netns_inode(&dir) else {
                continue;
            };
            namespaces.entry(netns).or_insert(pid);
            for inode in socket_inodes(&dir) {
                if pid == self.own_pid {
                    own_inodes.insert(inode);
                } else {
                    owner.entry(inode).or_insert(pid);
                }
            }
        }
        let mut scan = SocketScan {
            namespaces: namespaces.len(),
            ..SocketScan::default()
        };
        for (&netns, &pid) in &namespaces {
            let net = self.proc.join(pid.to_string()).join("net");
            let found = read_namespace(&net, netns, &owner);
            for (inode, kind) in found {
                if !own_inodes.contains(&inode) {
                    scan.sockets.insert(SocketKey { netns, inode }, kind);
                }
            }
        }
        scan
    }
}

/// The network namespace inode of a process (`/proc/<pid>/ns/net` -> `net:[4026531840]`).
pub fn netns_inode(proc_pid: &Path) -> Option<u64> {
    let link = fs::read_link(proc_pid.join("ns/net")).ok()?;
    bracketed(link.to_str()?, "net:")
}

/// Numeric entries of a proc mount, ascending.
pub fn pids(proc: &Path) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

fn socket_inodes(proc_pid: &Path) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(proc_pid.join("fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let link = fs::read_link(e.ok()?.path()).ok()?;
        bracketed(link.to_str()?, "socket:")
    })
    .collect()
}

fn bracketed(link: &str, prefix: &str) -> Option<u64> {
    link.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn read_namespace(net: &Path, netns: u64, owner: &HashMap<u64, u32>) -> Vec<(u64, EventKind)> {
    let read = |name: &str| fs::read_to_string(net.join(name)).unwrap_or_default();
    let mut rows: Vec<(Table, InetRow)> = Vec::new();
    for (name, table) in [
        ("tcp", Table::Tcp),
        ("tcp6", Table::Tcp),
        ("udp", Table::Udp),
        ("udp6", Table::Udp),
        ("raw", Table::Raw),
        ("raw6", Table::Raw),
    ] {
        rows.extend(
            parse_inet_table(&read(name))
                .into_iter()
                .map(|r| (table, r)),
        );
    }
    let packets = parse_packet_table(&read("packet"));
    classify(&rows, &packets, netns, owner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Tcp,
    Udp,
    Raw,
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_SYN_SENT: u8 = 0x02;
const TCP_LISTEN: u8 = 0x0A;

fn classify(
    rows: &[(Table, InetRow)],
    packets: &[PacketRow],
    netns: u64,
    owner: &HashMap<u64, u32>,
) -> Vec<(u64, EventKind)> {
    // A connected socket whose local port a listener of the namespace holds was
    // accepted, not opened: only the others are outbound.
    let listening: HashSet<(Proto, u16)> = rows
        .iter()
        .filter_map(|(t, r)| match t {
            Table::Tcp if r.state == TCP_LISTEN => Some((Proto::Tcp, r.local.port())),
            Table::Udp if r.remote.port() == 0 && r.local.port() != 0 => {
                Some((Proto::Udp, r.local.port()))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (table, r) in rows {
        if r.inode == 0 {
            continue; // TIME_WAIT and other sockets without a file
        }
        let pid = owner.get(&r.inode).copied();
        let netns = Some(netns);
        let kind = match table {
            Table::Tcp | Table::Udp => {
                let proto = if *table == Table::Tcp {
                    Proto::Tcp
                } else {
                    Proto::Udp
                };
                let listen = match table {
                    Table::Tcp => r.state == TCP_LISTEN,
                    _ => r.remote.port() == 0,
                };
                let connected = match table {
                    Table::Tcp => matches!(r.state, TCP_ESTABLISHED | TCP_SYN_SENT),
                    _ => r.remote.port() != 0,
                };
                if listen && r.local.port() != 0 {
                    EventKind::Listen(Listen {
                        proto,
                        addr: r.local,
                        pid,
                        inode: r.inode,
                        netns,
                    })
                } else if connected && !listening.contains(&(proto, r.local.port())) {
                    EventKind::Connect(Connect {
                        proto,
                        local: r.local,
                        remote: r.remote,
                        pid,
                        inode: r.inode,
                        netns,
                    })
                } else {
                    continue;
                }
            }
            Table::Raw => EventKind::RawSocket(RawSocket {
                family: if r.local.is_ipv4() {
                    RawFamily::Inet
                } else {
                    RawFamily::Inet6
                },
                // The "port" of a raw socket is its IP protocol number.
                protocol: r.local.port(),
                pid,
                inode: r.inode,
                netns,
            }),
        };
        out.push((r.inode, kind));
    }
    for p in packets {
        out.push((
            p.inode,
            EventKind::RawSocket(RawSocket {
                family: RawFamily::Packet,
                protocol: p.protocol,
                pid: owner.get(&p.inode).copied(),
                inode: p.inode,
                netns: Some(netns),
            }),
        ));
    }
    out
}

/// One row of `/proc/net/{tcp,tcp6,udp,udp6,raw,raw6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// Parses an inet socket table; malformed rows are skipped.
pub fn parse_inet_table(text: &str) -> Vec<InetRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            let mut f = line.split_ascii_whitespace();
            let _sl = f.next()?;
            let local = parse_hex_addr(f.next()?)?;
            let remote = parse_hex_addr(f.next()?)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            let inode = f.nth(5)?.parse().ok()?;
            Some(InetRow {
                local,
                remote,
                state,
                inode,
            })
        })
        .collect()
}

/// One row of `/proc/net/packet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRow {
    /// Ethertype the socket is bound to, host order (3 = `ETH_P_ALL`).
    pub protocol: u16,
    pub inode: u64,
}

/// Parses `/proc/net/packet` (`sk RefCnt Type Proto Iface R Rmem User Inode`).
pub fn parse_packet_table(text: &str) -> Vec<PacketRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 9 {
                return None;
            }
            Some(PacketRow {
                protocol: u16::from_str_radix(f[3], 16).ok()?,
                inode: f[8].parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` -> 127.0.0.1:8080. The kernel prints each 32-bit word of the address
/// as a native-endian integer, so the bytes come back with `to_ne_bytes`.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?.to_ne_bytes())),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn word(hex: &str) -> Option<u32> {
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 21 4 1 148 -1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 21 4 1 148 -1
   3: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
   4: garbage
";

    #[cfg(target_endian = "little")]
    #[test]
    fn inet_rows_parse_addresses_ports_states_and_inodes() {
        let rows = parse_inet_table(TCP);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].local, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[1].remote, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(rows[2].inode, 1003);
        let v6 = parse_inet_table(
            "header\n   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0\n",
        );
        assert_eq!(v6[0].local, "[::1]:53".parse().unwrap());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn accepted_connections_are_not_outbound_and_time_wait_is_ignored() {
        let rows: Vec<_> = parse_inet_table(TCP)
            .into_iter()
            .map(|r| (Table::Tcp, r))
            .collect();
        let owner = HashMap::from([(1001, 10), (1003, 11)]);
        let out = classify(&rows, &[], 99, &owner);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0].1,
            EventKind::Listen(Listen {
                proto: Proto::Tcp,
                addr: "0.0.0.0:8080".parse().unwrap(),
                pid: Some(10),
                inode: 1001,
                netns: Some(99),
            })
        );
        let EventKind::Connect(c) = &out[1].1 else {
            panic!("{out:?}")
        };
        assert_eq!((c.pid, c.remote.port()), (Some(11), 8080));
    }

    #[test]
    fn packet_rows() {
        let rows = parse_packet_table(
            "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\nffff8b0e0f4c5800 3      3    0003   1     1 0      0      4242\n",
        );
        assert_eq!(
            rows,
            vec![PacketRow {
                protocol: 3,
                inode: 4242
            }]
        );
    }

    fn listener(inode: u64, pid: Option<u32>) -> (SocketKey, EventKind) {
        let key = SocketKey { netns: 7, inode };
        let kind = EventKind::Listen(Listen {
            proto: Proto::Tcp,
            addr: SocketAddr::from(([127, 0, 0, 1], 8000 + inode as u16)),
            pid,
            inode,
            netns: Some(7),
        });
        (key, kind)
    }

    fn scan_of(sockets: &[(SocketKey, EventKind)]) -> SocketScan {
        SocketScan {
            sockets: sockets.iter().cloned().collect(),
            namespaces: 1,
            ..SocketScan::default()
        }
    }

    #[test]
    fn a_new_socket_without_an_owner_waits_one_pass_for_it() {
        let first = scan_of(&[listener(1, Some(10))]);
        // Pass 2: socket 2 is seen before its owner (opened mid-pass), socket 3 with one.
        let mut second = scan_of(&[
            listener(1, Some(10)),
            listener(2, None),
            listener(3, Some(12)),
        ]);
        assert_eq!(second.new_since(&first), vec![listener(3, Some(12)).1]);
        // Pass 3 finds the owner of 2: reported once, with it.
        let mut third = scan_of(&[
            listener(1, Some(10)),
            listener(2, Some(11)),
            listener(3, Some(12)),
        ]);
        assert_eq!(third.new_since(&second), vec![listener(2, Some(11)).1]);
        let mut fourth = scan_of(&[
            listener(1, Some(10)),
            listener(2, Some(11)),
            listener(3, Some(12)),
        ]);
        assert_eq!(fourth.new_since(&third), vec![]);
        // A socket no visible process holds is reported on its second pass, ownerless.
        let mut fifth = scan_of(&[listener(4, None)]);
        assert_eq!(fifth.new_since(&fourth), vec![]);
        let mut sixth = scan_of(&[listener(4, None)]);
        assert_eq!(sixth.new_since(&fifth), vec![listener(4, None).1]);
        let mut seventh = scan_of(&[listener(4, None)]);
        assert_eq!(seventh.new_since(&sixth), vec![], "reported once");
        // The snapshot at start reports everything, owned or not.
        assert_eq!(fifth.all(), vec![listener(4, None).1]);
    }

    #[test]
    fn a_scan_of_this_host_finds_namespaces() {
        let scan = SocketScanner::default().scan();
        assert!(scan.namespaces >= 1);
    }
}
