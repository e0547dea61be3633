//! More than A and AAAA over real sockets, as `dig` and `kdig` show it: SRV with the target's
//! addresses in the additional section, PTR (`dig -x`, IPv4 and IPv6), the negative TTL,
//! Extended DNS Errors in each case (Not Ready, Stale Answer, No Reachable Authority, Network
//! Error, Prohibited) and `globaldns explain` against a running server.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use globaldns::app::{self, Running, ServeConfig};
use globaldns::dns::server::Limits;
use globaldns::table::TableSettings;
use hickory_proto::op::Message;
use serde_json::json;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{clusters, loopback};
use crate::kubeapi::KubeApi;
use crate::support::*;
use crate::upstream::{Behaviour, Upstream};

const ZONES: [&str; 3] = ["global", "240.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"];

fn entries() -> String {
    [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2, \"2001:db8::2\"], ports: [{name: http, number: 8000, protocol: HTTP}, {name: dns, number: 53, protocol: UDP}]}",
        ),
        se("bar", "also", "{hosts: [also.bar.global], addresses: [240.0.0.2]}"),
    ]
    .concat()
}

fn settings() -> TableSettings {
    TableSettings::new(&ZONES).unwrap()
}

/// The records of dig's output (`+noall` and the sections asked), whitespace normalised.
fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn srv_ptr_and_the_negative_ttl_as_dig_shows_them() {
    require("dig");
    let server = Server::start_table(&[("se.yaml", &entries())], settings(), None, Limits::default()).await;
    let srv = dig_at(
        server.addr,
        &[
            "+noall",
            "+answer",
            "+additional",
            "_http._tcp.httpbin.bar.global",
            "SRV",
        ],
    )
    .await;
    assert_eq!(
        lines(&srv),
        [
            "_http._tcp.httpbin.bar.global. 30 IN SRV 0 100 8000 httpbin.bar.global.",
            "httpbin.bar.global. 30 IN A 240.0.0.2",
            "httpbin.bar.global. 30 IN AAAA 2001:db8::2",
        ],
        "{srv}"
    );
    let udp = dig_at(server.addr, &["+short", "_dns._udp.httpbin.bar.global", "SRV"]).await;
    assert_eq!(udp.trim(), "0 100 53 httpbin.bar.global.");
    // dig -x: IPv4 (two hosts share the address) and IPv6.
    let v4 = dig_at(server.addr, &["+short", "-x", "240.0.0.2"]).await;
    assert_eq!(lines(&v4), ["also.bar.global.", "httpbin.bar.global."]);
    let v6 = dig_at(server.addr, &["+short", "-x", "2001:db8::2"]).await;
    assert_eq!(lines(&v6), ["httpbin.bar.global."]);
    let flags = dig_at(server.addr, &["-x", "240.0.0.2"]).await;
    assert!(
        flags.contains("flags: qr aa rd;") && flags.contains("status: NOERROR"),
        "{flags}"
    );
    // Negative answers, in the forward and the reverse zone: SOA TTL min(30, 5), MINIMUM 5.
    for (name, qtype, owner) in [
        ("nope.global", "A", "global."),
        ("_tcp.httpbin.bar.global", "SRV", "global."),
        ("9.0.0.240.in-addr.arpa", "PTR", "240.in-addr.arpa."),
    ] {
        let text = dig_at(server.addr, &["+noall", "+authority", name, qtype]).await;
        let soa = lines(&text);
        assert_eq!(soa.len(), 1, "{name}: {text}");
        let fields: Vec<&str> = soa[0].split(' ').collect();
        assert_eq!((fields[0], fields[1], fields[3]), (owner, "5", "SOA"), "{name}: {text}");
        assert_eq!(fields.last(), Some(&"5"), "{name}: MINIMUM");
    }
    // Reverse names outside the reverse zones are not ours (no forwarding here: REFUSED).
    let other = dig_at(server.addr, &["-x", "10.0.0.1"]).await;
    assert!(other.contains("status: REFUSED"), "{other}");
    server.stop().await;
}

/// A server whose only source is the cluster of `api` (its local cluster), over these zones,
/// forwarding to `upstream` when given.
async fn serve_cluster(api: &KubeApi, upstream: Option<SocketAddr>) -> (Running, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        table: settings(),
        forward: upstream.map(|u| forwarding(&[u])),
        ..loopback(clusters(dir.path(), &[(api, "local")]))
    };
    (app::start(config).await.expect("starts"), dir)
}

/// kdig's EDE line (`;; EDE: 3 (Stale Answer)`), if any.
fn ede_line(text: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(";; EDE:")).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_errors_as_kdig_prints_them() {
    require("kdig");
    let api = KubeApi::start(&["v1"]).await;
    let spec =
        json!({"hosts": ["httpbin.bar.global"], "addresses": ["240.0.0.2"], "ports": [{"name": "http", "number": 80}]});
    api.apply_se("bar", "httpbin", spec, None);
    api.set_down(true);
    let silent = Upstream::start(Behaviour::Silent).await;
    let (running, _dir) = serve_cluster(&api, Some(silent.addr)).await;
    let addr = running.dns_addr();

    // Before the local cluster syncs: SERVFAIL, Not Ready.
    let text = kdig_at(addr, &["+edns", "httpbin.bar.global", "A"]).await;
    assert!(text.contains("status: SERVFAIL"), "{text}");
    assert_eq!(ede_line(&text).as_deref(), Some(";; EDE: 14 (Not Ready)"), "{text}");
    let plain = kdig_at(addr, &["httpbin.bar.global", "A"]).await;
    assert!(
        plain.contains("status: SERVFAIL") && ede_line(&plain).is_none(),
        "without EDNS: none\n{plain}"
    );

    // Synced, then the cluster goes away: its last known entries are served, flagged stale.
    api.set_down(false);
    let synced = eventually(Duration::from_secs(15), || async {
        kdig_at(addr, &["+edns", "+short", "httpbin.bar.global", "A"])
            .await
            .trim()
            == "240.0.0.2"
    })
    .await;
    assert!(synced);
    let fresh = kdig_at(addr, &["+edns", "httpbin.bar.global", "A"]).await;
    assert!(ede_line(&fresh).is_none(), "{fresh}");
    let serial: Vec<u32> = running.table().versions().iter().map(|v| v.serial).collect();
    api.set_down(true);
    assert!(
        eventually(Duration::from_secs(10), || async { running.table().any_stale() }).await,
        "stale in the published table"
    );
    let now: Vec<u32> = running.table().versions().iter().map(|v| v.serial).collect();
    assert_eq!(now, serial, "staleness changes no serial");
    for (name, qtype, status) in [
        ("httpbin.bar.global", "A", "NOERROR"),
        ("_http._tcp.httpbin.bar.global", "SRV", "NOERROR"),
        ("nope.global", "A", "NXDOMAIN"),
    ] {
        let text = kdig_at(addr, &["+edns", name, qtype]).await;
        assert!(text.contains(&format!("status: {status}")), "{name}: {text}");
        assert_eq!(
            ede_line(&text).as_deref(),
            Some(";; EDE: 3 (Stale Answer)"),
            "{name}: {text}"
        );
    }
    let answer = kdig_at(addr, &["+edns", "+short", "-x", "240.0.0.2"]).await;
    assert_eq!(
        answer.trim(),
        "httpbin.bar.global.",
        "the stale answer is the last known one"
    );
    let plain = kdig_at(addr, &["httpbin.bar.global", "A"]).await;
    assert!(ede_line(&plain).is_none() && plain.contains("240.0.0.2"), "{plain}");

    // A refused transfer: kdig and dig print no message for it ("Transfer failed"), so read
    // the REFUSED reply over TCP with hickory.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = query_bytes(7, "global.", hickory_proto::rr::RecordType::AXFR, true);
    tcp.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .await
        .unwrap();
    let len = tcp.read_u16().await.unwrap() as usize;
    let mut reply = vec![0; len];
    tcp.read_exact(&mut reply).await.unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::Refused);
    let options = m.edns.as_ref().unwrap().options().as_ref().to_vec();
    assert_eq!(
        format!("{options:?}"),
        "[(Unknown(15), Unknown(15, [0, 18]))]",
        "EDE 18 Prohibited"
    );
    let metrics = get(running.admin_addr().unwrap(), "/metrics").await.1;
    let ede = |code: &str| {
        metric(
            &metrics,
            &format!("globaldns_dns_extended_errors_total{{code=\"{code}\"}}"),
        )
    };
    assert!(ede("14") >= 1.0, "every query before the sync");
    assert_eq!((ede("3"), ede("22")), (4.0, 0.0));
    // The refused transfer is answered by the transfer path, counted there.
    assert_eq!(
        metric(&metrics, "globaldns_transfers_total{type=\"AXFR\",result=\"refused\"}"),
        1.0,
        "{metrics}"
    );

    // Forwarding fails: every upstream times out (22), or refuses (23).
    let text = kdig_at(addr, &["+edns", "+retry=0", "+timeout=5", "example.com", "A"]).await;
    assert!(text.contains("status: SERVFAIL"), "{text}");
    assert_eq!(
        ede_line(&text).as_deref(),
        Some(";; EDE: 22 (No Reachable Authority)"),
        "{text}"
    );
    running.shutdown_token().cancel();
    running.wait().await;

    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed at once
    let (running, _dir) = serve_cluster(&api, Some(dead)).await;
    let text = kdig_at(
        running.dns_addr(),
        &["+edns", "+retry=0", "+timeout=5", "example.com", "A"],
    )
    .await;
    assert!(text.contains("status: SERVFAIL"), "{text}");
    assert_eq!(ede_line(&text).as_deref(), Some(";; EDE: 23 (Network Error)"), "{text}");
    let metrics = get(running.admin_addr().unwrap(), "/metrics").await.1;
    assert_eq!(
        metric(&metrics, "globaldns_dns_extended_errors_total{code=\"23\"}"),
        1.0
    );

    running.shutdown_token().cancel();
    running.wait().await;
}

fn globaldns() -> Command {
    Command::new(env!("CARGO_BIN_EXE_globaldns"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_against_a_running_server() {
    let server = Server::start_table(&[("se.yaml", &entries())], settings(), None, Limits::default()).await;
    let admin = server.admin_addr().to_string();
    let explain = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_globaldns"))
            .arg("explain")
            .args(args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
        (out.status.code(), text)
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, text) = explain(args(&["httpbin.bar.global", "--admin", &admin])).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("httpbin.bar.global. A: NOERROR (qr aa rd)\n  httpbin.bar.global. 30 IN A 240.0.0.2\n"),
        "{text}"
    );
    assert!(
        text.contains("rule: exact-host in zone global\n")
            && text.contains("  entry files bar/httpbin (spec-addresses)\n"),
        "{text}"
    );

    let (code, text) = explain(args(&[
        "_http._tcp.httpbin.bar.global",
        "--type",
        "srv",
        "--admin",
        &admin,
    ]))
    .await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("SRV 0 100 8000 httpbin.bar.global.") && text.contains("rule: srv"),
        "{text}"
    );
    assert!(
        text.contains("  additional: httpbin.bar.global. 30 IN AAAA 2001:db8::2"),
        "{text}"
    );

    let (code, text) = explain(args(&["2.0.0.240.in-addr.arpa", "--type", "PTR", "--admin", &admin])).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("rule: ptr in zone 240.in-addr.arpa"), "{text}");

    let (code, text) = explain(args(&["nope.global", "--admin", &admin])).await;
    assert_eq!(code, Some(0), "a name that does not exist is an answer too: {text}");
    assert!(text.contains("NXDOMAIN") && text.contains("rule: not-a-name"), "{text}");

    let (code, text) = explain(args(&["bad..name", "--admin", &admin])).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not a domain name"), "{text}");

    // GLOBALDNS_ADMIN as `serve` reads it; a wildcard address reaches this host.
    let port = server.admin_addr().port().to_string();
    let out = globaldns()
        .args(["explain", "bar.global"])
        .env("GLOBALDNS_ADMIN", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && text.contains("rule: empty-non-terminal"),
        "{text}"
    );

    // The endpoint itself: 200 with JSON for every well-formed name, 400 otherwise.
    let (status, body) = get(server.admin_addr(), "/debug/explain?name=also.bar.global&type=AAAA").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["rule"].as_str(), v["answer"]["rcode"].as_str()),
        (Some("exact-host"), Some("NOERROR"))
    );
    assert_eq!(get(server.admin_addr(), "/debug/explain?name=a..b").await.0, 400);
    assert_eq!(
        get(server.admin_addr(), "/debug/explain?name=a.global&type=NOPE")
            .await
            .0,
        400
    );
    assert_eq!(get(server.admin_addr(), "/debug/explain").await.0, 400);

    // Nobody there: exit 2, saying so.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, text) = explain(args(&["a.global", "--admin", &unused.to_string()])).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&unused.to_string()), "{text}");
    server.stop().await;
}

#[test]
fn check_and_records_show_srv_and_ptr() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("se.yaml"), entries()).unwrap();
    let out = globaldns()
        .args([
            "check",
            "--zone",
            "global",
            "--zone",
            "240.in-addr.arpa",
            "--negative-ttl",
            "7",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "_http._tcp.httpbin.bar.global.\t30\tIN\tSRV\t0 100 8000 httpbin.bar.global.\n",
        "_dns._udp.httpbin.bar.global.\t30\tIN\tSRV\t0 100 53 httpbin.bar.global.\n",
        "2.0.0.240.in-addr.arpa.\t30\tIN\tPTR\talso.bar.global.\n",
        "2.0.0.240.in-addr.arpa.\t30\tIN\tPTR\thttpbin.bar.global.\n",
        "240.in-addr.arpa.\t30\tIN\tSOA\tns.dns.240.in-addr.arpa. hostmaster.240.in-addr.arpa. 0 3600 600 86400 7\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let out = globaldns()
        .args([
            "records",
            "--format",
            "json",
            "--zone",
            "global",
            "--zone",
            "240.in-addr.arpa",
        ])
        .arg("--entries")
        .arg(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["negative_ttl"], 5);
    assert_eq!(
        v["srv"][0],
        json!({"name": "_dns._udp.httpbin.bar.global", "priority": 0, "weight": 100, "port": 53, "target": "httpbin.bar.global"})
    );
    assert_eq!(
        v["ptr"],
        json!([
            {"name": "2.0.0.240.in-addr.arpa", "target": "also.bar.global"},
            {"name": "2.0.0.240.in-addr.arpa", "target": "httpbin.bar.global"},
        ])
    );
    let httpbin = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "httpbin.bar.global")
        .unwrap();
    assert_eq!(
        httpbin["ports"][0],
        json!({"name": "dns", "number": 53, "protocol": "udp"})
    );
}
