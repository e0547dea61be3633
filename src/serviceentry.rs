//! The Istio `ServiceEntry` as globaldns uses it.
//!
//! `networking.istio.io` v1, v1beta1 and v1alpha3 share one schema; only `metadata.name`,
//! `metadata.namespace`, `spec.hosts`, `spec.addresses`, `spec.ports` (for SRV records),
//! `spec.resolution`, `spec.exportTo` and `status.addresses` matter for DNS, every other
//! field is ignored. A resource is
//! stripped into an [`Entry`] the moment it is read (from a file or a watcher): nothing
//! downstream sees serde or kube types.
//!
//! Validation follows Istio's own (`pkg/config/validation`, `ValidateServiceEntry`) for the
//! fields above; an entry that fails it is rejected as a whole, as the Istio API server
//! would have rejected it.

mod validate;
pub mod yaml;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use validate::{BadExportTo, BadHost, BadPorts, BadResolution, Invalid, Reason};

/// A ServiceEntry reduced to what DNS needs. Hosts are validated and lower-case, without a
/// trailing dot. (De)serializable so the file source can keep its copy packed.
///
/// Held by the table for as long as it is served (100 000 of them at scale), so its lists are
/// boxed slices, without a vector's capacity: 136 bytes with its `Arc` header instead of 200.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// `namespace/name` of the object (the source is carried by the set it is in).
    pub id: EntryId,
    /// `spec.hosts` exactly as written (istiod hashes them so for its allocation); compare
    /// them through [`normalize_host`].
    pub hosts: Box<[String]>,
    /// Usable `spec.addresses`: plain IPs and full-length CIDRs (`/32`, `/128`).
    pub addresses: Box<[IpAddr]>,
    /// Whether `spec.addresses` had anything at all, ranges included (Istio allocates no VIP
    /// to such an entry).
    pub spec_addresses_given: bool,
    /// `metadata.creationTimestamp` (RFC 3339, UTC, so it sorts as text); Istio's allocation
    /// order.
    pub created: Option<Box<str>>,
    /// `status.addresses` with the host each was allocated for (lower-case).
    pub status_addresses: Box<[(String, IpAddr)]>,
    /// `spec.ports` whose names are DNS labels (those give SRV records), in order, each once.
    pub ports: Box<[Port]>,
    /// `spec.resolution` is NONE (the default when absent).
    pub resolution_none: bool,
    /// Where `spec.exportTo` makes the entry visible.
    pub export: Export,
    /// Warnings found while stripping that do not reject the entry (a wide CIDR skipped).
    pub warnings: Box<[String]>,
}

/// A named port of an entry, as an SRV record names it (`_<name>._<protocol>.<host>`, RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Port {
    /// `spec.ports[i].name` in lower case: a DNS label of at most 62 letters, digits and
    /// hyphens (63 with the `_` the SRV owner puts before it).
    pub name: Arc<str>,
    /// `spec.ports[i].number`, 1–65535.
    pub number: u16,
    /// The SRV owner's protocol label.
    pub protocol: Protocol,
}

/// The protocol label of an SRV owner: `_udp` for Istio protocol UDP, `_tcp` for every
/// other (HTTP, gRPC, TLS, … all run over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `_tcp`.
    Tcp,
    /// `_udp`.
    Udp,
}

impl Protocol {
    /// The label, without its underscore.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `namespace/name` of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// `metadata.namespace` (`default` when a file leaves it out).
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
}

/// Namespace names shared by every entry that names them: a mesh has few namespaces and many
/// entries, so one copy of each name (instead of one an entry) saves ~32 bytes an entry.
#[derive(Debug, Default)]
pub struct Namespaces(HashSet<Arc<str>>);

impl Namespaces {
    /// The copy of `name` held, or `name`, now held.
    pub fn share(&mut self, name: Arc<str>) -> Arc<str> {
        match self.0.get(&name) {
            Some(shared) => shared.clone(),
            None => {
                self.0.insert(name.clone());
                name
            }
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Visibility from `spec.exportTo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Export {
    /// Empty `exportTo`, or one containing `*`: every namespace of the mesh.
    Mesh,
    /// Some namespaces only (`.` or names).
    Namespaces,
    /// `~`: nowhere.
    Nowhere,
}

/// The Kubernetes object as read, with only the fields DNS uses; unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct Resource {
    /// `metadata`.
    #[serde(default)]
    pub metadata: Metadata,
    /// `spec`; Istio requires it.
    pub spec: Option<Spec>,
    /// `status`, written by istiod.
    #[serde(default)]
    pub status: Option<Status>,
}

/// `metadata` of a resource.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    /// `metadata.name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `metadata.namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `metadata.creationTimestamp`.
    #[serde(default, rename = "creationTimestamp")]
    pub creation_timestamp: Option<String>,
}

/// `spec` of a ServiceEntry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// `spec.hosts`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `spec.addresses`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `spec.resolution`: a name, or the protobuf number.
    #[serde(default)]
    pub resolution: Option<serde_json::Value>,
    /// `spec.exportTo`.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// `spec.ports`.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

/// One of `spec.ports`.
#[derive(Debug, Default, Deserialize)]
pub struct PortSpec {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `number` (Istio's type is uint32; 0 when absent, which is invalid).
    #[serde(default)]
    pub number: u32,
    /// `protocol` (`HTTP`, `TCP`, `UDP`, …; case-insensitive as Istio reads it).
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `status` of a ServiceEntry.
#[derive(Debug, Default, Deserialize)]
pub struct Status {
    /// `status.addresses`: Istio ≥ 1.25's allocations.
    #[serde(default)]
    pub addresses: Vec<StatusAddress>,
}

/// One allocated address in `status.addresses`.
#[derive(Debug, Deserialize)]
pub struct StatusAddress {
    /// The address.
    pub value: String,
    /// The host it was allocated for.
    #[serde(default)]
    pub host: String,
}

/// A host as DNS sees it: lower case, no trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

impl Resource {
    /// Strips and validates the resource. `default_namespace` is used when the object has
    /// none (files).
    ///
    /// # Errors
    /// [`Invalid`]: the entry's `namespace/name` and the first [`Reason`] Istio's validation
    /// would give; the entry is rejected whole.
    pub fn into_entry(self, default_namespace: &str) -> Result<Entry, Invalid> {
        let name = self.metadata.name.filter(|n| !n.is_empty());
        let id = EntryId {
            namespace: self
                .metadata
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| default_namespace.to_owned())
                .into(),
            name: name.clone().unwrap_or_else(|| "<unnamed>".into()).into(),
        };
        let reject = |reason: Reason| Invalid { id: id.clone(), reason };
        if name.is_none() {
            return Err(reject(Reason::MissingField("metadata.name")));
        }
        let spec = self.spec.ok_or_else(|| reject(Reason::MissingField("spec")))?;
        if spec.hosts.is_empty() {
            return Err(reject(Reason::MissingField("spec.hosts")));
        }
        for host in &spec.hosts {
            validate::host(host).map_err(|e| reject(e.into()))?;
        }
        let hosts = spec.hosts;
        let mut warnings = Vec::new();
        let mut addresses = Vec::with_capacity(spec.addresses.len());
        for text in &spec.addresses {
            match validate::address(text).map_err(reject)? {
                Some(ip) if !addresses.contains(&ip) => addresses.push(ip),
                Some(_) => {}
                None => warnings.push(format!(
                    "spec.addresses {text:?} is a range wider than one address: not served"
                )),
            }
        }
        let mut ports: Vec<Port> = Vec::with_capacity(spec.ports.len());
        for (i, p) in spec.ports.iter().enumerate() {
            let number =
                validate::port_number(p.number).map_err(|e| reject(Reason::Schema(format!("spec.ports[{i}]: {e}"))))?;
            let name = p.name.as_deref().unwrap_or("");
            let earlier = &spec.ports[..i];
            if earlier.iter().any(|e| e.name.as_deref().unwrap_or("") == name) {
                return Err(reject(BadPorts::NameTwice(name.into()).into()));
            }
            if earlier.iter().any(|e| e.number == p.number) {
                return Err(reject(BadPorts::NumberTwice(number).into()));
            }
            if !validate::is_srv_label(name) {
                warnings.push(format!(
                    "spec.ports[{i}].name {name:?} is not a DNS label (letters, digits, hyphens; at most 62): no SRV record for port {number}"
                ));
                continue;
            }
            let udp = p.protocol.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("UDP"));
            let port = Port {
                name: name.to_ascii_lowercase().into(),
                number,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            };
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let resolution_none = validate::resolution_is_none(spec.resolution.as_ref()).map_err(|e| reject(e.into()))?;
        let export = validate::export_to(&spec.export_to).map_err(|e| reject(e.into()))?;
        let mut status_addresses = Vec::new();
        for a in self.status.map(|s| s.addresses).unwrap_or_default() {
            match a.value.parse::<IpAddr>() {
                Ok(ip) => status_addresses.push((normalize_host(&a.host), ip)),
                Err(_) => warnings.push(format!("status.addresses {:?} is not an IP: ignored", a.value)),
            }
        }
        Ok(Entry {
            id,
            hosts: boxed(hosts),
            spec_addresses_given: !spec.addresses.is_empty(),
            created: self.metadata.creation_timestamp.map(String::into_boxed_str),
            addresses: boxed(addresses),
            status_addresses: boxed(status_addresses),
            ports: boxed(ports),
            resolution_none,
            export,
            warnings: boxed(warnings),
        })
    }
}

/// `list` boxed to its length, for an [`Entry`] held for long: moved to a block of its size when
/// it has spare capacity, not shrunk in place (which would leave the rest of its block free
/// between blocks held for long, a hole an entry that the allocator cannot return).
fn boxed<T>(mut list: Vec<T>) -> Box<[T]> {
    if list.len() == list.capacity() {
        list.into_boxed_slice()
    } else {
        list.drain(..).collect()
    }
}

#[cfg(test)]
mod tests;
