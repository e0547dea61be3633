//! The rules of DESIGN.md "ServiceEntry → records", case by case.

use std::net::IpAddr;
use std::sync::Arc;

use super::testing::{self, se};
use super::*;
use crate::serviceentry::Entry;

/// The entries of `text`, in namespace `ns`.
fn entries(text: &str) -> Vec<Entry> {
    testing::entries(text, "ns")
}

fn settings() -> TableSettings {
    TableSettings::new(&["global"]).unwrap()
}

/// The table of `sources` at serial 7, synced.
fn table_of(settings: &TableSettings, sources: &[(&str, &[Entry])]) -> Table {
    testing::table_of(settings, sources, 7, true)
}

fn one(text: &str) -> Table {
    table_of(&settings(), &[("c1", &entries(text))])
}

/// What a lookup gives, as text: `nx`, `out`, `empty` or the addresses.
fn look(table: &Table, name: &str) -> String {
    match table.lookup(&name::to_wire(name).unwrap()) {
        Lookup::OutOfZone => "out".into(),
        Lookup::NxDomain { .. } => "nx".into(),
        Lookup::Exists { host: None, .. } => "empty".into(),
        Lookup::Exists { host: Some(h), .. } => {
            let all: Vec<String> = h.addresses().iter().map(IpAddr::to_string).collect();
            if all.is_empty() {
                format!("host {} (none)", h.name)
            } else {
                all.join(" ")
            }
        }
    }
}

#[test]
fn address_rules_in_order() {
    let t = one(&[
        se("spec", "{hosts: [a.global], addresses: [1.1.1.1, \"2001:db8::1\"]}"),
        se("spec-wins", "{hosts: [b.global], addresses: [2.2.2.2]}\nstatus: {addresses: [{host: b.global, value: 9.9.9.9}]}"),
        se("status", "{hosts: [c.global, d.global]}\nstatus: {addresses: [{host: c.global, value: 3.3.3.3}, {host: d.global, value: \"2001:2::4\"}]}"),
        se("range-only", "{hosts: [e.global], addresses: [10.0.0.0/8]}\nstatus: {addresses: [{host: e.global, value: 5.5.5.5}]}"),
        se("nothing", "{hosts: [f.global], resolution: DNS}"),
    ]
    .concat());
    assert_eq!(look(&t, "a.global"), "1.1.1.1 2001:db8::1");
    assert_eq!(look(&t, "b.global"), "2.2.2.2");
    assert_eq!(look(&t, "c.global"), "3.3.3.3");
    assert_eq!(look(&t, "d.global"), "2001:2::4");
    assert_eq!(
        look(&t, "e.global"),
        "5.5.5.5",
        "a rule that yields nothing falls through"
    );
    assert_eq!(look(&t, "f.global"), "nx", "no address: not a name");
    let rules: Vec<Rule> = t.hosts().iter().map(|h| h.origins[0].rule).collect();
    use Rule::*;
    assert_eq!(
        rules,
        [
            SpecAddresses,
            SpecAddresses,
            StatusAddresses,
            StatusAddresses,
            StatusAddresses,
            NoAddress
        ]
    );
}

#[test]
fn default_address_and_resolution_none() {
    let text = [
        se("dns", "{hosts: [a.global], resolution: DNS}"),
        se("none-bare", "{hosts: [b.global], resolution: NONE}"),
        se("none-addr", "{hosts: [c.global], addresses: [3.3.3.3]}"),
        se("has", "{hosts: [d.global], resolution: STATIC, addresses: [4.4.4.4]}"),
    ]
    .concat();
    let mut s = settings();
    s.default_address = Some("240.0.0.1".parse().unwrap());
    let t = table_of(&s, &[("c1", &entries(&text))]);
    assert_eq!(look(&t, "a.global"), "240.0.0.1");
    assert_eq!(t.hosts()[0].origins[0].rule, Rule::DefaultAddress);
    assert_eq!(look(&t, "b.global"), "nx", "NONE is never given an address");
    assert_eq!(look(&t, "c.global"), "3.3.3.3", "NONE with addresses is served");
    assert_eq!(look(&t, "d.global"), "4.4.4.4");

    s.skip_resolution_none = true;
    let t = table_of(&s, &[("c1", &entries(&text))]);
    assert_eq!(look(&t, "c.global"), "nx", "--skip-resolution-none drops NONE entries");
    assert_eq!(look(&t, "b.global"), "nx");
    assert_eq!(look(&t, "a.global"), "240.0.0.1");
}

#[test]
fn export_to_modes() {
    let text = [
        se("mesh", "{hosts: [a.global], addresses: [1.1.1.1]}"),
        se("star", "{hosts: [b.global], addresses: [2.2.2.2], exportTo: [\"*\"]}"),
        se("local", "{hosts: [c.global], addresses: [3.3.3.3], exportTo: [\".\"]}"),
        se(
            "nowhere",
            "{hosts: [d.global], addresses: [4.4.4.4], exportTo: [\"~\"]}",
        ),
    ]
    .concat();
    let mut s = settings();
    let t = table_of(&s, &[("c1", &entries(&text))]);
    let got: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|h| look(&t, &format!("{h}.global")))
        .collect();
    assert_eq!(got, ["1.1.1.1", "2.2.2.2", "nx", "nx"]);
    s.export = ExportMode::All;
    let t = table_of(&s, &[("c1", &entries(&text))]);
    let got: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|h| look(&t, &format!("{h}.global")))
        .collect();
    assert_eq!(got, ["1.1.1.1", "2.2.2.2", "3.3.3.3", "nx"]);
}

#[test]
fn union_within_a_source_in_stable_order() {
    let t = one(&[
        se("one", "{hosts: [a.global], addresses: [1.1.1.1, 2.2.2.2]}"),
        se(
            "two",
            "{hosts: [A.global.], addresses: [2.2.2.2, 3.3.3.3, \"2001:db8::1\"]}",
        ),
    ]
    .concat());
    assert_eq!(look(&t, "a.global"), "1.1.1.1 2.2.2.2 3.3.3.3 2001:db8::1");
    assert_eq!(t.hosts().len(), 1);
    assert_eq!(t.hosts()[0].origins.len(), 2);
    assert!(t.conflicts().is_empty(), "entries of one source never conflict");
}

#[test]
fn precedence_and_conflicts_across_sources() {
    let local = entries(
        &[
            se("x", "{hosts: [shared.global], addresses: [1.1.1.1]}"),
            se("y", "{hosts: [same.global], addresses: [5.5.5.5]}"),
            se("z", "{hosts: [bare.global], resolution: DNS}"),
        ]
        .concat(),
    );
    let remote = entries(
        &[
            se("x", "{hosts: [shared.global], addresses: [2.2.2.2]}"),
            se("y", "{hosts: [same.global], addresses: [5.5.5.5]}"),
            se("z", "{hosts: [bare.global], addresses: [6.6.6.6]}"),
            se("r", "{hosts: [remote-only.global], addresses: [3.3.3.3]}"),
        ]
        .concat(),
    );
    let files = entries(&se(
        "f",
        "{hosts: [shared.global, remote-only.global], addresses: [4.4.4.4]}",
    ));
    let t = table_of(
        &settings(),
        &[("local", &local), ("remote", &remote), ("files", &files)],
    );
    assert_eq!(look(&t, "shared.global"), "1.1.1.1");
    assert_eq!(look(&t, "same.global"), "5.5.5.5");
    assert_eq!(look(&t, "remote-only.global"), "3.3.3.3");
    assert_eq!(
        look(&t, "bare.global"),
        "6.6.6.6",
        "a source without addresses does not hide a lower one"
    );
    let hosts = t.hosts();
    let host = hosts.iter().find(|h| h.name == "bare.global").unwrap();
    assert_eq!(&*host.source, "remote");
    let conflicts: Vec<(String, String, String)> = t
        .conflicts()
        .iter()
        .map(|c| (c.host.clone(), c.winner.to_string(), c.loser.to_string()))
        .collect();
    assert_eq!(
        conflicts,
        [
            ("remote-only.global".into(), "remote".into(), "files".into()),
            ("shared.global".into(), "local".into(), "remote".into()),
            ("shared.global".into(), "local".into(), "files".into()),
        ],
        "by host, then by the loser's precedence"
    );
}

#[test]
fn wildcards_empty_non_terminals_and_apex() {
    let t = one(&[
        se("w1", "{hosts: [\"*.shop.global\"], addresses: [1.1.1.1]}"),
        se("w2", "{hosts: [\"*.eu.shop.global\"], addresses: [2.2.2.2]}"),
        se("exact", "{hosts: [checkout.shop.global], addresses: [3.3.3.3]}"),
        se("deep", "{hosts: [a.b.c.global], addresses: [4.4.4.4]}"),
        se("under-wild", "{hosts: [x.y.z.shop.global], addresses: [5.5.5.5]}"),
        se("partial", "{hosts: [\"*x.global\", ok.global], addresses: [6.6.6.6]}"),
    ]
    .concat());
    let cases = [
        ("api.shop.global", "1.1.1.1"),
        ("a.b.shop.global", "1.1.1.1"),
        ("*.shop.global", "1.1.1.1"),
        ("api.eu.shop.global", "2.2.2.2"),
        ("x.y.eu.shop.global", "2.2.2.2"),
        ("eu.shop.global", "1.1.1.1"),
        ("checkout.shop.global", "3.3.3.3"),
        ("shop.global", "empty"),
        ("b.c.global", "empty"),
        ("c.global", "empty"),
        ("a.b.c.global", "4.4.4.4"),
        ("x.a.b.c.global", "nx"),
        ("z.shop.global", "1.1.1.1"),
        ("y.z.shop.global", "1.1.1.1"),
        ("x.y.z.shop.global", "5.5.5.5"),
        ("global", "empty"),
        ("GLOBAL", "empty"),
        ("nope.global", "nx"),
        ("ax.global", "nx"),
        ("ok.global", "6.6.6.6"),
        ("example.com", "out"),
        ("global.com", "out"),
    ];
    for (name, want) in cases {
        assert_eq!(look(&t, name), want, "{name}");
    }
    assert_eq!(t.skipped().len(), 1);
    assert_eq!(t.skipped()[0].host, "*x.global");
}

#[test]
fn names_without_records_are_not_names() {
    let t = one(&[
        se("range", "{hosts: [r.one.global], addresses: [10.1.0.0/16]}"),
        se("none", "{hosts: [n.two.global], resolution: NONE}"),
        se(
            "status-of-another",
            "{hosts: [s.three.global], resolution: DNS}\nstatus: {addresses: [{host: other.global, value: 3.3.3.3}]}",
        ),
        se("no-allocator", "{hosts: [d.four.global], resolution: DNS}"),
        se("wild", "{hosts: [\"*.w.five.global\"], resolution: DNS}"),
        se("below", "{hosts: [y.d.four.global], addresses: [4.4.4.4]}"),
        se("wild-with", "{hosts: [\"*.v.global\"], addresses: [5.5.5.5]}"),
        se(
            "under-wild",
            "{hosts: [bare.v.global, \"*.u.v.global\"], resolution: DNS}",
        ),
    ]
    .concat());
    let cases = [
        ("r.one.global", "nx"),
        ("one.global", "nx"),
        ("n.two.global", "nx"),
        ("two.global", "nx"),
        ("s.three.global", "nx"),
        ("three.global", "nx"),
        ("x.d.four.global", "nx"),
        ("d.four.global", "empty"), // above a name that has records: an empty non-terminal
        ("four.global", "empty"),
        ("y.d.four.global", "4.4.4.4"),
        ("x.w.five.global", "nx"),
        ("*.w.five.global", "nx"),
        ("w.five.global", "nx"),
        ("five.global", "nx"),
        ("bare.v.global", "5.5.5.5"), // a wildcard answers where an exact host has no records
        ("x.u.v.global", "5.5.5.5"),  // and where a more specific wildcard has none
        ("global", "empty"),
    ];
    for (name, want) in cases {
        assert_eq!(look(&t, name), want, "{name}");
    }
    // Operators still see them, as having no addresses (`/debug/records`, `records`, `check`).
    let listed: Vec<(&str, Rule)> = t
        .hosts()
        .iter()
        .filter(|h| h.a.is_empty() && h.aaaa.is_empty())
        .map(|h| (h.name.as_str(), h.origins[0].rule))
        .collect();
    use Rule::NoAddress;
    assert_eq!(
        listed,
        [
            ("*.u.v.global", NoAddress),
            ("*.w.five.global", NoAddress),
            ("bare.v.global", NoAddress),
            ("d.four.global", NoAddress),
            ("n.two.global", NoAddress),
            ("r.one.global", NoAddress),
            ("s.three.global", NoAddress),
        ]
    );
}

#[test]
fn a_name_appears_and_goes_with_its_addresses() {
    let source = (0, Arc::<str>::from("c1"));
    let mut live = Live::new(settings());
    let bare = se("e", "{hosts: [a.b.global], resolution: DNS}");
    live.replace(&source, entries(&bare));
    assert!(!live.commit().records_changed, "a host without records serves nothing");
    assert_eq!(look(&live.table(1, true), "b.global"), "nx");
    live.replace(
        &source,
        entries(&se("e", "{hosts: [a.b.global], addresses: [1.1.1.1]}")),
    );
    assert!(live.commit().records_changed);
    assert_eq!(look(&live.table(1, true), "b.global"), "empty");
    live.replace(&source, entries(&bare));
    assert!(live.commit().records_changed);
    let t = live.table(1, true);
    assert_eq!(
        (look(&t, "a.b.global"), look(&t, "b.global")),
        ("nx".into(), "nx".into())
    );
}

#[test]
fn several_zones_most_specific_first() {
    let s = TableSettings::new(&["global", "Corp.Example.", "mesh.internal", "global"]).unwrap();
    let names: Vec<&str> = s.zones().iter().map(|z| &*z.name).collect();
    assert_eq!(names, ["mesh.internal", "corp.example", "global"]);
    let t = table_of(
        &s,
        &[(
            "c1",
            &entries(
                &[
                    se(
                        "a",
                        "{hosts: [a.corp.example, b.global, c.mesh.internal, d.example.com], addresses: [1.1.1.1]}",
                    ),
                    se("w", "{hosts: [\"*.corp.example\"], addresses: [2.2.2.2]}"),
                ]
                .concat(),
            ),
        )],
    );
    let zone_of = |n: &str| match t.lookup(&name::to_wire(n).unwrap()) {
        Lookup::Exists { zone, .. } | Lookup::NxDomain { zone } => zone.name.to_string(),
        Lookup::OutOfZone => "-".into(),
    };
    assert_eq!(zone_of("a.corp.example"), "corp.example");
    assert_eq!(zone_of("corp.example"), "corp.example");
    assert_eq!(zone_of("b.global"), "global");
    assert_eq!(zone_of("c.mesh.internal"), "mesh.internal");
    assert_eq!(zone_of("example"), "-");
    assert_eq!(look(&t, "x.corp.example"), "2.2.2.2");
    assert_eq!(look(&t, "d.example.com"), "out");
    assert_eq!(t.hosts().len(), 4, "hosts outside every zone are ignored");
}

#[test]
fn a_host_at_the_apex() {
    let t = one(&se("apex", "{hosts: [global], addresses: [1.1.1.1]}"));
    assert!(matches!(
        t.lookup(b"\x06global\x00"),
        Lookup::Exists {
            host: Some(_),
            apex: true,
            ..
        }
    ));
}

/// The index holds the addresses of a host with few of them in its own line, and reads a
/// host with more from the host: either way a lookup gives every address, in the host's order,
/// for a host and for a wildcard.
#[test]
fn addresses_inline_or_not() {
    for v4 in 0..9 {
        for v6 in (0..3).filter(|&v6| v4 + v6 > 0) {
            let a = (0..v4).map(|k| format!("10.0.0.{k}"));
            let aaaa = (0..v6).map(|k| format!("'2001:db8::{k}'"));
            let addresses: Vec<String> = a.chain(aaaa).collect();
            let spec = format!(
                "{{hosts: [h.global, '*.w.global'], addresses: [{}]}}",
                addresses.join(", ")
            );
            let t = one(&se("e", &spec));
            for name in ["h.global", "x.w.global"] {
                let Lookup::Exists { host, addresses, .. } = t.lookup(&name::to_wire(name).unwrap()) else {
                    panic!("{name} exists with {v4} A and {v6} AAAA");
                };
                let (want_a, want_aaaa) = host.map_or((vec![], vec![]), |h| {
                    (
                        h.a.iter().map(|ip| ip.octets()).collect(),
                        h.aaaa.iter().map(|ip| ip.octets()).collect(),
                    )
                });
                assert_eq!(want_a.len(), v4, "{name}");
                assert_eq!(want_aaaa.len(), v6, "{name}");
                assert_eq!(addresses.a().len(), v4, "{name}: A count");
                assert_eq!(addresses.a().collect::<Vec<_>>(), want_a, "{name}: {v4} A");
                assert_eq!(addresses.aaaa().len(), v6, "{name}: AAAA count");
                assert_eq!(addresses.aaaa().collect::<Vec<_>>(), want_aaaa, "{name}: {v6} AAAA");
            }
        }
    }
}

#[test]
fn bad_zones() {
    assert_eq!(TableSettings::new(&["."]), Err(SettingsError::RootZone));
    assert_eq!(TableSettings::new::<&str>(&[]), Err(SettingsError::NoZone));
    assert!(matches!(TableSettings::new(&["a..b"]), Err(SettingsError::BadZone(_))));
}

#[test]
fn a_port_change_is_a_record_change() {
    // An SRV record changes with a named port alone: the host's zone must see the change (its
    // serial and IXFR history follow the records of the owners `touched`), though no address
    // moved.
    let source = (0, Arc::<str>::from("c1"));
    let mut live = Live::new(settings());
    let port = |name: &str, number: u16| {
        format!(
            "{{hosts: [a.global], addresses: [1.1.1.1], ports: [{{name: {name}, number: {number}, protocol: HTTP}}]}}"
        )
    };
    live.replace(&source, entries(&se("one", &port("http1", 8000))));
    live.commit();
    for (name, number, what) in [("http2", 8000, "renamed"), ("http2", 8001, "renumbered")] {
        let before = live.table(1, true);
        live.replace(&source, entries(&se("one", &port(name, number))));
        let commit = live.commit();
        assert!(commit.records_changed, "{what}");
        let after = live.table(1, true);
        let srv = |t: &Table| -> Vec<String> {
            let records = commit.touched.iter().flat_map(|w| t.owner_records(w));
            let srv = records.filter(|r| matches!(r.data, RecordData::Srv { .. }));
            srv.map(|r| format!("{} {:?}", r.owner, r.data)).collect()
        };
        assert_ne!(
            srv(&before),
            srv(&after),
            "{what}: its SRV record is a change of its zone"
        );
        let owner = format!("_{name}._tcp.a.global");
        assert!(
            srv(&after).iter().any(|r| r.starts_with(&owner)),
            "{what}: {:?}",
            srv(&after)
        );
    }
}

#[test]
fn reverse_zones_must_be_address_prefixes_and_zones_must_not_nest() {
    for bad in [
        "in-addr.arpa",
        "ip6.arpa",
        "arpa",
        "300.in-addr.arpa",
        "x.in-addr.arpa",
        "010.in-addr.arpa",
        "1.2.3.4.5.in-addr.arpa",
        "ab.ip6.arpa",
        "g.ip6.arpa",
        &format!("{}ip6.arpa", "0.".repeat(33)),
    ] {
        let e = TableSettings::new(&["global", bad]).unwrap_err();
        assert_eq!(e, SettingsError::BadReverseZone(bad.into()), "{bad}");
        assert!(e.to_string().contains("240.in-addr.arpa"), "says what would do: {e}");
    }
    for good in [
        "240.in-addr.arpa",
        "0.10.in-addr.arpa",
        "1.0.0.127.In-Addr.Arpa.",
        "8.b.d.0.1.0.0.2.ip6.arpa",
        "D.f.ip6.arpa",
        "e164.arpa",
    ] {
        assert!(TableSettings::new(&[good]).is_ok(), "{good}");
    }
    for (zones, inner, outer) in [
        (["global", "bar.global"], "bar.global", "global"),
        (["Bar.Global", "global"], "bar.global", "global"),
        (
            ["240.in-addr.arpa", "0.240.in-addr.arpa"],
            "0.240.in-addr.arpa",
            "240.in-addr.arpa",
        ),
    ] {
        let e = TableSettings::new(&zones).unwrap_err();
        let want = SettingsError::NestedZones {
            inner: inner.into(),
            outer: outer.into(),
        };
        assert_eq!(e, want, "{zones:?}");
    }
    assert!(
        TableSettings::new(&["global", "xglobal", "global."]).is_ok(),
        "neither inside the other"
    );
}

#[test]
fn records_changed_ignores_provenance() {
    let source = (0, Arc::<str>::from("c1"));
    let mut live = Live::new(settings());
    live.replace(
        &source,
        entries(&se("one", "{hosts: [a.global], addresses: [1.1.1.1]}")),
    );
    assert!(live.commit().records_changed, "a new name");
    live.replace(
        &source,
        entries(&se("two", "{hosts: [a.global], addresses: [1.1.1.1]}")),
    );
    assert!(!live.commit().records_changed, "another entry, the same records");
    live.replace(
        &source,
        entries(&se("two", "{hosts: [a.global], addresses: [1.1.1.2]}")),
    );
    assert!(live.commit().records_changed, "another address");
    live.replace(
        &source,
        entries(&se("two", "{hosts: [a.global], addresses: [1.1.1.2]}")),
    );
    assert!(!live.commit().records_changed, "nothing at all");
    // A second entry naming an address the host has: the union's order changes, the records
    // served do not (answers are shuffled), so the serial stays.
    live.replace(
        &source,
        entries(
            &[
                se("two", "{hosts: [a.global], addresses: [1.1.1.2, 1.1.1.3]}"),
                se("one", "{hosts: [a.global], addresses: [1.1.1.3]}"),
            ]
            .concat(),
        ),
    );
    assert!(live.commit().records_changed, "1.1.1.3 is new");
    assert_eq!(
        look(&live.table(1, true), "a.global"),
        "1.1.1.3 1.1.1.2",
        "entry one first"
    );
    live.replace(
        &source,
        entries(&se("two", "{hosts: [a.global], addresses: [1.1.1.2, 1.1.1.3]}")),
    );
    assert!(!live.commit().records_changed, "the same addresses in another order");
    assert_eq!(look(&live.table(1, true), "a.global"), "1.1.1.2 1.1.1.3");
}

#[test]
fn istio_legacy_allocation_in_the_rules() {
    let text = [
        se(
            "status",
            "{hosts: [s.global], resolution: DNS}\nstatus: {addresses: [{host: s.global, value: 240.240.200.1}]}",
        ),
        se("alloc", "{hosts: [h610.global, \"*.w.global\"], resolution: DNS}"),
        se("none", "{hosts: [n.global], resolution: NONE}"),
        se(
            "range",
            "{hosts: [r.global], addresses: [10.0.0.0/24], resolution: STATIC}",
        ),
        se("spec", "{hosts: [p.global], addresses: [1.1.1.1], resolution: DNS}"),
    ]
    .concat();
    let mut s = settings();
    s.auto_allocate = AutoAllocate::IstioLegacy;
    s.default_address = Some("192.0.2.9".parse().unwrap());
    let t = table_of(&s, &[("c1", &entries(&text))]);
    assert_eq!(
        look(&t, "s.global"),
        "240.240.200.1",
        "status.addresses come before allocation"
    );
    assert_eq!(
        look(&t, "h610.global"),
        "240.240.125.47 2001:2::f0f0:7d2f",
        "ns/h610.global alone"
    );
    assert_eq!(
        look(&t, "x.w.global"),
        "192.0.2.9",
        "wildcards are not allocated: default address"
    );
    assert_eq!(
        look(&t, "n.global"),
        "nx",
        "resolution NONE: neither allocated nor defaulted"
    );
    assert_eq!(
        look(&t, "r.global"),
        "192.0.2.9",
        "an entry with a range is not allocated"
    );
    assert_eq!(look(&t, "p.global"), "1.1.1.1");
    let rule = |name: &str| t.hosts().iter().find(|h| h.name == name).unwrap().origins[0].rule;
    assert_eq!(rule("h610.global"), Rule::Allocated);
    assert_eq!(rule("x.w.global".replace("x.", "*.").as_str()), Rule::DefaultAddress);

    // istiod counts every entry of its cluster: one exported nowhere, or outside the served
    // zones, still takes its slot (ns/h401.global hashes to the slot ns/h610.global wants).
    let hidden = [
        text.clone(),
        se("hidden", "{hosts: [h401.global], resolution: DNS, exportTo: [\"~\"]}"),
    ]
    .concat();
    let t = table_of(&s, &[("c1", &entries(&hidden))]);
    assert_eq!(look(&t, "h610.global"), "240.240.199.83 2001:2::f0f0:c753");
    assert_eq!(look(&t, "h401.global"), "nx");
    let mut narrow = TableSettings::new(&["h610.global"]).unwrap();
    narrow.auto_allocate = AutoAllocate::IstioLegacy;
    let visible = [
        text.clone(),
        se("other-zone", "{hosts: [h401.global], resolution: DNS}"),
    ]
    .concat();
    let t = table_of(&narrow, &[("c1", &entries(&visible))]);
    assert_eq!(
        look(&t, "h610.global"),
        "240.240.199.83 2001:2::f0f0:c753",
        "hosts outside the zones count too"
    );
    assert_eq!(look(&t, "h401.global"), "out");

    // Per source, as each cluster's istiod computes it: the other cluster's VIP differs, and
    // the higher source wins with a conflict.
    let c2 = entries(&se("alloc", "{hosts: [h610.global], resolution: DNS}"));
    let c1 = entries(&hidden);
    let t = table_of(&s, &[("c1", &c1), ("c2", &c2)]);
    assert_eq!(look(&t, "h610.global"), "240.240.199.83 2001:2::f0f0:c753");
    assert_eq!(t.conflicts().len(), 1);
    assert_eq!(t.conflicts()[0].loser_addresses.len(), 2);

    // The key is the host as written: istiod hashes "ns/H610.Global", not "ns/h610.global".
    let t = table_of(
        &s,
        &[("c1", &entries(&se("caps", "{hosts: [H610.Global], resolution: DNS}")))],
    );
    let (v4, v6) = super::allocate::allocate(["ns/H610.Global"])["ns/H610.Global"];
    assert_eq!(look(&t, "h610.global"), format!("{v4} {v6}"));
    assert_ne!(v4.to_string(), "240.240.125.47");

    // Creation time orders the services (then host, then namespace).
    let older = se("a", "{hosts: [h610.global], resolution: DNS}").replace(
        "metadata: {name: a}",
        "metadata: {name: a, creationTimestamp: \"2020-01-01T00:00:00Z\"}",
    );
    let newer = se("b", "{hosts: [h401.global], resolution: DNS}").replace(
        "metadata: {name: b}",
        "metadata: {name: b, creationTimestamp: \"2024-01-01T00:00:00Z\"}",
    );
    let t = table_of(&s, &[("c1", &entries(&[newer, older].concat()))]);
    assert_eq!(
        look(&t, "h610.global"),
        "240.240.125.47 2001:2::f0f0:7d2f",
        "the older entry gets the contested slot"
    );
}

/// Log output, captured.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An entry giving `host` `n` IPv4 addresses (from `first` on).
fn with_addresses(name: &str, host: &str, n: u32, first: u32) -> String {
    let addresses: Vec<String> = (first..first + n)
        .map(|i| std::net::Ipv4Addr::from(i).to_string())
        .collect();
    se(
        name,
        &format!("{{hosts: [{host}], addresses: [{}]}}", addresses.join(", ")),
    )
}

#[test]
fn a_host_too_large_for_one_message_is_warned_about_once_per_build() {
    // Over TCP one message holds 65 535 bytes: header, question (the name, type, class), one
    // 16-byte record per address (name compressed) and an OPT of 11 bytes.
    let fits = |host: &str| (65535 - 12 - (name::to_wire(host).unwrap().len() + 4) - 11) / 16;
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let source = (0, Arc::<str>::from("c1"));
    let big = |first| with_addresses("big", "big.global", fits("big.global") as u32 + 1, first);
    let edge = with_addresses("edge", "edge.global", fits("edge.global") as u32, 0x0B00_0000);
    tracing::subscriber::with_default(subscriber, || {
        let mut live = Live::new(settings());
        live.replace(&source, entries(&[big(0x0A00_0000), edge.clone()].concat()));
        live.commit();
        live.upsert(
            &source,
            entries(&se("other", "{hosts: [other.global], addresses: [1.1.1.1]}")).remove(0),
        );
        live.commit();
        live.replace(&source, entries(&[big(0x0A00_0001), edge].concat()));
        live.commit();
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(
        warnings.iter().filter(|l| l.contains("big.global")).count(),
        2,
        "once when built, again when its addresses changed, not on other changes: {text}"
    );
    assert!(
        !text.contains("edge.global"),
        "a host that just fits is not warned about: {text}"
    );
}

mod derived;

#[test]
fn names_held_in_the_node_and_longer_ones_are_told_apart() {
    // Wire lengths 31 and 63 (the longest a node may hold in place, at 96 and 128 bytes) and
    // one byte on either side, and 103 (behind a pointer), sharing their first bytes, and a
    // name below the longest one (its ancestors are empty non-terminals of either kind).
    let label = |n: usize| "a".repeat(n);
    let names = [
        format!("{}.global", label(21)),
        format!("{}.global", label(22)),
        format!("{}.global", label(23)),
        format!("{}.global", label(53)),
        format!("{}.global", label(54)),
        format!("{}.global", label(55)),
        format!("{}.{}.global", label(63), label(30)),
        format!("x.{}.{}.global", label(63), label(30)),
    ];
    let wire_lens: Vec<usize> = names.iter().map(|n| name::to_wire(n).unwrap().len()).collect();
    assert_eq!(wire_lens, [30, 31, 32, 62, 63, 64, 103, 105]);
    let text: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| se(&format!("s{i}"), &format!("{{hosts: [{n}], addresses: [10.0.0.{i}]}}")))
        .collect();
    let t = one(&text);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(look(&t, n), format!("10.0.0.{i}"), "{n}");
        assert_eq!(look(&t, &n.to_uppercase()), format!("10.0.0.{i}"), "{n} in upper case");
    }
    assert_eq!(look(&t, &format!("{}.global", label(56))), "nx");
    // The same lengths as names held, other bytes.
    assert_eq!(look(&t, &format!("{}b.global", label(21))), "nx");
    assert_eq!(look(&t, &format!("{}b.global", label(53))), "nx");
    assert_eq!(look(&t, &format!("{}.{}b.global", label(63), label(29))), "nx");
    assert_eq!(look(&t, &format!("{}.{}.global", label(63), label(29))), "nx");
    assert_eq!(
        look(&t, &format!("{}.global", label(30))),
        "empty",
        "above the longest name"
    );
    assert_eq!(look(&t, &format!("y.{}.{}.global", label(63), label(30))), "nx");
}
