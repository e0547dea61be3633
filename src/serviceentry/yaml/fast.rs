//! A ServiceEntry straight from libyaml's [`Node`] tree, for the shapes that need no
//! `serde_json::Value` on the way: every field [`Resource`] reads is absent or of the type it
//! asks for (unknown fields are ignored, as `Resource`'s own reading ignores them). Then the
//! resource is the one `serde_json::from_value` would have made of the same document; for
//! anything else (a `null`, a number written for a string, a missing `value`) there is none,
//! and the caller reads the document's value as before, errors and all.
//!
//! It spares the mapping nodes, key strings and value trees that `from_value` only reads
//! and drops: ~3 of the ~13 allocations of each scalar-rich entry.

use super::libyaml::Node;
use crate::serviceentry::{Metadata, PortSpec, Resource, Spec, Status, StatusAddress};

/// The resource `serde_json::from_value::<Resource>` makes of `doc`, when `doc` is such a
/// shape; else `None`.
pub(super) fn resource(doc: Node<'_, '_>) -> Option<Resource> {
    let mut resource = Resource {
        metadata: Metadata::default(),
        spec: None,
        status: None,
    };
    for (key, value) in map(doc)? {
        match key {
            "metadata" => resource.metadata = metadata(value)?,
            "spec" => resource.spec = Some(spec(value)?),
            "status" => resource.status = Some(status(value)?),
            _ => {}
        }
    }
    Some(resource)
}

fn metadata(node: Node<'_, '_>) -> Option<Metadata> {
    let mut metadata = Metadata::default();
    for (key, value) in map(node)? {
        match key {
            "name" => metadata.name = Some(string(value)?),
            "namespace" => metadata.namespace = Some(string(value)?),
            "creationTimestamp" => metadata.creation_timestamp = Some(string(value)?),
            _ => {}
        }
    }
    Some(metadata)
}

fn spec(node: Node<'_, '_>) -> Option<Spec> {
    let mut spec = Spec::default();
    for (key, value) in map(node)? {
        match key {
            "hosts" => spec.hosts = strings(value)?,
            "addresses" => spec.addresses = strings(value)?,
            "exportTo" => spec.export_to = strings(value)?,
            "resolution" => {
                spec.resolution = Some(match value.as_str() {
                    Some(_) => value.to_value(),
                    None if value.is_number() => value.to_value(),
                    None => return None,
                });
            }
            "ports" => spec.ports = list(value, port)?,
            _ => {}
        }
    }
    Some(spec)
}

fn port(node: Node<'_, '_>) -> Option<PortSpec> {
    let mut port = PortSpec::default();
    for (key, value) in map(node)? {
        match key {
            "name" => port.name = Some(string(value)?),
            "number" => port.number = value.as_u64().and_then(|n| u32::try_from(n).ok())?,
            "protocol" => port.protocol = Some(string(value)?),
            _ => {}
        }
    }
    Some(port)
}

fn status(node: Node<'_, '_>) -> Option<Status> {
    let mut status = Status::default();
    for (key, value) in map(node)? {
        if key == "addresses" {
            status.addresses = list(value, status_address)?;
        }
    }
    Some(status)
}

fn status_address(node: Node<'_, '_>) -> Option<StatusAddress> {
    let (mut value, mut host) = (None, String::new());
    for (key, field) in map(node)? {
        match key {
            "value" => value = Some(string(field)?),
            "host" => host = string(field)?,
            _ => {}
        }
    }
    Some(StatusAddress { value: value?, host })
}

/// A mapping's fields; `None` for any other node.
fn map<'a, 't>(node: Node<'a, 't>) -> Option<impl Iterator<Item = (&'a str, Node<'a, 't>)>> {
    node.is_map().then(|| node.fields())
}

fn string(node: Node<'_, '_>) -> Option<String> {
    node.as_str().map(str::to_owned)
}

fn strings(node: Node<'_, '_>) -> Option<Vec<String>> {
    list(node, string)
}

/// A sequence's items, each read by `item`; `None` for any other node or when an item is not.
fn list<T>(node: Node<'_, '_>, item: impl Fn(Node<'_, '_>) -> Option<T>) -> Option<Vec<T>> {
    if !node.is_seq() {
        return None;
    }
    node.items().map(item).collect()
}
