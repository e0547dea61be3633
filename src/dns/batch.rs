//! Batched UDP I/O: `recvmmsg` and `sendmmsg` (Linux), through nix's safe wrappers.
//!
//! Profiled at full load, one `recvfrom` and one `sendto` per query were 87 % of the CPU; a
//! batch of up to [`BATCH`] datagrams costs one system call each way. A [`Batch`] belongs to
//! one thread (its message headers hold raw pointers) and allocates nothing after it is made.
//!
//! A reply leaves from the address its query was sent to. A socket bound to a wildcard address
//! (`0.0.0.0`, `[::]`) would otherwise send it from whichever address routing picks for the
//! client, and a client that asked another address of the host drops it (RFC 2181 §4.1:
//! a UDP reply's source is the address the query was sent to). So every datagram is received
//! with its destination ([`enable_packet_info`]: `IP_PKTINFO`, `IPV6_RECVPKTINFO`; on a
//! dual-stack socket an IPv4 client's as a v4-mapped address) and its reply sent with that
//! address as the source, in the same control message. nix's `sendmmsg` takes one control
//! message for all the messages of a call, so replies go out in runs that leave from one
//! address: one call per batch while the batch's queries went to one address, as under load
//! they mostly do.
//!
//! A socket bound to one address needs none of this: the system sends its replies from that
//! address. [`needs_packet_info`] says so, and its batches neither ask for the destination nor
//! send a source (the control messages were ~1.4 % of the CPU at full load).

use std::cell::RefCell;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use nix::cmsg_space;
use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendmsg,
    setsockopt, sockopt,
};

/// Datagrams per system call at most.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: a query larger than this is cut and answered FORMERR.
pub const MAX_QUERY: usize = 4096;

/// Whether a UDP socket bound to `addr` must be told each reply's source: only a wildcard
/// address's (`0.0.0.0`, `[::]`, `[::ffff:0.0.0.0]`) replies could leave from another address
/// than their query went to.
pub fn needs_packet_info(addr: &SocketAddr) -> bool {
    is_wildcard(addr.ip())
}

/// Whether `ip` is a wildcard (unspecified) address of either family; `::ffff:0.0.0.0` is
/// IPv4's on an IPv6 socket.
fn is_wildcard(ip: IpAddr) -> bool {
    ip.to_canonical().is_unspecified()
}

/// The standard form of a socket address of the IP families.
pub fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// Has the system report each datagram's destination address on `socket`, an IPv6 socket when
/// `ipv6` (`IPV6_RECVPKTINFO`, which covers the IPv4 clients of a dual-stack socket too), else
/// an IPv4 one (`IP_PKTINFO`). Set it before binding, so that no datagram comes without.
///
/// # Errors
///
/// The system's `setsockopt(2)` error: the option does not fit the socket's family
/// (`ENOPROTOOPT`), or `socket` is not a socket (`ENOTSOCK`).
pub fn enable_packet_info(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)
    } else {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)
    }
    .map_err(io::Error::from)
}

/// The address a datagram was sent to: the source its reply must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// On an IPv4 socket; `0.0.0.0` when unknown (the system picks: [`Local::is_known`]).
    V4(Ipv4Addr),
    /// On an IPv6 socket (an IPv4 client's as a v4-mapped address; `::` or `::ffff:0.0.0.0`
    /// when unknown), with the interface a link-local address belongs to (else 0).
    V6(Ipv6Addr, u32),
}

impl Local {
    /// The destination a control message reports, for a socket of this family.
    fn received(cmsg: ControlMessageOwned, ipv6: bool) -> Option<Local> {
        match cmsg {
            ControlMessageOwned::Ipv6PacketInfo(info) if ipv6 => {
                let addr = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                // The interface matters (and is kept) only where the address needs it.
                let index = if addr.is_unicast_link_local() {
                    info.ipi6_ifindex
                } else {
                    0
                };
                Some(Local::V6(addr, index))
            }
            // The local address the kernel computed for a reply (the destination itself for
            // unicast, ip(7)).
            ControlMessageOwned::Ipv4PacketInfo(info) if !ipv6 => {
                Some(Local::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))))
            }
            _ => None,
        }
    }

    /// Whether it is an address, not the unknown one: a reply from an unknown source is sent
    /// without packet info, so the system sends it from the socket's address (packet info with
    /// `0.0.0.0` would have routing pick another than a bound one).
    fn is_known(self) -> bool {
        !is_wildcard(match self {
            Local::V4(addr) => addr.into(),
            Local::V6(addr, _) => addr.into(),
        })
    }

    /// No known destination, for a reply to `peer` on a socket of this family.
    fn unknown(peer: &SockaddrStorage, ipv6: bool) -> Local {
        match to_std(peer).map(|p| p.ip()) {
            _ if !ipv6 => Local::V4(Ipv4Addr::UNSPECIFIED),
            Some(IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_some() => {
                Local::V6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 0)
            }
            _ => Local::V6(Ipv6Addr::UNSPECIFIED, 0),
        }
    }

    /// The control message data that sends from this address.
    fn packet_info(self) -> PacketInfo {
        match self {
            Local::V4(addr) => PacketInfo::V4(libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(addr).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            }),
            Local::V6(addr, index) => PacketInfo::V6(libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: addr.octets() },
                ipi6_ifindex: index,
            }),
        }
    }
}

/// `IP_PKTINFO` or `IPV6_PKTINFO` data, to send from a given address.
enum PacketInfo {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

impl PacketInfo {
    fn message(&self) -> ControlMessage<'_> {
        match self {
            PacketInfo::V4(info) => ControlMessage::Ipv4PacketInfo(info),
            PacketInfo::V6(info) => ControlMessage::Ipv6PacketInfo(info),
        }
    }
}

/// Where a datagram came from and went to.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SockaddrStorage,
    /// The address the client sent to: the reply's source.
    pub local: Local,
}

/// Sends one reply to `peer` from its query's destination, without waiting: a full socket
/// buffer drops it, as the network may. Not for the hot path: nix's `sendmsg` allocates its
/// control buffer.
///
/// # Errors
///
/// The system's `sendmsg(2)` error: `EAGAIN` when the socket buffer is full (the reply is
/// dropped), or one of the network's (`ENETUNREACH`, `EADDRNOTAVAIL` when the query's
/// destination is no longer an address of this host).
pub fn send_one(socket: &impl AsRawFd, reply: &[u8], peer: &Peer) -> io::Result<()> {
    let info = peer.local.packet_info();
    let messages = [info.message()];
    sendmsg(
        socket.as_raw_fd(),
        &[IoSlice::new(reply)],
        &messages[..usize::from(peer.local.is_known())],
        MsgFlags::MSG_DONTWAIT,
        Some(&peer.addr),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Control message space for one packet info of the family: the exact length each message
/// header announces (nix's `sendmmsg` sends the whole buffer, so it must hold just that).
fn packet_info_space(ipv6: bool) -> Vec<u8> {
    if ipv6 {
        cmsg_space!(libc::in6_pktinfo)
    } else {
        cmsg_space!(libc::in_pktinfo)
    }
}

/// Replies to send on one socket, each to its peer from its query's destination; reused.
pub struct Replies {
    /// The socket is an IPv6 one.
    ipv6: bool,
    /// Reply buffers; the first `peers.len()` are filled.
    replies: Vec<Vec<u8>>,
    /// Per reply: its destination.
    peers: Vec<Option<SockaddrStorage>>,
    /// Per reply: its source.
    sources: Vec<Local>,
    /// Message headers for replies with a known source, with room for its packet info.
    headers: MultiHeaders<SockaddrStorage>,
    /// Message headers for the others, without control messages: nix's `sendmmsg` would send
    /// a header's whole control space, whatever was last written there.
    plain_headers: MultiHeaders<SockaddrStorage>,
}

impl Replies {
    /// Room for [`BATCH`] replies on an IPv6 socket when `ipv6`, else an IPv4 one.
    fn new(ipv6: bool) -> Self {
        Replies {
            ipv6,
            replies: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            peers: Vec::with_capacity(BATCH),
            sources: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, Some(packet_info_space(ipv6))),
            plain_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    fn clear(&mut self) {
        self.peers.clear();
        self.sources.clear();
    }

    fn len(&self) -> usize {
        self.peers.len()
    }

    /// The next reply's buffer, cleared (there is one while fewer than [`BATCH`] are kept).
    fn next(&mut self) -> &mut Vec<u8> {
        let out = &mut self.replies[self.peers.len()];
        out.clear();
        out
    }

    /// Keeps the reply written into [`Replies::next`], for `peer`.
    fn keep(&mut self, peer: &Peer) {
        self.peers.push(Some(peer.addr));
        self.sources.push(peer.local);
    }

    /// Sends the replies from the `from`th on that leave from the same address as it, with
    /// `flags`; returns how many the system took.
    fn send(&mut self, socket: &impl AsRawFd, from: usize, flags: MsgFlags) -> io::Result<usize> {
        let Some(&source) = self.sources.get(from) else {
            return Ok(0);
        };
        let run = self.sources[from..].iter().take_while(|&&s| s == source).count();
        let mut replies = self.replies[from..].iter();
        let slices: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSlice::new(replies.next().map_or(&[][..], |r| &r[..]))]);
        let info = source.packet_info();
        let messages = [info.message()];
        let (headers, messages) = match source.is_known() {
            true => (&mut self.headers, &messages[..]),
            false => (&mut self.plain_headers, &[][..]),
        };
        let sent = sendmmsg(
            socket.as_raw_fd(),
            headers,
            slices[..run].iter(),
            &self.peers[from..from + run],
            messages,
            flags,
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }

    /// Sends every reply without waiting, then forgets them: a reply the system refuses (a
    /// full socket buffer) is dropped, as the network may.
    fn send_now(&mut self, socket: &impl AsRawFd) {
        let mut sent = 0;
        while sent < self.len() {
            match self.send(socket, sent, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => sent += n.max(1),
                Err(e) => {
                    tracing::debug!(error = %e, peer = ?self.peers[sent].as_ref().and_then(to_std), "udp send");
                    sent += 1;
                }
            }
        }
        self.clear();
    }
}

/// Replies queued by [`send_soon`] on this thread while [`replying_together`] runs.
#[derive(Default)]
struct Queued {
    /// Inside [`replying_together`].
    active: bool,
    /// Per socket: its replies.
    sockets: Vec<(Arc<std::net::UdpSocket>, Replies)>,
    /// Reply batches to reuse.
    spare: Vec<Replies>,
}

thread_local! {
    static QUEUED: RefCell<Queued> = RefCell::default();
}

/// Runs `f`, sending the replies that [`send_soon`] is given meanwhile on this thread at its
/// end, together: one `sendmmsg` per socket and source address instead of one `sendmsg` each
/// (the answers to forwarded queries, taken from an upstream socket in one go, go out so).
pub fn replying_together<T>(f: impl FnOnce() -> T) -> T {
    let nested = QUEUED.with_borrow_mut(|q| std::mem::replace(&mut q.active, true));
    let result = f();
    if !nested {
        QUEUED.with_borrow_mut(|q| {
            q.active = false;
            let Queued { sockets, spare, .. } = q;
            for (socket, mut replies) in sockets.drain(..) {
                replies.send_now(socket.as_ref());
                spare.push(replies);
            }
        });
    }
    result
}

/// Sends `reply` to `peer` on `socket` from its query's destination, without waiting (a full
/// socket buffer drops it, as the network may): at the end of [`replying_together`] when
/// called inside it, else at once.
pub fn send_soon(socket: Arc<std::net::UdpSocket>, reply: &[u8], peer: &Peer) {
    let queued = QUEUED.with_borrow_mut(|q| {
        if !q.active {
            return false;
        }
        let at = match q.sockets.iter().position(|(s, _)| Arc::ptr_eq(s, &socket)) {
            Some(at) => at,
            None => {
                let ipv6 = matches!(peer.local, Local::V6(..));
                let replies = match q.spare.iter().position(|r| r.ipv6 == ipv6) {
                    Some(k) => q.spare.swap_remove(k),
                    None => Replies::new(ipv6),
                };
                q.sockets.push((socket.clone(), replies));
                q.sockets.len() - 1
            }
        };
        let replies = &mut q.sockets[at].1;
        if replies.len() == BATCH {
            replies.send_now(socket.as_ref());
        }
        replies.next().extend_from_slice(reply);
        replies.keep(peer);
        true
    });
    if !queued && let Err(e) = send_one(socket.as_ref(), reply, peer) {
        tracing::debug!(error = %e, peer = ?to_std(&peer.addr), "udp send");
    }
}

/// One socket's received datagrams and replies, reused batch after batch.
pub struct Batch {
    /// The socket is an IPv6 one.
    ipv6: bool,
    /// Each datagram's destination is reported ([`needs_packet_info`]).
    packet_info: bool,
    /// Receive buffers.
    queries: Vec<Vec<u8>>,
    /// Per received datagram with a sender: its buffer, length and addresses.
    received: Vec<(usize, usize, Peer)>,
    /// Replies to send.
    out: Replies,
    recv_headers: MultiHeaders<SockaddrStorage>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("ipv6", &self.ipv6)
            .field("received", &self.received.len())
            .field("replies", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// A batch for an IPv6 socket when `ipv6`, else an IPv4 one; with `packet_info`, for a
    /// socket with it enabled ([`enable_packet_info`]), replies leave from their query's
    /// destination, else from the system's choice (the bound address).
    pub fn new(ipv6: bool, packet_info: bool) -> Self {
        Batch {
            ipv6,
            packet_info,
            queries: vec![vec![0u8; MAX_QUERY]; BATCH],
            received: Vec::with_capacity(BATCH),
            out: Replies::new(ipv6),
            recv_headers: MultiHeaders::preallocate(BATCH, packet_info.then(|| packet_info_space(ipv6))),
        }
    }

    /// Receives up to [`BATCH`] datagrams: waits for the first as the socket does (blocking,
    /// up to its read timeout), then takes what else is queued. Clears the replies.
    ///
    /// # Errors
    ///
    /// The system's `recvmmsg(2)` error: `EAGAIN`/`EWOULDBLOCK` when the read timeout passes
    /// with nothing received, `EINTR` when a signal interrupts the wait.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received.clear();
        self.out.clear();
        let mut bufs = self.queries.iter_mut();
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))]);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.recv_headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        let mut unknown = false;
        for (i, msg) in results.enumerate() {
            let Some(addr) = msg.address else { continue };
            let reported = if self.packet_info {
                let reported = msg
                    .cmsgs()
                    .ok()
                    .and_then(|mut c| c.find_map(|c| Local::received(c, self.ipv6)));
                unknown |= reported.is_none();
                reported
            } else {
                None
            };
            let local = reported.unwrap_or_else(|| Local::unknown(&addr, self.ipv6));
            self.received.push((i, msg.bytes, Peer { addr, local }));
        }
        if unknown {
            // Never seen: the system reports every datagram's destination once asked to. But
            // the system shortens a message header's control space to what it used, and nix
            // does not restore it: headers made anew keep the next datagrams' reports whole.
            tracing::debug!("a datagram without its destination address: replying from the system's choice");
            self.recv_headers = MultiHeaders::preallocate(BATCH, Some(packet_info_space(self.ipv6)));
        }
        Ok(self.received.len())
    }

    /// The received queries (cut to [`MAX_QUERY`]), in the order [`Batch::respond`] answers
    /// them: for work on the whole batch before it is answered.
    pub fn queries(&self) -> impl Iterator<Item = &[u8]> {
        self.received
            .iter()
            .map(|(buf, len, _)| &self.queries[*buf][..(*len).min(MAX_QUERY)])
    }

    /// Calls `respond` on each received query (cut to [`MAX_QUERY`]) with its addresses and
    /// the next free reply buffer, cleared; a reply is kept for sending when `respond` says so.
    pub fn respond(&mut self, mut respond: impl FnMut(&[u8], &Peer, &mut Vec<u8>) -> bool) {
        for (buf, len, peer) in &self.received {
            if respond(&self.queries[*buf][..(*len).min(MAX_QUERY)], peer, self.out.next()) {
                self.out.keep(peer);
            }
        }
    }

    /// How many replies [`Batch::respond`] kept.
    pub fn replies(&self) -> usize {
        self.out.len()
    }

    /// Sends the replies from the `from`th on that leave from the same address as it, waiting
    /// for socket buffer space as the socket does; returns how many the system took.
    ///
    /// # Errors
    ///
    /// The system's `sendmmsg(2)` error when not even the first reply is taken: one of the
    /// network's for that reply's client (`ENETUNREACH`; `EADDRNOTAVAIL` when its source is no
    /// longer an address of this host), or `EAGAIN` on a non-blocking socket with a full buffer.
    pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
        self.out.send(socket, from, MsgFlags::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies given to `send_soon` inside `replying_together` wait for its end, then all go.
    #[test]
    fn replies_given_together_leave_together() {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_nonblocking(true).unwrap();
        let server = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let peer = Peer {
            addr: SockaddrStorage::from(client.local_addr().unwrap()),
            local: Local::V4(Ipv4Addr::LOCALHOST),
        };
        let mut buf = [0u8; 64];
        replying_together(|| {
            for k in 0..3u8 {
                send_soon(server.clone(), &[k; 12], &peer);
            }
            let early = client.recv(&mut buf);
            assert!(
                early.is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock),
                "none sent yet"
            );
        });
        for k in 0..3u8 {
            let n = client.recv(&mut buf).expect("sent at the end");
            assert_eq!(buf[..n], [k; 12]);
        }
        send_soon(server.clone(), &[9; 12], &peer);
        let n = client.recv(&mut buf).expect("outside, sent at once");
        assert_eq!(buf[..n], [9; 12]);
    }
}
