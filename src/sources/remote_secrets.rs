//! Clusters found through Istio remote secrets (`--remote-secrets NAMESPACE`).
//!
//! Secrets labelled `istio/multiCluster=true` in that namespace of the local cluster, as
//! `istioctl create-remote-secret` writes them: each data key is a cluster ID, its value a
//! kubeconfig. Clusters are added, replaced (their kubeconfig changed: the new watcher's first
//! complete list replaces the old entries, which are served until then) and removed (their
//! entries go) live. Each watcher started is a new instance of its cluster's source (a new
//! generation), so that whatever a stopped watcher still delivers is dropped by the registry.
//! A key naming the local cluster is ignored. Kubeconfig contents are never logged, not even
//! in parse errors, since they hold credentials.
//!
//! The cluster watchers are this task's children: it stops them on shutdown and returns only
//! once every one of them has returned.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, Config};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Error;
use super::cluster::{self, Cluster};
use crate::metrics::Metrics;
use crate::source::{Event, SourceId, SourceKey, Update};

/// The label that marks remote secrets.
pub const LABEL: &str = "istio/multiCluster=true";

/// Builds a client from kubeconfig text, without ever echoing the text.
///
/// # Errors
/// [`Error::Kubeconfig`] saying what is wrong (not UTF-8, not a kubeconfig, no current
/// context, cluster or user, no usable client configuration), never how: the errors of the
/// parser would quote the text.
pub async fn client_from_kubeconfig(text: &[u8]) -> Result<Client, Error> {
    let text = std::str::from_utf8(text).map_err(|_| Error::Kubeconfig("is not UTF-8"))?;
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|_| Error::Kubeconfig("is not a kubeconfig"))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|_| Error::Kubeconfig("is not a usable kubeconfig (no current context, cluster or user)"))?;
    Client::try_from(config).map_err(|_| Error::Kubeconfig("gives no usable client configuration"))
}

struct Running {
    id: SourceId,
    digest: u64,
    stop: CancellationToken,
}

/// Watches the remote secrets in `namespace` of the local cluster and runs one cluster
/// watcher per cluster they name, until `shutdown`; then stops them and returns once they
/// have all returned. Failures are logged and counted in `metrics` under the local cluster's
/// name (`local_name`).
pub async fn watch(
    local: Client,
    local_name: Arc<str>,
    namespace: String,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let api: Api<Secret> = Api::namespaced(local, &namespace);
    let stream = watcher::watcher(api, watcher::Config::default().labels(LABEL)).default_backoff();
    futures_util::pin_mut!(stream);
    let mut secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, BTreeMap<String, Vec<u8>>>> = None;
    let mut running: HashMap<String, Running> = HashMap::new();
    let watchers = TaskTracker::new();
    let data = |s: Secret| {
        let name = s.metadata.name.unwrap_or_default();
        let data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        (name, data)
    };
    'watching: loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = stream.next() => e,
        };
        match event {
            None => break,
            Some(Err(e)) => {
                let e = Error::from(e);
                metrics.source_error(&local_name, e.metric_label());
                tracing::warn!(namespace, error = %e, "watching remote secrets failed; the clusters found so far stay");
                continue;
            }
            Some(Ok(WatchEvent::Init)) => listing = Some(BTreeMap::new()),
            Some(Ok(WatchEvent::InitApply(s))) => {
                let (name, data) = data(s);
                listing.get_or_insert_with(BTreeMap::new).insert(name, data);
            }
            Some(Ok(WatchEvent::InitDone)) => secrets = listing.take().unwrap_or_default(),
            Some(Ok(WatchEvent::Apply(s))) => {
                let (name, data) = data(s);
                secrets.insert(name, data);
            }
            Some(Ok(WatchEvent::Delete(s))) => {
                secrets.remove(&s.metadata.name.unwrap_or_default());
            }
        }
        if listing.is_some() {
            continue; // wait for the complete list
        }
        // The clusters the secrets name now (the first secret naming a cluster wins).
        let mut wanted: BTreeMap<&str, (&str, &[u8])> = BTreeMap::new();
        for (secret, data) in &secrets {
            for (cluster, kubeconfig) in data {
                if cluster.as_str() == &*local_name {
                    tracing::debug!(secret, cluster, "remote secret names the local cluster: ignored");
                    continue;
                }
                wanted.entry(cluster).or_insert((secret, kubeconfig));
            }
        }
        let gone: Vec<String> = running
            .keys()
            .filter(|c| !wanted.contains_key(c.as_str()))
            .cloned()
            .collect();
        for cluster in gone {
            let Some(r) = running.remove(&cluster) else { continue };
            r.stop.cancel();
            tracing::info!(cluster, "remote cluster removed");
            if updates.send(r.id.says(Event::Removed)).await.is_err() {
                break 'watching; // the registry has stopped
            }
        }
        for (cluster, (secret, kubeconfig)) in wanted {
            let mut hasher = DefaultHasher::new();
            kubeconfig.hash(&mut hasher);
            let digest = hasher.finish();
            if running.get(cluster).is_some_and(|r| r.digest == digest) {
                continue;
            }
            let client = match client_from_kubeconfig(kubeconfig).await {
                Ok(c) => c,
                Err(e) => {
                    metrics.source_error(&local_name, e.metric_label());
                    tracing::warn!(namespace, secret, cluster, "{e}; cluster not watched");
                    continue;
                }
            };
            let replaced = running.remove(cluster).map(|r| r.stop.cancel()).is_some();
            let id = SourceId::new(SourceKey::remote(cluster));
            tracing::info!(cluster, secret, replaced, "remote cluster from secret");
            // Before the watcher sends anything: the registry hears of the instance first.
            if updates.send(id.says(Event::Started)).await.is_err() {
                break 'watching;
            }
            let stop = shutdown.child_token();
            watchers.spawn(cluster::watch(
                Cluster { id: id.clone(), client },
                updates.clone(),
                metrics.clone(),
                stop.clone(),
            ));
            running.insert(cluster.to_owned(), Running { id, digest, stop });
        }
    }
    for r in running.into_values() {
        r.stop.cancel();
    }
    watchers.close();
    watchers.wait().await;
}
