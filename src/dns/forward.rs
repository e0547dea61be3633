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
//! A UDP client's query is sent from the thread that received it, and its answer goes back
//! from the task receiving on the upstream socket ([`Forwarder::forward_udp`]): no task per
//! query, no hand-over between threads on the way. Only when that first attempt fails does a
//! task take over the query's remaining attempts.
//!
//! Failover: each attempt has its own timeout; an upstream that times out or refuses the
//! connection is marked down for a while and tried after the healthy ones, so a dead first
//! upstream does not stall every query. When the total budget runs out, or more forwards are
//! in flight than allowed, the client gets SERVFAIL rather than silence.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod channel;

use channel::Channels;

use super::answer::{Transport, error_reply, error_reply_with_ede};
use super::wire::{self, ede, rcode};
use crate::metrics::{self, ForwardResult, Metrics};

/// How long an upstream that failed is tried only after the healthy ones.
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// What forwarding needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// The upstreams, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// Timeout of one attempt at one upstream.
    pub attempt_timeout: Duration,
    /// Total time for a query, all attempts included; then SERVFAIL.
    pub budget: Duration,
    /// Forwards in flight at most; beyond, SERVFAIL at once.
    pub max_in_flight: usize,
}

/// An `--upstream` that is not an IP or IP:PORT.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("upstream {0:?} is not an IP or IP:PORT")]
pub struct BadUpstream(pub String);

/// Parses `IP` (port 53) or `IP:PORT` (`[v6]:PORT` for IPv6).
pub fn parse_upstream(text: &str) -> Result<SocketAddr, BadUpstream> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| BadUpstream(text.into()))
}

/// The `nameserver` lines of a resolv.conf (resolv.conf(5)); zone indexes (`%eth0`) dropped.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip = words.next()?.split('%').next()?;
            ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    channels: Channels,
    /// Milliseconds since `epoch` until which it counts as down (0: up).
    down_until: AtomicU64,
    counted: metrics::ForwardCounters,
}

/// The forwarder, shared by every listener.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Arc<[Upstream]>,
    settings: Arc<ForwardSettings>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    epoch: Instant,
    runtime: tokio::runtime::Handle,
}

/// Why one attempt failed.
#[derive(Debug, Error)]
enum AttemptError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] io::Error),
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
                down_until: AtomicU64::new(0),
                counted: metrics.forwards_to(addr),
            })
            .collect();
        Forwarder {
            upstreams,
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            metrics,
            settings: Arc::new(settings),
            epoch: Instant::now(),
            runtime,
        }
    }

    /// A place for one more forward, or `None` (counted, logged) when the bound is reached.
    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!("in-flight forward limit reached: SERVFAIL");
            self.metrics.forward_overload();
        }
        permit
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Upstreams to try, healthy ones first in configured order, then the others by when
    /// they went down.
    fn order(&self) -> Vec<&Upstream> {
        let now = self.now_ms();
        let mut order: Vec<&Upstream> = self.upstreams.iter().collect();
        order.sort_by_key(|u| rank(u, now));
        order
    }

    /// The index of the first upstream of [`Forwarder::order`], found without sorting.
    fn first(&self) -> Option<usize> {
        let now = self.now_ms();
        // The first of equal minima, as the stable sort of `order` keeps it first.
        (0..self.upstreams.len()).min_by_key(|&i| rank(&self.upstreams[i], now))
    }

    /// Forwards `query` (a well-formed query, as the answer path parsed it) and writes the
    /// client's response into `out`: the upstream's answer, or SERVFAIL (also when too many
    /// forwards are in flight).
    pub async fn forward(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) {
        let Some(_permit) = self.permit() else {
            return error_reply(query, rcode::SERVFAIL, true, out);
        };
        self.attempts(query, transport, Instant::now() + self.settings.budget, out)
            .await;
    }

    /// Forwards a UDP client's `query` as [`Forwarder::forward`] does and calls `reply` with
    /// the response, from the task that receives the upstream's answer (or from the task that
    /// goes on after a failed first attempt). Needs no runtime of the caller's.
    pub fn forward_udp(&self, query: &[u8], reply: impl FnOnce(&[u8]) + Send + 'static) {
        let (Some(permit), Some(index)) = (self.permit(), self.first()) else {
            let mut out = Vec::new();
            error_reply(query, rcode::SERVFAIL, true, &mut out);
            return reply(&out);
        };
        let deadline = Instant::now() + self.settings.budget;
        let (forwarder, query) = (self.clone(), query.to_vec());
        let mut msg = query.clone();
        let done: channel::Done = Box::new(move |result| {
            let upstream = &forwarder.upstreams[index];
            match result {
                Ok(Some(answer)) => {
                    upstream.counted.count(ForwardResult::Answer);
                    upstream.down_until.store(0, Ordering::Relaxed);
                    answer[..2].copy_from_slice(&query[..2]);
                    reply(answer);
                    drop(permit);
                }
                Ok(None) => forwarder.go_on(&AttemptError::Timeout, index, query, deadline, reply, permit),
                Err(e) => forwarder.go_on(&AttemptError::Io(e), index, query, deadline, reply, permit),
            }
        });
        let timeout = self.settings.attempt_timeout.min(self.settings.budget);
        if let Err((e, done)) = self.upstreams[index].channels.start(&mut msg, timeout, done) {
            done(Err(e));
        }
    }

    /// After the first attempt of [`Forwarder::forward_udp`] at upstream `index` failed: the
    /// other attempts, on a task.
    fn go_on(
        &self,
        error: &AttemptError,
        index: usize,
        query: Vec<u8>,
        deadline: Instant,
        reply: impl FnOnce(&[u8]) + Send + 'static,
        permit: OwnedSemaphorePermit,
    ) {
        // A full socket buffer of ours says nothing of the upstream.
        if !matches!(error, AttemptError::Io(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.mark_down(&self.upstreams[index], error);
        }
        let forwarder = self.clone();
        self.runtime.spawn(async move {
            let mut out = Vec::new();
            forwarder.attempts(&query, Transport::Udp, deadline, &mut out).await;
            reply(&out);
            drop(permit);
        });
    }

    /// Tries the upstreams until one answers or `deadline`, writing the response into `out`.
    async fn attempts(&self, query: &[u8], transport: Transport, deadline: Instant, out: &mut Vec<u8>) {
        let mut msg = query.to_vec();
        let order = self.order();
        // RFC 8914: 23 once an attempt failed with a network error, else 22 (timeouts).
        let mut failure = ede::NO_REACHABLE_AUTHORITY;
        'attempts: for upstream in order.iter().cycle().take(order.len() * 8) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = self.settings.attempt_timeout.min(deadline - now);
            let mut reply = match upstream.channels.exchange(&mut msg, timeout).await {
                Ok(Some(reply)) => reply,
                Ok(None) => {
                    self.mark_down(upstream, &AttemptError::Timeout);
                    continue;
                }
                Err(e) => {
                    let e = AttemptError::Io(e);
                    self.mark_down(upstream, &e);
                    failure = ede::NETWORK_ERROR;
                    continue;
                }
            };
            upstream.counted.count(ForwardResult::Answer);
            if transport == Transport::Tcp && reply[2] & 0x02 != 0 {
                let timeout = self
                    .settings
                    .attempt_timeout
                    .min(deadline.saturating_duration_since(Instant::now()));
                match tcp_exchange(upstream.addr, &msg, timeout).await {
                    Ok(full) => reply = full,
                    Err(e) => {
                        self.mark_down(upstream, &e);
                        continue 'attempts;
                    }
                }
            }
            upstream.down_until.store(0, Ordering::Relaxed);
            reply[..2].copy_from_slice(&query[..2]);
            out.clear();
            out.extend_from_slice(&reply);
            return;
        }
        tracing::debug!("every upstream failed: SERVFAIL");
        error_reply_with_ede(query, rcode::SERVFAIL, true, Some(failure), out);
    }

    fn mark_down(&self, upstream: &Upstream, error: &AttemptError) {
        let result = match error {
            AttemptError::Timeout => ForwardResult::Timeout,
            AttemptError::Io(_) => ForwardResult::Error,
        };
        upstream.counted.count(result);
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        if upstream.down_until.swap(until, Ordering::Relaxed) <= self.now_ms() {
            tracing::warn!(upstream = %upstream.addr, %error, "upstream failed; trying the others first for {DOWN_FOR:?}");
        }
    }
}

/// Where `upstream` stands in the order of trial at `now`: 0 while healthy, else the time
/// until which it counts as down.
fn rank(upstream: &Upstream, now: u64) -> u64 {
    let until = upstream.down_until.load(Ordering::Relaxed);
    if until <= now { 0 } else { until }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_syntax() {
        assert_eq!(parse_upstream("10.0.0.10"), Ok("10.0.0.10:53".parse().unwrap()));
        assert_eq!(parse_upstream("127.0.0.1:5300"), Ok("127.0.0.1:5300".parse().unwrap()));
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(parse_upstream("[fd00::a]:5353"), Ok("[fd00::a]:5353".parse().unwrap()));
        assert!(parse_upstream("kube-dns.kube-system").is_err());
        assert!(parse_upstream("1.2.3.4:99999").is_err());
    }

    #[test]
    fn resolv_conf() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n\
                    nameserver fe80::1%eth0\nnameserver\noptions ndots:5\n  nameserver 1.1.1.1\nnameserver bogus\n";
        let got = resolv_conf_nameservers(text);
        let want: Vec<SocketAddr> = ["10.96.0.10:53", "[fe80::1]:53", "1.1.1.1:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
}
