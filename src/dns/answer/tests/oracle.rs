//! Random tables and random queries against an independent oracle of DESIGN.md's rules,
//! written over presentation-format strings (not wire names, not the table's maps): the
//! response parses, echoes the question, and agrees on rcode, AA, the answer set and SOA
//! presence.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use proptest::prelude::*;

use super::*;
use crate::serviceentry::{Entry, EntryId, Export};
use crate::table::{SourceInput, TableSettings, build};

const ZONES: [&str; 2] = ["global", "b.global"];
const LABELS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
struct Host {
    name: String,
    addresses: Vec<IpAddr>,
}

fn ends_below(name: &str, suffix: &str) -> bool {
    name.ends_with(&format!(".{suffix}"))
}

/// The oracle: (rcode, authoritative, answer addresses, SOA in authority).
fn oracle(hosts: &[Host], qname: &str, qtype: RecordType) -> (ResponseCode, bool, BTreeSet<IpAddr>, bool) {
    // A name exists only where it owns records or lies above one that does (RFC 1034 §3.1,
    // RFC 8020): a host or wildcard without addresses is no name at all.
    let hosts: Vec<&Host> = hosts.iter().filter(|h| !h.addresses.is_empty()).collect();
    let Some(zone) = ZONES
        .iter()
        .filter(|z| qname == **z || ends_below(qname, z))
        .max_by_key(|z| z.len())
    else {
        return (ResponseCode::Refused, false, BTreeSet::new(), false);
    };
    let in_zone = |s: &str| s == *zone || ends_below(s, zone);
    let exact = hosts.iter().find(|h| h.name == qname && !h.name.starts_with("*."));
    let wildcard = || {
        hosts
            .iter()
            .filter(|h| h.name.starts_with("*."))
            .filter(|h| ends_below(qname, &h.name[2..]) && in_zone(&h.name[2..]))
            .max_by_key(|h| h.name.len())
    };
    let host = exact.or_else(wildcard);
    let exists = host.is_some() || qname == *zone || hosts.iter().any(|h| ends_below(&h.name, qname));
    if !exists {
        return (ResponseCode::NXDomain, true, BTreeSet::new(), true);
    }
    let addresses: Vec<IpAddr> = host.map(|h| h.addresses.clone()).unwrap_or_default();
    let answer: BTreeSet<IpAddr> = match qtype {
        RecordType::A => addresses.iter().filter(|a| a.is_ipv4()).copied().collect(),
        RecordType::AAAA => addresses.iter().filter(|a| a.is_ipv6()).copied().collect(),
        _ => BTreeSet::new(),
    };
    let apex_records = qname == *zone && matches!(qtype, RecordType::SOA | RecordType::NS);
    (
        ResponseCode::NoError,
        true,
        answer.clone(),
        answer.is_empty() && !apex_records,
    )
}

fn host_name() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.25),
        prop::collection::vec(prop::sample::select(&LABELS[..]), 0..3),
        prop::sample::select(&ZONES[..]),
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
            |n| !ZONES.contains(&n.as_str()) || !n.starts_with('*'),
        )
}

fn addresses() -> impl Strategy<Value = Vec<IpAddr>> {
    prop::collection::vec(
        prop_oneof![
            (1u8..4).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))),
            (1u16..4).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))),
        ],
        0..4,
    )
}

fn query_name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(&["a", "b", "c", "d", "x", "*"][..]), 0..4),
        prop::sample::select(&["global", "b.global", "example"][..]),
    )
        .prop_map(|(labels, tail)| {
            let mut parts: Vec<&str> = labels;
            parts.push(tail);
            parts.join(".")
        })
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn answers_agree_with_the_oracle(
        hosts in prop::collection::vec((host_name(), addresses()), 0..8),
        queries in prop::collection::vec((query_name(), prop::sample::select(&[RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::SOA, RecordType::NS][..]), any::<u64>(), any::<bool>()), 1..12),
    ) {
        // One entry per host; duplicates merge (union), as the oracle does below.
        let entries: Vec<Entry> = hosts
            .iter()
            .enumerate()
            .map(|(i, (name, addrs))| Entry {
                id: EntryId { namespace: "ns".into(), name: format!("e{i}").into() },
                hosts: vec![name.clone()],
                addresses: addrs.clone(),
                spec_addresses_given: !addrs.is_empty(),
                created: None,
                status_addresses: vec![],
                resolution_none: false,
                export: Export::Mesh,
                warnings: vec![],
            })
            .collect();
        let mut merged: Vec<Host> = Vec::new();
        for (name, addrs) in &hosts {
            match merged.iter_mut().find(|h| &h.name == name) {
                Some(h) => h.addresses.extend(addrs.iter().filter(|a| !h.addresses.contains(a)).collect::<Vec<_>>()),
                None => merged.push(Host { name: name.clone(), addresses: addrs.clone() }),
            }
        }
        let source: Arc<str> = "c".into();
        let table = build(&TableSettings::new(&ZONES).unwrap(), &[SourceInput { name: &source, entries: &entries }], 9, true);
        for (qname, qtype, case, edns) in queries {
            let asked = mixed_case(&qname, case);
            let query = query(&format!("{asked}."), qtype, edns);
            let bytes = respond(&table, &query, Transport::Tcp).expect("a reply");
            let m = Message::from_vec(&bytes).expect("the reply parses");
            prop_assert_eq!(&bytes[12..query.len() - if edns { 11 } else { 0 }], &query[12..query.len() - if edns { 11 } else { 0 }], "question echoed verbatim");
            let (rcode, aa, answer, soa) = oracle(&merged, &qname, qtype);
            prop_assert_eq!(m.metadata.response_code, rcode, "{} {:?}", asked, qtype);
            prop_assert_eq!(m.metadata.authoritative, aa, "{} {:?}", asked, qtype);
            let got: BTreeSet<IpAddr> = m.answers.iter().filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            }).collect();
            prop_assert_eq!(got, answer, "{} {:?}", asked, qtype);
            let has_soa = m.authorities.iter().any(|r| r.record_type() == RecordType::SOA);
            prop_assert_eq!(has_soa, soa, "{} {:?}: SOA in authority", asked, qtype);
            for r in &m.answers {
                prop_assert_eq!(r.name.to_string(), format!("{asked}."), "owner echoes the query's case");
            }
        }
    }
}
