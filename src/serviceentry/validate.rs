//! Istio's validation rules for the ServiceEntry fields DNS uses.
//!
//! Mirrors `ValidateWildcardDomain`, `validateDNS1123Labels`, `ValidateIPSubnet` and
//! `validateExportTo` of istio/istio `pkg/config/validation`: labels are
//! `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?` of at most 63 characters, only the first label
//! may carry a wildcard (`*`, or Istio's `*foo` / `*-foo` prefixes), the last label may not be
//! all digits, a host is at most 255 characters, and the host `*` alone is refused.

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
    pub reason: String,
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
pub(super) fn host(host: &str) -> Result<(), String> {
    if host == "*" {
        return Err("host \"*\" is not allowed in a ServiceEntry".into());
    }
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.len() > 255 {
        return Err(format!("host {host:?} is too long (max 255)"));
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!("host {host:?} is invalid (label {first:?})"));
    }
    let Some(rest) = rest else { return Ok(()) };
    let parts: Vec<&str> = rest.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "host {host:?} is invalid (top-level label {tld:?} is all digits)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            break; // `istio.io.`: a trailing dot is allowed
        }
        if !is_label(label) {
            return Err(format!("host {host:?} is invalid (label {label:?})"));
        }
    }
    Ok(())
}

/// `spec.addresses[i]`: an IP, or a CIDR. `Ok(None)` for a CIDR wider than one address,
/// which is valid for Istio (a VIP range for TCP) but names no single address to answer.
pub(super) fn address(text: &str) -> Result<Option<IpAddr>, String> {
    let bad = || format!("address {text:?} is not an IP or CIDR");
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
pub(super) fn resolution_is_none(value: Option<&serde_json::Value>) -> Result<bool, String> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(s)) => match s.as_str() {
            "NONE" => Ok(true),
            "STATIC" | "DNS" | "DNS_ROUND_ROBIN" | "DYNAMIC_DNS" => Ok(false),
            other => Err(format!("unknown resolution {other:?}")),
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(true),
            Some(1..=4) => Ok(false),
            _ => Err(format!("unknown resolution {n}")),
        },
        Some(other) => Err(format!("resolution must be a string, not {other}")),
    }
}

/// `spec.exportTo`: `*` and `~` may not be combined with anything else; other values are
/// `.` or namespace names.
pub(super) fn export_to(values: &[String]) -> Result<super::Export, String> {
    use super::Export;
    if values.is_empty() {
        return Ok(Export::Mesh);
    }
    let has = |v: &str| values.iter().any(|x| x == v);
    if values.len() > 1 && (has("*") || has("~")) {
        return Err(format!(
            "exportTo {values:?}: \"*\" and \"~\" cannot be combined with other values"
        ));
    }
    if has("*") {
        return Ok(Export::Mesh);
    }
    if has("~") {
        return Ok(Export::Nowhere);
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(format!("exportTo lists {v:?} twice"));
        }
        if v != "." && !(is_label(v) && v.bytes().all(|b| !b.is_ascii_uppercase())) {
            return Err(format!("exportTo {v:?} is not \".\", \"*\", \"~\" or a namespace"));
        }
    }
    Ok(Export::Namespaces)
}
