//! Each zone as a secondary holds it, its serial and its recent changes: what zone transfers
//! (RFC 5936 AXFR, RFC 1995 IXFR) send, read from one published [`Table`].
//!
//! - [`Table::zone_records`] walks a zone: the apex NS, every exact host's A/AAAA, SRV and
//!   PTR records, and every wildcard's as owner `*.suffix` (a secondary then answers
//!   wildcards by RFC 4592). The SOA brackets it ([`Table::soa`]). The walk and the change
//!   history read the same records, those the table holds per owner name
//!   ([`Table::owner_records`]), so a new record type joins both in one place.
//! - Each zone has its own serial ([`Version`]): the Unix time (seconds) at which it was
//!   assigned, never more, so it never goes back across restarts (a restart starts at the
//!   Unix time, past every serial before it; RFC 1982 arithmetic). A change is served at once;
//!   when the zone's serial already is the current second, the change is *pending*: coalesced
//!   with the next ones, and sealed with the next second as the serial (the registry's timer,
//!   [`Version::sealed`]). Until then the SOA keeps the old serial, NOTIFY (which follows
//!   serials) waits, and a transfer sends the zone as it was at that serial (the pending
//!   change undone), so a transfer's records always match its serial, without waiting.
//!   Sync-state changes never move a serial.
//! - Each zone keeps its last [`HISTORY_CHANGES`] changes, at most [`HISTORY_BYTES`] of them
//!   (the oldest go first): an IXFR from a serial still in it is answered with the changes
//!   since, any other with the whole zone.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{Record, RecordData, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Table, Zone, zone_of};

/// Changes kept per zone at most.
pub const HISTORY_CHANGES: usize = 100;
/// Bytes of changes kept per zone at most (counted as [`ZoneRecord::size`]).
pub const HISTORY_BYTES: usize = 16 << 20;

/// The data of a record of a zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    /// A name server (the apex NS), presentation form, no trailing dot.
    Ns(Arc<str>),
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// `SRV 0 100 <port> <target>.` (RFC 2782; the target without its trailing dot).
    Srv {
        /// The port.
        port: u16,
        /// The host it points at.
        target: Arc<str>,
    },
    /// `PTR <target>.` (the target without its trailing dot).
    Ptr(Arc<str>),
}

/// One record of a zone (class IN, TTL the table's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneRecord {
    /// Owner, presentation form, lower case, no trailing dot (`*.shop.global` for a wildcard).
    pub owner: Arc<str>,
    /// Data.
    pub data: RData,
}

impl ZoneRecord {
    /// Bytes it takes in the change history, about its wire size.
    pub fn size(&self) -> usize {
        let data = match &self.data {
            RData::Ns(n) => n.len() + 2,
            RData::A(_) => 4,
            RData::Aaaa(_) => 16,
            RData::Srv { target, .. } => target.len() + 2 + 6,
            RData::Ptr(target) => target.len() + 2,
        };
        self.owner.len() + 2 + 10 + data
    }
}

/// The SOA of a zone (RFC 1035 §3.3.13), names in presentation form without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    /// The zone apex.
    pub zone: Arc<str>,
    /// MNAME: `ns.dns.<zone>`.
    pub mname: String,
    /// RNAME: `hostmaster.<zone>`.
    pub rname: String,
    /// SERIAL.
    pub serial: u32,
    /// REFRESH, seconds.
    pub refresh: u32,
    /// RETRY, seconds.
    pub retry: u32,
    /// EXPIRE, seconds.
    pub expire: u32,
    /// MINIMUM, seconds (the negative TTL).
    pub minimum: u32,
    /// TTL of the SOA record itself.
    pub ttl: u32,
}

/// One change of a zone: from serial `from` to `to`, records `removed` and `added` (RFC 1995
/// §4: the difference sequence of one version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Serial before.
    pub from: u32,
    /// Serial after.
    pub to: u32,
    /// The records, shared with the pending change it sealed (no copy).
    changes: Arc<Changes>,
}

impl Delta {
    /// Records gone, sorted.
    pub fn removed(&self) -> impl Iterator<Item = &ZoneRecord> {
        self.changes.removed.iter()
    }

    /// Records new, sorted.
    pub fn added(&self) -> impl Iterator<Item = &ZoneRecord> {
        self.changes.added.iter()
    }

    fn size(&self) -> usize {
        self.removed().chain(self.added()).map(ZoneRecord::size).sum::<usize>() + 64
    }
}

/// A zone's serial, its recent changes (oldest first) and the change not yet given a serial.
#[derive(Debug, Clone, Default)]
pub struct Version {
    /// The zone's SOA serial: the Unix time (seconds) of the change it was given to, or of the
    /// start; never greater than the time it was assigned at.
    pub serial: u32,
    history: VecDeque<Arc<Delta>>,
    bytes: usize,
    /// Changes since `serial`, already served, oldest first; none usually.
    pending: Vec<Arc<Changes>>,
    /// No secondary can hold `serial` from this process (the start-up serial, before any
    /// change): the first change records no history from it.
    fresh: bool,
}

/// The records a change removed from the zone and added to it (disjoint, sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Records gone.
    pub removed: BTreeSet<ZoneRecord>,
    /// Records new.
    pub added: BTreeSet<ZoneRecord>,
}

/// Whether serial `a` is greater than `b` (RFC 1982 §3.2).
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

impl Version {
    /// A zone at `serial`, with no history.
    pub fn new(serial: u32) -> Self {
        Version {
            serial,
            ..Default::default()
        }
    }

    /// A zone at the start of the process, at `serial` (the Unix time): another process (a
    /// restart within the same second) may have served other records at the same serial, so
    /// no IXFR is ever answered from it (the whole zone instead).
    pub fn at_start(serial: u32) -> Self {
        Version {
            serial,
            fresh: true,
            ..Default::default()
        }
    }

    /// The version after a change that removed and added these records (served at once):
    /// the change joins the pending ones, which are sealed when `now` (Unix time) is past the
    /// serial ([`Version::sealed`]); until then the serial stays, so that it never exceeds the
    /// time it is assigned at. Pending changes are kept as they come (shared, never copied:
    /// a commit costs what its own change does), and coalesced when sealed or transferred.
    pub fn advance(&self, change: Changes, now: u32) -> Version {
        if change == Changes::default() {
            return self.sealed(now);
        }
        let mut next = self.clone();
        next.pending.push(Arc::new(change));
        next.sealed(now)
    }

    /// Whether the zone at its serial may be transferred (and NOTIFYed): not while it is the
    /// start-up zone (no source's records yet) with the first records waiting for a serial;
    /// a partial zone would wipe a secondary's copy.
    pub fn transferable(&self) -> bool {
        !(self.fresh && self.is_pending())
    }

    /// Whether records changed since the serial are served already, waiting for a serial.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the pending changes can be sealed: the Unix second after the serial.
    pub fn seals_at(&self) -> Option<u32> {
        self.is_pending().then(|| self.serial.wrapping_add(1))
    }

    /// The pending changes as one (a record removed and added back, or added and removed
    /// again, is no change); `None` when there are none.
    fn coalesced(&self) -> Option<Arc<Changes>> {
        let (first, rest) = self.pending.split_first()?;
        if rest.is_empty() {
            return Some(first.clone());
        }
        let mut all = Changes::clone(first);
        for change in rest {
            for r in &change.removed {
                if !all.added.remove(r) {
                    all.removed.insert(r.clone());
                }
            }
            for r in &change.added {
                if !all.removed.remove(r) {
                    all.added.insert(r.clone());
                }
            }
        }
        Some(Arc::new(all))
    }

    /// The version with its pending changes sealed at serial `now` (Unix time) when `now` is
    /// past the serial (RFC 1982), kept within the history's bounds; else as it is. Changes
    /// that cancel out leave the serial as it is.
    pub fn sealed(&self, now: u32) -> Version {
        if !serial_gt(now, self.serial) {
            return self.clone();
        }
        let Some(changes) = self.coalesced() else {
            return self.clone();
        };
        if *changes == Changes::default() {
            return Version {
                pending: Vec::new(),
                ..self.clone()
            };
        }
        let mut next = Version {
            serial: now,
            history: self.history.clone(),
            bytes: self.bytes,
            pending: Vec::new(),
            fresh: false,
        };
        if self.fresh {
            return next;
        }
        let delta = Delta {
            from: self.serial,
            to: now,
            changes,
        };
        next.bytes += delta.size();
        next.history.push_back(Arc::new(delta));
        while next.history.len() > HISTORY_CHANGES || next.bytes > HISTORY_BYTES {
            let Some(old) = next.history.pop_front() else { break };
            next.bytes -= old.size();
        }
        next
    }

    /// The zone's records at its serial, from the records served (`records`, sorted): the
    /// pending changes undone.
    fn at_serial(&self, records: &mut Vec<ZoneRecord>) {
        if let Some(p) = self.coalesced() {
            records.retain(|r| !p.added.contains(r));
            records.extend(p.removed.iter().cloned());
            records.sort();
        }
    }

    /// The changes from serial `from` to the current one, oldest first (empty when `from` is
    /// current); `None` when `from` is not in the history.
    pub fn changes_since(&self, from: u32) -> Option<Vec<Arc<Delta>>> {
        if from == self.serial {
            return Some(Vec::new());
        }
        let at = self.history.iter().position(|d| d.from == from)?;
        Some(self.history.range(at..).cloned().collect())
    }
}

/// The versions after a commit, from the table before it (`old`) and after it (`new`):
/// each owner name the commit touched (lower-case wire format, a wildcard as `*.suffix`:
/// [`crate::table::Commit::touched`]) adds the difference of its records between the two
/// tables ([`Table::owner_records`], the same records the zone walk gives) to its zone's
/// change. So every record a zone serves moves its version: a host's A/AAAA and SRV in its
/// zone, and the PTR RRsets of the addresses it had and has in a reverse zone (diffed as
/// served, after the [`super::PTR_MAX`] cap, whatever other hosts share the address). Zones
/// without a change keep theirs.
pub fn advance(old: &Table, new: &Table, touched: &[Arc<[u8]>], now: u32) -> Arc<[Version]> {
    let zones = new.zones();
    // Per zone, records removed and added, collected unsorted (an owner is diffed once) and
    // made sets in bulk: a large list costs no tree insertions.
    let mut per_zone: Vec<(Vec<ZoneRecord>, Vec<ZoneRecord>)> = vec![Default::default(); zones.len()];
    let mut seen: HashSet<&[u8], foldhash::fast::RandomState> = HashSet::default();
    for wire in touched {
        let zone = wire.strip_prefix(b"\x01*").unwrap_or(wire);
        let Some(i) = zone_of(zones, zone).and_then(|z| zones.iter().position(|y| y.wire == z.wire)) else {
            continue;
        };
        // A start-up zone keeps no history and is not transferred while its change waits for
        // a serial: whether it changed is all that counts, so one changed owner is enough (the
        // first load of 100 000 hosts builds no records for the history it would not keep, and
        // no set of the owners it skips).
        if old.versions()[i].fresh && !(per_zone[i].0.is_empty() && per_zone[i].1.is_empty()) {
            continue;
        }
        if !seen.insert(&wire[..]) {
            continue;
        }
        let before: Vec<ZoneRecord> = old.owner_records(wire).into_iter().map(zone_record).collect();
        let after: Vec<ZoneRecord> = new.owner_records(wire).into_iter().map(zone_record).collect();
        let (removed, added) = &mut per_zone[i];
        // Each sorted, a few records: a new owner's are all added as they are.
        removed.extend(before.iter().filter(|r| after.binary_search(r).is_err()).cloned());
        if before.is_empty() {
            added.extend(after);
        } else {
            added.extend(after.into_iter().filter(|r| before.binary_search(r).is_err()));
        }
    }
    old.versions()
        .iter()
        .zip(per_zone)
        .map(|(v, (removed, added))| {
            let change = Changes {
                removed: removed.into_iter().collect(),
                added: added.into_iter().collect(),
            };
            v.advance(change, now)
        })
        .collect()
}

/// A record of the zone walk as transfers send it.
fn zone_record(r: Record) -> ZoneRecord {
    ZoneRecord {
        owner: r.owner.into(),
        data: match r.data {
            RecordData::A(ip) => RData::A(ip),
            RecordData::Aaaa(ip) => RData::Aaaa(ip),
            RecordData::Srv { port, target } => RData::Srv {
                port,
                target: target.into(),
            },
            RecordData::Ptr(target) => RData::Ptr(target.into()),
        },
    }
}

impl Table {
    fn version(&self, zone: &Zone) -> &Version {
        let i = self
            .zones
            .iter()
            .position(|z| std::ptr::eq(z, zone) || z.wire == zone.wire);
        &self.versions[i.expect("a zone of this table")]
    }

    /// The SOA serial of `zone` (one of [`Table::zones`]).
    pub fn zone_serial(&self, zone: &Zone) -> u32 {
        self.version(zone).serial
    }

    /// The version (serial, recent changes) of `zone`.
    pub fn zone_version(&self, zone: &Zone) -> &Version {
        self.version(zone)
    }

    /// Every served zone's serial, by zone name.
    pub fn serials(&self) -> impl Iterator<Item = (&str, u32)> {
        self.zones
            .iter()
            .zip(self.versions.iter())
            .map(|(z, v)| (&*z.name, v.serial))
    }

    /// The SOA of `zone`.
    pub fn soa(&self, zone: &Zone) -> Soa {
        Soa {
            zone: zone.name.clone(),
            mname: format!("ns.dns.{}", zone.name),
            rname: format!("hostmaster.{}", zone.name),
            serial: self.zone_serial(zone),
            refresh: SOA_REFRESH,
            retry: SOA_RETRY,
            expire: SOA_EXPIRE,
            minimum: self.negative_ttl,
            ttl: self.ttl,
        }
    }

    /// The records of `zone` as a secondary holds them at its serial, SOA aside: the apex NS,
    /// then the zone walk ([`Table::records`]) without a change not yet sealed, sorted (not
    /// for the query path).
    pub fn zone_records(&self, zone: &Zone) -> Vec<ZoneRecord> {
        let ns = ZoneRecord {
            owner: zone.name.clone(),
            data: RData::Ns(format!("ns.dns.{}", zone.name).into()),
        };
        let mut records: Vec<ZoneRecord> = self.records(zone).into_iter().map(zone_record).collect();
        records.sort();
        records.dedup();
        self.version(zone).at_serial(&mut records);
        records.insert(0, ns);
        records
    }

    /// This table with its zones at `versions` (index-aligned with [`Table::zones`]).
    pub fn with_versions(mut self, versions: Arc<[Version]>) -> Self {
        self.versions = versions;
        self
    }
}

#[cfg(test)]
mod tests;
