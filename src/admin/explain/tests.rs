//! What `explain` says, rule by rule, from a table built here.

use std::sync::Arc;

use super::*;

use crate::table::TableSettings;
use crate::table::testing::{entries, se_in as se, table_of};

fn table(synced: bool) -> Table {
    let local = [
        se(
            "bar",
            "httpbin",
            "{hosts: [httpbin.bar.global], addresses: [240.0.0.2], ports: [{name: http, number: 8000}]}",
        ),
        se("shop", "wild", "{hosts: [\"*.shop.global\"], addresses: [240.0.0.10]}"),
        se("bare", "bare", "{hosts: [bare.global], resolution: DNS}"),
    ]
    .concat();
    let remote = se(
        "bar",
        "httpbin",
        "{hosts: [httpbin.bar.global, r.global], addresses: [240.0.0.9]}",
    );
    let (local, remote) = (entries(&local, "default"), entries(&remote, "default"));
    let settings = TableSettings::new(&["global", "240.in-addr.arpa"]).unwrap();
    table_of(&settings, &[("c1", &local), ("c2", &remote)], 5, synced)
}

fn says(table: &Table, forwarding: bool, name: &str, qtype: &str) -> Value {
    explain(table, forwarding, &Question::new(name, qtype).unwrap())
}

#[test]
fn the_rule_the_records_and_where_they_came_from() {
    let t = table(true).with_stale(Arc::new(["c2".into()]));
    let v = says(&t, true, "HttpBin.Bar.Global", "A");
    assert_eq!(v["rule"], "exact-host");
    assert_eq!(v["zone"], "global");
    assert_eq!(v["question"]["name"], "HttpBin.Bar.Global.");
    assert_eq!(v["answer"]["rcode"], "NOERROR");
    assert_eq!(v["answer"]["answer"], json!(["HttpBin.Bar.Global. 30 IN A 240.0.0.2"]));
    assert_eq!(v["stale"], false, "c1 supplied it");
    let host = &v["hosts"][0];
    assert_eq!(host["source"], "c1");
    assert_eq!(
        host["entries"],
        json!([{"cluster": "c1", "entry": "bar/httpbin", "rule": "spec-addresses"}])
    );
    assert_eq!(
        host["losing_sources"],
        json!([{"cluster": "c2", "addresses": ["240.0.0.9"]}])
    );

    let v = says(&t, true, "r.global", "A");
    assert_eq!(
        (v["rule"].as_str(), v["stale"].as_bool()),
        (Some("exact-host"), Some(true))
    );
    assert_eq!(
        v["answer"]["extended_error"],
        json!({"code": 3, "name": "Stale Answer"})
    );
    assert_eq!(v["hosts"][0]["stale"], true);
    assert_eq!(v["stale_sources"], json!(["c2"]));

    let v = says(&t, true, "api.shop.global", "AAAA");
    assert_eq!(
        (v["rule"].as_str(), v["wildcard"].as_str()),
        (Some("wildcard"), Some("*.shop.global"))
    );
    assert_eq!(
        v["answer"]["authority"].as_array().unwrap().len(),
        1,
        "NODATA with the SOA"
    );

    let v = says(&t, true, "_http._tcp.httpbin.bar.global", "SRV");
    assert_eq!(v["rule"], "srv");
    assert_eq!(
        v["answer"]["answer"],
        json!(["_http._tcp.httpbin.bar.global. 30 IN SRV 0 100 8000 httpbin.bar.global."])
    );
    assert_eq!(
        v["answer"]["additional"],
        json!(["httpbin.bar.global. 30 IN A 240.0.0.2"])
    );

    let v = says(&t, true, "_http._tcp.httpbin.bar.global", "A");
    assert_eq!(v["rule"], "srv");
    assert_eq!(v["answer"]["answer"], json!([]));
    let why = v["why"].as_str().unwrap();
    assert!(why.contains("owns no A records: NODATA"), "{why}");

    // Every owner rule says so when the type asked is not one it owns.
    for (name, qtype) in [
        ("httpbin.bar.global", "SRV"),
        ("api.shop.global", "AAAA"),
        ("2.0.0.240.in-addr.arpa", "A"),
    ] {
        let v = says(&t, true, name, qtype);
        let why = v["why"].as_str().unwrap();
        assert!(
            why.contains(&format!("owns no {qtype} records: NODATA")),
            "{name} {qtype}: {why}"
        );
    }
    let why = says(&t, true, "httpbin.bar.global", "A")["why"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!why.contains("NODATA"), "records of the type asked: {why}");

    let v = says(&t, true, "2.0.0.240.in-addr.arpa", "PTR");
    assert_eq!(
        (v["rule"].as_str(), v["address"].as_str()),
        (Some("ptr"), Some("240.0.0.2"))
    );
    assert_eq!(v["served"], json!(["httpbin.bar.global"]));

    let v = says(&t, true, "9.0.0.240.in-addr.arpa", "PTR");
    assert_eq!(v["served"], json!(["r.global"]), "c2's own host");
}

#[test]
fn names_that_are_not_and_names_that_are_not_ours() {
    let t = table(true);
    let cases = [
        ("bar.global", "empty-non-terminal", "NOERROR"),
        ("_tcp.httpbin.bar.global", "empty-non-terminal", "NOERROR"),
        ("global", "apex", "NOERROR"),
        ("bare.global", "not-a-name", "NXDOMAIN"),
        ("nope.global", "not-a-name", "NXDOMAIN"),
        ("1.0.0.240.in-addr.arpa", "not-a-name", "NXDOMAIN"),
    ];
    for (name, rule, rcode) in cases {
        let v = says(&t, true, name, "A");
        assert_eq!(
            (v["rule"].as_str(), v["answer"]["rcode"].as_str()),
            (Some(rule), Some(rcode)),
            "{name}"
        );
        assert!(!v["why"].as_str().unwrap().is_empty());
    }
    let bare = says(&t, true, "bare.global", "A");
    assert_eq!(bare["named_without_address"], "bare.global");
    assert_eq!(bare["hosts"][0]["entries"][0]["rule"], "no-address");
    let out = says(&t, true, "example.com", "A");
    assert_eq!(
        (out["rule"].as_str(), out["answer"].is_null()),
        (Some("forwarded"), true)
    );
    let refused = says(&t, false, "example.com", "A");
    assert_eq!(
        (refused["rule"].as_str(), refused["answer"]["rcode"].as_str()),
        (Some("refused"), Some("REFUSED"))
    );
    let waiting = says(&table(false), true, "httpbin.bar.global", "A");
    assert_eq!(waiting["rule"], "not-synced");
    assert_eq!(waiting["answer"]["rcode"], "SERVFAIL");
    assert_eq!(waiting["answer"]["extended_error"]["code"], 14);
}

#[test]
fn questions_from_the_query_string() {
    let q = Question::from_query("name=_http._tcp.a.global&type=srv").unwrap();
    assert_eq!((q.name.as_str(), q.qtype), ("_http._tcp.a.global.", 33));
    assert_eq!(Question::from_query("name=a.global").unwrap().qtype, 1, "A by default");
    assert_eq!(Question::from_query("name=a%2Eglobal&type=TYPE28").unwrap().qtype, 28);
    assert_eq!(Question::from_query("type=A"), Err(BadQuestion::NoName));
    for bad in [
        "name=a..global",
        "name=",
        "name=a%20b.global",
        &format!("name={}.global", "a".repeat(64)),
    ] {
        assert!(matches!(Question::from_query(bad), Err(BadQuestion::Name(_))), "{bad}");
    }
    assert!(matches!(
        Question::from_query("name=a.global&type=BOGUS"),
        Err(BadQuestion::Type(_))
    ));
}

#[test]
fn rendered_for_people() {
    let t = table(true).with_stale(Arc::new(["c2".into()]));
    let text = render(&says(&t, true, "httpbin.bar.global", "A"));
    assert!(
        text.starts_with("httpbin.bar.global. A: NOERROR (qr aa rd ra)\n  httpbin.bar.global. 30 IN A 240.0.0.2\n"),
        "{text}"
    );
    assert!(text.contains("rule: exact-host in zone global\n"), "{text}");
    assert!(text.contains("  entry c1 bar/httpbin (spec-addresses)\n"), "{text}");
    assert!(text.contains("  lost: c2 with 240.0.0.9\n"), "{text}");
    let text = render(&says(&t, true, "r.global", "A"));
    assert!(
        text.contains(", EDE 3 (Stale Answer)") && text.contains("STALE"),
        "{text}"
    );
    let text = render(&says(&t, true, "example.com", "A"));
    assert!(text.starts_with("example.com. A: forwarded\n"), "{text}");
}

#[test]
fn a_transfer_is_explained_as_one_never_as_the_apex() {
    let t = table(true);
    for qtype in ["AXFR", "IXFR", "ixfr"] {
        let v = says(&t, true, "global", qtype);
        assert_eq!(v["rule"], "transfer", "{qtype}: {v}");
        assert_eq!(v["question"]["type"], qtype.to_ascii_uppercase());
        assert_eq!(v["serial"], t.zone_serial(&t.zones()[0]), "{v}");
        let why = v["why"].as_str().unwrap();
        for said in [
            "--transfer-to",
            "REFUSED",
            "NOTIMP",
            "single SOA",
            "the zone global at serial",
        ] {
            assert!(why.contains(said), "{qtype} says {said:?}: {why}");
        }
        assert!(!why.contains("NODATA"), "{why}");
    }
    for name in ["bar.global", "example.com"] {
        let v = says(&t, true, name, "AXFR");
        assert_eq!(v["rule"], "transfer");
        assert!(v["why"].as_str().unwrap().contains("NOTAUTH"), "{name}: {v}");
    }
    assert_eq!(Question::from_query("name=global&type=IXFR").unwrap().qtype, 251);
}
