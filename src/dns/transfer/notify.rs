//! NOTIFY (RFC 1996) to every `--notify` secondary for each zone whose serial changed.
//!
//! A task fed from the registry's publishes (a watch channel of the table) hands each zone's
//! new serial to one sender per (secondary, zone); a sender NOTIFYs over UDP and retries up
//! to [`BACKOFF`]`.len()` times, waiting 1, 2, 4, 8 and 16 s, until acknowledged (§3.6);
//! a serial that changes meanwhile replaces the one being sent (changes faster than the
//! secondaries pull are coalesced: they pull the latest anyway). Nothing is sent before the
//! first complete sync (every source synced once), then every zone is NOTIFYed once (once its
//! first records have their serial: [`crate::table::Version::transferable`]), so
//! secondaries that hold an older copy catch up after a restart. Serials follow the table's:
//! a change waiting for its serial is NOTIFYed when the registry seals it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::message;
use crate::metrics::Metrics;
use crate::source::Status;
use crate::table::{Soa, Table};

/// Waits for the acknowledgement of the first NOTIFY and of each retry; a retry follows
/// each wait in vain, the last retry waits as long as the one before.
pub const BACKOFF: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// While not ready, how often readiness is looked at again.
const READY_POLL: Duration = Duration::from_millis(200);

/// NOTIFYs `targets` of each zone's serial changes in the tables of `tables`, once `status`
/// is ready, until `shutdown`.
pub async fn run(
    targets: Vec<SocketAddr>,
    mut tables: watch::Receiver<Arc<Table>>,
    status: Arc<ArcSwap<Status>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if targets.is_empty() {
        return;
    }
    let mut senders: HashMap<Arc<str>, Vec<watch::Sender<Option<Soa>>>> = HashMap::new();
    let mut notified: HashMap<Arc<str>, u32> = HashMap::new();
    loop {
        let table = tables.borrow_and_update().clone();
        let ready = status.load().ready() && table.synced();
        if ready {
            for zone in table.zones().iter().filter(|z| table.zone_version(z).transferable()) {
                let soa = table.soa(zone);
                if notified.get(&zone.name) == Some(&soa.serial) {
                    continue;
                }
                notified.insert(zone.name.clone(), soa.serial);
                let zone_senders = senders.entry(zone.name.clone()).or_insert_with(|| {
                    let spawn = |&target| {
                        let (tx, rx) = watch::channel(None);
                        tokio::spawn(sender(target, rx, metrics.clone(), shutdown.clone()));
                        tx
                    };
                    targets.iter().map(spawn).collect()
                });
                for tx in zone_senders.iter() {
                    tx.send_replace(Some(soa.clone()));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = tables.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(READY_POLL), if !ready => {}
        }
    }
}

/// Sends the latest SOA of `soas` to `target` until acknowledged or out of retries.
async fn sender(
    target: SocketAddr,
    mut soas: watch::Receiver<Option<Soa>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%target, error = %e, "NOTIFY: no socket");
            return;
        }
    };
    let mut buf = vec![0u8; 4096];
    let mut id: u16 = (std::process::id() as u16).wrapping_mul(31);
    'next: loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = soas.changed() => if changed.is_err() { return },
        }
        'serial: loop {
            let Some(soa) = soas.borrow_and_update().clone() else {
                continue 'next;
            };
            let last = BACKOFF[BACKOFF.len() - 1];
            for wait in BACKOFF.into_iter().chain([last]) {
                id = id.wrapping_add(1);
                let notify = message::notify(&soa, id);
                if let Err(e) = socket.send_to(&notify, target).await {
                    tracing::debug!(%target, error = %e, "NOTIFY send");
                }
                metrics.notify("sent");
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        changed = soas.changed() => {
                            if changed.is_err() { return }
                            continue 'serial; // a newer serial: NOTIFY that one instead
                        }
                        () = tokio::time::sleep_until(deadline) => break,
                        got = socket.recv_from(&mut buf) => {
                            if let Ok((n, from)) = got
                                && from == target
                                && message::acknowledges(&buf[..n], id)
                            {
                                metrics.notify("acknowledged");
                                continue 'next;
                            }
                        }
                    }
                }
            }
            metrics.notify("failed");
            tracing::warn!(%target, zone = %soa.zone, serial = soa.serial, "NOTIFY not acknowledged after every retry");
            continue 'next;
        }
    }
}
