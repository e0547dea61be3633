//! Zone transfers to real secondaries: Knot DNS and NSD (Debian), configured with the files
//! of `deploy/secondaries/` that the README shows (only their placeholders filled in, and
//! their zone stanza repeated for the reverse zone), on loopback ports. Each transfers the
//! forward zone (A, AAAA, SRV, wildcards) and the reverse zone (PTR) and answers every test
//! name as globaldns does; after an entry file changes, NOTIFY makes each serve the change
//! within seconds (the SOA refresh is an hour) at our serial, by IXFR, PTRs included. A burst
//! of changes never takes a serial past the clock. Access and readiness come before anything.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globaldns::app::{self, Running, ServeConfig, Sources};
use globaldns::dns::transfer::TransferSettings;
use globaldns::table::TableSettings;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{entry_files, loopback};
use crate::support::*;

/// The zones served and transferred: the forward zone and the reverse zone of its addresses.
const ZONES: [&str; 2] = ["global", "240.in-addr.arpa"];

pub(crate) fn entries(extra: &str) -> String {
    [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2], ports: [{name: http, number: 80, protocol: HTTP}, {name: grpc, number: 9000, protocol: GRPC}]}",
        ),
        se(
            "default",
            "dual",
            "{hosts: [dual.default.global], addresses: [240.0.0.3, \"2001:db8::3\"], ports: [{name: dns, number: 53, protocol: UDP}]}",
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

/// Names asked of both (the types asked: [`types_of`]).
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
    "_http._tcp.httpbin.bar.global",
    "_grpc._tcp.httpbin.bar.global",
    "_tcp.httpbin.bar.global",
    "_dns._udp.dual.default.global",
    "_http._tcp.new.bar.global",
    "240.in-addr.arpa",
    "0.0.240.in-addr.arpa",
    "2.0.0.240.in-addr.arpa",
    "3.0.0.240.in-addr.arpa",
    "11.0.0.240.in-addr.arpa",
    "20.0.0.240.in-addr.arpa",
    "21.0.0.240.in-addr.arpa",
    "9.9.9.240.in-addr.arpa",
];

/// The types asked for `name`: PTR in the reverse zone, SRV for SRV owners, addresses else;
/// SOA and NS everywhere but under `_`.
fn types_of(name: &str) -> &'static [&'static str] {
    if name.ends_with(".arpa") {
        &["PTR", "SOA", "NS"]
    } else if name.starts_with('_') {
        &["SRV", "A"]
    } else {
        &["A", "AAAA", "SOA", "NS"]
    }
}

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

fn soa_serial(port: u16, zone: &str) -> Option<u32> {
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
        .args([zone, "SOA"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// The config file `name` of deploy/secondaries with its placeholders filled in, and its zone
/// stanza (the last section) repeated for the reverse zone, as the README says to.
fn secondary_conf(name: &str, primary: SocketAddr, port: u16, dir: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/secondaries")
            .join(name),
    )
    .unwrap();
    let text = text
        .replace("PRIMARY_IP", &primary.ip().to_string())
        .replace("PRIMARY_PORT", &primary.port().to_string())
        .replace("LISTEN_PORT", &port.to_string())
        .replace("DIR", &dir.display().to_string());
    let at = text.rfind("zone:\n").expect("a zone section");
    let reverse = ZONES[1];
    match name {
        // Knot: one `zone:` list; the reverse zone is one more item of it.
        "knot.conf" => {
            let item = &text[at + "zone:\n".len()..];
            format!(
                "{text}{}",
                item.replace("domain: global", &format!("domain: {reverse}"))
            )
        }
        // NSD: a `zone:` section per zone.
        _ => {
            let section = text[at..]
                .replace("name: global", &format!("name: {reverse}"))
                .replace("global.zone", &format!("{reverse}.zone"));
            format!("{text}\n{section}")
        }
    }
}

pub(crate) async fn start(
    entries_dir: &Path,
    allow: &str,
    notify: Vec<SocketAddr>,
    sources: Option<Sources>,
) -> Running {
    let sources = sources.unwrap_or_else(|| entry_files(entries_dir));
    let running = app::start(ServeConfig {
        table: TableSettings::new(&ZONES).unwrap(),
        transfer: TransferSettings {
            allow: vec![allow.parse().unwrap()],
            notify,
        },
        ..loopback(sources)
    })
    .await
    .expect("server starts");
    // Records that came in the start-up second wait up to a second for their serial, and the
    // zone is not transferred until then (Not Ready): begin with every serial sealed.
    let sealed = eventually(Duration::from_secs(3), || async {
        !running.table().versions().iter().any(|v| v.is_pending())
    })
    .await;
    assert!(sealed, "the start-up serials sealed within a second or so");
    running
}

/// Our serial of zone `zone` (an index of [`ZONES`]).
fn our_serial(running: &Running, zone: usize) -> u32 {
    let table = running.table();
    let serial = table.serials().find(|(name, _)| *name == ZONES[zone]).map(|(_, s)| s);
    serial.expect("a served zone")
}

/// Waits until every change has its serial (at most a second), then until every secondary's
/// serial of every zone is ours.
async fn until_in_step(running: &Running, secondaries: &mut [(&mut Daemon, u16)]) {
    let sealed = eventually(Duration::from_secs(3), || async {
        !running.table().versions().iter().any(|v| v.is_pending())
    })
    .await;
    assert!(sealed, "every change sealed within a second or so");
    for (daemon, port) in secondaries.iter_mut() {
        let port = *port;
        for (z, zone) in ZONES.iter().enumerate() {
            // Ours may move on meanwhile (a change waiting a second for its serial).
            let ok = eventually(Duration::from_secs(15), || async move {
                let want = our_serial(running, z);
                tokio::task::spawn_blocking(move || soa_serial(port, zone))
                    .await
                    .unwrap()
                    == Some(want)
            })
            .await;
            let want = our_serial(running, z);
            assert!(
                daemon.0.try_wait().unwrap().is_none(),
                "{} exited; see its log",
                daemon.1
            );
            assert!(
                ok,
                "{} serves {zone} at serial {:?}, not ours {want}",
                daemon.1,
                soa_serial(port, zone)
            );
        }
    }
}

fn compare(ours: u16, secondaries: &[(&str, u16)]) {
    for name in NAMES.iter().filter(|n| !RFC_4592_DIFFERS.contains(n)) {
        for qtype in types_of(name) {
            let want = answer(ours, name, qtype);
            for (who, port) in secondaries {
                assert_eq!(answer(*port, name, qtype), want, "{who}: {name} {qtype}");
            }
        }
    }
}

/// Compares in a blocking thread (dig).
async fn compare_all(ours: u16, secondaries: [(&'static str, u16); 2]) {
    tokio::task::spawn_blocking(move || compare(ours, &secondaries))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_and_nsd_transfer_the_zones_and_follow_every_change_by_notify() {
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

    let (mut knot, _) = knot::start(&knot_dir, &secondary_conf("knot.conf", primary, knot_port, &knot_dir));
    let nsd_conf = nsd_dir.join("nsd.conf");
    std::fs::write(&nsd_conf, secondary_conf("nsd.conf", primary, nsd_port, &nsd_dir)).unwrap();
    let mut nsd = spawn(
        "nsd",
        Command::new("nsd").args(["-d", "-c"]).arg(&nsd_conf),
        &dir.path().join("nsd.log"),
    );

    until_in_step(&running, &mut [(&mut knot, knot_port), (&mut nsd, nsd_port)]).await;
    let secondaries = [("knot", knot_port), ("nsd", nsd_port)];
    compare_all(primary.port(), secondaries).await;

    // Changes, each touching both zones: a new name (with SRV, and a PTR), its address moved
    // (the old PTR goes, a new one comes), then onto an address another host has (a PTR
    // RRset of two), then the name gone; each served within seconds, PTRs included.
    let new = |addresses: &str| {
        se(
            "bar",
            "new",
            &format!(
                "{{hosts: [new.bar.global], addresses: [{addresses}], ports: [{{name: http, number: 80, protocol: HTTP}}]}}"
            ),
        )
    };
    let steps = [
        new("240.0.0.20"),
        new("240.0.0.21, \"2001:db8::21\""),
        new("240.0.0.2"),
        String::new(),
    ];
    for extra in steps {
        let before = [our_serial(&running, 0), our_serial(&running, 1)];
        std::fs::write(entries_dir.join("se.yaml"), entries(&extra)).unwrap();
        let changed = eventually(Duration::from_secs(5), || async {
            our_serial(&running, 0) != before[0] && our_serial(&running, 1) != before[1]
        })
        .await;
        assert!(changed, "both zones' serials move with their records");
        until_in_step(&running, &mut [(&mut knot, knot_port), (&mut nsd, nsd_port)]).await;
        compare_all(primary.port(), secondaries).await;
    }
    let ptr = answer(knot_port, "2.0.0.240.in-addr.arpa", "PTR");
    assert!(ptr.contains("httpbin.bar.global.") && !ptr.contains("new.bar"), "{ptr}");
    let (_, metrics) = get(running.admin_addr().unwrap(), "/metrics").await;
    let incremental = metric(
        &metrics,
        "globaldns_transfers_total{type=\"IXFR\",result=\"incremental\"}",
    );
    assert!(
        incremental >= 8.0,
        "the secondaries followed both zones by IXFR:\n{metrics}"
    );
    assert!(
        metric(&metrics, "globaldns_notifies_total{result=\"acknowledged\"}") >= 12.0,
        "{metrics}"
    );
    running.shutdown_token().cancel();
    running.wait().await;
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// A burst of entry-file changes, several a second: no serial is ever past the clock (so a
/// restart, which starts at the clock, never goes back), the burst's changes are served at
/// once, and the secondary converges on our last serial and records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_keeps_serials_behind_the_clock_and_the_secondary_converges() {
    for tool in ["knotd", "dig"] {
        require(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let (knot_dir, entries_dir) = (dir.path().join("knot"), dir.path().join("se"));
    for d in [&knot_dir, &entries_dir] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(entries_dir.join("se.yaml"), entries("")).unwrap();
    let [knot_port] = free_ports::<1>();
    let running = start(
        &entries_dir,
        "127.0.0.0/8",
        vec![([127, 0, 0, 1], knot_port).into()],
        None,
    )
    .await;
    let primary = running.dns_addr();
    let (mut knot, _) = knot::start(&knot_dir, &secondary_conf("knot.conf", primary, knot_port, &knot_dir));
    until_in_step(&running, &mut [(&mut knot, knot_port)]).await;

    let mut serials = std::collections::BTreeSet::new();
    for i in 0..12u32 {
        let extra = se(
            "bar",
            "burst",
            &format!("{{hosts: [b{i}.bar.global], addresses: [240.0.0.{}]}}", 100 + i),
        );
        std::fs::write(entries_dir.join("se.yaml"), entries(&extra)).unwrap();
        let name = format!("b{i}.bar.global.");
        let served = eventually(Duration::from_secs(3), || {
            let name = name.clone();
            async move {
                let mut client = udp_client(primary).await;
                !addresses(&ask(&mut client, &name, RecordType::A).await).is_empty()
            }
        })
        .await;
        assert!(served, "{name} served at once, its serial pending or not");
        for zone in 0..ZONES.len() {
            let serial = our_serial(&running, zone);
            assert!(serial <= unix_now(), "serial {serial} past the clock");
            serials.insert(serial);
        }
    }
    until_in_step(&running, &mut [(&mut knot, knot_port)]).await;
    for zone in 0..ZONES.len() {
        assert!(our_serial(&running, zone) <= unix_now());
    }
    let last = answer(knot_port, "b11.bar.global", "A");
    assert_eq!(last, answer(primary.port(), "b11.bar.global", "A"));
    assert!(last.contains("240.0.0.111"), "{last}");
    assert!(answer(knot_port, "111.0.0.240.in-addr.arpa", "PTR").contains("b11.bar.global."));
    assert!(
        answer(knot_port, "b10.bar.global", "A").starts_with("NXDOMAIN"),
        "the burst's earlier names went"
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
    // The first records get their serial within a second of the start: until then, Not Ready.
    let full = eventually(Duration::from_secs(3), || async {
        transfer(allowed.dns_addr(), RecordType::AXFR, false).await[0]
            .metadata
            .response_code
            == ResponseCode::NoError
    })
    .await;
    assert!(full, "transferred once the first records have their serial");
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
