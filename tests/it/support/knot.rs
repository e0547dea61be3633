//! Knot DNS as the tests run it, as a primary (peers: kube-dns) or as a secondary of
//! globaldns (transfer): one configuration file in a directory of its own, `knotd` on it,
//! logging beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::{Daemon, spawn};

/// `knotd` with configuration `conf`, written to `dir/knot.conf`, logging to `dir/knot.log`;
/// the daemon and the configuration's path (for `knotc -c`).
pub(crate) fn start(dir: &Path, conf: &str) -> (Daemon, PathBuf) {
    let path = dir.join("knot.conf");
    std::fs::write(&path, conf).unwrap();
    let daemon = spawn(
        "knotd",
        Command::new("knotd").arg("-c").arg(&path),
        &dir.join("knot.log"),
    );
    (daemon, path)
}
