//! Per-source entry sets, merged into a table and published.
//!
//! Sources (files, and later one watcher per cluster) send [`Update`]s over a channel; one
//! task owns the [`Registry`], applies every update waiting, then builds and publishes one
//! new table with `ArcSwap::store`. Readers never wait for it. The SOA serial changes only
//! when the served records change, and never goes backwards across restarts (it is at least
//! the current Unix time).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::serviceentry::Entry;
use crate::table::{self, Conflict, SourceInput, Table, TableSettings};

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

/// A source of entries: its precedence and its name (a cluster ID, or `files`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    /// Precedence.
    pub rank: Rank,
    /// Name shown in logs, `/debug` and conflicts.
    pub name: Arc<str>,
}

impl SourceId {
    /// The `--entries` files, all together.
    pub fn files() -> Self {
        SourceId {
            rank: Rank::Files,
            name: "files".into(),
        }
    }
}

/// A change from a source.
#[derive(Debug)]
pub enum Update {
    /// The complete current entries of a source.
    Entries(SourceId, Arc<Vec<Entry>>),
    /// A source is gone (a removed cluster): its entries go too.
    Remove(SourceId),
}

/// The entry sets of every source and the published table.
#[derive(Debug)]
pub struct Registry {
    settings: TableSettings,
    sources: BTreeMap<SourceId, Arc<Vec<Entry>>>,
    published: Arc<ArcSwap<Table>>,
    conflicts: HashSet<Conflict>,
    /// The local cluster: in-zone answers are SERVFAIL until it has sent a complete set.
    local: Option<SourceId>,
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

impl Registry {
    /// An empty registry. With a `local` cluster, in-zone queries get SERVFAIL until that
    /// cluster has synced once (resolvers retry rather than cache a negative answer).
    pub fn new(settings: TableSettings, local: Option<SourceId>) -> Self {
        let table = table::build(&settings, &[], unix_now(), local.is_none());
        Registry {
            settings,
            sources: BTreeMap::new(),
            published: Arc::new(ArcSwap::from_pointee(table)),
            conflicts: HashSet::new(),
            local,
        }
    }

    fn synced(&self) -> bool {
        self.local.as_ref().is_none_or(|l| self.sources.contains_key(l))
    }

    /// The handle the answer path reads.
    pub fn table(&self) -> Arc<ArcSwap<Table>> {
        self.published.clone()
    }

    /// Applies an update (publish afterwards).
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Entries(id, entries) => {
                self.sources.insert(id, entries);
            }
            Update::Remove(id) => {
                self.sources.remove(&id);
            }
        }
    }

    /// Builds and publishes the table of the current sets; logs conflicts not seen before.
    pub fn publish(&mut self) -> Arc<Table> {
        let previous = self.published.load_full();
        let inputs: Vec<SourceInput<'_>> = self
            .sources
            .iter()
            .map(|(id, entries)| SourceInput {
                name: &id.name,
                entries,
            })
            .collect();
        let mut table = table::build(&self.settings, &inputs, previous.serial(), self.synced());
        if !table.same_records(&previous) {
            let now = unix_now();
            let serial = if now > previous.serial() {
                now
            } else {
                previous.serial().wrapping_add(1)
            };
            table.set_serial(serial);
        }
        let current: HashSet<Conflict> = table.conflicts().iter().cloned().collect();
        for c in current.difference(&self.conflicts) {
            tracing::warn!(
                host = %c.host,
                served = %c.winner, served_addresses = ?c.winner_addresses,
                ignored = %c.loser, ignored_addresses = ?c.loser_addresses,
                "conflict: sources disagree on a host's addresses; the higher source is served"
            );
        }
        self.conflicts = current;
        crate::metrics::get().table(table.hosts().len(), table.serial(), table.conflicts().len());
        let table = Arc::new(table);
        self.published.store(table.clone());
        tracing::debug!(hosts = table.hosts().len(), serial = table.serial(), "table published");
        table
    }

    /// Applies updates as they come, publishing once per batch, until `shutdown`.
    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => match u { Some(u) => u, None => return },
            };
            self.apply(first);
            while let Ok(more) = updates.try_recv() {
                self.apply(more);
            }
            self.publish();
        }
    }
}
