//! The table as text: a zone file (RFC 1035 §5 master format) or JSON, for `check`,
//! `records` and `/debug/records`.
//!
//! The zone file loads into other DNS servers unchanged (the load benchmark serves the same
//! data from Knot DNS and NSD with it); provenance is written as comments.

use std::fmt::Write;

use serde_json::json;

use crate::table::{Rule, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Table};

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::SpecAddresses => "spec.addresses",
        Rule::StatusAddresses => "status.addresses",
        Rule::Allocated => "istio-legacy allocation",
        Rule::DefaultAddress => "default-address",
        Rule::NoAddress => "no address",
    }
}

/// The table as a zone file, one `$ORIGIN`-free block per zone.
pub fn zone_file(table: &Table) -> String {
    let ttl = table.ttl();
    let mut out = String::new();
    for zone in table.zones() {
        let z = &zone.name;
        let serial = table.zone_serial(zone);
        let _ = writeln!(out, "; zone {z}, serial {serial}");
        let _ = writeln!(
            out,
            "{z}.\t{ttl}\tIN\tSOA\tns.dns.{z}. hostmaster.{z}. {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {ttl}"
        );
        let _ = writeln!(out, "{z}.\t{ttl}\tIN\tNS\tns.dns.{z}.");
        for host in table.hosts().iter().filter(|h| &h.zone == z) {
            let from: Vec<String> = host
                .origins
                .iter()
                .map(|o| format!("{} {} ({})", host.source, o.entry, rule_name(o.rule)))
                .collect();
            let from = from.join(", ");
            if host.a.is_empty() && host.aaaa.is_empty() {
                let _ = writeln!(out, "; {}. has no address: {from}", host.name);
            }
            for a in &host.a {
                let _ = writeln!(out, "{}.\t{ttl}\tIN\tA\t{a}\t; {from}", host.name);
            }
            for a in &host.aaaa {
                let _ = writeln!(out, "{}.\t{ttl}\tIN\tAAAA\t{a}\t; {from}", host.name);
            }
        }
    }
    for c in table.conflicts() {
        let _ = writeln!(
            out,
            "; conflict: {} is {:?} in {} (served) but {:?} in {}",
            c.host, c.winner_addresses, c.winner, c.loser_addresses, c.loser
        );
    }
    for s in table.skipped() {
        let _ = writeln!(
            out,
            "; not served: {} of {} {}: {}",
            s.host, s.source, s.entry, s.reason
        );
    }
    out
}

/// The table as JSON: zones, hosts with their origins, conflicts and skipped hosts.
pub fn json(table: &Table) -> serde_json::Value {
    json!({
        "serials": table.serials().collect::<std::collections::BTreeMap<_, _>>(),
        "ttl": table.ttl(),
        "synced": table.synced(),
        "zones": table.zones(),
        "hosts": table.hosts(),
        "conflicts": table.conflicts(),
        "skipped": table.skipped(),
    })
}
