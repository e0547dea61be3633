//! Tables for the unit tests of every module, built from ServiceEntry YAML: the one place that
//! turns `(source, entries)` pairs into a [`Table`].

use std::sync::Arc;

use super::{Live, SourceInput, Table, TableSettings};
use crate::serviceentry::{Entry, yaml};

/// A ServiceEntry document named `name` (its namespace is the one [`entries`] is given).
pub(crate) fn se(name: &str, spec: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

/// A ServiceEntry document `namespace/name`.
pub(crate) fn se_in(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

/// The entries of the YAML `text`, in `namespace` where a document names none; panics on an
/// invalid one.
pub(crate) fn entries(text: &str, namespace: &str) -> Vec<Entry> {
    let parsed = yaml::parse(text, namespace).unwrap();
    assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
    parsed.entries
}

/// The table of `sources` (name, entries), highest precedence first, every zone at `serial`.
pub(crate) fn table_of(settings: &TableSettings, sources: &[(&str, &[Entry])], serial: u32, synced: bool) -> Table {
    let names: Vec<Arc<str>> = sources.iter().map(|(name, _)| Arc::from(*name)).collect();
    let inputs: Vec<SourceInput<'_>> = sources
        .iter()
        .zip(&names)
        .map(|((_, entries), name)| SourceInput { name, entries })
        .collect();
    Live::build(settings, &inputs, serial, synced)
}
