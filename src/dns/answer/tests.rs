//! DESIGN.md "Answers", row by row, checked with hickory-proto as an independent codec.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::*;

use crate::table::TableSettings;
use crate::table::testing::{entries, se, table_of};

const ENTRIES: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: bar}
spec: {hosts: [httpbin.bar.global], addresses: [240.0.0.2]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dual}
spec: {hosts: [dual.global], addresses: [240.0.0.3, \"2001:db8::3\"]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec: {hosts: [\"*.shop.global\"], addresses: [240.0.0.10]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bare}
spec: {hosts: [bare.global, a.deep.global, bare.shop.global], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bare-wild}
spec: {hosts: [\"*.nowhere.global\", \"*.eu.shop.global\"], resolution: DNS}
";

fn table_with(extra: &str, synced: bool) -> Table {
    let mut text = ENTRIES.to_string();
    text.push_str(extra);
    let settings = TableSettings::new(&["global"]).unwrap();
    table_of(&settings, &[("c1", &entries(&text, "default"))], 2024, synced)
}

fn table() -> Table {
    table_with("", true)
}

/// `n` IPv4 and `n` IPv6 addresses.
fn many_addresses(n: usize) -> (Vec<String>, Vec<String>) {
    let v4 = (0..n).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)).collect();
    let v6 = (0..n).map(|i| format!("2001:db8::{:x}", i + 1)).collect();
    (v4, v6)
}

/// Several A and AAAA records for one host.
fn many(n: usize) -> String {
    let (v4, v6) = many_addresses(n);
    let v6: Vec<String> = v6.iter().map(|a| format!("\"{a}\"")).collect();
    let spec = format!(
        "{{hosts: [many.global], addresses: [{}, {}]}}",
        v4.join(", "),
        v6.join(", ")
    );
    se("many", &spec)
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0xbeef;
    m.metadata.recursion_desired = true;
    m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn respond(table: &Table, msg: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match answer(table, msg, transport, Mode::default(), &mut Shuffler::new(1), &mut out) {
        Outcome::Reply => Some(out),
        Outcome::Drop => None,
        Outcome::Forward => panic!("nothing is forwarded without forwarding"),
        Outcome::Transfer => panic!("a transfer is not a reply of the answer path"),
    }
}

#[test]
fn transfers_go_to_the_transfer_path_whatever_the_name_even_before_the_first_sync_and_are_never_forwarded() {
    for synced in [true, false] {
        let t = table_of(&TableSettings::new(&["global"]).unwrap(), &[], 7, synced);
        let asked = [
            (RecordType::AXFR, Transport::Tcp),
            (RecordType::IXFR, Transport::Tcp),
            (RecordType::IXFR, Transport::Udp),
        ];
        for ((qtype, transport), name) in asked
            .into_iter()
            .flat_map(|a| ["global.", "bar.global.", "example.com."].map(|n| (a, n)))
        {
            for forwarding in [false, true] {
                let mut out = vec![1, 2, 3];
                let q = query(name, qtype, false);
                let outcome = answer(&t, &q, transport, Mode { forwarding }, &mut Shuffler::new(1), &mut out);
                assert_eq!(
                    outcome,
                    Outcome::Transfer,
                    "{name} {qtype} {transport:?} forwarding={forwarding}"
                );
                assert!(out.is_empty());
            }
        }
        // AXFR over UDP is never a transfer (RFC 5936 §4.2), in the zone or out of it.
        for name in ["global.", "example.com."] {
            let m = ask(&t, &query(name, RecordType::AXFR, false), Transport::Udp);
            assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{name} AXFR over UDP");
        }
    }
}

/// The UDP answer to `msg` with the shuffle seeded by `seed`.
fn seeded(table: &Table, msg: &[u8], seed: u64) -> Message {
    let mut out = Vec::new();
    let outcome = answer(
        table,
        msg,
        Transport::Udp,
        Mode::default(),
        &mut Shuffler::new(seed),
        &mut out,
    );
    assert_eq!(outcome, Outcome::Reply);
    Message::from_vec(&out).unwrap()
}

fn ask(table: &Table, msg: &[u8], transport: Transport) -> Message {
    let bytes = respond(table, msg, transport).expect("a reply");
    let m = Message::from_vec(&bytes).expect("the reply parses");
    assert_eq!(m.metadata.id, u16::from_be_bytes([msg[0], msg[1]]), "ID echoed");
    m
}

fn records(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

struct Case {
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
}

/// The apex SOA as an answer: TTL `--ttl`, MINIMUM `--negative-ttl` (default 5).
const SOA_RR: &str = "global. 30 SOA ns.dns.global. hostmaster.global. 2024 3600 600 86400 5";
/// The SOA of a negative answer: TTL min(SOA TTL, MINIMUM) (RFC 2308 §3).
const SOA_NEG: &str = "global. 5 SOA ns.dns.global. hostmaster.global. 2024 3600 600 86400 5";

#[test]
fn answers_row_by_row() {
    use RecordType::*;
    use ResponseCode::*;
    let cases = [
        Case {
            name: "httpbin.bar.global.",
            qtype: A,
            rcode: NoError,
            answer: &["httpbin.bar.global. 30 A 240.0.0.2"],
            authority: &[],
        },
        Case {
            name: "httpbin.bar.global.",
            qtype: AAAA,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "httpbin.bar.global.",
            qtype: MX,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "httpbin.bar.global.",
            qtype: TXT,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "httpbin.bar.global.",
            qtype: SOA,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "dual.global.",
            qtype: AAAA,
            rcode: NoError,
            answer: &["dual.global. 30 AAAA 2001:db8::3"],
            authority: &[],
        },
        Case {
            name: "dual.global.",
            qtype: ANY,
            rcode: NoError,
            answer: &["dual.global. 30 A 240.0.0.3", "dual.global. 30 AAAA 2001:db8::3"],
            authority: &[],
        },
        Case {
            name: "bar.global.",
            qtype: A,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        // Hosts that no rule gives an address, and wildcards without addresses, are not
        // names, and make no empty non-terminals (RFC 8020).
        Case {
            name: "bare.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "bare.global.",
            qtype: AAAA,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "a.deep.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "deep.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "x.nowhere.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "nowhere.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "bare.shop.global.",
            qtype: A,
            rcode: NoError,
            answer: &["bare.shop.global. 30 A 240.0.0.10"],
            authority: &[],
        },
        Case {
            name: "x.eu.shop.global.",
            qtype: A,
            rcode: NoError,
            answer: &["x.eu.shop.global. 30 A 240.0.0.10"],
            authority: &[],
        },
        Case {
            name: "nope.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "x.httpbin.bar.global.",
            qtype: A,
            rcode: NXDomain,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "api.shop.global.",
            qtype: A,
            rcode: NoError,
            answer: &["api.shop.global. 30 A 240.0.0.10"],
            authority: &[],
        },
        Case {
            name: "a.b.shop.global.",
            qtype: A,
            rcode: NoError,
            answer: &["a.b.shop.global. 30 A 240.0.0.10"],
            authority: &[],
        },
        Case {
            name: "shop.global.",
            qtype: A,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "global.",
            qtype: SOA,
            rcode: NoError,
            answer: &[SOA_RR],
            authority: &[],
        },
        Case {
            name: "global.",
            qtype: NS,
            rcode: NoError,
            answer: &["global. 30 NS ns.dns.global."],
            authority: &[],
        },
        Case {
            name: "global.",
            qtype: A,
            rcode: NoError,
            answer: &[],
            authority: &[SOA_NEG],
        },
        Case {
            name: "global.",
            qtype: ANY,
            rcode: NoError,
            answer: &[SOA_RR, "global. 30 NS ns.dns.global."],
            authority: &[],
        },
        Case {
            name: "global.",
            qtype: AXFR,
            rcode: NotImp,
            answer: &[],
            authority: &[],
        },
        Case {
            name: "example.com.",
            qtype: A,
            rcode: Refused,
            answer: &[],
            authority: &[],
        },
        Case {
            name: ".",
            qtype: NS,
            rcode: Refused,
            answer: &[],
            authority: &[],
        },
    ];
    let t = table();
    for c in cases {
        for edns in [false, true] {
            let m = ask(&t, &query(c.name, c.qtype, edns), Transport::Udp);
            let what = format!("{} {:?} edns={edns}", c.name, c.qtype);
            assert_eq!(m.metadata.response_code, c.rcode, "{what}");
            assert_eq!(records(&m.answers), c.answer, "{what}");
            assert_eq!(records(&m.authorities), c.authority, "{what}");
            assert!(m.additionals.is_empty(), "{what}");
            let authoritative = !matches!(c.rcode, Refused | NotImp);
            assert_eq!(m.metadata.authoritative, authoritative, "{what}: AA");
            assert!(!m.metadata.truncation, "{what}");
            assert!(m.metadata.recursion_desired, "{what}: RD copied");
            assert!(!m.metadata.recursion_available, "{what}");
            assert_eq!(m.queries.len(), 1, "{what}: question echoed");
            assert_eq!(m.queries[0].query_type(), c.qtype, "{what}");
            assert_eq!(m.edns.is_some(), edns, "{what}: OPT only when asked");
            if let Some(e) = &m.edns {
                assert_eq!(e.max_payload(), EDNS_UDP_SIZE);
                assert_eq!(e.version(), 0);
            }
        }
    }
}

#[test]
fn question_and_owner_names_echo_the_query_case() {
    let t = table();
    for name in ["HttpBin.BAR.gLoBaL.", "API.Shop.GLOBAL.", "NoPe.Global."] {
        let q = query(name, RecordType::A, false);
        let r = respond(&t, &q, Transport::Udp).unwrap();
        let qlen = q.len() - 12;
        assert_eq!(r[12..12 + qlen], q[12..], "question verbatim");
        let m = Message::from_vec(&r).unwrap();
        for rec in m.answers.iter() {
            assert_eq!(rec.name.to_string(), name, "owner keeps the case");
        }
        for rec in m.authorities.iter() {
            assert!(name.ends_with(&rec.name.to_string()), "{} in {name}", rec.name);
        }
    }
}

#[test]
fn edns_flags_and_versions() {
    let t = table();
    let mut m = Message::from_vec(&query("httpbin.bar.global.", RecordType::A, true)).unwrap();
    m.edns.as_mut().unwrap().set_dnssec_ok(true);
    m.metadata.checking_disabled = true;
    let r = ask(&t, &m.to_vec().unwrap(), Transport::Udp);
    assert!(r.edns.as_ref().unwrap().flags().dnssec_ok, "DO copied");
    assert!(r.metadata.checking_disabled, "CD copied");
    assert!(!r.metadata.authentic_data);

    m.edns.as_mut().unwrap().set_version(1);
    let r = ask(&t, &m.to_vec().unwrap(), Transport::Udp);
    assert_eq!(u16::from(r.metadata.response_code), 16, "BADVERS");
    assert!(r.answers.is_empty());
    assert_eq!(r.edns.as_ref().unwrap().version(), 0);
}

/// How many records of `size` bytes (name compressed) fit a reply of at most `limit` bytes to
/// `query`: header and question, then the records, then the OPT when the query had one.
fn fitting(query: &[u8], limit: usize, size: usize) -> usize {
    let opt = if Message::from_vec(query).unwrap().edns.is_some() {
        11
    } else {
        0
    };
    let question = query.len() - wire::HEADER_LEN - opt;
    (limit - wire::HEADER_LEN - question - opt) / size
}

/// The answer's addresses, checked distinct and all from `many(n)`.
fn distinct_addresses(m: &Message, n: usize) -> std::collections::BTreeSet<String> {
    let (v4, v6) = many_addresses(n);
    let got: std::collections::BTreeSet<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(got.len(), m.answers.len(), "no address twice");
    for a in &got {
        assert!(v4.contains(a) || v6.contains(a), "{a} is the host's");
    }
    got
}

#[test]
fn udp_answers_too_large_carry_tc_and_every_record_that_fits() {
    let t = table_with(&many(50), true);
    // 50 A records: 50 × 16 bytes > 512 without EDNS, < 1232 with it.
    let q = query("many.global.", RecordType::A, false);
    let bytes = respond(&t, &q, Transport::Udp).unwrap();
    let r = Message::from_vec(&bytes).unwrap();
    assert!(r.metadata.truncation);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), fitting(&q, 512, 16), "every whole record that fits");
    assert!(r.answers.len() < 50 && bytes.len() <= 512 && bytes.len() + 16 > 512);
    distinct_addresses(&r, 50);
    assert_eq!(r.queries.len(), 1);
    let r = ask(&t, &query("many.global.", RecordType::A, true), Transport::Udp);
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 50);
    // 50 AAAA records: 50 × 28 bytes > 1232 even with EDNS; a larger buffer is capped at 1232,
    // and the OPT record stays.
    let mut big = Message::from_vec(&query("many.global.", RecordType::AAAA, true)).unwrap();
    big.edns.as_mut().unwrap().set_max_payload(4096);
    let big = big.to_vec().unwrap();
    let bytes = respond(&t, &big, Transport::Udp).unwrap();
    let r = Message::from_vec(&bytes).unwrap();
    assert!(r.metadata.truncation && r.edns.is_some());
    assert_eq!(r.answers.len(), fitting(&big, 1232, 28));
    assert!(bytes.len() <= 1232);
    distinct_addresses(&r, 50);
    let r = ask(&t, &big, Transport::Tcp);
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 50, "TCP carries the whole answer");
}

#[test]
fn truncated_answers_are_a_random_subset() {
    let t = table_with(&many(50), true);
    let q = query("many.global.", RecordType::A, false);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..20 {
        seen.extend(distinct_addresses(&seeded(&t, &q, seed), 50));
    }
    assert_eq!(seen.len(), 50, "every address is served to some client");
}

#[test]
fn tcp_never_truncates_and_serves_what_fits_one_message() {
    let t = table_with(&many(5000), true);
    for (qtype, size) in [(RecordType::A, 16), (RecordType::AAAA, 28)] {
        for edns in [false, true] {
            let q = query("many.global.", qtype, edns);
            let bytes = respond(&t, &q, Transport::Tcp).unwrap();
            let r = Message::from_vec(&bytes).unwrap();
            let what = format!("{qtype:?} edns={edns}");
            assert!(!r.metadata.truncation, "{what}: no TC over TCP");
            assert_eq!(r.answers.len(), fitting(&q, 65535, size), "{what}");
            assert_eq!(r.edns.is_some(), edns, "{what}");
            assert!(bytes.len() <= 65535, "{what}");
            distinct_addresses(&r, 5000);
        }
    }
}

#[test]
fn any_is_bounded() {
    let t = table_with(&many(20), true);
    let r = ask(&t, &query("many.global.", RecordType::ANY, true), Transport::Tcp);
    assert_eq!(r.answers.len(), ANY_MAX_ADDRESSES);
}

#[test]
fn answers_are_shuffled_but_complete() {
    let t = table_with(&many(6), true);
    let q = query("many.global.", RecordType::A, true);
    let mut orders = std::collections::HashSet::new();
    for seed in 0..50 {
        let mut got = records(&seeded(&t, &q, seed).answers);
        orders.insert(got.clone());
        got.sort();
        let mut want: Vec<String> = (1..=6).map(|i| format!("many.global. 30 A 10.0.0.{i}")).collect();
        want.sort();
        assert_eq!(got, want);
    }
    assert!(orders.len() > 10, "only {} orders in 50 answers", orders.len());
}

#[test]
fn not_synced_is_servfail_in_zone_only() {
    let t = table_with("", false);
    let r = ask(&t, &query("httpbin.bar.global.", RecordType::A, false), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(!r.metadata.authoritative);
    let r = ask(&t, &query("nope.global.", RecordType::A, false), Transport::Udp);
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "never NXDOMAIN before sync"
    );
    let r = ask(&t, &query("example.com.", RecordType::A, false), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn classes() {
    let t = table();
    for (class, want) in [
        (DNSClass::CH, ResponseCode::Refused),
        (DNSClass::ANY, ResponseCode::NoError),
    ] {
        let mut m = Message::from_vec(&query("httpbin.bar.global.", RecordType::A, false)).unwrap();
        m.queries[0].set_query_class(class);
        let r = ask(&t, &m.to_vec().unwrap(), Transport::Udp);
        assert_eq!(r.metadata.response_code, want, "{class:?}");
    }
}

#[test]
fn opcodes_other_than_query_are_notimp() {
    let t = table();
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut m = Message::from_vec(&query("httpbin.bar.global.", RecordType::A, false)).unwrap();
        m.metadata.op_code = op;
        let r = ask(&t, &m.to_vec().unwrap(), Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(r.metadata.op_code, op);
    }
}

fn raw(header: [u8; 12], rest: &[u8]) -> Vec<u8> {
    let mut v = header.to_vec();
    v.extend_from_slice(rest);
    v
}

const Q: &[u8] = b"\x04dual\x06global\x00\x00\x01\x00\x01";
const OPT: &[u8] = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00";

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let t = table();
    let h = |qd: u8, an: u8, ar: u8| [0x12, 0x34, 0x01, 0x00, 0, qd, 0, an, 0, 0, 0, ar];
    let formerr = [
        ("no question", raw(h(0, 0, 0), b"")),
        ("two questions", raw(h(2, 0, 0), &[Q, Q].concat())),
        ("cut question", raw(h(1, 0, 0), &Q[..8])),
        ("cut type", raw(h(1, 0, 0), &Q[..14])),
        (
            "label of 64",
            raw(
                h(1, 0, 0),
                &[&[64u8][..], &[b'a'; 64], b"\x00\x00\x01\x00\x01"].concat(),
            ),
        ),
        ("compressed question", raw(h(1, 0, 0), b"\xc0\x0c\x00\x01\x00\x01")),
        (
            "name over 255",
            raw(h(1, 0, 0), &[&[63u8][..], &[b'a'; 63]].repeat(5).concat()),
        ),
        ("two OPT", raw(h(1, 0, 2), &[Q, OPT, OPT].concat())),
        ("OPT in answers", raw(h(1, 1, 0), &[Q, OPT].concat())),
        ("OPT not at root", raw(h(1, 0, 1), &[Q, b"\x01a", OPT].concat())),
        ("cut OPT", raw(h(1, 0, 1), &[Q, &OPT[..6]].concat())),
        (
            "bad option length",
            raw(
                h(1, 0, 1),
                &[Q, b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x09\x00"].concat(),
            ),
        ),
        ("missing records", raw(h(1, 0, 3), Q)),
    ];
    for (what, msg) in formerr {
        let r = respond(&t, &msg, Transport::Udp).unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(&r[..2], &[0x12, 0x34], "{what}");
        assert_eq!(r[3] & 0x0f, 1, "{what}: FORMERR");
        assert_eq!(r[2] & 0x80, 0x80, "{what}: QR");
        assert_eq!(r.len(), 12, "{what}: header only");
    }
    assert!(
        respond(&t, b"\x12\x34\x01", Transport::Udp).is_none(),
        "too short for a header"
    );
    assert!(respond(&t, &[], Transport::Udp).is_none());
    let mut response = raw(h(1, 0, 0), Q);
    response[2] |= 0x80;
    assert!(
        respond(&t, &response, Transport::Udp).is_none(),
        "never answer a response"
    );
    // Unknown records and options are skipped, not refused.
    let ok = raw(
        h(1, 0, 2),
        &[
            Q,
            b"\x01x\x00\x00\x10\x00\x01\x00\x00\x00\x00\x00\x01\x00",
            b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x08\xff\x01\x00\x04abcd",
        ]
        .concat(),
    );
    let m = ask(&t, &ok, Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn garbage_never_panics_and_replies_always_parse() {
    let t = table_with(&many(3), true);
    let mut rng = Shuffler::new(42);
    let seeds = [
        query("many.global.", RecordType::A, true),
        query("x.shop.global.", RecordType::ANY, false),
    ];
    for i in 0..20_000 {
        let mut msg = seeds[i % 2].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(msg.len());
            msg[at] = rng.below(256) as u8;
        }
        msg.truncate(msg.len() - rng.below(3));
        msg[2] &= 0x7f;
        if let Some(r) = respond(&t, &msg, Transport::Udp) {
            assert!(r.len() <= 1232);
            assert!(
                Message::from_vec(&r).is_ok() || r.len() == 12,
                "unparsable reply to {msg:?}"
            );
        }
    }
}

mod derived;
mod extended_errors;
mod oracle;

/// A table large enough to fetch its lookups ahead (the rows' entries and `n` more hosts
/// `svc-i.ns-(i%7).global`, every third with a named port).
fn large_table(n: usize) -> Table {
    let mut text = ENTRIES.to_string();
    for i in 0..n {
        let ports = if i % 3 == 0 {
            ", ports: [{name: http, number: 80}]"
        } else {
            ""
        };
        let spec = format!(
            "{{hosts: [svc-{i}.ns-{}.global], addresses: [10.9.{}.{}]{ports}}}",
            i % 7,
            i / 250,
            i % 250 + 1
        );
        text.push_str(&se(&format!("svc-{i}"), &spec));
    }
    let settings = TableSettings::new(&["global"]).unwrap();
    table_of(&settings, &[("c1", &entries(&text, "default"))], 2024, true)
}

/// Fetching a batch's lookups ahead changes no answer: the same batch (hits in any case, SRV
/// owners, wildcards, NODATA, NXDOMAIN, out of zone, malformed, more queries than a batch
/// fetches) answered with the same random choices, with and without.
#[test]
fn fetching_ahead_changes_no_answer() {
    let t = large_table(crate::table::AHEAD_FROM_HOSTS);
    assert!(t.fetches_ahead());
    assert!(!table().fetches_ahead(), "a small table is not fetched ahead");
    let mut batch: Vec<Vec<u8>> = (0..crate::table::AHEAD + 8)
        .map(|i| {
            query(
                &format!("SVC-{}.ns-{}.Global", i * 97, i * 97 % 7),
                RecordType::A,
                i % 2 == 0,
            )
        })
        .collect();
    batch.extend([
        query("_http._tcp.svc-3.ns-3.global", RecordType::SRV, true),
        query("api.shop.global", RecordType::A, false),
        query("svc-1.ns-1.global", RecordType::AAAA, false),
        query("nothing.ns-1.global", RecordType::A, false),
        query("example.com", RecordType::A, false),
        raw(
            [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
            b"\xc0\x0c\x00\x01\x00\x01",
        ),
        b"\x12\x34".to_vec(),
    ]);
    batch.rotate_right(7);
    for batch in batch.chunks(crate::table::AHEAD + 4) {
        let answers = |fetch: bool| {
            let mut ahead = Ahead::default();
            if fetch {
                fetch_ahead(&t, batch.iter().map(|m| &m[..]), &mut ahead);
                let names = batch.iter().filter(|m| wire::parse(m).is_ok()).count();
                assert_eq!(ahead.len(), names.min(crate::table::AHEAD), "all but the malformed");
            }
            let mut rng = Shuffler::new(5);
            let answers: Vec<(Outcome, Vec<u8>)> = batch
                .iter()
                .map(|msg| {
                    let mut out = Vec::new();
                    (
                        answer(&t, msg, Transport::Udp, Mode::default(), &mut rng, &mut out),
                        out,
                    )
                })
                .collect();
            answers
        };
        assert_eq!(answers(true), answers(false));
    }
}
