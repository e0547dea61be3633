use std::net::IpAddr;

use super::yaml::parse;
use super::*;

fn doc(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\n  namespace: ns\n{spec}")
}

fn one(spec: &str) -> Result<Entry, Reason> {
    let parsed = parse(&doc(spec), "default").expect("yaml");
    match (parsed.entries.as_slice(), parsed.invalid.as_slice()) {
        ([e], []) => Ok(e.clone()),
        ([], [i]) => {
            assert_eq!(i.id.to_string(), "ns/se", "an invalid entry is named");
            Err(i.reason.clone())
        }
        other => panic!("expected one outcome, got {other:?}"),
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn hosts_follow_istio_validation() {
    struct Case {
        host: &'static str,
        ok: Option<&'static str>,
    }
    let cases = [
        Case {
            host: "httpbin.bar.global",
            ok: Some("httpbin.bar.global"),
        },
        Case {
            host: "HttpBin.Bar.Global",
            ok: Some("httpbin.bar.global"),
        },
        Case {
            host: "httpbin.bar.global.",
            ok: Some("httpbin.bar.global"),
        },
        Case {
            host: "*.bar.global",
            ok: Some("*.bar.global"),
        },
        Case {
            host: "*x.bar.global",
            ok: Some("*x.bar.global"),
        },
        Case {
            host: "*-x.bar.global",
            ok: Some("*-x.bar.global"),
        },
        Case {
            host: "single",
            ok: Some("single"),
        },
        Case {
            host: "a-b.c1.global",
            ok: Some("a-b.c1.global"),
        },
        Case { host: "*", ok: None },
        Case { host: "", ok: None },
        Case {
            host: "a.*.global",
            ok: None,
        },
        Case {
            host: "a*.b.global",
            ok: None,
        },
        Case {
            host: "-a.global",
            ok: None,
        },
        Case {
            host: "a-.global",
            ok: None,
        },
        Case {
            host: "a..global",
            ok: None,
        },
        Case {
            host: "a_b.global",
            ok: None,
        },
        Case {
            host: "foo.123",
            ok: None,
        },
        Case {
            host: "1.2.3.4",
            ok: None,
        },
    ];
    for c in cases {
        let got = one(&format!("spec:\n  hosts: [\"{}\"]\n", c.host));
        match (c.ok, got) {
            (Some(want), Ok(e)) => {
                assert_eq!(*e.hosts, [c.host.to_string()], "kept as written");
                assert_eq!(normalize_host(&e.hosts[0]), want, "{}", c.host);
            }
            (None, Err(reason)) => assert!(matches!(reason, Reason::Host(_)), "{}: {reason}", c.host),
            (want, got) => panic!("{}: want {want:?}, got {got:?}", c.host),
        }
    }
    let long_label = format!("{}.global", "a".repeat(64));
    assert!(one(&format!("spec:\n  hosts: [{long_label}]\n")).is_err());
    let long_host = vec!["abcdefghij"; 24].join(".");
    assert_eq!(
        one(&format!("spec:\n  hosts: [{long_host}]\n")).unwrap_err(),
        Reason::Host(BadHost::TooLong(long_host))
    );
}

#[test]
fn one_bad_host_rejects_the_whole_entry() {
    let err = one("spec:\n  hosts: [good.global, \"*\"]\n  addresses: [1.2.3.4]\n").unwrap_err();
    assert_eq!(err, Reason::Host(BadHost::Star));
}

#[test]
fn addresses_ips_full_length_cidrs_and_ranges() {
    let e = one("spec:\n  hosts: [a.global]\n  addresses: [1.2.3.4, 1.2.3.5/32, \"2001:db8::1\", \"2001:db8::2/128\", 10.0.0.0/8, \"2001:db8::/64\", 1.2.3.4]\n").unwrap();
    assert_eq!(*e.addresses, ips(&["1.2.3.4", "1.2.3.5", "2001:db8::1", "2001:db8::2"]));
    assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
    assert!(e.warnings[0].contains("10.0.0.0/8"));
    for bad in [
        "1.2.3",
        "1.2.3.4/33",
        "1.2.3.4/",
        "1.2.3.4/x",
        "2001:db8::/129",
        "example.com",
        "1.2.3.4/-1",
    ] {
        let err = one(&format!("spec:\n  hosts: [a.global]\n  addresses: [\"{bad}\"]\n")).unwrap_err();
        assert_eq!(err, Reason::Address(bad.to_string()), "{bad}");
    }
}

#[test]
fn resolution_names_numbers_and_default() {
    let cases: [(&str, Result<bool, ()>); 9] = [
        ("", Ok(true)),
        ("  resolution: NONE\n", Ok(true)),
        ("  resolution: STATIC\n", Ok(false)),
        ("  resolution: DNS\n", Ok(false)),
        ("  resolution: DNS_ROUND_ROBIN\n", Ok(false)),
        ("  resolution: DYNAMIC_DNS\n", Ok(false)),
        ("  resolution: 0\n", Ok(true)),
        ("  resolution: 2\n", Ok(false)),
        ("  resolution: MAGIC\n", Err(())),
    ];
    for (line, want) in cases {
        let got = one(&format!("spec:\n  hosts: [a.global]\n{line}")).map(|e| e.resolution_none);
        assert_eq!(got.map_err(|_| ()), want, "{line:?}");
    }
}

#[test]
fn export_to_values() {
    let cases: [(&str, Result<Export, ()>); 9] = [
        ("[]", Ok(Export::Mesh)),
        ("[\"*\"]", Ok(Export::Mesh)),
        ("[\".\"]", Ok(Export::Namespaces)),
        ("[\".\", other]", Ok(Export::Namespaces)),
        ("[\"~\"]", Ok(Export::Nowhere)),
        ("[\"*\", \".\"]", Err(())),
        ("[\"~\", ns]", Err(())),
        ("[Bad_NS]", Err(())),
        ("[a, a]", Err(())),
    ];
    for (value, want) in cases {
        let got = one(&format!("spec:\n  hosts: [a.global]\n  exportTo: {value}\n")).map(|e| e.export);
        assert_eq!(got.map_err(|_| ()), want, "{value}");
    }
}

#[test]
fn required_fields() {
    assert_eq!(one("").unwrap_err(), Reason::MissingField("spec"));
    assert_eq!(one("spec: {}\n").unwrap_err(), Reason::MissingField("spec.hosts"));
    let parsed = parse(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec:\n  hosts: [a.global]\n",
        "default",
    )
    .unwrap();
    assert_eq!(parsed.invalid[0].reason, Reason::MissingField("metadata.name"));
}

/// The text each reason gives (logs, `globaldns check`) and its metric label: the label says
/// what kind of fault it is, whatever words the text uses ("spec.hosts is required" is a
/// missing field, not a bad host).
#[test]
fn reasons_read_as_before_and_carry_a_bounded_label() {
    let cases = [
        ("", "spec is required", "missing_field"),
        ("spec: {}\n", "spec.hosts is required", "missing_field"),
        ("spec: {hosts: []}\n", "spec.hosts is required", "missing_field"),
        (
            "spec: {hosts: [\"*\"]}\n",
            "host \"*\" is not allowed in a ServiceEntry",
            "host",
        ),
        ("spec: {hosts: [\"\"]}\n", "empty host", "host"),
        (
            "spec: {hosts: [a_b.global]}\n",
            "host \"a_b.global\" is invalid (label \"a_b\")",
            "host",
        ),
        (
            "spec: {hosts: [a..global]}\n",
            "host \"a..global\" is invalid (label \"\")",
            "host",
        ),
        (
            "spec: {hosts: [foo.123]}\n",
            "host \"foo.123\" is invalid (top-level label \"123\" is all digits)",
            "host",
        ),
        (
            "spec: {hosts: [a.global], addresses: [1.2.3]}\n",
            "address \"1.2.3\" is not an IP or CIDR",
            "address",
        ),
        (
            "spec: {hosts: [a.global], resolution: MAGIC}\n",
            "unknown resolution \"MAGIC\"",
            "resolution",
        ),
        (
            "spec: {hosts: [a.global], resolution: 9}\n",
            "unknown resolution 9",
            "resolution",
        ),
        (
            "spec: {hosts: [a.global], resolution: [x]}\n",
            "resolution must be a string, not [\"x\"]",
            "resolution",
        ),
        (
            "spec: {hosts: [a.global], exportTo: [\"*\", ns]}\n",
            "exportTo [\"*\", \"ns\"]: \"*\" and \"~\" cannot be combined with other values",
            "export_to",
        ),
        (
            "spec: {hosts: [a.global], exportTo: [a, a]}\n",
            "exportTo lists \"a\" twice",
            "export_to",
        ),
        (
            "spec: {hosts: [a.global], exportTo: [Bad_NS]}\n",
            "exportTo \"Bad_NS\" is not \".\", \"*\", \"~\" or a namespace",
            "export_to",
        ),
        (
            "spec: {hosts: [a.global], ports: [{name: http, number: 80}, {name: http, number: 8080}]}\n",
            "spec.ports: port name \"http\" already defined",
            "ports",
        ),
        (
            "spec: {hosts: [a.global], ports: [{name: dns, number: 53, protocol: TCP}, {name: dns-udp, number: 53, protocol: UDP}]}\n",
            "spec.ports: port 53 already defined",
            "ports",
        ),
        (
            "spec: {hosts: [a.global], ports: [{number: 1}, {name: \"\", number: 2}]}\n",
            "spec.ports: port name \"\" already defined",
            "ports",
        ),
        (
            "spec: {hosts: a.global}\n",
            "invalid type: string \"a.global\", expected a sequence",
            "schema",
        ),
    ];
    let mut labels = std::collections::BTreeSet::new();
    for (spec, text, label) in cases {
        let reason = one(spec).unwrap_err();
        assert_eq!((reason.to_string().as_str(), reason.label()), (text, label), "{spec:?}");
        labels.insert(label);
    }
    let parsed = parse(
        "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: x}\n",
        "default",
    )
    .unwrap();
    let reason = &parsed.invalid[0].reason;
    assert_eq!(
        (reason.to_string().as_str(), reason.label()),
        ("unsupported apiVersion \"networking.istio.io/v2\"", "api_version")
    );
    labels.insert(reason.label());
    assert_eq!(
        labels,
        Reason::LABELS.into_iter().collect(),
        "every label is reached, and no other"
    );
}

#[test]
fn status_addresses_keep_their_host() {
    let e = one("spec:\n  hosts: [a.global]\nstatus:\n  addresses:\n  - {host: A.global, value: 240.240.0.1}\n  - {host: b.global, value: \"2001:2::1\"}\n  - {host: a.global, value: nonsense}\n").unwrap();
    assert_eq!(
        *e.status_addresses,
        [
            ("a.global".to_string(), ips(&["240.240.0.1"])[0]),
            ("b.global".to_string(), ips(&["2001:2::1"])[0])
        ]
    );
    assert_eq!(e.warnings.len(), 1);
}

#[test]
fn wrong_types_name_the_entry() {
    for spec in [
        "spec:\n  hosts: a.global\n",
        "spec:\n  hosts: [a.global]\n  addresses: {a: b}\n",
    ] {
        let err = one(spec).unwrap_err();
        assert!(
            matches!(&err, Reason::Schema(text) if text.contains("invalid type")),
            "{err:?}"
        );
    }
}

#[test]
fn documents_of_other_kinds_and_lists() {
    let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
# empty document follows
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: one}
spec: {hosts: [one.global], addresses: [1.1.1.1]}
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1beta1
  kind: ServiceEntry
  metadata: {name: two, namespace: other}
  spec: {hosts: [two.global]}
- apiVersion: networking.istio.io/v2
  kind: ServiceEntry
  metadata: {name: three}
  spec: {hosts: [three.global]}
---
apiVersion: example.com/v1
kind: ServiceEntry
metadata: {name: foreign}
";
    let parsed = parse(text, "dflt").unwrap();
    let ids: Vec<String> = parsed.entries.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["dflt/one", "other/two"]);
    assert_eq!(parsed.invalid.len(), 1);
    assert_eq!(
        parsed.invalid[0].reason,
        Reason::ApiVersion("networking.istio.io/v2".into())
    );
}

#[test]
fn text_that_is_not_yaml_fails_whole() {
    assert!(parse("spec:\n  hosts:\n  - *.google.com\n", "default").is_err());
    assert!(parse("a: [unclosed\n", "default").is_err());
}

#[test]
fn large_files_are_not_cut_by_the_parser_budget() {
    // 3000 documents: over the YAML parser's default budget of 1 024.
    let text: String = (0..3000)
        .map(|i| format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}}}\nspec: {{hosts: [s{i}.global], addresses: [10.0.{}.{}]}}\n---\n", i / 250, i % 250))
        .collect();
    let parsed = parse(&text, "default").expect("parses");
    assert_eq!(parsed.entries.len(), 3000);
    // Anchors and aliases stay bounded: a billion-laughs text is refused, not expanded.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
            (b'a' + i) as char,
            (b'a' + i) as char,
            p = (b'a' + i - 1) as char
        ));
    }
    assert!(parse(&bomb, "default").is_err());
}

#[test]
fn named_ports_for_srv_records() {
    let e = one("spec:\n  hosts: [a.global]\n  ports:\n  - {name: HTTP-web, number: 8080, protocol: HTTP}\n  - {name: dns, number: 53, protocol: udp}\n  - {name: grpc, number: 9000}\n  - {name: under_score, number: 1}\n  - {number: 2}\n  - {name: Grpc, number: 9001}\n").unwrap();
    let ports: Vec<(&str, u16, Protocol)> = e.ports.iter().map(|p| (&*p.name, p.number, p.protocol)).collect();
    assert_eq!(
        ports,
        [
            ("http-web", 8080, Protocol::Tcp),
            ("dns", 53, Protocol::Udp),
            ("grpc", 9000, Protocol::Tcp),
            ("grpc", 9001, Protocol::Tcp),
        ],
        "lower case (names differing in case only are two ports, as Istio sees them), UDP in any case, every other protocol TCP"
    );
    assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
    assert!(e.warnings[0].contains("\"under_score\"") && e.warnings[0].contains("no SRV record for port 1"));
    assert!(e.warnings[1].contains("\"\"") && e.warnings[1].contains("port 2"));
    let long = "a".repeat(63);
    let e = one(&format!(
        "spec:\n  hosts: [a.global]\n  ports: [{{name: {long}, number: 1}}, {{name: {}, number: 2}}]\n",
        &long[1..]
    ))
    .unwrap();
    assert_eq!(e.ports.len(), 1, "`_` and 63 letters are one label too many");
    assert_eq!(e.ports[0].number, 2);
}

#[test]
fn a_port_number_outside_1_to_65535_rejects_the_entry() {
    for bad in ["0", "65536", "-1", "http"] {
        let err = one(&format!(
            "spec:\n  hosts: [a.global]\n  addresses: [1.2.3.4]\n  ports: [{{name: http, number: {bad}}}]\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("port")
                || err.to_string().contains("number")
                || err.to_string().contains("invalid"),
            "{bad}: {err}"
        );
    }
    assert!(one("spec:\n  hosts: [a.global]\n  ports: [{name: http, number: 65535}]\n").is_ok());
}
