//! What each source is doing — synced, stale, entries, last event — for readiness, logs and
//! `/debug/sources`. Written by the sources on events, never read on the query path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::registry::SourceId;

/// One source's state.
#[derive(Debug, Clone, Serialize)]
pub struct SourceState {
    /// Source name (cluster ID, or `files`).
    pub name: String,
    /// Whether it is the local cluster (in-zone answers wait for its first sync).
    pub local: bool,
    /// Whether the published table has held a complete set of its entries.
    pub synced: bool,
    /// Whether it has lost its connection since: its last known entries are still served.
    pub stale: bool,
    /// Entries it serves.
    pub entries: usize,
    /// Unix time of its last event, seconds.
    pub last_event: Option<u64>,
    /// The last error, if the source is not well.
    pub error: Option<String>,
    /// It did not sync within the sync timeout and no longer holds readiness back.
    pub gave_up_waiting: bool,
    #[serde(skip)]
    registered: Option<Instant>,
}

/// Every source's state, shared.
#[derive(Debug, Clone, Default)]
pub struct SourceStates(Arc<Mutex<BTreeMap<SourceId, SourceState>>>);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SourceStates {
    /// Adds a source, not yet synced.
    pub fn register(&self, id: &SourceId, local: bool) {
        let state = SourceState {
            name: id.name.to_string(),
            local,
            synced: false,
            stale: false,
            entries: 0,
            last_event: None,
            error: None,
            gave_up_waiting: false,
            registered: Some(Instant::now()),
        };
        self.0.lock().expect("source states").insert(id.clone(), state);
    }

    /// Removes a source (a cluster that went away).
    pub fn remove(&self, id: &SourceId) {
        self.0.lock().expect("source states").remove(id);
    }

    fn with(&self, id: &SourceId, f: impl FnOnce(&mut SourceState)) {
        if let Some(s) = self.0.lock().expect("source states").get_mut(id) {
            f(s);
        }
    }

    /// The source sent a complete set, or a change to it: it is connected and current. It
    /// counts as synced once the registry has published that set.
    pub fn listed(&self, id: &SourceId) {
        self.with(id, |s| {
            s.stale = false;
            s.error = None;
            s.last_event = Some(unix_now());
        });
    }

    /// The published table holds a complete set of each of these sources, with so many valid
    /// entries: they are synced (readiness never runs ahead of the table).
    pub fn published<'a>(&self, sources: impl Iterator<Item = (&'a SourceId, usize)>) {
        let mut states = self.0.lock().expect("source states");
        for (id, entries) in sources {
            if let Some(s) = states.get_mut(id) {
                s.synced = true;
                s.entries = entries;
            }
        }
    }

    /// The connection failed; returns whether this is news (the source was well before).
    pub fn failed(&self, id: &SourceId, error: String) -> bool {
        let mut news = false;
        self.with(id, |s| {
            news = s.error.is_none();
            s.stale = s.synced;
            s.error = Some(error);
        });
        news
    }

    /// Every source's state.
    pub fn snapshot(&self) -> Vec<SourceState> {
        self.0.lock().expect("source states").values().cloned().collect()
    }

    /// Ready once every source has synced once; a non-local source that has not synced
    /// within `timeout` is reported (once) and stops holding readiness back.
    pub fn ready(&self, timeout: Duration) -> bool {
        let mut states = self.0.lock().expect("source states");
        let mut ready = true;
        for s in states.values_mut().filter(|s| !s.synced) {
            let waited = s.registered.is_some_and(|at| at.elapsed() >= timeout);
            if !s.local && waited {
                if !s.gave_up_waiting {
                    tracing::warn!(cluster = %s.name, ?timeout, "cluster not synced in time: ready without it, still trying");
                    s.gave_up_waiting = true;
                }
                continue;
            }
            ready = false;
        }
        ready
    }
}
