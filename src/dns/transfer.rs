//! Zone transfers to secondaries (RFC 5936 AXFR, RFC 1995 IXFR, both over TCP only) and
//! NOTIFY (RFC 1996, [`notify`]), off the hot path.
//!
//! - The answer path hands an AXFR/IXFR over TCP here ([`Outcome::Transfer`]), whatever its
//!   name (a transfer is never forwarded), and an IXFR over UDP, answered with the single
//!   SOA ([`respond_udp`], RFC 1995 §2); an AXFR over UDP it answers NOTIMP itself (RFC 5936
//!   §4.2).
//! - Access: a client outside `--transfer-to` gets REFUSED (with EDE 18 Prohibited when it
//!   sent EDNS), whatever else holds. A question that is not a served zone's apex — below
//!   one, or outside every served zone — NOTAUTH ("not authoritative for the zone named",
//!   RFC 2136 §2.2; Knot answers a transfer of a zone it does not serve the same), never
//!   REFUSED: that is for clients outside `--transfer-to`, whose question is not looked at.
//! - Nothing is transferred before the first complete sync (every source synced once, as
//!   `/readyz` says): SERVFAIL, with EDE 14 Not Ready. SERVFAIL, not REFUSED, because a
//!   secondary takes SERVFAIL for "try again at the retry interval" and keeps serving its copy,
//!   while a partial zone with a higher serial would wipe the names it holds.
//! - The zone comes from the one table published when the request was read (a consistent
//!   snapshot: its records, serial and change history belong together); the answer is built
//!   on a blocking thread, at most [`MAX_TRANSFERS`] at once, in messages of at most 16 KiB.
//! - IXFR (RFC 1995 §4): from a serial in the zone's history, the changes since; from the
//!   current serial or a newer one, the single SOA (§2); from any other, the whole zone (an
//!   AXFR-style answer).
//!
//! [`Outcome::Transfer`]: super::answer::Outcome::Transfer

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::source::Status;
use crate::table::{Table, serial_gt};

mod message;
pub mod notify;

use message::{Item, Kind, ede};

/// Transfers built at once at most; more wait.
pub const MAX_TRANSFERS: usize = 4;

/// `--transfer-to` and `--notify`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferSettings {
    /// Clients allowed AXFR/IXFR.
    pub allow: Vec<IpNet>,
    /// Secondaries sent NOTIFY when a zone's serial changes.
    pub notify: Vec<SocketAddr>,
}

/// How a transfer request ended, for the metrics' `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole zone.
    Full,
    /// The changes since the client's serial.
    Incremental,
    /// The client is current: the single SOA.
    Current,
    /// A client outside `--transfer-to`.
    Refused,
    /// Before the first complete sync.
    NotReady,
    /// Not a served zone's apex.
    NotAuth,
    /// Not a well-formed request.
    Error,
    /// An IXFR over UDP, answered with the single SOA (RFC 1995 §2).
    OverUdp,
}

impl Verdict {
    /// The metrics' `result` label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Full => "full",
            Verdict::Incremental => "incremental",
            Verdict::Current => "current",
            Verdict::Refused => "refused",
            Verdict::NotReady => "not_ready",
            Verdict::NotAuth => "not_auth",
            Verdict::Error => "error",
            Verdict::OverUdp => "udp_soa",
        }
    }
}

const NOTAUTH: u16 = 9;
const SERVFAIL: u16 = 2;
const REFUSED: u16 = 5;

/// The zone `request` asks of `table` when it is to be answered, else the one-message error
/// answer: REFUSED (EDE 18) outside `--transfer-to` (`allowed`), NOTAUTH for a name that is
/// not a served zone's apex, SERVFAIL (EDE 14) before the first complete sync (`ready`).
fn zone_asked<'t>(
    table: &'t Table,
    request: &message::Request,
    allowed: bool,
    ready: bool,
) -> Result<&'t crate::table::Zone, (Vec<u8>, Verdict)> {
    if !allowed {
        let reply = message::error(request, REFUSED, Some(ede::PROHIBITED));
        return Err((reply, Verdict::Refused));
    }
    let Some(zone) = table.zones().iter().find(|z| *z.name == request.zone) else {
        return Err((message::error(request, NOTAUTH, None), Verdict::NotAuth));
    };
    if !ready {
        let reply = message::error(request, SERVFAIL, Some(ede::NOT_READY));
        return Err((reply, Verdict::NotReady));
    }
    Ok(zone)
}

/// The answer to an IXFR over UDP from `table` (pure; `allowed` and `ready` as for
/// [`respond`]): to a client that may transfer, the single SOA of the zone's current version
/// (RFC 1995 §2 and §4: the client then asks over TCP, or is current); otherwise the same
/// error answer as over TCP. AXFR over UDP never comes here: the answer path answers it
/// NOTIMP (RFC 5936 §4.2).
pub fn respond_udp(table: &Table, query: &[u8], allowed: bool, ready: bool) -> (Vec<u8>, &'static str, Verdict) {
    let Ok(request) = message::parse_request(query) else {
        return (message::formerr(query), "other", Verdict::Error);
    };
    let kind = request.kind.label();
    match zone_asked(table, &request, allowed, ready) {
        Err((reply, verdict)) => (reply, kind, verdict),
        Ok(zone) => {
            let soa = table.soa(zone);
            let mut messages = message::transfer(&request, &[Item::Soa(&soa)]);
            (messages.swap_remove(0), kind, Verdict::OverUdp)
        }
    }
}

/// The messages answering the transfer request `query` from `table` (pure): `allowed` says
/// whether the client is in `--transfer-to`, `ready` whether the first complete sync is done.
pub fn respond(table: &Table, query: &[u8], allowed: bool, ready: bool) -> (Vec<Vec<u8>>, &'static str, Verdict) {
    let Ok(request) = message::parse_request(query) else {
        return (vec![message::formerr(query)], "other", Verdict::Error);
    };
    let kind = request.kind.label();
    let zone = match zone_asked(table, &request, allowed, ready) {
        Ok(zone) => zone,
        Err((reply, verdict)) => return (vec![reply], kind, verdict),
    };
    let soa = table.soa(zone);
    let ttl = table.ttl();
    if request.kind == Kind::Ixfr
        && let Some(client) = request.client_serial
    {
        if client == soa.serial || serial_gt(client, soa.serial) {
            return (message::transfer(&request, &[Item::Soa(&soa)]), kind, Verdict::Current);
        }
        if let Some(deltas) = table.zone_version(zone).changes_since(client) {
            let sized = |serial| crate::table::Soa { serial, ..soa.clone() };
            let soas: Vec<_> = deltas.iter().map(|d| (sized(d.from), sized(d.to))).collect();
            let mut items = vec![Item::Soa(&soa)];
            for (d, (from, to)) in deltas.iter().zip(&soas) {
                items.push(Item::Soa(from));
                items.extend(d.removed.iter().map(|r| Item::Record(r, ttl)));
                items.push(Item::Soa(to));
                items.extend(d.added.iter().map(|r| Item::Record(r, ttl)));
            }
            items.push(Item::Soa(&soa));
            return (message::transfer(&request, &items), kind, Verdict::Incremental);
        }
    }
    let records = table.zone_records(zone);
    let items: Vec<Item<'_>> = std::iter::once(Item::Soa(&soa))
        .chain(records.iter().map(|r| Item::Record(r, ttl)))
        .chain(std::iter::once(Item::Soa(&soa)))
        .collect();
    (message::transfer(&request, &items), kind, Verdict::Full)
}

/// What the TCP listeners need to serve transfers.
#[derive(Debug)]
pub struct Transfers {
    allow: Vec<IpNet>,
    status: Arc<ArcSwap<Status>>,
    permits: Semaphore,
    metrics: Arc<Metrics>,
}

impl Transfers {
    /// Transfers to clients in `allow`, once `status` says every source has synced.
    pub fn new(allow: Vec<IpNet>, status: Arc<ArcSwap<Status>>, metrics: Arc<Metrics>) -> Self {
        Transfers {
            allow,
            status,
            permits: Semaphore::new(MAX_TRANSFERS),
            metrics,
        }
    }

    /// Whether `ip` may transfer (a v4-mapped IPv6 address counts as its IPv4 one).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether `table` may be transferred: every source has synced once (`/readyz`) and the
    /// table holds the local cluster's entries.
    pub fn ready(&self, table: &Table) -> bool {
        self.status.load().ready() && table.synced()
    }

    /// The answer to the transfer request `query` of `peer` from `table` (the table published
    /// when it was read), as length-prefixed TCP frames, ready to write.
    pub async fn serve(&self, table: Arc<Table>, query: Vec<u8>, peer: IpAddr) -> Vec<u8> {
        let started = std::time::Instant::now();
        let allowed = self.allows(peer);
        let ready = self.ready(&table);
        let (messages, kind, result) = if allowed && ready {
            let _permit = self.permits.acquire().await;
            let built = tokio::task::spawn_blocking(move || respond(&table, &query, allowed, ready)).await;
            match built {
                Ok(built) => built,
                Err(_) => (Vec::new(), "other", Verdict::Error),
            }
        } else {
            respond(&table, &query, allowed, ready)
        };
        let first = messages.first().map(Vec::as_slice);
        self.metrics.transfer(kind, result.label(), first, started.elapsed());
        if result == Verdict::Refused {
            tracing::debug!(%peer, "zone transfer refused: client not in --transfer-to");
        }
        let mut framed = Vec::with_capacity(messages.iter().map(|m| m.len() + 2).sum());
        for m in messages {
            framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
            framed.extend_from_slice(&m);
        }
        framed
    }
}

#[cfg(test)]
mod tests;
