//! The configuration every in-process server of the tests and benches starts from: the one
//! `ServeConfig` literal (benches include this file through `#[path]`, as they include
//! `kubeapi.rs`), so a field added to `ServeConfig` is added here once.

use std::path::Path;
use std::time::Duration;

use globaldns::app::{ServeConfig, Sources};
use globaldns::dns::server::Limits;
use globaldns::table::TableSettings;

use crate::kubeapi::{KubeApi, write_kubeconfig};

/// How long a source may take to sync before it stops holding readiness back.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// `sources` served on ports the kernel picks (DNS and admin on `127.0.0.1:0`), zone `global`,
/// default limits, no forwarding, no transfers. A test changes what it needs with
/// `ServeConfig { forward, ..loopback(sources) }`.
pub(crate) fn loopback(sources: Sources) -> ServeConfig {
    ServeConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        admin: Some("127.0.0.1:0".parse().unwrap()),
        table: TableSettings::new(&["global"]).unwrap(),
        sources,
        limits: Limits::default(),
        forward: None,
        transfer: Default::default(),
    }
}

/// The entry files in `dir`, synced within [`SYNC_TIMEOUT`].
pub(crate) fn entry_files(dir: &Path) -> Sources {
    Sources {
        entries: vec![dir.to_owned()],
        sync_timeout: SYNC_TIMEOUT,
        ..Default::default()
    }
}

/// The clusters `(api, context)`, the first the local one, through a kubeconfig written into
/// `dir`, synced within [`SYNC_TIMEOUT`].
pub(crate) fn clusters(dir: &Path, clusters: &[(&KubeApi, &str)]) -> Sources {
    Sources {
        kubeconfig: Some(write_kubeconfig(dir, clusters)),
        contexts: clusters.iter().map(|(_, name)| name.to_string()).collect(),
        sync_timeout: SYNC_TIMEOUT,
        ..Default::default()
    }
}
