//! UDP to one upstream over a few long-lived connected sockets; every query waiting on a
//! socket is one pending entry with one deadline.
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
//! One way of waiting: a query registers its waiter ([`Waiter`]: the forwarder's pending
//! forward, which holds its query) with its deadline in the socket's pending map and
//! timer queue (a `DelayQueue`, a hierarchical wheel) under one lock, and the socket's
//! receiving task completes it exactly once: with the answer, with `Ok(None)` at the deadline,
//! or with the socket's error. So a UDP client's answer goes out from the receiving task with
//! no other task woken, a task waits through a waiter that fills a oneshot, and no query has
//! a timer of its own. The socket is polled for reading only (see [`Channel::socket`]).
//!
//! Invariants (each under the channel's lock): every pending query has exactly one timer;
//! the receiving task ends only when the socket is retired and nothing is pending, and marks
//! it closed as it does, and registering on a closed socket fails (the caller takes another
//! one), so no query can wait on a socket nobody reads; an insert earlier than the timer
//! the receiving task sleeps on wakes it (the queue keeps its waker), so no deadline is
//! missed however the receiving task was idling. While the socket is in use a tick ([`TICK`])
//! keeps that timer no later than a new query's deadline, so registering seldom wakes the
//! receiving task (a wake-up of a runtime thread, once per query at moderate rates).
//!
//! An answer counts only if it is a response with a pending ID and that query's question;
//! anything else (spoofed, late, garbled) is dropped and the query keeps waiting. An ICMP
//! error (the upstream's port is closed) fails every query waiting on that socket at once.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nix::sys::socket::MsgFlags;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use super::super::batch::replying_together;
use super::super::wire;

/// Sockets per upstream.
pub(super) const SLOTS: usize = 16;
/// Longest a socket takes new queries.
pub(super) const MAX_AGE: Duration = Duration::from_secs(10);
/// Most queries a socket takes.
pub(super) const MAX_USES: u32 = 1000;

/// While a socket is in use, a timer entry of its own (the tick) expires this often, so that
/// the queue's timer is armed no later than any query's deadline (those at least this far
/// off): registering a query then need not wake the receiving task to arm it, which would
/// cost a wake-up of a runtime thread per query at moderate rates. A socket unused for a tick
/// stops ticking (its next query wakes the task, as on the first).
const TICK: Duration = Duration::from_millis(100);

/// Answers taken in one go, before deadlines are looked at again.
const DRAIN: usize = 64;

/// Answers taken per system call at most (`recvmmsg`).
const RECV_BATCH: usize = 16;

/// Queries pending on one socket at most (of its 65 536 IDs): beyond, a query is refused
/// (`WouldBlock`), so that finding a free ID stays quick.
const MAX_PENDING: usize = 16_384;

/// Who waits for a query's answer, holding the query (so the socket keeps no copy of it; the
/// forwarder's waiters are plain values, so that a pending query costs no allocation).
pub(super) trait Waiter: Send + 'static {
    /// The query whose question an answer must have (its ID is not looked at).
    fn query(&self) -> &[u8];
    /// Called once: with the answer (its bytes, to change in place), `Ok(None)` when the
    /// deadline passed, or the socket's error.
    fn done(self, result: io::Result<Option<&mut [u8]>>);
}

/// When sockets are replaced.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rotation {
    /// Longest a socket takes new queries.
    pub(super) max_age: Duration,
    /// Most queries a socket takes.
    pub(super) max_uses: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_age: MAX_AGE,
            max_uses: MAX_USES,
        }
    }
}

/// A query waiting for its answer.
struct Pending<W: Waiter> {
    token: u64,
    /// Its timer.
    key: Key,
    done: W,
}

impl<W: Waiter> Pending<W> {
    /// Whether `reply` has this query's question (its ID is the one this query waits under).
    fn answered_by(&self, reply: &[u8]) -> bool {
        wire::answers_question(reply, self.done.query())
    }
}

/// What the lock of a socket guards.
struct State<W: Waiter> {
    /// By ID (IDs are ours and random: no flooding to fear from a fast hash).
    pending: foldhash::HashMap<u16, Pending<W>>,
    /// One deadline per pending query, by ID, and the tick (`None`).
    timers: DelayQueue<Option<u16>>,
    /// The tick is in `timers`.
    ticking: bool,
    /// A query was registered since the tick was last armed.
    used: bool,
    /// Replaced: takes no new queries from the pool.
    retired: bool,
    /// Its receiving task has ended: takes no queries at all.
    closed: bool,
    /// The receiving task, woken when the socket is retired.
    waker: Option<Waker>,
}

/// One connected socket and the queries waiting on it.
struct Channel<W: Waiter> {
    /// Polled for reading only: with writability in the poller too, every datagram sent on
    /// it would wake a runtime thread when its buffer space came back (an edge-triggered
    /// EPOLLOUT), once per batch of forwards, for nothing.
    socket: AsyncFd<std::net::UdpSocket>,
    state: Mutex<State<W>>,
    born: Instant,
    uses: AtomicU32,
}

/// What woke the receiving task.
enum Event<W: Waiter> {
    Datagram(io::Result<usize>),
    Expired(Pending<W>),
    Closed,
}

/// Why a socket did not take a query.
enum Refused<W> {
    /// It is closed: take another.
    Closed(W),
    /// This error (sending, or too many pending).
    Error(io::Error, W),
}

impl<W: Waiter> Channel<W> {
    fn state(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fresh(&self, rotation: Rotation) -> bool {
        self.born.elapsed() < rotation.max_age && self.uses.load(Ordering::Relaxed) < rotation.max_uses
    }

    /// Receives until retired and idle, handing each answer to its query and each expired
    /// query its timeout.
    async fn receive(self: Arc<Self>) {
        loop {
            // (Woken by an ICMP error too, as `recv` is.)
            let event = tokio::select! {
                biased;
                event = std::future::poll_fn(|cx| self.poll_timers(cx)) => event,
                received = self.take_ready() => Event::Datagram(received),
            };
            match event {
                Event::Closed => return,
                Event::Expired(p) => p.done.done(Ok(None)),
                Event::Datagram(Ok(_)) => {}
                Event::Datagram(Err(e)) => self.fail_all(&e),
            }
        }
    }

    /// Waits until the socket is readable (or has an error), then takes the answers queued
    /// ([`Channel::take_answers`]); how many. A short `recvmmsg` says the queue is empty, so
    /// the readiness is cleared then, without the `recvmmsg` that would find nothing (one
    /// system call fewer per wake-up; an answer queued meanwhile is reported by the poller
    /// again, edge-triggered, so none is missed).
    async fn take_ready(&self) -> io::Result<usize> {
        loop {
            let mut ready = self.socket.ready(Interest::READABLE | Interest::ERROR).await?;
            match self.take_answers() {
                Ok((taken, drained)) => {
                    if drained {
                        ready.clear_ready();
                    }
                    return Ok(taken);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes what answers are queued, up to [`DRAIN`], [`RECV_BATCH`] per system call, and
    /// hands each to its query, the UDP clients' replies sent together at the end
    /// ([`replying_together`]); how many and whether the queue was emptied, or `WouldBlock`
    /// when none was queued.
    fn take_answers(&self) -> io::Result<(usize, bool)> {
        replying_together(|| {
            RECEIVED.with_borrow_mut(|received| {
                let received = received.get_or_insert_with(Received::new);
                let mut taken = 0;
                while taken < DRAIN {
                    let n = match received.recv(self.socket.as_raw_fd()) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && taken > 0 => return Ok((taken, true)),
                        Err(e) => return Err(e),
                    };
                    for (buf, &len) in received.bufs.iter_mut().zip(&received.lens[..n]) {
                        self.answer(&mut buf[..len]);
                    }
                    taken += n;
                    if n < RECV_BATCH {
                        return Ok((taken, true));
                    }
                }
                Ok((taken, false))
            })
        })
    }

    /// An expired query, or the end when the socket is retired and nothing is pending.
    fn poll_timers(&self, cx: &mut Context<'_>) -> Poll<Event<W>> {
        let mut state = self.state();
        if state.retired && state.pending.is_empty() {
            state.closed = true;
            return Poll::Ready(Event::Closed);
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        loop {
            // With nothing pending (`Ready(None)`) the queue wakes us on its next insert.
            if let Poll::Ready(Some(expired)) = state.timers.poll_expired(cx) {
                match expired.into_inner() {
                    Some(id) => {
                        let p = state.pending.remove(&id).expect("every timer has its query");
                        return Poll::Ready(Event::Expired(p));
                    }
                    // (Polled again: that arms the queue's timer for its next deadline.)
                    None => {
                        state.ticking = false;
                        continue;
                    }
                }
            }
            if state.ticking || !std::mem::take(&mut state.used) {
                return Poll::Pending;
            }
            state.timers.insert(None, TICK);
            state.ticking = true;
        }
    }

    /// Takes no new queries; closes once nothing is pending.
    fn retire(&self) {
        let mut state = self.state();
        state.retired = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// An ICMP error from the upstream: whoever waits here will not be answered.
    fn fail_all(&self, e: &io::Error) {
        let failed: Vec<Pending<W>> = {
            let mut state = self.state();
            state.timers.clear();
            state.ticking = false;
            state.pending.drain().map(|(_, p)| p).collect()
        };
        for p in failed {
            p.done.done(Err(io::Error::new(e.kind(), e.to_string())));
        }
    }

    /// Hands `reply` to the query it answers, if any.
    fn answer(&self, reply: &mut [u8]) {
        if reply.len() < wire::HEADER_LEN {
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let p = {
            let mut state = self.state();
            if !state.pending.get(&id).is_some_and(|p| p.answered_by(reply)) {
                return;
            }
            let p = state.pending.remove(&id).expect("just found");
            state.timers.remove(&p.key);
            p
        };
        p.done.done(Ok(Some(reply)));
    }

    /// Registers `msg` until `deadline` under a fresh ID near `random` (written into it) and
    /// sends it.
    fn start(&self, msg: &mut [u8], random: u64, deadline: Instant, done: W) -> Result<(), Refused<W>> {
        let id = self.register(msg, random, deadline, done)?;
        // Straight to the socket: tokio's `try_send` fails until its reactor has seen the new
        // socket writable.
        let sent = nix::sys::socket::send(self.socket.as_raw_fd(), msg, MsgFlags::MSG_DONTWAIT);
        match sent.map_err(io::Error::from) {
            Ok(_) => Ok(()),
            // Unless the receiving task already failed it (an ICMP error), it is the caller's.
            Err(e) => match self.forget(id, random) {
                Some(done) => Err(Refused::Error(e, done)),
                None => Ok(()),
            },
        }
    }

    /// Registers `msg` until `deadline` under a fresh ID near `random` (written into it),
    /// `random` its token; the ID.
    fn register(&self, msg: &mut [u8], random: u64, deadline: Instant, done: W) -> Result<u16, Refused<W>> {
        let mut state = self.state();
        if state.closed {
            return Err(Refused::Closed(done));
        }
        if state.pending.len() >= MAX_PENDING {
            return Err(Refused::Error(io::ErrorKind::WouldBlock.into(), done));
        }
        let mut id = random as u16;
        while state.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        msg[..2].copy_from_slice(&id.to_be_bytes());
        let key = state.timers.insert_at(Some(id), deadline);
        state.used = true;
        let pending = Pending {
            token: random,
            key,
            done,
        };
        state.pending.insert(id, pending);
        Ok(id)
    }

    /// Forgets the query `id` if it is still the one of `token`; returns its callback.
    fn forget(&self, id: u16, token: u64) -> Option<W> {
        let mut state = self.state();
        if state.pending.get(&id).is_none_or(|p| p.token != token) {
            return None;
        }
        let p = state.pending.remove(&id).expect("just found");
        state.timers.remove(&p.key);
        Some(p.done)
    }
}

/// The sockets to one upstream, whose queries wait as `W`.
pub(super) struct Channels<W: Waiter> {
    upstream: SocketAddr,
    /// Where the receiving tasks run (callers may be threads of their own).
    runtime: tokio::runtime::Handle,
    rotation: Rotation,
    slots: Vec<Mutex<Option<Arc<Channel<W>>>>>,
    ids: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

impl<W: Waiter> std::fmt::Debug for Channels<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl<W: Waiter> Channels<W> {
    /// No socket yet: they open on first use, their receiving tasks on `runtime`.
    pub(super) fn new(upstream: SocketAddr, runtime: tokio::runtime::Handle) -> Self {
        Channels::rotating(upstream, runtime, Rotation::default())
    }

    /// The same, sockets replaced as `rotation` says.
    pub(super) fn rotating(upstream: SocketAddr, runtime: tokio::runtime::Handle, rotation: Rotation) -> Self {
        Channels {
            upstream,
            runtime,
            rotation,
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            ids: Default::default(),
            counter: AtomicU64::new(0),
        }
    }

    /// A random number: IDs, slots.
    pub(super) fn random(&self) -> u64 {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    fn slot(&self, pick: u64) -> MutexGuard<'_, Option<Arc<Channel<W>>>> {
        self.slots[pick as usize % SLOTS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh socket of a random slot, opened (and its receiver started) if need be.
    fn channel(&self, pick: u64) -> io::Result<Arc<Channel<W>>> {
        let mut slot = self.slot(pick);
        if let Some(c) = slot.as_ref().filter(|c| c.fresh(self.rotation)) {
            c.uses.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        if let Some(old) = slot.take() {
            old.retire();
        }
        let local: SocketAddr = match self.upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(local)?;
        socket.connect(self.upstream)?;
        socket.set_nonblocking(true)?;
        let _runtime = self.runtime.enter();
        // Measured: with writability polled too, every batch sent woke a runtime thread (pinned,
        // 2 000 q/s: a wake-up and a context switch per forward, before the upstream could run).
        // SAFETY: the socket is owned by the `AsyncFd` and not closed or replaced while it is
        // registered: its file descriptor stays open and the same until the `AsyncFd` drops.
        #[allow(unsafe_code)]
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        let channel = Arc::new(Channel {
            socket,
            state: Mutex::new(State {
                pending: foldhash::HashMap::default(),
                timers: DelayQueue::new(),
                ticking: false,
                used: false,
                retired: false,
                closed: false,
                waker: None,
            }),
            born: Instant::now(),
            uses: AtomicU32::new(1),
        });
        self.runtime.spawn(channel.clone().receive());
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Sends `msg` with a fresh random ID (written into it); `done` is called once, from the
    /// receiving task: with the answer, with `Ok(None)` once `timeout` has passed, or with
    /// the socket's error. Callable from any thread. When it could not be sent, `done` comes
    /// back with the error, not called.
    pub(super) fn start(&self, msg: &mut [u8], timeout: Duration, done: W) -> Result<(), (io::Error, W)> {
        self.start_via(msg, timeout, done, None)
    }

    /// As [`Channels::start`], but the datagram waits in `sends` with the others queued there
    /// (on the same socket while they are this pool's) until [`Sends::flush`]; `done` gets a
    /// failure to send it then.
    pub(super) fn queue(
        &self,
        msg: &mut [u8],
        timeout: Duration,
        done: W,
        sends: &mut Sends<W>,
    ) -> Result<(), (io::Error, W)> {
        if !sends.takes_from(self) {
            sends.flush();
        }
        self.start_via(msg, timeout, done, Some(sends))
    }

    fn start_via(
        &self,
        msg: &mut [u8],
        timeout: Duration,
        mut done: W,
        mut sends: Option<&mut Sends<W>>,
    ) -> Result<(), (io::Error, W)> {
        // The timer queue needs the runtime (callers may be threads of their own).
        let _runtime = self.runtime.enter();
        let deadline = Instant::now() + timeout;
        // A socket taken from its slot just before it was replaced may close before the
        // query is registered: then another.
        for _ in 0..4 {
            let random = self.random();
            let held = sends.as_deref().and_then(|s| s.channel.clone());
            let channel = match held {
                Some(channel) => {
                    channel.uses.fetch_add(1, Ordering::Relaxed);
                    channel
                }
                None => match self.channel(random >> 32) {
                    Ok(channel) => channel,
                    Err(e) => return Err((e, done)),
                },
            };
            let started = match sends.as_deref_mut() {
                None => channel.start(msg, random, deadline, done),
                Some(sends) => channel
                    .register(msg, random, deadline, done)
                    .map(|id| sends.push(self, &channel, id, random, msg)),
            };
            match started {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(back)) => {
                    done = back;
                    if let Some(sends) = sends.as_deref_mut() {
                        sends.flush();
                    }
                }
                Err(Refused::Error(e, back)) => return Err((e, back)),
            }
        }
        Err((io::Error::other("every upstream socket tried was closing"), done))
    }
}

impl<W: Waiter> Drop for Channels<W> {
    /// The sockets close once what they have in flight is answered or timed out.
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(channel) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                channel.retire();
            }
        }
    }
}

mod batched;

pub(super) use batched::Sends;
use batched::{RECEIVED, Received};

#[cfg(test)]
mod tests;
