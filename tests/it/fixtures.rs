//! Real-world ServiceEntries from public projects (../shared/research/fixtures, not copied
//! into the repository): every document loads without a crash, valid `.global` entries are
//! served, invalid ones are skipped with a warning that names them.

use globaldns::serviceentry::yaml;
use globaldns::table::{self, AutoAllocate, SourceInput, TableSettings};
use hickory_proto::rr::RecordType;

use crate::support::*;

mod dir;
use dir::fixtures_dir;

#[test]
fn every_fixture_document_loads_or_is_named() {
    let Some(dir) = fixtures_dir() else { return };
    let mut files = 0;
    let (mut served, mut rejected, mut not_yaml) = (0, Vec::new(), Vec::new());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let documents = text.lines().filter(|l| l.trim_end() == "kind: ServiceEntry").count();
        match yaml::parse(&text, "default") {
            Ok(parsed) => {
                assert_eq!(
                    parsed.entries.len() + parsed.invalid.len(),
                    documents,
                    "{}: every document accounted for",
                    path.display()
                );
                served += parsed.entries.len();
                rejected.extend(parsed.invalid.iter().map(|i| i.to_string()));
            }
            Err(e) => {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                // Only the templates and the README snippet are not YAML (SOURCES.md).
                assert!(name.contains("tmpl") || name.contains("notyaml"), "{name}: {e}");
                not_yaml.push(name);
            }
        }
    }
    assert!(files >= 30, "{files} fixture files");
    assert!(served >= 70, "{served} entries loaded");
    assert_eq!(not_yaml.len(), 3, "{not_yaml:?}");
    for named in [
        "default/bad-host-wildcard: host \"*\"",
        "default/no-spec: spec is required",
        "default/missing-host: spec.hosts is required",
        "default-ignore/service-entry-ignore: host \"*\"",
    ] {
        assert!(
            rejected.iter().any(|r| r.starts_with(named)),
            "{named} not in {rejected:#?}"
        );
    }
}

#[tokio::test]
async fn fixture_global_names_are_served() {
    let Some(dir) = fixtures_dir() else { return };
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        texts.push((name, std::fs::read_to_string(&path).unwrap()));
    }
    let files: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let server = Server::start(&files).await;
    let mut client = udp_client(server.addr).await;
    for (name, want) in [
        ("stage.greeting.global.", vec!["240.0.10.2"]),
        ("reviews.default.global.", vec!["240.0.0.3"]),
        ("balancereader.boa.global.", vec!["240.0.0.2"]),
        ("httpbin.bar.global.", vec!["127.255.0.2", "127.255.0.3", "240.0.0.2"]),
    ] {
        let m = ask(&mut client, name, RecordType::A).await;
        assert_eq!(addresses(&m), want, "{name}");
        assert!(m.metadata.authoritative);
    }
    let m = ask(&mut client, "greeting.global.", RecordType::A).await;
    assert!(
        m.answers.is_empty() && m.metadata.response_code == hickory_proto::op::ResponseCode::NoError,
        "empty non-terminal"
    );
    server.stop().await;
}

/// Istio's `pilot/pkg/xds/nds_test.go` "auto allocate" case over its `testdata/nds-se.yaml`.
#[test]
fn istio_nds_fixture_with_legacy_allocation() {
    let Some(dir) = fixtures_dir() else { return };
    let text = std::fs::read_to_string(dir.join("istio_istio_pilot-xds-testdata-nds-se.yaml")).unwrap();
    let parsed = yaml::parse(&text, "default").unwrap();
    let mut settings = TableSettings::new(&["host.example"]).unwrap();
    settings.auto_allocate = AutoAllocate::IstioLegacy;
    let name: std::sync::Arc<str> = "cluster".into();
    let table = table::Live::build(
        &settings,
        &[SourceInput {
            name: &name,
            entries: &parsed.entries,
        }],
        1,
        true,
    );
    let got: Vec<(String, Vec<String>)> = table
        .hosts()
        .iter()
        .map(|h| (h.name.clone(), h.a.iter().map(|a| a.to_string()).collect()))
        .collect();
    let want: Vec<(String, Vec<String>)> = [
        ("*.random-4.host.example", vec![]),
        ("random-1.host.example", vec!["240.240.116.21"]),
        ("random-2.host.example", vec!["9.9.9.9"]),
        ("random-3.host.example", vec!["240.240.81.100"]),
        ("random-5.host.example", vec![]),
    ]
    .iter()
    .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(got, want);
}
