//! Abuse limits over real sockets: a flood of idle TCP connections neither stops UDP answers
//! nor grows without bound, idle connections are closed, and a client that sends a response
//! gets nothing back.

use std::time::Duration;

use globaldns::dns::server::Limits;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::*;

fn entries() -> String {
    se(
        "bar",
        "httpbin",
        "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
    )
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_flood_does_not_stop_udp_and_stays_bounded() {
    let limits = Limits {
        udp_sockets: 2,
        max_tcp_connections: 20,
        tcp_idle_timeout: Duration::from_millis(800),
    };
    let server = Server::start_with(&[("se.yaml", &entries())], None, limits).await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over the bound: accepted by the kernel, closed at once by the server.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)).await,
        "the 21st connection is closed"
    );
    // UDP keeps answering meanwhile.
    let m = ask(&mut udp_client(server.addr).await, "httpbin.bar.global.", RecordType::A).await;
    assert_eq!(addresses(&m), ["240.0.0.2"]);
    // Idle connections are closed after the idle timeout, freeing their places.
    for (i, conn) in flood.iter_mut().enumerate() {
        assert!(
            closed_within(conn, Duration::from_secs(3)).await,
            "idle connection {i} closed"
        );
    }
    let mut fresh = TcpStream::connect(server.addr).await.unwrap();
    let q = query_bytes(5, "httpbin.bar.global.", RecordType::A, false);
    fresh
        .write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .await
        .unwrap();
    let len = tokio::time::timeout(Duration::from_secs(2), fresh.read_u16())
        .await
        .expect("served again")
        .unwrap();
    assert!(len > 12);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_sender_is_cut_off_by_the_idle_timeout() {
    let limits = Limits {
        udp_sockets: 2,
        max_tcp_connections: 8,
        tcp_idle_timeout: Duration::from_millis(500),
    };
    let server = Server::start_with(&[("se.yaml", &entries())], None, limits).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    // Half a message, then nothing: the whole message must arrive within the timeout.
    conn.write_all(&[0, 40, 0x12, 0x34]).await.unwrap();
    assert!(closed_within(&mut conn, Duration::from_secs(3)).await);
    server.stop().await;
}

#[tokio::test]
async fn responses_sent_as_queries_get_no_reply_over_udp_or_tcp() {
    let server = Server::start(&[("se.yaml", &entries())]).await;
    let mut response = query_bytes(9, "httpbin.bar.global.", RecordType::A, false);
    response[2] |= 0x80;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&response, server.addr).await.unwrap();
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
            .await
            .is_err(),
        "no UDP reply"
    );
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let query = query_bytes(10, "httpbin.bar.global.", RecordType::A, false);
    for msg in [&response, &query] {
        conn.write_all(&[&(msg.len() as u16).to_be_bytes()[..], msg].concat())
            .await
            .unwrap();
    }
    let _len = conn.read_u16().await.unwrap();
    let mut id = [0u8; 2];
    conn.read_exact(&mut id).await.unwrap();
    assert_eq!(
        id,
        10u16.to_be_bytes(),
        "the response was skipped, the query after it answered"
    );
    server.stop().await;
}
