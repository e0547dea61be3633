//! Istio's own vectors (`controller_test.go`, `nds_test.go` with `testdata/nds-se.yaml`) and
//! the properties of the allocation.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn one(keys: &[&str]) -> Vec<(String, String)> {
    let got = allocate(keys.iter().copied());
    keys.iter()
        .map(|k| {
            let (v4, v6) = got[k];
            (v4.to_string(), v6.to_string())
        })
        .collect()
}

fn pair(v4: &str, v6: &str) -> (String, String) {
    (v4.into(), v6.into())
}

#[test]
fn fnv1a_reference_values() {
    assert_eq!(fnv1a(b""), 0x811c9dc5);
    assert_eq!(fnv1a(b"a"), 0xe40c292c);
    assert_eq!(fnv1a(b"foobar"), 0xbf9cf968);
}

#[test]
fn istio_controller_test_vectors() {
    // "allocate IP for clientside lb" / "dns lb": no namespace, key "/foo.com".
    assert_eq!(one(&["/foo.com"]), [pair("240.240.227.81", "2001:2::f0f0:e351")]);
    // "collision": the second hashes to the same slot and is probed elsewhere.
    assert_eq!(
        one(&["/a17061.example.com", "/a44155.example.com"]),
        [
            pair("240.240.25.11", "2001:2::f0f0:19b"),
            pair("240.240.31.17", "2001:2::f0f0:1f11")
        ]
    );
    // "stable IP": the namespace is part of the key, and another namespace does not move it.
    assert_eq!(
        one(&["a/a.example.com"]),
        [pair("240.240.134.206", "2001:2::f0f0:86ce")]
    );
    assert_eq!(
        one(&["a/a.example.com", "b/a.example.com"]),
        [
            pair("240.240.134.206", "2001:2::f0f0:86ce"),
            pair("240.240.41.100", "2001:2::f0f0:2964")
        ]
    );
}

#[test]
fn istio_nds_test_vectors() {
    // pilot/pkg/xds/nds_test.go "auto allocate" over testdata/nds-se.yaml.
    let got = one(&["ns2/random-1.host.example", "ns2/random-3.host.example"]);
    assert_eq!(got[0].0, "240.240.116.21");
    assert_eq!(got[1].0, "240.240.81.100");
}

#[test]
fn istio_deterministic_test_vectors() {
    // Test_legacyAutoAllocateIP_deterministic: these keep their addresses while others come and go.
    let original: HashMap<&str, &str> = [
        ("/a.com", "240.240.109.8"),
        ("/c.com", "240.240.234.51"),
        ("/e.com", "240.240.85.60"),
        ("/g.com", "240.240.23.172"),
        ("/i.com", "240.240.15.2"),
        ("/k.com", "240.240.160.161"),
        ("/l.com", "240.240.42.96"),
        ("/n.com", "240.240.121.61"),
        ("/o.com", "240.240.122.71"),
    ]
    .into();
    let extra = [
        "/b.com", "/d.com", "/f.com", "/h.com", "/j.com", "/m.com", "/p.com", "/q.com", "/r.com",
    ];
    let mut keys: Vec<&str> = original.keys().copied().collect();
    keys.sort();
    for round in [
        keys.clone(),
        [keys.clone(), extra.to_vec()].concat(),
        [keys.clone(), extra[..4].to_vec()].concat(),
    ] {
        let got = allocate(round.iter().copied());
        for (k, v4) in &original {
            assert_eq!(got[k].0.to_string(), *v4, "{k} in a set of {}", round.len());
        }
    }
    // Test_autoAllocateIP_with_duplicated_host: a key seen twice reuses its first pair.
    let dup = [keys.clone(), vec!["/i.com"]].concat();
    assert_eq!(allocate(dup.iter().copied())["/i.com"].0.to_string(), "240.240.15.2");
}

#[test]
fn istio_values_test_fills_every_slot() {
    // Test_legacyAutoAllocateIP_values: 65024 services, every address distinct, none ending
    // in .0 or .255, the last one 240.240.10.222.
    let keys: Vec<String> = (0..SLOTS).map(|i| format!("/foo{i}.com")).collect();
    let got = allocate(keys.iter().map(String::as_str));
    assert_eq!(got[keys.last().unwrap().as_str()].0, Ipv4Addr::new(240, 240, 10, 222));
    let v4: HashSet<Ipv4Addr> = got.values().map(|p| p.0).collect();
    assert_eq!(v4.len(), SLOTS);
    assert!(
        v4.iter()
            .all(|ip| ip.octets()[..2] == [240, 240] && ip.octets()[3] != 0 && ip.octets()[3] != 255)
    );
}

#[test]
fn istio_v6_formatting_can_give_two_hosts_one_aaaa() {
    // (0, 0x1b) and (1, 0x0b) both print as f0f0:1b: Istio's unpadded `%x%x`. The sidecar
    // sees the same collision, so the DNS answer matches it on purpose.
    let got = one(&["default/svc11.example.global", "default/svc771.example.global"]);
    assert_eq!(
        got,
        [
            pair("240.240.0.27", "2001:2::f0f0:1b"),
            pair("240.240.1.11", "2001:2::f0f0:1b")
        ]
    );
    assert_eq!(addresses(0, 0x1b).1, "2001:2::f0f0:1b".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        addresses(0xff, 0xfe).1,
        "2001:2::f0f0:fffe".parse::<Ipv6Addr>().unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Deterministic for a given set in a given order, and never one IPv4 address for two keys.
    #[test]
    fn deterministic_and_v4_unique(hosts in proptest::collection::vec("[a-z]{1,8}\\.[a-z]{1,6}/[a-z0-9-]{1,12}\\.global", 1..400)) {
        let first = allocate(hosts.iter().map(String::as_str));
        let again = allocate(hosts.iter().map(String::as_str));
        prop_assert_eq!(&first, &again);
        let distinct: HashSet<&str> = hosts.iter().map(String::as_str).collect();
        prop_assert_eq!(first.len(), distinct.len());
        let v4: HashSet<Ipv4Addr> = first.values().map(|p| p.0).collect();
        prop_assert_eq!(v4.len(), distinct.len(), "an IPv4 address handed to two keys");
        for (v4, v6) in first.values() {
            let [a, b, c, d] = v4.octets();
            prop_assert!(a == 240 && b == 240 && d != 0 && d != 255);
            prop_assert_eq!(*v6, addresses(u32::from(c), u32::from(d)).1);
        }
    }
}
