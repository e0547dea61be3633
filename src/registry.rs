//! Per-source entry sets, merged into a table and published.
//!
//! Sources (files, and later one watcher per cluster) send [`Update`]s over a channel; one
//! task owns the [`Registry`], applies every update waiting, then builds and publishes one
//! new table with `ArcSwap::store`. Readers never wait for it. The SOA serial changes only
//! when the served records change, and never goes backwards across restarts (it is at least
//! the current Unix time).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::serviceentry::{Entry, EntryId};
use crate::sources::state::SourceStates;
use crate::table::{Live, Source, Table, TableSettings};

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

impl Source for SourceId {
    fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// A change from a source.
#[derive(Debug)]
pub enum Update {
    /// The complete current entries of a source (a list, a relist, files reloaded): only
    /// entries that differ from the set held count as changes.
    Entries(SourceId, Vec<Entry>),
    /// Entries of a source changed, were added (`Some`) or went (`None`: deleted, or no
    /// longer valid).
    Changed(SourceId, Vec<(EntryId, Option<Entry>)>),
    /// A source is gone (a removed cluster): its entries go too.
    Remove(SourceId),
}

/// The entry sets of every source and the published table.
#[derive(Debug)]
pub struct Registry {
    live: Live<SourceId>,
    published: Arc<ArcSwap<Table>>,
    /// The local cluster: in-zone answers are SERVFAIL until it has sent a complete set.
    local: Option<SourceId>,
    /// When the first update not yet published was applied.
    batch_started: Option<Instant>,
    /// Told which sources each published table holds.
    states: Option<SourceStates>,
    /// Entries applied since the last publish.
    applied: usize,
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
        let live = Live::new(settings);
        let table = live.table(unix_now(), local.is_none());
        Registry {
            live,
            published: Arc::new(ArcSwap::from_pointee(table)),
            local,
            batch_started: None,
            states: None,
            applied: 0,
        }
    }

    /// Marks sources synced in `states` once a published table holds their complete sets.
    pub fn reporting_to(mut self, states: SourceStates) -> Self {
        self.states = Some(states);
        self
    }

    fn synced(&self) -> bool {
        self.local.as_ref().is_none_or(|l| self.live.has_source(l))
    }

    /// The handle the answer path reads.
    pub fn table(&self) -> Arc<ArcSwap<Table>> {
        self.published.clone()
    }

    /// Applies an update (publish afterwards).
    pub fn apply(&mut self, update: Update) {
        self.batch_started.get_or_insert_with(Instant::now);
        match update {
            Update::Entries(id, entries) => {
                self.applied += entries.len();
                self.live.replace(&id, entries);
            }
            Update::Changed(id, changes) => {
                self.applied += changes.len();
                for (entry_id, entry) in changes {
                    match entry {
                        Some(entry) => self.live.upsert(&id, entry),
                        None => self.live.delete(&id, &entry_id),
                    }
                }
            }
            Update::Remove(id) => self.live.remove_source(&id),
        }
    }

    /// Publishes the table of the current sets (only the hosts changed since the last publish
    /// are recomputed); logs new conflicts. The serial changes when served records do.
    pub fn publish(&mut self) -> Arc<Table> {
        let started = self.batch_started.take().unwrap_or_else(Instant::now);
        let previous = self.published.load_full();
        let commit = self.live.commit();
        let synced = self.synced();
        let serial = if commit.records_changed || synced != previous.synced() {
            let now = unix_now();
            if now > previous.serial() {
                now
            } else {
                previous.serial().wrapping_add(1)
            }
        } else {
            previous.serial()
        };
        for c in &commit.new_conflicts {
            tracing::warn!(
                host = %c.host,
                served = %c.winner, served_addresses = ?c.winner_addresses,
                ignored = %c.loser, ignored_addresses = ?c.loser_addresses,
                "conflict: sources disagree on a host's addresses; the higher source is served"
            );
        }
        let table = Arc::new(self.live.table(serial, synced));
        self.published.store(table.clone());
        if let Some(states) = &self.states {
            states.published(self.live.sources());
        }
        let took = started.elapsed();
        crate::metrics::get().table(table.host_count(), table.serial(), table.conflict_count(), took);
        tracing::debug!(hosts = table.host_count(), serial = table.serial(), "table published");
        if std::mem::take(&mut self.applied) >= crate::memory::LARGE_BATCH {
            crate::memory::release_free_memory();
        }
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
