//! Forwarding of every out-of-zone query to the cluster DNS: a transparent relay.
//!
//! The client's query leaves unchanged but for a fresh random ID, over UDP from one of a few
//! connected sockets with random source ports that are replaced every few seconds
//! ([`channel`]; RFC 5452 §9.2). The upstream's answer comes back unchanged but for the ID:
//! rcode, flags, every section and EDNS are the upstream's. An answer counts only if it is a
//! response with our ID and the query's question; anything else (spoofed, late, garbled) is
//! ignored. A truncated UDP answer is returned as it is to a UDP client, which retries over
//! TCP; for a TCP client the query is retried to the same upstream over TCP.
//!
//! One way of waiting: a forward is a chain of attempts, each a pending entry on an upstream
//! socket with one deadline (the attempt's timeout, cut to what is left of the forward's
//! budget) that the socket's receiving task completes once. On an answer the forward
//! replies; on a timeout or an error it starts the next attempt, at the next upstream that is
//! up, or replies SERVFAIL when the budget is spent. A UDP client's query is sent from the
//! thread that received it and answered from the receiving task ([`Forwarder::forward_udp`]):
//! no task per query, no hand-over between threads, and no allocation (the pending entry is
//! the forward itself, its query inline). A TCP client's forward is the same chain, awaited
//! through a oneshot ([`Forwarder::forward`]).
//!
//! Upstream health ([`health`]): [`MAX_FAILS`] failures in a row mark an upstream down; a
//! down upstream gets no queries and is probed with `. IN NS` every [`PROBE_EVERY`] until it
//! answers (any rcode), as CoreDNS's `forward` does. While no upstream is up, a forward is
//! answered SERVFAIL at once, so the cluster DNS's own health probe (`. IN NS`, read for less
//! than a second) and its clients (2 s) get an answer in time. Forwards in flight are
//! bounded: beyond, SERVFAIL at once too. Every SERVFAIL of ours carries an Extended DNS Error
//! (RFC 8914) to EDNS clients: 23 Network Error when an attempt (the TCP retry of a truncated
//! answer included) failed on a socket error, else 22 No Reachable Authority.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

mod address;
mod channel;
mod health;

pub use address::{BadUpstream, parse_upstream, resolv_conf_nameserver_words, resolv_conf_nameservers};
pub use health::MAX_FAILS;

use channel::{Channels, Waiter};
use health::{Change, Health};

use super::answer::{Transport, error_reply, error_reply_with_ede};
use super::batch::{self, Peer};
use super::wire::{self, ede, rcode};
use crate::metrics::{self, ForwardResult, Metrics, Path, Tally};

/// How often an upstream that is down is probed (`. IN NS`), as CoreDNS's `health_check`.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Queries up to this long are copied for an attempt on the stack, not the heap.
const SMALL: usize = 512;

/// Queries up to this long are kept in their forward, not on the heap (nearly all: a query
/// is its header, its question, ≤ 259 bytes, and maybe an OPT record).
const INLINE: usize = 256;

/// Attempts of one forward at most, per upstream.
const ATTEMPTS_PER_UPSTREAM: usize = 4;

/// The probe: `. IN NS`, RD set (ID written per probe).
const PROBE: [u8; 17] = [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];

/// What forwarding needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// The upstreams, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// Timeout of one attempt at one upstream (also of a probe).
    pub attempt_timeout: Duration,
    /// Total time for a query, all attempts included; then SERVFAIL.
    pub budget: Duration,
    /// Forwards in flight at most; beyond, SERVFAIL at once.
    pub max_in_flight: usize,
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    channels: Channels<Waiting>,
    health: Health,
    /// A probing task runs (one at most).
    probing: AtomicBool,
    counted: metrics::ForwardCounters,
    watched: metrics::UpstreamHealth,
}

#[derive(Debug)]
struct Inner {
    upstreams: Box<[Upstream]>,
    settings: ForwardSettings,
    permits: Arc<Semaphore>,
    /// Where probes and the sockets' receiving tasks run.
    runtime: tokio::runtime::Handle,
    /// Health times are milliseconds since then.
    epoch: Instant,
    metrics: Arc<Metrics>,
}

/// The forwarder, shared by every listener.
#[derive(Debug, Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

/// Why one attempt failed.
#[derive(Debug, Error)]
enum AttemptError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A forward under way: the client's query (its ID), its deadline, where the next attempt
/// looks for an upstream, and who gets the response. A plain value (the query inline), so
/// that a UDP client's forward, pending on an upstream socket, costs no allocation.
struct Forward {
    query: Kept,
    deadline: Instant,
    next: usize,
    attempts: usize,
    /// The Extended DNS Error of its SERVFAIL (RFC 8914): 23 Network Error once an attempt
    /// failed with a socket error, else 22 No Reachable Authority (timeouts, none up).
    failure: u16,
    reply: Reply,
}

impl Forward {
    /// The forward of `query` until `deadline`, before its first attempt.
    fn new(query: &[u8], deadline: Instant, reply: Reply) -> Self {
        Forward {
            query: Kept::new(query),
            deadline,
            next: 0,
            attempts: 0,
            failure: ede::NO_REACHABLE_AUTHORITY,
            reply,
        }
    }
}

/// A query kept for its forward: inline up to [`INLINE`] bytes, else on the heap.
#[allow(clippy::large_enum_variant)] // Inline on purpose: no allocation per forward.
enum Kept {
    Inline(u16, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Kept {
    fn new(query: &[u8]) -> Self {
        match u16::try_from(query.len()) {
            Ok(len) if query.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..query.len()].copy_from_slice(query);
                Kept::Inline(len, bytes)
            }
            _ => Kept::Heap(query.into()),
        }
    }

    fn get(&self) -> &[u8] {
        match self {
            Kept::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Kept::Heap(bytes) => bytes,
        }
    }
}

/// Who gets a forward's response.
enum Reply {
    /// A UDP client, answered from wherever the response comes; the forward's place among
    /// those in flight is given back once it is answered.
    Udp(UdpClient, OwnedSemaphorePermit),
    /// A task, with the upstream that answered (`None`: our SERVFAIL).
    Task(oneshot::Sender<(Vec<u8>, Option<usize>)>),
}

/// A UDP client whose query is forwarded: its answer goes to `peer` on `socket`, from the
/// address the query was sent to ([`batch::send_soon`]), and is counted with the time since
/// `started`. The forward counts as in flight (for shutdown) until `in_flight` is dropped.
#[derive(Debug)]
pub struct UdpClient {
    /// The listening socket the query came on.
    pub socket: Arc<std::net::UdpSocket>,
    /// The client's and the query's addresses.
    pub peer: Peer,
    /// When the query was taken.
    pub started: std::time::Instant,
    /// Held while the forward is in flight.
    pub in_flight: TaskTrackerToken,
}

impl UdpClient {
    /// Sends `response` to the client, counted in `metrics`.
    fn reply(self, metrics: &Metrics, response: &[u8]) {
        count_forwarded(metrics, Transport::Udp, response, self.started);
        batch::send_soon(self.socket, response, &self.peer);
    }
}

/// Counts a forwarded query's `response` in `metrics`, with the time since `started`.
pub fn count_forwarded(metrics: &Metrics, transport: Transport, response: &[u8], started: std::time::Instant) {
    let mut tally = Tally::default();
    tally.response(response);
    metrics.add(transport, Path::Forwarded, &mut tally, started.elapsed());
}

/// What waits on an upstream socket: an attempt of a forward, or a probe.
#[allow(clippy::large_enum_variant)] // Pending forwards are the common case, probes rare.
enum Waiting {
    /// The attempt of `forward` at upstream `index`.
    Attempt {
        forwarder: Forwarder,
        forward: Forward,
        index: usize,
    },
    /// A probe of upstream `index`.
    Probe { forwarder: Forwarder, index: usize },
}

impl Waiter for Waiting {
    fn query(&self) -> &[u8] {
        match self {
            Waiting::Attempt { forward, .. } => forward.query.get(),
            Waiting::Probe { .. } => &PROBE,
        }
    }

    fn done(self, result: io::Result<Option<&mut [u8]>>) {
        match self {
            Waiting::Attempt {
                forwarder,
                forward,
                index,
            } => forwarder.attempted(forward, index, result),
            Waiting::Probe { forwarder, index } => forwarder.probed(index, result),
        }
    }
}

/// The UDP forwards of one batch of queries, waiting to be sent together: one `sendmmsg` per
/// upstream socket instead of one `send` each. Belongs to the thread that made it.
#[derive(Default)]
pub struct UdpSends(channel::Sends<Waiting>);

impl UdpSends {
    /// Sends the forwards queued by [`Forwarder::forward_udp`]; one the system refuses is
    /// retried or answered SERVFAIL, as any failed attempt.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

impl std::fmt::Debug for UdpSends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSends").finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder for these settings, its tasks on the runtime this is called on, counting
    /// in `metrics`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(settings: ForwardSettings, metrics: Arc<Metrics>) -> Self {
        let runtime = tokio::runtime::Handle::current();
        let upstreams = settings
            .upstreams
            .iter()
            .map(|&addr| Upstream {
                addr,
                channels: Channels::new(addr, runtime.clone()),
                health: Health::default(),
                probing: AtomicBool::new(false),
                counted: metrics.forwards_to(addr),
                watched: metrics.upstream_health(addr),
            })
            .collect();
        Forwarder {
            inner: Arc::new(Inner {
                upstreams,
                permits: Arc::new(Semaphore::new(settings.max_in_flight)),
                settings,
                runtime,
                metrics,
                epoch: Instant::now(),
            }),
        }
    }

    /// A place for one more forward, or `None` (counted, logged) when the bound is reached.
    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.inner.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!("in-flight forward limit reached: SERVFAIL");
            self.inner.metrics.forward_overload();
        }
        permit
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Forwards `query` (a well-formed query, as the answer path parsed it) and writes the
    /// client's response into `out`: the upstream's answer, or SERVFAIL (also when too many
    /// forwards are in flight or no upstream is up).
    pub async fn forward(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) {
        let Some(_permit) = self.permit() else {
            return overloaded(query, out);
        };
        let deadline = Instant::now() + self.inner.settings.budget;
        // A TCP retry that failed on a socket error makes a final SERVFAIL Network Error.
        let mut failure = ede::NO_REACHABLE_AUTHORITY;
        loop {
            let (tx, rx) = oneshot::channel();
            let forward = Forward::new(query, deadline, Reply::Task(tx));
            self.attempt(Forward { failure, ..forward }, None);
            let Ok((answer, from)) = rx.await else {
                return error_reply(query, rcode::SERVFAIL, true, out); // (the runtime is going away)
            };
            match from {
                Some(index) if transport == Transport::Tcp && answer[2] & 0x02 != 0 => {
                    match self.over_tcp(index, query, deadline).await {
                        Ok(full) => return *out = full,
                        Err(e) => {
                            if matches!(e, AttemptError::Io(_)) {
                                failure = ede::NETWORK_ERROR;
                            }
                            self.failed(index, &e);
                        }
                    }
                }
                _ => return *out = answer,
            }
        }
    }

    /// Forwards a UDP client's `query` as [`Forwarder::forward`] does and replies to `client`
    /// with the response: from the task that receives the upstream's answer, or at once
    /// (SERVFAIL) when no upstream is up or too many forwards are in flight. Needs no runtime
    /// of the caller's. The query waits in `sends` (with the others of its batch, on one
    /// upstream socket) until [`UdpSends::flush`]. Allocates nothing (but for a query longer
    /// than 256 bytes, or a SERVFAIL).
    pub fn forward_udp(&self, query: &[u8], sends: &mut UdpSends, client: UdpClient) {
        let Some(permit) = self.permit() else {
            let mut out = Vec::new();
            overloaded(query, &mut out);
            return client.reply(&self.inner.metrics, &out);
        };
        // The clock of the runtime (the paused one in tests), not of this thread.
        let _runtime = self.inner.runtime.enter();
        let deadline = Instant::now() + self.inner.settings.budget;
        let forward = Forward::new(query, deadline, Reply::Udp(client, permit));
        self.attempt(forward, Some(&mut sends.0));
    }

    /// Gives `forward`'s client `response` (from upstream `from`; `None`: our SERVFAIL).
    fn respond(&self, forward: Forward, response: &mut [u8], from: Option<usize>) {
        match forward.reply {
            Reply::Udp(client, _permit) => client.reply(&self.inner.metrics, response),
            Reply::Task(tx) => {
                let _ = tx.send((response.to_vec(), from));
            }
        }
    }

    /// The next attempt of `forward`, at the first upstream that is up from `forward.next`
    /// on, sent at once or queued in `sends`; SERVFAIL when there is none, or no time or
    /// attempt is left.
    fn attempt(&self, mut forward: Forward, sends: Option<&mut channel::Sends<Waiting>>) {
        let upstreams = &self.inner.upstreams;
        let Some(index) = (0..upstreams.len())
            .map(|k| (forward.next + k) % upstreams.len())
            .find(|&i| upstreams[i].health.is_up())
        else {
            if forward.attempts == 0 {
                self.inner.metrics.forward_fast_failure();
            }
            tracing::debug!("no upstream is up: SERVFAIL");
            return self.servfail(forward);
        };
        let now = Instant::now();
        if now >= forward.deadline || forward.attempts >= ATTEMPTS_PER_UPSTREAM * upstreams.len() {
            tracing::debug!("every attempt failed: SERVFAIL");
            return self.servfail(forward);
        }
        forward.attempts += 1;
        forward.next = index + 1;
        let timeout = self.inner.settings.attempt_timeout.min(forward.deadline - now);
        // The datagram (its ID is written in): on the stack unless the query is large.
        let query = forward.query.get();
        let mut small = [0u8; SMALL];
        let mut large = Vec::new();
        let msg = match small.get_mut(..query.len()) {
            Some(msg) => {
                msg.copy_from_slice(query);
                msg
            }
            None => {
                large.extend_from_slice(query);
                &mut large[..]
            }
        };
        let done = Waiting::Attempt {
            forwarder: self.clone(),
            forward,
            index,
        };
        let started = match sends {
            Some(sends) => upstreams[index].channels.queue(msg, timeout, done, sends),
            None => upstreams[index].channels.start(msg, timeout, done),
        };
        if let Err((e, done)) = started {
            done.done(Err(e));
        }
    }

    /// The attempt of `forward` at upstream `index` ended with `result`.
    fn attempted(&self, forward: Forward, index: usize, result: io::Result<Option<&mut [u8]>>) {
        match result {
            Ok(Some(answer)) => {
                self.answered(index);
                answer[..2].copy_from_slice(&forward.query.get()[..2]);
                self.respond(forward, answer, Some(index));
            }
            Ok(None) => {
                self.failed(index, &AttemptError::Timeout);
                self.attempt(forward, None);
            }
            // A full socket buffer of ours says nothing of the upstream.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.inner.upstreams[index].counted.count(ForwardResult::Error);
                self.attempt(forward, None);
            }
            Err(e) => {
                self.failed(index, &AttemptError::Io(e));
                let forward = Forward {
                    failure: ede::NETWORK_ERROR,
                    ..forward
                };
                self.attempt(forward, None);
            }
        }
    }

    /// Upstream `index` answered.
    fn answered(&self, index: usize) {
        let upstream = &self.inner.upstreams[index];
        upstream.counted.count(ForwardResult::Answer);
        if upstream.health.answered(self.now_ms()) == Change::Up {
            upstream.watched.set_up(true);
            tracing::info!(upstream = %upstream.addr, "upstream answers again");
        }
    }

    /// An attempt at upstream `index` failed: counted, and once it is down, probed.
    fn failed(&self, index: usize, error: &AttemptError) {
        let upstream = &self.inner.upstreams[index];
        upstream.counted.count(match error {
            AttemptError::Timeout => ForwardResult::Timeout,
            AttemptError::Io(_) => ForwardResult::Error,
        });
        let patience = self.inner.settings.attempt_timeout.as_millis() as u64;
        if upstream.health.failed(self.now_ms(), patience) == Change::Down {
            upstream.watched.set_up(false);
            tracing::warn!(upstream = %upstream.addr, %error, "upstream down after {MAX_FAILS} failures in a row; probing it every {PROBE_EVERY:?}");
            if !upstream.probing.swap(true, Ordering::SeqCst) {
                self.inner.runtime.spawn(probe(Arc::downgrade(&self.inner), index));
            }
        }
    }

    /// A probe of upstream `index` ended with `result`.
    fn probed(&self, index: usize, result: io::Result<Option<&mut [u8]>>) {
        let watched = &self.inner.upstreams[index].watched;
        match result {
            Ok(Some(_)) => {
                watched.probe(ForwardResult::Answer);
                self.answered(index);
            }
            Ok(None) => watched.probe(ForwardResult::Timeout),
            Err(_) => watched.probe(ForwardResult::Error),
        }
    }

    /// Replies SERVFAIL to `forward`.
    fn servfail(&self, forward: Forward) {
        let mut out = Vec::new();
        error_reply_with_ede(
            forward.query.get(),
            rcode::SERVFAIL,
            true,
            Some(forward.failure),
            &mut out,
        );
        self.respond(forward, &mut out, None);
    }

    /// `query` over TCP to upstream `index` (after a truncated UDP answer), until `deadline`
    /// or an attempt's time; the answer with the client's ID.
    async fn over_tcp(&self, index: usize, query: &[u8], deadline: Instant) -> Result<Vec<u8>, AttemptError> {
        let upstream = &self.inner.upstreams[index];
        let timeout = self
            .inner
            .settings
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let mut msg = query.to_vec();
        msg[..2].copy_from_slice(&(upstream.channels.random() as u16).to_be_bytes());
        let mut full = tcp_exchange(upstream.addr, &msg, timeout).await?;
        self.answered(index);
        full[..2].copy_from_slice(&query[..2]);
        Ok(full)
    }
}

/// The SERVFAIL of a forward refused because `--max-forwards` are in flight: no upstream was
/// tried, so EDE 22 No Reachable Authority (RFC 8914 §4.23), to EDNS clients.
fn overloaded(query: &[u8], out: &mut Vec<u8>) {
    error_reply_with_ede(query, rcode::SERVFAIL, true, Some(ede::NO_REACHABLE_AUTHORITY), out);
}

/// Probes upstream `index` every [`PROBE_EVERY`], the first at once, until it is up again
/// (or the forwarder is gone); one such task per upstream at most. Each probe is a pending
/// entry like any attempt.
async fn probe(inner: Weak<Inner>, index: usize) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let upstream = &inner.upstreams[index];
        if upstream.health.is_up() {
            upstream.probing.store(false, Ordering::SeqCst);
            // Unless it went down again meanwhile and its failure saw this task still probing.
            if upstream.health.is_up() || upstream.probing.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        let timeout = inner.settings.attempt_timeout;
        let done = Waiting::Probe {
            forwarder: Forwarder { inner: inner.clone() },
            index,
        };
        let mut msg = PROBE;
        if let Err((e, done)) = upstream.channels.start(&mut msg, timeout, done) {
            done.done(Err(e));
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, msg: &[u8], timeout: Duration) -> Result<Vec<u8>, AttemptError> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        let _ = stream.set_nodelay(true);
        let mut framed = Vec::with_capacity(msg.len() + 2);
        framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        framed.extend_from_slice(msg);
        stream.write_all(&framed).await?;
        loop {
            let len = stream.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            if wire::answers(&buf, msg) {
                return io::Result::Ok(buf);
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AttemptError::Timeout)?
        .map_err(Into::into)
}
