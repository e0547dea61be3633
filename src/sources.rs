//! Where entries come from: the `--entries` files, one watcher per cluster, and the clusters
//! named by remote secrets.
//!
//! A cluster sends its complete entry set when it has one (a list, a relist) and after that
//! each changed entry on its own; the files source sends its complete set again whenever a
//! file changes. Either way the registry recomputes only the hosts whose entries changed (a
//! complete set is compared with the one it replaces entry by entry: [`crate::table::Live`]),
//! never the whole table. Each source also tells of its failures and recoveries. Sources keep
//! no shared state: the registry ([`crate::registry`]) is the only writer of what they say.

pub mod cluster;
pub mod files;
pub mod remote_secrets;

use kube::runtime::watcher;
use thiserror::Error;

use crate::serviceentry::yaml::{GROUP, VERSIONS};

/// Why a cluster (or the remote secrets of the local one) cannot be watched right now. Every
/// one is retried; its text goes to the logs and `/debug/sources`, its
/// [`Error::metric_label`] to `globaldns_source_errors_total`.
#[derive(Debug, Error)]
pub enum Error {
    /// Discovery of the API group failed.
    #[error("discovery of {GROUP}: {0}")]
    Discovery(#[source] kube::Error),
    /// The API server serves ServiceEntries in none of the versions known.
    #[error("the API server serves no serviceentries.{GROUP} in {VERSIONS:?}")]
    NotServed,
    /// A list or a watch failed (kube's watcher retries it with backoff).
    #[error(transparent)]
    Watch(#[from] watcher::Error),
    /// A remote secret's kubeconfig cannot be used: what is wrong with it, never its text
    /// (it holds credentials).
    #[error("remote secret key {0}")]
    Kubeconfig(&'static str),
}

impl Error {
    /// The API server's error under it, if there is one.
    pub fn kube(&self) -> Option<&kube::Error> {
        match self {
            Error::Discovery(e) => Some(e),
            Error::Watch(
                watcher::Error::InitialListFailed(e)
                | watcher::Error::WatchStartFailed(e)
                | watcher::Error::WatchFailed(e),
            ) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status the API server answered with, if it answered with one.
    fn status(&self) -> Option<u16> {
        match self {
            Error::Watch(watcher::Error::WatchError(status)) => Some(status.code),
            _ => match self.kube()? {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
        }
    }

    /// The watched version is no longer served (404 Not Found): discovery must run again.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A label for metrics, one of a fixed set: `unauthorized` (401), `forbidden` (403),
    /// `not_found` (404: the CRD or its version not served), `gone` (410: history compacted,
    /// kube relists), `api` (other statuses), `not_served` (no known version),
    /// `unreachable` (no connection or no answer), `kubeconfig`, `other`.
    pub fn metric_label(&self) -> &'static str {
        match (self, self.status()) {
            (Error::NotServed, _) => "not_served",
            (Error::Kubeconfig(_), _) => "kubeconfig",
            (_, Some(401)) => "unauthorized",
            (_, Some(403)) => "forbidden",
            (_, Some(404)) => "not_found",
            (_, Some(410)) => "gone",
            (_, Some(_)) => "api",
            (_, None) => match self.kube() {
                Some(kube::Error::HyperError(_) | kube::Error::Service(_)) => "unreachable",
                _ => "other",
            },
        }
    }
}
