//! ServiceEntries from YAML text: one or more documents, as `kubectl apply -f` takes them.
//!
//! Documents of other kinds are ignored, so a whole manifest can be given; `kind: List`
//! (what `kubectl get serviceentries -A -o yaml` writes) is unpacked. A document that is a
//! ServiceEntry but cannot be read or fails validation is reported and skipped; the others
//! still load. Only text that is not YAML at all fails the whole file.

use thiserror::Error;

use super::{Entry, EntryId, Invalid, Reason, Resource};

/// The API group of Istio's networking resources.
pub const GROUP: &str = "networking.istio.io";
/// The versions of that group that carry ServiceEntries, newest first.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// What a YAML text held.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid entries, in document order.
    pub entries: Vec<Entry>,
    /// ServiceEntry documents that were rejected, with the reason.
    pub invalid: Vec<Invalid>,
}

/// The text is not YAML.
#[derive(Debug, Error)]
#[error("not valid YAML: {0}")]
pub struct NotYaml(#[source] serde_saphyr::Error);

/// Reads every ServiceEntry document of `text`; objects without a namespace are placed in
/// `default_namespace`.
pub fn parse(text: &str, default_namespace: &str) -> Result<Parsed, NotYaml> {
    // YAML 1.2 booleans only: a name like `y` or `no` stays a string. The parser's default
    // budget allows 1 024 documents, 250 000 nodes and 1 M events per text: far below an
    // entries file of a large mesh (100 000 entries is ~100 000 documents, ~2 M nodes). Those
    // limits grow with the text anyway; the ones that stop YAML bombs (aliases, depth) stay.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_documents: 10_000_000,
            max_nodes: 200_000_000,
            max_events: 400_000_000,
        },
    };
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options).map_err(NotYaml)?;
    let mut parsed = Parsed::default();
    for doc in documents {
        visit(doc, default_namespace, &mut parsed);
    }
    Ok(parsed)
}

fn visit(doc: serde_json::Value, default_namespace: &str, out: &mut Parsed) {
    let str_field = |key: &str| doc.get(key).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let kind = str_field("kind");
    let api_version = str_field("apiVersion");
    if kind == "List" || kind.ends_with("List") && api_version.starts_with(GROUP) {
        if let serde_json::Value::Object(mut list) = doc
            && let Some(serde_json::Value::Array(items)) = list.remove("items")
        {
            for item in items {
                visit(item, default_namespace, out);
            }
        }
        return;
    }
    if kind != "ServiceEntry" {
        return;
    }
    let Some(version) = api_version.strip_prefix(GROUP).and_then(|v| v.strip_prefix('/')) else {
        return; // a ServiceEntry of some other API group
    };
    let meta = |key: &str| {
        doc.get("metadata")
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let id = EntryId {
        namespace: meta("namespace").unwrap_or_else(|| default_namespace.into()).into(),
        name: meta("name").unwrap_or_else(|| "<unnamed>".into()).into(),
    };
    if !VERSIONS.contains(&version) {
        out.invalid.push(Invalid {
            id,
            reason: Reason::ApiVersion(api_version),
        });
        return;
    }
    let result = serde_json::from_value::<Resource>(doc)
        .map_err(|e| Invalid {
            id,
            reason: Reason::Schema(e.to_string()),
        })
        .and_then(|r| r.into_entry(default_namespace));
    match result {
        Ok(entry) => out.entries.push(entry),
        Err(invalid) => out.invalid.push(invalid),
    }
}
