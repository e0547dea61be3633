//! `globaldns serve` wired together: sources → registry → table → listeners, under one
//! cancellation token. One [`Metrics`] is made here and handed to every part that counts.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config as KubeConfig};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::dns::forward::{ForwardSettings, Forwarder};
use crate::dns::server::{BindError, Limits, Listeners, tcp_listener};
use crate::dns::transfer::{TransferSettings, Transfers, notify};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::source::{Event, Rank, SourceId, SourceKey, Status, Update};
use crate::sources::cluster::{self, Cluster};
use crate::sources::files::{self, FileSource};
use crate::sources::remote_secrets;
use crate::table::{Table, TableSettings};

/// Where entries come from, validated.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--entries` paths.
    pub entries: Vec<PathBuf>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`s, the first the local cluster unless `--in-cluster`.
    pub contexts: Vec<String>,
    /// `--in-cluster`, with the local cluster's name.
    pub in_cluster: Option<String>,
    /// `--remote-secrets` namespace.
    pub remote_secrets: Option<String>,
    /// `--sync-timeout`.
    pub sync_timeout: Duration,
}

/// How often entry files are checked for changes.
pub const FILE_POLL: Duration = Duration::from_millis(500);

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// DNS addresses, at least one (UDP and TCP on each); `[::]` is dual-stack unless an IPv4 address has its
    /// port too ([`Listeners::bind`]).
    pub listen: Vec<SocketAddr>,
    /// Admin HTTP address (`[::]` dual-stack, as the DNS listeners); `None`: no admin endpoint.
    pub admin: Option<SocketAddr>,
    /// Table settings.
    pub table: TableSettings,
    /// Sources.
    pub sources: Sources,
    /// Listener limits.
    pub limits: Limits,
    /// Forwarding of other names; `None` answers them REFUSED.
    pub forward: Option<ForwardSettings>,
    /// Zone transfers and NOTIFY (`--transfer-to`, `--notify`); default: none.
    pub transfer: TransferSettings,
}

/// Why the server did not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// No DNS address to listen on.
    #[error("no DNS address to listen on")]
    NoListen,
    /// A DNS address could not be bound.
    #[error(transparent)]
    Listen(#[from] BindError),
    /// The admin address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cluster could not be configured.
    #[error("cluster {cluster}: {reason}")]
    Cluster {
        /// The context or cluster name.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// The UDP threads could not be started.
    #[error("cannot start the UDP threads")]
    Serve {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The registry's thread could not be started.
    #[error("cannot start the registry")]
    Registry {
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The running sources and the table they feed.
#[derive(Debug)]
pub struct Running {
    dns_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    published: Published,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

/// What the registry publishes.
#[derive(Debug, Clone)]
struct Published {
    table: Arc<ArcSwap<Table>>,
    status: Arc<ArcSwap<Status>>,
    /// Every table published, for NOTIFY.
    tables: tokio::sync::watch::Receiver<Arc<Table>>,
}

impl Running {
    /// The first DNS address actually bound.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addrs[0]
    }

    /// Every DNS address actually bound, in the order of [`ServeConfig::listen`] (a dual-stack
    /// `[::]` that fell back as `0.0.0.0`).
    pub fn dns_addrs(&self) -> &[SocketAddr] {
        &self.dns_addrs
    }

    /// The admin address actually bound, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The published table.
    pub fn table(&self) -> Arc<Table> {
        self.published.table.load_full()
    }

    /// Every source's status, as published.
    pub fn status(&self) -> Arc<Status> {
        self.published.status.load_full()
    }

    /// Ready: every source synced once (a remote cluster past the sync timeout excepted).
    pub fn ready(&self) -> bool {
        self.published.status.load().ready()
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every task has stopped (after the token is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn context_client(kubeconfig: Option<&std::path::Path>, context: &str) -> Result<Client, StartError> {
    let fail = |reason: String| StartError::Cluster {
        cluster: context.into(),
        reason,
    };
    let file = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|e| fail(format!("cannot read the kubeconfig: {e}")))?;
    let options = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let config = KubeConfig::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// Starts every source and the registry (on its own thread); returns what it publishes.
async fn start_sources(
    sources: &Sources,
    settings: TableSettings,
    metrics: &Arc<Metrics>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<Published, StartError> {
    let mut clusters = Vec::new();
    if let Some(name) = &sources.in_cluster {
        let fail = |reason: String| StartError::Cluster {
            cluster: name.clone(),
            reason,
        };
        let config = KubeConfig::incluster().map_err(|e| fail(format!("not running in a cluster: {e}")))?;
        clusters.push(Cluster {
            id: SourceId::new(SourceKey {
                rank: Rank::Local,
                name: name.as_str().into(),
            }),
            client: Client::try_from(config).map_err(|e| fail(e.to_string()))?,
        });
    }
    for context in &sources.contexts {
        let rank = if clusters.is_empty() {
            Rank::Local
        } else {
            Rank::Context(clusters.len() as u32)
        };
        let client = context_client(sources.kubeconfig.as_deref(), context).await?;
        clusters.push(Cluster {
            id: SourceId::new(SourceKey {
                rank,
                name: context.as_str().into(),
            }),
            client,
        });
    }
    let local = clusters.first().map(|c| c.id.key.clone());
    let mut registry = Registry::new(settings, local, sources.sync_timeout, metrics.clone());
    let (tx, rx) = mpsc::channel::<Update>(1024);
    if !sources.entries.is_empty() {
        let mut source = FileSource::new(sources.entries.clone());
        let (event, diagnostics) = source.load(); // once, at start-up: blocking is fine here
        files::report(&diagnostics, metrics);
        let id = SourceId::new(SourceKey::files());
        registry.apply(id.says(Event::Started));
        let complete = matches!(event, Event::Listed(_));
        if let Event::Incomplete(_, error) = &event {
            tracing::warn!(%error, "entry files incomplete at start: serving what loaded, not ready, nothing transferred until they load");
        }
        registry.apply(id.says(event));
        tasks.spawn(files::watch(
            source,
            id,
            FILE_POLL,
            complete,
            tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    if let (Some(namespace), Some(local)) = (&sources.remote_secrets, clusters.first()) {
        tasks.spawn(remote_secrets::watch(
            local.client.clone(),
            local.id.name().clone(),
            namespace.clone(),
            tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    for cluster in clusters {
        registry.apply(cluster.id.says(Event::Started));
        tasks.spawn(cluster::watch(cluster, tx.clone(), metrics.clone(), shutdown.clone()));
    }
    registry.publish(); // the files' table, before anything is served
    let published = Published {
        table: registry.table(),
        status: registry.status(),
        tables: registry.subscribe(),
    };
    let stopped = registry
        .spawn(rx, shutdown.clone())
        .map_err(|source| StartError::Registry { source })?;
    tasks.spawn(stopped);
    Ok(published)
}

/// Starts the sources only, waits until they are ready (or the sync timeout twice over),
/// and returns the table: `globaldns records`.
///
/// # Errors
///
/// - [`StartError::Cluster`] when a cluster cannot be configured: not running in a pod with
///   `--in-cluster`, or a kubeconfig that cannot be read or lacks a `--context`;
/// - [`StartError::Registry`] when the registry's thread cannot be started.
///
/// A cluster that cannot be reached is no error: it is missing from the table.
pub async fn collect(sources: &Sources, settings: TableSettings) -> Result<Arc<Table>, StartError> {
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let metrics = Arc::new(Metrics::new());
    let published = start_sources(sources, settings, &metrics, &mut tasks, &shutdown).await?;
    let deadline = tokio::time::Instant::now() + sources.sync_timeout * 2;
    while !published.status.load().ready() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(published.table.load_full())
}

/// Starts the sources, binds the listeners and starts serving.
///
/// # Errors
///
/// - [`StartError::NoListen`] when `config.listen` is empty;
/// - [`StartError::Cluster`] and [`StartError::Registry`] as [`collect`];
/// - [`StartError::Listen`] when a DNS address, or the admin address, cannot be bound (in
///   use, not an address of this host, a port below 1024 without the capability);
/// - [`StartError::Bind`] when the admin listener's bound address cannot be read back;
/// - [`StartError::Serve`] when the UDP threads cannot be started.
pub async fn start(config: ServeConfig) -> Result<Running, StartError> {
    if config.listen.is_empty() {
        return Err(StartError::NoListen);
    }
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let mut tasks = JoinSet::new();
    let published = start_sources(&config.sources, config.table.clone(), &metrics, &mut tasks, &shutdown).await?;
    let handle = published.table.clone();
    let listeners = Listeners::bind(&config.listen, config.limits.udp_sockets).await?;
    let dns_addrs = listeners.local_addrs();
    let mut admin_addr = None;
    if let Some(addr) = config.admin {
        let listener = tcp_listener(addr)?;
        admin_addr = Some(
            listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?,
        );
        let state = AdminState {
            table: handle.clone(),
            status: published.status.clone(),
            metrics: metrics.clone(),
            forwarding: config.forward.is_some(),
        };
        tasks.spawn(admin::serve(listener, state, shutdown.clone()));
    }
    tracing::info!(
        dns_addr = %dns_addrs[0],
        dns_addrs = ?dns_addrs,
        admin_addr = ?admin_addr,
        auto_allocate = ?config.table.auto_allocate,
        export_to = ?config.table.export,
        default_address = ?config.table.default_address,
        skip_resolution_none = config.table.skip_resolution_none,
        zones = ?config.table.zones().iter().map(|z| &*z.name).collect::<Vec<_>>(),
        ttl = config.table.ttl,
        entries = ?config.sources.entries,
        contexts = ?config.sources.contexts,
        in_cluster = ?config.sources.in_cluster,
        remote_secrets = ?config.sources.remote_secrets,
        upstreams = ?config.forward.as_ref().map(|f| &f.upstreams),
        transfer_to = ?config.transfer.allow,
        notify = ?config.transfer.notify,
        hosts = handle.load().host_count(),
        "globaldns serving"
    );
    let forwarder = config.forward.map(|f| Forwarder::new(f, metrics.clone()));
    tasks.spawn(notify::run(
        config.transfer.notify.clone(),
        published.tables.clone(),
        published.status.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let transfers = Transfers::new(config.transfer.allow.clone(), published.status.clone(), metrics.clone());
    let serving = listeners
        .with_transfers(Arc::new(transfers))
        .serve(handle, forwarder, config.limits, metrics, shutdown.clone())
        .map_err(|source| StartError::Serve { source })?;
    tasks.spawn(serving);
    Ok(Running {
        dns_addrs,
        admin_addr,
        published,
        shutdown,
        tasks,
    })
}
