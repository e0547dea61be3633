//! No heap allocation per in-zone answer (SRV and PTR, stale answers with their EDE included):
//! a counting global allocator around the answer path,
//! around a batch of lookups fetched ahead on a large table (`fetch_ahead`),
//! around a UDP batch receiving and replying from the addresses asked, and around the whole
//! server answering UDP queries over a socket, in-zone and forwarded (its own test binary,
//! since the allocator is process-wide).
#![allow(missing_docs)]
// A global allocator is the only way to count allocations; it forwards to the system one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use globaldns::dns::answer::{Mode, Outcome, Shuffler, Transport, answer, fetch_ahead};
use globaldns::dns::batch::{Batch, enable_packet_info};
use globaldns::dns::forward::{ForwardSettings, Forwarder};
use globaldns::dns::server::{Limits, Listeners};
use globaldns::metrics::Metrics;
use globaldns::serviceentry::yaml;
use globaldns::table::{AHEAD, AHEAD_FROM_HOSTS, Ahead, Live, SourceInput, Table, TableSettings};
use tokio_util::sync::CancellationToken;

#[path = "../benches/common/wire.rs"]
mod wire;

use wire::query;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn table() -> Table {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/wildcard.yaml")).unwrap()
        + "\n---\n"
        + &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/dual-stack.yaml")).unwrap()
        + &many()
        + SRV;
    let entries = yaml::parse(&text, "default").unwrap().entries;
    let name: Arc<str> = "c".into();
    Live::build(
        &TableSettings::new(&["global", "240.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"]).unwrap(),
        &[SourceInput {
            name: &name,
            entries: &entries,
        }],
        1,
        true,
    )
}

/// Named ports (SRV, two from two entries) on a host sharing its address with another (two
/// PTR records).
const SRV: &str = "
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec: {hosts: [web.default.global, www.default.global], addresses: [240.0.0.20, \"2001:db8::20\"], ports: [{name: http, number: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-alt}
spec: {hosts: [web.default.global], addresses: [240.0.0.20, \"2001:db8::20\"], ports: [{name: http, number: 8080}]}
";

/// `many.default.global` with 40 A records: more than 512 bytes.
fn many() -> String {
    let addresses: Vec<String> = (1..=40).map(|i| format!("10.40.0.{i}")).collect();
    format!(
        "\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: many}}\nspec: {{hosts: [many.default.global], addresses: [{}]}}\n",
        addresses.join(", ")
    )
}

fn queries() -> [Vec<u8>; 12] {
    [
        query(0x1234, "_http._tcp.web.default.global", 33, true), // SRV, A and AAAA additional
        query(0x1234, "_tcp.web.default.global", 33, false),      // an empty non-terminal of SRV
        query(0x1234, "20.0.0.240.in-addr.arpa", 12, true),       // two PTR records
        query(0x1234, &ip6_ptr(), 12, false),                     // PTR in ip6.arpa
        query(0x1234, "21.0.0.240.in-addr.arpa", 12, true),       // NXDOMAIN in a reverse zone
        query(0x1234, "ratings.default.global", 1, false),        // two A records, shuffled
        query(0x1234, "reviews.default.global", 28, true),        // AAAA with EDNS
        query(0x1234, "Api.Shop.Global", 1, true),                // wildcard, mixed case
        query(0x1234, "default.global", 1, false),                // empty non-terminal: NODATA + SOA
        query(0x1234, "nope.global", 1, true),                    // NXDOMAIN + SOA
        query(0x1234, "global", 255, false),                      // ANY at the apex
        query(0x1234, "many.default.global", 1, false),           // truncated: TC and the 30 that fit
    ]
}

/// The reverse name of 2001:db8::20.
fn ip6_ptr() -> String {
    let hex = format!("{:032x}", 0x2001_0db8_u128 << 96 | 0x20);
    let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
    format!("{}.ip6.arpa", nibbles.join("."))
}

/// One program without the test harness (`harness = false`): the count is of every thread,
/// and the harness's own threads (waiting for the test, reporting) allocate at moments of their
/// own, which made the count flaky.
fn main() {
    the_answer_path_does_not_allocate();
    fetching_a_batch_ahead_does_not_allocate();
    a_batch_allocates_nothing_after_it_is_made();
    the_udp_server_answers_without_allocating();
    the_udp_server_forwards_without_allocating();
    println!("alloc: the answer path, a UDP batch and the UDP server allocate nothing per query, forwarded or not");
    println!("1 passed, 0 failed");
}

fn the_answer_path_does_not_allocate() {
    let table = table();
    let queries = queries();
    let mut out = Vec::with_capacity(4096);
    let mut rng = Shuffler::new(1);
    for q in &queries {
        assert_eq!(
            answer(&table, q, Transport::Udp, Mode::default(), &mut rng, &mut out),
            Outcome::Reply
        );
    }
    // The same table with its source stale: answers carry EDE 3 (Stale Answer).
    let stale = table.clone().with_stale(Arc::new(["c".into()]));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        for q in &queries {
            answer(&table, q, Transport::Udp, Mode { forwarding: true }, &mut rng, &mut out);
            answer(&stale, q, Transport::Udp, Mode { forwarding: true }, &mut rng, &mut out);
        }
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - before,
        0,
        "allocations in 240 000 answers"
    );
}

/// A table large enough to fetch its lookups ahead, a batch fetched then answered as the UDP
/// listener does (`fetch_ahead`), again and again: nothing allocated.
fn fetching_a_batch_ahead_does_not_allocate() {
    let text: String = (0..AHEAD_FROM_HOSTS)
        .map(|i| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}}}\nspec: {{hosts: [s{i}.default.global], addresses: [10.9.{}.{}]}}\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let entries = yaml::parse(&text, "default").unwrap().entries;
    let name: Arc<str> = "c".into();
    let settings = TableSettings::new(&["global"]).unwrap();
    let table = Live::build(
        &settings,
        &[SourceInput {
            name: &name,
            entries: &entries,
        }],
        1,
        true,
    );
    assert!(table.fetches_ahead());
    let batch: Vec<Vec<u8>> = (0..AHEAD)
        .map(|i| query(0x1234, &format!("s{}.default.global", i * 101), 1, i % 2 == 0))
        .collect();
    let mut ahead = Ahead::default();
    let mut out = Vec::with_capacity(4096);
    let mut rng = Shuffler::new(1);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        fetch_ahead(&table, batch.iter().map(|m| &m[..]), &mut ahead);
        for q in &batch {
            answer(&table, q, Transport::Udp, Mode::default(), &mut rng, &mut out);
        }
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - before,
        0,
        "allocations in 1 000 batches fetched ahead"
    );
}

/// A dual-stack socket's batch, IPv4 datagrams to two of its addresses in turn (a run of
/// replies each, from the address asked): after the first round, nothing allocated.
fn a_batch_allocates_nothing_after_it_is_made() {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_only_v6(false).unwrap();
    enable_packet_info(&socket, true).unwrap();
    socket
        .bind(&"[::]:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let server: std::net::UdpSocket = socket.into();
    let port = server.local_addr().unwrap().port();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let asked: [std::net::SocketAddr; 2] = [([127, 0, 0, 2], port).into(), ([127, 0, 0, 1], port).into()];
    let mut batch = Batch::new(true, true);
    let mut buf = [0u8; 512];
    let mut round = |batch: &mut Batch| {
        for (i, to) in asked.iter().chain(&asked).enumerate() {
            client.send_to(&[i as u8; 12], to).unwrap();
        }
        // Loopback queues each datagram as it is sent: one batch takes the four.
        assert_eq!(batch.recv(&server).unwrap(), 4);
        batch.respond(|query, _, out| {
            out.extend_from_slice(query);
            true
        });
        let mut sent = 0;
        while sent < batch.replies() {
            sent += batch.send(&server, sent).unwrap();
        }
        for _ in 0..4 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(n, 12);
            assert_eq!(
                from,
                asked[usize::from(buf[0]) % 2],
                "the reply comes from the address asked"
            );
        }
    };
    round(&mut batch);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..500 {
        round(&mut batch);
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - before,
        0,
        "allocations in 500 batches"
    );
}

/// A UDP client of the server at `addr` (connected; reads time out after 5 s).
fn client_of(addr: std::net::SocketAddr) -> std::net::UdpSocket {
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    client
}

/// Spawns the server's future and waits until its first poll has returned: that poll sets the
/// server up (the TCP listeners' tasks, their joint future), allocating, and on a busy machine
/// the runtime's worker may first poll it after the queries counted have begun.
async fn spawn_set_up<F: std::future::Future + Send + 'static>(serving: F) -> tokio::task::JoinHandle<F::Output>
where
    F::Output: Send,
{
    let (polled, set_up) = tokio::sync::oneshot::channel();
    let mut polled = Some(polled);
    let mut serving = Box::pin(serving);
    let handle = tokio::spawn(std::future::poll_fn(move |cx| {
        let poll = serving.as_mut().poll(cx);
        if let Some(polled) = polled.take() {
            let _ = polled.send(());
        }
        poll
    }));
    set_up.await.unwrap();
    handle
}

/// The runtime the servers of these tests run on (one worker thread).
fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The server on a wildcard address, asked at another address than the client's.
fn the_udp_server_answers_without_allocating() {
    let runtime = one_worker_runtime();
    let shutdown = CancellationToken::new();
    let (addr, serving) = runtime.block_on(async {
        let listeners = Listeners::bind(&["0.0.0.0:0".parse().unwrap()], 1).await.unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 2], listeners.local_addrs()[0].port()));
        let table = Arc::new(ArcSwap::from_pointee(table()));
        let serving = listeners
            .serve(
                table,
                None,
                Limits::default(),
                Arc::new(Metrics::new()),
                shutdown.clone(),
            )
            .unwrap();
        (addr, spawn_set_up(serving).await)
    });
    let client = client_of(addr);
    let queries = queries();
    let mut buf = [0u8; 4096];
    let mut round_trip = |q: &[u8]| {
        client.send(q).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(buf[..2], q[..2], "the reply to this query");
        assert!(n > 12 && buf[2] & 0x80 != 0, "a response");
    };
    for q in &queries {
        round_trip(q); // the first batch makes what stays: metrics, the thread's buffers
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..2_000 {
        for q in &queries {
            round_trip(q);
        }
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    shutdown.cancel();
    runtime.block_on(serving).unwrap();
    assert_eq!(allocated, 0, "allocations in 24 000 queries over UDP");
}

/// The server forwarding UDP queries to an upstream (a thread here that echoes each query as
/// its answer, allocating nothing): no allocation per forward (three before forwards were
/// plain values). What allocates by the clock or now and then is allowed for: each upstream
/// socket in use re-boxes its timer queue's sleep whenever it fires (tokio-util's `DelayQueue`,
/// at least every 100 ms tick: two per tick here), and a socket is replaced every 1000 queries
/// or 10 s (one allocation per 50 forwards).
fn the_udp_server_forwards_without_allocating() {
    let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    upstream
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = upstream.recv_from(&mut buf) {
                    buf[2] |= 0x80;
                    let _ = upstream.send_to(&buf[..n], from);
                }
            }
        })
    };
    let runtime = one_worker_runtime();
    let shutdown = CancellationToken::new();
    let (addr, serving) = runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let settings = ForwardSettings {
            upstreams: vec![upstream_addr],
            attempt_timeout: std::time::Duration::from_secs(2),
            budget: std::time::Duration::from_secs(4),
            max_in_flight: 100,
        };
        let forwarder = Forwarder::new(settings, metrics.clone());
        let listeners = Listeners::bind(&["127.0.0.1:0".parse().unwrap()], 1).await.unwrap();
        let addr = listeners.local_addrs()[0];
        let table = Arc::new(ArcSwap::from_pointee(table()));
        let serving = listeners
            .serve(table, Some(forwarder), Limits::default(), metrics, shutdown.clone())
            .unwrap();
        (addr, spawn_set_up(serving).await)
    });
    let client = client_of(addr);
    let queries = [
        query(0x4321, "svc.ns.svc.cluster.local", 1, false),
        query(0x4321, "example.org", 28, true),
    ];
    let mut buf = [0u8; 4096];
    let mut round_trip = |q: &[u8]| {
        client.send(q).unwrap();
        let n = client.recv(&mut buf).unwrap();
        // (Compared piece by piece: a joined expectation would allocate.)
        assert!(
            n == q.len() && buf[..2] == q[..2] && buf[2] == q[2] | 0x80 && buf[3..n] == q[3..],
            "the upstream's answer, with the client's ID"
        );
    };
    // Every upstream socket opened, the buffers of each thread made.
    for _ in 0..500 {
        queries.iter().for_each(|q| round_trip(q));
    }
    let rounds = 6_000;
    let started = std::time::Instant::now();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        queries.iter().for_each(|q| round_trip(q));
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let ticks = started.elapsed().as_millis() as u64 / 100 * 16; // (16 sockets per upstream)
    shutdown.cancel();
    runtime.block_on(serving).unwrap();
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    let forwards = rounds * queries.len() as u64;
    assert!(
        allocated < forwards / 50 + 2 * ticks,
        "{allocated} allocations in {forwards} forwarded queries over UDP ({ticks} timer ticks)"
    );
}
