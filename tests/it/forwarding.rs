//! Forwarding to an upstream the test controls: transparency, TCP, timeouts, failover,
//! SERVFAIL, the in-flight bound, spoofed answers, and no in-zone name ever forwarded;
//! upstream health (down after failures in a row, probed, SERVFAIL at once while down) and
//! concurrent TCP.

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::*;
use crate::support::{get, metric};
use crate::upstream::{Behaviour, Upstream};

fn entries() -> String {
    [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
        ),
        se("shop", "wild", "{hosts: [\"*.shop.global\"], addresses: [240.0.0.10]}"),
    ]
    .concat()
}

async fn udp_exchange(server: std::net::SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(msg, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf[..n].to_vec())
}

async fn tcp_exchange(server: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&[&(msg.len() as u16).to_be_bytes()[..], msg].concat())
        .await
        .unwrap();
    let len = s.read_u16().await.unwrap();
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

fn rcode(reply: &[u8]) -> ResponseCode {
    Message::from_vec(reply).unwrap().metadata.response_code
}

#[tokio::test]
async fn answers_come_back_unchanged_but_for_the_id() {
    let up = Upstream::start(Behaviour::Answer).await;
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[up.addr]))).await;
    let mut upstream_ids = Vec::new();
    for (i, (name, want)) in [
        ("www.example.com.", ResponseCode::NoError),
        ("NXDOMAIN.Example.com.", ResponseCode::NXDomain),
        ("refused.example.com.", ResponseCode::Refused),
        (".", ResponseCode::NoError),
    ]
    .into_iter()
    .enumerate()
    {
        for (edns, tcp) in [(false, false), (true, false), (true, true)] {
            let id = 0x1000 + i as u16;
            let q = query_bytes(id, name, if name == "." { RecordType::NS } else { RecordType::A }, edns);
            let reply = if tcp {
                tcp_exchange(server.addr, &q).await
            } else {
                udp_exchange(server.addr, &q).await.unwrap()
            };
            let sent = up.last_answer();
            assert_eq!(&reply[..2], &id.to_be_bytes(), "{name}: the client's ID");
            assert_eq!(
                reply[2..],
                sent[2..],
                "{name} edns={edns} tcp={tcp}: byte for byte the upstream's answer"
            );
            assert_eq!(rcode(&reply), want, "{name}");
            let (seen, _) = up.queries().last().unwrap().clone();
            upstream_ids.push(seen.metadata.id);
            let mut original = Message::from_vec(&q).unwrap();
            original.metadata.id = seen.metadata.id;
            assert_eq!(
                seen.to_vec().unwrap(),
                original.to_vec().unwrap(),
                "{name}: the query leaves unchanged but for the ID"
            );
        }
    }
    upstream_ids.sort();
    upstream_ids.dedup();
    assert!(upstream_ids.len() > 8, "fresh random IDs upstream: {upstream_ids:?}");
    server.stop().await;
}

#[tokio::test]
async fn in_zone_names_are_never_forwarded() {
    let up = Upstream::start(Behaviour::Answer).await;
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[up.addr]))).await;
    let mut client = udp_client(server.addr).await;
    for (name, qtype) in [
        ("httpbin.bar.global.", RecordType::A),
        ("httpbin.bar.global.", RecordType::MX),
        ("bar.global.", RecordType::A),
        ("nope.global.", RecordType::A),
        ("x.y.shop.global.", RecordType::AAAA),
        ("global.", RecordType::NS),
        ("global.", RecordType::AXFR),
    ] {
        let m = ask(&mut client, name, qtype).await;
        assert!(m.metadata.recursion_available, "RA: this server forwards other names");
        assert!(
            !m.answers
                .iter()
                .chain(&m.authorities)
                .any(|r| r.ttl == 42 || r.ttl == 77),
            "{name}: answered here"
        );
    }
    let m = ask(&mut client, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&m), ["192.0.2.1"]);
    let forwarded: Vec<String> = up
        .queries()
        .iter()
        .map(|(q, _)| q.queries[0].name().to_string())
        .collect();
    assert_eq!(
        forwarded,
        ["kubernetes.default.svc.cluster.local."],
        "only the out-of-zone name went upstream"
    );
    server.stop().await;
}

#[tokio::test]
async fn truncated_udp_answers_go_to_udp_clients_as_they_are_and_tcp_clients_get_tcp() {
    let up = Upstream::start(Behaviour::Truncate).await;
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[up.addr]))).await;
    let reply = udp_exchange(server.addr, &query_bytes(1, "big.example.com.", RecordType::A, true))
        .await
        .unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert_eq!(up.queries().iter().map(|(_, tcp)| *tcp).collect::<Vec<_>>(), [false]);

    let reply = tcp_exchange(server.addr, &query_bytes(2, "big.example.com.", RecordType::A, true)).await;
    let m = Message::from_vec(&reply).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m), ["192.0.2.1"]);
    assert_eq!(
        up.queries().iter().map(|(_, tcp)| *tcp).collect::<Vec<_>>(),
        [false, false, true],
        "UDP first, then TCP"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dead_first_upstream_fails_over_and_is_remembered() {
    let silent = Upstream::start(Behaviour::Silent).await;
    let good = Upstream::start(Behaviour::Answer).await;
    let server =
        Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[silent.addr, good.addr]))).await;
    let mut client = udp_client(server.addr).await;
    for i in 0..5 {
        let m = ask(&mut client, &format!("n{i}.example.com."), RecordType::A).await;
        assert_eq!(addresses(&m), ["192.0.2.1"], "query {i}");
    }
    assert_eq!(
        forwarded(&silent),
        2,
        "the silent upstream is tried until it failed twice in a row, then skipped while down"
    );
    assert_eq!(forwarded(&good), 5);
    server.stop().await;
}

#[tokio::test]
async fn all_upstreams_failing_is_servfail_not_silence() {
    let silent = Upstream::start(Behaviour::Silent).await;
    // A closed port: the kernel answers with ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[closed, silent.addr]))).await;
    for edns in [false, true] {
        let started = Instant::now();
        let reply = udp_exchange(server.addr, &query_bytes(9, "www.example.com.", RecordType::A, edns))
            .await
            .expect("an answer");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries.len(), 1, "question echoed");
        assert_eq!(m.edns.is_some(), edns, "OPT when asked");
        assert!(m.metadata.recursion_available);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "within the budget, well before a stub gives up"
        );
        if edns {
            assert!(
                started.elapsed() < Duration::from_millis(300),
                "both known down: at once, not after an attempt"
            );
        }
    }
    assert_eq!(forwarded(&silent), 2, "tried until it failed twice in a row");
    server.stop().await;
}

#[tokio::test]
async fn spoofed_and_mismatched_answers_are_ignored() {
    let up = Upstream::start(Behaviour::Spoof).await;
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[up.addr]))).await;
    let reply = udp_exchange(server.addr, &query_bytes(5, "www.example.com.", RecordType::A, false))
        .await
        .unwrap();
    assert_eq!(
        addresses(&Message::from_vec(&reply).unwrap()),
        ["192.0.2.1"],
        "the real answer, not 6.6.6.6"
    );
    server.stop().await;
}

/// An upstream answering first with another type (0x0061 for a query of HTTPS, 0x0041: the
/// same bytes but for the ASCII case bit) and then the real answer: the client gets the real
/// one. Names match case-insensitively (RFC 4343); types and classes exactly.
#[tokio::test]
async fn an_answer_for_another_type_is_ignored() {
    let up = Upstream::start(Behaviour::OtherType).await;
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[up.addr]))).await;
    let reply = udp_exchange(
        server.addr,
        &query_bytes(6, "www.example.com.", RecordType::HTTPS, false),
    )
    .await
    .unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(
        m.queries[0].query_type(),
        RecordType::HTTPS,
        "the answer to the question asked"
    );
    assert_eq!(addresses(&m), ["192.0.2.1"], "the real answer, not 6.6.6.6");
    server.stop().await;
}

#[tokio::test]
async fn forwards_in_flight_are_bounded_with_servfail() {
    let up = Upstream::start(Behaviour::Slow(Duration::from_millis(600))).await;
    let mut settings = forwarding(&[up.addr]);
    settings.max_in_flight = 2;
    settings.attempt_timeout = Duration::from_secs(2);
    settings.budget = Duration::from_secs(2);
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(settings)).await;
    let tasks: Vec<_> = (0..10u16)
        .map(|i| {
            let addr = server.addr;
            tokio::spawn(async move {
                udp_exchange(
                    addr,
                    &query_bytes(i, &format!("s{i}.example.com."), RecordType::A, false),
                )
                .await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(rcode(&t.await.unwrap().expect("every query is answered")));
    }
    let answered = codes.iter().filter(|c| **c == ResponseCode::NoError).count();
    let refused = codes.iter().filter(|c| **c == ResponseCode::ServFail).count();
    assert_eq!((answered, refused), (2, 8), "{codes:?}");
    assert_eq!(up.queries().len(), 2);
    // In-zone answers do not wait for forwards.
    let m = ask(&mut udp_client(server.addr).await, "httpbin.bar.global.", RecordType::A).await;
    assert_eq!(addresses(&m), ["240.0.0.2"]);
    server.stop().await;
}

/// The Extended DNS Error code of `reply` (RFC 8914: option 15, INFO-CODE first), if any.
fn ede(reply: &[u8]) -> Option<u16> {
    let m = Message::from_vec(reply).unwrap();
    m.edns.as_ref()?.options().as_ref().iter().find_map(|(_, o)| match o {
        hickory_proto::rr::rdata::opt::EdnsOption::Unknown(15, data) => Some(u16::from_be_bytes([data[0], data[1]])),
        _ => None,
    })
}

/// A forward refused because `--max-forwards` are in flight is SERVFAIL at once with EDE 22
/// No Reachable Authority, over UDP and TCP, to EDNS clients only.
#[tokio::test]
async fn a_forward_beyond_the_in_flight_bound_says_why_to_edns_clients() {
    let up = Upstream::start(Behaviour::Slow(Duration::from_millis(800))).await;
    let mut settings = forwarding(&[up.addr]);
    settings.max_in_flight = 1;
    settings.attempt_timeout = Duration::from_secs(2);
    settings.budget = Duration::from_secs(2);
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(settings)).await;
    let addr = server.addr;
    let busy =
        tokio::spawn(
            async move { udp_exchange(addr, &query_bytes(1, "busy.example.com.", RecordType::A, false)).await },
        );
    assert!(
        eventually(Duration::from_secs(2), || async { !up.queries().is_empty() }).await,
        "the first forward is in flight"
    );
    let udp = udp_exchange(addr, &query_bytes(2, "u.example.com.", RecordType::A, true))
        .await
        .unwrap();
    let tcp = tcp_exchange(addr, &query_bytes(3, "t.example.com.", RecordType::A, true)).await;
    let plain = udp_exchange(addr, &query_bytes(4, "p.example.com.", RecordType::A, false))
        .await
        .unwrap();
    for reply in [&udp, &tcp, &plain] {
        assert_eq!(rcode(reply), ResponseCode::ServFail);
    }
    assert_eq!((ede(&udp), ede(&tcp)), (Some(22), Some(22)), "EDE 22 to EDNS clients");
    assert!(Message::from_vec(&plain).unwrap().edns.is_none(), "none without EDNS");
    assert_eq!(rcode(&busy.await.unwrap().unwrap()), ResponseCode::NoError);
    server.stop().await;
}

/// A truncated UDP answer retried over TCP, where the upstream refuses the connection: the
/// TCP client gets SERVFAIL with EDE 23 Network Error (a socket error, not a timeout).
#[tokio::test]
async fn a_failed_tcp_retry_of_a_truncated_answer_is_a_network_error() {
    // UDP only: every answer truncated, and no TCP listener on the port (connection refused).
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up = udp.local_addr().unwrap();
    let truncating = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut m = Message::new(
                q.metadata.id,
                hickory_proto::op::MessageType::Response,
                q.metadata.op_code,
            );
            m.metadata.truncation = true;
            m.queries = q.queries.clone();
            let _ = udp.send_to(&m.to_vec().unwrap(), peer).await;
        }
    });
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[up]))).await;
    let started = Instant::now();
    let reply = tcp_exchange(server.addr, &query_bytes(8, "big.example.com.", RecordType::A, true)).await;
    assert_eq!(rcode(&reply), ResponseCode::ServFail);
    assert_eq!(ede(&reply), Some(23), "Network Error");
    assert!(started.elapsed() < Duration::from_secs(3), "within the budget");
    let plain = tcp_exchange(server.addr, &query_bytes(9, "big.example.com.", RecordType::A, false)).await;
    assert_eq!(rcode(&plain), ResponseCode::ServFail);
    assert!(Message::from_vec(&plain).unwrap().edns.is_none(), "none without EDNS");
    truncating.abort();
    server.stop().await;
}

/// Queries the upstream received other than probes (`. NS` is never asked by these tests
/// while an upstream is down).
fn forwarded(up: &Upstream) -> usize {
    up.queries()
        .iter()
        .filter(|(q, _)| !(q.queries[0].name().is_root() && q.queries[0].query_type() == RecordType::NS))
        .count()
}

/// The `. NS` probes the upstream received.
fn probes(up: &Upstream) -> usize {
    up.queries().len() - forwarded(up)
}

/// What a forwarder answers `name`/`qtype` over UDP or TCP, and how long it took.
async fn timed(server: std::net::SocketAddr, id: u16, name: &str, qtype: RecordType, tcp: bool) -> (Message, Duration) {
    let started = Instant::now();
    let q = query_bytes(id, name, qtype, true);
    let reply = if tcp {
        tcp_exchange(server, &q).await
    } else {
        udp_exchange(server, &q).await.expect("an answer")
    };
    (Message::from_vec(&reply).unwrap(), started.elapsed())
}

/// The default timeouts (`--upstream-timeout 800ms`, `--forward-timeout 1800ms`).
fn with_default_timeouts(upstream: std::net::SocketAddr) -> globaldns::dns::forward::ForwardSettings {
    let mut settings = forwarding(&[upstream]);
    settings.attempt_timeout = Duration::from_millis(800);
    settings.budget = Duration::from_millis(1800);
    settings
}

/// CoreDNS's health probe of globaldns (`. IN NS`, read for less than a second) while
/// globaldns's own upstream is black-holed: SERVFAIL at once after two failures in a row,
/// the upstream probed meanwhile, and answers again within a second of it coming back.
#[tokio::test]
async fn root_ns_gets_servfail_at_once_while_the_upstream_is_down_and_answers_once_back() {
    let up = Upstream::start(Behaviour::Answer).await;
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(with_default_timeouts(up.addr))).await;
    let (m, _) = timed(server.addr, 1, ".", RecordType::NS, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "forwarded while up");
    let series = |name: &str, labels: &str| format!("globaldns_{name}{{upstream=\"{}\"{labels}}}", up.addr);
    let admin = server.admin_addr();
    assert_eq!(
        metric(&get(admin, "/metrics").await.1, &series("forward_upstream_up", "")),
        1.0
    );

    // Twice: down, probed, back, and down again (a new prober).
    for episode in 0..2u16 {
        let id = 10 * episode;
        let forwarded_before = forwarded(&up);
        up.set(Behaviour::Silent);
        let (m, took) = timed(server.addr, id + 2, "www.example.com.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(took < Duration::from_secs(2), "within CoreDNS's 2 s: {took:?}");
        assert_eq!(forwarded(&up), forwarded_before + 2, "two attempts failed in a row");
        let asked = probes(&up); // (the `. NS` asked so far)
        let (_, text) = get(admin, "/metrics").await;
        let fast_before = metric(&text, "globaldns_forward_fast_failures_total");
        let timed_out = series("forward_probes_total", ",result=\"timeout\"");
        let (timeouts_before, answers_before) = (
            metric(&text, &timed_out),
            metric(&text, &series("forward_probes_total", ",result=\"answer\"")),
        );
        assert_eq!(metric(&text, &series("forward_upstream_up", "")), 0.0, "down");

        for (id, tcp) in [(id + 3, false), (id + 4, true), (id + 5, false)] {
            let (m, took) = timed(server.addr, id, ".", RecordType::NS, tcp).await;
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "tcp={tcp}");
            assert!(took < Duration::from_secs(1), "at once, tcp={tcp}: {took:?}");
            assert_eq!(m.metadata.id, id);
            assert!(m.metadata.recursion_available);
            assert_eq!(m.queries.len(), 1, "the question echoed");
            assert!(m.edns.is_some(), "OPT as asked");
        }
        assert_eq!(forwarded(&up), forwarded_before + 2, "no query goes to a down upstream");
        assert!(
            eventually(Duration::from_secs(2), || async { probes(&up) >= asked + 2 }).await,
            "probed every 0.5 s: {} probes",
            probes(&up) - asked
        );
        let (_, text) = get(admin, "/metrics").await;
        assert!(metric(&text, "globaldns_forward_fast_failures_total") >= fast_before + 3.0);
        assert!(
            eventually(Duration::from_secs(2), || async {
                metric(&get(admin, "/metrics").await.1, &timed_out) > timeouts_before
            })
            .await,
            "probes that time out are counted"
        );

        up.set(Behaviour::Answer);
        let back = Instant::now();
        let answered = eventually(Duration::from_secs(2), || async {
            let (m, _) = timed(server.addr, id + 6, ".", RecordType::NS, false).await;
            m.metadata.response_code == ResponseCode::NoError
        })
        .await;
        assert!(answered, "answered again once the upstream is back");
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "within 1 s: {:?}",
            back.elapsed()
        );
        let (_, text) = get(admin, "/metrics").await;
        assert_eq!(metric(&text, &series("forward_upstream_up", "")), 1.0, "up again");
        assert!(metric(&text, &series("forward_probes_total", ",result=\"answer\"")) > answers_before);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_single_timeout_does_not_mark_an_upstream_down() {
    let up = Upstream::start(Behaviour::Silent).await;
    let mut settings = forwarding(&[up.addr]);
    settings.budget = settings.attempt_timeout; // one attempt per query
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(settings)).await;
    let (m, _) = timed(server.addr, 1, "a.example.com.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "timed out once");
    up.set(Behaviour::Answer);
    let (m, _) = timed(server.addr, 2, "b.example.com.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "still up: forwarded");
    assert_eq!(probes(&up), 0, "never probed");
    server.stop().await;
}

/// Writes `queries` on one TCP connection in one go.
async fn pipeline(server: std::net::SocketAddr, queries: &[Vec<u8>]) -> TcpStream {
    let mut s = TcpStream::connect(server).await.unwrap();
    let mut wire = Vec::new();
    for q in queries {
        wire.extend_from_slice(&(q.len() as u16).to_be_bytes());
        wire.extend_from_slice(q);
    }
    s.write_all(&wire).await.unwrap();
    s
}

async fn read_message(s: &mut TcpStream) -> Message {
    let len = s.read_u16().await.unwrap();
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// RFC 7766 §6.2.1.1: a slow forwarded query does not hold up the in-zone answer sent after
/// it on the same connection; each is answered when ready.
#[tokio::test]
async fn a_slow_forward_does_not_delay_an_in_zone_answer_on_the_same_tcp_connection() {
    let up = Upstream::start(Behaviour::Slow(Duration::from_millis(700))).await;
    let mut settings = forwarding(&[up.addr]);
    settings.attempt_timeout = Duration::from_secs(2);
    settings.budget = Duration::from_secs(2);
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(settings)).await;
    let started = Instant::now();
    let mut s = pipeline(
        server.addr,
        &[
            query_bytes(1, "slow.example.com.", RecordType::A, false),
            query_bytes(2, "httpbin.bar.global.", RecordType::A, false),
        ],
    )
    .await;
    let first = read_message(&mut s).await;
    let took = started.elapsed();
    assert_eq!(first.metadata.id, 2, "the in-zone answer first");
    assert_eq!(addresses(&first), ["240.0.0.2"]);
    assert!(took < Duration::from_millis(500), "not after the forward: {took:?}");
    let second = read_message(&mut s).await;
    assert_eq!(second.metadata.id, 1);
    assert_eq!(addresses(&second), ["192.0.2.1"], "then the forwarded one");
    server.stop().await;
}

/// At most 32 queries of a connection in flight: the 33rd and what follows wait until one
/// is answered; every query is answered in the end.
#[tokio::test]
async fn a_tcp_connection_has_at_most_32_queries_in_flight() {
    let up = Upstream::start(Behaviour::Silent).await;
    let mut settings = forwarding(&[up.addr]);
    settings.attempt_timeout = Duration::from_millis(1500);
    settings.budget = Duration::from_millis(1500);
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(settings)).await;
    let mut queries: Vec<Vec<u8>> = (0..33u16)
        .map(|i| query_bytes(100 + i, &format!("q{i}.example.com."), RecordType::A, false))
        .collect();
    queries.push(query_bytes(1, "httpbin.bar.global.", RecordType::A, false));
    let started = Instant::now();
    let mut s = pipeline(server.addr, &queries).await;
    assert!(
        eventually(Duration::from_secs(1), || async { forwarded(&up) >= 32 }).await,
        "32 forwarded at once: {}",
        forwarded(&up)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(forwarded(&up), 32, "the 33rd waits");
    let mut ids = Vec::new();
    for _ in 0..queries.len() {
        let m = read_message(&mut s).await;
        if ids.is_empty() {
            assert!(
                started.elapsed() >= Duration::from_millis(1000),
                "nothing before a place is free"
            );
        }
        ids.push(m.metadata.id);
    }
    ids.sort();
    let mut want: Vec<u16> = (100..133).collect();
    want.insert(0, 1);
    assert_eq!(ids, want, "every query answered once");
    server.stop().await;
}
