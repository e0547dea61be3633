//! The compiled name table: an immutable snapshot of every served name.
//!
//! Kept current change by change by [`Live`] (the registry's; [`Live::build`] is a fresh `Live`
//! fed every source's entries), published as a whole snapshot (through `ArcSwap`, by the
//! registry) that shares every unchanged shard with the one before, and only read by the
//! answer path: one hash lookup for the query name, a few more for wildcards, no lock, no
//! allocation. What a host's records are (DESIGN.md "ServiceEntry → records") is decided by
//! pure per-host rules (`table/rules.rs`) under the [`TableSettings`] (`table/settings.rs`);
//! `Live` applies them to the hosts each change names.
//!
//! Invariants of every table, published or built:
//! - every host lies in exactly one zone, the most specific served zone containing it, and
//!   never in a reverse zone (`in-addr.arpa.`, `ip6.arpa.`), which holds only PTR records;
//! - the records derived from hosts ([`derived`]): each PTR owner in a reverse zone holds the
//!   hosts holding its address, computed in the commit that changes a host (never per query);
//!   SRV owners `_<port>._<proto>.<host>` and the empty non-terminals `_<proto>.<host>` above
//!   them are not stored (two index names per host): no index name starts with `_` (hosts
//!   are DNS-1123 names), so the lookup of one finds the host below it, whose sorted named
//!   ports are the records, with no allocation;
//! - a name exists only where it owns records or lies above a name that does (RFC 1034 §3.1,
//!   RFC 8020): a host that no rule gives an address, and a wildcard without addresses, are
//!   kept for operators ([`Table::hosts`]) but are no names (NXDOMAIN) and make no empty
//!   non-terminals;
//! - every proper ancestor of an owner of records (a host with addresses, wildcard owners
//!   included, an SRV or a PTR owner) down to its zone apex is an empty non-terminal unless
//!   it owns records itself, so it answers NODATA, never NXDOMAIN (RFC 8020 resolvers would
//!   otherwise drop the whole subtree);
//! - which sources are stale is part of the snapshot ([`Table::with_stale`]): the answer path
//!   reads it with the table, per query, without a lock; it changes no serial.
//! - host and zone names are lower-case wire format; answers echo the query's own case.

mod ahead;
mod allocate;
pub mod derived;
mod live;
mod rules;
mod settings;
#[cfg(test)]
pub(crate) mod testing;
mod zone;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::Serialize;

use crate::name;
use crate::serviceentry::{EntryId, Port};

pub use ahead::{AHEAD, AHEAD_FROM_HOSTS, Ahead};
use derived::Derived;
pub use derived::{PTR_MAX, Ptr, PtrTarget, Record, RecordData, Srv};
use live::Owner;
pub use live::{Commit, Live, Source, SourceInput};
pub use settings::{AutoAllocate, ExportMode, SettingsError, TableSettings};
pub use zone::{Changes, Delta, HISTORY_BYTES, HISTORY_CHANGES, RData, Soa, Version, ZoneRecord, advance, serial_gt};

/// SOA REFRESH of every zone (unused without secondaries; a conventional value).
pub const SOA_REFRESH: u32 = 3600;
/// SOA RETRY.
pub const SOA_RETRY: u32 = 600;
/// SOA EXPIRE.
pub const SOA_EXPIRE: u32 = 86400;
/// First labels of the name server named in the apex NS and SOA MNAME: `ns.dns.<zone>`.
pub const NS_LABELS: &[u8] = b"\x02ns\x03dns";
/// First label of the SOA RNAME: `hostmaster.<zone>`.
pub const HOSTMASTER_LABEL: &[u8] = b"\x0ahostmaster";

type Map<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// A served zone.
#[derive(Debug, Clone, Serialize)]
pub struct Zone {
    /// Presentation name, lower case, no trailing dot (`global`).
    pub name: Arc<str>,
    /// A reverse zone (at or below `in-addr.arpa` or `ip6.arpa`): it holds only the PTR
    /// records of the table's addresses; ServiceEntry hosts inside it are ignored.
    pub reverse: bool,
    #[serde(skip)]
    pub(crate) wire: Box<[u8]>,
}

impl Zone {
    /// The apex in lower-case wire format.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

/// The zone of a lower-case wire name: the first of `zones` (most specific first) holding it.
pub(crate) fn zone_of<'z>(zones: &'z [Zone], wire: &[u8]) -> Option<&'z Zone> {
    zones.iter().find(|z| name::suffix_offset(wire, &z.wire).is_some())
}

/// A served host name with its records and where they came from.
///
/// Held for as long as it is served (100 000 of them at scale), so its lists are boxed
/// slices, without a vector's capacity: 152 bytes with its `Arc` header instead of 192.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Presentation name, lower case, no trailing dot; wildcards start with `*.`.
    pub name: String,
    /// The zone it is served in.
    pub zone: Arc<str>,
    /// A records.
    pub a: Box<[Ipv4Addr]>,
    /// AAAA records.
    pub aaaa: Box<[Ipv6Addr]>,
    /// The source whose addresses are served (the first source, if none has addresses).
    pub source: Arc<str>,
    /// The entries of that source that name the host, each with the rule that gave it addresses.
    pub origins: Box<[Origin]>,
    /// Lower sources that give the host other addresses.
    #[serde(skip)]
    pub conflicts: Box<[Conflict]>,
    /// Named ports of the entries that gave it its addresses (their union, sorted): one SRV
    /// record each, `_<name>._<protocol>.<host>`. Always empty for wildcards, which have none.
    pub ports: Box<[Port]>,
}

impl Host {
    /// Whether any rule gave it an address: only then is it a name in DNS.
    pub fn has_addresses(&self) -> bool {
        !self.a.is_empty() || !self.aaaa.is_empty()
    }

    /// Whether its address is `--default-address`, a placeholder shared by every entry
    /// without one: such a host gets no PTR record.
    pub fn has_default_address(&self) -> bool {
        self.origins.iter().any(|o| o.rule == Rule::DefaultAddress)
    }

    /// Every address, v4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.a.iter().map(|a| IpAddr::V4(*a));
        v4.chain(self.aaaa.iter().map(|a| IpAddr::V6(*a))).collect()
    }
}

/// One entry that names a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// `namespace/name` of the entry.
    #[serde(serialize_with = "serialize_display")]
    pub entry: EntryId,
    /// The rule that gave it addresses.
    pub rule: Rule,
}

fn serialize_display<S: serde::Serializer>(v: &EntryId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Which rule of DESIGN.md "ServiceEntry → records" gave an entry's addresses for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `spec.addresses`.
    SpecAddresses,
    /// `status.addresses` written by Istio's allocator.
    StatusAddresses,
    /// `--auto-allocate istio-legacy`.
    Allocated,
    /// `--default-address`.
    DefaultAddress,
    /// None: the entry names the host but gives it no address.
    NoAddress,
}

/// The same host with different addresses in two sources; the higher source wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Conflict {
    /// The host.
    pub host: String,
    /// The source whose addresses are served.
    pub winner: Arc<str>,
    /// The addresses served.
    pub winner_addresses: Vec<IpAddr>,
    /// The lower source that disagrees.
    pub loser: Arc<str>,
    /// Its addresses, not served.
    pub loser_addresses: Vec<IpAddr>,
}

/// A host left out of the table, and why (not an invalid entry: Istio accepts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The source.
    pub source: Arc<str>,
    /// The entry.
    #[serde(serialize_with = "serialize_display")]
    pub entry: EntryId,
    /// The host.
    pub host: String,
    /// Why it is not served.
    pub reason: &'static str,
}

/// The immutable snapshot the answer path reads; cheap to make from a [`Live`] table (its
/// shards are shared, not copied).
#[derive(Debug, Clone)]
pub struct Table {
    zones: Arc<[Zone]>,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Arc<live::Shard>>,
    wildcards: Arc<Map<Arc<Host>>>,
    host_count: usize,
    conflict_count: usize,
    skipped: Arc<[Skipped]>,
    ttl: u32,
    /// Each zone's serial and recent changes, index-aligned with `zones`.
    versions: Arc<[Version]>,
    negative_ttl: u32,
    synced: bool,
    /// Names of the sources that are stale (serving last known entries): almost always none.
    stale: Arc<[Arc<str>]>,
}

/// What the table knows of a (lower-case wire) query name.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// In no served zone.
    OutOfZone,
    /// The name exists: a host (exact or by wildcard), an SRV or PTR owner, an empty
    /// non-terminal or an apex. At most one of `host`, `srv`, `ptr` is given.
    Exists {
        /// Its zone.
        zone: &'a Zone,
        /// The host whose A and AAAA records the name has, if any (it has addresses).
        host: Option<&'a Host>,
        /// The SRV records the name owns, if any.
        srv: Option<Srv<'a>>,
        /// The PTR records the name owns, if any (in a reverse zone).
        ptr: Option<&'a Ptr>,
        /// Whether the name is the zone apex.
        apex: bool,
        /// The A and AAAA records of `host` (none without one), read where they are
        /// cheapest to reach.
        addresses: Addresses<'a>,
    },
    /// In a served zone, but no such name.
    NxDomain {
        /// Its zone.
        zone: &'a Zone,
    },
}

/// A name's A and AAAA records as the answer path reads them: from the index's own line
/// when they fit there (a host with few addresses), else from the host.
#[derive(Debug, Clone, Copy)]
pub struct Addresses<'a> {
    /// The node's inline addresses, if the name is a host of the index.
    inline: Option<&'a live::Inline>,
    /// Where records not inline are read (`None`: no records).
    host: Option<&'a Host>,
}

impl<'a> Addresses<'a> {
    /// No records.
    pub const NONE: Addresses<'static> = Addresses {
        inline: None,
        host: None,
    };

    /// The records of `host`, read from it.
    pub fn of(host: &'a Host) -> Self {
        Addresses {
            inline: None,
            host: Some(host),
        }
    }

    /// The A records in network byte order.
    #[inline]
    pub fn a(&self) -> Octets<'a, Ipv4Addr, 4> {
        match self.inline.and_then(live::Inline::a) {
            Some(a) => Octets::Inline(a.iter()),
            None => Octets::Host(self.host.map_or(&[][..], |h| &h.a).iter()),
        }
    }

    /// The AAAA records in network byte order.
    #[inline]
    pub fn aaaa(&self) -> Octets<'a, Ipv6Addr, 16> {
        match self.inline.and_then(live::Inline::aaaa) {
            Some(aaaa) => Octets::Inline(aaaa.iter()),
            None => Octets::Host(self.host.map_or(&[][..], |h| &h.aaaa).iter()),
        }
    }
}

/// An address in network byte order (`N` bytes).
pub trait ToOctets<const N: usize> {
    /// Its bytes.
    fn to_octets(&self) -> [u8; N];
}

impl ToOctets<4> for Ipv4Addr {
    fn to_octets(&self) -> [u8; 4] {
        self.octets()
    }
}

impl ToOctets<16> for Ipv6Addr {
    fn to_octets(&self) -> [u8; 16] {
        self.octets()
    }
}

/// The addresses of [`Addresses::a`] or [`Addresses::aaaa`], as bytes.
#[derive(Debug, Clone)]
pub enum Octets<'a, T, const N: usize> {
    /// From the index.
    Inline(std::slice::Iter<'a, [u8; N]>),
    /// From the host.
    Host(std::slice::Iter<'a, T>),
}

impl<T: ToOctets<N>, const N: usize> Iterator for Octets<'_, T, N> {
    type Item = [u8; N];

    #[inline]
    fn next(&mut self) -> Option<[u8; N]> {
        match self {
            Octets::Inline(it) => it.next().copied(),
            Octets::Host(it) => it.next().map(ToOctets::to_octets),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Octets::Inline(it) => it.size_hint(),
            Octets::Host(it) => it.size_hint(),
        }
    }
}

impl<T: ToOctets<N>, const N: usize> ExactSizeIterator for Octets<'_, T, N> {}

impl Table {
    /// Looks up a lower-case wire name (DESIGN.md: exact host, SRV or PTR owner, then the most
    /// specific wildcard, then empty non-terminal or apex, else NXDOMAIN; hosts and wildcards
    /// without addresses are passed over, as no names).
    pub fn lookup(&self, qname: &[u8]) -> Lookup<'_> {
        let Some((zone, apex_at)) = self
            .zones
            .iter()
            .find_map(|z| name::suffix_offset(qname, &z.wire).map(|at| (z, at)))
        else {
            return Lookup::OutOfZone;
        };
        let apex = apex_at == 0;
        // No index name starts with `_` (hosts are DNS-1123 names): such a name is an SRV
        // owner or the empty non-terminal above one, derived from the host below it, or none.
        let derived = qname.get(1) == Some(&b'_') && !zone.reverse;
        let node = if derived { None } else { self.node(qname) };
        let exists = |host, srv, ptr, addresses| Lookup::Exists {
            zone,
            host,
            srv,
            ptr,
            apex,
            addresses,
        };
        if let Some(n) = node {
            // The node's line says whether the host has addresses: the host is not read.
            match &n.owner {
                Owner::Host(host) if n.addresses.any() => {
                    let addresses = Addresses {
                        inline: Some(&n.addresses),
                        host: Some(host),
                    };
                    return exists(Some(host), None, None, addresses);
                }
                Owner::Ptr(ptr) => return exists(None, None, Some(ptr), Addresses::NONE),
                _ => {}
            }
        }
        let mut empty = false;
        if derived {
            match self.derived(qname) {
                Derived::Srv(srv) => return exists(None, Some(srv), None, Addresses::NONE),
                Derived::Empty => empty = true,
                Derived::None => {}
            }
        }
        if !self.wildcards.is_empty() && !zone.reverse {
            let wild = name::label_starts(qname)
                .skip(1)
                .take_while(|&start| start <= apex_at)
                .find_map(|start| self.wildcards.get(&qname[start..]).filter(|h| h.has_addresses()));
            if let Some(host) = wild {
                return exists(Some(host), None, None, Addresses::of(host));
            }
        }
        if apex || empty || node.is_some_and(|n| n.below > 0) {
            return exists(None, None, None, Addresses::NONE);
        }
        Lookup::NxDomain { zone }
    }

    /// The node of the index named `wire`.
    #[inline]
    fn node(&self, wire: &[u8]) -> Option<&live::Node> {
        let hash = self.hasher.hash_one(wire);
        self.shards[live::shard_of(hash)].find(hash, |n| n.is(wire))
    }

    /// What `qname` (in a forward zone) is as an SRV owner or the empty non-terminal above
    /// one: derived from the exact host with addresses below it ([`derived::derive`]).
    fn derived(&self, qname: &[u8]) -> Derived<'_> {
        derived::derive(qname, |wire| match self.node(wire) {
            Some(n) if n.addresses.any() => n.owner.host().map(|h| (&**h, &n.wire[..])),
            _ => None,
        })
    }

    /// The host named exactly `wire` (a wildcard as `*.suffix`), with or without addresses:
    /// what `explain` tells of a name (not for the query path).
    pub fn host(&self, wire: &[u8]) -> Option<&Host> {
        if let Some(suffix) = wire.strip_prefix(b"\x01*") {
            return self.wildcards.get(suffix).map(|h| &**h);
        }
        match &self.node(wire)?.owner {
            Owner::Host(host) => Some(host),
            _ => None,
        }
    }

    /// The wildcard host that would answer `wire`, addresses or not: the most specific
    /// `*.suffix` it lies below within its zone (not for the query path).
    pub fn wildcard_for(&self, wire: &[u8]) -> Option<&Host> {
        let zone = zone_of(&self.zones, wire)?;
        let apex_at = wire.len() - zone.wire.len();
        name::label_starts(wire)
            .skip(1)
            .take_while(|&start| start <= apex_at)
            .find_map(|start| self.wildcards.get(&wire[start..]).map(|h| &**h))
    }

    /// TTL of every record.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Each zone's serial and recent changes, index-aligned with [`Table::zones`].
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// SOA MINIMUM of every zone (`--negative-ttl`); negative answers carry the SOA with TTL
    /// min(SOA TTL, MINIMUM) (RFC 2308 §3, §5).
    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// The same table with `stale` as the names of the stale sources (the registry publishes
    /// it so when a source's staleness changes: the serial stays).
    pub fn with_stale(mut self, stale: Arc<[Arc<str>]>) -> Self {
        self.stale = stale;
        self
    }

    /// Whether the source named `source` (a host's `source`) is stale: its last known entries
    /// are served. No lock, no allocation; with no stale source, one length check.
    pub fn is_stale(&self, source: &str) -> bool {
        !self.stale.is_empty() && self.stale.iter().any(|s| **s == *source)
    }

    /// Whether any source is stale: a negative answer may then be wrong. Every source may hold
    /// names of every zone, and a stale one may have gained names we have not heard of, so
    /// this is "any source of the zone" for every zone.
    pub fn any_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// The names of the stale sources.
    pub fn stale(&self) -> &[Arc<str>] {
        &self.stale
    }

    /// Whether the local cluster has synced once; before that in-zone queries get SERVFAIL.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The served zones, most specific first.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Number of hosts, wildcards and hosts without addresses included (as [`Table::hosts`]).
    pub fn host_count(&self) -> usize {
        self.host_count
    }

    /// Every host, sorted by name, those without addresses (no names in DNS) included: what
    /// operators see (walks the whole table: not for the query path).
    pub fn hosts(&self) -> Vec<&Host> {
        let names = self
            .shards
            .iter()
            .flat_map(|s| s.iter())
            .filter_map(|n| match &n.owner {
                Owner::Host(host) => Some(&**host),
                _ => None,
            });
        let mut hosts: Vec<&Host> = names.chain(self.wildcards.values().map(|h| &**h)).collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        hosts
    }

    /// Number of conflicts.
    pub fn conflict_count(&self) -> usize {
        self.conflict_count
    }

    /// Hosts with different addresses in different sources, by host.
    pub fn conflicts(&self) -> Vec<&Conflict> {
        self.hosts().into_iter().flat_map(|h| &h.conflicts).collect()
    }

    /// Hosts Istio accepts that DNS cannot serve.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }
}

#[cfg(test)]
mod tests;
