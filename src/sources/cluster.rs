//! One cluster's ServiceEntries, watched live with `kube::runtime`.
//!
//! Discovery picks the newest served version of `serviceentries.networking.istio.io` (v1,
//! else v1beta1, else v1alpha3), and runs again whenever the watched version answers 404 Not
//! Found (a CRD version that stops being served, a CRD deleted): the watch moves to the
//! version served then, and lists it. The watcher lists, then watches, all namespaces, in the
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
//! themselves are held by the registry; the watcher keeps only the invalid objects' keys (each
//! is warned about once). Objects arrive as `DynamicObject`s, so that one object of a wrong
//! shape is rejected alone (`Reason::Schema`) rather than failing the whole list; their
//! `spec` and `status` are moved out of its JSON into typed fields, without a round trip.

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

use super::Error;
use crate::metrics::Metrics;
use crate::serviceentry::yaml::{GROUP, VERSIONS};
use crate::serviceentry::{Entry, EntryId, Metadata, Reason, Resource, Spec, Status};
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
async fn discover(client: &Client) -> Result<ApiResource, Error> {
    let group = kube::discovery::group(client, GROUP).await.map_err(Error::Discovery)?;
    for version in VERSIONS {
        let found = group
            .versioned_resources(version)
            .into_iter()
            .find(|(ar, _)| ar.plural == "serviceentries");
        if let Some((ar, _)) = found {
            return Ok(ar);
        }
    }
    Err(Error::NotServed)
}

type Key = (String, String);

/// What the watcher remembers of the cluster's objects: only the invalid ones (each is logged
/// once, not at every relist). The valid entries are held by the registry.
struct Objects {
    cluster: Arc<str>,
    metrics: Arc<Metrics>,
    /// Invalid objects already warned about, with the reason.
    warned: HashMap<Key, Reason>,
    /// Namespace names, shared by the entries of each namespace.
    namespaces: HashSet<Arc<str>>,
}

/// `spec` and `status` of an object as the watcher delivers it.
///
/// They are taken from the object's JSON, moved into this type: no copy, no text. Not
/// `DynamicObject::try_parse`, which writes the whole object back into JSON and reads it
/// again (measured here: ~10 µs an object against ~3–4.5 µs, +2 s of CPU for a relist of
/// 300 000 entries).
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

    fn resource(obj: DynamicObject) -> Result<Resource, Reason> {
        let body: Body = serde_json::from_value(obj.data).map_err(|e| Reason::Schema(e.to_string()))?;
        // RFC 3339 in UTC to the second, as the API server writes it: sorts as text.
        let created = obj
            .metadata
            .creation_timestamp
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
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

/// The watcher must stop: shut down, or the registry is gone.
struct Stop;

/// The first wait before discovery runs again after it failed or the watched version went,
/// doubled each time up to [`RETRY_MAX`] until a list succeeds.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait before discovery runs again.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One cluster's watcher: what it sends to, and what it remembers between discoveries.
struct Watcher {
    cluster: Cluster,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    objects: Objects,
    retry: Duration,
}

impl Watcher {
    /// Sends `event`, unless shut down first.
    async fn send(&self, event: Event) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(Stop),
            sent = self.updates.send(self.cluster.id.says(event)) => sent.map_err(|_| Stop),
        }
    }

    /// Tells of `error`: counted, and sent for the logs and `/debug`.
    async fn failed(&self, error: &Error) -> Result<(), Stop> {
        self.metrics.source_error(self.cluster.id.name(), error.metric_label());
        self.send(Event::Failed(error.to_string())).await
    }

    /// Waits the retry delay (doubling it), unless shut down first.
    async fn back_off(&mut self) -> Result<(), Stop> {
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop),
            _ = tokio::time::sleep(self.retry) => {}
        }
        self.retry = (self.retry * 2).min(RETRY_MAX);
        Ok(())
    }

    /// Discovers the served version and watches it, again each time it goes, until stopped.
    async fn run(&mut self) -> Result<(), Stop> {
        loop {
            let discovered = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                r = discover(&self.cluster.client) => r,
            };
            match discovered {
                Ok(resource) => self.follow(resource).await?,
                Err(e) => self.failed(&e).await?,
            }
            self.back_off().await?;
        }
    }

    /// Watches `resource` until stopped, or until it is no longer served (`Ok`: discover again).
    async fn follow(&mut self, resource: ApiResource) -> Result<(), Stop> {
        let name = self.cluster.id.name().clone();
        tracing::info!(cluster = %name, version = %resource.version, "watching ServiceEntries");
        let api: Api<DynamicObject> = Api::all_with(self.cluster.client.clone(), &resource);
        let stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listing: Option<Vec<Entry>> = None;
        let mut failing = false;
        let mut probe = tokio::time::interval(PROBE);
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                e = stream.next() => e,
                _ = probe.tick(), if failing => {
                    if answers(&api).await {
                        failing = false;
                        self.send(Event::Resumed).await?;
                    }
                    continue;
                }
            };
            let event = match event {
                None => return Ok(()),
                Some(Err(e)) => {
                    let error = Error::from(e);
                    if !failing {
                        failing = true;
                        probe.reset();
                    }
                    self.failed(&error).await?;
                    if error.is_not_found() {
                        tracing::info!(cluster = %name, version = %resource.version, "ServiceEntries no longer served at this version: discovering again");
                        return Ok(());
                    }
                    continue;
                }
                Some(Ok(WatchEvent::Init)) => {
                    listing = Some(Vec::new());
                    continue;
                }
                Some(Ok(WatchEvent::InitApply(obj))) => {
                    let (_, entry) = self.objects.strip(obj);
                    listing.get_or_insert_with(Vec::new).extend(entry);
                    continue;
                }
                Some(Ok(WatchEvent::InitDone)) => {
                    self.retry = RETRY_MIN;
                    Event::Listed(listing.take().unwrap_or_default())
                }
                Some(Ok(WatchEvent::Apply(obj))) => {
                    let (key, entry) = self.objects.strip(obj);
                    Event::Changed(vec![(self.objects.entry_id(&key), entry)])
                }
                Some(Ok(WatchEvent::Delete(obj))) => {
                    let key = Objects::key(&obj);
                    self.objects.warned.remove(&key);
                    Event::Changed(vec![(self.objects.entry_id(&key), None)])
                }
            };
            failing = false;
            self.send(event).await?;
        }
    }
}

/// Watches `cluster` until `shutdown`, sending its complete entry set after each list, each
/// changed entry after that, and its failures (counted in `metrics` by
/// [`Error::metric_label`]) and recoveries. Returns when shut down, or when the registry has
/// gone.
pub async fn watch(
    cluster: Cluster,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let objects = Objects {
        cluster: cluster.id.name().clone(),
        metrics: metrics.clone(),
        namespaces: HashSet::new(),
        warned: HashMap::new(),
    };
    let mut watcher = Watcher {
        cluster,
        updates,
        metrics,
        shutdown,
        objects,
        retry: RETRY_MIN,
    };
    let _: Result<(), Stop> = watcher.run().await;
}
