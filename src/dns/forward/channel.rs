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
//! A query waits either in a task ([`Channels::exchange`]) or as a callback
//! ([`Channels::start`]) that the receiving task calls with the answer, so a UDP client's
//! answer goes out from there with no other task woken; callbacks past their deadline are
//! called with a timeout every [`SWEEP`] while any wait.
//!
//! An answer counts only if it is a response with a pending ID and that query's question;
//! anything else (spoofed, late, garbled) is dropped and the query keeps waiting. An ICMP
//! error (the upstream's port is closed) fails every query waiting on that socket at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::super::wire;

/// Sockets per upstream.
pub(super) const SLOTS: usize = 16;
/// Longest a socket takes new queries.
pub(super) const MAX_AGE: Duration = Duration::from_secs(10);
/// Most queries a socket takes.
pub(super) const MAX_USES: u32 = 1000;

/// Answers taken in one go after the first, before deadlines are looked at again.
const DRAIN: usize = 64;

/// How often callbacks are checked for their deadline, at most.
pub(super) const SWEEP: Duration = Duration::from_millis(50);

/// What a callback gets: the answer (its bytes, to change in place), `Ok(None)` when the
/// deadline passed, or the socket's error.
pub(super) type Done = Box<dyn FnOnce(io::Result<Option<&mut [u8]>>) + Send>;

/// Who waits for an answer.
enum Waiter {
    /// A task.
    Task(oneshot::Sender<io::Result<Vec<u8>>>),
    /// A callback, called by the receiving task.
    Call { deadline: Instant, done: Done },
}

impl Waiter {
    fn fail(self, e: &io::Error) {
        let e = io::Error::new(e.kind(), e.to_string());
        match self {
            Waiter::Task(tx) => {
                let _ = tx.send(Err(e));
            }
            Waiter::Call { done, .. } => done(Err(e)),
        }
    }
}

/// A query waiting for its answer.
struct Pending {
    /// The query as sent, to check the answer's question against.
    msg: Vec<u8>,
    token: u64,
    waiter: Waiter,
}

/// One connected socket and the queries waiting on it.
struct Channel {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    born: Instant,
    uses: AtomicU32,
    retired: AtomicBool,
    /// The receiving task wakes every [`SWEEP`] (else it is told of a new callback).
    sweeping: AtomicBool,
    new_call: tokio::sync::Notify,
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
        let mut swept = Instant::now();
        loop {
            let idle = self.pending().is_empty();
            self.sweeping.store(!idle, Ordering::SeqCst);
            let wait = if idle { Duration::from_secs(1) } else { SWEEP };
            let received = tokio::select! {
                r = tokio::time::timeout(wait, self.socket.recv(&mut buf)) => r,
                () = self.new_call.notified() => continue,
            };
            match received {
                Err(_) if self.retired.load(Ordering::Relaxed) && self.pending().is_empty() => return,
                Err(_) => {}
                Ok(Ok(n)) => {
                    self.answer(&mut buf[..n]);
                    // What else is queued, without a timer each.
                    for _ in 0..DRAIN {
                        match self.socket.try_recv(&mut buf) {
                            Ok(n) => self.answer(&mut buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                self.fail_all(&e);
                                break;
                            }
                        }
                    }
                }
                Ok(Err(e)) => self.fail_all(&e),
            }
            if swept.elapsed() >= SWEEP {
                swept = Instant::now();
                let expired: Vec<Pending> = self
                    .pending()
                    .extract_if(|_, p| matches!(p.waiter, Waiter::Call { deadline, .. } if deadline <= swept))
                    .map(|(_, p)| p)
                    .collect();
                for p in expired {
                    if let Waiter::Call { done, .. } = p.waiter {
                        done(Ok(None));
                    }
                }
            }
        }
    }

    /// An ICMP error from the upstream: whoever waits here will not be answered.
    fn fail_all(&self, e: &io::Error) {
        let failed: Vec<Pending> = self.pending().drain().map(|(_, p)| p).collect();
        for p in failed {
            p.waiter.fail(e);
        }
    }

    /// Hands `reply` to the query it answers, if any.
    fn answer(&self, reply: &mut [u8]) {
        if reply.len() < wire::HEADER_LEN {
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let mut pending = self.pending();
        if !pending.get(&id).is_some_and(|p| wire::answers(reply, &p.msg)) {
            return;
        }
        let p = pending.remove(&id).expect("just found");
        drop(pending);
        match p.waiter {
            Waiter::Task(tx) => {
                let _ = tx.send(Ok(reply.to_vec()));
            }
            Waiter::Call { done, .. } => done(Ok(Some(reply))),
        }
    }

    /// Registers `msg` under a fresh ID (written into it) near `random`; returns the ID.
    fn register(&self, msg: &mut [u8], random: u64, waiter: Waiter) -> u16 {
        let mut pending = self.pending();
        let mut id = random as u16;
        while pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        msg[..2].copy_from_slice(&id.to_be_bytes());
        let pending_msg = msg.to_vec();
        pending.insert(
            id,
            Pending {
                msg: pending_msg,
                token: random,
                waiter,
            },
        );
        id
    }

    /// [`Channels::start`] on this socket, the ID near `random`.
    fn start(&self, msg: &mut [u8], random: u64, timeout: Duration, done: Done) -> Result<(), (io::Error, Done)> {
        let deadline = Instant::now() + timeout;
        let id = self.register(msg, random, Waiter::Call { deadline, done });
        if !self.sweeping.load(Ordering::SeqCst) {
            self.new_call.notify_one();
        }
        // Straight to the socket: tokio's `try_send` fails until its reactor has seen the new
        // socket writable.
        let sent = nix::sys::socket::send(self.socket.as_raw_fd(), msg, MsgFlags::MSG_DONTWAIT);
        match sent.map_err(io::Error::from) {
            Ok(_) => Ok(()),
            // Unless the receiving task already failed it (an ICMP error), it is the caller's.
            Err(e) => match self.forget(id, random) {
                Some(Waiter::Call { done, .. }) => Err((e, done)),
                _ => Ok(()),
            },
        }
    }

    /// Forgets the query `id` if it is still the one of `token`; returns how it waited.
    fn forget(&self, id: u16, token: u64) -> Option<Waiter> {
        let mut pending = self.pending();
        if pending.get(&id).is_some_and(|p| p.token == token) {
            return pending.remove(&id).map(|p| p.waiter);
        }
        None
    }
}

/// The sockets to one upstream.
pub(super) struct Channels {
    upstream: SocketAddr,
    /// Where the receiving tasks run (callers may be threads of their own).
    runtime: tokio::runtime::Handle,
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
    /// No socket yet: they open on first use, their receiving tasks on `runtime`.
    pub(super) fn new(upstream: SocketAddr, runtime: tokio::runtime::Handle) -> Self {
        Channels {
            upstream,
            runtime,
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
        let _runtime = self.runtime.enter();
        let channel = Arc::new(Channel {
            socket: UdpSocket::from_std(socket)?,
            pending: Mutex::new(HashMap::new()),
            born: Instant::now(),
            uses: AtomicU32::new(1),
            retired: AtomicBool::new(false),
            sweeping: AtomicBool::new(false),
            new_call: tokio::sync::Notify::new(),
        });
        self.runtime.spawn(channel.clone().receive());
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Sends `msg` with a fresh random ID (written into it) and waits up to `timeout` for the
    /// answer. `Ok(None)`: timed out.
    pub(super) async fn exchange(&self, msg: &mut [u8], timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let random = self.random();
        let channel = self.channel(random >> 32)?;
        let (tx, rx) = oneshot::channel();
        let id = channel.register(msg, random, Waiter::Task(tx));
        // Forgets the query however this ends (answered, timed out, or the caller gone).
        let _waiting = Waiting {
            channel: &channel,
            id,
            token: random,
        };
        channel.socket.send(msg).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer.map(Some),
            Ok(Err(_)) => Err(io::Error::other("the upstream socket closed")),
            Err(_) => Ok(None),
        }
    }

    /// Sends `msg` with a fresh random ID (written into it) without waiting: `done` is called
    /// with the answer, or with `Ok(None)` once `timeout` has passed (within [`SWEEP`]), or with
    /// the socket's error. Callable from any thread. When it could not be sent, `done` comes
    /// back with the error, not called.
    pub(super) fn start(&self, msg: &mut [u8], timeout: Duration, done: Done) -> Result<(), (io::Error, Done)> {
        let random = self.random();
        match self.channel(random >> 32) {
            Ok(channel) => channel.start(msg, random, timeout, done),
            Err(e) => Err((e, done)),
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
        self.channel.forget(self.id, self.token);
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

    fn assert_nothing_waits(channels: &Channels, why: &str) {
        for slot in &channels.slots {
            if let Some(c) = slot.lock().unwrap().as_ref() {
                assert!(c.pending().is_empty(), "{why}");
            }
        }
    }

    #[tokio::test]
    async fn answers_by_id_on_rotating_random_ports() {
        let (addr, ports) = upstream(|_| {}).await;
        let channels = Channels::new(addr, tokio::runtime::Handle::current());
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
        assert_nothing_waits(&channels, "nothing left waiting");
    }

    #[tokio::test]
    async fn an_answer_to_another_question_is_not_taken_and_nothing_leaks() {
        let (addr, _) = upstream(|reply| reply[13] = b'z').await;
        let channels = Channels::new(addr, tokio::runtime::Handle::current());
        let mut msg = query(b"\x01a\x00");
        let answer = channels.exchange(&mut msg, Duration::from_millis(200)).await.unwrap();
        assert!(answer.is_none(), "times out rather than take a wrong answer");
        assert_nothing_waits(&channels, "the timed-out query is forgotten");
    }

    #[tokio::test]
    async fn a_closed_upstream_port_fails_fast() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let channels = Channels::new(closed, tokio::runtime::Handle::current());
        let started = Instant::now();
        let mut msg = query(b"\x01a\x00");
        let result = channels.exchange(&mut msg, Duration::from_secs(5)).await;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "not after the timeout");
    }

    /// Starts `msg` on `channels`; the callback's outcome: the answer, `None` (timed out) or
    /// the error's kind, and when it came.
    async fn started(
        channels: &Channels,
        slot: Option<&Channel>,
        msg: &mut [u8],
        timeout: Duration,
    ) -> (Result<Option<Vec<u8>>, io::ErrorKind>, Duration) {
        let (tx, rx) = oneshot::channel();
        let begun = Instant::now();
        let done: Done = Box::new(move |result| {
            let _ = tx.send(result.map(|a| a.map(|a| a.to_vec())).map_err(|e| e.kind()));
        });
        let result = match slot {
            Some(channel) => channel.start(msg, channels.random(), timeout, done),
            None => channels.start(msg, timeout, done),
        };
        if let Err((e, done)) = result {
            done(Err(e));
        }
        let outcome = rx.await.expect("the callback is called");
        (outcome, begun.elapsed())
    }

    #[tokio::test]
    async fn callbacks_get_the_answer_or_a_timeout_on_time() {
        let (addr, _) = upstream(|_| {}).await;
        let channels = Channels::new(addr, tokio::runtime::Handle::current());
        for i in 0..50u8 {
            let mut msg = query(&[1, b'a' + i % 26, 0]);
            let (answer, _) = started(&channels, None, &mut msg, Duration::from_secs(2)).await;
            let answer = answer.expect("no error").expect("answered");
            assert_eq!(answer[..2], msg[..2], "the answer to this query");
            assert_eq!(answer[12..], msg[12..]);
        }
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let channels = Channels::new(silent.local_addr().unwrap(), tokio::runtime::Handle::current());
        let channel = channels.channel(0).unwrap();
        for _ in 0..2 {
            // The second time the receiving task idles (no query waits): it is woken.
            tokio::time::sleep(SWEEP * 2).await;
            let mut msg = query(b"\x01a\x00");
            let (answer, took) = started(&channels, Some(&channel), &mut msg, Duration::from_millis(100)).await;
            assert_eq!(answer, Ok(None), "timed out");
            assert!(took >= Duration::from_millis(100), "{took:?}");
            // Without being woken, an idle receiving task would look again only after 1 s.
            assert!(took < Duration::from_millis(600), "on time: {took:?}");
        }
        assert_nothing_waits(&channels, "nothing left waiting");
    }

    #[tokio::test]
    async fn a_callback_on_a_closed_upstream_port_gets_the_error() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let channels = Channels::new(closed, tokio::runtime::Handle::current());
        let mut msg = query(b"\x01a\x00");
        let (outcome, took) = started(&channels, None, &mut msg, Duration::from_secs(5)).await;
        assert_eq!(outcome, Err(io::ErrorKind::ConnectionRefused));
        assert!(took < Duration::from_secs(2), "not after the timeout: {took:?}");
    }
}
