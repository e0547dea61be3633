//! UDP to one upstream over a few long-lived connected sockets, answers matched by ID.
//!
//! A fresh socket per query costs more than the forward itself (socket, bind, connect,
//! epoll registration, close: half of the CPU a forward took). Instead each upstream has
//! [`SLOTS`] sockets, each bound to its own kernel-chosen random port and connected to the
//! upstream (the kernel drops datagrams from anyone else), each with one task receiving and
//! handing answers to the waiting queries by ID. A socket is replaced after [`MAX_AGE`] or
//! [`MAX_USES`] queries, so source ports keep changing (RFC 5452 §9.2: random port and ID;
//! CoreDNS likewise keeps its upstream sockets for a few seconds). A replaced socket answers
//! what is still in flight on it, then closes.
//!
//! An answer counts only if it is a response with a pending ID and that query's question;
//! anything else (spoofed, late, garbled) is dropped and the query keeps waiting. An ICMP
//! error (the upstream's port is closed) fails every query waiting on that socket at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::super::wire;

/// Sockets per upstream.
pub(super) const SLOTS: usize = 16;
/// Longest a socket takes new queries.
pub(super) const MAX_AGE: Duration = Duration::from_secs(10);
/// Most queries a socket takes.
pub(super) const MAX_USES: u32 = 1000;

/// A query waiting for its answer.
struct Pending {
    /// The query as sent, to check the answer's question against.
    msg: Vec<u8>,
    token: u64,
    tx: oneshot::Sender<io::Result<Vec<u8>>>,
}

/// One connected socket and the queries waiting on it.
struct Channel {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    born: Instant,
    uses: AtomicU32,
    retired: AtomicBool,
}

impl Channel {
    fn fresh(&self) -> bool {
        self.born.elapsed() < MAX_AGE && self.uses.load(Ordering::Relaxed) < MAX_USES
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Pending>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Receives until retired and idle, handing each answer to its query.
    async fn receive(self: Arc<Self>) {
        let mut buf = vec![0u8; 65535];
        loop {
            let n = match tokio::time::timeout(Duration::from_secs(1), self.socket.recv(&mut buf)).await {
                Err(_) if self.retired.load(Ordering::Relaxed) && self.pending().is_empty() => return,
                Err(_) => continue,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    // An ICMP error from the upstream: whoever waits here will not be answered.
                    let kind = e.kind();
                    for (_, p) in self.pending().drain() {
                        let _ = p.tx.send(Err(io::Error::new(kind, e.to_string())));
                    }
                    continue;
                }
            };
            let reply = &buf[..n];
            if n < wire::HEADER_LEN {
                continue;
            }
            let id = u16::from_be_bytes([reply[0], reply[1]]);
            let mut pending = self.pending();
            if pending.get(&id).is_some_and(|p| wire::answers(reply, &p.msg)) {
                let p = pending.remove(&id).expect("just found");
                drop(pending);
                let _ = p.tx.send(Ok(reply.to_vec()));
            }
        }
    }
}

/// The sockets to one upstream.
pub(super) struct Channels {
    upstream: SocketAddr,
    slots: Vec<Mutex<Option<Arc<Channel>>>>,
    ids: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Channels {
    /// No socket yet: they open on first use.
    pub(super) fn new(upstream: SocketAddr) -> Self {
        Channels {
            upstream,
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            ids: Default::default(),
            counter: AtomicU64::new(0),
        }
    }

    fn random(&self) -> u64 {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    /// A fresh socket of a random slot, opened (and its receiver started) if need be.
    fn channel(&self, pick: u64) -> io::Result<Arc<Channel>> {
        let mut slot = self.slots[pick as usize % SLOTS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = slot.as_ref().filter(|c| c.fresh()) {
            c.uses.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        if let Some(old) = slot.take() {
            old.retired.store(true, Ordering::Relaxed);
        }
        let local: SocketAddr = match self.upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(local)?;
        socket.connect(self.upstream)?;
        socket.set_nonblocking(true)?;
        let channel = Arc::new(Channel {
            socket: UdpSocket::from_std(socket)?,
            pending: Mutex::new(HashMap::new()),
            born: Instant::now(),
            uses: AtomicU32::new(1),
            retired: AtomicBool::new(false),
        });
        tokio::spawn(channel.clone().receive());
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Sends `msg` with a fresh random ID (written into it) and waits up to `timeout` for the
    /// answer. `Ok(None)`: timed out.
    pub(super) async fn exchange(&self, msg: &mut [u8], timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let random = self.random();
        let channel = self.channel(random >> 32)?;
        let token = random;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = channel.pending();
            let mut id = random as u16;
            while pending.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            msg[..2].copy_from_slice(&id.to_be_bytes());
            pending.insert(
                id,
                Pending {
                    msg: msg.to_vec(),
                    token,
                    tx,
                },
            );
            id
        };
        // Forgets the query however this ends (answered, timed out, or the caller gone).
        let _waiting = Waiting {
            channel: &channel,
            id,
            token,
        };
        channel.socket.send(msg).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer.map(Some),
            Ok(Err(_)) => Err(io::Error::other("the upstream socket closed")),
            Err(_) => Ok(None),
        }
    }
}

/// A query's place in its channel's pending map, removed on drop.
struct Waiting<'a> {
    channel: &'a Channel,
    id: u16,
    token: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut pending = self.channel.pending();
        if pending.get(&self.id).is_some_and(|p| p.token == self.token) {
            pending.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn query(name: &[u8]) -> Vec<u8> {
        let mut q = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(name);
        q.extend_from_slice(&[0, 1, 0, 1]);
        q
    }

    /// An upstream that echoes each query back as a response, and records source ports;
    /// `mangle` may spoil the echo.
    async fn upstream(mangle: fn(&mut Vec<u8>)) -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let ports = Arc::new(Mutex::new(Vec::new()));
        let seen = ports.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                seen.lock().unwrap().push(from.port());
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                mangle(&mut reply);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (addr, ports)
    }

    #[tokio::test]
    async fn answers_by_id_on_rotating_random_ports() {
        let (addr, ports) = upstream(|_| {}).await;
        let channels = Channels::new(addr);
        let total = SLOTS * MAX_USES as usize + 200;
        for i in 0..total {
            let mut msg = query(if i % 2 == 0 { b"\x01a\x00" } else { b"\x01b\x00" });
            let answer = channels
                .exchange(&mut msg, Duration::from_secs(2))
                .await
                .unwrap()
                .expect("answered");
            assert_eq!(answer[..2], msg[..2], "the answer to this query");
            assert_eq!(answer[12..], msg[12..]);
        }
        let distinct: HashSet<u16> = ports.lock().unwrap().iter().copied().collect();
        assert!(
            distinct.len() > SLOTS,
            "sockets are replaced after {MAX_USES} queries: {} ports",
            distinct.len()
        );
        for slot in &channels.slots {
            if let Some(c) = slot.lock().unwrap().as_ref() {
                assert!(c.pending().is_empty(), "nothing left waiting");
            }
        }
    }

    #[tokio::test]
    async fn an_answer_to_another_question_is_not_taken_and_nothing_leaks() {
        let (addr, _) = upstream(|reply| reply[13] = b'z').await;
        let channels = Channels::new(addr);
        let mut msg = query(b"\x01a\x00");
        let answer = channels.exchange(&mut msg, Duration::from_millis(200)).await.unwrap();
        assert!(answer.is_none(), "times out rather than take a wrong answer");
        for slot in &channels.slots {
            if let Some(c) = slot.lock().unwrap().as_ref() {
                assert!(c.pending().is_empty(), "the timed-out query is forgotten");
            }
        }
    }

    #[tokio::test]
    async fn a_closed_upstream_port_fails_fast() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let channels = Channels::new(closed);
        let started = Instant::now();
        let mut msg = query(b"\x01a\x00");
        let result = channels.exchange(&mut msg, Duration::from_secs(5)).await;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "not after the timeout");
    }
}
