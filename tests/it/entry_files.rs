//! The file source: changes are served without restart, a broken file keeps its last good
//! entries, a removed file takes its entries away, and the SOA serial follows the table.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

async fn a_of(client: &mut DnsClient, name: &str) -> (ResponseCode, Vec<String>) {
    let m = ask(client, name, RecordType::A).await;
    (m.metadata.response_code, addresses(&m))
}

/// Waits until `name` answers `want` (rcode and addresses), as the poller picks up a change.
async fn until(client: &DnsClient, name: &'static str, want: (ResponseCode, &[&str])) -> bool {
    let want = (want.0, want.1.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    eventually(Duration::from_secs(5), || {
        let (mut c, want) = (client.clone(), want.clone());
        async move { a_of(&mut c, name).await == want }
    })
    .await
}

#[tokio::test]
async fn changes_apply_without_restart_and_bad_files_lose_nothing() {
    let one = se(
        "bar",
        "httpbin",
        "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
    );
    let server = Server::start(&[
        ("one.yaml", &one),
        (
            ".hidden.yaml",
            &se("x", "h", "{hosts: [hidden.global], addresses: [1.1.1.1]}"),
        ),
        ("notes.txt", "not entries"),
    ])
    .await;
    let mut client = udp_client(server.addr).await;
    assert_eq!(
        a_of(&mut client, "httpbin.bar.global.").await,
        (ResponseCode::NoError, vec!["240.0.0.2".into()])
    );
    assert_eq!(
        a_of(&mut client, "hidden.global.").await.0,
        ResponseCode::NXDomain,
        "dotfiles are not read"
    );
    let serial = server.serial();

    // Edit in place: a changed address and a new host.
    let edited = [
        one.replace("240.0.0.2", "240.0.0.9"),
        se("bar", "extra", "{hosts: [extra.bar.global], addresses: [240.0.0.8]}"),
    ]
    .concat();
    std::fs::write(server.path("one.yaml"), &edited).unwrap();
    let applied = until(&client, "extra.bar.global.", (ResponseCode::NoError, &["240.0.0.8"])).await;
    assert!(applied, "an edited file is served without restart");
    assert_eq!(a_of(&mut client, "httpbin.bar.global.").await.1, ["240.0.0.9"]);
    // Within the second after the change at most (a change in the serial's second waits).
    let moved = eventually(std::time::Duration::from_secs(3), || async { server.serial() > serial }).await;
    assert!(moved, "the SOA serial moves with the table");

    // A new file in the directory.
    std::fs::write(
        server.path("two.yml"),
        se("baz", "two", "{hosts: [two.baz.global], addresses: [240.0.0.7]}"),
    )
    .unwrap();
    assert!(until(&client, "two.baz.global.", (ResponseCode::NoError, &["240.0.0.7"])).await);

    // A file that stops parsing keeps its last good entries.
    std::fs::write(server.path("one.yaml"), "spec: [unclosed\n").unwrap();
    std::fs::write(
        server.path("two.yml"),
        se("baz", "two", "{hosts: [two.baz.global], addresses: [240.0.0.6]}"),
    )
    .unwrap();
    assert!(
        until(&client, "two.baz.global.", (ResponseCode::NoError, &["240.0.0.6"])).await,
        "the other file still reloads"
    );
    assert_eq!(
        a_of(&mut client, "httpbin.bar.global.").await.1,
        ["240.0.0.9"],
        "last good entries kept"
    );
    assert_eq!(a_of(&mut client, "extra.bar.global.").await.1, ["240.0.0.8"]);

    // An invalid entry in a file that parses is skipped; the rest of that file loads.
    let mixed = [
        se("bar", "bad", "{hosts: [\"*\"], addresses: [1.1.1.1]}"),
        se("bar", "good", "{hosts: [good.bar.global], addresses: [240.0.0.5]}"),
    ]
    .concat();
    std::fs::write(server.path("one.yaml"), mixed).unwrap();
    assert!(until(&client, "good.bar.global.", (ResponseCode::NoError, &["240.0.0.5"])).await);
    assert_eq!(a_of(&mut client, "httpbin.bar.global.").await.0, ResponseCode::NXDomain);

    // A removed file takes its entries away.
    std::fs::remove_file(server.path("two.yml")).unwrap();
    assert!(until(&client, "two.baz.global.", (ResponseCode::NXDomain, &[])).await);
    server.stop().await;
}

/// Entries in the large file of the commit test. The 100 000 works too (a 3.5 s
/// commit, the slowest TCP answer 29 ms, in a debug build here), but reading that file takes
/// ~40 s in a debug build; 30 000 keep the test near 10 s with a commit of ~1 s.
const LARGE: usize = 30_000;

/// One TCP client asks an in-zone name over and over while a file of [`LARGE`] entries is
/// read and committed: the commit runs off the runtime that serves TCP, so no answer waits
/// for it. Each answer's latency stays under half the commit's own duration (the server's
/// `globaldns_table_publish_seconds` for that batch). The runtime has one worker, as a server
/// limited to one CPU has, so a commit on it would hold up every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn tcp_answers_do_not_wait_for_a_large_commit() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let server = Server::start(&[(
        "small.yaml",
        &se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
        ),
    )])
    .await;
    let admin = server.admin_addr();
    let publish_seconds = |text: &str| metric(text, "globaldns_table_publish_seconds_sum");
    let before = publish_seconds(&get(admin, "/metrics").await.1);

    let stop = Arc::new(AtomicBool::new(false));
    let asking = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut latencies = Vec::new();
            let mut reply = vec![0u8; 512];
            for id in 0u16.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let query = query_bytes(id, "httpbin.bar.global.", RecordType::A, false);
                let mut frame = (query.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(&query);
                let sent = std::time::Instant::now();
                tcp.write_all(&frame).unwrap();
                let mut len = [0u8; 2];
                tcp.read_exact(&mut len).unwrap();
                let len = u16::from_be_bytes(len) as usize;
                tcp.read_exact(&mut reply[..len]).unwrap();
                latencies.push(sent.elapsed());
                assert_eq!(&reply[..2], &id.to_be_bytes(), "the answer to this query");
                assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
                assert_eq!(&reply[6..8], &[0, 1], "one A record");
                std::thread::sleep(Duration::from_millis(2));
            }
            latencies
        })
    };

    // Written aside and renamed in, so that the poller reads it whole, once.
    let text: String = (0..LARGE)
        .map(|i| {
            se(
                &format!("ns-{}", i % 100),
                &format!("svc-{i}"),
                &format!(
                    "{{hosts: [svc-{i}.ns-{}.global], addresses: [10.{}.{}.{}]}}",
                    i % 100,
                    i >> 16,
                    (i >> 8) & 0xff,
                    i & 0xff
                ),
            )
        })
        .collect();
    std::fs::write(server.path("large.tmp"), text).unwrap();
    let written = std::time::Instant::now();
    std::fs::rename(server.path("large.tmp"), server.path("large.yaml")).unwrap();
    let last = format!("svc-{}.ns-{}.global.", LARGE - 1, (LARGE - 1) % 100);
    let mut client = udp_client(server.addr).await;
    let served = eventually(Duration::from_secs(120), || {
        let (mut client, last) = (client.clone(), last.clone());
        async move { a_of(&mut client, &last).await.0 == ResponseCode::NoError }
    })
    .await;
    assert!(served, "the large file is served");
    let loaded = written.elapsed();
    // A few more answers after the commit, then the client stops.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let latencies = asking.join().unwrap();
    let commit = Duration::from_secs_f64(publish_seconds(&get(admin, "/metrics").await.1) - before);
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{LARGE} entries: served {loaded:?} after the write, commit {commit:?}; {} TCP answers meanwhile, slowest {slowest:?}",
        latencies.len()
    );
    assert!(
        commit >= Duration::from_millis(100),
        "a commit long enough to measure: {commit:?}"
    );
    assert!(latencies.len() >= 10, "answers kept coming: {}", latencies.len());
    assert!(
        slowest < commit / 2,
        "every TCP answer well under the commit's {commit:?}: the slowest took {slowest:?}"
    );
    assert_eq!(a_of(&mut client, "httpbin.bar.global.").await.1, ["240.0.0.2"]);
    server.stop().await;
}
