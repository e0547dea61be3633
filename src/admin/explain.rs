//! `/debug/explain?name=N&type=T` and `globaldns explain`: what the server answers for a name
//! and why.
//!
//! The answer is the real answer path's, run on the published table for a query with EDNS
//! over TCP (every record, and any Extended DNS Error), read back as text. The why comes from
//! the table: the rule that decided (exact host, which wildcard, SRV or PTR owner, empty
//! non-terminal, apex, not a name, forwarded, a zone transfer), the entries behind the records (cluster,
//! `namespace/name`, address rule), the sources that lost (conflicts), and staleness.
//! A name that does not exist is an answer too (HTTP 200); only a malformed name or type is
//! an error (400). `globaldns explain` is an HTTP client of this endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use thiserror::Error;

use crate::dns::answer::{Mode, Outcome, Shuffler, Transport, answer};
use crate::dns::text;
use crate::dns::wire::rtype;
use crate::name;
use crate::table::derived::reverse_address;
use crate::table::{Host, Lookup, Table};

/// A question to explain: a name and a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, presentation format with a trailing dot, as asked (case kept).
    pub name: String,
    /// The name in lower-case wire format.
    wire: Vec<u8>,
    /// The query type.
    pub qtype: u16,
}

/// A question that cannot be asked.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadQuestion {
    /// No `name=`.
    #[error("give the name to explain: /debug/explain?name=NAME[&type=TYPE]")]
    NoName,
    /// Not a domain name.
    #[error("{0:?} is not a domain name (labels of 1-63 bytes, at most 255 in all)")]
    Name(String),
    /// Not a type.
    #[error("{0:?} is not a DNS type (A, AAAA, SRV, PTR, ANY, TYPE65, 28, ...)")]
    Type(String),
}

impl Question {
    /// The question of `name` (trailing dot optional) and `qtype` (a mnemonic, `TYPE<n>` or a
    /// number).
    ///
    /// # Errors
    ///
    /// - [`BadQuestion::Name`] when `name` is empty, holds whitespace or control characters,
    ///   or is not a domain name (an empty label, a label over 63 bytes, over 255 in all);
    /// - [`BadQuestion::Type`] when `qtype` is not a type.
    pub fn new(name: &str, qtype: &str) -> Result<Self, BadQuestion> {
        let bad = || BadQuestion::Name(name.into());
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad());
        }
        let wire = name::to_wire(name).ok_or_else(bad)?;
        let qtype = text::parse_type(qtype).ok_or_else(|| BadQuestion::Type(qtype.into()))?;
        let mut name = name.to_owned();
        if !name.ends_with('.') {
            name.push('.');
        }
        Ok(Question { name, wire, qtype })
    }

    /// From the query string of `/debug/explain` (`name=…&type=…`, type A by default).
    ///
    /// # Errors
    ///
    /// [`BadQuestion::NoName`] when the query has no `name`; otherwise as [`Question::new`].
    pub fn from_query(query: &str) -> Result<Self, BadQuestion> {
        let (mut name, mut qtype) = (None, "A".to_owned());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "name" => name = Some(value.into_owned()),
                "type" => qtype = value.into_owned(),
                _ => {}
            }
        }
        Question::new(&name.ok_or(BadQuestion::NoName)?, &qtype)
    }

    /// The query bytes: RD set, the name as asked, class IN, an OPT of 1232 bytes.
    fn bytes(&self) -> Vec<u8> {
        let mut q = vec![0x4a, 0x4a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        let asked = self.name.strip_suffix('.').unwrap_or(&self.name);
        if !asked.is_empty() {
            for label in asked.split('.') {
                q.push(label.len() as u8);
                q.extend_from_slice(label.as_bytes());
            }
        }
        q.push(0);
        q.extend_from_slice(&self.qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        q
    }
}

/// The entries behind a host, the sources that lost, staleness.
fn host_json(table: &Table, host: &Host) -> Value {
    json!({
        "name": host.name,
        "zone": host.zone,
        "source": host.source,
        "stale": table.is_stale(&host.source),
        "a": host.a,
        "aaaa": host.aaaa,
        "ports": host.ports,
        "entries": host.origins.iter().map(|o| json!({
            "cluster": host.source,
            "entry": o.entry.to_string(),
            "rule": o.rule,
        })).collect::<Vec<_>>(),
        "losing_sources": host.conflicts.iter().map(|c| json!({
            "cluster": c.loser,
            "addresses": c.loser_addresses,
        })).collect::<Vec<_>>(),
    })
}

fn trimmed(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// What the server answers `q` with (forwarding other names when `forwarding`) and why.
pub fn explain(table: &Table, forwarding: bool, q: &Question) -> Value {
    let mut out = Vec::new();
    let query = q.bytes();
    let outcome = answer(
        table,
        &query,
        Transport::Tcp,
        Mode { forwarding },
        &mut Shuffler::new(1),
        &mut out,
    );
    let answered = match outcome {
        Outcome::Reply => text::decode(&out).map(|d| json!(d)),
        Outcome::Drop | Outcome::Forward | Outcome::Transfer => None,
    };
    let lookup = table.lookup(&q.wire);
    let name = trimmed(&q.name).to_ascii_lowercase();
    if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        return transfer(table, q, &name);
    }
    let mut hosts: Vec<&Host> = Vec::new();
    let (zone, rule, why, mut extra) = match lookup {
        Lookup::OutOfZone if forwarding => (
            None,
            "forwarded",
            format!("{name} is in no served zone: the query goes to the upstreams, and their answer comes back unchanged"),
            json!({}),
        ),
        Lookup::OutOfZone => (None, "refused", format!("{name} is in no served zone and nothing is forwarded: REFUSED"), json!({})),
        Lookup::NxDomain { zone } | Lookup::Exists { zone, .. } if !table.synced() => (
            Some(zone),
            "not-synced",
            "the local cluster has not synced yet: every in-zone name is SERVFAIL (Not Ready), so resolvers retry instead of caching a negative answer".to_owned(),
            json!({}),
        ),
        Lookup::NxDomain { zone } => {
            let (why, extra) = not_a_name(table, &q.wire, &name, zone.reverse);
            if let Some(h) = table.host(&q.wire).or_else(|| table.wildcard_for(&q.wire)) {
                hosts.push(h);
            }
            (Some(zone), "not-a-name", why, extra)
        }
        Lookup::Exists { zone, host: Some(host), .. } if host.name.starts_with("*.") => {
            hosts.push(host);
            let why = format!("{name} matches the wildcard {}, the most specific one, and is no exact host: the wildcard's records, owned by the name asked", host.name);
            (Some(zone), "wildcard", why, json!({ "wildcard": host.name }))
        }
        Lookup::Exists { zone, host: Some(host), .. } => {
            hosts.push(host);
            let why = format!("{name} is an exact host: its addresses come from source {}", host.source);
            (Some(zone), "exact-host", why, json!({}))
        }
        Lookup::Exists { zone, srv: Some(srv), .. } => {
            hosts.push(srv.host());
            let ports: Vec<u16> = srv.ports().collect();
            let why = format!(
                "{name} is the SRV owner of a named port of {}: SRV 0 100 to it on port(s) {:?}, its addresses in the additional section",
                srv.host().name,
                ports
            );
            (Some(zone), "srv", why, json!({ "ports": ports }))
        }
        Lookup::Exists { zone, ptr: Some(ptr), .. } => {
            let address = reverse_address(&q.wire);
            for target in ptr.all() {
                hosts.extend(table.host(target.wire()));
            }
            let served: Vec<String> = ptr.served().iter().map(|t| trimmed(&name::to_text(t.wire())).to_owned()).collect();
            let why = format!(
                "{name} is the reverse name of {}: a PTR to every exact host holding that address (at most {}), {} of them",
                address.map_or_else(|| "an address".into(), |a| a.to_string()),
                crate::table::PTR_MAX,
                ptr.all().len()
            );
            (Some(zone), "ptr", why, json!({ "address": address, "served": served }))
        }
        Lookup::Exists { zone, apex: true, .. } => (
            Some(zone),
            "apex",
            format!("{name} is the apex of zone {}: SOA and NS, NODATA for other types", zone.name),
            json!({}),
        ),
        Lookup::Exists { zone, .. } => {
            let why = format!(
                "{name} is an empty non-terminal: it owns no records but names below it do, so it is NODATA, never NXDOMAIN (RFC 8020)"
            );
            hosts.extend(table.host(&q.wire));
            (Some(zone), "empty-non-terminal", why, json!({}))
        }
    };
    // An owner of other types: the rule says why the name exists, the answer holds none of
    // the asked type (NODATA, RFC 2308 §2.2), and the reader must not take the rule's records
    // for the answer.
    let nodata = answered
        .as_ref()
        .is_some_and(|d| d["rcode"] == "NOERROR" && d["answer"].as_array().is_some_and(Vec::is_empty));
    let why = if nodata && matches!(rule, "exact-host" | "wildcard" | "srv" | "ptr") {
        format!(
            "{why}; but it owns no {} records: NODATA, with the zone's SOA for negative caching",
            text::type_name(q.qtype)
        )
    } else {
        why
    };
    let stale = answered
        .as_ref()
        .is_some_and(|d| d["extended_error"]["code"] == crate::dns::wire::ede::STALE_ANSWER);
    let mut value = json!({
        "question": { "name": q.name, "type": text::type_name(q.qtype) },
        "zone": zone.map(|z| &z.name),
        "rule": rule,
        "why": why,
        "answer": answered,
        "hosts": hosts.iter().map(|h| host_json(table, h)).collect::<Vec<_>>(),
        "stale": stale,
        "stale_sources": table.stale(),
        "serial": zone.map(|z| table.zone_serial(z)),
    });
    if let (Some(value), Some(extra)) = (value.as_object_mut(), extra.as_object_mut()) {
        value.append(extra);
    }
    value
}

/// What the server does with an AXFR or IXFR of `name`: which client asks, and over which
/// transport, decide it, and neither is known here (`dns/transfer.rs` answers it).
fn transfer(table: &Table, q: &Question, name: &str) -> Value {
    let zone = table.zones().iter().find(|z| *z.name == *name);
    let what = match zone {
        Some(zone) => format!(
            "the zone {} at serial {}: SOA, every record, SOA (an IXFR: the changes since the client's serial when the history holds them, else the whole zone; the single SOA when the client is current)",
            zone.name,
            table.zone_serial(zone)
        ),
        None => format!("NOTAUTH: {name} is not the apex of a served zone, and a transfer is never forwarded"),
    };
    let why = format!(
        "{} is a zone transfer, answered by who asks: a client outside --transfer-to gets REFUSED (EDE 18 Prohibited); to a client inside it, before the first complete sync SERVFAIL (EDE 14 Not Ready), then {what}. Over UDP an AXFR is NOTIMP and an IXFR gets the single SOA of the current version (RFC 1995 §2), the transfer itself then going over TCP. Whether a given client is in --transfer-to is not known here",
        text::type_name(q.qtype)
    );
    json!({
        "question": { "name": q.name, "type": text::type_name(q.qtype) },
        "zone": zone.map(|z| &z.name),
        "rule": "transfer",
        "why": why,
        "answer": Value::Null,
        "hosts": [],
        "stale": false,
        "stale_sources": table.stale(),
        "serial": zone.map(|z| table.zone_serial(z)),
    })
}

/// Why an in-zone name is NXDOMAIN, and what the table holds there that is no name.
fn not_a_name(table: &Table, wire: &[u8], name: &str, reverse: bool) -> (String, Value) {
    if reverse {
        let why = match reverse_address(wire) {
            Some(ip) => format!(
                "{name} is the reverse name of {ip}, which no exact host with records holds (a --default-address gets no PTR): NXDOMAIN"
            ),
            None => format!(
                "{name} is in a reverse zone but is neither the full reverse name of a table address nor above one: NXDOMAIN"
            ),
        };
        return (why, json!({ "address": reverse_address(wire) }));
    }
    if let Some(host) = table.host(wire) {
        let why = format!(
            "{name} is named by ServiceEntries but no rule gave it an address: a host without records is no name (NXDOMAIN), as Istio's DNS proxy answers"
        );
        return (why, json!({ "named_without_address": host.name }));
    }
    if let Some(wild) = table.wildcard_for(wire) {
        let why = format!(
            "{name} matches the wildcard {}, which has no address: not a name",
            wild.name
        );
        return (why, json!({ "wildcard": wild.name }));
    }
    (
        format!("no ServiceEntry host is {name}, lies below it, or has a wildcard matching it: NXDOMAIN"),
        json!({}),
    )
}

/// The explanation as text, for `globaldns explain`.
pub fn render(v: &Value) -> String {
    use std::fmt::Write;
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut out = String::new();
    let q = &v["question"];
    match &v["answer"] {
        Value::Null => {
            let _ = writeln!(out, "{} {}: {}", s(&q["name"]), s(&q["type"]), s(&v["rule"]));
        }
        a => {
            let flags: Vec<String> = a["flags"].as_array().into_iter().flatten().map(s).collect();
            let _ = write!(
                out,
                "{} {}: {} ({})",
                s(&q["name"]),
                s(&q["type"]),
                s(&a["rcode"]),
                flags.join(" ")
            );
            if a["extended_error"].is_object() {
                let e = &a["extended_error"];
                let _ = write!(out, ", EDE {} ({})", e["code"], s(&e["name"]));
            }
            out.push('\n');
            for (section, label) in [
                ("answer", ""),
                ("authority", "authority: "),
                ("additional", "additional: "),
            ] {
                for r in a[section].as_array().into_iter().flatten() {
                    let _ = writeln!(out, "  {label}{}", s(r));
                }
            }
        }
    }
    let zone = if v["zone"].is_null() {
        String::new()
    } else {
        format!(" in zone {}", s(&v["zone"]))
    };
    let _ = writeln!(out, "rule: {}{zone}", s(&v["rule"]));
    let _ = writeln!(out, "why: {}", s(&v["why"]));
    for h in v["hosts"].as_array().into_iter().flatten() {
        let stale = if h["stale"] == true {
            ", STALE: serving its last known entries"
        } else {
            ""
        };
        let _ = writeln!(out, "host {} from {}{stale}", s(&h["name"]), s(&h["source"]));
        for e in h["entries"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  entry {} {} ({})",
                s(&e["cluster"]),
                s(&e["entry"]),
                s(&e["rule"])
            );
        }
        for l in h["losing_sources"].as_array().into_iter().flatten() {
            let addresses: Vec<String> = l["addresses"].as_array().into_iter().flatten().map(s).collect();
            let _ = writeln!(out, "  lost: {} with {}", s(&l["cluster"]), addresses.join(", "));
        }
    }
    let stale: Vec<String> = v["stale_sources"].as_array().into_iter().flatten().map(s).collect();
    if !stale.is_empty() {
        let _ = writeln!(out, "stale sources: {}", stale.join(", "));
    }
    out
}

/// `globaldns explain` could not get an answer from the admin endpoint.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The request failed (connection refused, reset, …).
    #[error("asking {addr}: {source}")]
    Request {
        /// The admin address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The body could not be read.
    #[error("reading the answer of {addr}: {source}")]
    Body {
        /// The admin address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("{0} did not answer within 10 s")]
    Timeout(SocketAddr),
}

/// Asks the admin endpoint at `admin` to explain `name` of type `qtype`: the HTTP status and
/// the body (a bad question is a 400 with the reason in the body, not an error).
///
/// # Errors
///
/// - [`FetchError::Request`] when the request fails (connection refused, reset);
/// - [`FetchError::Body`] when the body cannot be read to its end;
/// - [`FetchError::Timeout`] when the whole exchange takes over 10 s.
pub async fn fetch(admin: SocketAddr, name: &str, qtype: &str) -> Result<(u16, String), FetchError> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .append_pair("type", qtype)
        .finish();
    let uri: hyper::Uri = format!("http://{admin}/debug/explain?{query}")
        .parse()
        .expect("a socket address and an encoded query make a URI");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ask = async {
        let response = client
            .get(uri)
            .await
            .map_err(|source| FetchError::Request { addr: admin, source })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| FetchError::Body { addr: admin, source })?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .map_err(|_| FetchError::Timeout(admin))?
}

#[cfg(test)]
mod tests;
