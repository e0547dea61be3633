//! The differential test: libyaml's reading against serde-saphyr's on every file of the
//! fuzz corpus, the real-world fixtures (when present, as tests/it/fixtures.rs finds them)
//! and the files or folders named in `GLOBALDNS_YAML_DIFF` (e.g. the load benchmark's
//! 100 000-entry file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::super::{parse_serde_saphyr, read_libyaml};
use super::{GiveUp, Node};
use crate::serviceentry::Resource;

#[path = "../../../../tests/it/fixtures/dir.rs"]
mod fixtures;
use fixtures::fixtures_dir;

fn files_of(path: &Path, into: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        into.extend(entries.into_iter().filter(|p| p.is_file()));
    } else {
        into.push(path.to_owned());
    }
}

/// Where the two readings differ on `text`, or why libyaml's gave up (`Ok`).
fn compare(text: &str) -> Result<Option<GiveUp>, String> {
    let saphyr = parse_serde_saphyr(text, "default").map_err(|e| e.to_string());
    match read_libyaml(text, "default") {
        Err(give_up) => Ok(Some(give_up)),
        Ok(fast) => match saphyr {
            Ok(slow) if format!("{fast:?}") == format!("{slow:?}") => Ok(None),
            Ok(slow) => Err(format!("libyaml {fast:?}\nsaphyr  {slow:?}")),
            Err(e) => Err(format!("libyaml {fast:?}\nsaphyr  {e}")),
        },
    }
}

/// The fuzz corpus, the fixtures and the files of `GLOBALDNS_YAML_DIFF`.
fn corpus_and_fixtures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_of(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/entries"),
        &mut files,
    );
    let corpus = files.len();
    assert!(corpus > 1000, "the fuzz corpus is in the repository: {corpus} files");
    if let Some(dir) = fixtures_dir() {
        files_of(&dir, &mut files);
    }
    if let Some(extra) = std::env::var_os("GLOBALDNS_YAML_DIFF") {
        for path in std::env::split_paths(&extra) {
            files_of(&path, &mut files);
        }
    }
    files
}

#[test]
fn libyaml_reads_as_serde_saphyr_on_every_corpus_and_fixture_file() {
    let files = corpus_and_fixtures();
    let (mut read, mut gave_up, mut differ) = (0, BTreeMap::<&str, usize>::new(), Vec::new());
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        match compare(&text) {
            Ok(None) => read += 1,
            Ok(Some(GiveUp(why))) => *gave_up.entry(why).or_default() += 1,
            Err(diff) => differ.push(format!("{}:\n{diff}", path.display())),
        }
    }
    eprintln!(
        "{} files: {read} read by libyaml, left to serde-saphyr: {gave_up:?}",
        files.len()
    );
    assert!(
        differ.is_empty(),
        "{} files read differently:\n{}",
        differ.len(),
        differ.join("\n")
    );
    // Most of the corpus is the fuzzer's mangled text that neither reads; enough must be
    // read by libyaml for the comparison to prove something.
    assert!(read >= 200, "only {read} of {} files read by libyaml", files.len());
}

/// The resources read straight from the tree (`fast`) are `serde_json::from_value`'s of the
/// same document, for every mapping of the corpus and fixtures (documents and List items,
/// whatever their kind): where `from_value` fails, `fast` must have read none.
#[test]
fn fast_resources_are_those_of_their_values() {
    let (mut fast, mut differ) = (0, Vec::new());
    for path in corpus_and_fixtures() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        compare_fast(&text, &mut fast, &mut differ);
    }
    assert_read_alike(fast, &differ, 200);
}

/// No differences, and at least `least` resources read straight from the tree.
fn assert_read_alike(fast: usize, differ: &[String], least: usize) {
    assert!(
        differ.is_empty(),
        "{} read differently:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert!(fast >= least, "only {fast} resources read straight from the tree");
}

/// Compares each resource `fast` reads in `text` (documents before a give-up too) with
/// `from_value`'s, counting them in `fast` and the differences in `differ`.
fn compare_fast(text: &str, fast: &mut usize, differ: &mut Vec<String>) {
    fn compare(doc: Node<'_, '_>, fast: &mut usize, differ: &mut Vec<String>) {
        for item in doc.get("items").into_iter().flat_map(Node::items) {
            compare(item, fast, differ);
        }
        let Some(resource) = super::super::fast::resource(doc) else {
            return;
        };
        *fast += 1;
        let value = doc.to_value();
        match serde_json::from_value::<Resource>(value.clone()) {
            Ok(slow) if format!("{resource:?}") == format!("{slow:?}") => {}
            slow => differ.push(format!("{value}\nfast      {resource:?}\nfrom_value {slow:?}")),
        }
    }
    let _ = super::read(text, |doc| compare(doc, fast, differ));
}

/// Each field `fast` reads, at the edges of the types it takes: every text is read by libyaml,
/// the odd field left to `from_value`, and the verdicts are serde-saphyr's.
#[test]
fn fields_at_the_edges_of_their_types_read_as_serde_saphyr() {
    let head = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n";
    let fields = [
        "metadata: {name: a, namespace: b, creationTimestamp: '2024-01-01T00:00:00Z'}",
        "metadata: {name: 5}",
        "metadata: {name: null}",
        "metadata: null",
        "metadata: [a]",
        "spec: null",
        "spec: [a]",
        "spec: {hosts: a.global}",
        "spec: {hosts: [a.global, 5]}",
        "spec: {hosts: null}",
        "spec: {hosts: [a.global], addresses: [10.0.0.1, null]}",
        "spec: {hosts: [a.global], exportTo: ['.', '*']}",
        "spec: {hosts: [a.global], exportTo: '.'}",
        "spec: {hosts: [a.global], resolution: 1}",
        "spec: {hosts: [a.global], resolution: -1}",
        "spec: {hosts: [a.global], resolution: true}",
        "spec: {hosts: [a.global], resolution: null}",
        "spec: {hosts: [a.global], resolution: [DNS]}",
        "spec: {hosts: [a.global], ports: [{number: 80, name: http, protocol: HTTP}]}",
        "spec: {hosts: [a.global], ports: [{number: 4294967295, name: http}]}",
        "spec: {hosts: [a.global], ports: [{number: 4294967296, name: http}]}",
        "spec: {hosts: [a.global], ports: [{number: -1, name: http}]}",
        "spec: {hosts: [a.global], ports: [{number: '80', name: http}]}",
        "spec: {hosts: [a.global], ports: [{number: 80, name: 5}]}",
        "spec: {hosts: [a.global], ports: [{number: 80, protocol: null}]}",
        "spec: {hosts: [a.global], ports: {number: 80}}",
        "spec: {hosts: [a.global], ports: [80]}",
        "spec: {hosts: [a.global]}\nstatus: {addresses: [{value: 240.0.0.1, host: a.global}]}",
        "spec: {hosts: [a.global]}\nstatus: {addresses: [{value: 240.0.0.1}]}",
        "spec: {hosts: [a.global]}\nstatus: {addresses: [{host: a.global}]}",
        "spec: {hosts: [a.global]}\nstatus: {addresses: [{value: 5}]}",
        "spec: {hosts: [a.global]}\nstatus: {addresses: null}",
        "spec: {hosts: [a.global]}\nstatus: null",
        "spec: {hosts: [a.global]}\nstatus: {conditions: [{type: Ready}]}",
        "spec: {hosts: ['it''s.global']}",
        "metadata: {name: a, labels: {x: y}}\nspec: {hosts: [a.global], location: MESH_INTERNAL}",
    ];
    let (mut fast, mut differ) = (0, Vec::new());
    for field in fields {
        let text = format!("{head}{field}\n");
        assert_eq!(compare(&text), Ok(None), "{text}");
        compare_fast(&text, &mut fast, &mut differ);
    }
    assert_read_alike(fast, &differ, 10);
}

/// Pieces of YAML the property strings together: a ServiceEntry's lines and the constructs
/// where libyaml and serde-saphyr may part (numbers, null and boolean words, quotes and
/// escapes, comments, flow and block styles, anchors, tags, directives, tabs, BOMs).
const PIECES: &[&str] = &[
    "apiVersion: networking.istio.io/v1\n",
    "kind: ServiceEntry\n",
    "kind: List\nitems:\n",
    "metadata:\n",
    "  name: ",
    "  namespace: ",
    "spec:\n",
    "  hosts:\n",
    "  - ",
    "  addresses: [",
    "  ports:\n  - number: ",
    "    protocol: ",
    "  resolution: ",
    "  exportTo: [",
    "  creationTimestamp: ",
    "status:\n  addresses:\n  - value: ",
    "    host: ",
    "4294967296",
    "''",
    "STATIC",
    "DNS",
    "svc.ns.global",
    "*.global",
    "a",
    "80",
    "0",
    "-1",
    "+1",
    "012",
    "0x1F",
    "0o17",
    "1_000",
    "1e3",
    "1.5",
    ".5",
    ".inf",
    "-.INF",
    ".nan",
    "9999999999999999999",
    "10.0.0.1",
    "240.0.0.0/16",
    "2001:db8::1",
    "3e5-1",
    "null",
    "~",
    "Null",
    "true",
    "True",
    "FALSE",
    "yes",
    "'q'",
    "'it''s'",
    "\"d\"",
    "\"e\\n\"",
    "\"\\u00e9\"",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    ":",
    "- ",
    "-",
    "\n",
    "  ",
    "    ",
    "---\n",
    "--- ",
    "...\n",
    "#c",
    " #c\n",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "! ",
    "? ",
    "|\n",
    ">-\n",
    "\t",
    "\r\n",
    "%YAML 1.2\n",
    "%TAG ! tag:x:\n",
    "<<: ",
    "$ref: ",
    "é",
    "\u{feff}",
    "\u{85}",
    "\0",
    "\"",
    "'",
    "\u{2028}",
    "\u{a0}",
    "\u{7f}",
    "\u{1}",
    "\u{fffe}",
    "\u{1f600}",
    "\u{d7ff}",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    #[test]
    fn libyaml_reads_as_serde_saphyr_on_strung_pieces(
        pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..48)
    ) {
        let text = pieces.concat();
        prop_assert!(compare(&text).is_ok(), "{:?}: {}", text, compare(&text).unwrap_err());
    }

    #[test]
    fn libyaml_reads_as_serde_saphyr_on_mutated_entries(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), proptest::sample::select(PIECES), 0..3usize), 1..6)
    ) {
        let mut chars: Vec<char> = ENTRY.chars().collect();
        for (at, piece, what) in edits {
            let at = at.index(chars.len() + 1);
            let end = match what {
                0 => at,                                    // insert
                1 => (at + 1).min(chars.len()),             // delete one character
                _ => (at + piece.len()).min(chars.len()),   // overwrite
            };
            let with = if what == 1 { "" } else { piece };
            chars.splice(at..end, with.chars());
        }
        let text: String = chars.into_iter().collect();
        prop_assert!(compare(&text).is_ok(), "{:?}: {}", text, compare(&text).unwrap_err());
    }
}

/// One entry in the shapes the load benchmark's generator and `kubectl` write.
const ENTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s0, namespace: ns0}
spec: {hosts: [\"svc0.ns0.global\"], addresses: ['240.1.0.1', '2001:db8::0:0'], resolution: STATIC}
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: s1
spec:
  hosts:
  - svc1.global
  addresses:
  - 240.0.0.2
  ports:
  - number: 80
name: http
protocol: HTTP
  location: MESH_INTERNAL
  resolution: DNS
  endpoints:
  - address: 10.0.0.1
ports: {http: 8080}
";

/// Found by a tester: libyaml takes a `?` right before a flow key or item for an explicit
/// key (YAML 1.1), serde-saphyr for part of a string (YAML 1.2); and libyaml takes a tab at the
/// start of a flow collection's line under a block mapping, which serde-saphyr rejects.
#[test]
fn flow_question_marks_and_line_start_tabs_read_as_serde_saphyr() {
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n";
    let texts = [
        // A namespace that serde-saphyr does not see (its key is `?namespace`).
        format!("{se}metadata: {{name: a, ?namespace: b}}\nspec: {{hosts: [a.global]}}\n"),
        // A host that is a string to serde-saphyr, a mapping to libyaml.
        format!("{se}metadata: {{name: a}}\nspec: {{hosts: [?a]}}\n"),
        // Not YAML to serde-saphyr.
        "x: [\n\t]\n".to_owned(),
        format!("{se}metadata: {{name: a}}\nspec:\n  hosts: [a.global,\n\tb.global]\n"),
    ];
    let differ: Vec<String> = texts
        .iter()
        .filter_map(|text| compare(text).err().map(|diff| format!("{text:?}:\n{diff}")))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
