//! The one adapter to hickory-proto (pinned `=0.26.3`): transfer and NOTIFY messages are
//! parsed and built here, from and to the table's own types ([`ZoneRecord`], [`Soa`]); no
//! hickory type leaves this module. The hot path keeps its own wire code (DESIGN "Why the
//! hot path is our own wire code").

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData as HData, Record, RecordType};

use crate::table::derived::{SRV_PRIORITY, SRV_WEIGHT};
use crate::table::{RData, Soa, ZoneRecord};

/// Most bytes of one message of a transfer (the bound; RFC 5936 §2.2 allows up to
/// 65 535).
pub(super) const MAX_MESSAGE: usize = 16 * 1024;

/// Extended DNS Error codes (RFC 8914 §4) a transfer answers with.
pub(super) mod ede {
    /// 14 Not Ready.
    pub(crate) const NOT_READY: u16 = 14;
    /// 18 Prohibited.
    pub(crate) const PROHIBITED: u16 = 18;
}

/// The kinds of transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// RFC 5936.
    Axfr,
    /// RFC 1995.
    Ixfr,
}

impl Kind {
    /// `AXFR` or `IXFR`, as the metrics label it.
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Axfr => "AXFR",
            Kind::Ixfr => "IXFR",
        }
    }
}

/// A transfer request, as the transfer logic needs it.
#[derive(Debug, Clone)]
pub(super) struct Request {
    message: Message,
    /// The question's name, lower case, presentation form without trailing dot.
    pub zone: String,
    /// AXFR or IXFR.
    pub kind: Kind,
    /// The client's serial: the SOA of the authority section of an IXFR (RFC 1995 §3).
    pub client_serial: Option<u32>,
    /// The query had EDNS.
    pub edns: bool,
}

/// Why a message is not a transfer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NotARequest;

/// Parses a transfer request (the answer path has checked it is AXFR/IXFR, one question).
pub(super) fn parse_request(bytes: &[u8]) -> Result<Request, NotARequest> {
    let message = Message::from_vec(bytes).map_err(|_| NotARequest)?;
    let query = message.queries.first().ok_or(NotARequest)?;
    let kind = match query.query_type() {
        RecordType::AXFR => Kind::Axfr,
        RecordType::IXFR => Kind::Ixfr,
        _ => return Err(NotARequest),
    };
    let zone = query.name().to_lowercase().to_ascii();
    let client_serial = message.authorities.iter().find_map(|r| match &r.data {
        HData::SOA(soa) => Some(soa.serial),
        _ => None,
    });
    Ok(Request {
        zone: zone.trim_end_matches('.').to_owned(),
        kind,
        client_serial,
        edns: message.edns.is_some(),
        message,
    })
}

fn name(text: &str) -> Name {
    let mut n = Name::from_ascii(text).unwrap_or_default();
    n.set_fqdn(true);
    n
}

fn soa_record(soa: &Soa) -> Record {
    let data = SOA::new(
        name(&soa.mname),
        name(&soa.rname),
        soa.serial,
        soa.refresh as i32,
        soa.retry as i32,
        soa.expire as i32,
        soa.minimum,
    );
    Record::from_rdata(name(&soa.zone), soa.ttl, HData::SOA(data))
}

fn record(r: &ZoneRecord, ttl: u32) -> Record {
    let data = match &r.data {
        RData::Ns(n) => HData::NS(NS(name(n))),
        RData::A(ip) => HData::A(A(*ip)),
        RData::Aaaa(ip) => HData::AAAA(AAAA(*ip)),
        RData::Srv { port, target } => HData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, *port, name(target))),
        RData::Ptr(target) => HData::PTR(PTR(name(target))),
    };
    Record::from_rdata(name(&r.owner), ttl, data)
}

/// A piece of a transfer's answer, in order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item<'a> {
    /// An SOA record.
    Soa(&'a Soa),
    /// A record of the zone, at `ttl`.
    Record(&'a ZoneRecord, u32),
}

/// Upper bound of an item's wire size (no name compression counted).
fn item_size(item: &Item<'_>) -> usize {
    match item {
        Item::Soa(s) => s.zone.len() + 2 + 10 + s.mname.len() + s.rname.len() + 4 + 20,
        Item::Record(r, _) => r.size(),
    }
}

fn response(request: &Request, code: ResponseCode) -> Message {
    let mut m = Message::new(request.message.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = code == ResponseCode::NoError;
    m.metadata.response_code = code;
    m.add_queries(request.message.queries.iter().cloned());
    if request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
    }
    m
}

/// A one-message error answer, with an Extended DNS Error `ede` when the query had EDNS.
pub(super) fn error(request: &Request, code: u16, ede: Option<u16>) -> Vec<u8> {
    let mut m = response(request, ResponseCode::from(0, code as u8));
    if let (Some(info), Some(edns)) = (ede, m.edns.as_mut()) {
        edns.options_mut()
            .insert(EdnsOption::Unknown(15, info.to_be_bytes().to_vec()));
    }
    m.to_vec().unwrap_or_default()
}

/// A header-only FORMERR for a message that is no transfer request.
pub(super) fn formerr(query: &[u8]) -> Vec<u8> {
    let id = query.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::FormErr;
    m.to_vec().unwrap_or_default()
}

/// The answer to `request`: `items` in order, split into messages of at most
/// [`MAX_MESSAGE`] bytes (RFC 5936 §2.2); the question only in the first (§2.2.1).
pub(super) fn transfer(request: &Request, items: &[Item<'_>]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current = response(request, ResponseCode::NoError);
    let base = |m: &Message| m.to_vec().map_or(512, |v| v.len());
    let mut size = base(&current);
    for item in items {
        let bytes = item_size(item);
        if !current.answers.is_empty() && size + bytes > MAX_MESSAGE {
            messages.push(current.to_vec().unwrap_or_default());
            current = response(request, ResponseCode::NoError);
            current.queries.clear();
            size = base(&current);
        }
        current.add_answer(match item {
            Item::Soa(s) => soa_record(s),
            Item::Record(r, ttl) => record(r, *ttl),
        });
        size += bytes;
    }
    messages.push(current.to_vec().unwrap_or_default());
    messages
}

/// A NOTIFY for `soa`'s zone (RFC 1996 §3.7: the SOA in the answer section), with `id`.
pub(super) fn notify(soa: &Soa, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(name(&soa.zone), RecordType::SOA));
    m.queries[0].set_query_class(DNSClass::IN);
    m.add_answer(soa_record(soa));
    m.to_vec().unwrap_or_default()
}

/// Whether `bytes` acknowledge the NOTIFY `id` (RFC 1996 §4.7: a response, opcode NOTIFY,
/// the same ID, NOERROR).
pub(super) fn acknowledges(bytes: &[u8], id: u16) -> bool {
    Message::from_vec(bytes).is_ok_and(|m| {
        m.metadata.message_type == MessageType::Response
            && m.metadata.op_code == OpCode::Notify
            && m.metadata.id == id
            && m.metadata.response_code == ResponseCode::NoError
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_within_the_bound_and_keep_every_record_in_order() {
        let records: Vec<ZoneRecord> = (0..5000u32)
            .map(|i| ZoneRecord {
                owner: format!("host-number-{i}.some-namespace.global").into(),
                data: RData::A(i.into()),
            })
            .collect();
        let soa = Soa {
            zone: "global".into(),
            mname: "ns.dns.global".into(),
            rname: "hostmaster.global".into(),
            serial: 9,
            refresh: 1,
            retry: 2,
            expire: 3,
            minimum: 4,
            ttl: 30,
        };
        let q = {
            let mut m = Message::query();
            m.add_query(Query::query(name("global"), RecordType::AXFR));
            parse_request(&m.to_vec().unwrap()).unwrap()
        };
        let items: Vec<Item<'_>> = std::iter::once(Item::Soa(&soa))
            .chain(records.iter().map(|r| Item::Record(r, 30)))
            .chain(std::iter::once(Item::Soa(&soa)))
            .collect();
        let messages = transfer(&q, &items);
        assert!(messages.len() > 5, "{} messages", messages.len());
        let mut seen = Vec::new();
        for (i, bytes) in messages.iter().enumerate() {
            assert!(bytes.len() <= MAX_MESSAGE, "{}", bytes.len());
            let m = Message::from_vec(bytes).unwrap();
            assert_eq!(m.queries.len(), usize::from(i == 0));
            seen.extend(m.answers);
        }
        assert_eq!(seen.len(), records.len() + 2);
        assert_eq!(seen[1].name.to_ascii(), "host-number-0.some-namespace.global.");
    }
}
