//! Random tables and random queries against an independent oracle of DESIGN.md's rules,
//! written over presentation-format strings (not wire names, not the table's maps): the
//! response parses, echoes the question, and agrees on rcode, AA, the answer set (A, AAAA,
//! SRV, PTR), the additional section of SRV answers, SOA presence and its TTLs (the negative
//! TTL), and the Extended DNS Error of stale answers.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use proptest::prelude::*;

use super::*;
use crate::serviceentry::{Entry, EntryId, Export, Port, Protocol};
use crate::table::TableSettings;
use crate::table::testing::table_of;

const FORWARD: [&str; 2] = ["global", "b.mesh"];
const REVERSE_V4: &str = "0.0.10.in-addr.arpa";
const REVERSE_V6: &str = "8.b.d.0.1.0.0.2.ip6.arpa";
const LABELS: [&str; 4] = ["a", "b", "c", "d"];
const PORTS: [(&str, u16, Protocol); 3] = [
    ("http", 80, Protocol::Tcp),
    ("http", 8080, Protocol::Tcp),
    ("dns", 53, Protocol::Udp),
];
const SOURCES: [&str; 2] = ["c1", "c2"];

fn zones() -> Vec<&'static str> {
    [&FORWARD[..], &[REVERSE_V4, REVERSE_V6]].concat()
}

/// One ServiceEntry of the random table: its source, host, addresses and named ports.
#[derive(Debug, Clone)]
struct Written {
    source: usize,
    name: String,
    addresses: Vec<IpAddr>,
    ports: Vec<(&'static str, u16, Protocol)>,
}

/// A host as served: the winning source's addresses and the ports of its entries that gave
/// them.
#[derive(Debug, Clone)]
struct Host {
    name: String,
    source: usize,
    addresses: Vec<IpAddr>,
    ports: BTreeSet<(&'static str, u16, Protocol)>,
}

/// Precedence: the first source (in order) whose entries give the host addresses wins; its
/// entries' addresses are united, and the ports of those that gave addresses.
fn served_hosts(written: &[Written]) -> Vec<Host> {
    let mut names: Vec<&String> = written.iter().map(|w| &w.name).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            (0..SOURCES.len()).find_map(|source| {
                let mine: Vec<&Written> = written
                    .iter()
                    .filter(|w| w.name == *name && w.source == source)
                    .collect();
                let mut addresses: Vec<IpAddr> = Vec::new();
                let mut ports = BTreeSet::new();
                for w in mine.iter().filter(|w| !w.addresses.is_empty()) {
                    addresses.extend(
                        w.addresses
                            .iter()
                            .filter(|a| !addresses.contains(a))
                            .collect::<Vec<_>>(),
                    );
                    ports.extend(w.ports.iter().copied());
                }
                (!addresses.is_empty()).then(|| Host {
                    name: name.clone(),
                    source,
                    addresses,
                    ports,
                })
            })
        })
        .collect()
}

fn ends_below(name: &str, suffix: &str) -> bool {
    name.ends_with(&format!(".{suffix}"))
}

/// The reverse name of an address, presentation format, no trailing dot.
fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let hex = format!("{:032x}", u128::from(v6));
            let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
    }
}

/// What the oracle expects.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    rcode: ResponseCode,
    aa: bool,
    /// Record data of the answer section (A, AAAA, SRV, PTR), as text.
    answer: BTreeSet<String>,
    /// Addresses of the additional section.
    additional: BTreeSet<String>,
    /// An SOA in the authority section.
    soa: bool,
    /// The Extended DNS Error.
    ede: Option<u16>,
}

/// The oracle. `stale`: the stale source, if any.
fn oracle(written: &[Written], stale: Option<usize>, qname: &str, qtype: RecordType) -> Expected {
    let hosts = served_hosts(written);
    let none = |rcode, aa, soa| Expected {
        rcode,
        aa,
        answer: BTreeSet::new(),
        additional: BTreeSet::new(),
        soa,
        ede: None,
    };
    let Some(zone) = zones()
        .into_iter()
        .filter(|z| qname == *z || ends_below(qname, z))
        .max_by_key(|z| z.len())
    else {
        return none(ResponseCode::Refused, false, false);
    };
    let reverse_zone = zone.ends_with(".arpa");
    let in_zone = |s: &str| s == zone || ends_below(s, zone);
    let exact = |h: &&Host| !h.name.starts_with("*.");
    // Owners of records: hosts (in forward zones), SRV owners, PTR owners (in reverse zones).
    let srv_owner =
        |h: &Host, (name, _, proto): &(&str, u16, Protocol)| format!("_{name}._{}.{}", proto.label(), h.name);
    let in_reverse_zone = |r: &str| [REVERSE_V4, REVERSE_V6].iter().any(|z| ends_below(r, z));
    let mut owners: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    for h in hosts.iter().filter(exact) {
        owners.extend(h.ports.iter().map(|p| srv_owner(h, p)));
        owners.extend(h.addresses.iter().map(|ip| reverse(*ip)).filter(|r| in_reverse_zone(r)));
    }
    let exact_host = hosts
        .iter()
        .filter(exact)
        .find(|h| h.name == qname)
        .filter(|_| !reverse_zone);
    let srv: Vec<(&Host, u16)> = hosts
        .iter()
        .filter(exact)
        .flat_map(|h| {
            h.ports
                .iter()
                .filter(|p| srv_owner(h, p) == qname)
                .map(move |p| (h, p.1))
        })
        .collect();
    let ptr: Vec<&Host> = hosts
        .iter()
        .filter(exact)
        .filter(|h| reverse_zone && h.addresses.iter().any(|ip| reverse(*ip) == qname))
        .collect();
    let wildcard = || {
        hosts
            .iter()
            .filter(|h| h.name.starts_with("*."))
            .filter(|h| ends_below(qname, &h.name[2..]) && in_zone(&h.name[2..]))
            .max_by_key(|h| h.name.len())
    };
    let host = if srv.is_empty() && ptr.is_empty() {
        exact_host.or_else(wildcard)
    } else {
        None
    };
    let apex = qname == zone;
    let exists =
        host.is_some() || !srv.is_empty() || !ptr.is_empty() || apex || owners.iter().any(|o| ends_below(o, qname));
    if !exists {
        let mut e = none(ResponseCode::NXDomain, true, true);
        e.ede = stale.map(|_| 3);
        return e;
    }
    let addresses: Vec<IpAddr> = host.map(|h| h.addresses.clone()).unwrap_or_default();
    let (v4, v6) = (
        addresses.iter().filter(|a| a.is_ipv4()).map(IpAddr::to_string),
        addresses.iter().filter(|a| a.is_ipv6()).map(IpAddr::to_string),
    );
    let srv_records = srv.iter().map(|(h, port)| format!("0 100 {port} {}.", h.name));
    let ptr_records = ptr.iter().map(|h| format!("{}.", h.name));
    let (answer, sources): (BTreeSet<String>, Vec<usize>) = match qtype {
        RecordType::A => (v4.collect(), host.map(|h| h.source).into_iter().collect()),
        RecordType::AAAA => (v6.collect(), host.map(|h| h.source).into_iter().collect()),
        RecordType::SRV => (srv_records.collect(), srv.iter().map(|(h, _)| h.source).collect()),
        RecordType::PTR => (ptr_records.collect(), ptr.iter().map(|h| h.source).collect()),
        _ => (BTreeSet::new(), Vec::new()),
    };
    let additional = match qtype {
        RecordType::SRV => srv
            .first()
            .map(|(h, _)| h.addresses.iter().map(IpAddr::to_string).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    };
    let apex_records = apex && matches!(qtype, RecordType::SOA | RecordType::NS);
    let ede = match stale {
        Some(_) if apex_records => None,
        Some(_) if answer.is_empty() => Some(3),
        Some(s) if sources.contains(&s) => Some(3),
        _ => None,
    };
    Expected {
        rcode: ResponseCode::NoError,
        aa: true,
        soa: answer.is_empty() && !apex_records,
        answer,
        additional,
        ede,
    }
}

fn host_name() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.25),
        prop::collection::vec(prop::sample::select(&LABELS[..]), 0..3),
        prop::sample::select(&FORWARD[..]),
    )
        .prop_map(|(wild, labels, zone)| {
            let mut parts: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
            if wild {
                parts.insert(0, "*".into());
            }
            parts.push(zone.to_string());
            parts.join(".")
        })
        .prop_filter(
            "a name below the zone or the zone itself, not a bare wildcard of nothing",
            |n| !FORWARD.contains(&n.as_str()) || !n.starts_with('*'),
        )
}

/// Addresses from a small pool, so that hosts share them: 10.0.0.1-3 (in the v4 reverse
/// zone), 10.1.0.1 (outside it), 2001:db8::1-3 (in the v6 one).
fn addresses() -> impl Strategy<Value = Vec<IpAddr>> {
    prop::collection::vec(
        prop_oneof![
            (1u8..4).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))),
            Just(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))),
            (1u16..4).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))),
        ],
        0..4,
    )
}

fn written() -> impl Strategy<Value = Written> {
    (
        0..SOURCES.len(),
        host_name(),
        addresses(),
        prop::collection::vec(prop::sample::select(&PORTS[..]), 0..3),
    )
        .prop_map(|(source, name, addresses, ports)| Written {
            source,
            name,
            addresses,
            ports,
        })
}

fn query_name() -> impl Strategy<Value = String> {
    let forward = (
        prop::sample::select(&["", "_http._tcp.", "_dns._udp.", "_http._udp.", "_tcp.", "_udp."][..]),
        prop::collection::vec(prop::sample::select(&["a", "b", "c", "d", "x", "*"][..]), 0..4),
        prop::sample::select(&["global", "b.mesh", "mesh", "example"][..]),
    )
        .prop_map(|(service, labels, tail)| {
            let mut parts: Vec<&str> = labels;
            parts.push(tail);
            format!("{service}{}", parts.join("."))
        });
    let reverse = (
        prop_oneof![
            (1u8..5).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))),
            Just(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))),
            (1u16..5).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))),
        ],
        0..4usize,
    )
        .prop_map(|(ip, up)| {
            // The reverse name, or a name up to three labels above it.
            let name = reverse(ip);
            let labels: Vec<&str> = name.split('.').collect();
            labels[up.min(labels.len() - 1)..].join(".")
        });
    prop_oneof![3 => forward, 1 => reverse]
}

/// Randomises the letter case of `name`.
fn mixed_case(name: &str, bits: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn ede_of(m: &Message) -> Option<u16> {
    match m.edns.as_ref()?.options().get(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) => Some(u16::from_be_bytes([data[0], data[1]])),
        _ => None,
    }
}

const QTYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
    RecordType::SRV,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn answers_agree_with_the_oracle(
        written in prop::collection::vec(written(), 0..8),
        stale in prop::option::of(0..SOURCES.len()),
        negative_ttl in prop::sample::select(&[0u32, 5, 60][..]),
        queries in prop::collection::vec((query_name(), prop::sample::select(&QTYPES[..]), any::<u64>(), any::<bool>()), 1..12),
    ) {
        let entries: Vec<Vec<Entry>> = (0..SOURCES.len())
            .map(|source| {
                written
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.source == source)
                    .map(|(i, w)| Entry {
                        id: EntryId { namespace: "ns".into(), name: format!("e{i}").into() },
                        hosts: Box::new([w.name.clone()]),
                        addresses: w.addresses.clone().into(),
                        spec_addresses_given: !w.addresses.is_empty(),
                        created: None,
                        status_addresses: Box::default(),
                        ports: w.ports.iter().map(|&(name, number, protocol)| Port { name: name.into(), number, protocol }).collect(),
                        resolution_none: false,
                        export: Export::Mesh,
                        warnings: Box::default(),
                    })
                    .collect()
            })
            .collect();
        let sources: Vec<(&str, &[Entry])> = SOURCES.iter().copied().zip(entries.iter().map(Vec::as_slice)).collect();
        let mut settings = TableSettings::new(&zones()).unwrap();
        settings.negative_ttl = negative_ttl;
        let mut table = table_of(&settings, &sources, 9, true);
        if let Some(s) = stale {
            table = table.with_stale(Arc::new([Arc::from(SOURCES[s])]));
        }
        for (qname, qtype, case, edns) in queries {
            let asked = mixed_case(&qname, case);
            let query = query(&format!("{asked}."), qtype, edns);
            let bytes = respond(&table, &query, Transport::Tcp).expect("a reply");
            let m = Message::from_vec(&bytes).expect("the reply parses");
            let opt = if edns { 11 } else { 0 };
            prop_assert_eq!(&bytes[12..query.len() - opt], &query[12..query.len() - opt], "question echoed verbatim");
            let want = oracle(&written, stale, &qname, qtype);
            let what = format!("{asked} {qtype:?}");
            prop_assert_eq!(m.metadata.response_code, want.rcode, "{}", what);
            prop_assert_eq!(m.metadata.authoritative, want.aa, "{}", what);
            let got: BTreeSet<String> = m.answers.iter().filter_map(|r| match &r.data {
                RData::A(_) | RData::AAAA(_) | RData::SRV(_) | RData::PTR(_) => Some(r.data.to_string()),
                _ => None,
            }).collect();
            prop_assert_eq!(&got, &want.answer, "{}", what);
            let additional: BTreeSet<String> = m.additionals.iter().map(|r| r.data.to_string()).collect();
            prop_assert_eq!(&additional, &want.additional, "{}: additional", what);
            let soa = m.authorities.iter().find(|r| r.record_type() == RecordType::SOA);
            prop_assert_eq!(soa.is_some(), want.soa, "{}: SOA in authority", what);
            if let Some(soa) = soa {
                prop_assert_eq!(soa.ttl, 30u32.min(negative_ttl), "{}: negative TTL", what);
            }
            prop_assert_eq!(ede_of(&m), want.ede.filter(|_| edns), "{}: EDE", what);
            for r in &m.answers {
                prop_assert_eq!(r.name.to_string(), format!("{asked}."), "owner echoes the query's case");
            }
        }
    }
}
