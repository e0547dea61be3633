//! Micro-benchmarks of the answer path and of table building (issue 7).
//!
//!     cargo bench --bench answer
//!
//! The answer path is measured on a 1k-host table (and a 100k-host one for the hit case: one
//! name asked again and again, and `hit-100k-random`, 4 096 different names in turn, where
//! every lookup misses the CPU caches and TLB as it does under load): an existing name with one A record, one with four, NODATA
//! (AAAA of a v4-only name), NXDOMAIN, a wildcard match, each without and with EDNS(0), and
//! a host with 40 A records: over UDP without EDNS more than 512 bytes (truncated), over TCP
//! whole.
//! SRV and PTR (issue 14) on the 1k table with named ports and the reverse zone
//! `240.in-addr.arpa`: an SRV answer with its additional A record, a PTR answer, NXDOMAIN in
//! the reverse zone, a stale answer (EDE 3), and the plain hit on that table (three zones to
//! match instead of one).
//! `batch/*`: batches of 32 queries as the UDP listener answers them (and of 8, `*-8`, about
//! what it receives at a time under dnsperf), every name of the 1k or 100k table once per
//! round in a random order, read from one array (the listener's buffers are cached), answered
//! one by one (`plain`) and with the batch's lookups fetched into the caches first (`ahead`,
//! `answer::fetch_ahead`).
//! Table building is measured at 1k and 100k entries (and 1k with ports and the reverse zone).
//! Under `cargo test --bench answer` each benchmark runs once, as a smoke test.

#![allow(missing_docs)]

#[path = "common/wire.rs"]
mod wire;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use globaldns::dns::answer::{Mode, Outcome, Shuffler, Transport, answer, fetch_ahead};
use globaldns::serviceentry::{Entry, EntryId, Export, Port, Protocol};
use globaldns::table::{AHEAD, Ahead, Live, SourceInput, Table, TableSettings};
use wire::query;

/// `n` entries like the load benchmark's: `svc-i.ns-(i%50).global` with 1–4 A records, every
/// tenth also AAAA, and one wildcard `*.wild-k.global` per 100.
fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let host = if i % 100 == 99 {
                format!("*.wild-{}.global", i / 100)
            } else {
                format!("svc-{i}.ns-{}.global", i % 50)
            };
            let mut addresses: Vec<IpAddr> = (0..=(i % 4))
                .map(|k| IpAddr::V4(Ipv4Addr::from(0xF000_0000u32 + (i as u32) * 4 + k as u32)))
                .collect();
            if i % 10 == 0 {
                addresses.push(IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128)));
            }
            Entry {
                id: EntryId {
                    namespace: format!("ns-{}", i % 50).into(),
                    name: format!("se-{i}").into(),
                },
                hosts: Box::new([host]),
                addresses: addresses.into(),
                spec_addresses_given: true,
                created: None,
                status_addresses: Box::default(),
                ports: Box::default(),
                resolution_none: false,
                export: Export::Mesh,
                warnings: Box::default(),
            }
        })
        .collect()
}

/// One host, `many.global`, with 40 A records.
fn many() -> Entry {
    let mut entry = entries(1).remove(0);
    entry.id.name = "many".into();
    entry.hosts = Box::new(["many.global".into()]);
    entry.addresses = (0..40u32)
        .map(|k| IpAddr::V4(Ipv4Addr::from(0x0A00_0001 + k)))
        .collect();
    entry
}

fn table(entries: &[Entry]) -> Table {
    table_in(&["global"], entries)
}

fn table_in(zones: &[&str], entries: &[Entry]) -> Table {
    let settings = TableSettings::new(zones).unwrap();
    let name: Arc<str> = "bench".into();
    Live::build(&settings, &[SourceInput { name: &name, entries }], 1, true)
}

/// `entries(n)`, each with the named ports `http` (80) and `grpc` (9000).
fn with_ports(n: usize) -> Vec<Entry> {
    let mut entries = entries(n);
    for e in &mut entries {
        e.ports = [("http", 80), ("grpc", 9000)]
            .map(|(name, number)| Port {
                name: name.into(),
                number,
                protocol: Protocol::Tcp,
            })
            .into();
    }
    entries
}

/// Zones of the SRV/PTR rows: the addresses of `entries` are 240.0.x.y.
const REVERSE: [&str; 3] = ["global", "240.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"];

fn answer_path(c: &mut Criterion) {
    let small = table(&[entries(1_000), vec![many()]].concat());
    let large = table(&entries(100_000));
    let derived = table_in(&REVERSE, &with_ports(1_000));
    let stale = derived.clone().with_stale(Arc::new(["bench".into()]));
    // svc-4's address: 0xF000_0000 + 4 × 4 = 240.0.0.16.
    let cases: [(&str, &Table, &str, u16, Transport); 13] = [
        ("hit", &small, "svc-4.ns-4.global", 1, Transport::Udp),
        ("multi", &small, "sVc-7.Ns-7.global", 1, Transport::Udp),
        ("nodata", &small, "svc-5.ns-5.global", 28, Transport::Udp),
        ("nxdomain", &small, "nothing.ns-5.global", 1, Transport::Udp),
        ("wildcard", &small, "x.y.wild-3.global", 1, Transport::Udp),
        ("hit-100k", &large, "svc-54321.ns-21.global", 1, Transport::Udp),
        ("many-40", &small, "many.global", 1, Transport::Udp),
        ("many-40-tcp", &small, "many.global", 1, Transport::Tcp),
        ("srv", &derived, "_http._tcp.svc-4.ns-4.global", 33, Transport::Udp),
        ("ptr", &derived, "16.0.0.240.in-addr.arpa", 12, Transport::Udp),
        ("ptr-nxdomain", &derived, "17.0.0.240.in-addr.arpa", 12, Transport::Udp),
        ("stale", &stale, "svc-4.ns-4.global", 1, Transport::Udp),
        ("hit-3-zones", &derived, "svc-4.ns-4.global", 1, Transport::Udp),
    ];
    let mut group = c.benchmark_group("answer");
    let mut rng = Shuffler::new(7);
    let mut out = Vec::with_capacity(4096);
    for (case, table, name, qtype, transport) in cases {
        for edns in [false, true] {
            let msg = query(0x1234, name, qtype, edns);
            let outcome = answer(table, &msg, transport, Mode::default(), &mut rng, &mut out);
            assert_eq!(outcome, Outcome::Reply, "{case}");
            if matches!(case, "srv" | "ptr" | "stale" | "hit-3-zones") {
                assert!(out[7] > 0, "{case}: an answer");
            }
            let label = if edns { format!("{case}/edns") } else { case.to_string() };
            group.bench_function(label, |b| {
                b.iter(|| answer(table, black_box(&msg), transport, Mode::default(), &mut rng, &mut out))
            });
        }
    }
    // 4 096 names of the 100k table in a fixed random order: each query's lookup starts cold.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let msgs: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed % 100_000) as usize;
            let i = if i % 100 == 99 { i - 1 } else { i };
            query(0x1234, &format!("svc-{i}.ns-{}.global", i % 50), 1, false)
        })
        .collect();
    for msg in &msgs {
        let outcome = answer(&large, msg, Transport::Udp, Mode::default(), &mut rng, &mut out);
        assert!(outcome == Outcome::Reply && out[7] > 0, "hit-100k-random: an answer");
    }
    let mut next = msgs.iter().cycle();
    group.bench_function("hit-100k-random", |b| {
        b.iter(|| {
            let msg = next.next().expect("cycles");
            answer(
                &large,
                black_box(msg),
                Transport::Udp,
                Mode::default(),
                &mut rng,
                &mut out,
            )
        })
    });
    group.finish();
    batches(c, &small, &large, &mut rng, &mut out);
}

/// Batches of 32 (and 8) queries as the UDP listener answers them, each name of the table once per
/// round in a fixed random order (a working set larger than the CPU's caches at 100 000
/// names): answered one by one (`plain`), and with the batch's lookups fetched ahead first
/// (`ahead`, as the listener does). Throughput in queries.
fn batches(c: &mut Criterion, small: &Table, large: &Table, rng: &mut Shuffler, out: &mut Vec<u8>) {
    let mut group = c.benchmark_group("batch");
    for (size, table, n) in [("1k", small, 1_000), ("100k", large, 100_000)] {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut names: Vec<usize> = (0..n).filter(|i| i % 100 != 99).collect();
        for k in (1..names.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            names.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        // Side by side in one array, read in order: the listener's receive buffers are in the
        // caches when it answers (the kernel has just written them), so the queries' own
        // bytes should not miss here either.
        let msgs: Vec<Query> = names
            .iter()
            .map(|i| Query::of(&query(0x1234, &format!("svc-{i}.ns-{}.global", i % 50), 1, false)))
            .collect();
        let mut ahead = Ahead::default();
        // Batches of 8 too: about what the listener receives at a time under dnsperf -q 100
        // (6–8 queries a recvmmsg, counted at 100 000 names), too few to hide every miss.
        for (fetch, per) in [(false, AHEAD), (true, AHEAD), (false, 8), (true, 8)] {
            let mut chunks = msgs.chunks_exact(per).cycle();
            let how = if fetch { "ahead" } else { "plain" };
            let label = if per == AHEAD {
                format!("{size}/{how}")
            } else {
                format!("{size}/{how}-{per}")
            };
            group.throughput(Throughput::Elements(per as u64));
            group.bench_function(label, |b| {
                b.iter(|| {
                    let batch = chunks.next().expect("cycles");
                    if fetch {
                        fetch_ahead(table, batch.iter().map(|m| black_box(m.bytes())), &mut ahead);
                    }
                    for msg in batch {
                        answer(table, black_box(msg.bytes()), Transport::Udp, Mode::default(), rng, out);
                    }
                })
            });
        }
    }
    group.finish();
}

/// A query of at most 64 bytes held in place.
struct Query {
    len: usize,
    bytes: [u8; 64],
}

impl Query {
    fn of(msg: &[u8]) -> Self {
        let mut bytes = [0; 64];
        bytes[..msg.len()].copy_from_slice(msg);
        Query { len: msg.len(), bytes }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn table_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in [1_000, 100_000] {
        let input = entries(n);
        group.bench_function(format!("{n}"), |b| {
            b.iter_batched(|| (), |()| table(black_box(&input)), BatchSize::PerIteration)
        });
    }
    let input = with_ports(1_000);
    group.bench_function("1000-srv-ptr", |b| {
        b.iter_batched(
            || (),
            |()| table_in(&REVERSE, black_box(&input)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, answer_path, table_build);
criterion_main!(benches);
