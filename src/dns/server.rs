//! The DNS listeners: UDP and TCP on each `--listen` address, around the pure answer path.
//!
//! UDP: one thread per SO_REUSEPORT socket, blocking in `recvmmsg` (no poller, no task per
//! packet), answering a batch from one `ArcSwap::load` of the table into reused buffers and
//! sending it with `sendmmsg`, each reply from the address its query was sent to ([`batch`]);
//! metrics are counted per batch. A forwarded query is sent upstream from the thread and
//! answered, from the same address, by the runtime's task receiving the upstream's answer
//! ([`Forwarder::forward_udp`]). Each thread looks for shutdown at least every [`POLL`].
//! TCP (RFC 7766): the queries of a connection processed concurrently and each answered when
//! ready (§6.2.1.1), at most [`TCP_IN_FLIGHT`] in flight per connection, a bound on open
//! connections across the addresses (beyond it a new connection is closed at once) and an
//! idle timeout. An AXFR/IXFR over TCP goes to [`Transfers`] (built off the hot path, its
//! messages written in one piece when ready, like a forward's answer). How each address is bound (dual-stack `[::]`, its fallback): `server/bind.rs`.
//!
//! [`batch`]: super::batch

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod bind;

use super::answer::{Mode, Outcome, Shuffler, Transport, answer, fetch_ahead};
use super::batch::{self, Batch, Peer, to_std};
use super::forward::{Forwarder, UdpClient, UdpSends, count_forwarded};
use super::transfer::{self, Transfers};
use super::wire;
use crate::metrics::{Metrics, Path, Tally};

mod frames;

use crate::table::{Ahead, Table};
use bind::Stack;
use frames::Frames;

/// Limits of the listeners.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// UDP sockets on each address (SO_REUSEPORT), each with its own thread: one per core.
    pub udp_sockets: usize,
    /// Open TCP connections at most, over every address.
    pub max_tcp_connections: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            udp_sockets: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_tcp_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// An address that could not be listened on.
#[derive(Debug, Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Whether `addr`, one of the listening addresses `all`, serves IPv4 clients as well: `[::]`
/// without an IPv4 address on its port (DESIGN "Answers"; its fallback without IPv6: `server/bind.rs`).
pub fn is_dual_stack(addr: SocketAddr, all: &[SocketAddr]) -> bool {
    bind::stack(addr, all) == Stack::Dual
}

/// The UDP sockets and the TCP listener of one address.
#[derive(Debug)]
struct Bound {
    /// The address bound (its port chosen by the system if given as 0).
    addr: SocketAddr,
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
}

/// Bound UDP and TCP sockets on each listening address.
#[derive(Debug)]
pub struct Listeners {
    bound: Vec<Bound>,
    transfers: Option<Arc<Transfers>>,
}

/// How long a UDP thread waits for a query before it looks for shutdown.
const POLL: Duration = Duration::from_millis(100);

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}

impl Listeners {
    /// Binds `udp_sockets` UDP sockets and TCP on each of `addrs`, as `server/bind.rs` says (a
    /// dual-stack `[::]` without IPv6 falls back to `0.0.0.0`, with a warning). With port 0
    /// the system picks a port free for both.
    ///
    /// # Errors
    ///
    /// A [`BindError`] naming the first address that cannot be bound, with the system's
    /// error: in use (`EADDRINUSE`), not an address of this host (`EADDRNOTAVAIL`), a port
    /// below 1024 without `CAP_NET_BIND_SERVICE` (`EACCES`).
    pub async fn bind(addrs: &[SocketAddr], udp_sockets: usize) -> Result<Self, BindError> {
        let bound = addrs
            .iter()
            .map(|&addr| {
                bind::with_fallback(addr, bind::stack(addr, addrs), |addr, stack| {
                    bind::address(addr, stack, udp_sockets, POLL)
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Listeners { bound, transfers: None })
    }

    /// Serves zone transfers as `transfers` says; without, every AXFR/IXFR over TCP is REFUSED.
    pub fn with_transfers(mut self, transfers: Arc<Transfers>) -> Self {
        self.transfers = Some(transfers);
        self
    }

    /// The bound addresses, in the order given (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound.iter().map(|b| b.addr).collect()
    }

    /// Starts serving: the UDP threads now, TCP in the returned future, until `shutdown` is
    /// cancelled; in-flight queries (TCP, and forwarded UDP ones) are answered before the future
    /// ends. Out-of-zone queries go to `forwarder`, or get REFUSED. Queries are counted in
    /// `metrics`.
    ///
    /// # Errors
    ///
    /// The system's error when a UDP thread cannot be spawned (out of memory or of threads);
    /// `shutdown` is then cancelled, so the threads already started stop.
    pub fn serve(
        self,
        table: Arc<ArcSwap<Table>>,
        forwarder: Option<Forwarder>,
        limits: Limits,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> io::Result<impl Future<Output = ()> + Send + 'static> {
        let shared = Shared {
            table,
            mode: Mode {
                forwarding: forwarder.is_some(),
            },
            forwarder,
            transfers: self.transfers,
            metrics,
            tracker: tokio_util::task::TaskTracker::new(),
        };
        let mut udp = Vec::new();
        let mut tcp = Vec::with_capacity(self.bound.len());
        let sockets = self.bound.into_iter().flat_map(|bound| {
            tcp.push(bound.tcp);
            let addr = bound.addr;
            bound.udp.into_iter().map(move |socket| (socket, addr))
        });
        for (i, (socket, addr)) in sockets.enumerate() {
            let (shared, stop) = (shared.clone(), shutdown.clone());
            let thread = std::thread::Builder::new()
                .name(format!("globaldns-udp-{i}"))
                .spawn(move || udp_loop(&Arc::new(socket), addr, &shared, &stop));
            match thread {
                Ok(thread) => udp.push(thread),
                Err(e) => {
                    shutdown.cancel();
                    return Err(e);
                }
            }
        }
        let permits = Arc::new(Semaphore::new(limits.max_tcp_connections));
        Ok(async move {
            let accepting = tcp.into_iter().map(|listener| {
                tcp_accept(
                    listener,
                    shared.clone(),
                    permits.clone(),
                    limits.tcp_idle_timeout,
                    shutdown.clone(),
                )
            });
            futures_util::future::join_all(accepting).await;
            let _ = tokio::task::spawn_blocking(move || {
                for thread in udp {
                    let _ = thread.join();
                }
            })
            .await;
            shared.tracker.close();
            shared.tracker.wait().await;
        })
    }
}

/// A TCP listener on `addr` alone (the admin endpoint's) by the rules of the DNS listeners:
/// `[::]` dual-stack, `0.0.0.0` on its port where the system has no IPv6.
///
/// # Errors
///
/// A [`BindError`] as [`Listeners::bind`] gives one.
pub fn tcp_listener(addr: SocketAddr) -> Result<TcpListener, BindError> {
    bind::with_fallback(addr, bind::stack(addr, &[addr]), bind::tcp)
}

/// What every listener task shares.
#[derive(Clone)]
struct Shared {
    table: Arc<ArcSwap<Table>>,
    mode: Mode,
    forwarder: Option<Forwarder>,
    transfers: Option<Arc<Transfers>>,
    metrics: Arc<Metrics>,
    /// Forwards and TCP connections in flight, drained at shutdown.
    tracker: tokio_util::task::TaskTracker,
}

impl Shared {
    fn forwarder(&self) -> &Forwarder {
        self.forwarder.as_ref().expect("forwarding mode has a forwarder")
    }

    /// Forwards a TCP client's `query` into `out`.
    async fn forward(&self, query: &[u8], out: &mut Vec<u8>) {
        let started = Instant::now();
        self.forwarder().forward(query, Transport::Tcp, out).await;
        count_forwarded(&self.metrics, Transport::Tcp, out, started);
    }

    /// Answers a TCP client's zone transfer request `query` from `table`: the frames to write.
    async fn transfer(&self, table: Arc<Table>, query: &[u8], peer: std::net::IpAddr) -> Vec<u8> {
        match &self.transfers {
            Some(t) => t.serve(table, query.to_vec(), peer).await,
            None => {
                let started = Instant::now();
                let (messages, kind, _) = transfer::respond(&table, query, false, false);
                let first = messages.first().map(Vec::as_slice);
                self.metrics.transfer(kind, "refused", first, started.elapsed());
                messages.iter().flat_map(|m| frame(m)).collect()
            }
        }
    }

    /// Answers a UDP client's IXFR `query` from `table` into `out` (RFC 1995 §2: the single
    /// SOA to a client that may transfer; [`transfer::respond_udp`]), counting it. Cold: the
    /// answer path hands over nothing else.
    #[cold]
    fn transfer_udp(&self, table: &Table, query: &[u8], peer: &Peer, out: &mut Vec<u8>) -> bool {
        let started = Instant::now();
        let (allowed, ready) = match (&self.transfers, to_std(&peer.addr)) {
            (Some(t), Some(addr)) => (t.allows(addr.ip()), t.ready(table)),
            _ => (false, false),
        };
        let (reply, kind, verdict) = transfer::respond_udp(table, query, allowed, ready);
        self.metrics
            .transfer(kind, verdict.label(), Some(&reply), started.elapsed());
        out.clear();
        out.extend_from_slice(&reply);
        !out.is_empty()
    }

    /// Forwards a UDP client's `query`: its answer goes to `peer` on `socket`, from the
    /// address the query was sent to, from wherever the upstream's answer arrives.
    /// The query waits in `sends` for the rest of its batch.
    fn forward_udp(&self, query: &[u8], socket: &Arc<std::net::UdpSocket>, peer: Peer, sends: &mut UdpSends) {
        let client = UdpClient {
            socket: socket.clone(),
            peer,
            started: Instant::now(),
            // Counts as in flight until answered, so that shutdown waits for it.
            in_flight: self.tracker.token(),
        };
        self.forwarder().forward_udp(query, sends, client);
    }
}

/// Answers `query` from `table` as [`answer`] does, counting it in `tally`, and its reply
/// unless it is forwarded.
fn answer_tallied(
    table: &Table,
    query: &[u8],
    transport: Transport,
    mode: Mode,
    rng: &mut Shuffler,
    out: &mut Vec<u8>,
    tally: &mut Tally,
) -> Outcome {
    tally.request(wire::qtype(query));
    let outcome = answer(table, query, transport, mode, rng, out);
    if outcome == Outcome::Reply {
        tally.response(out);
    }
    outcome
}

/// Serves one UDP socket until shutdown. A panic (a bug) is logged and the socket served on:
/// a socket nobody reads would silently lose its share of the queries for good.
fn udp_loop(socket: &Arc<std::net::UdpSocket>, addr: SocketAddr, shared: &Shared, shutdown: &CancellationToken) {
    while !shutdown.is_cancelled() {
        let serving = std::panic::AssertUnwindSafe(|| udp_batches(socket, addr, shared, shutdown));
        if std::panic::catch_unwind(serving).is_err() {
            tracing::error!("a UDP thread panicked answering a batch; serving on");
        }
    }
}

/// Every query of a batch can be fetched ahead ([`fetch_ahead`]).
const _: () = assert!(batch::BATCH <= crate::table::AHEAD);

/// `addr`: the address the socket is bound to (its family; whether it has packet info, as
/// `bind::udp` enabled it by [`batch::needs_packet_info`]).
fn udp_batches(socket: &Arc<std::net::UdpSocket>, addr: SocketAddr, shared: &Shared, shutdown: &CancellationToken) {
    let mut batch = Batch::new(addr.is_ipv6(), batch::needs_packet_info(&addr));
    let mut rng = Shuffler::new(seed());
    let mut tally = Tally::default();
    let mut sends = UdpSends::default();
    let mut ahead = Ahead::default();
    let metrics = &shared.metrics;
    while !shutdown.is_cancelled() {
        match batch.recv(socket.as_ref()) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                // ICMP errors of earlier sends surface here; keep serving.
                tracing::debug!(error = %e, "udp receive");
                continue;
            }
        }
        let started = Instant::now();
        let table = shared.table.load();
        fetch_ahead(&table, batch.queries(), &mut ahead);
        batch.respond(|query, peer, out| {
            match answer_tallied(&table, query, Transport::Udp, shared.mode, &mut rng, out, &mut tally) {
                Outcome::Reply => true,
                Outcome::Drop => false,
                Outcome::Transfer => shared.transfer_udp(&table, query, peer, out),
                Outcome::Forward => {
                    shared.forward_udp(query, socket, *peer, &mut sends);
                    false
                }
            }
        });
        sends.flush();
        drop(table);
        metrics.add(Transport::Udp, Path::Authoritative, &mut tally, started.elapsed());
        let mut sent = 0;
        while sent < batch.replies() {
            match batch.send(socket.as_ref(), sent) {
                Ok(n) => sent += n.max(1), // (0 never comes from a blocking sendmmsg)
                Err(e) => {
                    // The first unsent reply failed (its peer, say); the rest still go.
                    tracing::debug!(error = %e, "udp send");
                    sent += 1;
                }
            }
        }
    }
}

async fn tcp_accept(
    listener: TcpListener,
    shared: Shared,
    permits: Arc<Semaphore>,
    idle: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "tcp connection limit reached: closing");
            continue;
        };
        let (conn_shared, shutdown) = (shared.clone(), shutdown.clone());
        shared.tracker.spawn(async move {
            if let Err(e) = tcp_connection(stream, peer.ip(), &conn_shared, idle, &shutdown).await {
                tracing::debug!(error = %e, %peer, "tcp connection");
            }
            drop(permit);
        });
    }
}

/// Queries of one TCP connection in flight at most (RFC 7766 §6.2.1.1); beyond, reading
/// pauses until one is answered.
pub const TCP_IN_FLIGHT: usize = 32;

/// Serves one TCP connection: queries are read as they come, in-zone ones answered at once,
/// forwarded ones answered when their answer is ready (RFC 7766 §6.2.1.1: in completion
/// order, at most [`TCP_IN_FLIGHT`] at a time). One task owns the connection and writes whole
/// messages, so answers never interleave. Closed after `idle` without a whole query while
/// nothing is in flight (which also cuts slow senders), at the end of the client's stream
/// or at shutdown, each once what is in flight is answered.
async fn tcp_connection(
    mut stream: TcpStream,
    peer: std::net::IpAddr,
    shared: &Shared,
    idle: Duration,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let mut frames = Frames::default();
    let mut out = Vec::with_capacity(4096);
    let mut frame = Vec::with_capacity(4098);
    let mut rng = Shuffler::new(seed());
    let mut tally = Tally::default();
    let mut forwards = FuturesUnordered::new();
    let idle_until = tokio::time::sleep(idle);
    tokio::pin!(idle_until);
    // Whether the client may send more, and whether queries are still taken (not at shutdown).
    let (mut reading, mut taking) = (true, true);
    loop {
        // Every whole query already read, while there is room.
        while taking && forwards.len() < TCP_IN_FLIGHT {
            let Some(message) = frames.next() else { break };
            idle_until.as_mut().reset(tokio::time::Instant::now() + idle);
            let query = frames.get(message);
            let started = Instant::now();
            let table = shared.table.load_full();
            let outcome = answer_tallied(
                &table,
                query,
                Transport::Tcp,
                shared.mode,
                &mut rng,
                &mut out,
                &mut tally,
            );
            shared
                .metrics
                .add(Transport::Tcp, Path::Authoritative, &mut tally, started.elapsed());
            match outcome {
                Outcome::Reply => write_frame(&mut writer, &out, &mut frame).await?,
                Outcome::Drop => {}
                Outcome::Forward => {
                    let query = query.to_vec();
                    forwards.push(Either::Left(async move {
                        let mut out = Vec::new();
                        shared.forward(&query, &mut out).await;
                        Ready::Message(out)
                    }));
                }
                Outcome::Transfer => {
                    let query = query.to_vec();
                    forwards.push(Either::Right(async move {
                        Ready::Frames(shared.transfer(table, &query, peer).await)
                    }));
                }
            }
        }
        if !(reading && taking) && forwards.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            Some(answer) = forwards.next(), if !forwards.is_empty() => {
                match answer {
                    Ready::Message(m) => write_frame(&mut writer, &m, &mut frame).await?,
                    Ready::Frames(frames) => writer.write_all(&frames).await?,
                }
                idle_until.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = shutdown.cancelled(), if taking => taking = false,
            read = frames.fill(&mut reader), if reading && taking && forwards.len() < TCP_IN_FLIGHT => match read {
                Ok(0) => reading = false,
                Ok(_) => {}
                Err(e) if forwards.is_empty() => return Err(e),
                Err(_) => reading = false,
            },
            () = &mut idle_until, if reading && forwards.is_empty() => return Ok(()),
        }
    }
}

/// A TCP answer that was not ready at once.
enum Ready {
    /// A forwarded answer, to be framed.
    Message(Vec<u8>),
    /// A zone transfer's messages, framed.
    Frames(Vec<u8>),
}

/// `message` behind its length.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Writes `message` behind its length, in one write.
async fn write_frame(writer: &mut (impl AsyncWrite + Unpin), message: &[u8], frame: &mut Vec<u8>) -> io::Result<()> {
    frame.clear();
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(message);
    writer.write_all(frame).await
}
