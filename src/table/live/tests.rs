//! Incremental = from scratch: after any sequence of changes, the live table serves exactly
//! what a table built fresh from the same entries serves — A, AAAA, and the SRV and PTR
//! records derived from them — and says so (`records_changed`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::serviceentry::{Export, Port, Protocol};
use crate::table::testing::table_of;
use crate::table::{AutoAllocate, ExportMode, Lookup};

/// Hosts overlapping on purpose: parents and children, wildcards, case, a partial wildcard,
/// a name in a second zone and one outside every zone.
const HOSTS: &[&str] = &[
    "x.global",
    "y.x.global",
    "*.x.global",
    "*.w.global",
    "a.b.c.global",
    "X.Global.",
    "*q.global",
    "s.sub.example",
    "other.example",
];
const ADDRESSES: &[&str] = &["1.1.1.1", "2.2.2.2", "2001:db8::1"];
/// Named ports: two names, one with two numbers, one over UDP.
const PORTS: &[(&str, u16, Protocol)] = &[
    ("http", 80, Protocol::Tcp),
    ("http", 8080, Protocol::Tcp),
    ("dns", 53, Protocol::Udp),
];

fn entry() -> impl Strategy<Value = Entry> {
    (
        (0..2usize, 0..5usize),
        prop::collection::vec(prop::sample::select(HOSTS), 1..3),
        prop::collection::vec(prop::sample::select(ADDRESSES), 0..3),
        prop::option::of((prop::sample::select(HOSTS), prop::sample::select(ADDRESSES))),
        any::<bool>(),
        prop::sample::select(&[Export::Mesh, Export::Namespaces, Export::Nowhere][..]),
        prop::option::of(prop::sample::select(
            &["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"][..],
        )),
        prop::collection::vec(prop::sample::select(PORTS), 0..3),
    )
        .prop_map(
            |((ns, name), hosts, addresses, status, resolution_none, export, created, ports)| {
                let addresses: Vec<IpAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
                Entry {
                    id: EntryId {
                        namespace: format!("ns{ns}").into(),
                        name: format!("e{name}").into(),
                    },
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    spec_addresses_given: !addresses.is_empty(),
                    addresses: addresses.into(),
                    created: created.map(Into::into),
                    status_addresses: status
                        .map(|(h, a)| (crate::serviceentry::normalize_host(h), a.parse().unwrap()))
                        .into_iter()
                        .collect(),
                    ports: ports
                        .iter()
                        .map(|&(name, number, protocol)| Port {
                            name: name.into(),
                            number,
                            protocol,
                        })
                        .collect(),
                    resolution_none,
                    export,
                    warnings: Box::default(),
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(usize, Entry),
    Delete(usize, (usize, usize)),
    Replace(usize, Vec<Entry>),
    RemoveSource(usize),
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, entry()).prop_map(|(s, e)| Op::Upsert(s, e)),
        2 => (0..3usize, (0..2usize, 0..5usize)).prop_map(|(s, id)| Op::Delete(s, id)),
        1 => (0..3usize, prop::collection::vec(entry(), 0..5)).prop_map(|(s, e)| Op::Replace(s, e)),
        1 => (0..3usize).prop_map(Op::RemoveSource),
        2 => Just(Op::Commit),
    ]
}

fn settings() -> impl Strategy<Value = TableSettings> {
    (
        any::<bool>(),
        prop::option::of(prop::sample::select(ADDRESSES)),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(two_zones, default, allocate, all, skip_none)| {
            // Reverse zones: the v4 ones hold 1.1.1.1 and 2.2.2.2, the v6 one 2001:db8::1.
            let zones: &[&str] = if two_zones {
                &[
                    "global",
                    "sub.example",
                    "1.in-addr.arpa",
                    "2.in-addr.arpa",
                    "8.b.d.0.1.0.0.2.ip6.arpa",
                ]
            } else {
                &["global", "1.in-addr.arpa"]
            };
            let mut s = TableSettings::new(zones).unwrap();
            s.default_address = default.map(|a| a.parse().unwrap());
            s.auto_allocate = if allocate {
                AutoAllocate::IstioLegacy
            } else {
                AutoAllocate::None
            };
            s.export = if all { ExportMode::All } else { ExportMode::Mesh };
            s.skip_resolution_none = skip_none;
            s
        })
}

type Model = BTreeMap<usize, BTreeMap<(EntryId, u32), Entry>>;

fn key(source: usize) -> (usize, Arc<str>) {
    (source, format!("source-{source}").into())
}

fn fresh(settings: &TableSettings, model: &Model) -> Table {
    let names: Vec<Arc<str>> = model.keys().map(|s| key(*s).1).collect();
    let entries: Vec<Vec<Entry>> = model.values().map(|m| m.values().cloned().collect()).collect();
    let sources: Vec<(&str, &[Entry])> = names
        .iter()
        .map(|n| &**n)
        .zip(entries.iter().map(Vec::as_slice))
        .collect();
    table_of(settings, &sources, 1, true)
}

/// Every name the test can ask about, with what the table says of it.
fn served(t: &Table) -> Vec<(String, String)> {
    let mut names: Vec<String> = HOSTS.iter().map(|h| h.replace('*', "any")).collect();
    for host in [
        "x.global",
        "y.x.global",
        "a.b.c.global",
        "s.sub.example",
        "any.x.global",
    ] {
        for owner in ["_http._tcp", "_dns._udp", "_dns._tcp", "_tcp", "_udp"] {
            names.push(format!("{owner}.{host}"));
        }
    }
    for ip in ADDRESSES {
        let wire = crate::table::derived::reverse_name(ip.parse().unwrap());
        let mut text = crate::name::to_text(&wire);
        text.pop();
        // The reverse name, and the names above it up to its zone.
        let labels: Vec<&str> = text.split('.').collect();
        names.extend((0..labels.len() - 1).map(|i| labels[i..].join(".")));
    }
    names.extend(
        [
            "x.global",
            "b.c.global",
            "c.global",
            "w.global",
            "z.y.x.global",
            "sub.example",
            "global",
        ]
        .map(String::from),
    );
    names
        .into_iter()
        .map(|n| {
            let said = match t.lookup(&crate::name::to_wire(&n).unwrap()) {
                Lookup::OutOfZone => "out".to_string(),
                Lookup::NxDomain { zone } => format!("nx in {}", zone.name),
                Lookup::Exists {
                    zone,
                    host,
                    srv,
                    ptr,
                    apex,
                    addresses,
                } => format!(
                    "{} apex={apex} {:?} {:?} {:?} {:?} {:?}",
                    zone.name,
                    host.map(|h| (&h.name, &h.a, &h.aaaa)),
                    addresses.a().collect::<Vec<_>>(),
                    addresses.aaaa().collect::<Vec<_>>(),
                    srv.map(|s| (&s.host().name, s.target(), s.ports().collect::<Vec<_>>())),
                    ptr.map(|p| p
                        .all()
                        .iter()
                        .map(|t| (t.wire().to_vec(), t.source().clone()))
                        .collect::<Vec<_>>()),
                ),
            };
            (n, said)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn incremental_equals_from_scratch(settings in settings(), ops in prop::collection::vec(op(), 1..25)) {
        let mut live: Live<(usize, Arc<str>)> = Live::new(settings.clone());
        let mut model = Model::new();
        let mut before = fresh(&settings, &model);
        for op in ops.into_iter().chain([Op::Commit]) {
            match op {
                Op::Upsert(s, e) => {
                    live.upsert(&key(s), e.clone());
                    model.entry(s).or_default().insert((e.id.clone(), 0), e);
                }
                Op::Delete(s, (ns, name)) => {
                    let id = EntryId { namespace: format!("ns{ns}").into(), name: format!("e{name}").into() };
                    live.delete(&key(s), &id);
                    if let Some(m) = model.get_mut(&s) {
                        m.remove(&(id, 0));
                    }
                }
                Op::Replace(s, entries) => {
                    live.replace(&key(s), entries.clone());
                    let m = model.entry(s).or_default();
                    m.clear();
                    for e in entries {
                        let n = m.keys().filter(|(id, _)| *id == e.id).count() as u32;
                        m.insert((e.id.clone(), n), e);
                    }
                }
                Op::RemoveSource(s) => {
                    live.remove_source(&key(s));
                    model.remove(&s);
                }
                Op::Commit => {
                    // Each distinct entry is held once, shared by the sources holding it.
                    let distinct: std::collections::HashSet<&Entry> = model.values().flat_map(|m| m.values()).collect();
                    prop_assert_eq!(live.interned.len(), distinct.len());
                    for set in live.sources.values() {
                        for h in set.entries.iter() {
                            prop_assert!(live.interned.get(&*h.entry).is_some_and(|held| Arc::ptr_eq(held, &h.entry)));
                        }
                    }
                    let commit = live.commit();
                    let got = live.table(1, true);
                    let want = fresh(&settings, &model);
                    prop_assert_eq!(served(&got), served(&want));
                    prop_assert_eq!(got.hosts(), want.hosts());
                    for zone in want.zones() {
                        prop_assert_eq!(got.records(zone), want.records(zone), "zone {}", zone.name);
                    }
                    prop_assert_eq!(got.skipped(), want.skipped());
                    prop_assert_eq!(got.host_count(), want.hosts().len());
                    prop_assert_eq!(got.conflict_count(), want.conflicts().len());
                    // Served records: a host without addresses serves none.
                    let records = |t: &Table| t.zones().iter().flat_map(|z| t.records(z)).collect::<Vec<_>>();
                    prop_assert_eq!(commit.records_changed, records(&before) != records(&want));
                    let old: Vec<&Conflict> = before.conflicts();
                    for c in &commit.new_conflicts {
                        prop_assert!(!old.contains(&c) && want.conflicts().contains(&c));
                    }
                    before = want;
                }
            }
        }
    }
}

/// A file may hold one ID twice: removing the second leaves the first serving the host.
#[test]
fn entries_of_one_id_are_told_apart() {
    let entry = |address: &str| Entry {
        id: EntryId {
            namespace: "ns".into(),
            name: "twice".into(),
        },
        hosts: Box::new(["h.global".into()]),
        addresses: Box::new([address.parse().unwrap()]),
        spec_addresses_given: true,
        created: None,
        status_addresses: Box::default(),
        ports: Box::default(),
        resolution_none: false,
        export: Export::Mesh,
        warnings: Box::default(),
    };
    let mut live: Live<(usize, Arc<str>)> = Live::new(TableSettings::new(&["global"]).unwrap());
    live.replace(&key(0), [entry("1.1.1.1"), entry("2.2.2.2")]);
    live.commit();
    live.replace(&key(0), [entry("1.1.1.1")]);
    live.commit();
    let hosts = live
        .table(1, true)
        .hosts()
        .into_iter()
        .map(|h| h.addresses())
        .collect::<Vec<_>>();
    assert_eq!(hosts, [vec!["1.1.1.1".parse::<IpAddr>().unwrap()]]);
}

#[test]
fn a_node_is_named_by_every_byte_of_its_name_held_in_place_or_not() {
    // The longest name held in the node, one byte longer (behind the pointer), and one byte
    // changed at either end: the hash table calls `is` on every node whose 7-bit tag matches,
    // so names of the same length must be told apart by the comparison itself.
    for len in [Key::MAX, Key::MAX + 1] {
        let wire = name::to_wire(&format!("{}.global", "a".repeat(len - 9))).unwrap();
        assert_eq!(wire.len(), len);
        let node = Node::new(&wire, None);
        assert!(node.is(&wire), "{len}");
        for at in [1, len - 2] {
            let mut other = wire.clone();
            other[at] = b'b';
            assert!(!node.is(&other), "{len}: byte {at}");
        }
        assert!(!node.is(&wire[..len - 1]), "{len}: a prefix");
    }
}
