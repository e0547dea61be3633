//! Answers over real UDP and TCP sockets, header, flags, sections and TTLs included.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::*;

fn entries() -> String {
    let many: Vec<String> = (1..=60).map(|i| format!("10.9.0.{i}")).collect();
    [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
        ),
        se(
            "default",
            "dual",
            "{hosts: [dual.global], addresses: [240.0.0.3, \"2001:db8::3\"]}",
        ),
        se("shop", "wild", "{hosts: [\"*.shop.global\"], addresses: [240.0.0.10]}"),
        // No rule gives these an address: no names at all, and no empty non-terminals.
        se(
            "deep",
            "bare",
            "{hosts: [bare.deep.global, \"*.wild.deep.global\"], resolution: DNS}",
        ),
        se(
            "big",
            "many",
            &format!("{{hosts: [many.global], addresses: [{}]}}", many.join(", ")),
        ),
    ]
    .concat()
}

async fn check_answers(client: &mut DnsClient) {
    let m = ask(client, "httpbin.bar.global.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && !m.metadata.truncation && !m.metadata.recursion_available);
    assert_eq!(records(&m.answers), ["httpbin.bar.global. 30 A 240.0.0.2"]);
    assert!(m.authorities.is_empty());
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(1232),
        "EDNS answered with 1232"
    );

    let m = ask(client, "dual.global.", RecordType::AAAA).await;
    assert_eq!(records(&m.answers), ["dual.global. 30 AAAA 2001:db8::3"]);

    let m = ask(client, "api.shop.global.", RecordType::A).await;
    assert_eq!(records(&m.answers), ["api.shop.global. 30 A 240.0.0.10"], "wildcard");

    for (name, qtype, rcode) in [
        ("httpbin.bar.global.", RecordType::AAAA, ResponseCode::NoError),
        ("bar.global.", RecordType::A, ResponseCode::NoError),
        ("missing.bar.global.", RecordType::A, ResponseCode::NXDomain),
        ("bare.deep.global.", RecordType::A, ResponseCode::NXDomain),
        ("x.wild.deep.global.", RecordType::A, ResponseCode::NXDomain),
        ("deep.global.", RecordType::A, ResponseCode::NXDomain),
    ] {
        let m = ask(client, name, qtype).await;
        assert_eq!(m.metadata.response_code, rcode, "{name}");
        assert!(m.metadata.authoritative, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        let auth = records(&m.authorities);
        assert_eq!(auth.len(), 1, "{name}");
        // TTL min(--ttl 30, --negative-ttl 5), MINIMUM --negative-ttl (RFC 2308 §3).
        assert!(
            auth[0].starts_with("global. 5 SOA ns.dns.global. hostmaster.global. ")
                && auth[0].ends_with(" 3600 600 86400 5"),
            "{name}: {auth:?}"
        );
    }

    let m = ask(client, "example.com.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "out of zone, until forwarding"
    );
}

#[tokio::test]
async fn udp_answers() {
    let server = Server::start(&[("se.yaml", &entries())]).await;
    check_answers(&mut udp_client(server.addr).await).await;
    server.stop().await;
}

#[tokio::test]
async fn tcp_answers() {
    let server = Server::start(&[("se.yaml", &entries())]).await;
    check_answers(&mut tcp_client(server.addr).await).await;
    server.stop().await;
}

async fn read_frame(stream: &mut TcpStream) -> Message {
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn several_queries_on_one_tcp_connection() {
    let server = Server::start(&[("se.yaml", &entries())]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Three queries in one write (pipelined), then one more after the answers.
    let mut batch = Vec::new();
    for (id, name) in [(1u16, "httpbin.bar.global."), (2, "dual.global."), (3, "nope.global.")] {
        let q = query_bytes(id, name, RecordType::A, false);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    stream.write_all(&batch).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = read_frame(&mut stream).await;
        got.push((m.metadata.id, m.metadata.response_code, addresses(&m)));
    }
    assert_eq!(
        got,
        [
            (1, ResponseCode::NoError, vec!["240.0.0.2".to_string()]),
            (2, ResponseCode::NoError, vec!["240.0.0.3".to_string()]),
            (3, ResponseCode::NXDomain, vec![]),
        ]
    );
    let q = query_bytes(4, "many.global.", RecordType::A, false);
    stream
        .write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .await
        .unwrap();
    let m = read_frame(&mut stream).await;
    assert_eq!((m.metadata.id, m.answers.len(), m.metadata.truncation), (4, 60, false));
    server.stop().await;
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let server = Server::start(&[("se.yaml", &entries())]).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for edns in [false, true] {
        sock.send_to(&query_bytes(7, "many.global.", RecordType::A, edns), server.addr)
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        // 60 A records are 960 bytes: over 512 (TC=1 and the 16-byte records that fit after
        // the header and the question), under 1232.
        assert_eq!(m.metadata.truncation, !edns, "edns={edns}");
        let fit = (512 - 12 - "\x04many\x06global\x00\x00\x01\x00\x01".len()) / 16;
        assert_eq!(m.answers.len(), if edns { 60 } else { fit });
        assert!(n <= if edns { 1232 } else { 512 });
    }
    let m = ask(&mut tcp_client(server.addr).await, "many.global.", RecordType::A).await;
    assert_eq!(m.answers.len(), 60);
    server.stop().await;
}

/// `dig`'s view of names without records: NXDOMAIN with the zone's SOA, over UDP and TCP.
#[tokio::test]
async fn names_without_records_are_nxdomain_to_dig() {
    require("dig");
    let server = Server::start(&[("se.yaml", &entries())]).await;
    for transport in ["+notcp", "+tcp"] {
        for name in ["bare.deep.global", "deep.global", "x.wild.deep.global"] {
            let text = dig_at(server.addr, &[transport, "+tries=1", "+time=5", name, "A"]).await;
            assert!(text.contains("status: NXDOMAIN"), "{name} {transport}: {text}");
            assert!(text.contains("flags: qr aa"), "{name} {transport}: {text}");
            assert!(text.contains("IN\tSOA\tns.dns.global."), "{name} {transport}: {text}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn garbage_over_udp_gets_formerr_or_nothing_and_the_server_keeps_answering() {
    let server = Server::start(&[("se.yaml", &entries())]).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x00",
        b"\xab\xcd\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00",
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f",
        &[0xff; 300],
    ];
    for g in garbage {
        sock.send_to(g, server.addr).await.unwrap();
    }
    let mut buf = [0u8; 4096];
    let mut replies = Vec::new();
    while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await {
        replies.push(buf[..n].to_vec());
    }
    assert_eq!(
        replies.len(),
        2,
        "FORMERR to the two queries with a header; nothing to the rest"
    );
    for r in &replies {
        assert_eq!((&r[..2], r[3] & 0x0f), (&[0xab, 0xcd][..], 1));
    }
    check_answers(&mut udp_client(server.addr).await).await;
    server.stop().await;
}

/// The UDP threads answer whole batches as the answer path answers each query alone: every
/// reply with its query's ID to its sender, queries dropped in the middle of a batch leaving
/// no gap nor a stale reply. Random queries (names in every case, types, EDNS, corrupted
/// bytes) in bursts of 64, so that `recvmmsg` hands over several at once.
#[tokio::test]
async fn udp_batches_answer_as_the_answer_path_does() {
    use std::collections::HashMap;

    use globaldns::dns::answer::{Mode, Outcome, Shuffler, Transport, answer};

    let server = Server::start(&[("se.yaml", &entries())]).await;
    // The table as it stays: its serial sealed (the first records of the start-up second get
    // theirs within a second), since SOA records carry it.
    let sealed = eventually(Duration::from_secs(3), || async {
        !server.table().versions().iter().any(|v| v.is_pending())
    })
    .await;
    assert!(sealed);
    let table = server.table();
    // Names with one address per type, so that answers are the same bytes whatever the
    // shuffle (`many.global`'s 60 are never asked).
    let names = [
        "httpbin.bar.global",
        "dual.global",
        "a.b.shop.global",
        "nope.global",
        "bar.global",
        "global",
        "example.com",
    ];
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut out, mut rng, mut buf) = (Vec::new(), Shuffler::new(1), vec![0u8; 4096]);
    let mut replies_seen = 0;
    for burst in 0..30u16 {
        let mut expected = HashMap::new();
        for i in 0..64u16 {
            let id = burst * 64 + i;
            let name: String = names[random() as usize % names.len()]
                .chars()
                .map(|c| if random() % 2 == 0 { c.to_ascii_uppercase() } else { c })
                .collect();
            let qtype = [1, 28, 255, 6, 2, 16, 99][random() as usize % 7];
            let mut q = query_bytes(id, &format!("{name}."), RecordType::from(qtype), random() % 3 == 0);
            let at = 2 + random() as usize % (q.len() - 2);
            match random() % 8 {
                0 => q[at] ^= 1 << (random() % 8), // a flipped bit
                1 => q.truncate(at),               // cut short
                _ => {}
            }
            if answer(&table, &q, Transport::Udp, Mode::default(), &mut rng, &mut out) == Outcome::Reply {
                expected.insert(u16::from_be_bytes([out[0], out[1]]), out.clone());
            }
            socket.send_to(&q, server.addr).await.unwrap();
        }
        let mut got = HashMap::new();
        while got.len() < expected.len() {
            let Ok(received) = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await else {
                break;
            };
            let n = received.unwrap();
            got.insert(u16::from_be_bytes([buf[0], buf[1]]), buf[..n].to_vec());
        }
        // Anything more would be a reply to a query that gets none.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), socket.recv(&mut buf))
                .await
                .is_err(),
            "a reply beyond the expected ones in burst {burst}"
        );
        assert_eq!(got.len(), expected.len(), "burst {burst}: every reply, no more");
        for (id, reply) in &expected {
            assert_eq!(got.get(id), Some(reply), "burst {burst}, query {id}");
        }
        replies_seen += got.len();
    }
    assert!(replies_seen > 30 * 48, "most queries are answered: {replies_seen}");
    server.stop().await;
}
