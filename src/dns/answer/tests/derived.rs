//! DESIGN.md "More than A and AAAA", row by row: SRV with the target's addresses in the
//! additional section, PTR in reverse zones (IPv4 and IPv6, shared addresses, at most 8, none
//! for `--default-address`), the negative TTL; and what a large SRV answer cuts over UDP.

use hickory_proto::rr::RData;

use super::*;

/// Hosts with named ports, shared addresses and a placeholder address.
const RECORDS: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: bar}
spec:
  hosts: [httpbin.bar.global]
  addresses: [240.0.0.2]
  ports: [{name: http, number: 8000, protocol: HTTP}, {name: grpc, number: 9000, protocol: GRPC}, {name: dns, number: 53, protocol: UDP}, {name: Bad_Name, number: 1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dual}
spec:
  hosts: [dual.global]
  addresses: [240.0.0.3, \"2001:db8::3\"]
  ports: [{name: http, number: 80}, {name: HTTP, number: 8080, protocol: http}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec: {hosts: [\"*.shop.global\"], addresses: [240.0.0.10], ports: [{name: http, number: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared}
spec: {hosts: [b-shared.global, a-shared.global], addresses: [240.0.0.7, \"2001:db8::7\"]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: placeholder}
spec: {hosts: [placeholder.global], resolution: DNS, ports: [{name: http, number: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: in-reverse}
spec: {hosts: [x.240.in-addr.arpa], addresses: [240.0.0.8]}
";

/// `n` hosts `crowd-<i>.global` sharing 240.0.0.9.
fn crowd(n: usize) -> String {
    let hosts: Vec<String> = (0..n).map(|i| format!("crowd-{i:02}.global")).collect();
    se(
        "crowd",
        &format!("{{hosts: [{}], addresses: [240.0.0.9]}}", hosts.join(", ")),
    )
}

const ZONES: [&str; 3] = ["global", "240.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"];

fn settings() -> TableSettings {
    let mut s = TableSettings::new(&ZONES).unwrap();
    s.default_address = Some("240.0.0.99".parse().unwrap());
    s
}

pub(super) fn derived_table(settings: &TableSettings, extra: &str) -> Table {
    let text = format!("{RECORDS}{}{extra}", crowd(10));
    table_of(settings, &[("c1", &entries(&text, "default"))], 2024, true)
}

struct Row {
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
}

const fn row(
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
) -> Row {
    Row {
        name,
        qtype,
        rcode,
        answer,
        authority,
        additional,
    }
}

const NEG: &[&str] = &[SOA_NEG];
const REV4: &[&str] =
    &["240.in-addr.arpa. 5 SOA ns.dns.240.in-addr.arpa. hostmaster.240.in-addr.arpa. 2024 3600 600 86400 5"];
const V6: &str = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
const V6_SHARED: &str = "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";

fn rows() -> Vec<Row> {
    use RecordType::*;
    use ResponseCode::*;
    vec![
        row(
            "_http._tcp.httpbin.bar.global.",
            SRV,
            NoError,
            &["_http._tcp.httpbin.bar.global. 30 SRV 0 100 8000 httpbin.bar.global."],
            &[],
            &["httpbin.bar.global. 30 A 240.0.0.2"],
        ),
        row(
            "_grpc._tcp.httpbin.bar.global.",
            SRV,
            NoError,
            &["_grpc._tcp.httpbin.bar.global. 30 SRV 0 100 9000 httpbin.bar.global."],
            &[],
            &["httpbin.bar.global. 30 A 240.0.0.2"],
        ),
        row(
            "_dns._udp.httpbin.bar.global.",
            SRV,
            NoError,
            &["_dns._udp.httpbin.bar.global. 30 SRV 0 100 53 httpbin.bar.global."],
            &[],
            &["httpbin.bar.global. 30 A 240.0.0.2"],
        ),
        // Ports with the same name, their union; case folded; A and AAAA as additional.
        row(
            "_http._tcp.dual.global.",
            SRV,
            NoError,
            &[
                "_http._tcp.dual.global. 30 SRV 0 100 80 dual.global.",
                "_http._tcp.dual.global. 30 SRV 0 100 8080 dual.global.",
            ],
            &[],
            &["dual.global. 30 A 240.0.0.3", "dual.global. 30 AAAA 2001:db8::3"],
        ),
        row("_dns._tcp.httpbin.bar.global.", SRV, NXDomain, &[], NEG, &[]),
        row("_bad_name._tcp.httpbin.bar.global.", SRV, NXDomain, &[], NEG, &[]),
        row("_tcp.httpbin.bar.global.", SRV, NoError, &[], NEG, &[]),
        row("_udp.httpbin.bar.global.", A, NoError, &[], NEG, &[]),
        row("_http._tcp.httpbin.bar.global.", A, NoError, &[], NEG, &[]),
        row("httpbin.bar.global.", SRV, NoError, &[], NEG, &[]),
        row(
            "_http._tcp.httpbin.bar.global.",
            ANY,
            NoError,
            &["_http._tcp.httpbin.bar.global. 30 SRV 0 100 8000 httpbin.bar.global."],
            &[],
            &[],
        ),
        // Wildcards have no SRV; their own records answer any name below them.
        row("_http._tcp.api.shop.global.", SRV, NoError, &[], NEG, &[]),
        row(
            "_http._tcp.api.shop.global.",
            A,
            NoError,
            &["_http._tcp.api.shop.global. 30 A 240.0.0.10"],
            &[],
            &[],
        ),
        // --default-address is a placeholder: its ports give SRV, its address no PTR.
        row(
            "_http._tcp.placeholder.global.",
            SRV,
            NoError,
            &["_http._tcp.placeholder.global. 30 SRV 0 100 80 placeholder.global."],
            &[],
            &["placeholder.global. 30 A 240.0.0.99"],
        ),
        row("99.0.0.240.in-addr.arpa.", PTR, NXDomain, &[], REV4, &[]),
        row(
            "2.0.0.240.in-addr.arpa.",
            PTR,
            NoError,
            &["2.0.0.240.in-addr.arpa. 30 PTR httpbin.bar.global."],
            &[],
            &[],
        ),
        row(
            "3.0.0.240.in-addr.arpa.",
            PTR,
            NoError,
            &["3.0.0.240.in-addr.arpa. 30 PTR dual.global."],
            &[],
            &[],
        ),
        row(
            "7.0.0.240.in-addr.arpa.",
            PTR,
            NoError,
            &[
                "7.0.0.240.in-addr.arpa. 30 PTR a-shared.global.",
                "7.0.0.240.in-addr.arpa. 30 PTR b-shared.global.",
            ],
            &[],
            &[],
        ),
        row(
            V6,
            PTR,
            NoError,
            &["3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 30 PTR dual.global."],
            &[],
            &[],
        ),
        row(
            V6_SHARED,
            PTR,
            NoError,
            &[
                "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 30 PTR a-shared.global.",
                "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 30 PTR b-shared.global.",
            ],
            &[],
            &[],
        ),
        row("2.0.0.240.in-addr.arpa.", A, NoError, &[], REV4, &[]),
        row("0.0.240.in-addr.arpa.", PTR, NoError, &[], REV4, &[]),
        row("0.240.in-addr.arpa.", PTR, NoError, &[], REV4, &[]),
        row("1.0.0.240.in-addr.arpa.", PTR, NXDomain, &[], REV4, &[]),
        row("8.0.0.240.in-addr.arpa.", PTR, NXDomain, &[], REV4, &[]),
        row("x.240.in-addr.arpa.", A, NXDomain, &[], REV4, &[]),
        row("1.1.0.240.in-addr.arpa.", PTR, NXDomain, &[], REV4, &[]),
        row(
            "240.in-addr.arpa.",
            NS,
            NoError,
            &["240.in-addr.arpa. 30 NS ns.dns.240.in-addr.arpa."],
            &[],
            &[],
        ),
        // Reverse names outside every reverse zone are not ours (forwarded when forwarding).
        row("2.0.0.10.in-addr.arpa.", PTR, Refused, &[], &[], &[]),
    ]
}

#[test]
fn srv_and_ptr_row_by_row() {
    let t = derived_table(&settings(), "");
    for row in rows() {
        for edns in [false, true] {
            let what = format!("{} {:?} edns={edns}", row.name, row.qtype);
            let m = ask(&t, &query(row.name, row.qtype, edns), Transport::Udp);
            assert_eq!(m.metadata.response_code, row.rcode, "{what}");
            let mut answer = records(&m.answers);
            answer.sort();
            assert_eq!(answer, row.answer, "{what}");
            assert_eq!(records(&m.authorities), row.authority, "{what}");
            let mut additional = records(&m.additionals);
            additional.sort();
            assert_eq!(additional, row.additional, "{what}");
            assert_eq!(
                m.metadata.authoritative,
                row.rcode != ResponseCode::Refused,
                "{what}: AA"
            );
            assert!(!m.metadata.truncation, "{what}");
            assert_eq!(m.edns.is_some(), edns, "{what}");
        }
    }
}

#[test]
fn at_most_eight_ptr_records_in_name_order() {
    let t = derived_table(&settings(), "");
    let m = ask(
        &t,
        &query("9.0.0.240.in-addr.arpa.", RecordType::PTR, true),
        Transport::Tcp,
    );
    let got: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    let want: Vec<String> = (0..8).map(|i| format!("crowd-{i:02}.global.")).collect();
    assert_eq!(got, want);
    let any = ask(
        &t,
        &query("9.0.0.240.in-addr.arpa.", RecordType::ANY, true),
        Transport::Tcp,
    );
    assert_eq!(any.answers.len(), 8, "ANY: the same eight");
}

#[test]
fn owner_and_additional_names_echo_the_query_case() {
    let t = derived_table(&settings(), "");
    let name = "_HTTP._Tcp.Dual.GLOBAL.";
    let m = ask(&t, &query(name, RecordType::SRV, false), Transport::Udp);
    assert_eq!(m.answers.len(), 2);
    for r in m.answers.iter() {
        assert_eq!(r.name.to_string(), name);
    }
    for r in m.additionals.iter() {
        assert_eq!(r.name.to_string(), "Dual.GLOBAL.", "the target inside the question");
    }
}

#[test]
fn negative_ttl_is_the_soa_minimum_and_caps_negative_answers() {
    for (negative_ttl, ttl, soa_ttl) in [(5, 30, 5), (60, 30, 30), (0, 30, 0)] {
        let mut s = settings();
        s.negative_ttl = negative_ttl;
        s.ttl = ttl;
        let t = derived_table(&s, "");
        for (name, qtype, rcode) in [
            ("nope.global.", RecordType::A, ResponseCode::NXDomain),
            ("httpbin.bar.global.", RecordType::AAAA, ResponseCode::NoError),
            ("_tcp.dual.global.", RecordType::SRV, ResponseCode::NoError),
            ("1.0.0.240.in-addr.arpa.", RecordType::PTR, ResponseCode::NXDomain),
        ] {
            let m = ask(&t, &query(name, qtype, false), Transport::Udp);
            assert_eq!(m.metadata.response_code, rcode, "{name}");
            let soa = &m.authorities[0];
            let RData::SOA(data) = &soa.data else {
                panic!("{name}: no SOA")
            };
            assert_eq!(data.minimum, negative_ttl, "{name}: MINIMUM is --negative-ttl");
            assert_eq!(soa.ttl, soa_ttl, "{name}: min(SOA TTL, MINIMUM)");
        }
        let m = ask(&t, &query("global.", RecordType::SOA, false), Transport::Udp);
        assert_eq!(m.answers[0].ttl, ttl, "the apex SOA as an answer keeps --ttl");
    }
}

/// A host with `n` IPv4 addresses and `ports` ports named `http` (8000 on), one entry per
/// port (an entry names a port once).
fn big_srv(n: usize, ports: usize) -> String {
    let addresses: Vec<String> = (0..n).map(|i| format!("10.9.{}.{}", i / 250, i % 250 + 1)).collect();
    (0..ports)
        .map(|i| {
            let spec = format!(
                "{{hosts: [big.global], addresses: [{}], ports: [{{name: http, number: {}}}]}}",
                addresses.join(", "),
                8000 + i
            );
            se(&format!("big-{i}"), &spec)
        })
        .collect()
}

/// Over UDP the additional section is cut first, and only that: no TC (RFC 2181 §9, its
/// records are extra information); once answer records are cut, TC.
#[test]
fn large_srv_answers_cut_the_additional_section_first_without_tc() {
    let q = |edns| query("_http._tcp.big.global.", RecordType::SRV, edns);
    let srv_size = 12 + 6 + "\x03big\x06global\x00".len();
    // One SRV record, 40 A records: 1 + 40 do not fit 512 bytes.
    let t = derived_table(&settings(), &big_srv(40, 1));
    for edns in [false, true] {
        let bytes = respond(&t, &q(edns), Transport::Udp).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.answers.len(), 1, "edns={edns}: the answer whole");
        assert!(!m.metadata.truncation, "edns={edns}: only additional records were cut");
        let room = if edns { 1232 } else { 512 };
        let fit =
            (room - 12 - (q(edns).len() - 12 - if edns { 11 } else { 0 }) - srv_size - if edns { 11 } else { 0 }) / 16;
        assert_eq!(
            m.additionals
                .iter()
                .filter(|r| r.record_type() == RecordType::A)
                .count(),
            fit.min(40),
            "edns={edns}: every A that fits"
        );
        assert!(bytes.len() <= room);
        assert_eq!(m.edns.is_some(), edns, "the OPT record stays");
    }
    // 40 ports: the SRV records alone do not fit 512 bytes: answers cut, TC, no additional.
    let t = derived_table(&settings(), &big_srv(2, 40));
    let bytes = respond(&t, &q(false), Transport::Udp).unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert!(m.metadata.truncation, "answer records cut: TC");
    assert_eq!(m.answers.len(), (512 - 12 - (q(false).len() - 12)) / srv_size);
    assert!(m.additionals.is_empty(), "the additional section went first");
    // TCP: everything.
    let m = ask(&t, &q(true), Transport::Tcp);
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (40, 2));
}
