//! The table as text: a zone file (RFC 1035 §5 master format) or JSON, for `check`,
//! `records` and `/debug/records`.
//!
//! The zone file loads into other DNS servers unchanged (the load benchmark serves the same
//! data from Knot DNS and NSD with it); provenance is written as comments. SRV records follow
//! the hosts of their zone; a reverse zone lists its PTR records.

use std::fmt::Write;

use serde_json::json;

use crate::table::derived::{SRV_PRIORITY, SRV_WEIGHT};
use crate::table::{RecordData, Rule, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Table};

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
    let minimum = table.negative_ttl();
    let mut out = String::new();
    for zone in table.zones() {
        let z = &zone.name;
        let serial = table.zone_serial(zone);
        let _ = writeln!(out, "; zone {z}, serial {serial}");
        let _ = writeln!(
            out,
            "{z}.\t{ttl}\tIN\tSOA\tns.dns.{z}. hostmaster.{z}. {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {minimum}"
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
        for record in table.records(zone) {
            match record.data {
                RecordData::Srv { port, target } => {
                    let _ = writeln!(
                        out,
                        "{}.\t{ttl}\tIN\tSRV\t{SRV_PRIORITY} {SRV_WEIGHT} {port} {target}.",
                        record.owner
                    );
                }
                RecordData::Ptr(target) => {
                    let _ = writeln!(out, "{}.\t{ttl}\tIN\tPTR\t{target}.", record.owner);
                }
                RecordData::A(_) | RecordData::Aaaa(_) => {}
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

/// The table as JSON: zones, hosts with their origins and ports, the SRV and PTR records,
/// conflicts and skipped hosts.
pub fn json(table: &Table) -> serde_json::Value {
    let (mut srv, mut ptr) = (Vec::new(), Vec::new());
    for record in table.zones().iter().flat_map(|z| table.records(z)) {
        match record.data {
            RecordData::Srv { port, target } => srv.push(json!({
                "name": record.owner, "priority": SRV_PRIORITY, "weight": SRV_WEIGHT, "port": port, "target": target,
            })),
            RecordData::Ptr(target) => ptr.push(json!({ "name": record.owner, "target": target })),
            RecordData::A(_) | RecordData::Aaaa(_) => {}
        }
    }
    json!({
        "serials": table.serials().collect::<std::collections::BTreeMap<_, _>>(),
        "ttl": table.ttl(),
        "negative_ttl": table.negative_ttl(),
        "synced": table.synced(),
        "stale": table.stale(),
        "zones": table.zones(),
        "hosts": table.hosts(),
        "srv": srv,
        "ptr": ptr,
        "conflicts": table.conflicts(),
        "skipped": table.skipped(),
    })
}
