//! End to end with real DNS software from Debian, wired as in a cluster (README "Wiring"):
//! Knot DNS plays kube-dns (serving `cluster.local.`) behind globaldns; unbound (a
//! `stub-zone` for `global`, `harden-below-nxdomain`, 0x20 on) and dnsmasq
//! (`server=/global/…`) play the cluster DNS in front of it. Queried with `dig`. SRV and
//! reverse names go through unbound's stub zones to globaldns, whose upstream is that very
//! unbound, as in a cluster: nothing loops.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use globaldns::dns::server::Limits;
use globaldns::table::TableSettings;

use crate::support::*;

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn short(port: u16, name: &str, qtype: &str) -> String {
    dig(port, &["+short", name, qtype]).trim().to_string()
}

fn status(port: u16, name: &str, qtype: &str) -> (String, usize) {
    let text = dig(port, &[name, qtype]);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
        .to_string();
    let answers = text
        .split("ANSWER: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (status, answers)
}

/// Waits until the daemon on `port` answers `name`.
fn wait_ready(daemon: &mut Daemon, port: u16, name: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "{} exited; see its log",
            daemon.1
        );
        if dig(port, &["+short", name]).lines().any(|l| !l.starts_with(';')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} did not answer {name} on port {port}", daemon.1);
}

/// Queries Knot has received, from its statistics module.
fn knot_queries(conf: &Path) -> u64 {
    let out = Command::new("knotc").arg("-c").arg(conf).arg("stats").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("mod-stats.request-protocol["))
        .filter_map(|l| l.rsplit(" = ").next()?.parse::<u64>().ok())
        .sum()
}

/// cluster.local as kube-dns serves it.
const CLUSTER_LOCAL: &str = "$ORIGIN cluster.local.\n$TTL 5\n@ SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n\
     @ NS ns.dns\nns.dns A 10.96.0.10\nkubernetes.default.svc A 10.96.0.1\n";

/// Knot DNS on `port` serving `zones` (name, zone file text), with query statistics; and its
/// configuration file, for [`knot_queries`].
fn knot(dir: &Path, port: u16, zones: &[(&str, &str)]) -> (Daemon, std::path::PathBuf) {
    let d = dir.display();
    let mut conf = format!(
        "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\ndatabase:\n  storage: \"{d}\"\n\
         log:\n  - target: stderr\n    any: warning\nmod-stats:\n  - id: counts\n    request-protocol: on\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    global-module: mod-stats/counts\nzone:\n"
    );
    for (zone, text) in zones {
        std::fs::write(dir.join(format!("{zone}.zone")), text).unwrap();
        conf.push_str(&format!("  - domain: {zone}\n    file: \"{d}/{zone}.zone\"\n"));
    }
    knot::start(dir, &conf)
}

/// unbound on `port` as a cluster DNS: a `stub-zone` for each of `stubs` (zone, port on
/// 127.0.0.1), `harden-below-nxdomain`, 0x20 and QNAME minimisation on, and unbound's
/// built-in empty reverse zones (RFC 6303) off for the stubbed ones.
fn unbound(dir: &Path, port: u16, stubs: &[(&str, u16)]) -> Daemon {
    let d = dir.display();
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  do-daemonize: no\n  use-syslog: no\n\
         logfile: \"\"\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n\
         do-not-query-localhost: no\n  harden-below-nxdomain: yes\n  qname-minimisation: yes\n  use-caps-for-id: yes\n\
         module-config: \"iterator\"\n  access-control: 127.0.0.0/8 allow\n"
    );
    for (zone, _) in stubs.iter().filter(|(z, _)| z.ends_with(".arpa")) {
        conf.push_str(&format!("  local-zone: \"{zone}.\" nodefault\n"));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    for (zone, stub) in stubs {
        conf.push_str(&format!(
            "stub-zone:\n  name: \"{zone}\"\n  stub-addr: 127.0.0.1@{stub}\n"
        ));
    }
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    spawn(
        "unbound",
        Command::new("unbound").arg("-d").arg("-c").arg(&path),
        &dir.join("unbound.log"),
    )
}

fn entries() -> String {
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
        se("deep", "deep", "{hosts: [svc.a.b.c.global], addresses: [240.0.0.4]}"),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_unbound_and_dnsmasq_in_front_of_knot() {
    for tool in ["knotd", "knotc", "unbound", "dnsmasq", "dig"] {
        require(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let [knot_port, unbound_port, dnsmasq_port] = free_ports::<3>();

    // kube-dns: Knot serving cluster.local.
    let (mut knot, knot_conf) = knot(dir.path(), knot_port, &[("cluster.local", CLUSTER_LOCAL)]);
    wait_ready(&mut knot, knot_port, "kubernetes.default.svc.cluster.local");

    // globaldns, forwarding to Knot.
    let knot_addr: SocketAddr = ([127, 0, 0, 1], knot_port).into();
    let server = Server::start_forwarding(&[("se.yaml", &entries())], Some(forwarding(&[knot_addr]))).await;
    let gd = server.addr.port();

    // The cluster DNS: unbound with a stub zone, dnsmasq with a server= line.
    let mut unbound = unbound(
        dir.path(),
        unbound_port,
        &[("global", gd), ("cluster.local", knot_port)],
    );
    let mut dnsmasq = spawn(
        "dnsmasq",
        Command::new("dnsmasq").args([
            "-d",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--cache-size=0",
            "--pid-file=",
            &format!("--port={dnsmasq_port}"),
            &format!("--server=/global/127.0.0.1#{gd}"),
            &format!("--server=127.0.0.1#{knot_port}"),
        ]),
        &dir.path().join("dnsmasq.log"),
    );
    wait_ready(&mut unbound, unbound_port, "httpbin.bar.global");
    wait_ready(&mut dnsmasq, dnsmasq_port, "httpbin.bar.global");

    let knot_before = knot_queries(&knot_conf);
    for (resolver, port) in [("unbound", unbound_port), ("dnsmasq", dnsmasq_port)] {
        // The empty non-terminal first: a resolver that got NXDOMAIN here (RFC 8020) would
        // refuse every name below it.
        assert_eq!(
            status(port, "b.c.global", "A"),
            ("NOERROR".into(), 0),
            "{resolver}: empty non-terminal"
        );
        assert_eq!(status(port, "bar.global", "A"), ("NOERROR".into(), 0), "{resolver}");
        assert_eq!(
            short(port, "svc.a.b.c.global", "A"),
            "240.0.0.4",
            "{resolver}: below an empty non-terminal"
        );
        assert_eq!(short(port, "httpbin.bar.global", "A"), "240.0.0.2", "{resolver}");
        assert_eq!(
            short(port, "HttpBin.Bar.Global", "A"),
            "240.0.0.2",
            "{resolver}: mixed case"
        );
        assert_eq!(short(port, "dual.default.global", "AAAA"), "2001:db8::3", "{resolver}");
        assert_eq!(
            short(port, "api.shop.global", "A"),
            "240.0.0.10",
            "{resolver}: wildcard"
        );
        assert_eq!(
            status(port, "httpbin.bar.global", "AAAA"),
            ("NOERROR".into(), 0),
            "{resolver}: NODATA"
        );
        assert_eq!(
            status(port, "nope.bar.global", "A"),
            ("NXDOMAIN".into(), 0),
            "{resolver}"
        );
        assert_eq!(
            status(port, "missing.global", "AAAA"),
            ("NXDOMAIN".into(), 0),
            "{resolver}"
        );
    }
    assert_eq!(
        knot_queries(&knot_conf),
        knot_before,
        "no in-zone query reached the upstream"
    );

    // cluster.local through globaldns comes back from Knot unchanged.
    let sections = ["+noall", "+comments", "+answer", "+authority", "+norec"];
    let strip_id = |s: String| {
        s.lines()
            .filter(|l| !l.contains("id: ") && !l.contains("Query time"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (name, qtype) in [
        ("kubernetes.default.svc.cluster.local", "A"),
        ("nope.cluster.local", "A"),
        ("cluster.local", "SOA"),
        (".", "NS"),
    ] {
        let mut args = sections.to_vec();
        args.extend([name, qtype]);
        let direct = strip_id(dig(knot_port, &args));
        let via = strip_id(dig(gd, &args));
        assert!(!direct.is_empty());
        assert_eq!(via, direct, "{name} {qtype}: as Knot answered it");
    }
    assert_eq!(
        knot_queries(&knot_conf),
        knot_before + 8,
        "one upstream query per forwarded query"
    );
    assert_eq!(
        short(dnsmasq_port, "kubernetes.default.svc.cluster.local", "A"),
        "10.96.0.1"
    );
    server.stop().await;
}

/// The sum of `globaldns_dns_responses_total` of the forwarded path, every rcode.
async fn forwarded(server: &Server) -> f64 {
    let text = get(server.admin_addr(), "/metrics").await.1;
    text.lines()
        .filter(|l| l.starts_with("globaldns_dns_responses_total{") && l.contains("path=\"forwarded\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// SRV and reverse names through the cluster DNS wired as a cluster has it: unbound stub-zones
/// `global` and `240.in-addr.arpa` to globaldns, and globaldns forwards everything else to that
/// very unbound (kube-dns → globaldns → kube-dns). In-zone and reverse-zone names are answered
/// and never forwarded, so nothing loops, and Knot (cluster.local and 10.in-addr.arpa behind
/// unbound) sees none of them; a reverse name outside globaldns's zones goes round once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_and_reverse_names_through_unbound_stub_zones_never_loop() {
    for tool in ["knotd", "knotc", "unbound", "dig"] {
        require(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let [knot_port, unbound_port] = free_ports::<2>();
    let reverse = "$ORIGIN 10.in-addr.arpa.\n$TTL 5\n@ SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n\
                   @ NS ns.dns.cluster.local.\n1.0.96 PTR kubernetes.default.svc.cluster.local.\n";
    let (mut knot, knot_conf) = knot(
        dir.path(),
        knot_port,
        &[("cluster.local", CLUSTER_LOCAL), ("10.in-addr.arpa", reverse)],
    );
    wait_ready(&mut knot, knot_port, "kubernetes.default.svc.cluster.local");

    let entries = se(
        "bar",
        "httpbin",
        "{hosts: [httpbin.bar.global], addresses: [240.0.0.2], ports: [{name: http, number: 8000, protocol: HTTP}]}",
    );
    let unbound_addr: SocketAddr = ([127, 0, 0, 1], unbound_port).into();
    let settings = TableSettings::new(&["global", "240.in-addr.arpa"]).unwrap();
    let server = Server::start_table(
        &[("se.yaml", &entries)],
        settings,
        Some(forwarding(&[unbound_addr])),
        Limits::default(),
    )
    .await;
    let gd = server.addr.port();
    let mut unbound = unbound(
        dir.path(),
        unbound_port,
        &[
            ("global", gd),
            ("240.in-addr.arpa", gd),
            ("cluster.local", knot_port),
            ("10.in-addr.arpa", knot_port),
        ],
    );
    wait_ready(&mut unbound, unbound_port, "httpbin.bar.global");

    let (knot_before, forwarded_before) = (knot_queries(&knot_conf), forwarded(&server).await);
    assert_eq!(
        short(unbound_port, "_http._tcp.httpbin.bar.global", "SRV"),
        "0 100 8000 httpbin.bar.global."
    );
    assert_eq!(
        short(unbound_port, "_HTTP._tcp.HttpBin.bar.global", "SRV"),
        "0 100 8000 httpbin.bar.global."
    );
    assert_eq!(
        dig(unbound_port, &["+short", "-x", "240.0.0.2"]).trim(),
        "httpbin.bar.global.",
        "dig -x for the VIP"
    );
    assert_eq!(
        status(unbound_port, "_tcp.httpbin.bar.global", "SRV"),
        ("NOERROR".into(), 0)
    );
    assert_eq!(
        status(unbound_port, "_grpc._tcp.httpbin.bar.global", "SRV"),
        ("NXDOMAIN".into(), 0)
    );
    assert_eq!(
        status(unbound_port, "0.0.240.in-addr.arpa", "PTR"),
        ("NOERROR".into(), 0)
    );
    assert_eq!(
        status(unbound_port, "9.0.0.240.in-addr.arpa", "PTR"),
        ("NXDOMAIN".into(), 0)
    );
    assert_eq!(
        knot_queries(&knot_conf),
        knot_before,
        "no in-zone or reverse-zone query upstream"
    );
    assert_eq!(
        forwarded(&server).await,
        forwarded_before,
        "globaldns forwarded none of them"
    );

    // A reverse name outside globaldns's zones is forwarded as before: to unbound, then Knot
    // (several queries there: unbound minimises the name), and it comes back once.
    let ptr_requests = || async {
        let text = get(server.admin_addr(), "/metrics").await.1;
        metric(&text, "globaldns_dns_requests_total{protocol=\"udp\",type=\"PTR\"}")
    };
    let asked_before = ptr_requests().await;
    assert_eq!(
        dig(gd, &["+short", "-x", "10.96.0.1"]).trim(),
        "kubernetes.default.svc.cluster.local."
    );
    assert_eq!(forwarded(&server).await, forwarded_before + 1.0, "forwarded once");
    assert_eq!(ptr_requests().await, asked_before + 1.0, "and never came back: no loop");
    assert!(knot_queries(&knot_conf) > knot_before, "answered by Knot");
    server.stop().await;
}
