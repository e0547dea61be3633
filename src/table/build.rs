//! Entries → table: the rules of DESIGN.md "ServiceEntry → records", as one pure function.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use thiserror::Error;

use super::live::{Live, Source};
use super::{Conflict, Host, Origin, Rule, Skipped, Table, Zone, allocate};
use crate::name;
use crate::serviceentry::{Entry, Export, Port, normalize_host};

/// Which entries `exportTo` lets us serve (`--export-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExportMode {
    /// Entries visible mesh-wide: empty `exportTo` or one containing `*`.
    #[default]
    Mesh,
    /// Every entry except those exported to `~` (nowhere).
    All,
}

/// Addresses for entries that have none (`--auto-allocate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AutoAllocate {
    /// No allocation: `--default-address`, else no address.
    #[default]
    None,
    /// Istio 1.17–1.24's hash allocation, bit for bit, per source.
    IstioLegacy,
}

/// What shapes the table besides the entries themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSettings {
    zones: Vec<Zone>,
    /// TTL of every answer and of the SOA (`--ttl`).
    pub ttl: u32,
    /// SOA MINIMUM of every zone, the TTL of negative answers when lower than `ttl`
    /// (`--negative-ttl`, RFC 2308 §4).
    pub negative_ttl: u32,
    /// `--export-to`.
    pub export: ExportMode,
    /// `--skip-resolution-none`.
    pub skip_resolution_none: bool,
    /// `--default-address`.
    pub default_address: Option<IpAddr>,
    /// `--auto-allocate`.
    pub auto_allocate: AutoAllocate,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.wire == other.wire
    }
}
impl Eq for Zone {}

/// A `--zone` that cannot be served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    /// Not a domain name.
    #[error("zone {0:?} is not a valid domain name")]
    BadZone(String),
    /// The root zone would swallow every name, so nothing would ever be forwarded.
    #[error("the root zone cannot be served: name the zones to answer, such as `global`")]
    RootZone,
    /// No zone at all.
    #[error("at least one --zone is needed")]
    NoZone,
    /// A zone under `arpa` that is no address prefix: it would answer NXDOMAIN for reverse
    /// names it holds no PTR for (`in-addr.arpa` for every IPv4 address, 10/8 included).
    #[error(
        "zone {0:?} is no reverse zone of an address prefix: name one like 240.in-addr.arpa (1 to 4 labels 0-255) or 8.b.d.0.1.0.0.2.ip6.arpa (1 to 32 hex nibbles)"
    )]
    BadReverseZone(String),
    /// One zone inside another: the inner one's names would never be the outer one's, and
    /// neither zone would be whole (its SOA, transfers).
    #[error("zone {inner:?} lies inside zone {outer:?}: serve one of them")]
    NestedZones {
        /// The zone inside.
        inner: String,
        /// The zone around it.
        outer: String,
    },
}

/// Whether `zone` (lower case, no trailing dot) is fit to serve as far as `arpa` goes: not
/// `arpa` or above a reverse tree, and under `in-addr.arpa` / `ip6.arpa` an address prefix
/// (RFC 1035 §3.5: decimal octets 0-255 without leading zeros; RFC 3596 §2.5: one hex nibble
/// a label).
fn reverse_prefix_ok(zone: &str) -> bool {
    let labels: Vec<&str> = zone.split('.').collect();
    match labels.as_slice() {
        [prefix @ .., "in-addr", "arpa"] => {
            (1..=4).contains(&prefix.len())
                && prefix
                    .iter()
                    .all(|l| l.parse::<u8>().is_ok_and(|n| n.to_string() == *l))
        }
        [prefix @ .., "ip6", "arpa"] => {
            (1..=32).contains(&prefix.len())
                && prefix
                    .iter()
                    .all(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        ["arpa"] => false,
        _ => true,
    }
}

impl TableSettings {
    /// Settings serving `zones` with the defaults of the command line.
    pub fn new<S: AsRef<str>>(zones: &[S]) -> Result<Self, SettingsError> {
        let mut parsed: Vec<Zone> = Vec::new();
        for z in zones {
            let z = z.as_ref();
            let wire = name::to_wire(z).ok_or_else(|| SettingsError::BadZone(z.into()))?;
            if wire.len() == 1 {
                return Err(SettingsError::RootZone);
            }
            let reverse = [&b"\x07in-addr\x04arpa\x00"[..], b"\x03ip6\x04arpa\x00"]
                .iter()
                .any(|arpa| name::suffix_offset(&wire, arpa).is_some());
            let zone = Zone {
                name: name::to_text(&wire).trim_end_matches('.').into(),
                reverse,
                wire: wire.into(),
            };
            if !reverse_prefix_ok(&zone.name) {
                return Err(SettingsError::BadReverseZone(z.into()));
            }
            let nested = |o: &Zone| {
                o.wire != zone.wire
                    && (name::suffix_offset(&o.wire, &zone.wire).is_some()
                        || name::suffix_offset(&zone.wire, &o.wire).is_some())
            };
            if let Some(other) = parsed.iter().find(|o| nested(o)) {
                let (inner, outer) = if other.wire.len() > zone.wire.len() {
                    (other, &zone)
                } else {
                    (&zone, other)
                };
                return Err(SettingsError::NestedZones {
                    inner: inner.name.to_string(),
                    outer: outer.name.to_string(),
                });
            }
            if !parsed.contains(&zone) {
                parsed.push(zone);
            }
        }
        if parsed.is_empty() {
            return Err(SettingsError::NoZone);
        }
        // Longest first (zones do not nest, so this only fixes an order).
        parsed.sort_by(|a, b| b.wire.len().cmp(&a.wire.len()).then(a.wire.cmp(&b.wire)));
        Ok(TableSettings {
            zones: parsed,
            ttl: 30,
            negative_ttl: 5,
            export: ExportMode::Mesh,
            skip_resolution_none: false,
            default_address: None,
            auto_allocate: AutoAllocate::None,
        })
    }

    /// The served zones, most specific first.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
}

/// One source's entries; sources are given in precedence order, highest first.
#[derive(Debug, Clone, Copy)]
pub struct SourceInput<'a> {
    /// Name of the source (a cluster ID, or `files`).
    pub name: &'a Arc<str>,
    /// Its entries.
    pub entries: &'a [Entry],
}

/// Addresses from `--auto-allocate istio-legacy`, keyed `namespace/host` (host as written).
pub(super) type Allocation = HashMap<String, (Ipv4Addr, Ipv6Addr)>;

/// A host's records within one source.
pub(super) struct Acc<'e> {
    host: Host,
    /// Per origin: may it get `--default-address` (resolution is not NONE)?
    fallback: Vec<bool>,
    /// Per origin: the ports of its entry.
    ports: Vec<&'e [Port]>,
}

impl Acc<'_> {
    fn add(&mut self, addresses: &[IpAddr]) {
        for ip in addresses {
            match ip {
                IpAddr::V4(a) if !self.host.a.contains(a) => self.host.a.push(*a),
                IpAddr::V6(a) if !self.host.aaaa.contains(a) => self.host.aaaa.push(*a),
                _ => {}
            }
        }
    }
    fn has_addresses(&self) -> bool {
        self.host.has_addresses()
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
        let Some(zone) = super::zone_of(&settings.zones, &wire) else {
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
    host: &str,
    zone: &Zone,
    entries: impl Iterator<Item = &'e Entry>,
    allocated: &Allocation,
) -> Acc<'e> {
    let mut acc = Acc {
        host: Host {
            name: host.to_owned(),
            zone: zone.name.clone(),
            a: Vec::new(),
            aaaa: Vec::new(),
            source: source.clone(),
            origins: Vec::new(),
            conflicts: Vec::new(),
            ports: Vec::new(),
        },
        fallback: Vec::new(),
        ports: Vec::new(),
    };
    for entry in entries {
        let names_host = |w: &&String| w.strip_suffix('.').unwrap_or(w).eq_ignore_ascii_case(host);
        for written in entry.hosts.iter().filter(names_host) {
            let (addresses, rule): (Vec<IpAddr>, Rule) = if !entry.addresses.is_empty() {
                (entry.addresses.clone(), Rule::SpecAddresses)
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
            acc.host.origins.push(Origin {
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
        for (origin, fallback) in acc.host.origins.iter_mut().zip(&acc.fallback) {
            if *fallback {
                origin.rule = Rule::DefaultAddress;
            }
        }
    }
    // SRV: the named ports of the entries that gave the host its addresses, their union.
    if !host.starts_with('*') {
        let supplying = acc
            .host
            .origins
            .iter()
            .zip(&acc.ports)
            .filter(|(o, _)| o.rule != Rule::NoAddress);
        let mut ports: Vec<Port> = supplying.flat_map(|(_, ports)| ports.iter().cloned()).collect();
        ports.sort();
        ports.dedup();
        acc.host.ports = ports;
    }
    acc
}

/// One host across sources, highest precedence first: the highest source that has addresses
/// wins, and a lower one with other addresses is a [`Conflict`]. A host no source gives
/// addresses is kept (for operators) but is no name in DNS. `None` when no source names it.
pub(super) fn merge<'e>(accs: impl IntoIterator<Item = Acc<'e>>) -> Option<Host> {
    let mut accs = accs.into_iter();
    let mut won = accs.next()?;
    for acc in accs {
        if !acc.has_addresses() {
            continue;
        }
        if !won.has_addresses() {
            won = acc;
        } else if !same_set(&won.host.addresses(), &acc.host.addresses()) {
            let conflict = Conflict {
                host: won.host.name.clone(),
                winner: won.host.source.clone(),
                winner_addresses: won.host.addresses(),
                loser: acc.host.source.clone(),
                loser_addresses: acc.host.addresses(),
            };
            won.host.conflicts.push(conflict);
        }
    }
    Some(won.host)
}

/// A source of [`build`]: its position and name.
impl Source for (usize, Arc<str>) {
    fn name(&self) -> &Arc<str> {
        &self.1
    }
}

/// Builds the table from the sources, highest precedence first (the rules of DESIGN.md
/// "ServiceEntry → records"; see [`merge`] for how sources combine). Within a source,
/// entries are taken in `namespace/name` order. Every zone is at `serial`, with no history.
pub fn build(settings: &TableSettings, sources: &[SourceInput<'_>], serial: u32, synced: bool) -> Table {
    let mut live = Live::new(settings.clone());
    for (i, source) in sources.iter().enumerate() {
        live.replace(&(i, source.name.clone()), source.entries.iter().cloned());
    }
    live.commit();
    live.table(serial, synced)
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}
