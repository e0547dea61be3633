//! ServiceEntries from YAML text: one or more documents, as `kubectl apply -f` takes them.
//!
//! Documents of other kinds are ignored, so a whole manifest can be given; `kind: List`
//! (what `kubectl get serviceentries -A -o yaml` writes) is unpacked. A document that is a
//! ServiceEntry but cannot be read or fails validation is reported and skipped; the others
//! still load. Only text that is not YAML at all fails the whole file.
//!
//! Documents are read one at a time: each is stripped into an [`Entry`] as soon as the parser
//! has it, so a file of 100 000 entries never holds more than one document's tree (the whole
//! file's trees took ~2.2 KB per entry, 220 MB at that size). Entries of one text share each
//! namespace's name.
//!
//! Two parsers, one verdict: serde-saphyr defines what a text holds; libyaml (`yaml/libyaml.rs`,
//! ~3× faster) reads the texts whose every construct the tests show it reads the same way, and
//! leaves any other text whole to serde-saphyr.

use thiserror::Error;

mod fast;
mod libyaml;

use super::{Entry, EntryId, Invalid, Namespaces, Reason, Resource};

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
///
/// The text is read with libyaml (`yaml/libyaml.rs`) when it holds only YAML whose reading is shown
/// to be serde-saphyr's, else with serde-saphyr: either way the verdicts are meant to be serde-saphyr's
/// (the differential tests and the fuzz target check them).
///
/// # Errors
///
/// [`NotYaml`] when `text` is not YAML at all (a syntax error, an alias or nesting deeper
/// than the parser's limits allow, more documents or nodes than its budget). A ServiceEntry
/// that is YAML but invalid is no error: it is listed in [`Parsed::invalid`].
pub fn parse(text: &str, default_namespace: &str) -> Result<Parsed, NotYaml> {
    match read_libyaml(text, default_namespace) {
        Ok(parsed) => Ok(parsed),
        Err(libyaml::GiveUp(_)) => parse_serde_saphyr(text, default_namespace),
    }
}

/// [`parse`] by libyaml, or why not.
fn read_libyaml(text: &str, default_namespace: &str) -> Result<Parsed, libyaml::GiveUp> {
    let mut documents = Documents::default();
    libyaml::read(text, |doc| documents.visit_read(doc))?;
    Ok(documents.finish(default_namespace))
}

/// [`parse`] by serde-saphyr alone: the reading that defines the verdicts, slower (~1.9 s of
/// CPU for 100 000 entries against ~0.65 s). [`parse`] gives the same result for every text;
/// the fuzz target and the differential tests compare the two.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_serde_saphyr(text: &str, default_namespace: &str) -> Result<Parsed, NotYaml> {
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
    // The parser hands each document to `Documents::extend` as it completes it.
    let documents: Documents =
        serde_saphyr::from_str_multiple_with_options::<serde_json::Value, _>(text, options).map_err(NotYaml)?;
    Ok(documents.finish(default_namespace))
}

/// What a document is, by its `kind` and `apiVersion`.
enum Kind<'a> {
    /// A list whose `items` are documents.
    List,
    /// A ServiceEntry of Istio's group, of this version (a known one or not).
    ServiceEntry(&'a str),
    /// Anything else (a ServiceEntry of another API group too): ignored.
    Other,
}

impl<'a> Kind<'a> {
    fn of(kind: &str, api_version: &'a str) -> Self {
        if kind == "List" || kind.ends_with("List") && api_version.starts_with(GROUP) {
            return Kind::List;
        }
        match api_version.strip_prefix(GROUP).and_then(|v| v.strip_prefix('/')) {
            Some(version) if kind == "ServiceEntry" => Kind::ServiceEntry(version),
            _ => Kind::Other,
        }
    }
}

/// Where a document's namespace came from: its own `metadata.namespace`, or the default
/// (given only once the text is read, see [`Documents::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Own,
    Default,
}

/// The documents read so far, stripped. `Default + Extend`: the collection the parser fills.
#[derive(Debug, Default)]
struct Documents {
    parsed: Parsed,
    /// Indexes into `parsed.entries` / `parsed.invalid` whose namespace is the default.
    defaulted: Vec<usize>,
    defaulted_invalid: Vec<usize>,
    namespaces: Namespaces,
}

impl Extend<serde_json::Value> for Documents {
    fn extend<I: IntoIterator<Item = serde_json::Value>>(&mut self, documents: I) {
        for doc in documents {
            self.visit(doc);
        }
    }
}

impl Documents {
    fn reject(&mut self, mut invalid: Invalid, namespace: Namespace) {
        if namespace == Namespace::Default {
            self.defaulted_invalid.push(self.parsed.invalid.len());
        }
        invalid.id.namespace = self.namespaces.share(invalid.id.namespace);
        self.parsed.invalid.push(invalid);
    }

    /// [`Documents::visit`] for a document libyaml read: a ServiceEntry of a plain shape is
    /// read straight from the tree ([`fast`]), a List's items each so; anything else through
    /// its value.
    fn visit_read(&mut self, doc: libyaml::Node<'_, '_>) {
        let str_field = |key: &str| doc.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let version = match Kind::of(str_field("kind"), str_field("apiVersion")) {
            Kind::List => {
                for item in doc.get("items").into_iter().flat_map(libyaml::Node::items) {
                    self.visit_read(item);
                }
                return;
            }
            Kind::Other => return,
            Kind::ServiceEntry(version) => version,
        };
        if VERSIONS.contains(&version)
            && let Some(resource) = fast::resource(doc)
        {
            return self.accept(resource);
        }
        self.visit(doc.to_value());
    }

    fn visit(&mut self, doc: serde_json::Value) {
        let str_field = |key: &str| doc.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let api_version = str_field("apiVersion");
        let version = match Kind::of(str_field("kind"), api_version) {
            Kind::List => {
                if let serde_json::Value::Object(mut list) = doc
                    && let Some(serde_json::Value::Array(items)) = list.remove("items")
                {
                    for item in items {
                        self.visit(item);
                    }
                }
                return;
            }
            Kind::Other => return,
            Kind::ServiceEntry(version) => version,
        };
        let meta = |key: &str| doc.get("metadata").and_then(|m| m.get(key)).and_then(|v| v.as_str());
        let namespace = meta("namespace");
        let (namespace, from) = match namespace {
            Some(ns) => (ns, Namespace::Own),
            None => ("", Namespace::Default),
        };
        let id = EntryId {
            namespace: namespace.into(),
            name: meta("name").unwrap_or("<unnamed>").into(),
        };
        if !VERSIONS.contains(&version) {
            let reason = Reason::ApiVersion(api_version.to_owned());
            return self.reject(Invalid { id, reason }, from);
        }
        let resource = match serde_json::from_value::<Resource>(doc) {
            Ok(resource) => resource,
            Err(e) => {
                return self.reject(
                    Invalid {
                        id,
                        reason: Reason::Schema(e.to_string()),
                    },
                    from,
                );
            }
        };
        self.accept(resource);
    }

    /// A ServiceEntry read: its entry, or why it is rejected.
    fn accept(&mut self, resource: Resource) {
        // `into_entry` places an object with an empty or missing namespace in the default.
        let from = match resource.metadata.namespace.as_deref() {
            None | Some("") => Namespace::Default,
            Some(_) => Namespace::Own,
        };
        match resource.into_entry("") {
            Ok(mut entry) => {
                if from == Namespace::Default {
                    self.defaulted.push(self.parsed.entries.len());
                }
                entry.id.namespace = self.namespaces.share(entry.id.namespace);
                self.parsed.entries.push(entry);
            }
            Err(invalid) => self.reject(invalid, from),
        }
    }

    /// The entries, with `default_namespace` where a document named none.
    fn finish(mut self, default_namespace: &str) -> Parsed {
        let default = self.namespaces.share(default_namespace.into());
        for i in self.defaulted {
            self.parsed.entries[i].id.namespace = default.clone();
        }
        for i in self.defaulted_invalid {
            self.parsed.invalid[i].id.namespace = default.clone();
        }
        self.parsed.entries.shrink_to_fit();
        self.parsed
    }
}
