//! Records derived from the hosts: SRV from named ports, PTR in reverse zones.
//!
//! PTR owners are computed when a host is (at table-build time, incrementally with it:
//! `live.rs`); SRV owners are not stored: a lookup of `_<port>._<proto>.<host>` finds the
//! host's node and reads its named ports (sorted: a filter, no allocation, [`derive`]), which
//! saves two index names per host (the owner and `_<proto>.<host>` above it).
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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{Host, Table, Zone, zone_of};
use crate::name;
use crate::serviceentry::{Port, Protocol};

/// Most PTR records served for one address.
pub const PTR_MAX: usize = 8;
/// SRV priority of every record.
pub const SRV_PRIORITY: u16 = 0;
/// SRV weight of every record.
pub const SRV_WEIGHT: u16 = 100;

/// The SRV records of one owner `_<port>._<proto>.<host>`, derived from the host when asked
/// (no owner is stored: its name and records follow from the host's node and named ports).
#[derive(Debug, Clone, Copy)]
pub struct Srv<'a> {
    host: &'a Host,
    target: &'a [u8],
    /// The host's ports of the owner's name (adjacent: they are sorted by name, then number),
    /// of either protocol.
    named: &'a [Port],
    protocol: Protocol,
}

impl<'a> Srv<'a> {
    /// The host the records point at: its source supplied them, its addresses are the
    /// additional section.
    pub fn host(&self) -> &'a Host {
        self.host
    }

    /// The target, the host's name in lower-case wire format (a suffix of the owner name).
    pub fn target(&self) -> &'a [u8] {
        self.target
    }

    /// The port numbers, ascending (the host's ports are sorted by name, then number): one
    /// record each.
    pub fn ports(&self) -> impl Iterator<Item = u16> + Clone + 'a {
        let protocol = self.protocol;
        self.named
            .iter()
            .filter(move |p| p.protocol == protocol)
            .map(|p| p.number)
    }
}

/// What a name whose first label starts with `_` is, derived from the exact host below it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Derived<'a> {
    /// No name (as far as SRV goes).
    None,
    /// The SRV owner `_<port>._<proto>.<host>` of a named port.
    Srv(Srv<'a>),
    /// `_<proto>.<host>`, above such an owner: an empty non-terminal.
    Empty,
}

/// The protocol of an SRV owner's second label.
fn protocol(label: &[u8]) -> Option<Protocol> {
    match label {
        b"_tcp" => Some(Protocol::Tcp),
        b"_udp" => Some(Protocol::Udp),
        _ => None,
    }
}

/// The first label of a wire name and the name after it.
fn split_label(wire: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(*wire.first()?);
    Some((wire.get(1..1 + len)?, wire.get(1 + len..)?))
}

/// What the lower-case wire name `qname` (at most 255 bytes, in a forward zone) is as an
/// SRV owner or the empty non-terminal above one, `host` giving the exact host with addresses
/// named by a wire name, with its name as the index holds it.
pub(super) fn derive<'a>(qname: &[u8], host: impl Fn(&[u8]) -> Option<(&'a Host, &'a [u8])>) -> Derived<'a> {
    let Some((first, rest)) = split_label(qname) else {
        return Derived::None;
    };
    if let Some((second, below)) = split_label(rest)
        && let Some(protocol) = protocol(second)
        && let Some(name) = first.strip_prefix(b"_")
        && let Some((host, target)) = host(below)
        && let Some(start) = host.ports.iter().position(|p| p.name.as_bytes() == name)
    {
        let named = &host.ports[start..];
        let named = &named[..1 + named[1..].iter().take_while(|p| p.name.as_bytes() == name).count()];
        if named.iter().any(|p| p.protocol == protocol) {
            return Derived::Srv(Srv {
                host,
                target,
                named,
                protocol,
            });
        }
    }
    if let Some(protocol) = protocol(first)
        && let Some((host, _)) = host(rest)
        && host
            .ports
            .iter()
            .any(|p| p.protocol == protocol && qname.len() + 2 + p.name.len() <= name::MAX_WIRE_LEN)
    {
        return Derived::Empty;
    }
    Derived::None
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

/// The SRV owners of `host` (named `wire`, lower-case wire format) with their port numbers
/// (ascending), by owner name; none unless it is an exact host with addresses. An owner name
/// that would exceed 255 bytes is left out. (It lies in the host's zone, a forward one: zones
/// do not nest.)
fn srv_owners(host: &Host, wire: &[u8]) -> Vec<(Vec<u8>, Vec<u16>)> {
    let mut owners: Vec<(Vec<u8>, Vec<u16>)> = Vec::new();
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
        if owner.len() > name::MAX_WIRE_LEN {
            continue;
        }
        match owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, ports)) => {
                if let Err(at) = ports.binary_search(&port.number) {
                    ports.insert(at, port.number);
                }
            }
            None => owners.push((owner, vec![port.number])),
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
    /// has in the zone walk ([`Table::records`]) and, for an exact host, the SRV records of
    /// its owners (derived from it, in its zone: a change of the host is theirs), sorted: what
    /// a change of that owner changes in its zone (for IXFR; not for the query path).
    pub fn owner_records(&self, wire: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(suffix) = wire.strip_prefix(b"\x01*") {
            if let Some(host) = self.wildcards.get(suffix) {
                push_addresses(&mut records, &host.name, host);
            }
        } else if let Some(node) = self.node(wire) {
            push_owned(&mut records, &node.wire, &node.owner);
        } else if let Derived::Srv(srv) = self.derived(wire) {
            push_srv_records(&mut records, wire, srv.target(), srv.ports());
        }
        records.sort();
        records
    }
}

/// The SRV records of `host` (named `wire`).
fn push_srv(records: &mut Vec<Record>, host: &Host, wire: &[u8]) {
    for (owner, ports) in srv_owners(host, wire) {
        push_srv_records(records, &owner, wire, ports.into_iter());
    }
}

/// The SRV records of the owner named `owner`, one per port, pointing at `target` (both
/// lower-case wire format).
fn push_srv_records(records: &mut Vec<Record>, owner: &[u8], target: &[u8], ports: impl Iterator<Item = u16>) {
    let owner = text(owner);
    let target = text(target);
    records.extend(ports.map(|port| Record {
        owner: owner.clone(),
        data: RecordData::Srv {
            port,
            target: target.clone(),
        },
    }));
}

/// The records of an owner named `wire` (a node of the table): a host's addresses and the
/// SRV records derived from it, or its PTR records as served (the first [`PTR_MAX`] hosts).
fn push_owned(records: &mut Vec<Record>, wire: &[u8], owner: &super::Owner) {
    let owner_text = || text(wire);
    match owner {
        super::Owner::Host(host) => {
            push_addresses(records, &owner_text(), host);
            push_srv(records, host, wire);
        }
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
