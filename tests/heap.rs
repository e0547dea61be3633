//! Heap held and peaked while loading entry files, by a byte-counting global allocator (its own
//! test binary, since the allocator is process-wide; one test, so nothing else runs beside it).
//!
//! Reading a file of N entries must not hold every document's tree at once (it took ~2.2 KB
//! per entry: 220 MB at N = 100 000), and the file source must not keep a second full copy of
//! the entries the registry holds (~350 B per entry).
#![allow(missing_docs)]
// A global allocator is the only way to count heap bytes; it forwards to the system one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use globaldns::serviceentry::yaml;
use globaldns::sources::files::FileSource;
use globaldns::table::{Live, SourceInput, TableSettings};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwards to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 20_000;
/// Heap a built table holds per host of [`text`] (measured: 421 B, of which ~160 B the index's
/// 96-byte nodes at this size's load of its hash tables; 368 B while a node was one 64-byte
/// line and the name was compared behind a pointer, 471 B with 128-byte nodes; 408 B while
/// entries and hosts held their lists as vectors, 534 B when those kept the capacity they grew
/// with).
const TABLE_BYTES_PER_HOST: isize = 440;

/// Heap a named port adds per host (measured: 23 B, the port in the entry and in the host;
/// 442 B when its SRV owner and `_tcp.<host>` were index names of their own).
const PORT_BYTES_PER_HOST: isize = 150;

/// N entries in the shape of benches/load.py's generator (flow style, 1–4 addresses), each
/// with `ports` (a flow sequence, or empty) in its spec.
fn generated(ports: &str) -> String {
    (0..N)
        .map(|i| {
            let addresses: Vec<String> = (0..=i % 4)
                .map(|k| format!("'240.1.{}.{}'", i / 250 % 250, 1 + (i + k) % 250))
                .collect();
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: ns{}}}\n\
                 spec: {{hosts: [\"svc{i}.ns{}.global\"], addresses: [{}], resolution: STATIC{ports}}}\n---\n",
                i % 50,
                i % 50,
                addresses.join(", ")
            )
        })
        .collect()
}

/// (bytes held after `f` minus before, peak during `f` minus before), and what `f` returned.
fn measure<T>(f: impl FnOnce() -> T) -> (isize, isize, T) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (
        LIVE.load(Ordering::Relaxed) - before,
        PEAK.load(Ordering::Relaxed) - before,
        out,
    )
}

#[test]
fn loading_files_holds_one_document_at_a_time_and_one_packed_copy() {
    let text = generated("");
    let (held, peak, parsed) = measure(|| yaml::parse(&text, "default").unwrap());
    assert_eq!(parsed.entries.len(), N);
    let per_entry = held / N as isize;
    eprintln!(
        "parse: {per_entry} B held per entry, peak {} B per entry",
        peak / N as isize
    );
    // The entries and their vector's growth (the old and the doubled buffer, counted apart by
    // this allocator), then one document's tree and the parser's buffers at most.
    assert!(
        peak < 2 * held + (4 << 20),
        "peak {peak} B for {held} B held: documents piled up"
    );
    drop(parsed);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entries.yaml");
    std::fs::write(&path, &text).unwrap();
    drop(text);
    let (held, _, source) = measure(|| {
        let mut source = FileSource::new(vec![path]);
        let (changed, diagnostics) = source.refresh();
        assert!(changed && diagnostics.is_empty(), "{diagnostics:?}");
        source
    });
    eprintln!("file source: {} B held per entry", held / N as isize);
    assert!(
        held < 100 * N as isize,
        "the file source holds {held} B for {N} entries"
    );
    assert_eq!(source.entries().len(), N, "and still gives every entry");

    // The table those entries make, beside them: its own copy of each entry, the host with its
    // addresses and origins, the name and its index node. A host's vectors keep no spare
    // capacity (an origin's vector reserved four: 160 B for one).
    let entries = source.entries();
    let settings = TableSettings::new(&["global"]).unwrap();
    let name: Arc<str> = "files".into();
    let build = |entries: &[_]| measure(|| Live::build(&settings, &[SourceInput { name: &name, entries }], 1, true));
    let (held, _, table) = build(&entries);
    let per_host = held / N as isize;
    eprintln!("table: {per_host} B held per host");
    assert_eq!(table.host_count(), N);
    assert!(per_host < TABLE_BYTES_PER_HOST, "the table holds {per_host} B per host");
    drop(table);

    // A named port gives each host an SRV owner and the empty non-terminal `_tcp.<host>`
    // above it, derived from the host when asked: it costs the port, not two index names.
    let ported = yaml::parse(
        &generated(", ports: [{name: http, number: 80, protocol: HTTP}]"),
        "default",
    )
    .unwrap()
    .entries;
    let (held_ported, _, table) = build(&ported);
    let per_port = (held_ported - held) / N as isize;
    eprintln!("a named port: {per_port} B more held per host");
    assert_eq!(table.host_count(), N);
    assert!(
        per_port < PORT_BYTES_PER_HOST,
        "a named port costs {per_port} B per host"
    );
}
