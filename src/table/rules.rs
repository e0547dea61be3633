//! The per-host rules of DESIGN.md "ServiceEntry → records", pure: which hosts an entry
//! names, a host's records within one source, and how sources merge. [`Live`](super::Live)
//! applies them to the hosts a change touches.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{AutoAllocate, Conflict, ExportMode, Host, Origin, Rule, Skipped, TableSettings, Zone, allocate};
use crate::name;
use crate::serviceentry::{Entry, Export, Port, normalize_host};

/// Addresses from `--auto-allocate istio-legacy`, keyed `namespace/host` (host as written).
pub(super) type Allocation = HashMap<String, (Ipv4Addr, Ipv6Addr)>;

/// A host's records within one source, growing; [`merge`] makes the [`Host`] of the winner.
pub(super) struct Acc<'e> {
    name: &'e str,
    zone: Arc<str>,
    source: Arc<str>,
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    origins: Vec<Origin>,
    /// The named ports of the entries that gave it addresses (their union, sorted).
    served_ports: Vec<Port>,
    /// Per origin: may it get `--default-address` (resolution is not NONE)?
    fallback: Vec<bool>,
    /// Per origin: the ports of its entry.
    ports: Vec<&'e [Port]>,
}

impl<'e> Acc<'e> {
    fn add(&mut self, addresses: &[IpAddr]) {
        for ip in addresses {
            match ip {
                IpAddr::V4(a) if !self.a.contains(a) => self.a.push(*a),
                IpAddr::V6(a) if !self.aaaa.contains(a) => self.aaaa.push(*a),
                _ => {}
            }
        }
    }

    fn has_addresses(&self) -> bool {
        !self.a.is_empty() || !self.aaaa.is_empty()
    }

    /// Every address, v4 first.
    fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.a.iter().map(|a| IpAddr::V4(*a));
        v4.chain(self.aaaa.iter().map(|a| IpAddr::V6(*a))).collect()
    }

    /// The host, its lists copied to their length (a table holds it for long). Copied, not
    /// shrunk in place: shrinking leaves the rest of a vector's block free between blocks held
    /// for long (a hole a host, which the allocator cannot return), where a copy leaves the
    /// growing vector's whole block to the next host's.
    fn into_host(self, conflicts: Vec<Conflict>) -> Host {
        Host {
            name: self.name.to_owned(),
            zone: self.zone,
            a: self.a[..].into(),
            aaaa: self.aaaa[..].into(),
            source: self.source,
            origins: self.origins[..].into(),
            conflicts: conflicts.into(),
            ports: self.served_ports[..].into(),
        }
    }
}

fn visible(entry: &Entry, settings: &TableSettings) -> bool {
    let exported = match settings.export {
        ExportMode::Mesh => entry.export == Export::Mesh,
        ExportMode::All => entry.export != Export::Nowhere,
    };
    exported && !(settings.skip_resolution_none && entry.resolution_none)
}

/// Whether Istio's legacy allocator gives `entry`'s `host` a VIP.
fn allocatable(entry: &Entry, host: &str) -> bool {
    !entry.resolution_none && !entry.spec_addresses_given && !host.starts_with('*')
}

/// Istio's allocation over every entry of a source (visible or not, in a served zone or
/// not: istiod counts them all); empty unless `--auto-allocate istio-legacy`.
pub(super) fn allocation<'e>(settings: &TableSettings, entries: impl Iterator<Item = &'e Entry>) -> Allocation {
    if settings.auto_allocate == AutoAllocate::None {
        return Allocation::new();
    }
    let mut services: Vec<(&Entry, &str)> = entries
        .flat_map(|e| e.hosts.iter().map(move |h| (e, h.as_str())))
        .filter(|(e, h)| allocatable(e, h))
        .collect();
    // model.SortServicesByCreationTime: creation time, then host name, then namespace (stable).
    services.sort_by(|(a, ah), (b, bh)| {
        a.created
            .cmp(&b.created)
            .then_with(|| ah.cmp(bh))
            .then_with(|| a.id.namespace.cmp(&b.id.namespace))
    });
    let keys: Vec<String> = services
        .iter()
        .map(|(e, h)| format!("{}/{h}", e.id.namespace))
        .collect();
    allocate::allocate(keys.iter().map(String::as_str))
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The hosts of `entry` the table serves (each once, lower-case wire format), and those Istio
/// accepts that DNS cannot serve. An entry hidden by `exportTo` or `--skip-resolution-none`
/// names none.
pub(super) fn named_hosts(settings: &TableSettings, source: &Arc<str>, entry: &Entry) -> (Vec<Vec<u8>>, Vec<Skipped>) {
    let (mut named, mut skipped) = (Vec::<Vec<u8>>::new(), Vec::new());
    if !visible(entry, settings) {
        return (named, skipped);
    }
    for written in &entry.hosts {
        let host = normalize_host(written);
        let skip = |host: String, reason| Skipped {
            source: source.clone(),
            entry: entry.id.clone(),
            host,
            reason,
        };
        let Some(wire) = name::to_wire(&host) else {
            skipped.push(skip(host, "not a domain name"));
            continue;
        };
        let Some(zone) = super::zone_of(settings.zones(), &wire) else {
            continue; // outside every served zone: not ours
        };
        if zone.reverse {
            skipped.push(skip(
                host,
                "in a reverse zone, which holds only the PTR records of the table's addresses",
            ));
            continue;
        }
        if host.starts_with('*') && !host.starts_with("*.") {
            skipped.push(skip(host, "partial wildcard (`*foo.`) has no DNS equivalent"));
            continue;
        }
        if !named.contains(&wire) {
            named.push(wire);
        }
    }
    (named, skipped)
}

/// One source's records for `host` (normalized) from the entries naming it, in the source's
/// order: rules 1–3 of DESIGN.md, the union of every entry's addresses.
pub(super) fn source_host<'e>(
    settings: &TableSettings,
    source: &Arc<str>,
    host: &'e str,
    zone: &Zone,
    entries: impl Iterator<Item = &'e Entry>,
    allocated: &Allocation,
) -> Acc<'e> {
    let mut acc = Acc {
        name: host,
        zone: zone.name.clone(),
        source: source.clone(),
        a: Vec::new(),
        aaaa: Vec::new(),
        origins: Vec::new(),
        served_ports: Vec::new(),
        fallback: Vec::new(),
        ports: Vec::new(),
    };
    for entry in entries {
        let names_host = |w: &&String| w.strip_suffix('.').unwrap_or(w).eq_ignore_ascii_case(host);
        for written in entry.hosts.iter().filter(names_host) {
            let (addresses, rule): (Vec<IpAddr>, Rule) = if !entry.addresses.is_empty() {
                (entry.addresses.to_vec(), Rule::SpecAddresses)
            } else {
                let status: Vec<IpAddr> = entry
                    .status_addresses
                    .iter()
                    .filter(|(h, _)| h == host)
                    .map(|(_, ip)| *ip)
                    .collect();
                let vip = allocated
                    .get(&format!("{}/{written}", entry.id.namespace))
                    .filter(|_| allocatable(entry, written));
                match (status.is_empty(), vip) {
                    (false, _) => (status, Rule::StatusAddresses),
                    (true, Some((v4, v6))) => (vec![IpAddr::V4(*v4), IpAddr::V6(*v6)], Rule::Allocated),
                    (true, None) => (status, Rule::NoAddress),
                }
            };
            acc.add(&addresses);
            acc.origins.push(Origin {
                entry: entry.id.clone(),
                rule,
            });
            acc.fallback.push(!entry.resolution_none);
            acc.ports.push(&entry.ports);
        }
    }
    // Rule 3: a host that no entry gave an address gets the default address, unless every
    // entry naming it has resolution NONE (those are never allocated one).
    if let Some(default) = settings.default_address
        && !acc.has_addresses()
        && acc.fallback.contains(&true)
    {
        acc.add(&[default]);
        for (origin, fallback) in acc.origins.iter_mut().zip(&acc.fallback) {
            if *fallback {
                origin.rule = Rule::DefaultAddress;
            }
        }
    }
    // SRV: the named ports of the entries that gave the host its addresses, their union.
    if !host.starts_with('*') {
        let supplying = acc
            .origins
            .iter()
            .zip(&acc.ports)
            .filter(|(o, _)| o.rule != Rule::NoAddress);
        let mut ports: Vec<Port> = supplying.flat_map(|(_, ports)| ports.iter().cloned()).collect();
        ports.sort();
        ports.dedup();
        acc.served_ports = ports;
    }
    acc
}

/// One host across sources, highest precedence first: the highest source that has addresses
/// wins, and a lower one with other addresses is a [`Conflict`]. A host no source gives
/// addresses is kept (for operators) but is no name in DNS. `None` when no source names it.
pub(super) fn merge<'e>(accs: impl IntoIterator<Item = Acc<'e>>) -> Option<Host> {
    let mut accs = accs.into_iter();
    let mut won = accs.next()?;
    let mut conflicts = Vec::new();
    for acc in accs {
        if !acc.has_addresses() {
            continue;
        }
        if !won.has_addresses() {
            won = acc;
        } else if !same_set(&won.addresses(), &acc.addresses()) {
            let conflict = Conflict {
                host: won.name.to_owned(),
                winner: won.source.clone(),
                winner_addresses: won.addresses(),
                loser: acc.source.clone(),
                loser_addresses: acc.addresses(),
            };
            conflicts.push(conflict);
        }
    }
    Some(won.into_host(conflicts))
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}
