//! Records derived from the hosts: SRV from named ports, PTR in reverse zones.
//!
//! Both are computed when a host is (at table-build time, incrementally with it: `live.rs`),
//! never per query; the answer path only writes them out.
//!
//! - **SRV** (RFC 2782, the Kubernetes and MCS DNS specifications' form): an exact host with
//!   addresses and a named port `p` gives `_<p.name>._<p.protocol>.<host>. SRV 0 100
//!   <p.number> <host>.`; one owner holds every port of that name and protocol. The host's
//!   A and AAAA records go in the additional section. Wildcards have none.
//! - **PTR**: each address of an exact host whose reverse name (`d.c.b.a.in-addr.arpa.`, or
//!   32 nibbles under `ip6.arpa.`, RFC 1035 §3.5, RFC 3596 §2.5) lies in a served reverse
//!   zone gives `<reverse name> PTR <host>.`; an owner holds every host with that address
//!   and serves the first [`PTR_MAX`] in name order. A `--default-address` is a placeholder
//!   and gives none.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{Host, Table, Zone, zone_of};
use crate::name;
use crate::serviceentry::Protocol;

/// Most PTR records served for one address.
pub const PTR_MAX: usize = 8;
/// SRV priority of every record.
pub const SRV_PRIORITY: u16 = 0;
/// SRV weight of every record.
pub const SRV_WEIGHT: u16 = 100;

/// The SRV records of one owner `_<port>._<proto>.<host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    host: Arc<Host>,
    target: Arc<[u8]>,
    ports: Box<[u16]>,
}

impl Srv {
    /// The host the records point at: its source supplied them, its addresses are the
    /// additional section.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The target, the host's name in lower-case wire format (a suffix of the owner name).
    pub fn target(&self) -> &[u8] {
        &self.target
    }

    /// The port numbers, ascending: one record each.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

/// One host a PTR owner points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PtrTarget {
    wire: Arc<[u8]>,
    source: Arc<str>,
}

impl PtrTarget {
    /// The host's name in lower-case wire format.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The source that supplied the host's addresses.
    pub fn source(&self) -> &Arc<str> {
        &self.source
    }
}

/// The PTR records of one reverse name: every exact host holding its address, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ptr {
    targets: Vec<PtrTarget>,
}

impl Ptr {
    /// The hosts served: the first [`PTR_MAX`].
    pub fn served(&self) -> &[PtrTarget] {
        &self.targets[..self.targets.len().min(PTR_MAX)]
    }

    /// Every host holding the address.
    pub fn all(&self) -> &[PtrTarget] {
        &self.targets
    }

    pub(super) fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub(super) fn insert(&mut self, wire: Arc<[u8]>, source: Arc<str>) {
        match self.targets.binary_search_by(|t| (*t.wire).cmp(&wire)) {
            Ok(at) => self.targets[at].source = source,
            Err(at) => self.targets.insert(at, PtrTarget { wire, source }),
        }
    }

    pub(super) fn remove(&mut self, wire: &[u8]) {
        if let Ok(at) = self.targets.binary_search_by(|t| (*t.wire).cmp(wire)) {
            self.targets.remove(at);
        }
    }
}

/// The SRV owners of `host` (named `wire`, lower-case wire format) with their records, by
/// owner name; none unless it is an exact host with addresses. An owner name that would
/// exceed 255 bytes, or lie in a reverse zone, is left out.
pub(super) fn srv_owners(zones: &[Zone], host: &Arc<Host>, wire: &Arc<[u8]>) -> Vec<(Vec<u8>, Srv)> {
    let mut owners: Vec<(Vec<u8>, Srv)> = Vec::new();
    if !host.has_addresses() || wire.starts_with(b"\x01*") {
        return owners;
    }
    for port in &host.ports {
        let mut owner = Vec::with_capacity(wire.len() + port.name.len() + 6);
        owner.push(port.name.len() as u8 + 1);
        owner.push(b'_');
        owner.extend_from_slice(port.name.as_bytes());
        owner.extend_from_slice(match port.protocol {
            Protocol::Tcp => b"\x04_tcp",
            Protocol::Udp => b"\x04_udp",
        });
        owner.extend_from_slice(wire);
        if owner.len() > name::MAX_WIRE_LEN || zone_of(zones, &owner).is_none_or(|z| z.reverse) {
            continue;
        }
        match owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, srv)) => {
                let mut ports = srv.ports.to_vec();
                if let Err(at) = ports.binary_search(&port.number) {
                    ports.insert(at, port.number);
                }
                srv.ports = ports.into();
            }
            None => owners.push((
                owner,
                Srv {
                    host: host.clone(),
                    target: wire.clone(),
                    ports: Box::new([port.number]),
                },
            )),
        }
    }
    owners
}

/// The reverse names of `host`'s addresses that lie in a served reverse zone; none for a
/// wildcard, a host without addresses or one with the `--default-address` placeholder.
pub(super) fn ptr_owners(zones: &[Zone], host: &Host, wire: &[u8]) -> Vec<Vec<u8>> {
    if !zones.iter().any(|z| z.reverse) || wire.starts_with(b"\x01*") || host.has_default_address() {
        return Vec::new();
    }
    host.addresses()
        .into_iter()
        .map(reverse_name)
        .filter(|owner| zone_of(zones, owner).is_some_and(|z| z.reverse))
        .collect()
}

/// The reverse name of an address in lower-case wire format: `d.c.b.a.in-addr.arpa.`, or the
/// 32 nibbles of an IPv6 address, lowest first, under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Vec<u8> {
    let mut wire = Vec::with_capacity(74);
    match ip {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                let text = octet.to_string();
                wire.push(text.len() as u8);
                wire.extend_from_slice(text.as_bytes());
            }
            wire.extend_from_slice(b"\x07in-addr\x04arpa\x00");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    wire.push(1);
                    wire.push(b"0123456789abcdef"[nibble as usize]);
                }
            }
            wire.extend_from_slice(b"\x03ip6\x04arpa\x00");
        }
    }
    wire
}

/// The address a full reverse name stands for (the inverse of [`reverse_name`]).
pub fn reverse_address(wire: &[u8]) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name::Labels::new(wire).collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if *in_addr == b"in-addr" && *arpa == b"arpa" => {
            let octet = |l: &[u8]| {
                let text = std::str::from_utf8(l).ok()?;
                (text.len() == 1 || !text.starts_with('0')).then(|| text.parse::<u8>().ok())?
            };
            Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)))
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && *ip6 == b"ip6" && *arpa == b"arpa" => {
            let mut value = 0u128;
            for label in nibbles.iter().rev() {
                let [digit] = label else { return None };
                value = value << 4 | u128::from((*digit as char).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

/// The data of one served record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// `SRV 0 100 <port> <target>.` (the target without its trailing dot).
    Srv {
        /// The port.
        port: u16,
        /// The host.
        target: String,
    },
    /// `PTR <target>.` (without the trailing dot).
    Ptr(String),
}

/// One record of a zone as a secondary would hold it (TTL `--ttl`, class IN).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    /// The owner, presentation format, lower case, no trailing dot (`*.suffix` for wildcards).
    pub owner: String,
    /// The data.
    pub data: RecordData,
}

fn text(wire: &[u8]) -> String {
    let mut t = name::to_text(wire);
    t.pop();
    t
}

impl Table {
    /// Every record of `zone` but its apex SOA and NS, sorted by owner then data: each exact
    /// host's A and AAAA, wildcard owners' as `*.suffix`, SRV and PTR records as served (a zone
    /// walk: `records`, `check`, transfers; not for the query path).
    pub fn records(&self, zone: &Zone) -> Vec<Record> {
        let mut records = Vec::new();
        let in_zone = |wire: &[u8]| zone_of(&self.zones, wire).is_some_and(|z| z.wire == zone.wire);
        for node in self.shards.iter().flat_map(|s| s.iter()).filter(|n| in_zone(&n.wire)) {
            push_owned(&mut records, &node.wire, &node.owner);
        }
        for host in self.wildcards.values().filter(|h| *h.zone == *zone.name) {
            push_addresses(&mut records, &host.name, host);
        }
        records.sort();
        records
    }

    /// The records the owner named `wire` (lower-case wire format; a wildcard as `*.suffix`)
    /// has in the zone walk ([`Table::records`]), sorted: what a change of that owner changes
    /// in its zone (for IXFR; not for the query path).
    pub fn owner_records(&self, wire: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(suffix) = wire.strip_prefix(b"\x01*") {
            if let Some(host) = self.wildcards.get(suffix) {
                push_addresses(&mut records, &host.name, host);
            }
        } else {
            let hash = self.hasher.hash_one(wire);
            if let Some(node) = self.shards[super::live::shard_of(hash)].find(hash, |n| *n.wire == *wire) {
                push_owned(&mut records, &node.wire, &node.owner);
            }
        }
        records.sort();
        records
    }
}

/// The records of an owner named `wire` (a node of the table): a host's addresses, its SRV
/// or PTR records as served (the first [`PTR_MAX`] hosts).
fn push_owned(records: &mut Vec<Record>, wire: &[u8], owner: &super::Owner) {
    let owner_text = || text(wire);
    match owner {
        super::Owner::Host(host) => push_addresses(records, &owner_text(), host),
        super::Owner::Srv(srv) => records.extend(srv.ports.iter().map(|&port| Record {
            owner: owner_text(),
            data: RecordData::Srv {
                port,
                target: text(&srv.target),
            },
        })),
        super::Owner::Ptr(ptr) => records.extend(ptr.served().iter().map(|t| Record {
            owner: owner_text(),
            data: RecordData::Ptr(text(&t.wire)),
        })),
        super::Owner::None => {}
    }
}

fn push_addresses(records: &mut Vec<Record>, owner: &str, host: &Host) {
    let a = host.a.iter().map(|ip| RecordData::A(*ip));
    let aaaa = host.aaaa.iter().map(|ip| RecordData::Aaaa(*ip));
    records.extend(a.chain(aaaa).map(|data| Record {
        owner: owner.to_owned(),
        data,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_both_ways() {
        for (ip, text) in [
            ("240.0.0.2", "2.0.0.240.in-addr.arpa."),
            ("10.0.12.255", "255.12.0.10.in-addr.arpa."),
            (
                "2001:db8::3",
                "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            ),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let wire = reverse_name(ip);
            assert_eq!(name::to_text(&wire), text);
            assert_eq!(reverse_address(&wire), Some(ip));
        }
        for not in ["1.2.3.in-addr.arpa", "01.0.0.10.in-addr.arpa", "x.ip6.arpa", "global"] {
            assert_eq!(reverse_address(&name::to_wire(not).unwrap()), None, "{not}");
        }
    }
}
