//! SRV and PTR records derived from the hosts: which owners exist, what they hold, and the
//! empty non-terminals they make (DESIGN.md "More than A and AAAA").

use super::*;
use crate::table::derived::reverse_name;

const ZONES: [&str; 3] = ["global", "240.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"];

fn reverse_settings() -> TableSettings {
    TableSettings::new(&ZONES).unwrap()
}

/// What a lookup gives: `nx`, `out`, `empty`, the addresses, `srv <ports> -> <target>` or
/// `ptr <targets>`.
fn what(t: &Table, name: &str) -> String {
    match t.lookup(&name::to_wire(name).unwrap()) {
        Lookup::Exists { srv: Some(srv), .. } => {
            format!(
                "srv {:?} -> {}",
                srv.ports().collect::<Vec<_>>(),
                name::to_text(srv.target())
            )
        }
        Lookup::Exists { ptr: Some(ptr), .. } => {
            let targets: Vec<String> = ptr
                .all()
                .iter()
                .map(|t| format!("{}@{}", name::to_text(t.wire()), t.source()))
                .collect();
            format!("ptr {}", targets.join(" "))
        }
        _ => look(t, name),
    }
}

fn rev(ip: &str) -> String {
    let mut text = name::to_text(&reverse_name(ip.parse().unwrap()));
    text.pop();
    text
}

#[test]
fn srv_owners_and_the_names_above_them() {
    let text = [
        se(
            "web",
            "{hosts: [web.ns.global], addresses: [240.0.0.1], ports: [{name: http, number: 80}, {name: dns, number: 53, protocol: UDP}]}",
        ),
        // One name, two numbers: two entries (one entry may not name a port twice).
        se("web-alt", "{hosts: [web.ns.global], addresses: [240.0.0.1], ports: [{name: http, number: 8080}]}"),
        se("wild", "{hosts: [\"*.shop.global\"], addresses: [240.0.0.2], ports: [{name: http, number: 80}]}"),
        se("bare", "{hosts: [bare.global], resolution: DNS, ports: [{name: http, number: 80}]}"),
    ]
    .concat();
    let t = table_of(&reverse_settings(), &[("c1", &entries(&text))]);
    let cases = [
        ("_http._tcp.web.ns.global", "srv [80, 8080] -> web.ns.global."),
        ("_dns._udp.web.ns.global", "srv [53] -> web.ns.global."),
        ("_dns._tcp.web.ns.global", "nx"),
        ("_tcp.web.ns.global", "empty"),
        ("_udp.web.ns.global", "empty"),
        ("web.ns.global", "240.0.0.1"),
        ("ns.global", "empty"),
        ("x._tcp.web.ns.global", "nx"),
        // Wildcards have no SRV: their own records answer names below them.
        ("_http._tcp.x.shop.global", "240.0.0.2"),
        // A host without addresses has no SRV either, and makes no names.
        ("_http._tcp.bare.global", "nx"),
        ("_tcp.bare.global", "nx"),
    ];
    for (name, want) in cases {
        assert_eq!(what(&t, name), want, "{name}");
    }
}

#[test]
fn ports_of_the_entries_that_give_the_addresses() {
    let local = entries(
        &[
            se(
                "spec",
                "{hosts: [a.global], addresses: [240.0.0.1], ports: [{name: http, number: 80}]}",
            ),
            se(
                "none",
                "{hosts: [a.global], resolution: DNS, ports: [{name: admin, number: 9000}]}",
            ),
            se(
                "default",
                "{hosts: [d.global], resolution: DNS, ports: [{name: http, number: 81}]}",
            ),
            se(
                "none-res",
                "{hosts: [d.global], resolution: NONE, ports: [{name: none, number: 82}]}",
            ),
        ]
        .concat(),
    );
    let remote = entries(&se(
        "other",
        "{hosts: [a.global, r.global], addresses: [240.0.0.9], ports: [{name: remote, number: 70}]}",
    ));
    let mut s = reverse_settings();
    s.default_address = Some("240.0.0.99".parse().unwrap());
    let t = table_of(&s, &[("local", &local), ("remote", &remote)]);
    assert_eq!(what(&t, "_http._tcp.a.global"), "srv [80] -> a.global.");
    assert_eq!(what(&t, "_admin._tcp.a.global"), "nx", "an entry that gave no address");
    assert_eq!(what(&t, "_remote._tcp.a.global"), "nx", "the losing source's ports");
    assert_eq!(what(&t, "_remote._tcp.r.global"), "srv [70] -> r.global.");
    assert_eq!(
        what(&t, "_http._tcp.d.global"),
        "srv [81] -> d.global.",
        "given the default address"
    );
    assert_eq!(
        what(&t, "_none._tcp.d.global"),
        "nx",
        "resolution NONE is never given it"
    );
    // PTR: the winner's address, both sources' hosts; never the placeholder's.
    assert_eq!(what(&t, &rev("240.0.0.1")), "ptr a.global.@local");
    assert_eq!(what(&t, &rev("240.0.0.9")), "ptr r.global.@remote");
    assert_eq!(what(&t, &rev("240.0.0.99")), "nx");
}

#[test]
fn ptr_records_v4_and_v6_shared_addresses_and_names_above() {
    let c1 = entries(
        &[
            se(
                "one",
                "{hosts: [one.global, two.global], addresses: [240.0.0.5, \"2001:db8::5\", 10.0.0.5]}",
            ),
            se("wild", "{hosts: [\"*.w.global\"], addresses: [240.0.0.6]}"),
            se(
                "in-zone",
                "{hosts: [x.240.in-addr.arpa, 5.0.0.240.in-addr.arpa], addresses: [240.0.0.7]}",
            ),
        ]
        .concat(),
    );
    let c2 = entries(&se("three", "{hosts: [three.global], addresses: [240.0.0.5]}"));
    let t = table_of(&reverse_settings(), &[("c1", &c1), ("c2", &c2)]);
    let v6 = rev("2001:db8::5");
    let cases = [
        (rev("240.0.0.5"), "ptr one.global.@c1 two.global.@c1 three.global.@c2"),
        (v6.clone(), "ptr one.global.@c1 two.global.@c1"),
        (v6[2..].to_string(), "empty"),
        ("8.b.d.0.1.0.0.2.ip6.arpa".into(), "empty"),
        ("0.0.240.in-addr.arpa".into(), "empty"),
        ("0.240.in-addr.arpa".into(), "empty"),
        ("240.in-addr.arpa".into(), "empty"),
        (rev("240.0.0.6"), "nx"), // wildcards have none
        (rev("240.0.0.7"), "nx"), // hosts inside a reverse zone are ignored
        ("x.240.in-addr.arpa".into(), "nx"),
        (rev("10.0.0.5"), "out"), // outside every reverse zone
        ("1.0.0.240.in-addr.arpa".into(), "nx"),
    ];
    for (name, want) in cases {
        assert_eq!(what(&t, &name), want, "{name}");
    }
    let skipped: Vec<(&str, &str)> = t.skipped().iter().map(|s| (s.host.as_str(), s.reason)).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped.iter().all(|(_, why)| why.contains("reverse zone")),
        "{skipped:?}"
    );
}

#[test]
fn a_zone_walk_lists_srv_and_ptr_as_served() {
    let text = [
        se(
            "web",
            "{hosts: [web.global], addresses: [240.0.0.1, \"2001:db8::1\"], ports: [{name: http, number: 80}]}",
        ),
        se("wild", "{hosts: [\"*.w.global\"], addresses: [240.0.0.2]}"),
    ]
    .concat();
    let t = table_of(&reverse_settings(), &[("c1", &entries(&text))]);
    let show = |zone: &Zone| -> Vec<String> {
        t.records(zone)
            .into_iter()
            .map(|r| format!("{} {:?}", r.owner, r.data))
            .collect()
    };
    let zones = t.zones();
    let global = zones.iter().find(|z| &*z.name == "global").unwrap();
    assert_eq!(
        show(global),
        [
            "*.w.global A(240.0.0.2)",
            "_http._tcp.web.global Srv { port: 80, target: \"web.global\" }",
            "web.global A(240.0.0.1)",
            "web.global Aaaa(2001:db8::1)",
        ]
    );
    let v4 = zones.iter().find(|z| &*z.name == "240.in-addr.arpa").unwrap();
    assert_eq!(show(v4), ["1.0.0.240.in-addr.arpa Ptr(\"web.global\")"]);
    let v6 = zones.iter().find(|z| &*z.name == "8.b.d.0.1.0.0.2.ip6.arpa").unwrap();
    assert_eq!(show(v6), [format!("{} Ptr(\"web.global\")", rev("2001:db8::1"))]);
    assert!(v4.reverse && v6.reverse && !global.reverse);
}

#[test]
fn derived_records_follow_their_host_change_by_change() {
    let source = (0, Arc::<str>::from("c1"));
    let mut live = Live::new(reverse_settings());
    let at = |address: &str, port: &str| {
        entries(&se(
            "e",
            &format!("{{hosts: [a.b.global], addresses: [{address}], ports: [{{name: {port}, number: 80}}]}}"),
        ))
    };
    live.replace(&source, at("240.0.0.1", "http"));
    assert!(live.commit().records_changed);
    let t = live.table(1, true);
    assert_eq!(what(&t, &rev("240.0.0.1")), "ptr a.b.global.@c1");
    assert_eq!(what(&t, "_http._tcp.a.b.global"), "srv [80] -> a.b.global.");

    live.replace(&source, at("240.0.0.2", "http"));
    assert!(live.commit().records_changed, "an address moved: its PTR too");
    let t = live.table(1, true);
    assert_eq!(
        (what(&t, &rev("240.0.0.1")), what(&t, "0.0.240.in-addr.arpa")),
        ("nx".into(), "empty".into())
    );
    assert_eq!(what(&t, &rev("240.0.0.2")), "ptr a.b.global.@c1");

    live.replace(&source, at("240.0.0.2", "grpc"));
    assert!(live.commit().records_changed, "a port renamed: another SRV owner");
    let t = live.table(1, true);
    assert_eq!(what(&t, "_http._tcp.a.b.global"), "nx");
    assert_eq!(what(&t, "_grpc._tcp.a.b.global"), "srv [80] -> a.b.global.");

    live.replace(&source, Vec::new());
    assert!(live.commit().records_changed);
    let t = live.table(1, true);
    for gone in [
        &rev("240.0.0.2"),
        "0.0.240.in-addr.arpa",
        "_grpc._tcp.a.b.global",
        "_tcp.a.b.global",
        "b.global",
    ] {
        assert_eq!(what(&t, gone), "nx", "{gone}");
    }
    assert_eq!(
        t.shards.iter().map(|s| s.len()).sum::<usize>(),
        0,
        "no node left behind"
    );
}
