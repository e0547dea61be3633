use std::sync::Arc;

use super::*;

fn entry(name: &str, namespace: Option<&str>, address: &str) -> String {
    let namespace = namespace.map_or(String::new(), |ns| format!(", namespace: {ns}"));
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}{namespace}}}\n\
         spec: {{hosts: [\"{name}.global\"], addresses: ['{address}'], resolution: STATIC}}\n---\n"
    )
}

/// An event's kind, entries and error, to compare two events.
type Parts = (&'static str, Vec<Entry>, Option<String>);

fn parts(event: Event) -> Parts {
    match event {
        Event::Listed(entries) => ("listed", entries, None),
        Event::Incomplete(entries, error) => ("incomplete", entries, Some(error)),
        other => panic!("not a load's event: {other:?}"),
    }
}

/// A directory of entry files, and what `refresh` then `event` make of it.
fn loaded_the_old_way(files: &[(&str, String)]) -> (tempfile::TempDir, Parts, Vec<Diagnostic>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut source = FileSource::new(vec![dir.path().to_owned()]);
    let (_, diagnostics) = source.refresh();
    let event = parts(source.event());
    (dir, event, diagnostics)
}

#[test]
fn the_first_load_gives_what_a_refresh_and_its_event_give() {
    let both = entry("b1", Some("ns1"), "10.0.0.2") + &entry("b2", None, "10.0.0.3");
    let cases: [&[(&str, String)]; 4] = [
        &[],
        &[("a.yaml", entry("a1", Some("ns1"), "10.0.0.1"))],
        &[
            (
                "a.yaml",
                entry("a1", Some("ns1"), "10.0.0.1") + &entry("bad", None, "not an address"),
            ),
            ("b.yml", both.clone()),
            ("c.json", String::new()),
        ],
        &[
            ("a.yaml", entry("a1", None, "10.0.0.1")),
            ("b.yaml", "{ not: yaml".to_owned()),
            ("c.yaml", both),
        ],
    ];
    for files in cases {
        let (dir, expected, expected_diagnostics) = loaded_the_old_way(files);
        let mut source = FileSource::new(vec![dir.path().to_owned()]);
        let (event, diagnostics) = source.load();
        let event = parts(event);
        assert_eq!(event, expected, "{files:?}");
        assert_eq!(diagnostics, expected_diagnostics, "{files:?}");
        // Entries of different files share one copy of each namespace name, as unpacked ones do.
        let ns1: Vec<_> = event.1.iter().filter(|e| &*e.id.namespace == "ns1").collect();
        assert!(
            ns1.windows(2)
                .all(|w| Arc::ptr_eq(&w[0].id.namespace, &w[1].id.namespace))
        );
        // The packed copy holds what the event gave.
        assert_eq!(source.entries(), event.1);
    }
}

#[test]
fn a_later_load_refreshes_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    std::fs::write(&path, entry("a1", Some("ns1"), "10.0.0.1")).unwrap();
    let mut source = FileSource::new(vec![path.clone()]);
    let (first, _) = source.load();
    assert_eq!(parts(first).1.len(), 1);
    // Another size: the stamp differs whatever the clock's resolution.
    std::fs::write(
        &path,
        entry("a1", Some("ns1"), "10.0.0.1") + &entry("a2", None, "10.0.0.2"),
    )
    .unwrap();
    let (event, diagnostics) = source.load();
    let (kind, entries, _) = parts(event);
    assert_eq!((kind, diagnostics), ("listed", vec![]));
    let names: Vec<_> = entries.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(names, ["ns1/a1", "default/a2"]);
}
