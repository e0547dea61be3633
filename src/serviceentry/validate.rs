//! Istio's validation rules for the ServiceEntry fields DNS uses, and the reasons an entry is
//! rejected.
//!
//! Mirrors `ValidateWildcardDomain`, `validateDNS1123Labels`, `ValidateIPSubnet` and
//! `validateExportTo` of istio/istio `pkg/config/validation`: labels are
//! `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?` of at most 63 characters, only the first label
//! may carry a wildcard (`*`, or Istio's `*foo` / `*-foo` prefixes), the last label may not be
//! all digits, a host is at most 255 characters, and the host `*` alone is refused.
//!
//! A rejection is a [`Reason`]: its text (for logs and `globaldns check`) names the field and
//! the value at fault; its [`Reason::label`] is one of a fixed set, for the
//! `globaldns_entries_rejected_total` metric.

use std::net::IpAddr;

use thiserror::Error;

use super::EntryId;

/// Why an entry was rejected, naming it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{id}: {reason}")]
pub struct Invalid {
    /// The rejected entry.
    pub id: EntryId,
    /// What is wrong with it.
    pub reason: Reason,
}

/// What is wrong with a rejected ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Reason {
    /// A required field is absent or empty: `metadata.name`, `spec` or `spec.hosts`.
    #[error("{0} is required")]
    MissingField(&'static str),
    /// A `spec.hosts` entry Istio refuses.
    #[error(transparent)]
    Host(#[from] BadHost),
    /// A `spec.addresses` entry that is neither an IP nor a CIDR (the text as written).
    #[error("address {0:?} is not an IP or CIDR")]
    Address(String),
    /// `spec.resolution` is not one of Istio's.
    #[error(transparent)]
    Resolution(#[from] BadResolution),
    /// `spec.exportTo` breaks Istio's rules.
    #[error(transparent)]
    ExportTo(#[from] BadExportTo),
    /// `spec.ports` names a port or a number twice.
    #[error(transparent)]
    Ports(#[from] BadPorts),
    /// A `networking.istio.io` version that has no ServiceEntry (the `apiVersion` as written).
    #[error("unsupported apiVersion {0:?}")]
    ApiVersion(String),
    /// The object does not have the ServiceEntry's shape (a field of the wrong type, …): the
    /// decoder's message.
    #[error("{0}")]
    Schema(String),
}

impl Reason {
    /// A label for metrics, one of a fixed set: `missing_field`, `host`, `address`,
    /// `resolution`, `export_to`, `ports`, `api_version`, `schema`.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::MissingField(_) => "missing_field",
            Reason::Host(_) => "host",
            Reason::Address(_) => "address",
            Reason::Resolution(_) => "resolution",
            Reason::ExportTo(_) => "export_to",
            Reason::Ports(_) => "ports",
            Reason::ApiVersion(_) => "api_version",
            Reason::Schema(_) => "schema",
        }
    }

    /// Every label [`Reason::label`] gives.
    pub const LABELS: [&'static str; 8] = [
        "missing_field",
        "host",
        "address",
        "resolution",
        "export_to",
        "ports",
        "api_version",
        "schema",
    ];
}

/// Why a `spec.hosts` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadHost {
    /// `*` alone: every name.
    #[error("host \"*\" is not allowed in a ServiceEntry")]
    Star,
    /// The empty string.
    #[error("empty host")]
    Empty,
    /// Longer than 255 characters (the host).
    #[error("host {0:?} is too long (max 255)")]
    TooLong(String),
    /// A label that is not a DNS-1123 label (or a wildcard one, first).
    #[error("host {host:?} is invalid (label {label:?})")]
    Label {
        /// The host.
        host: String,
        /// The label at fault.
        label: String,
    },
    /// The last label is all digits (it would read as an IP).
    #[error("host {host:?} is invalid (top-level label {tld:?} is all digits)")]
    NumericTld {
        /// The host.
        host: String,
        /// Its last label.
        tld: String,
    },
}

/// Why `spec.resolution` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadResolution {
    /// A name Istio does not know.
    #[error("unknown resolution {0:?}")]
    Name(String),
    /// A protobuf number Istio does not know.
    #[error("unknown resolution {0}")]
    Number(serde_json::Number),
    /// Neither a string nor a number (the value as JSON).
    #[error("resolution must be a string, not {0}")]
    Type(String),
}

/// Why `spec.ports` is refused: as istio/istio `pkg/config/validation`'s
/// `ValidateServiceEntry`, each port's name (as written, the absent name counting as `""`)
/// and each number appear once, whatever the protocol (two `http` ports would give two
/// `_http._tcp` SRV records Istio never routes).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadPorts {
    /// A name given to two ports.
    #[error("spec.ports: port name {0:?} already defined")]
    NameTwice(String),
    /// A number given to two ports.
    #[error("spec.ports: port {0} already defined")]
    NumberTwice(u16),
}

/// Why `spec.exportTo` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadExportTo {
    /// `*` or `~` beside other values (the whole list).
    #[error("exportTo {0:?}: \"*\" and \"~\" cannot be combined with other values")]
    Combined(Vec<String>),
    /// A value given twice.
    #[error("exportTo lists {0:?} twice")]
    Twice(String),
    /// A value that is not `.`, `*`, `~` or a namespace name.
    #[error("exportTo {0:?} is not \".\", \"*\", \"~\" or a namespace")]
    NotNamespace(String),
}

fn is_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn is_wildcard_label(label: &str) -> bool {
    if label == "*" {
        return true;
    }
    let rest = label
        .strip_prefix("*-")
        .or_else(|| label.strip_prefix('*'))
        .unwrap_or(label);
    label.len() <= 63 && is_label(rest)
}

/// `spec.hosts[i]`.
pub(super) fn host(host: &str) -> Result<(), BadHost> {
    if host == "*" {
        return Err(BadHost::Star);
    }
    if host.is_empty() {
        return Err(BadHost::Empty);
    }
    if host.len() > 255 {
        return Err(BadHost::TooLong(host.into()));
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if !is_wildcard_label(first) {
        return Err(BadHost::Label {
            host: host.into(),
            label: first.into(),
        });
    }
    let Some(rest) = rest else { return Ok(()) };
    let parts: Vec<&str> = rest.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadHost::NumericTld {
            host: host.into(),
            tld: tld.into(),
        });
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            break; // `istio.io.`: a trailing dot is allowed
        }
        if !is_label(label) {
            return Err(BadHost::Label {
                host: host.into(),
                label: (*label).into(),
            });
        }
    }
    Ok(())
}

/// `spec.addresses[i]`: an IP, or a CIDR. `Ok(None)` for a CIDR wider than one address,
/// which is valid for Istio (a VIP range for TCP) but names no single address to answer.
pub(super) fn address(text: &str) -> Result<Option<IpAddr>, Reason> {
    let bad = || Reason::Address(text.into());
    let Some((ip, prefix)) = text.split_once('/') else {
        return text.parse().map(Some).map_err(|_| bad());
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return Err(bad());
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let full = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        p if p > full => Err(bad()),
        p if p == full => Ok(Some(ip)),
        _ => Ok(None),
    }
}

/// `spec.ports[i].number`: 1–65535, as Istio's `ValidatePort` requires.
pub(super) fn port_number(number: u32) -> Result<u16, String> {
    match u16::try_from(number) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("port number {number} is not between 1 and 65535")),
    }
}

/// Whether a port name can be an SRV owner's first label once prefixed with `_` (RFC 2782):
/// a DNS label (letters, digits, inner hyphens) of at most 62 characters.
pub(super) fn is_srv_label(name: &str) -> bool {
    name.len() < 63 && is_label(name)
}

/// `spec.resolution`: true for NONE (also when absent). Names and protobuf numbers accepted.
pub(super) fn resolution_is_none(value: Option<&serde_json::Value>) -> Result<bool, BadResolution> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(s)) => match s.as_str() {
            "NONE" => Ok(true),
            "STATIC" | "DNS" | "DNS_ROUND_ROBIN" | "DYNAMIC_DNS" => Ok(false),
            other => Err(BadResolution::Name(other.into())),
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(true),
            Some(1..=4) => Ok(false),
            _ => Err(BadResolution::Number(n.clone())),
        },
        Some(other) => Err(BadResolution::Type(other.to_string())),
    }
}

/// `spec.exportTo`: `*` and `~` may not be combined with anything else; other values are
/// `.` or namespace names.
pub(super) fn export_to(values: &[String]) -> Result<super::Export, BadExportTo> {
    use super::Export;
    if values.is_empty() {
        return Ok(Export::Mesh);
    }
    let has = |v: &str| values.iter().any(|x| x == v);
    if values.len() > 1 && (has("*") || has("~")) {
        return Err(BadExportTo::Combined(values.to_vec()));
    }
    if has("*") {
        return Ok(Export::Mesh);
    }
    if has("~") {
        return Ok(Export::Nowhere);
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(BadExportTo::Twice(v.clone()));
        }
        if v != "." && !(is_label(v) && v.bytes().all(|b| !b.is_ascii_uppercase())) {
            return Err(BadExportTo::NotNamespace(v.clone()));
        }
    }
    Ok(Export::Namespaces)
}
