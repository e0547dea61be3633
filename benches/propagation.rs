//! Propagation: a ServiceEntry write on the Kubernetes API → the first DNS answer that shows it.
//!
//! Runs globaldns in-process against the emulated API server of the integration tests (plain
//! HTTP on loopback, the real `kube` client), writes one entry `WRITES` times, and after each
//! write queries over UDP until the answer changes. Prints p50, p99 and max.
//!
//!     cargo bench --bench propagation
//!
//! Goal (issue 4): p99 ≤ 50 ms on the project's 2-core machine.

#![allow(missing_docs, dead_code)]

#[path = "../tests/it/config.rs"]
mod config;
#[path = "../tests/it/kubeapi.rs"]
mod kubeapi;

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::answer;

use globaldns::app::{self};
use serde_json::json;
use tokio::net::UdpSocket;

const WRITES: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let api = kubeapi::KubeApi::start(&["v1"]).await;
    for i in 0..1000 {
        api.apply_se("fill", &format!("s{i}"), json!({"hosts": [format!("s{i}.fill.global")], "addresses": [format!("240.1.{}.{}", i / 250, i % 250 + 1)]}), None);
    }
    api.apply_se(
        "bench",
        "bench",
        json!({"hosts": ["bench.global"], "addresses": ["240.0.0.1"]}),
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let running = app::start(config::loopback(config::clusters(dir.path(), &[(&api, "bench")])))
        .await
        .unwrap();
    let server = running.dns_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let start = Instant::now();
    while answer(&sock, server, 1, "bench.global").await != Some(Ipv4Addr::new(240, 0, 0, 1)) {
        assert!(start.elapsed() < Duration::from_secs(20), "initial sync");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let want = [240, 0, 2 + (i / 250) as u8, (i % 250) as u8 + 1];
        let written = Instant::now();
        api.apply_se(
            "bench",
            "bench",
            json!({"hosts": ["bench.global"], "addresses": [std::net::Ipv4Addr::from(want).to_string()]}),
            None,
        );
        let mut id = 2u16;
        loop {
            id = id.wrapping_add(1);
            if answer(&sock, server, id, "bench.global").await == Some(Ipv4Addr::from(want)) {
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(10), "write {i} never showed");
        }
        latencies.push(written.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "propagation over {WRITES} writes (1001 entries in the cluster): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    running.shutdown_token().cancel();
}
