//! Transfers from tables the registry publishes: AXFR holds the zone, IXFR replays onto the
//! previous zone to give the next AXFR (a property over random change sequences), access and
//! readiness come first, serials are per zone.

use std::collections::BTreeSet;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proptest::prelude::*;

use super::*;
use crate::registry::Registry;
use crate::serviceentry::{Entry, EntryId, yaml};
use crate::source::{Event, SourceId, SourceKey};
use crate::table::TableSettings;

fn entry(name: &str, host: &str, addresses: &[String]) -> Entry {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{hosts: [\"{host}\"], addresses: [{}]}}\n",
        addresses.join(", ")
    );
    yaml::parse(&text, "default").unwrap().entries.remove(0)
}

fn id(name: &str) -> EntryId {
    EntryId {
        namespace: "ns".into(),
        name: name.into(),
    }
}

struct Pipeline {
    registry: Registry,
    id: SourceId,
}

impl Pipeline {
    fn new(zones: &[&str]) -> Self {
        let settings = TableSettings::new(zones).unwrap();
        let mut registry = Registry::new(settings, None, Duration::from_secs(10), Arc::new(Metrics::new()));
        let id = SourceId::new(SourceKey::files());
        registry.apply(id.says(Event::Started));
        registry.apply(id.says(Event::Listed(Vec::new())));
        registry.publish();
        Pipeline { registry, id }
    }

    fn change(&mut self, changes: Vec<(EntryId, Option<Entry>)>) -> Arc<Table> {
        self.registry.apply(self.id.says(Event::Changed(changes)));
        self.registry.publish();
        self.table()
    }

    fn table(&self) -> Arc<Table> {
        self.registry.table().load_full()
    }
}

fn request(zone: &str, kind: RecordType, serial: Option<u32>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 77;
    m.add_query(Query::query(Name::from_ascii(zone).unwrap(), kind));
    if let Some(serial) = serial {
        let n = Name::from_ascii(zone).unwrap();
        let soa = SOA::new(n.clone(), n.clone(), serial, 1, 1, 1, 1);
        m.add_authority(Record::from_rdata(n, 0, RData::SOA(soa)));
    }
    m.to_vec().unwrap()
}

/// Every answer record of a transfer's messages, all NOERROR AA with the ID echoed.
fn answers(messages: &[Vec<u8>]) -> Vec<Record> {
    let mut all = Vec::new();
    for bytes in messages {
        let m = Message::from_vec(bytes).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.id, 77);
        all.extend(m.answers);
    }
    all
}

fn text(r: &Record) -> String {
    format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data)
}

fn serial_of(r: &Record) -> u32 {
    match &r.data {
        RData::SOA(s) => s.serial,
        other => panic!("not an SOA: {other:?}"),
    }
}

/// The zone of an AXFR: its serial and its records but the SOA.
fn axfr(table: &Table, zone: &str) -> (u32, BTreeSet<String>) {
    let (messages, _, verdict) = respond(table, &request(zone, RecordType::AXFR, None), true, true);
    assert_eq!(verdict, Verdict::Full);
    let records = answers(&messages);
    let (first, last) = (&records[0], &records[records.len() - 1]);
    assert_eq!(first.record_type(), RecordType::SOA);
    assert_eq!(text(first), text(last), "the SOA brackets the zone");
    let rest = records[1..records.len() - 1].iter().map(text).collect();
    (serial_of(first), rest)
}

/// Applies an IXFR answer (RFC 1995 §4) onto `zone` at `serial`.
fn apply_ixfr(records: &[Record], serial: u32, zone: &mut BTreeSet<String>) -> u32 {
    let new = serial_of(&records[0]);
    if records.len() == 1 {
        return new;
    }
    assert_eq!(records[1].record_type(), RecordType::SOA, "an incremental answer");
    assert_eq!(serial_of(&records[1]), serial, "starts at the client's serial");
    let mut at = 1;
    let mut current = serial;
    while at < records.len() - 1 {
        assert_eq!(serial_of(&records[at]), current);
        at += 1;
        while records[at].record_type() != RecordType::SOA {
            assert!(zone.remove(&text(&records[at])), "removes what was there");
            at += 1;
        }
        current = serial_of(&records[at]);
        at += 1;
        while records[at].record_type() != RecordType::SOA {
            assert!(zone.insert(text(&records[at])), "adds what was not");
            at += 1;
        }
    }
    assert_eq!(current, new);
    new
}

#[test]
fn axfr_is_the_zone_as_a_secondary_holds_it() {
    let mut p = Pipeline::new(&["global"]);
    let t = p.change(vec![
        (
            id("a"),
            Some(entry(
                "a",
                "a.bar.global",
                &["240.0.0.1".into(), "\"2001:db8::1\"".into()],
            )),
        ),
        (id("w"), Some(entry("w", "*.shop.global", &["240.0.0.9".into()]))),
        (id("n"), Some(entry("n", "none.global", &[]))),
    ]);
    let (serial, zone) = axfr(&t, "global.");
    assert_eq!(serial, t.zone_serial(&t.zones()[0]));
    let want: BTreeSet<String> = [
        "global. 30 NS ns.dns.global.",
        "a.bar.global. 30 A 240.0.0.1",
        "a.bar.global. 30 AAAA 2001:db8::1",
        "*.shop.global. 30 A 240.0.0.9",
    ]
    .map(String::from)
    .into();
    assert_eq!(zone, want);
}

#[test]
fn access_comes_first_then_the_zone_then_readiness() {
    let mut p = Pipeline::new(&["global"]);
    let t = p.change(vec![(id("a"), Some(entry("a", "a.global", &["240.0.0.1".into()])))]);
    let code = |messages: &[Vec<u8>]| {
        assert_eq!(messages.len(), 1);
        Message::from_vec(&messages[0]).unwrap().metadata.response_code
    };
    let q = request("global.", RecordType::AXFR, None);
    let (m, _, v) = respond(&t, &q, false, false);
    assert_eq!((code(&m), v), (ResponseCode::Refused, Verdict::Refused));
    let (m, _, v) = respond(&t, &request("a.global.", RecordType::AXFR, None), true, true);
    assert_eq!((code(&m), v), (ResponseCode::NotAuth, Verdict::NotAuth));
    let (m, _, v) = respond(&t, &q, true, false);
    assert_eq!((code(&m), v), (ResponseCode::ServFail, Verdict::NotReady));
    // With EDNS, the refusal says why: EDE 18 Prohibited.
    let mut with_edns = Message::from_vec(&q).unwrap();
    with_edns.set_edns(hickory_proto::op::Edns::new());
    let (m, _, _) = respond(&t, &with_edns.to_vec().unwrap(), false, true);
    let reply = Message::from_vec(&m[0]).unwrap();
    let opt = reply.edns.expect("OPT echoed");
    let ede = opt.option(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15));
    assert!(
        matches!(ede, Some(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(15, data)) if data == &[0, 18]),
        "{ede:?}"
    );
}

#[test]
fn each_zone_has_its_own_serial_and_ixfr_from_the_current_serial_is_one_soa() {
    let mut p = Pipeline::new(&["global", "mesh.internal"]);
    let before = p.table();
    let t = p.change(vec![(id("a"), Some(entry("a", "a.global", &["240.0.0.1".into()])))]);
    let zone = |t: &Table, name: &str| t.zone_serial(t.zones().iter().find(|z| &*z.name == name).unwrap());
    assert!(crate::table::serial_gt(zone(&t, "global"), zone(&before, "global")));
    assert_eq!(
        zone(&t, "mesh.internal"),
        zone(&before, "mesh.internal"),
        "untouched zone"
    );
    let current = zone(&t, "global");
    let (m, _, v) = respond(&t, &request("global.", RecordType::IXFR, Some(current)), true, true);
    assert_eq!(v, Verdict::Current);
    let records = answers(&m);
    assert_eq!(records.len(), 1);
    assert_eq!(serial_of(&records[0]), current);
    // An unknown serial gets the whole zone.
    let (m, _, v) = respond(
        &t,
        &request("global.", RecordType::IXFR, Some(current.wrapping_sub(1000))),
        true,
        true,
    );
    assert_eq!(v, Verdict::Full);
    assert!(answers(&m).len() > 2);
}

/// One random change: entry `n` set to hosts `hs` (11: a wildcard) with addresses (few, so
/// that hosts share them, up to past the PTR cap) and ports (none; `http` 80; `http` 8080 and
/// `grpc` 9000), or deleted.
type Change = (u8, Option<(Vec<u8>, Vec<u8>, u8)>);

fn change() -> impl Strategy<Value = Change> {
    let hosts = proptest::collection::vec(0..12u8, 1..5);
    let addresses = proptest::collection::vec(0..3u8, 0..3);
    (0..10u8, proptest::option::weighted(0.8, (hosts, addresses, 0..3u8)))
}

fn changed_entry(n: u8, set: Option<(Vec<u8>, Vec<u8>, u8)>) -> (EntryId, Option<Entry>) {
    let name = format!("e{n}");
    let entry = set.map(|(hosts, addresses, ports)| {
        let hosts: Vec<String> = hosts
            .iter()
            .map(|&h| if h == 11 { "\"*.w.global\"".into() } else { format!("h{h}.global") })
            .collect();
        let addresses: Vec<String> = addresses.iter().map(|a| format!("240.0.0.{a}")).collect();
        let ports = match ports {
            0 => "[]",
            1 => "[{name: http, number: 80, protocol: HTTP}]",
            _ => "[{name: http, number: 8080, protocol: HTTP}, {name: grpc, number: 9000, protocol: GRPC}]",
        };
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{hosts: [{}], addresses: [{}], ports: {ports}}}\n",
            hosts.join(", "),
            addresses.join(", ")
        );
        yaml::parse(&text, "default").unwrap().entries.remove(0)
    });
    (id(&name), entry)
}

/// The zones the property runs over: the forward zone (A, SRV, wildcards) and the reverse
/// zone of the addresses (PTR).
const ZONES: [&str; 2] = ["global.", "240.in-addr.arpa."];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn each_ixfr_applied_to_the_previous_zone_gives_the_next_axfr(
        steps in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..12)
    ) {
        let mut p = Pipeline::new(&["global", "240.in-addr.arpa"]);
        let mut history: Vec<Vec<(u32, BTreeSet<String>)>> = ZONES.iter().map(|z| vec![axfr(&p.table(), z)]).collect();
        for step in steps {
            let t = p.change(step.into_iter().map(|(n, set)| changed_entry(n, set)).collect());
            for (zone, history) in ZONES.iter().zip(&mut history) {
                let (serial, records) = axfr(&t, zone);
                let (last_serial, last) = history.last().unwrap();
                prop_assert_eq!(
                    serial == *last_serial,
                    records == *last,
                    "{}: the serial moves exactly when the records do", zone
                );
                history.push((serial, records));
                // From every earlier version: replaying the IXFR gives this AXFR.
                for (serial, records) in history.iter() {
                    let (m, _, _) = respond(&t, &request(zone, RecordType::IXFR, Some(*serial)), true, true);
                    let answer = answers(&m);
                    let mut replayed = records.clone();
                    let got = if answer.len() > 1 && answer[1].record_type() != RecordType::SOA {
                        replayed = answer[1..answer.len() - 1].iter().map(text).collect();
                        serial_of(&answer[0])
                    } else {
                        apply_ixfr(&answer, *serial, &mut replayed)
                    };
                    let (now, want) = history.last().unwrap();
                    prop_assert_eq!(got, *now);
                    prop_assert_eq!(&replayed, want);
                }
            }
        }
    }
}
