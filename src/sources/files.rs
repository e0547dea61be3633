//! The file source (`--entries PATH`, repeatable): YAML files, or directories of them.
//!
//! A directory contributes its `*.yaml`, `*.yml` and `*.json` files (not recursively; names
//! starting with `.` are skipped, which also skips the `..data` links of a mounted ConfigMap).
//! Files are polled: a change of size, modification time or inode (a ConfigMap swaps its
//! symlink) reloads that file within one poll interval. A file that stops parsing keeps its
//! last good entries; a file that disappears takes its entries with it.
//!
//! At start there are no last good entries: until every path has been read and every file
//! parsed once, the source is incomplete ([`FileSource::incomplete`]). It then serves what
//! it could read but is not synced ([`Event::Incomplete`]): `/readyz` is 503 naming the path,
//! and nothing is transferred or NOTIFYed (a partial zone with a higher serial would wipe the
//! secondaries). The poll retries; the first complete load syncs it ([`Event::Listed`]).
//!
//! Between changes the source keeps each file's entries packed with [`postcard`] (~52 bytes an
//! entry against ~270 as values; 5.4 MB instead of ~28 MB for 100 000): the registry holds the
//! entries themselves, and a change sends the complete set again, unpacked (~0.05 s for
//! 100 000), so this copy only has to be small, not fast. The first load ([`FileSource::load`])
//! sends the entries it has just parsed, without that round trip.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::serviceentry::{Entry, Invalid, Namespaces, yaml};
use crate::source::{Event, SourceId, Update};

/// Namespace of file entries that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Something worth telling about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnostic {
    /// A ServiceEntry was rejected.
    Invalid(PathBuf, Invalid),
    /// An entry loaded with a warning (a wide CIDR skipped, …).
    Warning(PathBuf, String),
    /// A path could not be read or parsed; its last good entries, if it had any, are kept.
    Unreadable(PathBuf, String),
}

impl Diagnostic {
    /// Whether `check` should fail for it.
    pub fn is_error(&self) -> bool {
        !matches!(self, Diagnostic::Warning(..))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::Invalid(p, i) => write!(f, "{}: invalid ServiceEntry files/{i}; skipped", p.display()),
            Diagnostic::Warning(p, w) => write!(f, "{}: {w}", p.display()),
            Diagnostic::Unreadable(p, e) => write!(f, "{}: {e}; keeping its last good entries, if any", p.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// A file's entries, packed with postcard one after the other.
#[derive(Debug, Default)]
struct Packed(Box<[u8]>);

impl Packed {
    fn pack(entries: &[Entry]) -> Self {
        // Serializing plain data into a Vec cannot fail (postcard fails only on a full buffer
        // or on sequences of unknown length, neither of which arises here).
        let packed = entries.iter().fold(Vec::new(), |packed, entry| {
            postcard::to_extend(entry, packed).expect("entries pack")
        });
        Packed(packed.into_boxed_slice())
    }

    /// The entries as packed, read one at a time.
    fn unpacked(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (entry, after) = (!rest.is_empty())
                .then(|| postcard::take_from_bytes::<Entry>(rest).expect("packed by Packed::pack"))?;
            rest = after;
            Some(entry)
        })
    }
}

/// The `count` entries of several files in one list, their namespace names shared: one copy
/// of each for all the files, as one file's entries have already ([`yaml::parse`]). One entry
/// at a time: each entry's own copy of its namespace name is freed before the next entry is
/// read (whose allocations reuse it), not after all of them (which would leave a hole between
/// every two entries held, memory the allocator cannot give back).
fn sharing_namespaces(count: usize, entries: impl Iterator<Item = Entry>) -> Vec<Entry> {
    let mut namespaces = Namespaces::default();
    let mut shared = Vec::with_capacity(count);
    for mut entry in entries {
        entry.id.namespace = namespaces.share(entry.id.namespace);
        shared.push(entry);
    }
    shared
}

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    /// How many entries `packed` holds.
    count: usize,
    packed: Packed,
    /// Why the file as it is now (`stamp`) could not be read or parsed.
    error: Option<String>,
}

/// The state of the `--entries` paths.
#[derive(Debug)]
pub struct FileSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, Loaded>,
    root_errors: BTreeMap<PathBuf, String>,
}

fn is_entry_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        && path.is_file()
}

impl FileSource {
    /// A source for `roots`; nothing is read until [`FileSource::refresh`].
    pub fn new(roots: Vec<PathBuf>) -> Self {
        FileSource {
            roots,
            files: BTreeMap::new(),
            root_errors: BTreeMap::new(),
        }
    }

    /// The files the roots stand for now; `Err` for a root that cannot be listed.
    fn list(root: &Path) -> std::io::Result<Vec<PathBuf>> {
        if !std::fs::metadata(root)?.is_dir() {
            return Ok(vec![root.to_owned()]);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(root)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_entry_file(p))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Reads whatever changed since the last call. Returns whether the entries changed, and
    /// what is worth telling (each problem once, when it appears).
    pub fn refresh(&mut self) -> (bool, Vec<Diagnostic>) {
        self.refresh_keeping(None)
    }

    /// The first [`FileSource::refresh`], with the [`FileSource::event`] it gives: the entries
    /// just parsed go to the event as they are, not packed and unpacked again (the round trip
    /// was ~3 % of the CPU to ready at 100 000 entries). On a source that has loaded before, a
    /// refresh and then its event.
    pub fn load(&mut self) -> (Event, Vec<Diagnostic>) {
        if !self.files.is_empty() {
            let (_, diagnostics) = self.refresh();
            return (self.event(), diagnostics);
        }
        // Nothing held yet: the entries this refresh parses are all there are, in path order.
        let mut parsed = Vec::new();
        let (_, diagnostics) = self.refresh_keeping(Some(&mut parsed));
        let entries = match parsed.len() {
            // One file's entries already share their namespace names.
            0 | 1 => parsed.pop().unwrap_or_default(),
            _ => sharing_namespaces(parsed.iter().map(Vec::len).sum(), parsed.into_iter().flatten()),
        };
        (self.event_of(entries), diagnostics)
    }

    /// [`FileSource::refresh`]; with `keep`, each parsed file's entries are also pushed there,
    /// in path order.
    fn refresh_keeping(&mut self, mut keep: Option<&mut Vec<Vec<Entry>>>) -> (bool, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let mut changed = false;
        let mut seen = BTreeMap::new();
        for root in &self.roots {
            match Self::list(root) {
                Ok(files) => {
                    self.root_errors.remove(root);
                    for f in files {
                        seen.insert(f, ());
                    }
                }
                Err(e) => {
                    // Keep every file under an unreadable root as it was.
                    for f in self.files.keys().filter(|f| f.starts_with(root) || *f == root) {
                        seen.insert(f.clone(), ());
                    }
                    let msg = format!("cannot read: {e}");
                    if self.root_errors.get(root) != Some(&msg) {
                        diagnostics.push(Diagnostic::Unreadable(root.clone(), msg.clone()));
                        self.root_errors.insert(root.clone(), msg);
                    }
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|path, _| seen.contains_key(path));
        changed |= self.files.len() != before;
        for path in seen.into_keys() {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let stamp = Stamp::of(&meta);
            if self.files.get(&path).is_some_and(|l| l.stamp == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| yaml::parse(&text, DEFAULT_NAMESPACE).map_err(|e| e.to_string()));
            match parsed {
                Ok(parsed) => {
                    for invalid in parsed.invalid {
                        diagnostics.push(Diagnostic::Invalid(path.clone(), invalid));
                    }
                    for entry in &parsed.entries {
                        for w in &entry.warnings {
                            diagnostics.push(Diagnostic::Warning(path.clone(), format!("files/{}: {w}", entry.id)));
                        }
                    }
                    let loaded = Loaded {
                        stamp,
                        count: parsed.entries.len(),
                        packed: Packed::pack(&parsed.entries),
                        error: None,
                    };
                    self.files.insert(path, loaded);
                    changed = true;
                    if let Some(keep) = keep.as_deref_mut()
                        && !parsed.entries.is_empty()
                    {
                        keep.push(parsed.entries);
                    }
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::Unreadable(path.clone(), e.clone()));
                    // Remember the stamp so the same failure is told once; keep the entries.
                    let (count, packed) = self
                        .files
                        .remove(&path)
                        .map_or((0, Packed::default()), |l| (l.count, l.packed));
                    let error = Some(e);
                    self.files.insert(
                        path,
                        Loaded {
                            stamp,
                            count,
                            packed,
                            error,
                        },
                    );
                }
            }
        }
        (changed, diagnostics)
    }

    /// What keeps the entries from being complete, as the last [`FileSource::refresh`] found
    /// it: each root that could not be listed and each file that could not be read or parsed,
    /// with its error; `None` when every path loaded.
    pub fn incomplete(&self) -> Option<String> {
        let roots = self.root_errors.iter();
        let files = (self.files.iter()).filter_map(|(p, l)| Some((p, l.error.as_ref()?)));
        let problems: Vec<String> = (roots.chain(files))
            .map(|(path, e)| format!("{}: {e}", path.display()))
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// What to tell the registry of the entries as they are now: [`Event::Listed`] when
    /// complete, else [`Event::Incomplete`].
    pub fn event(&self) -> Event {
        self.event_of(self.entries())
    }

    /// [`FileSource::event`] with `entries`, which are the ones loaded.
    fn event_of(&self, entries: Vec<Entry>) -> Event {
        match self.incomplete() {
            None => Event::Listed(entries),
            Some(error) => Event::Incomplete(entries, error),
        }
    }

    /// Every loaded entry, files in path order.
    pub fn entries(&self) -> Vec<Entry> {
        let count = self.files.values().map(|l| l.count).sum();
        sharing_namespaces(count, self.files.values().flat_map(|l| l.packed.unpacked()))
    }
}

/// Logs diagnostics as warnings, and counts the rejected entries in `metrics`.
pub fn report(diagnostics: &[Diagnostic], metrics: &Metrics) {
    for d in diagnostics {
        if let Diagnostic::Invalid(_, invalid) = d {
            metrics.rejected(&invalid.reason);
        }
        tracing::warn!("{d}");
    }
}

/// Polls the files every `interval` and sends their entries when they change. Reading,
/// parsing and collecting them is blocking work, done off the runtime. `complete` says
/// whether the load at start was: until a load is, each change and each new error is sent as
/// [`Event::Incomplete`], and the first complete load as [`Event::Listed`]; after that a
/// failure keeps the last good entries, as [`FileSource::refresh`] does.
pub async fn watch(
    mut source: FileSource,
    id: SourceId,
    interval: Duration,
    mut complete: bool,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told = source.incomplete();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok((back, now_told, event, diagnostics)) = tokio::task::spawn_blocking(move || {
            let (changed, diagnostics) = source.refresh();
            let event = if complete {
                changed.then(|| Event::Listed(source.entries()))
            } else {
                let problems = source.incomplete();
                (changed || problems != told).then(|| {
                    told = problems;
                    source.event()
                })
            };
            (source, told, event, diagnostics)
        })
        .await
        else {
            return;
        };
        (source, told) = (back, now_told);
        report(&diagnostics, &metrics);
        let Some(event) = event else { continue };
        match &event {
            Event::Listed(entries) if !complete => {
                complete = true;
                tracing::info!(entries = entries.len(), "entry files loaded: the file source is synced");
            }
            Event::Listed(entries) => tracing::info!(entries = entries.len(), "entry files changed"),
            Event::Incomplete(entries, error) => {
                tracing::warn!(entries = entries.len(), %error, "entry files incomplete: serving what loaded, not synced")
            }
            _ => {}
        }
        if updates.send(id.says(event)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
