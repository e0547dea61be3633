//! What a source is, what it tells the registry, and the status the registry publishes of it.
//!
//! A *source* is the local cluster, another `--context`, a cluster found through a remote
//! secret, or the `--entries` files. Its [`SourceKey`] — precedence ([`Rank`]) and name — says
//! where its entries stand against the others' and names them in the table. Each *instance*
//! of a source (the watcher started for a cluster; another one when its remote secret
//! changes, or when the cluster is removed and added back) has a [`SourceId`]: the key and a
//! [`Generation`] no earlier instance had. Instances say what they see in [`Update`]s; the
//! registry alone applies them, and drops those of an instance it has removed or replaced —
//! a watcher that is being stopped may still deliver one.
//!
//! What the registry publishes of every source is a [`Status`] snapshot: what `/readyz`,
//! `/debug/sources` and the metrics read. Which sources are stale is published with the table
//! too ([`crate::table::Table::is_stale`]), where the answer path reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::serviceentry::{Entry, EntryId};

/// Where a source stands in precedence (DESIGN.md: the local cluster, the other clusters in
/// the order given, then files). Derived `Ord` is that order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// The cluster globaldns runs in (or the first `--context`).
    Local,
    /// The n-th other `--context`.
    Context(u32),
    /// A cluster found through remote secrets, ordered by ID.
    Remote,
    /// `--entries` files.
    Files,
}

/// A source: its precedence and its name (a cluster ID, or `files`). Its entries in the table
/// are its key's, whichever instance sent them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey {
    /// Precedence.
    pub rank: Rank,
    /// Name shown in logs, `/debug` and conflicts.
    pub name: Arc<str>,
}

impl SourceKey {
    /// The `--entries` files, all together.
    pub fn files() -> Self {
        SourceKey {
            rank: Rank::Files,
            name: "files".into(),
        }
    }

    /// A cluster found through remote secrets.
    pub fn remote(cluster: &str) -> Self {
        SourceKey {
            rank: Rank::Remote,
            name: cluster.into(),
        }
    }
}

/// An instance of a source, newer than every instance made before it (in this process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Generation(u64);

impl Generation {
    fn next() -> Self {
        static LAST: AtomicU64 = AtomicU64::new(0);
        Generation(LAST.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// One instance of a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceId {
    /// The source.
    pub key: SourceKey,
    /// The instance.
    pub generation: Generation,
}

impl SourceId {
    /// A new instance of `key`, of a generation no other instance has.
    pub fn new(key: SourceKey) -> Self {
        SourceId {
            key,
            generation: Generation::next(),
        }
    }

    /// Its name (a cluster ID, or `files`).
    pub fn name(&self) -> &Arc<str> {
        &self.key.name
    }

    /// An update of this instance.
    pub fn says(&self, event: Event) -> Update {
        Update {
            source: self.clone(),
            event,
        }
    }
}

/// What a source instance tells the registry.
#[derive(Debug)]
pub struct Update {
    /// Who tells it.
    pub source: SourceId,
    /// What.
    pub event: Event,
}

/// An event of a source instance, in the order it saw them.
#[derive(Debug)]
pub enum Event {
    /// The instance exists: the source is new (not synced: it holds readiness back until it
    /// is, or until the sync timeout for a cluster that is not the local one), or this
    /// instance replaces an older one (whose entries are served until this one lists).
    Started,
    /// Its complete current entries (a list, a relist, files reloaded): it is connected and
    /// current. Only entries that differ from the set held count as changes.
    Listed(Vec<Entry>),
    /// The entries it could read, and what it could not (a file source whose first load
    /// failed on a path or a file: the error names it). They are served, but the source is
    /// not synced: it holds readiness back (never given up on), so nothing is transferred or
    /// NOTIFYed, until a [`Event::Listed`] brings its complete set.
    Incomplete(Vec<Entry>, String),
    /// Entries changed, were added (`Some`) or went (`None`: deleted, or no longer valid);
    /// it is connected and current.
    Changed(Vec<(EntryId, Option<Entry>)>),
    /// The connection failed (the error, for logs and `/debug`): its last known entries are
    /// served and, once it has synced, it is stale.
    Failed(String),
    /// The API server answers again, with nothing to change (a watch resumed without a
    /// relist): no longer stale.
    Resumed,
    /// The source is gone (a removed cluster): its entries go too.
    Removed,
}

impl Event {
    /// What it is, for logs (without the entries it carries).
    pub fn what(&self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Listed(_) => "listed",
            Event::Incomplete(..) => "incomplete",
            Event::Changed(_) => "changed",
            Event::Failed(_) => "failed",
            Event::Resumed => "resumed",
            Event::Removed => "removed",
        }
    }
}

/// One source as the registry last published it: `/debug/sources`, metrics, readiness.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// Source name (cluster ID, or `files`).
    pub name: Arc<str>,
    /// The instance whose updates are applied.
    pub generation: Generation,
    /// Whether it is the local cluster (in-zone answers wait for its first sync).
    pub local: bool,
    /// Whether a published table has held a complete set of its entries.
    pub synced: bool,
    /// Whether it has lost its connection since: its last known entries are still served.
    pub stale: bool,
    /// Entries it serves.
    pub entries: usize,
    /// Unix time of its last entries event (a list or a change), seconds.
    pub last_event: Option<u64>,
    /// The last error, while the source is not well.
    pub error: Option<String>,
    /// It did not sync within the sync timeout and no longer holds readiness back.
    pub gave_up_waiting: bool,
}

impl SourceStatus {
    /// A source just started: not synced, not stale, nothing served.
    pub fn new(id: &SourceId, local: bool) -> Self {
        SourceStatus {
            name: id.key.name.clone(),
            generation: id.generation,
            local,
            synced: false,
            stale: false,
            entries: 0,
            last_event: None,
            error: None,
            gave_up_waiting: false,
        }
    }

    /// Whether it holds readiness back: not synced, and not given up on.
    pub fn waited_for(&self) -> bool {
        !self.synced && !self.gave_up_waiting
    }
}

/// Every source's status, published by the registry beside the table.
#[derive(Debug, Clone, Default)]
pub struct Status {
    sources: Vec<SourceStatus>,
}

impl Status {
    /// The status of `sources`, in precedence order.
    pub fn new(sources: Vec<SourceStatus>) -> Self {
        Status { sources }
    }

    /// Every source, in precedence order.
    pub fn sources(&self) -> &[SourceStatus] {
        &self.sources
    }

    /// Ready (`/readyz`): every source has synced once, a cluster other than the local one
    /// that did not within the sync timeout excepted.
    pub fn ready(&self) -> bool {
        !self.sources.iter().any(SourceStatus::waited_for)
    }

    /// The sources readiness waits for.
    pub fn waiting(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter(|s| s.waited_for()).map(|s| &*s.name)
    }

    /// Whether the source named `source` is stale (the answer path reads the table's own
    /// copy: [`crate::table::Table::is_stale`]).
    pub fn is_stale(&self, source: &str) -> bool {
        self.sources.iter().any(|s| s.stale && *s.name == *source)
    }

    /// Whether any source is stale.
    pub fn any_stale(&self) -> bool {
        self.sources.iter().any(|s| s.stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, synced: bool, stale: bool, local: bool, gave_up: bool) -> SourceStatus {
        let mut s = SourceStatus::new(&SourceId::new(SourceKey::remote(name)), local);
        (s.synced, s.stale, s.gave_up_waiting) = (synced, stale, gave_up);
        s
    }

    #[test]
    fn generations_only_grow() {
        let key = SourceKey::remote("east");
        let (a, b) = (SourceId::new(key.clone()), SourceId::new(key));
        assert!(b.generation > a.generation);
        assert_ne!(a, b, "two instances of one source differ");
    }

    #[test]
    fn ready_and_stale_from_the_sources() {
        let status = Status::new(vec![
            source("local", true, false, true, false),
            source("east", true, true, false, false),
            source("west", false, false, false, true),
        ]);
        assert!(status.ready(), "west was given up on");
        assert_eq!(status.waiting().count(), 0);
        assert!(status.is_stale("east") && !status.is_stale("local") && !status.is_stale("eas"));
        assert!(status.any_stale());

        let waiting = Status::new(vec![source("local", false, false, true, false)]);
        assert!(!waiting.ready());
        assert_eq!(waiting.waiting().collect::<Vec<_>>(), ["local"]);
        assert!(!waiting.any_stale());
        assert!(Status::default().ready(), "no sources: nothing to wait for");
    }
}
