//! Extended DNS Errors (RFC 8914), read with hickory-proto: Not Ready, Prohibited, Stale
//! Answer (positive answers by the source that supplied them, negative ones when any source
//! is stale), No Reachable Authority / Network Error on a failed forward; only to clients
//! that sent EDNS, and never past the client's size limit.

use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use super::derived::derived_table;
use super::*;
use crate::table::testing::se;

/// The INFO-CODE of the reply's EDE option, if any.
fn ede_of(m: &Message) -> Option<u16> {
    match m.edns.as_ref()?.options().get(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) => {
            assert_eq!(data.len(), 2, "no EXTRA-TEXT");
            Some(u16::from_be_bytes([data[0], data[1]]))
        }
        other => panic!("EDE read as {other:?}"),
    }
}

/// A table of two sources, `c2`, supplying `remote.global`
/// (240.0.0.2 too, so the PTR of 240.0.0.2 has a host from each source).
fn two_sources() -> Table {
    let mut settings = TableSettings::new(&["global", "240.in-addr.arpa"]).unwrap();
    settings.ttl = 30;
    let local = entries(
        &se(
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2], ports: [{name: http, number: 80}]}",
        ),
        "bar",
    );
    let remote = entries(
        &se(
            "remote",
            "{hosts: [remote.global], addresses: [240.0.0.2, 240.0.0.5], ports: [{name: http, number: 80}]}",
        ),
        "bar",
    );
    table_of(&settings, &[("c1", &local), ("c2", &remote)], 7, true)
}

#[test]
fn stale_answers_by_the_source_that_supplied_them() {
    let fresh = two_sources();
    let stale = two_sources().with_stale(Arc::new(["c2".into()]));
    use RecordType::*;
    let cases = [
        ("httpbin.bar.global.", A, None),
        ("remote.global.", A, Some(3)),
        ("_http._tcp.httpbin.bar.global.", SRV, None),
        ("_http._tcp.remote.global.", SRV, Some(3)),
        ("5.0.0.240.in-addr.arpa.", PTR, Some(3)),
        ("2.0.0.240.in-addr.arpa.", PTR, Some(3)), // one of its hosts is c2's
        ("httpbin.bar.global.", ANY, None),
        ("global.", SOA, None), // from no source
        ("global.", NS, None),
        // Negative answers: stale when any source is.
        ("nope.global.", A, Some(3)),
        ("httpbin.bar.global.", AAAA, Some(3)),
        ("bar.global.", A, Some(3)),
        ("9.0.0.240.in-addr.arpa.", PTR, Some(3)),
        ("global.", A, Some(3)),
    ];
    for (name, qtype, want) in cases {
        let what = format!("{name} {qtype:?}");
        let m = ask(&stale, &query(name, qtype, true), Transport::Udp);
        assert_eq!(ede_of(&m), want, "{what}");
        let plain = ask(&fresh, &query(name, qtype, true), Transport::Udp);
        assert_eq!(ede_of(&plain), None, "{what}: nothing stale");
        assert_eq!(
            (records(&m.answers), records(&m.authorities), m.metadata.response_code),
            (
                records(&plain.answers),
                records(&plain.authorities),
                plain.metadata.response_code
            ),
            "{what}: the same answer, flagged"
        );
        let m = ask(&stale, &query(name, qtype, false), Transport::Udp);
        assert!(m.edns.is_none(), "{what}: never to a client without EDNS");
    }
}

#[test]
fn not_ready_and_prohibited() {
    let unsynced = table_with("", false);
    for edns in [true, false] {
        let m = ask(
            &unsynced,
            &query("httpbin.bar.global.", RecordType::A, edns),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(ede_of(&m), edns.then_some(14), "edns={edns}");
    }
    let t = table();
    // A transfer over TCP goes to `dns::transfer`, which refuses a client outside
    // --transfer-to with 18 Prohibited (tested there, an IXFR over UDP too); an AXFR over UDP
    // is never one: NOTIMP, with no EDE.
    let m = ask(&t, &query("global.", RecordType::AXFR, true), Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(ede_of(&m), None);
    let m = ask(&t, &query("httpbin.bar.global.", RecordType::A, true), Transport::Udp);
    assert_eq!(ede_of(&m), None, "a fresh answer carries none");
}

#[test]
fn a_failed_forward_says_why() {
    for (code, edns) in [(22, true), (23, true), (22, false)] {
        let mut out = Vec::new();
        error_reply_with_ede(
            &query("example.com.", RecordType::A, edns),
            rcode::SERVFAIL,
            true,
            Some(code),
            &mut out,
        );
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.metadata.recursion_available);
        assert_eq!(ede_of(&m), edns.then_some(code));
        assert_eq!(
            wire::extended_error(&out),
            edns.then_some(code),
            "as the metrics read it"
        );
    }
}

/// The EDE is room taken from the records: a stale answer of many addresses to a client of
/// 520 bytes is no larger than 520 bytes, and holds one A record fewer than a fresh one, as
/// 6 bytes make the difference there.
#[test]
fn an_extended_error_never_grows_a_reply_past_the_limit() {
    let settings = TableSettings::new(&["global"]).unwrap();
    let t = derived_table(&settings, &many(50));
    let stale = derived_table(&settings, &many(50)).with_stale(Arc::new(["c1".into()]));
    let mut asked = Message::from_vec(&query("many.global.", RecordType::A, true)).unwrap();
    asked.edns.as_mut().unwrap().set_max_payload(520);
    let asked = asked.to_vec().unwrap();
    let fresh = respond(&t, &asked, Transport::Udp).unwrap();
    let flagged = respond(&stale, &asked, Transport::Udp).unwrap();
    assert!(
        fresh.len() <= 520 && flagged.len() <= 520,
        "{} {}",
        fresh.len(),
        flagged.len()
    );
    let (fresh, flagged) = (Message::from_vec(&fresh).unwrap(), Message::from_vec(&flagged).unwrap());
    assert!(fresh.metadata.truncation && flagged.metadata.truncation);
    assert_eq!(ede_of(&flagged), Some(3));
    // Header and question, the records, then the OPT: 11 bytes, 17 with the EDE.
    let room = |opt: usize| (520 - (asked.len() - 11) - opt) / 16;
    assert_eq!(fresh.answers.len(), room(11));
    assert_eq!(flagged.answers.len(), room(17));
    assert_eq!(flagged.answers.len() + 1, fresh.answers.len());
}
