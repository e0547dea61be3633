//! The answer path: (table, query bytes) → response bytes. Pure, synchronous, no allocation
//! beyond the caller's reused output buffer.
//!
//! Semantics are DESIGN.md "Answers":
//! - NXDOMAIN only for names that do not exist; NODATA (NOERROR, empty answer) for existing
//!   names without records of the type and for empty non-terminals (RFC 8020);
//! - negative answers carry the zone SOA, TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308 §3), the
//!   MINIMUM being `--negative-ttl`;
//! - SRV answers carry their target's A and AAAA records in the additional section; PTR
//!   answers at most [`PTR_MAX`](crate::table::PTR_MAX) records (both precomputed in the
//!   table: [`crate::table::derived`]);
//! - Extended DNS Errors (RFC 8914) in the OPT record of clients that sent EDNS: Not Ready
//!   before the first sync, Prohibited for a refused transfer, Stale Answer when the records
//!   come from a stale source (a negative answer: when any source is stale);
//! - the question is copied verbatim and owner names point at it, so the query's letter
//!   case comes back unchanged (0x20 randomisation);
//! - EDNS(0): an OPT in the answer when the query had one, payload 1232, BADVERS for a
//!   version above 0 (RFC 6891 §6.1.3);
//! - an answer larger than the client allows over UDP (512, or its EDNS size up to 1232)
//!   carries TC=1 and every whole record that fits (RFC 2181 §9): stubs that cannot retry
//!   over TCP (musl before 1.2.4, in Alpine pods) use those records. Records are written in
//!   section order (answer, authority, additional), each only where it still fits beside the
//!   OPT record (and its EDE), so what is cut is the additional section first, then answer
//!   records from the end; the OPT record always stays. TC is set only when answer or
//!   authority records were cut: additional records (an SRV target's addresses) are extra
//!   information a client can ask for (RFC 2181 §9). Over TCP (RFC 7766) an RRset too large for one
//!   65 535-byte message is served with the records that fit, and TC is never set (no
//!   client could act on it); the table build warns about such hosts.

use super::wire::{self, CLASS_ANY, CLASS_IN, Reject, ede, flag, rcode, rtype};
use crate::table::{Ahead, Host, Lookup, Ptr, Srv, Table};

mod response;

use response::{Response, Section};

/// The UDP payload size we advertise and the most we send over UDP (DNS flag day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Most address records in an answer to ANY (RFC 8482: keep ANY small).
pub const ANY_MAX_ADDRESSES: usize = 8;

/// How the query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited in size.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// What to do with the response buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send it.
    Reply,
    /// Send nothing.
    Drop,
    /// Out of every served zone: forward the query (the buffer is empty).
    Forward,
    /// AXFR over TCP or IXFR over either, whatever the name: a zone transfer, answered off
    /// the hot path (`dns/transfer.rs`: access, readiness, the zone; over UDP the single SOA)
    /// (the buffer is empty).
    Transfer,
}

/// A small, fast generator for shuffling answers (xorshift64*); not for secrets.
#[derive(Debug, Clone)]
pub struct Shuffler(u64);

impl Shuffler {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Self {
        Shuffler(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) * n as u64) >> 32) as usize
    }
}

/// How the answer path behaves beyond the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// Out-of-zone names are forwarded (else REFUSED); responses then say RA=1, as the
    /// client may ask this server for any name.
    pub forwarding: bool,
}

/// A header-only reply to a message that is not a well-formed query.
fn header_reply(msg: &[u8], code: u16, flags: u16, out: &mut Vec<u8>) {
    out.clear();
    let query_flags = u16::from_be_bytes([msg[2], msg[3]]);
    out.extend_from_slice(&msg[..2]);
    let flags = flag::QR | flags | (query_flags & (flag::OPCODE | flag::RD | flag::CD)) | code;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// An error reply (`code`, no records) to `msg`, echoing its question and OPT when it is a
/// well-formed query; for SERVFAIL when forwarding fails.
pub fn error_reply(msg: &[u8], code: u16, recursion_available: bool, out: &mut Vec<u8>) {
    error_reply_with_ede(msg, code, recursion_available, None, out);
}

/// [`error_reply`] carrying the Extended DNS Error `ede` (RFC 8914, [`wire::ede`]) when the
/// query had EDNS.
pub fn error_reply_with_ede(msg: &[u8], code: u16, recursion_available: bool, ede: Option<u16>, out: &mut Vec<u8>) {
    let ra = if recursion_available { flag::RA } else { 0 };
    match wire::parse(msg) {
        Ok(query) => {
            out.clear();
            let mut r = Response::start(&query, out, Transport::Udp);
            if let Some(code) = ede {
                r.ede(code);
            }
            r.finish(code, ra);
        }
        Err(_) if msg.len() >= wire::HEADER_LEN => header_reply(msg, code, ra, out),
        Err(_) => out.clear(),
    }
}

/// Fetches the lookups of a batch of queries into the CPU caches ahead of answering them
/// ([`Table::ahead`], then [`Table::fetch`]), when the table is large enough for its lookups
/// to miss the caches ([`Table::fetches_ahead`]): the misses of the batch's lookups then
/// overlap instead of each waiting for the one before. Only each query's name is read for it
/// ([`wire::question_name`]; the query is parsed when answered). The answers are the same
/// with or without.
pub fn fetch_ahead<'q>(table: &Table, queries: impl IntoIterator<Item = &'q [u8]>, ahead: &mut Ahead) {
    ahead.clear();
    if !table.fetches_ahead() {
        return;
    }
    let mut name = [0; wire::LOWER_LEN];
    for msg in queries {
        if let Some(name) = wire::question_name(msg, &mut name) {
            table.ahead(ahead, name);
        }
    }
    table.fetch(ahead);
}

/// Answers `msg` from `table` into `out` (cleared first).
pub fn answer(
    table: &Table,
    msg: &[u8],
    transport: Transport,
    mode: Mode,
    rng: &mut Shuffler,
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    let ra = if mode.forwarding { flag::RA } else { 0 };
    // Borrowed where it was parsed, not moved out: a query is ~300 bytes (its lower-case name).
    let parsed = wire::parse(msg);
    let query = match &parsed {
        Ok(q) => q,
        Err(Reject::Drop) => return Outcome::Drop,
        Err(Reject::Reply(code)) => {
            header_reply(msg, *code, ra, out);
            return Outcome::Reply;
        }
    };
    let lookup = table.lookup(query.lower_name());
    if matches!(lookup, Lookup::OutOfZone) && mode.forwarding && !matches!(query.qtype, rtype::AXFR | rtype::IXFR) {
        // Forwarded whatever its EDNS version or class: the upstream decides. A transfer
        // never is: it is answered here (below), whatever its name.
        return Outcome::Forward;
    }
    let mut r = Response::start(query, out, transport);
    if query.edns.is_some_and(|e| e.version > 0) {
        r.finish(rcode::BADVERS, ra);
        return Outcome::Reply;
    }
    let (zone, host, srv, ptr, apex, addresses) = match lookup {
        _ if query.qclass != CLASS_IN && query.qclass != CLASS_ANY => {
            r.finish(rcode::REFUSED, ra);
            return Outcome::Reply;
        }
        // Never an AXFR over UDP (RFC 5936 §4.2; Knot answers NOTIMP too).
        _ if query.qtype == rtype::AXFR && transport == Transport::Udp => {
            r.finish(rcode::NOTIMP, ra);
            return Outcome::Reply;
        }
        // AXFR over TCP, IXFR over either: access, readiness and the zone are decided off
        // the hot path, in and out of the served zones alike (dns/transfer.rs).
        _ if matches!(query.qtype, rtype::AXFR | rtype::IXFR) => {
            r.out.clear();
            return Outcome::Transfer;
        }
        Lookup::OutOfZone => {
            r.finish(rcode::REFUSED, ra);
            return Outcome::Reply;
        }
        _ if !table.synced() => {
            r.ede(ede::NOT_READY);
            r.finish(rcode::SERVFAIL, ra);
            return Outcome::Reply;
        }
        Lookup::NxDomain { zone } => {
            if table.any_stale() {
                r.ede(ede::STALE_ANSWER);
            }
            r.soa(zone, table, Section::Authority);
            r.finish(rcode::NXDOMAIN, flag::AA | ra);
            return Outcome::Reply;
        }
        Lookup::Exists {
            zone,
            host,
            srv,
            ptr,
            apex,
            addresses,
        } => (zone, host, srv, ptr, apex, addresses),
    };
    if table.any_stale() && stale(table, query.qtype, host, srv, ptr, apex) {
        r.ede(ede::STALE_ANSWER);
    }
    let ttl = table.ttl();
    match query.qtype {
        rtype::A => r.addresses(addresses.a(), ttl, rtype::A, usize::MAX, rng),
        rtype::AAAA => r.addresses(addresses.aaaa(), ttl, rtype::AAAA, usize::MAX, rng),
        rtype::SRV => {
            if let Some(srv) = srv {
                r.srv(&srv, ttl, usize::MAX);
                r.targets(&srv, ttl, rng);
            }
        }
        rtype::PTR => {
            if let Some(ptr) = ptr {
                r.ptr(ptr.served(), ttl);
            }
        }
        rtype::SOA if apex => r.soa(zone, table, Section::Answer),
        rtype::NS if apex => r.ns(zone, ttl),
        rtype::ANY => {
            if apex {
                r.soa(zone, table, Section::Answer);
                r.ns(zone, ttl);
            }
            let v4 = addresses.a().len().min(ANY_MAX_ADDRESSES);
            r.addresses(addresses.a(), ttl, rtype::A, v4, rng);
            let v6 = addresses.aaaa().len().min(ANY_MAX_ADDRESSES - v4);
            r.addresses(addresses.aaaa(), ttl, rtype::AAAA, v6, rng);
            if let Some(srv) = srv {
                r.srv(&srv, ttl, ANY_MAX_ADDRESSES);
            }
            if let Some(ptr) = ptr {
                r.ptr(ptr.served(), ttl);
            }
        }
        _ => {}
    }
    if r.counts[Section::Answer as usize] == 0 {
        r.soa(zone, table, Section::Authority);
    }
    r.finish(rcode::NOERROR, flag::AA | ra);
    Outcome::Reply
}

/// Whether the answer to `qtype` at a name that exists is stale (DESIGN "Extended DNS
/// Errors"): records come from a stale source (for PTR, one of the hosts served), or there are
/// none (NODATA) while some source is stale. The apex SOA and NS come from no source.
#[cold]
#[inline(never)]
fn stale(table: &Table, qtype: u16, host: Option<&Host>, srv: Option<Srv<'_>>, ptr: Option<&Ptr>, apex: bool) -> bool {
    let host_stale = |h: &Host| table.is_stale(&h.source);
    let ptr_stale = |p: &Ptr| p.served().iter().any(|t| table.is_stale(t.source()));
    let (a, aaaa) = host.map_or((false, false), |h| (!h.a.is_empty(), !h.aaaa.is_empty()));
    match qtype {
        rtype::A if a => host.is_some_and(host_stale),
        rtype::AAAA if aaaa => host.is_some_and(host_stale),
        rtype::SRV if srv.is_some() => srv.is_some_and(|s| host_stale(s.host())),
        rtype::PTR if ptr.is_some() => ptr.is_some_and(ptr_stale),
        rtype::SOA | rtype::NS if apex => false,
        rtype::ANY if host.is_some() || srv.is_some() || ptr.is_some() => {
            host.is_some_and(host_stale) || srv.is_some_and(|s| host_stale(s.host())) || ptr.is_some_and(ptr_stale)
        }
        rtype::ANY if apex => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests;
