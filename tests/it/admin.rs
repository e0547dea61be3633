//! The admin endpoint over HTTP: health, readiness, metrics that move with queries, the
//! JSON of /debug; and graceful shutdown draining in-flight queries.

use std::time::Duration;

use globaldns::app::{self, Sources};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::config::{clusters, loopback};
use crate::kubeapi::KubeApi;
use crate::support::*;
use crate::upstream::{Behaviour, Upstream};

#[tokio::test]
async fn endpoints_answer_and_metrics_move_with_queries() {
    let entries = [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
        ),
        se("bar", "bad", "{hosts: [\"*\"], addresses: [1.1.1.1]}"),
        se("bar", "nohosts", "{addresses: [1.1.1.2]}"),
    ]
    .concat();
    let server = Server::start(&[("se.yaml", &entries)]).await;
    let admin = server.admin_addr();
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert_eq!(get(admin, "/nope").await.0, 404);

    let series = "globaldns_dns_requests_total{protocol=\"udp\",type=\"A\"}";
    let nx = "globaldns_dns_responses_total{rcode=\"NXDOMAIN\",path=\"authoritative\"}";
    let tcp = "globaldns_dns_requests_total{protocol=\"tcp\",type=\"AAAA\"}";
    let noerror = "globaldns_dns_responses_total{rcode=\"NOERROR\",path=\"authoritative\"}";
    let answered = "globaldns_dns_answer_duration_seconds_count{path=\"authoritative\"}";
    let (_, before) = get(admin, "/metrics").await;
    let mut client = udp_client(server.addr).await;
    for _ in 0..5 {
        ask(&mut client, "httpbin.bar.global.", RecordType::A).await;
    }
    ask(&mut client, "nope.global.", RecordType::A).await;
    let mut client = tcp_client(server.addr).await;
    for _ in 0..2 {
        ask(&mut client, "httpbin.bar.global.", RecordType::AAAA).await;
    }
    let (status, after) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    // Each server counts in metrics of its own: exactly our queries, whatever other tests do.
    let grew = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(grew(series), 6.0, "{series}");
    assert_eq!(grew(nx), 1.0, "{nx}");
    assert_eq!(grew(tcp), 2.0, "{tcp}");
    assert_eq!(grew(noerror), 7.0, "{noerror}");
    assert_eq!(grew(answered), 8.0, "{answered}");
    assert!(
        after.contains("globaldns_dns_answer_duration_seconds_bucket{"),
        "histogram"
    );
    // By the kind of fault: a missing spec.hosts is a missing field, not a bad host.
    let rejected = |reason: &str| {
        metric(
            &after,
            &format!("globaldns_entries_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        (rejected("host"), rejected("missing_field")),
        (1.0, 1.0),
        "rejected entries by reason: {after}"
    );
    assert!(
        after.contains("globaldns_source_synced{cluster=\"files\"} 1"),
        "{after}"
    );
    assert!(after.contains("globaldns_table_hosts "));
    assert!(after.ends_with("# EOF\n"));

    let (status, body) = get(admin, "/debug/records").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let host = &json["hosts"][0];
    assert_eq!(host["name"], "httpbin.bar.global");
    assert_eq!(host["a"], serde_json::json!(["240.0.0.2"]));
    assert_eq!(host["source"], "files");
    assert_eq!(host["origins"][0]["entry"], "bar/httpbin");
    assert_eq!(host["origins"][0]["rule"], "spec-addresses");
    assert_eq!(json["zones"][0]["name"], "global");

    let (status, body) = get(admin, "/debug/sources").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["sources"][0]["name"], "files");
    assert_eq!(json["sources"][0]["synced"], true);
    assert_eq!(json["sources"][0]["entries"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_local_cluster() {
    let local = KubeApi::start(&["v1"]).await;
    local.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let running = app::start(loopback(Sources {
        sync_timeout: Duration::from_millis(300),
        ..clusters(dir.path(), &[(&local, "east")])
    }))
    .await
    .unwrap();
    let admin = running.admin_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = get(admin, "/readyz").await;
    assert_eq!(code, 503, "the local cluster never stops holding readiness");
    // The source waited for, and why: its last error.
    assert!(
        body.starts_with("waiting for east (") && body.ends_with(")\n"),
        "{body}"
    );
    let (_, metrics) = get(admin, "/metrics").await;
    assert!(
        metrics.contains("globaldns_source_synced{cluster=\"east\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("\nglobaldns_ready 0\n"), "{metrics}");
    local.set_down(false);
    assert!(
        eventually(Duration::from_secs(15), || async {
            get(admin, "/readyz").await.0 == 200
        })
        .await
    );
    let (_, metrics) = get(admin, "/metrics").await;
    assert!(metrics.contains("\nglobaldns_ready 1\n"), "{metrics}");
    running.shutdown_token().cancel();
    running.wait().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_queries() {
    let up = Upstream::start(Behaviour::Slow(Duration::from_millis(200))).await;
    let server = Server::start_forwarding(
        &[("se.yaml", &se("a", "b", "{hosts: [a.global], addresses: [1.1.1.1]}"))],
        Some(forwarding(&[up.addr])),
    )
    .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query_bytes(77, "slow.example.com.", RecordType::A, false), server.addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // the forward is in flight
    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("answered before exit")
        .unwrap();
    assert_eq!(&buf[..2], &77u16.to_be_bytes());
    assert_eq!(buf[3] & 0x0f, 0, "the upstream's answer, not an error");
    assert!(n > 12);
    stopping.await.unwrap();
    // Stopped: nothing listens any more.
    sock.send_to(&query_bytes(78, "a.global.", RecordType::A, false), addr)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
            .await
            .is_err()
    );
}
