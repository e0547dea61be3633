//! The only writer of source state and of the table.
//!
//! Sources send [`Update`]s over a channel. One [`Registry`] applies every update waiting,
//! commits the table (only the hosts those updates touched are recomputed: [`Live`]) and
//! publishes it with `ArcSwap::store`; beside it, it publishes every source's [`Status`]
//! (synced, stale, entries, errors, readiness). Readers of either never wait, and nobody else
//! writes them: `/readyz`, `/debug/sources` and the metrics only read the published status.
//!
//! - It runs on a thread of its own ([`Registry::spawn`]): a commit of a large batch (100 000
//!   entries, ~0.5 s) never holds up the runtime that serves TCP and forwards.
//! - An update of a source instance it has removed, or replaced by a newer [`Generation`], is
//!   dropped: a watcher being stopped may still deliver one, and must not bring back what was
//!   removed.
//! - A source is synced once a published table holds its complete set: readiness never runs
//!   ahead of the table.
//! - A cluster other than the local one that has not synced within the sync timeout stops
//!   holding readiness back; the registry's own timer decides it, and logs it once.
//! - Each zone's SOA serial changes only when that zone's served records do (never on a
//!   sync-state change), and never goes backwards across restarts: it is the Unix time at
//!   which it was assigned, never more ([`crate::table::Version`]). A change in the second
//!   of the zone's serial is served at once but *pending*; the registry's timer seals it at
//!   the next second ([`Registry::seal`]) and publishes the table again with the new serial.
//!   Each zone keeps its recent changes for IXFR.
//! - Every published table is also sent on a watch channel ([`Registry::subscribe`]), for
//!   the tasks that act on changes (NOTIFY).
//! - The `globaldns_ready` gauge is set with every status it publishes (the timer's decisions
//!   included): 1 exactly when `/readyz`, reading that status, answers 200.
//! - Which sources are stale is published with the table ([`Table::with_stale`]), so that an
//!   answer knows whether its source is, from the one snapshot it reads; a change of
//!   staleness publishes the same table again, serial unchanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::source::{Event, Generation, SourceId, SourceKey, SourceStatus, Status, Update};
use crate::table::{Live, Source, Table, TableSettings, Version, advance};

#[cfg(test)]
mod tests;

impl Source for SourceKey {
    fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// A source the registry knows: its current instance's status, and when it first started.
#[derive(Debug)]
struct Tracked {
    status: SourceStatus,
    started: Instant,
    /// Its entries are incomplete ([`Event::Incomplete`]): not synced, and waited for.
    incomplete: bool,
}

/// The entry sets of every source, the published table and the published status.
#[derive(Debug)]
pub struct Registry {
    live: Live<SourceKey>,
    published: Arc<ArcSwap<Table>>,
    /// The same tables, for tasks that wait for changes.
    watch: tokio::sync::watch::Sender<Arc<Table>>,
    status: Arc<ArcSwap<Status>>,
    /// The local cluster: in-zone answers are SERVFAIL until it has sent a complete set.
    local: Option<SourceKey>,
    sources: BTreeMap<SourceKey, Tracked>,
    /// The last removed instance of each source that went: its updates, and older ones', are
    /// dropped.
    removed: HashMap<SourceKey, Generation>,
    sync_timeout: Duration,
    metrics: Arc<Metrics>,
    /// When the first entries not yet published were applied.
    batch_started: Option<Instant>,
    /// Entries applied since the last publish.
    applied: usize,
    /// Whether the status changed since it was last published.
    status_changed: bool,
    /// The stale sources the published table carries.
    stale: Arc<[Arc<str>]>,
    /// Unix time, seconds: what serials are assigned from.
    clock: Clock,
}

/// A source of Unix time in seconds: the system clock, or a fake one in tests.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> u32 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now: {})", (self.0)())
    }
}

impl Tracked {
    /// Whether the sync timeout may stop it holding readiness back: a cluster other than the
    /// local one, waited for, whose entries are not known to be incomplete.
    fn may_give_up(&self) -> bool {
        !self.status.local && !self.incomplete && self.status.waited_for()
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

impl Registry {
    /// An empty registry. With a `local` cluster, in-zone queries get SERVFAIL until that
    /// cluster has synced once (resolvers retry rather than cache a negative answer). Other
    /// sources that have not synced within `sync_timeout` stop holding readiness back.
    pub fn new(
        settings: TableSettings,
        local: Option<SourceKey>,
        sync_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let live = Live::new(settings);
        let table = live.table(unix_now(), local.is_none());
        let versions = table.versions().iter().map(|v| Version::at_start(v.serial)).collect();
        let table = Arc::new(table.with_versions(versions));
        let status = Status::default();
        metrics.set_ready(status.ready());
        Registry {
            live,
            published: Arc::new(ArcSwap::new(table.clone())),
            watch: tokio::sync::watch::Sender::new(table),
            status: Arc::new(ArcSwap::from_pointee(status)),
            local,
            sources: BTreeMap::new(),
            removed: HashMap::new(),
            sync_timeout,
            metrics,
            batch_started: None,
            applied: 0,
            status_changed: false,
            stale: Arc::new([]),
            clock: Clock(Arc::new(unix_now)),
        }
    }

    /// This registry assigning serials from `clock` (Unix seconds) instead of the system
    /// clock, its start-up serial included (call it before the first update).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        let now = (clock.0)();
        self.clock = clock;
        let table = Arc::unwrap_or_clone(self.published.load_full());
        let versions = table.versions().iter().map(|_| Version::at_start(now)).collect();
        let table = Arc::new(table.with_versions(versions));
        self.published.store(table.clone());
        self.watch.send_replace(table);
        self
    }

    fn synced(&self) -> bool {
        self.local.as_ref().is_none_or(|l| self.live.has_source(l))
    }

    /// The handle the answer path reads.
    pub fn table(&self) -> Arc<ArcSwap<Table>> {
        self.published.clone()
    }

    /// Every table published from now on (the current one marked seen).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Table>> {
        self.watch.subscribe()
    }

    /// The handle readiness, `/debug/sources` and the metrics read.
    pub fn status(&self) -> Arc<ArcSwap<Status>> {
        self.status.clone()
    }

    /// Whether an update of `id` is to be applied: a new instance must be newer than the
    /// source's current one; any other event must come from the current one.
    fn accepts(&self, id: &SourceId, event: &Event) -> bool {
        if self.removed.get(&id.key).is_some_and(|gone| id.generation <= *gone) {
            return false;
        }
        let current = self.sources.get(&id.key).map(|t| t.status.generation);
        match (current, event) {
            (None, Event::Started) => true,
            (Some(current), Event::Started) => id.generation > current,
            (Some(current), _) => id.generation == current,
            (None, _) => false,
        }
    }

    fn entries_applied(&mut self, n: usize) {
        self.batch_started.get_or_insert_with(Instant::now);
        self.applied += n;
    }

    /// Applies an update (publish afterwards); drops it when it comes from an instance that
    /// was removed or replaced.
    pub fn apply(&mut self, update: Update) {
        let Update { source: id, event } = update;
        if !self.accepts(&id, &event) {
            tracing::debug!(source = %id.key.name, generation = ?id.generation, event = event.what(), "update of a removed or replaced instance dropped");
            return;
        }
        self.status_changed = true;
        let key = &id.key;
        match event {
            Event::Started => {
                let local = self.local.as_ref() == Some(key);
                match self.sources.get_mut(key) {
                    // A newer instance: the older one's entries are served until it lists.
                    Some(t) => t.status.generation = id.generation,
                    None => {
                        let tracked = Tracked {
                            status: SourceStatus::new(&id, local),
                            started: Instant::now(),
                            incomplete: false,
                        };
                        self.sources.insert(key.clone(), tracked);
                    }
                }
            }
            Event::Listed(entries) => {
                self.entries_applied(entries.len());
                self.live.replace(key, entries);
                self.heard(key);
                self.sources
                    .get_mut(key)
                    .expect("an accepted update's source")
                    .incomplete = false;
            }
            Event::Incomplete(entries, error) => {
                self.entries_applied(entries.len());
                self.live.replace(key, entries);
                self.heard(key);
                let t = self.sources.get_mut(key).expect("an accepted update's source");
                (t.incomplete, t.status.error) = (true, Some(error));
            }
            Event::Changed(changes) => {
                self.entries_applied(changes.len());
                for (entry_id, entry) in changes {
                    match entry {
                        Some(entry) => self.live.upsert(key, entry),
                        None => self.live.delete(key, &entry_id),
                    }
                }
                self.heard(key);
            }
            Event::Failed(error) => {
                let s = self.status_of(key);
                if s.error.is_none() && s.synced {
                    tracing::warn!(cluster = %s.name, %error, "source failing: serving its last known entries while retrying");
                } else if s.error.is_none() {
                    tracing::warn!(cluster = %s.name, %error, "source failing before its first sync: none of its entries served yet, retrying");
                }
                s.stale = s.synced;
                s.error = Some(error);
            }
            Event::Resumed => {
                let s = self.status_of(key);
                if s.error.take().is_some() {
                    tracing::info!(cluster = %s.name, "source answering again");
                }
                s.stale = false;
            }
            Event::Removed => {
                self.sources.remove(key);
                self.removed.insert(key.clone(), id.generation);
                self.batch_started.get_or_insert_with(Instant::now);
                self.live.remove_source(key);
            }
        }
    }

    fn status_of(&mut self, key: &SourceKey) -> &mut SourceStatus {
        &mut self.sources.get_mut(key).expect("an accepted update's source").status
    }

    /// The source sent entries: it is connected and current.
    fn heard(&mut self, key: &SourceKey) {
        let s = self.status_of(key);
        s.stale = false;
        s.error = None;
        s.last_event = SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
    }

    /// When the next source will have waited the sync timeout out, if one is waited for.
    fn next_give_up(&self) -> Option<Instant> {
        self.sources
            .values()
            .filter(|t| t.may_give_up())
            .map(|t| t.started + self.sync_timeout)
            .min()
    }

    /// Stops waiting for the sources (not the local cluster) that have not synced within the
    /// sync timeout by `now`; each is logged once.
    pub fn give_up_waiting(&mut self, now: Instant) {
        let timeout = self.sync_timeout;
        for t in self.sources.values_mut() {
            if t.may_give_up() && t.started + timeout <= now {
                tracing::warn!(cluster = %t.status.name, ?timeout, "cluster not synced in time: ready without it, still trying");
                t.status.gave_up_waiting = true;
                self.status_changed = true;
            }
        }
    }

    /// Publishes the table of the current sets if entries changed (only the hosts changed
    /// since the last publish are recomputed; new conflicts are logged; the serial changes
    /// when served records do), then the status if it changed.
    pub fn publish(&mut self) {
        let stale: Arc<[Arc<str>]> = self
            .sources
            .values()
            .filter(|t| t.status.stale)
            .map(|t| t.status.name.clone())
            .collect();
        let stale_changed = stale != self.stale;
        self.stale = stale;
        if let Some(started) = self.batch_started.take() {
            self.publish_table(started);
        } else if stale_changed {
            let table = Arc::unwrap_or_clone(self.published.load_full()).with_stale(self.stale.clone());
            self.published.store(Arc::new(table));
        }
        if std::mem::take(&mut self.status_changed) {
            let status = Status::new(self.sources.values().map(|t| t.status.clone()).collect());
            let ready = status.ready();
            self.status.store(Arc::new(status));
            self.metrics.set_ready(ready);
        }
    }

    fn publish_table(&mut self, started: Instant) {
        let previous = self.published.load_full();
        let commit = self.live.commit();
        let synced = self.synced();
        for c in &commit.new_conflicts {
            tracing::warn!(
                host = %c.host,
                served = %c.winner, served_addresses = ?c.winner_addresses,
                ignored = %c.loser, ignored_addresses = ?c.loser_addresses,
                "conflict: sources disagree on a host's addresses; the higher source is served"
            );
        }
        let table = self.live.table_at(previous.versions().into(), synced);
        let versions = advance(&previous, &table, &commit.touched, (self.clock.0)());
        let table = Arc::new(table.with_versions(versions).with_stale(self.stale.clone()));
        self.published.store(table.clone());
        self.watch.send_replace(table.clone());
        for (key, entries) in self.live.sources() {
            if let Some(t) = self.sources.get_mut(key) {
                t.status.synced |= !t.incomplete;
                t.status.entries = entries;
            }
        }
        self.status_changed = true;
        let took = started.elapsed();
        self.metrics.table(&table, took);
        tracing::debug!(
            hosts = table.host_count(),
            serials = ?table.serials().collect::<Vec<_>>(),
            ?took,
            "table published"
        );
        if std::mem::take(&mut self.applied) >= crate::memory::LARGE_BATCH {
            crate::memory::release_free_memory();
        }
    }

    /// Seals every zone's pending changes whose serial the clock has passed, and publishes the
    /// table again with the new serials (its records are published already; changes that
    /// cancelled out leave the serial and are just cleared); nothing when none is due.
    pub fn seal(&mut self) {
        let previous = self.published.load_full();
        let now = (self.clock.0)();
        let versions: Arc<[Version]> = previous.versions().iter().map(|v| v.sealed(now)).collect();
        let same = |(a, b): (&Version, &Version)| a.serial == b.serial && a.is_pending() == b.is_pending();
        if versions.iter().zip(previous.versions()).all(same) {
            return;
        }
        let table = Arc::new(Arc::unwrap_or_clone(previous).with_versions(versions));
        self.published.store(table.clone());
        self.watch.send_replace(table.clone());
        self.metrics.serials(&table);
        tracing::debug!(serials = ?table.serials().collect::<Vec<_>>(), "serials sealed");
    }

    /// When the next pending change is due to be sealed: the system clock past its serial.
    fn next_seal(&self) -> Option<Instant> {
        let second = self
            .published
            .load()
            .versions()
            .iter()
            .filter_map(Version::seals_at)
            .min()?;
        let at = UNIX_EPOCH + Duration::from_secs(u64::from(second));
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        Some(Instant::now() + wait + Duration::from_millis(1))
    }

    /// Applies updates as they come, publishing once per batch, seals pending serials when
    /// their second is past, and stops waiting for sources past the sync timeout, until
    /// `shutdown` or until every sender is gone.
    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>, shutdown: CancellationToken) {
        loop {
            let give_up = self.next_give_up();
            let at = tokio::time::Instant::from_std(give_up.unwrap_or_else(Instant::now));
            let seal = self.next_seal();
            let seal_at = tokio::time::Instant::from_std(seal.unwrap_or_else(Instant::now));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => match u {
                    Some(u) => self.apply(u),
                    None => return,
                },
                _ = tokio::time::sleep_until(at), if give_up.is_some() => self.give_up_waiting(Instant::now()),
                _ = tokio::time::sleep_until(seal_at), if seal.is_some() => {
                    self.seal();
                    continue;
                }
            }
            while let Ok(more) = updates.try_recv() {
                self.apply(more);
            }
            self.publish();
        }
    }

    /// Runs [`Registry::run`] on a thread of its own (with a single-threaded runtime for its
    /// channel and timer), so that no commit ever runs on the caller's runtime. The returned
    /// future ends when the registry has stopped.
    ///
    /// # Errors
    /// The thread or its runtime could not be made.
    pub fn spawn(
        self,
        updates: mpsc::Receiver<Update>,
        shutdown: CancellationToken,
    ) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let (running, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("globaldns-registry".into())
            .spawn(move || {
                runtime.block_on(self.run(updates, shutdown));
                drop(running);
            })?;
        Ok(async move {
            let _ = stopped.await;
        })
    }
}
