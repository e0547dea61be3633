//! What gates a transfer: entry files that did not load at start keep the zone from being
//! transferred or NOTIFYed (a partial zone with a higher serial would wipe the secondaries)
//! until they load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globaldns::app::{self, Running, ServeConfig, Sources};
use globaldns::dns::server::Limits;
use globaldns::dns::transfer::TransferSettings;
use globaldns::table::TableSettings;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::support::*;
use crate::transfer::{entries, start, transfer};

/// A server on `path` allowing 127.0.0.1 to transfer and NOTIFYing a socket of ours.
async fn start_on(path: &Path) -> (Running, UdpSocket) {
    let secondary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sources = Sources {
        entries: vec![path.to_owned()],
        sync_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let notify = vec![secondary.local_addr().unwrap()];
    (start(path, "127.0.0.1/32", notify, Some(sources)).await, secondary)
}

/// The names an AXFR from `addr` holds, or its rcode when it is refused or fails.
async fn axfr_names(addr: SocketAddr) -> Result<Vec<String>, ResponseCode> {
    let messages = transfer(addr, RecordType::AXFR, true).await;
    match messages[0].metadata.response_code {
        ResponseCode::NoError => Ok(messages
            .iter()
            .flat_map(|m| m.answers.iter().map(|r| r.name.to_string()))
            .collect()),
        rcode => Err(rcode),
    }
}

/// Not ready (naming `bad`), no transfer, no NOTIFY, for longer than the sync timeout; then,
/// once `fix` has run, ready, the whole zone transferred and NOTIFYed.
async fn held_back_until_fixed(running: &Running, secondary: &UdpSocket, bad: &Path, fix: impl FnOnce()) {
    let admin = running.admin_addr().unwrap();
    let mut buf = [0u8; 512];
    let notified = tokio::time::timeout(Duration::from_secs(2), secondary.recv_from(&mut buf)).await;
    assert!(notified.is_err(), "no NOTIFY while {} does not load", bad.display());
    let (code, body) = get(admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&*bad.to_string_lossy()), "/readyz names the path: {body}");
    assert_eq!(axfr_names(running.dns_addr()).await, Err(ResponseCode::ServFail));
    let (_, metrics) = get(admin, "/metrics").await;
    for series in [
        "globaldns_dns_responses_total{rcode=\"SERVFAIL\",path=\"authoritative\"}",
        "globaldns_dns_extended_errors_total{code=\"14\"}",
    ] {
        assert_eq!(
            metric(&metrics, series),
            1.0,
            "the not-ready answer counted: {series}\n{metrics}"
        );
    }

    fix();
    let ready = eventually(Duration::from_secs(5), || async {
        get(admin, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "ready once the files load: {:?}", get(admin, "/readyz").await);
    let notified = tokio::time::timeout(Duration::from_secs(5), secondary.recv_from(&mut buf)).await;
    assert!(notified.is_ok(), "NOTIFY once the files load");
    let names = axfr_names(running.dns_addr()).await.expect("the zone is transferred");
    for host in ["httpbin.bar.global.", "fixed.bar.global."] {
        assert!(names.iter().any(|n| n == host), "{host} in {names:?}");
    }
}

fn fixed() -> String {
    entries(&se(
        "bar",
        "fixed",
        "{hosts: [fixed.bar.global], addresses: [240.0.0.30]}",
    ))
}

#[tokio::test]
async fn a_file_that_does_not_parse_at_start_holds_back_transfers_and_notify_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let bad: PathBuf = dir.path().join("bad.yaml");
    std::fs::write(dir.path().join("good.yaml"), entries("")).unwrap();
    std::fs::write(&bad, "kind: ServiceEntry\nspec: [unclosed\n").unwrap();
    let (running, secondary) = start_on(dir.path()).await;
    // What loaded is served meanwhile.
    let mut client = udp_client(running.dns_addr()).await;
    let m = ask(&mut client, "httpbin.bar.global.", RecordType::A).await;
    assert_eq!(addresses(&m), ["240.0.0.2"]);
    held_back_until_fixed(&running, &secondary, &bad, || {
        std::fs::write(
            &bad,
            se("bar", "fixed", "{hosts: [fixed.bar.global], addresses: [240.0.0.30]}"),
        )
        .unwrap()
    })
    .await;
    running.shutdown_token().cancel();
    running.wait().await;
}

#[tokio::test]
async fn an_entries_path_that_does_not_exist_at_start_holds_back_transfers_and_notify_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    let (running, secondary) = start_on(&typo).await;
    held_back_until_fixed(&running, &secondary, &typo, || std::fs::write(&typo, fixed()).unwrap()).await;
    running.shutdown_token().cancel();
    running.wait().await;
}

#[tokio::test]
async fn every_answer_of_the_transfer_path_is_counted_as_a_response() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("se.yaml"), entries("")).unwrap();
    let refusing = start(dir.path(), "127.0.0.2/32", Vec::new(), None).await;
    assert_eq!(axfr_names(refusing.dns_addr()).await, Err(ResponseCode::Refused));
    let (_, metrics) = get(refusing.admin_addr().unwrap(), "/metrics").await;
    for series in [
        "globaldns_dns_responses_total{rcode=\"REFUSED\",path=\"authoritative\"}",
        "globaldns_dns_extended_errors_total{code=\"18\"}",
    ] {
        assert_eq!(metric(&metrics, series), 1.0, "{series}\n{metrics}");
    }
    // A whole zone, many messages or one, is one response.
    let allowed = start(dir.path(), "127.0.0.1/32", Vec::new(), None).await;
    axfr_names(allowed.dns_addr()).await.expect("the zone");
    let (_, metrics) = get(allowed.admin_addr().unwrap(), "/metrics").await;
    let series = "globaldns_dns_responses_total{rcode=\"NOERROR\",path=\"authoritative\"}";
    assert_eq!(metric(&metrics, series), 1.0, "{metrics}");
    for r in [refusing, allowed] {
        r.shutdown_token().cancel();
        r.wait().await;
    }
}

/// One UDP query, its answer.
async fn over_udp(server: SocketAddr, query: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(query, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("an answer over UDP")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test]
async fn ixfr_over_udp_gets_the_single_soa_when_allowed_and_refused_otherwise_and_axfr_notimp() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("se.yaml"), entries("")).unwrap();
    let allowed = start(dir.path(), "127.0.0.1/32", Vec::new(), None).await;
    let serial = allowed.table().versions()[0].serial;
    let m = over_udp(allowed.dns_addr(), &query_bytes(7, "global.", RecordType::IXFR, true)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let answers: Vec<_> = m
        .answers
        .iter()
        .map(|r| (r.record_type(), r.name.to_string()))
        .collect();
    assert_eq!(
        answers,
        [(RecordType::SOA, "global.".to_string())],
        "RFC 1995 §2: the single SOA"
    );
    match &m.answers[0].data {
        RData::SOA(soa) => assert_eq!(soa.serial, serial, "the current version's"),
        other => panic!("{other:?}"),
    }
    let m = over_udp(allowed.dns_addr(), &query_bytes(8, "global.", RecordType::AXFR, true)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "AXFR over UDP");
    let m = over_udp(
        allowed.dns_addr(),
        &query_bytes(9, "bar.global.", RecordType::IXFR, true),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotAuth, "not an apex");

    let refusing = start(dir.path(), "127.0.0.2/32", Vec::new(), None).await;
    let m = over_udp(refusing.dns_addr(), &query_bytes(7, "global.", RecordType::IXFR, true)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let ede = m.edns.as_ref().and_then(|e| e.option(EdnsCode::Unknown(15)).cloned());
    assert_eq!(ede, Some(EdnsOption::Unknown(15, vec![0, 18])), "EDE 18 Prohibited");
    let (_, metrics) = get(refusing.admin_addr().unwrap(), "/metrics").await;
    let series = "globaldns_dns_responses_total{rcode=\"REFUSED\",path=\"authoritative\"}";
    assert_eq!(metric(&metrics, series), 1.0, "counted: {metrics}");
    for r in [allowed, refusing] {
        r.shutdown_token().cancel();
        r.wait().await;
    }
}

#[tokio::test]
async fn a_transfer_of_a_name_outside_the_zones_is_answered_notauth_never_forwarded() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_tcp = tokio::net::TcpListener::bind(upstream.local_addr().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("se.yaml"), entries("")).unwrap();
    let running = app::start(ServeConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        admin: None,
        table: TableSettings::new(&["global"]).unwrap(),
        sources: Sources {
            entries: vec![dir.path().to_owned()],
            ..Default::default()
        },
        limits: Limits::default(),
        forward: Some(forwarding(&[upstream.local_addr().unwrap()])),
        transfer: TransferSettings {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            notify: Vec::new(),
        },
    })
    .await
    .expect("server starts");
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let m = transfer_of(running.dns_addr(), "example.com.", qtype).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NotAuth, "{qtype} over TCP");
    }
    let m = over_udp(
        running.dns_addr(),
        &query_bytes(3, "example.com.", RecordType::IXFR, false),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotAuth, "IXFR over UDP");
    let m = over_udp(
        running.dns_addr(),
        &query_bytes(4, "example.com.", RecordType::AXFR, false),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "AXFR over UDP");
    let mut buf = [0u8; 512];
    let forwarded = tokio::time::timeout(Duration::from_millis(500), upstream.recv_from(&mut buf)).await;
    assert!(forwarded.is_err(), "nothing reached the upstream over UDP");
    let forwarded = tokio::time::timeout(Duration::from_millis(100), upstream_tcp.accept()).await;
    assert!(forwarded.is_err(), "nothing reached the upstream over TCP");
    running.shutdown_token().cancel();
    running.wait().await;
}

/// A transfer request for `name` over TCP: the first message of the answer.
async fn transfer_of(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = query_bytes(5, name, qtype, false);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(3), s.read_u16())
        .await
        .expect("answered at once, not forwarded")
        .unwrap();
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}
