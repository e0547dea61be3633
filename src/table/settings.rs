//! What shapes the table besides the entries: the served zones, TTLs and the options that
//! pick and address entries (validated once, at start-up; the command line maps onto them in
//! `cli.rs`).

use std::net::IpAddr;

use thiserror::Error;

use super::Zone;
use crate::name;

/// Which entries `exportTo` lets us serve (`--export-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// Entries visible mesh-wide: empty `exportTo` or one containing `*`.
    #[default]
    Mesh,
    /// Every entry except those exported to `~` (nowhere).
    All,
}

/// Addresses for entries that have none (`--auto-allocate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// Settings serving `zones` (duplicates once, most specific first) with the defaults of
    /// the command line.
    ///
    /// # Errors
    ///
    /// - [`SettingsError::BadZone`] when a zone is not a domain name;
    /// - [`SettingsError::RootZone`] when a zone is the root (`.`);
    /// - [`SettingsError::NoZone`] when `zones` is empty.
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
