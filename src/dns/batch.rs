//! Batched UDP I/O: `recvmmsg` and `sendmmsg` (Linux), through nix's safe wrappers.
//!
//! Profiled at full load, one `recvfrom` and one `sendto` per query were 87 % of the CPU; a
//! batch of up to [`BATCH`] datagrams costs one system call each way. A [`Batch`] belongs to
//! one thread (its message headers hold raw pointers) and allocates nothing after it is made.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagrams per system call at most.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: a query larger than this is cut and answered FORMERR.
pub const MAX_QUERY: usize = 4096;

/// The standard form of a socket address of the IP families.
pub fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// One socket's received datagrams and replies, reused batch after batch.
pub struct Batch {
    /// Receive buffers.
    queries: Vec<Vec<u8>>,
    /// Per received datagram with a sender: its buffer, length and sender.
    received: Vec<(usize, usize, SockaddrStorage)>,
    /// Replies to send; the first `peers.len()` are filled.
    replies: Vec<Vec<u8>>,
    /// Per reply: its destination.
    peers: Vec<Option<SockaddrStorage>>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("received", &self.received.len())
            .field("replies", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            queries: vec![vec![0u8; MAX_QUERY]; BATCH],
            received: Vec::with_capacity(BATCH),
            replies: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            peers: Vec::with_capacity(BATCH),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl Batch {
    /// Receives up to [`BATCH`] datagrams: waits for the first as the socket does (blocking,
    /// up to its read timeout), then takes what else is queued. Clears the replies.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received.clear();
        self.peers.clear();
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
        for (i, msg) in results.enumerate() {
            if let Some(addr) = msg.address {
                self.received.push((i, msg.bytes, addr));
            }
        }
        Ok(self.received.len())
    }

    /// Calls `respond` on each received query (cut to [`MAX_QUERY`]) with its sender and the
    /// next free reply buffer, cleared; a reply is kept for sending when `respond` says so.
    pub fn respond(&mut self, mut respond: impl FnMut(&[u8], &SockaddrStorage, &mut Vec<u8>) -> bool) {
        for &(buf, len, peer) in &self.received {
            let out = &mut self.replies[self.peers.len()];
            out.clear();
            if respond(&self.queries[buf][..len.min(MAX_QUERY)], &peer, out) {
                self.peers.push(Some(peer));
            }
        }
    }

    /// How many replies [`Batch::respond`] kept.
    pub fn replies(&self) -> usize {
        self.peers.len()
    }

    /// Sends the replies from the `from`th on, waiting for socket buffer space as the socket
    /// does; returns how many the system took.
    pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
        let peers = &self.peers[from..];
        if peers.is_empty() {
            return Ok(0);
        }
        let mut replies = self.replies[from..].iter();
        let slices: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSlice::new(replies.next().map_or(&[][..], |r| &r[..]))]);
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut self.send_headers,
            slices[..peers.len()].iter(),
            peers,
            [],
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }
}
