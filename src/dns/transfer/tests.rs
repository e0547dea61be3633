//! Transfers from tables the registry publishes: AXFR holds the zone, IXFR replays onto the
//! previous zone to give the next AXFR (a property over random change sequences), access and
//! readiness come first, serials are per zone.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proptest::prelude::*;

use super::*;
use crate::registry::{Clock, Registry};
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

/// A registry with a fake clock: every change is in a second of its own unless [`Pipeline::now`]
/// is kept.
struct Pipeline {
    registry: Registry,
    id: SourceId,
    clock: Arc<AtomicU32>,
}

impl Pipeline {
    /// After the start-up second.
    fn new(zones: &[&str]) -> Self {
        let mut p = Pipeline::at_start(zones);
        p.tick();
        p
    }

    /// In the start-up second.
    fn at_start(zones: &[&str]) -> Self {
        let settings = TableSettings::new(zones).unwrap();
        let clock = Arc::new(AtomicU32::new(1_700_000_000));
        let now = clock.clone();
        let mut registry = Registry::new(settings, None, Duration::from_secs(10), Arc::new(Metrics::new()))
            .with_clock(Clock(Arc::new(move || now.load(Ordering::SeqCst))));
        let id = SourceId::new(SourceKey::files());
        registry.apply(id.says(Event::Started));
        registry.apply(id.says(Event::Listed(Vec::new())));
        registry.publish();
        Pipeline { registry, id, clock }
    }

    /// A change in the next second.
    fn change(&mut self, changes: Vec<(EntryId, Option<Entry>)>) -> Arc<Table> {
        self.tick();
        self.now(changes)
    }

    /// A change in the current second.
    fn now(&mut self, changes: Vec<(EntryId, Option<Entry>)>) -> Arc<Table> {
        self.registry.apply(self.id.says(Event::Changed(changes)));
        self.registry.publish();
        self.table()
    }

    /// The clock moves one second on; the registry's timer seals what is pending.
    fn tick(&mut self) -> Arc<Table> {
        self.clock.fetch_add(1, Ordering::SeqCst);
        self.registry.seal();
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

/// A burst of changes within one second: answered at once, but the zone keeps its serial
/// (and a transfer gives the zone at that serial) until the registry seals the burst the next
/// second, as one coalesced change.
#[test]
fn a_burst_in_one_second_is_served_at_once_and_transferred_at_one_serial() {
    let mut p = Pipeline::new(&["global"]);
    let t = p.change(vec![(id("a"), Some(entry("a", "a.global", &["240.0.0.1".into()])))]);
    let (before, zone_before) = axfr(&t, "global.");
    let t = p.now(vec![(id("b"), Some(entry("b", "b.global", &["240.0.0.2".into()])))]);
    let t2 = p.now(vec![
        (id("b"), None),
        (id("c"), Some(entry("c", "c.global", &["240.0.0.3".into()]))),
        (id("a"), Some(entry("a", "a.global", &["240.0.0.4".into()]))),
    ]);
    for t in [&t, &t2] {
        assert_eq!(
            axfr(t, "global."),
            (before, zone_before.clone()),
            "the zone at its serial"
        );
        let (m, _, v) = respond(t, &request("global.", RecordType::IXFR, Some(before)), true, true);
        assert_eq!((v, answers(&m).len()), (Verdict::Current, 1));
    }
    assert!(
        t2.host(&crate::name::to_wire("c.global").unwrap()).is_some(),
        "served at once"
    );
    assert!(t2.zone_version(&t2.zones()[0]).is_pending());
    let sealed = p.tick();
    let (after, zone_after) = axfr(&sealed, "global.");
    assert_eq!(after, before + 1, "sealed the next second");
    let (m, _, v) = respond(&sealed, &request("global.", RecordType::IXFR, Some(before)), true, true);
    assert_eq!(v, Verdict::Incremental);
    let records = answers(&m);
    assert_eq!(
        records.len(),
        7,
        "SOA, old SOA, -a 240.0.0.1, new SOA, +a 240.0.0.4, +c, SOA"
    );
    let mut replayed = zone_before.clone();
    assert_eq!(apply_ixfr(&records, before, &mut replayed), after);
    assert_eq!(replayed, zone_after);
    assert!(
        !zone_after.iter().any(|r| r.starts_with("b.global.")),
        "b came and went: no trace"
    );
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
        steps in proptest::collection::vec((proptest::collection::vec(change(), 1..4), any::<bool>()), 1..12)
    ) {
        let mut p = Pipeline::new(&["global", "240.in-addr.arpa"]);
        let mut history: Vec<Vec<(u32, BTreeSet<String>)>> = ZONES.iter().map(|z| vec![axfr(&p.table(), z)]).collect();
        for (step, same_second) in steps {
            let changes = step.into_iter().map(|(n, set)| changed_entry(n, set)).collect();
            // Changes within one second stay pending: transfers give the zone at its serial.
            let t = if same_second { p.now(changes) } else { p.change(changes) };
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

/// The first records in the start-up second: the zone at its serial is the empty start-up
/// one, so no transfer (Not Ready, which a secondary retries) until they are sealed.
#[test]
fn the_first_records_in_the_start_up_second_wait_for_their_serial() {
    let mut p = Pipeline::at_start(&["global"]);
    let t = p.now(vec![(id("a"), Some(entry("a", "a.global", &["240.0.0.1".into()])))]);
    let (_, _, verdict) = respond(&t, &request("global.", RecordType::AXFR, None), true, true);
    assert_eq!(verdict, Verdict::NotReady);
    let t = p.tick();
    let (serial, zone) = axfr(&t, "global.");
    assert!(zone.contains("a.global. 30 A 240.0.0.1"));
    // No IXFR from the start-up serial: another process may have served it.
    let (_, _, verdict) = respond(&t, &request("global.", RecordType::IXFR, Some(serial - 1)), true, true);
    assert_eq!(verdict, Verdict::Full);
}
