//! Where entries come from: the `--entries` files, one watcher per cluster, and the clusters
//! named by remote secrets.
//!
//! Each source instance sends its complete entry set when it has one (a list, a relist, files
//! reloaded) and after that each changed entry on its own, so that the registry recomputes
//! only the hosts a change names; and it tells of its failures and recoveries. Sources keep
//! no shared state: the registry ([`crate::registry`]) is the only writer of what they say.

pub mod cluster;
pub mod files;
pub mod remote_secrets;
