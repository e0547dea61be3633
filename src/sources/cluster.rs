//! One cluster's ServiceEntries, watched live with `kube::runtime`.
//!
//! Discovery picks the newest served version of `serviceentries.networking.istio.io` (v1,
//! else v1beta1, else v1alpha3). The watcher lists, then watches, all namespaces, in the
//! default list-then-watch mode (streaming lists fail forever against API servers without
//! WatchList), with kube's default backoff. It resumes dropped watches from the last
//! resource version and relists on 410 Gone; a relist replaces the whole set when it is
//! complete, so objects deleted during an outage go then.
//!
//! While the cluster cannot be reached its last known entries keep being served and it is
//! reported failing (stale, once it has synced); nothing is dropped until a complete list
//! says so. kube's watcher tells of an error but not of a watch that resumes after it (from
//! its resource version, without a relist): so while failing, the API server is probed
//! every [`PROBE`] with a list of one object, and the cluster is reported as resumed as soon
//! as one answers — within [`PROBE`] of the API server answering again. The watch itself
//! resumes within kube's backoff (at most 30 s) and replays what it missed.
//!
//! A list (and a relist) is sent as the complete set; each later event as the one entry it
//! changes, so that the registry recomputes only the hosts that entry names. The entries
//! themselves are held by the registry; the watcher keeps only their keys.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::serviceentry::yaml::{GROUP, VERSIONS};
use crate::serviceentry::{Entry, EntryId, Metadata, Resource, Spec, Status};
use crate::source::{Event, SourceId, Update};

/// How often the API server of a failing cluster is probed, and how long a probe may take.
pub const PROBE: Duration = Duration::from_secs(2);

/// A cluster to watch.
#[derive(Clone)]
pub struct Cluster {
    /// Its source instance: precedence, name (the cluster ID) and generation.
    pub id: SourceId,
    /// A client for its API server.
    pub client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Finds the newest served version of the ServiceEntry resource.
async fn discover(client: &Client) -> Result<ApiResource, String> {
    let group = kube::discovery::group(client, GROUP)
        .await
        .map_err(|e| format!("discovery of {GROUP}: {e}"))?;
    for version in VERSIONS {
        let found = group
            .versioned_resources(version)
            .into_iter()
            .find(|(ar, _)| ar.plural == "serviceentries");
        if let Some((ar, _)) = found {
            return Ok(ar);
        }
    }
    Err(format!(
        "the API server serves no serviceentries.{GROUP} in {VERSIONS:?}"
    ))
}

type Key = (String, String);

/// What the watcher remembers of the cluster's objects: only the invalid ones (each is logged
/// once, not at every relist). The valid entries are held by the registry.
struct Objects {
    cluster: Arc<str>,
    metrics: Arc<Metrics>,
    /// Invalid objects already warned about, with the reason.
    warned: HashMap<Key, String>,
    /// Namespace names, shared by the entries of each namespace.
    namespaces: HashSet<Arc<str>>,
}

/// `spec` and `status` of an object as the watcher delivers it.
#[derive(serde::Deserialize)]
struct Body {
    spec: Option<Spec>,
    #[serde(default)]
    status: Option<Status>,
}

impl Objects {
    fn key(obj: &DynamicObject) -> Key {
        (
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default(),
        )
    }

    fn resource(obj: DynamicObject) -> Result<Resource, String> {
        let created = match obj.metadata.creation_timestamp {
            Some(t) => serde_json::to_value(t)
                .map_err(|e| e.to_string())?
                .as_str()
                .map(str::to_owned),
            None => None,
        };
        let body: Body = serde_json::from_value(obj.data).map_err(|e| e.to_string())?;
        Ok(Resource {
            metadata: Metadata {
                name: obj.metadata.name,
                namespace: obj.metadata.namespace,
                creation_timestamp: created,
            },
            spec: body.spec,
            status: body.status,
        })
    }

    fn strip(&mut self, obj: DynamicObject) -> (Key, Option<Entry>) {
        let key = Self::key(&obj);
        let entry = Self::resource(obj).and_then(|r| r.into_entry("default").map_err(|i| i.reason));
        match entry {
            Ok(mut entry) => {
                self.warned.remove(&key);
                for w in &entry.warnings {
                    tracing::warn!(cluster = %self.cluster, "{}/{}: {w}", key.0, key.1);
                }
                entry.id.namespace = self.namespace(&entry.id.namespace);
                (key, Some(entry))
            }
            Err(reason) => {
                if self.warned.get(&key) != Some(&reason) {
                    self.metrics.rejected(&reason);
                    tracing::warn!(cluster = %self.cluster, "invalid ServiceEntry {}/{}/{}: {reason}; skipped", self.cluster, key.0, key.1);
                    self.warned.insert(key.clone(), reason);
                }
                (key, None)
            }
        }
    }

    fn namespace(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.namespaces.get(name) {
            return shared.clone();
        }
        self.namespaces.insert(name.clone());
        name.clone()
    }

    fn entry_id(&mut self, (namespace, name): &Key) -> EntryId {
        EntryId {
            namespace: self.namespace(&Arc::from(namespace.as_str())),
            name: name.as_str().into(),
        }
    }
}

/// Whether the API server answers: a list of at most one object, within [`PROBE`].
async fn answers(api: &Api<DynamicObject>) -> bool {
    let one = ListParams::default().limit(1);
    matches!(tokio::time::timeout(PROBE, api.list(&one)).await, Ok(Ok(_)))
}

/// Watches `cluster` until `shutdown`, sending its complete entry set after each list, each
/// changed entry after that, and its failures and recoveries.
pub async fn watch(
    cluster: Cluster,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let id = cluster.id.clone();
    let mut objects = Objects {
        cluster: id.name().clone(),
        metrics,
        namespaces: HashSet::new(),
        warned: HashMap::new(),
    };
    let send = |event: Event| updates.send(id.says(event));
    let mut retry = Duration::from_millis(500);
    loop {
        let resource = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = discover(&cluster.client) => r,
        };
        let resource = match resource {
            Ok(r) => r,
            Err(e) => {
                if send(Event::Failed(e)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        retry = Duration::from_millis(500);
        tracing::info!(cluster = %id.name(), version = %resource.version, "watching ServiceEntries");
        let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
        let stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listing: Option<Vec<Entry>> = None;
        let mut failing = false;
        let mut probe = tokio::time::interval(PROBE);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => e,
                _ = probe.tick(), if failing => {
                    if answers(&api).await {
                        failing = false;
                        if send(Event::Resumed).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            let event = match event {
                None => break,
                Some(Err(e)) => {
                    if !failing {
                        failing = true;
                        probe.reset();
                    }
                    Event::Failed(e.to_string())
                }
                Some(Ok(WatchEvent::Init)) => {
                    listing = Some(Vec::new());
                    continue;
                }
                Some(Ok(WatchEvent::InitApply(obj))) => {
                    let (_, entry) = objects.strip(obj);
                    listing.get_or_insert_with(Vec::new).extend(entry);
                    continue;
                }
                Some(Ok(WatchEvent::InitDone)) => Event::Listed(listing.take().unwrap_or_default()),
                Some(Ok(WatchEvent::Apply(obj))) => {
                    let (key, entry) = objects.strip(obj);
                    Event::Changed(vec![(objects.entry_id(&key), entry)])
                }
                Some(Ok(WatchEvent::Delete(obj))) => {
                    let key = Objects::key(&obj);
                    objects.warned.remove(&key);
                    Event::Changed(vec![(objects.entry_id(&key), None)])
                }
            };
            if matches!(event, Event::Listed(_) | Event::Changed(_)) {
                failing = false;
            }
            if send(event).await.is_err() {
                return;
            }
        }
    }
}
