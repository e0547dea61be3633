//! `globaldns serve` wired together: sources → registry → table → listeners, under one
//! cancellation token.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dns::forward::{ForwardSettings, Forwarder};
use crate::dns::server::{Limits, Listeners};
use crate::registry::{Registry, SourceId, Update};
use crate::sources::files::{self, FileSource};
use crate::table::{Table, TableSettings};

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// DNS address (UDP and TCP).
    pub listen: SocketAddr,
    /// Table settings.
    pub table: TableSettings,
    /// `--entries` paths.
    pub entries: Vec<PathBuf>,
    /// How often the entry files are checked for changes.
    pub poll_interval: Duration,
    /// Listener limits.
    pub limits: Limits,
    /// Forwarding of other names; `None` answers them REFUSED.
    pub forward: Option<ForwardSettings>,
}

/// Why the server did not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The DNS address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    dns_addr: SocketAddr,
    table: Arc<ArcSwap<Table>>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// The DNS address actually bound.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The published table.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
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

/// Loads the sources, binds the listeners and starts serving.
pub async fn start(config: ServeConfig) -> Result<Running, StartError> {
    let shutdown = CancellationToken::new();
    let mut registry = Registry::new(config.table.clone(), true);
    let mut tasks = JoinSet::new();
    let (tx, rx) = mpsc::channel::<Update>(64);

    if !config.entries.is_empty() {
        let mut source = FileSource::new(config.entries.clone());
        let (_, diagnostics) = source.refresh(); // once, at start-up: blocking is fine here
        files::log(&diagnostics);
        registry.apply(Update::Entries(SourceId::files(), Arc::new(source.entries())));
        tasks.spawn(files::watch(
            source,
            SourceId::files(),
            config.poll_interval,
            tx,
            shutdown.clone(),
        ));
    }
    let table = registry.publish();
    let handle = registry.table();
    tasks.spawn(registry.run(rx, shutdown.clone()));

    let listeners = Listeners::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let dns_addr = listeners.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(
        %dns_addr,
        zones = ?config.table.zones().iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
        ttl = config.table.ttl,
        entries = ?config.entries,
        upstreams = ?config.forward.as_ref().map(|f| &f.upstreams),
        hosts = table.hosts().len(),
        "globaldns serving"
    );
    let forwarder = config.forward.map(Forwarder::new);
    tasks.spawn(listeners.serve(handle.clone(), forwarder, config.limits, shutdown.clone()));
    Ok(Running {
        dns_addr,
        table: handle,
        shutdown,
        tasks,
    })
}
