#![deny(unsafe_code)]
//! globaldns: authoritative DNS for the `.global` names of an Istio multi-cluster mesh,
//! from the ServiceEntries of every cluster, forwarding every other name to the cluster DNS.
//!
//! Data flow (DESIGN.md): sources ([`sources`], speaking [`source::Update`]s) → the
//! registry ([`registry`], the only writer of source status and of the table) → an immutable
//! [`table::Table`] and a [`source::Status`] published through `ArcSwap` → the answer path
//! ([`dns::answer`]) behind UDP and TCP listeners ([`dns::server`]).

pub mod admin;
pub mod app;
pub mod cli;
pub mod dns;
pub mod memory;
pub mod metrics;
pub mod name;
pub mod records;
pub mod registry;
pub mod serviceentry;
pub mod source;
pub mod sources;
pub mod table;
