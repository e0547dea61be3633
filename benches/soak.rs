//! Fault soak: the real `globaldns` binary under steady load while its world misbehaves.
//!
//! Two emulated API servers (the integration tests' own, plain HTTP on loopback) hold 150
//! ServiceEntries each; an upstream the soak controls answers forwarded names. Load: dnsperf at
//! a fixed rate (when installed) plus validating clients that check every answer. Meanwhile:
//! ServiceEntries churn on both clusters (address changes, deletes and re-adds), watches are
//! dropped, history is compacted (410 Gone), one API server answers 500s, then goes away for a
//! fifth of the run, the upstream dies for a while. Checked: every answer is one complete
//! state that was written for that name (no mixed or corrupt answers), no NXDOMAIN for a name
//! that always existed, convergence to the final state after recovery, RSS flat, no panic in
//! the logs. Prints the figures; exits non-zero if a check fails.
//!
//!     cargo bench --bench soak                      # 300 s, a 60 s outage of one API server
//!     SOAK_SECONDS=20 cargo bench --bench soak      # the short version, which `cargo test` runs

#![allow(missing_docs, dead_code)]

#[path = "../tests/it/kubeapi.rs"]
mod kubeapi;
#[path = "../tests/it/upstream.rs"]
mod upstream;

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;

const PER_CLUSTER: usize = 150;
/// Names that are never deleted: NXDOMAIN for them is always wrong.
const STABLE: usize = 100;

type States = Arc<Mutex<HashMap<String, Vec<Option<BTreeSet<Ipv4Addr>>>>>>;

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    lost: AtomicU64,
    wrong: AtomicU64,
    nxdomain_stable: AtomicU64,
    servfail_in_zone: AtomicU64,
    forwarded_ok: AtomicU64,
    forwarded_servfail: AtomicU64,
}

fn name(cluster: usize, i: usize) -> String {
    format!("c{cluster}-svc{i}.soak.global")
}

/// Version `v` of a name's addresses: two addresses, so a mix of versions is detectable.
fn addresses(cluster: usize, i: usize, v: u32) -> BTreeSet<Ipv4Addr> {
    let base = (cluster as u32) << 22 | (i as u32) << 12 | (v % 2048) << 1;
    [
        Ipv4Addr::from(0xF000_0000 | base),
        Ipv4Addr::from(0xF000_0000 | base | 1),
    ]
    .into()
}

fn write(api: &kubeapi::KubeApi, states: &States, cluster: usize, i: usize, v: Option<u32>) {
    let n = name(cluster, i);
    // Record the state before applying it: an answer may show it as soon as it is written.
    states
        .lock()
        .unwrap()
        .entry(n.clone())
        .or_default()
        .push(v.map(|v| addresses(cluster, i, v)));
    match v {
        Some(v) => {
            let addrs: Vec<String> = addresses(cluster, i, v).iter().map(|a| a.to_string()).collect();
            api.apply_se(
                "soak",
                &format!("svc{i}"),
                json!({"hosts": [n], "addresses": addrs, "resolution": "STATIC"}),
                None,
            );
        }
        None => api.delete_se("soak", &format!("svc{i}")),
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn validate(
    server: SocketAddr,
    states: States,
    counts: Arc<Counts>,
    upstream_dead: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x = seed | 1;
    let mut id = 0u16;
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id = id.wrapping_add(1);
        let forwarded = x.is_multiple_of(20);
        let (cluster, i) = (1 + (x >> 8) as usize % 2, (x >> 16) as usize % PER_CLUSTER);
        let qname = if forwarded {
            "www.example.com.".to_string()
        } else {
            format!("{}.", name(cluster, i))
        };
        counts.sent.fetch_add(1, Ordering::Relaxed);
        sock.send_to(&query(id, &qname), server).await.unwrap();
        let reply = loop {
            match tokio::time::timeout(Duration::from_millis(1500), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) if buf[..2] == id.to_be_bytes() => break Some(Message::from_vec(&buf[..n])),
                Ok(_) => continue, // a late answer to an earlier query
                Err(_) => break None,
            }
        };
        let Some(reply) = reply else {
            counts.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        counts.answered.fetch_add(1, Ordering::Relaxed);
        let Ok(m) = reply else {
            counts.wrong.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if forwarded {
            match m.metadata.response_code {
                ResponseCode::NoError => counts.forwarded_ok.fetch_add(1, Ordering::Relaxed),
                ResponseCode::ServFail if upstream_dead.load(Ordering::Relaxed) => {
                    counts.forwarded_servfail.fetch_add(1, Ordering::Relaxed)
                }
                _ => counts.wrong.fetch_add(1, Ordering::Relaxed),
            };
            continue;
        }
        let got: BTreeSet<Ipv4Addr> = m
            .answers
            .iter()
            .filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None })
            .collect();
        let key = qname.trim_end_matches('.');
        let history = states.lock().unwrap().get(key).cloned().unwrap_or_default();
        let ok = match m.metadata.response_code {
            ResponseCode::NoError => history.iter().any(|s| s.as_ref() == Some(&got)),
            ResponseCode::NXDomain => {
                if i < STABLE {
                    counts.nxdomain_stable.fetch_add(1, Ordering::Relaxed);
                }
                i >= STABLE && history.iter().any(Option::is_none)
            }
            ResponseCode::ServFail => {
                counts.servfail_in_zone.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => false,
        };
        if !ok {
            counts.wrong.fetch_add(1, Ordering::Relaxed);
            if counts.wrong.load(Ordering::Relaxed) <= 5 {
                eprintln!(
                    "WRONG: {key}: {:?} {got:?}, valid states {history:?}",
                    m.metadata.response_code
                );
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench: the long run; `cargo test` runs it short.
    let default = if std::env::args().any(|a| a == "--bench") {
        300
    } else {
        20
    };
    let total = Duration::from_secs(
        std::env::var("SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    );
    let at = |fraction: f64| total.mul_f64(fraction);
    let states: States = Arc::default();
    let (c1, c2) = (
        kubeapi::KubeApi::start(&["v1"]).await,
        kubeapi::KubeApi::start(&["v1"]).await,
    );
    let mut versions: HashMap<(usize, usize), u32> = HashMap::new();
    for (cluster, api) in [(1, &c1), (2, &c2)] {
        for i in 0..PER_CLUSTER {
            write(api, &states, cluster, i, Some(0));
            versions.insert((cluster, i), 0);
        }
    }
    let up = upstream::Upstream::start(upstream::Behaviour::Answer).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeapi::write_kubeconfig(dir.path(), &[(&c1, "c1"), (&c2, "c2")]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--context",
            "c1",
            "--context",
            "c2",
        ])
        .args([
            "--upstream",
            &up.addr.to_string(),
            "--upstream-timeout",
            "300ms",
            "--forward-timeout",
            "600ms",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let server: SocketAddr = loop {
        let line = lines.next_line().await.unwrap().expect("a start-up line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(addr) = v["fields"]["dns_addr"].as_str() {
            break addr.parse().unwrap();
        }
    };
    let logs = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // Wait for both clusters, then measure from a warm start.
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let synced = Instant::now();
    loop {
        let mut ok = true;
        for cluster in [1, 2] {
            probe
                .send_to(&query(1, &format!("{}.", name(cluster, 0))), server)
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let r = tokio::time::timeout(Duration::from_millis(500), probe.recv_from(&mut buf)).await;
            ok &= matches!(r, Ok(Ok((n, _))) if Message::from_vec(&buf[..n]).is_ok_and(|m| m.answers.len() == 2));
        }
        if ok {
            break;
        }
        assert!(synced.elapsed() < Duration::from_secs(30), "clusters never synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_start = rss_kib(pid);

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let upstream_dead = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for seed in 0..3 {
        load.push(tokio::spawn(validate(
            server,
            states.clone(),
            counts.clone(),
            upstream_dead.clone(),
            stop.clone(),
            0x9E37_79B9 * (seed + 1),
        )));
    }
    let dnsperf = start_dnsperf(server, dir.path(), total).await;

    let start = Instant::now();
    let mut rss_series = vec![rss_start];
    let mut next_sample = 1;
    let mut next_fault = 0;
    let mut x = 12345u64;
    let mut writes = 0u64;
    while start.elapsed() < total {
        // Churn: one write every 20 ms, on either cluster (also during the outage).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (cluster, i) = (1 + x as usize % 2, (x >> 8) as usize % PER_CLUSTER);
        let api = if cluster == 1 { &c1 } else { &c2 };
        let v = versions.get_mut(&(cluster, i)).unwrap();
        *v += 1;
        let delete = i >= STABLE && x.is_multiple_of(5);
        write(api, &states, cluster, i, if delete { None } else { Some(*v) });
        writes += 1;
        let t = start.elapsed();
        if t >= at(next_sample as f64 / 10.0) {
            rss_series.push(rss_kib(pid));
            next_sample += 1;
        }
        let faults: [(f64, &str); 9] = [
            (0.10, "drop watches on c1"),
            (0.15, "drop watches on c2"),
            (0.20, "compact c2 history and drop its watches (410 Gone)"),
            (0.25, "c1 answers 500s"),
            (0.30, "c1 recovers"),
            (0.40, "c2 goes away"),
            (0.60, "c2 comes back"),
            (0.65, "the upstream dies"),
            (0.75, "the upstream comes back"),
        ];
        if next_fault < faults.len() && t >= at(faults[next_fault].0) {
            let (_, what) = faults[next_fault];
            eprintln!("[{:>6.1}s] {what}", t.as_secs_f64());
            match next_fault {
                0 => c1.drop_connections(),
                1 => c2.drop_connections(),
                2 => {
                    c2.compact();
                    c2.drop_connections();
                }
                3 => c1.set_failing(true),
                4 => c1.set_failing(false),
                5 => c2.set_down(true),
                6 => c2.set_down(false),
                7 => {
                    upstream_dead.store(true, Ordering::Relaxed);
                    up.set(upstream::Behaviour::Silent);
                }
                _ => {
                    up.set(upstream::Behaviour::Answer);
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    upstream_dead.store(false, Ordering::Relaxed);
                }
            }
            next_fault += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Convergence: every name reaches its last written state.
    let converge = Instant::now();
    let last: HashMap<String, Option<BTreeSet<Ipv4Addr>>> = states
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.last().cloned().flatten()))
        .collect();
    let mut converged = false;
    while converge.elapsed() < Duration::from_secs(30) && !converged {
        converged = true;
        for (n, want) in &last {
            probe.send_to(&query(2, &format!("{n}.")), server).await.unwrap();
            let mut buf = [0u8; 512];
            let Ok(Ok((len, _))) = tokio::time::timeout(Duration::from_millis(500), probe.recv_from(&mut buf)).await
            else {
                converged = false;
                break;
            };
            let m = Message::from_vec(&buf[..len]).unwrap();
            let got: BTreeSet<Ipv4Addr> = m
                .answers
                .iter()
                .filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None })
                .collect();
            let matches = match want {
                Some(w) => m.metadata.response_code == ResponseCode::NoError && &got == w,
                None => m.metadata.response_code == ResponseCode::NXDomain,
            };
            if !matches {
                converged = false;
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
        }
    }
    let convergence = converge.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let perf = match dnsperf {
        Some(p) => p
            .wait_with_output()
            .await
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string()),
        None => None,
    };
    let rss_end = rss_kib(pid);
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    let logs = logs.await.unwrap();
    let panics = logs.lines().filter(|l| l.contains("panicked")).count();

    let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let perf_line = perf
        .as_deref()
        .and_then(|p| {
            let sent = p
                .lines()
                .find(|l| l.contains("Queries sent:"))?
                .split_whitespace()
                .nth(2)?
                .to_string();
            let lost = p
                .lines()
                .find(|l| l.contains("Queries lost:"))?
                .split_whitespace()
                .nth(2)?
                .to_string();
            Some(format!("dnsperf: {sent} queries sent, {lost} lost"))
        })
        .unwrap_or_else(|| "dnsperf: not installed, validating clients only".into());
    println!(
        "soak {}s: {writes} writes; validated queries {} sent, {} answered, {} lost, {} wrong, {} NXDOMAIN for always-present names, \
         {} in-zone SERVFAIL; forwarded {} ok, {} SERVFAIL while the upstream was dead; {perf_line}; \
         converged in {:.1}s ({}); RSS {} KiB at start, {} KiB at end (every tenth of the run: {:?} MiB); {panics} panics in the log; exit {:?}",
        total.as_secs(),
        c(&counts.sent),
        c(&counts.answered),
        c(&counts.lost),
        c(&counts.wrong),
        c(&counts.nxdomain_stable),
        c(&counts.servfail_in_zone),
        c(&counts.forwarded_ok),
        c(&counts.forwarded_servfail),
        convergence.as_secs_f64(),
        if converged { "yes" } else { "NO" },
        rss_start,
        rss_end,
        rss_series
            .iter()
            .map(|k| (*k as f64 / 1024.0 * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        status.and_then(|s| s.code()),
    );
    let failed = c(&counts.wrong) > 0
        || c(&counts.nxdomain_stable) > 0
        || !converged
        || panics > 0
        || status.and_then(|s| s.code()) != Some(0)
        || c(&counts.lost) * 1000 > c(&counts.sent)
        || rss_end > rss_start * 2 + 16 * 1024;
    if failed {
        eprintln!("soak FAILED");
        std::process::exit(1);
    }
}

/// dnsperf at a steady rate over the soak's names, for the whole run; `None` when not installed
/// (then the validating clients are the only load). With CI=true it must be installed.
async fn start_dnsperf(server: SocketAddr, dir: &std::path::Path, total: Duration) -> Option<tokio::process::Child> {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v dnsperf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "dnsperf is missing: scripts/test installs it"
        );
        return None;
    }
    let names: String = (0..PER_CLUSTER)
        .flat_map(|i| [1, 2].map(|c| format!("{} A\n", name(c, i))))
        .collect();
    let file = dir.join("queries.txt");
    std::fs::write(&file, names).unwrap();
    tokio::process::Command::new("dnsperf")
        .args(["-s", &server.ip().to_string(), "-p", &server.port().to_string(), "-d"])
        .arg(&file)
        .args(["-l", &total.as_secs().to_string(), "-Q", "5000", "-q", "100", "-t", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()
}
