//! The DNS listeners: UDP and TCP on one address, around the pure answer path.
//!
//! UDP: one loop per socket, a reused receive and send buffer, no task per packet; the answer
//! path is synchronous and reads the current table with one `ArcSwap::load`.
//! TCP (RFC 7766): several queries per connection answered in order, a bound on open
//! connections (beyond it a new connection is closed at once) and an idle timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::answer::{Mode, Outcome, Shuffler, Transport, answer, error_reply};
use super::batch::{BATCH, Batch, MAX_QUERY};
use super::forward::Forwarder;
use super::wire::{self, rcode};
use crate::metrics::{self, Path};
use crate::table::Table;

/// Limits of the listeners.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// UDP sockets on the address (SO_REUSEPORT), each with its own loop: one per core.
    pub udp_sockets: usize,
    /// Open TCP connections at most.
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

/// Bound UDP and TCP sockets on the same address.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
}

/// A non-blocking UDP socket with SO_REUSEPORT, so that several share one address.
fn reuseport_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}

impl Listeners {
    /// Binds `udp_sockets` UDP sockets and TCP on `addr`. With port 0 the system picks a port
    /// free for both.
    pub async fn bind(addr: SocketAddr, udp_sockets: usize) -> io::Result<Self> {
        let mut last_err = None;
        for _ in 0..16 {
            let first = reuseport_udp(addr)?;
            let bound = first.local_addr()?;
            let mut udp = vec![first];
            for _ in 1..udp_sockets.max(1) {
                udp.push(reuseport_udp(bound)?);
            }
            match TcpListener::bind(bound).await {
                Ok(tcp) => return Ok(Listeners { udp, tcp }),
                Err(e) if addr.port() == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp[0].local_addr()
    }

    /// Serves until `shutdown` is cancelled; in-flight queries (TCP, and forwarded UDP
    /// ones) are answered first. Out-of-zone queries go to `forwarder`, or get REFUSED.
    pub async fn serve(
        self,
        table: Arc<ArcSwap<Table>>,
        forwarder: Option<Forwarder>,
        limits: Limits,
        shutdown: CancellationToken,
    ) {
        let shared = Shared {
            table,
            mode: Mode {
                forwarding: forwarder.is_some(),
            },
            forwarder,
            tracker: tokio_util::task::TaskTracker::new(),
        };
        let udp: Vec<_> = self
            .udp
            .into_iter()
            .map(|socket| tokio::spawn(udp_loop(Arc::new(socket), shared.clone(), shutdown.clone())))
            .collect();
        tcp_accept(self.tcp, shared.clone(), limits, shutdown).await;
        for loop_ in udp {
            let _ = loop_.await;
        }
        shared.tracker.close();
        shared.tracker.wait().await;
    }
}

/// What every listener task shares.
#[derive(Clone)]
struct Shared {
    table: Arc<ArcSwap<Table>>,
    mode: Mode,
    forwarder: Option<Forwarder>,
    /// Forwards and TCP connections in flight, drained at shutdown.
    tracker: tokio_util::task::TaskTracker,
}

impl Shared {
    /// Forwards `query` into `out`, or SERVFAIL when too many forwards are in flight.
    async fn forward(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) {
        let forwarder = self.forwarder.as_ref().expect("forwarding mode has a forwarder");
        let started = Instant::now();
        match forwarder.permit() {
            Some(_permit) => forwarder.forward(query, transport, out).await,
            None => {
                tracing::debug!("in-flight forward limit reached: SERVFAIL");
                metrics::get().forward_overload();
                error_reply(query, rcode::SERVFAIL, true, out);
            }
        }
        metrics::get().response(Path::Forwarded, out, started.elapsed());
    }
}

/// Answers one query from the table: counts it, and its response unless it is forwarded.
fn answer_counted(
    shared: &Shared,
    query: &[u8],
    transport: Transport,
    rng: &mut Shuffler,
    out: &mut Vec<u8>,
) -> Outcome {
    let started = Instant::now();
    let metrics = metrics::get();
    metrics.request(transport, wire::qtype(query));
    let outcome = answer(&shared.table.load(), query, transport, shared.mode, rng, out);
    if outcome == Outcome::Reply {
        metrics.response(Path::Authoritative, out, started.elapsed());
    }
    outcome
}

async fn udp_loop(socket: Arc<UdpSocket>, shared: Shared, shutdown: CancellationToken) {
    let mut batch = Batch::default();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = (0..BATCH)
        .map(|_| (Vec::with_capacity(512), SocketAddr::from(([0, 0, 0, 0], 0))))
        .collect();
    let mut rng = Shuffler::new(seed());
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.async_io(Interest::READABLE, || batch.recv(socket.as_ref())) => match r {
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems; keep serving.
                    tracing::debug!(error = %e, "udp receive");
                    continue;
                }
            },
        };
        let mut count = 0;
        for i in 0..received {
            let (len, peer) = batch.received[i];
            let query = &batch.bufs[i][..len.min(MAX_QUERY)];
            let (out, to) = &mut replies[count];
            match answer_counted(&shared, query, Transport::Udp, &mut rng, out) {
                Outcome::Reply => {
                    *to = peer;
                    count += 1;
                }
                Outcome::Drop => {}
                Outcome::Forward => {
                    let (shared, socket, query) = (shared.clone(), socket.clone(), query.to_vec());
                    shared.tracker.clone().spawn(async move {
                        let mut out = Vec::new();
                        shared.forward(&query, Transport::Udp, &mut out).await;
                        send(&socket, &out, peer).await;
                    });
                }
            }
        }
        let replies = &replies[..count];
        let sent = socket
            .try_io(Interest::WRITABLE, || batch.send(socket.as_ref(), replies))
            .unwrap_or(0);
        // What the batch did not take (a full socket buffer): one at a time, waiting.
        for (out, peer) in &replies[sent..] {
            send(&socket, out, *peer).await;
        }
    }
}

async fn send(socket: &UdpSocket, out: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(out, peer).await {
        tracing::debug!(error = %e, %peer, "udp send");
    }
}

async fn tcp_accept(listener: TcpListener, shared: Shared, limits: Limits, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_tcp_connections));
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
            if let Err(e) = tcp_connection(stream, &conn_shared, limits.tcp_idle_timeout, &shutdown).await {
                tracing::debug!(error = %e, %peer, "tcp connection");
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(
    stream: TcpStream,
    shared: &Shared,
    idle: Duration,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let mut frame = Vec::with_capacity(4098);
    let mut rng = Shuffler::new(seed());
    loop {
        let read = async {
            let len = stream.read_u16().await? as usize;
            stream.read_exact(&mut buf[..len]).await?;
            io::Result::Ok(len)
        };
        let len = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, read) => match r {
                Ok(Ok(len)) => len,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()), // idle
            },
        };
        let query = &buf[..len];
        match answer(
            &shared.table.load(),
            query,
            Transport::Tcp,
            shared.mode,
            &mut rng,
            &mut out,
        ) {
            Outcome::Reply => {}
            Outcome::Drop => continue,
            Outcome::Forward => shared.forward(query, Transport::Tcp, &mut out).await,
        }
        frame.clear();
        frame.extend_from_slice(&(out.len() as u16).to_be_bytes());
        frame.extend_from_slice(&out);
        stream.get_mut().write_all(&frame).await?;
    }
}
