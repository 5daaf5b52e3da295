//! Which network namespace a host-side veth leads to, and which namespace a process is
//! in, as the kernel says over rtnetlink (the `netlink-packet-route` crate).
//!
//! A packet captured going *into* the host on a veth (`PACKET_HOST`, not `OUTGOING`) was
//! sent from the namespace at the veth's other end: nobody else can put a frame there.
//! The kernel names that namespace with an id local to the host's namespace
//! (`IFLA_LINK_NETNSID` of `RTM_GETLINK`); `RTM_GETNSID` with a pid gives the id of the
//! process's namespace. A container's init pid (from the engine) and the veth's
//! link-netnsid meeting on the same id ties the veth to the container. The ids are
//! assigned by the kernel on first use and stay while both namespaces live.

use std::io;
use std::time::Duration;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A kernel that does not answer within this long is treated as failing (it answers a
/// request like these before `send` returns).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// What the kernel says about one interface of the host's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub veth: bool,
    /// A veth whose peer is in another namespace: that namespace's id.
    pub veth_peer_nsid: Option<i32>,
}

/// A route netlink socket in the agent's (the host's) namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_TIMEOUT),
        )?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// The interface called `name`; `None` if there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let answer = match self.ask(RouteNetlinkMessage::GetLink(request)) {
            Ok(answer) => answer,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let RouteNetlinkMessage::NewLink(link) = answer else {
            return Err(unexpected("RTM_GETLINK"));
        };
        let veth = link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
        });
        let peer = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkNetNsId(id) if *id >= 0 => Some(*id),
            _ => None,
        });
        Ok(Some(Link {
            index: link.header.index,
            up: link.header.flags.contains(LinkFlags::Up),
            veth,
            veth_peer_nsid: if veth { peer } else { None },
        }))
    }

    /// The id (in the host's namespace) of the network namespace `pid` is in; `None` if
    /// the process is gone, or in the host's own namespace (which has no id of its own).
    pub fn nsid_of_pid(&mut self, pid: u32) -> io::Result<Option<i32>> {
        let mut request = NsidMessage::default();
        request.attributes.push(NsidAttribute::Pid(pid));
        let answer = match self.ask(RouteNetlinkMessage::GetNsId(request)) {
            Ok(answer) => answer,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let RouteNetlinkMessage::NewNsId(ns) = answer else {
            return Err(unexpected("RTM_GETNSID"));
        };
        Ok(ns.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }))
    }

    /// Sends one request and returns its one answer (an error answer as the error).
    fn ask(&mut self, message: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), message.into());
        packet.header.flags = NLM_F_REQUEST;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = &datagram[..];
            while !rest.is_empty() {
                let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = (answer.header.length as usize).max(1).min(rest.len());
                rest = &rest[len..];
                // An answer to an earlier request that timed out: not this one's.
                if answer.header.sequence_number != self.seq {
                    continue;
                }
                return match answer.payload {
                    NetlinkPayload::InnerMessage(m) => Ok(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
                    _ => Err(unexpected("a request")),
                };
            }
        }
    }
}

fn unexpected(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the kernel's answer to {what} is not the expected message"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is no veth; a name nobody has is `None`; this process is in the host's
    /// namespace (as the test runs), which has no id of its own.
    #[test]
    fn the_kernel_answers_about_links_and_namespaces() {
        let mut rtnl = Rtnl::open().unwrap();
        let lo = rtnl.link("lo").unwrap().expect("lo exists");
        assert_eq!(lo.index, 1);
        assert!(lo.up && !lo.veth);
        assert_eq!(lo.veth_peer_nsid, None);
        assert_eq!(rtnl.link("no-such-if0").unwrap(), None);
        assert_eq!(rtnl.nsid_of_pid(std::process::id()).unwrap(), None);
    }
}
