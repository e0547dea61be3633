//! Zone transfers to real secondaries: Knot DNS and NSD (Debian), configured with the files
//! of `deploy/secondaries/` that the README shows (only their placeholders filled in), on
//! loopback ports. Each transfers the zone and answers every test name as globaldns does;
//! after an entry file changes, NOTIFY makes each serve the change within seconds (the SOA
//! refresh is an hour) at our serial, by IXFR. Access and readiness come before anything.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use globaldns::app::{self, Running, ServeConfig, Sources};
use globaldns::dns::transfer::TransferSettings;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{entry_files, loopback};
use crate::peers::{Daemon, free_ports, spawn};
use crate::support::*;

pub(crate) fn entries(extra: &str) -> String {
    [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
        ),
        se(
            "default",
            "dual",
            "{hosts: [dual.default.global], addresses: [240.0.0.3, \"2001:db8::3\"]}",
        ),
        se("shop", "wild", "{hosts: [\"*.shop.global\"], addresses: [240.0.0.10]}"),
        se(
            "shop",
            "exact",
            "{hosts: [exact.shop.global, svc.sub.shop.global], addresses: [240.0.0.11]}",
        ),
        se("deep", "deep", "{hosts: [svc.a.b.c.global], addresses: [240.0.0.4]}"),
        extra.to_string(),
    ]
    .concat()
}

/// Names asked of both, with the types asked.
const NAMES: &[&str] = &[
    "global",
    "httpbin.bar.global",
    "dual.default.global",
    "bar.global",
    "default.global",
    "x.shop.global",
    "y.z.shop.global",
    "exact.shop.global",
    "svc.sub.shop.global",
    "shop.global",
    "svc.a.b.c.global",
    "a.b.c.global",
    "c.global",
    "nope.global",
    "new.bar.global",
];

/// Where RFC 4592 wildcards differ from ours, left out: a wildcard covers the empty
/// non-terminal `sub.shop.global` for us (NODATA for a secondary) and names below it
/// (NXDOMAIN for a secondary: their closest encloser has no wildcard).
const RFC_4592_DIFFERS: &[&str] = &["sub.shop.global", "x.sub.shop.global"];

/// `status` and the sorted answer lines of `name TYPE` at 127.0.0.1:`port`.
fn answer(port: u16, name: &str, qtype: &str) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+norec", "+tries=1", "+time=2"])
        .args(["+noall", "+answer", "+comments", name, qtype])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    format!("{status} {lines:?}")
}

fn soa_serial(port: u16) -> Option<u32> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+norec",
            "+short",
            "+tries=1",
            "+time=1",
        ])
        .args(["global", "SOA"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// The config file `name` of deploy/secondaries with its placeholders filled in.
fn secondary_conf(name: &str, primary: SocketAddr, port: u16, dir: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/secondaries")
            .join(name),
    )
    .unwrap();
    text.replace("PRIMARY_IP", &primary.ip().to_string())
        .replace("PRIMARY_PORT", &primary.port().to_string())
        .replace("LISTEN_PORT", &port.to_string())
        .replace("DIR", &dir.display().to_string())
}

pub(crate) async fn start(
    entries_dir: &Path,
    allow: &str,
    notify: Vec<SocketAddr>,
    sources: Option<Sources>,
) -> Running {
    let sources = sources.unwrap_or_else(|| entry_files(entries_dir));
    app::start(ServeConfig {
        transfer: TransferSettings {
            allow: vec![allow.parse().unwrap()],
            notify,
        },
        ..loopback(sources)
    })
    .await
    .expect("server starts")
}

fn our_serial(running: &Running) -> u32 {
    running.table().versions()[0].serial
}

/// Waits until every secondary's serial is ours.
async fn until_in_step(running: &Running, secondaries: &mut [(&mut Daemon, u16)]) {
    for (daemon, port) in secondaries.iter_mut() {
        let want = our_serial(running);
        let port = *port;
        let ok = eventually(Duration::from_secs(15), || async move {
            tokio::task::spawn_blocking(move || soa_serial(port)).await.unwrap() == Some(want)
        })
        .await;
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "{} exited; see its log",
            daemon.1
        );
        assert!(ok, "{} serves serial {:?}, not ours {want}", daemon.1, soa_serial(port));
    }
}

fn compare(ours: u16, secondaries: &[(&str, u16)]) {
    for name in NAMES.iter().filter(|n| !RFC_4592_DIFFERS.contains(n)) {
        for qtype in ["A", "AAAA", "SOA", "NS"] {
            let want = answer(ours, name, qtype);
            for (who, port) in secondaries {
                assert_eq!(answer(*port, name, qtype), want, "{who}: {name} {qtype}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_and_nsd_transfer_the_zone_and_follow_every_change_by_notify() {
    for tool in ["knotd", "nsd", "dig"] {
        require(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let (knot_dir, nsd_dir, entries_dir) = (dir.path().join("knot"), dir.path().join("nsd"), dir.path().join("se"));
    for d in [&knot_dir, &nsd_dir, &entries_dir] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(entries_dir.join("se.yaml"), entries("")).unwrap();
    let [knot_port, nsd_port] = free_ports::<2>();
    let notify = vec![([127, 0, 0, 1], knot_port).into(), ([127, 0, 0, 1], nsd_port).into()];
    let running = start(&entries_dir, "127.0.0.0/8", notify, None).await;
    let primary = running.dns_addr();

    let knot_conf = knot_dir.join("knot.conf");
    std::fs::write(&knot_conf, secondary_conf("knot.conf", primary, knot_port, &knot_dir)).unwrap();
    let mut knot = spawn(
        "knotd",
        Command::new("knotd").arg("-c").arg(&knot_conf),
        &dir.path().join("knot.log"),
    );
    let nsd_conf = nsd_dir.join("nsd.conf");
    std::fs::write(&nsd_conf, secondary_conf("nsd.conf", primary, nsd_port, &nsd_dir)).unwrap();
    let mut nsd = spawn(
        "nsd",
        Command::new("nsd").args(["-d", "-c"]).arg(&nsd_conf),
        &dir.path().join("nsd.log"),
    );

    until_in_step(&running, &mut [(&mut knot, knot_port), (&mut nsd, nsd_port)]).await;
    let secondaries = [("knot", knot_port), ("nsd", nsd_port)];
    tokio::task::spawn_blocking(move || compare(primary.port(), &secondaries))
        .await
        .unwrap();

    // Changes: a new name, changed addresses, a name gone; each served within seconds.
    let steps = [
        se("bar", "new", "{hosts: [new.bar.global], addresses: [240.0.0.20]}"),
        se(
            "bar",
            "new",
            "{hosts: [new.bar.global], addresses: [240.0.0.21, \"2001:db8::21\"]}",
        ),
        String::new(),
    ];
    for extra in steps {
        let before = our_serial(&running);
        std::fs::write(entries_dir.join("se.yaml"), entries(&extra)).unwrap();
        let changed = eventually(Duration::from_secs(5), || async { our_serial(&running) != before }).await;
        assert!(changed, "the serial moves with the zone");
        until_in_step(&running, &mut [(&mut knot, knot_port), (&mut nsd, nsd_port)]).await;
        tokio::task::spawn_blocking(move || compare(primary.port(), &secondaries))
            .await
            .unwrap();
    }
    let (_, metrics) = get(running.admin_addr().unwrap(), "/metrics").await;
    let incremental = metric(
        &metrics,
        "globaldns_transfers_total{type=\"IXFR\",result=\"incremental\"}",
    );
    assert!(incremental >= 2.0, "the secondaries followed by IXFR:\n{metrics}");
    assert!(
        metric(&metrics, "globaldns_notifies_total{result=\"acknowledged\"}") >= 6.0,
        "{metrics}"
    );
    running.shutdown_token().cancel();
    running.wait().await;
}

/// One request over TCP; every message of the answer until the closing SOA (or one message
/// when it is not a transfer).
pub(crate) async fn transfer(addr: SocketAddr, qtype: RecordType, edns: bool) -> Vec<Message> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = query_bytes(9, "global.", qtype, edns);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    let mut messages = Vec::new();
    let mut soas = 0;
    loop {
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0; len as usize];
        s.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        soas += m.answers.iter().filter(|r| r.record_type() == RecordType::SOA).count();
        let done = m.metadata.response_code != ResponseCode::NoError || soas >= 2;
        messages.push(m);
        if done {
            return messages;
        }
    }
}

#[tokio::test]
async fn a_client_outside_transfer_to_is_refused_and_udp_is_never_a_transfer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("se.yaml"), entries("")).unwrap();
    let running = start(dir.path(), "127.0.0.2/32", Vec::new(), None).await;
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let m = transfer(running.dns_addr(), qtype, true).await;
        assert_eq!(m[0].metadata.response_code, ResponseCode::Refused, "{qtype}");
        let ede = m[0]
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Unknown(15)).cloned());
        assert_eq!(
            ede,
            Some(EdnsOption::Unknown(15, vec![0, 18])),
            "{qtype}: EDE 18 Prohibited"
        );
        let mut client = udp_client(running.dns_addr()).await;
        let m = ask(&mut client, "global.", qtype).await;
        // An IXFR over UDP is refused as over TCP (RFC 1995 §2); an AXFR never a transfer.
        let over_udp = if qtype == RecordType::IXFR {
            ResponseCode::Refused
        } else {
            ResponseCode::NotImp
        };
        assert_eq!(m.metadata.response_code, over_udp, "{qtype} over UDP");
    }
    let allowed = start(dir.path(), "127.0.0.1/32", Vec::new(), None).await;
    let m = transfer(allowed.dns_addr(), RecordType::AXFR, false).await;
    let records: usize = m.iter().map(|m| m.answers.len()).sum();
    assert!(records > 5, "the zone: {records} records");
    for r in [running, allowed] {
        r.shutdown_token().cancel();
        r.wait().await;
    }
}

#[tokio::test]
async fn before_the_first_sync_nothing_is_transferred_or_notified() {
    let dir = tempfile::tempdir().unwrap();
    // The local cluster's API server is a port nobody listens on: it never syncs.
    let dead = free_ports::<1>()[0];
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster: {{server: \"http://127.0.0.1:{dead}\"}}\n\
             users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: dead\n  context: {{cluster: dead, user: u}}\ncurrent-context: dead\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("se.yaml"), entries("")).unwrap();
    let secondary = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sources = Sources {
        entries: vec![dir.path().to_owned()],
        kubeconfig: Some(kubeconfig),
        contexts: vec!["dead".into()],
        sync_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let running = start(
        dir.path(),
        "127.0.0.0/8",
        vec![secondary.local_addr().unwrap()],
        Some(sources),
    )
    .await;
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let m = transfer(running.dns_addr(), qtype, false).await;
        assert_eq!(m[0].metadata.response_code, ResponseCode::ServFail, "{qtype}");
        assert!(m[0].answers.is_empty());
    }
    let mut buf = [0u8; 512];
    let notified = tokio::time::timeout(Duration::from_secs(2), secondary.recv_from(&mut buf)).await;
    assert!(notified.is_err(), "no NOTIFY before the first sync");
    running.shutdown_token().cancel();
    running.wait().await;
}

#[test]
fn the_readme_shows_the_secondary_configs_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // Knot's configuration is YAML, NSD's is not.
    for (name, fence) in [("knot.conf", "yaml"), ("nsd.conf", "text")] {
        let conf = std::fs::read_to_string(root.join("deploy/secondaries").join(name)).unwrap();
        assert!(
            readme.contains(&format!("```{fence}\n{conf}```")),
            "README shows {name} verbatim"
        );
    }
}
