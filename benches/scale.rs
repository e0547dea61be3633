//! Scale: N ServiceEntries across 3 emulated clusters, served by the real `globaldns` binary.
//!
//!     cargo bench --bench scale                              # N = 100000, a third in each cluster
//!     cargo bench --bench scale -- --replicated              # N in every cluster (the same hosts)
//!     cargo bench --bench scale -- --entries 20000
//!
//! Prints the time from start to the watches (the three lists read and decoded), from there
//! to ready (`/readyz`: the table built and published), the server's RSS (current and peak),
//! and for `CHANGES` single-entry writes: the time to publish each (the server's own
//! `globaldns_table_publish_seconds`) and from the write on the API to the DNS answer that
//! shows it. Under `cargo test --bench scale` it runs with N = 2000 as a smoke test.
//!
//! Goals (issue 7): ready ≤ 3 s after the lists, RSS ≤ 150 MiB, one change published ≤ 1 ms.

#![allow(missing_docs, dead_code)]

#[path = "../tests/it/kubeapi.rs"]
mod kubeapi;

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use common::answer;

use kubeapi::KubeApi;
use serde_json::json;
use tokio::net::UdpSocket;

const CHANGES: usize = 50;
const CLUSTERS: [&str; 3] = ["local", "east", "west"];

fn address(i: usize, round: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0A00_0000u32 + ((round as u32) << 17) + i as u32)
}

fn spec(i: usize, round: usize) -> serde_json::Value {
    json!({"hosts": [format!("svc-{i}.ns-{}.global", i % 100)], "addresses": [address(i, round).to_string()], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]})
}

fn free_port() -> u16 {
    StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await.ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text))
}

/// (sum, count) of the publish histogram.
async fn publishes(admin: SocketAddr) -> (f64, u64) {
    let (_, text) = http_get(admin, "/metrics").await.expect("metrics");
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    (
        value("globaldns_table_publish_seconds_sum"),
        value("globaldns_table_publish_seconds_count") as u64,
    )
}

fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches(" kB").parse::<f64>().ok())
            .unwrap()
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let replicated = args.iter().any(|a| a == "--replicated");
    let entries: usize = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if benching { 100_000 } else { 2_000 })
        .min(1 << 17);

    let loading = Instant::now();
    let mut apis = Vec::new();
    // Entry i lives in cluster i % 3, or in all three.
    let home = |i: usize| if replicated { 0 } else { i % CLUSTERS.len() };
    for (c, _) in CLUSTERS.iter().enumerate() {
        let api = KubeApi::start(&["v1"]).await;
        for i in (0..entries).filter(|&i| replicated || home(i) == c) {
            api.apply_se(&format!("ns-{}", i % 100), &format!("svc-{i}"), spec(i, 0), None);
        }
        api.compact(); // the history is not needed: the server lists
        apis.push(api);
    }
    let layout = if replicated {
        format!("{entries} in each of {} clusters, the same hosts", CLUSTERS.len())
    } else {
        format!("{entries} across {} clusters", CLUSTERS.len())
    };
    eprintln!("loaded {layout} in {:.1} s", loading.elapsed().as_secs_f64());
    let parts: Vec<(&KubeApi, &str)> = apis.iter().zip(CLUSTERS).collect();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeapi::write_kubeconfig(dir.path(), &parts);

    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args(["serve", "--listen", &dns.to_string(), "--admin", &admin.to_string()])
        .args(["--upstream", "127.0.0.1:9", "--sync-timeout", "120s", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(CLUSTERS.iter().flat_map(|c| ["--context", c]))
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or("error".into()))
        .kill_on_drop(true)
        .spawn()
        .expect("the globaldns binary");
    let pid = child.id().unwrap();

    let mut watching: Option<Duration> = None;
    let ready = loop {
        assert!(started.elapsed() < Duration::from_secs(300), "not ready in 300 s");
        if watching.is_none()
            && apis
                .iter()
                .all(|a| a.requests().iter().any(|r| r.contains("watch=true")))
        {
            watching = Some(started.elapsed());
        }
        if let Some((200, _)) = http_get(admin, "/readyz").await {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let watching = watching.unwrap_or(ready);
    let (rss, peak) = memory(pid);

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let probe = entries / 2;
    let probe_name = format!("svc-{probe}.ns-{}.global", probe % 100);
    assert_eq!(
        answer(&sock, dns, 1, &probe_name).await,
        Some(address(probe, 0)),
        "{probe_name} is served"
    );

    let mut publish = Vec::new();
    let mut visible = Vec::new();
    let mut id = 2u16;
    // Each change in the entry's home cluster (replicated: the local one; the other two then
    // disagree, a conflict that is logged).
    for round in 1..=CHANGES {
        let i = (round * 7919) % entries;
        let name = format!("svc-{i}.ns-{}.global", i % 100);
        let before = publishes(admin).await;
        let written = Instant::now();
        apis[home(i)].apply_se(&format!("ns-{}", i % 100), &format!("svc-{i}"), spec(i, round), None);
        loop {
            id = id.wrapping_add(1);
            if answer(&sock, dns, id, &name).await == Some(address(i, round)) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "change {round} never showed"
            );
        }
        visible.push(written.elapsed());
        let after = publishes(admin).await;
        if after.1 == before.1 + 1 {
            publish.push(Duration::from_secs_f64(after.0 - before.0));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (rss_after, peak_after) = memory(pid);
    let _ = child.start_kill();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let summary = |v: &mut Vec<Duration>| {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(p(0.5)),
            ms(p(0.99)),
            ms(*v.last().unwrap())
        )
    };
    println!("scale: {layout} ({entries} hosts)");
    println!(
        "  start → watching (lists read): {:.2} s; → ready: {:.2} s ({:.2} s after the lists)",
        watching.as_secs_f64(),
        ready.as_secs_f64(),
        (ready - watching).as_secs_f64()
    );
    println!(
        "  RSS when ready: {rss:.0} MiB (peak {peak:.0} MiB); after the changes: {rss_after:.0} MiB (peak {peak_after:.0} MiB)"
    );
    assert!(!publish.is_empty(), "no change was published alone");
    println!(
        "  one changed entry, {} changes: publish {}; write → answer {}",
        publish.len(),
        summary(&mut publish),
        summary(&mut visible)
    );
}
