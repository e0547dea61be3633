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

use super::wire::{self, CLASS_ANY, CLASS_IN, Query, Reject, ede, flag, rcode, rtype};
use crate::table::derived::{SRV_PRIORITY, SRV_WEIGHT};
use crate::table::{
    HOSTMASTER_LABEL, Host, Lookup, NS_LABELS, Ptr, PtrTarget, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Srv, Table, Zone,
};

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
    /// AXFR or IXFR over TCP in a served zone: a zone transfer, answered off the hot path
    /// (`dns/transfer.rs`: access, readiness, the zone) (the buffer is empty).
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
    let query = match wire::parse(msg) {
        Ok(q) => q,
        Err(Reject::Drop) => return Outcome::Drop,
        Err(Reject::Reply(code)) => {
            header_reply(msg, code, ra, out);
            return Outcome::Reply;
        }
    };
    let lookup = table.lookup(query.lower_name());
    if matches!(lookup, Lookup::OutOfZone) && mode.forwarding {
        // Forwarded whatever its EDNS version or class: the upstream decides.
        return Outcome::Forward;
    }
    let mut r = Response::start(&query, out, transport);
    if query.edns.is_some_and(|e| e.version > 0) {
        r.finish(rcode::BADVERS, ra);
        return Outcome::Reply;
    }
    let (zone, host, srv, ptr, apex) = match lookup {
        Lookup::OutOfZone => {
            r.finish(rcode::REFUSED, ra);
            return Outcome::Reply;
        }
        _ if query.qclass != CLASS_IN && query.qclass != CLASS_ANY => {
            r.finish(rcode::REFUSED, ra);
            return Outcome::Reply;
        }
        // Never a transfer over UDP (RFC 5936 §4.2, as Knot and NSD answer).
        _ if matches!(query.qtype, rtype::AXFR | rtype::IXFR) && transport == Transport::Udp => {
            r.finish(rcode::NOTIMP, ra);
            return Outcome::Reply;
        }
        _ if matches!(query.qtype, rtype::AXFR | rtype::IXFR) => {
            r.out.clear();
            return Outcome::Transfer;
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
        } => (zone, host, srv, ptr, apex),
    };
    if table.any_stale() && stale(table, query.qtype, host, srv, ptr, apex) {
        r.ede(ede::STALE_ANSWER);
    }
    let ttl = table.ttl();
    let (a, aaaa) = host.map_or((&[][..], &[][..]), |h| (&h.a[..], &h.aaaa[..]));
    match query.qtype {
        rtype::A => r.addresses(a.iter().map(|ip| ip.octets()), ttl, rtype::A, usize::MAX, rng),
        rtype::AAAA => r.addresses(aaaa.iter().map(|ip| ip.octets()), ttl, rtype::AAAA, usize::MAX, rng),
        rtype::SRV => {
            if let Some(srv) = srv {
                r.srv(srv, ttl, usize::MAX);
                r.targets(srv, ttl, rng);
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
            let v4 = a.len().min(ANY_MAX_ADDRESSES);
            r.addresses(a.iter().map(|ip| ip.octets()), ttl, rtype::A, v4, rng);
            let v6 = aaaa.len().min(ANY_MAX_ADDRESSES - v4);
            r.addresses(aaaa.iter().map(|ip| ip.octets()), ttl, rtype::AAAA, v6, rng);
            if let Some(srv) = srv {
                r.srv(srv, ttl, ANY_MAX_ADDRESSES);
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
fn stale(table: &Table, qtype: u16, host: Option<&Host>, srv: Option<&Srv>, ptr: Option<&Ptr>, apex: bool) -> bool {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// Bytes of the OPT record we answer with (root owner, no options).
const OPT_LEN: usize = 11;
/// Bytes of an Extended DNS Error option without EXTRA-TEXT (RFC 8914 §2).
const EDE_LEN: usize = 6;
/// Compression pointer to the question name.
const QNAME: [u8; 2] = (0xC000 | wire::HEADER_LEN as u16).to_be_bytes();

/// A response under construction: header, verbatim question, then records, each written only
/// where it fits under the size limit with room left for the OPT record (and its EDE).
struct Response<'q, 'o> {
    query: &'q Query<'q>,
    out: &'o mut Vec<u8>,
    counts: [u16; 3],
    /// The most bytes the response may have, OPT included.
    limit: usize,
    /// Bytes kept free for the OPT record.
    reserve: usize,
    /// TC may be set (UDP).
    udp: bool,
    /// An answer or authority record was left out for want of room (additional records are
    /// extra information: leaving them out sets no TC, RFC 2181 §9).
    cut: bool,
    /// The Extended DNS Error of the OPT record, if any.
    ede: Option<u16>,
}

impl<'q, 'o> Response<'q, 'o> {
    fn start(query: &'q Query<'q>, out: &'o mut Vec<u8>, transport: Transport) -> Self {
        out.extend_from_slice(&query.id.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(query.question);
        let limit = match (transport, query.edns) {
            (Transport::Tcp, _) => u16::MAX as usize,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => e.udp_size.clamp(512, EDNS_UDP_SIZE) as usize,
        };
        Response {
            query,
            out,
            counts: [0; 3],
            limit,
            reserve: if query.edns.is_some() { OPT_LEN } else { 0 },
            udp: transport == Transport::Udp,
            cut: false,
            ede: None,
        }
    }

    /// Adds the Extended DNS Error `code` to the OPT record, when the query had one (never to
    /// clients without EDNS, RFC 8914 §3). Called before any record is written, so that the
    /// records leave it room: a reply never grows past the client's limit (header and question
    /// take at most 271 bytes of the 512 every client allows).
    fn ede(&mut self, code: u16) {
        debug_assert!(self.counts == [0; 3], "the EDE is decided before the records");
        if self.query.edns.is_some() && self.ede.is_none() {
            self.ede = Some(code);
            self.reserve += EDE_LEN;
        }
    }

    /// How many records of `size` bytes still fit.
    fn room(&self, size: usize) -> usize {
        self.limit.saturating_sub(self.out.len() + self.reserve) / size
    }

    /// Whether one more record of `size` bytes fits; if not, the response is cut.
    fn fits(&mut self, size: usize) -> bool {
        let fits = self.room(size) > 0;
        self.cut |= !fits;
        fits
    }

    /// Compression pointer to the zone apex inside the question name.
    fn apex_pointer(&self, zone: &Zone) -> [u8; 2] {
        self.pointer(zone.wire().len())
    }

    /// Compression pointer to the suffix of `len` bytes of the question name.
    fn pointer(&self, len: usize) -> [u8; 2] {
        let at = wire::HEADER_LEN + self.query.lower_name().len() - len;
        (0xC000 | at as u16).to_be_bytes()
    }

    fn rr_header(&mut self, owner: [u8; 2], rtype: u16, ttl: u32, rdlen: usize) {
        self.out.extend_from_slice(&owner);
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    }

    /// Address records owned by the query name, in the answer section.
    fn addresses<const N: usize>(
        &mut self,
        ips: impl ExactSizeIterator<Item = [u8; N]>,
        ttl: u32,
        rtype: u16,
        max: usize,
        rng: &mut Shuffler,
    ) {
        self.address_records(ips, QNAME, ttl, rtype, max, Section::Answer, rng);
    }

    /// Address records owned by `owner` (a compression pointer) in `section`, at most `max` of
    /// them and as many as fit: a uniformly random choice of the addresses (every one equally
    /// likely to be served, so clients of a cut answer spread over all of them), in random
    /// order.
    #[allow(clippy::too_many_arguments)]
    fn address_records<const N: usize>(
        &mut self,
        mut ips: impl ExactSizeIterator<Item = [u8; N]>,
        owner: [u8; 2],
        ttl: u32,
        rtype: u16,
        max: usize,
        section: Section,
        rng: &mut Shuffler,
    ) {
        let size = 12 + N;
        let wanted = ips.len().min(max);
        let kept = wanted.min(self.room(size));
        self.cut |= kept < wanted && section != Section::Additional;
        let start = self.out.len();
        for ip in ips.by_ref().take(kept) {
            self.rr_header(owner, rtype, ttl, N);
            self.out.extend_from_slice(&ip);
        }
        let records = &mut self.out[start..];
        if kept > 0 {
            // Reservoir sampling (Algorithm R) over the addresses not written.
            for (i, ip) in ips.enumerate() {
                let j = rng.below(kept + i + 1);
                if j < kept {
                    records[j * size + 12..(j + 1) * size].copy_from_slice(&ip);
                }
            }
        }
        // Fisher–Yates over the records kept.
        for i in (1..kept).rev() {
            let j = rng.below(i + 1);
            if i != j {
                let (lo, hi) = records.split_at_mut(i * size);
                lo[j * size..(j + 1) * size].swap_with_slice(&mut hi[..size]);
            }
        }
        self.counts[section as usize] += kept as u16;
    }

    /// The SRV records of the query name (at most `max`), from the end cut when they do not
    /// fit. The target is written whole: RFC 2782 forbids compressing it.
    fn srv(&mut self, srv: &Srv, ttl: u32, max: usize) {
        let target = srv.target();
        let rdlen = 6 + target.len();
        for &port in srv.ports().iter().take(max) {
            if !self.fits(12 + rdlen) {
                return;
            }
            self.rr_header(QNAME, rtype::SRV, ttl, rdlen);
            self.out.extend_from_slice(&SRV_PRIORITY.to_be_bytes());
            self.out.extend_from_slice(&SRV_WEIGHT.to_be_bytes());
            self.out.extend_from_slice(&port.to_be_bytes());
            self.out.extend_from_slice(target);
            self.counts[Section::Answer as usize] += 1;
        }
    }

    /// The SRV target's A and AAAA records in the additional section, owned by the target
    /// inside the question name (`_p._tcp.<host>`); what does not fit is left out, without TC,
    /// and nothing when answer records were cut already (the additional section goes first).
    fn targets(&mut self, srv: &Srv, ttl: u32, rng: &mut Shuffler) {
        if self.cut {
            return;
        }
        let owner = self.pointer(srv.target().len());
        let host = srv.host();
        let (a, aaaa) = (
            host.a.iter().map(|ip| ip.octets()),
            host.aaaa.iter().map(|ip| ip.octets()),
        );
        self.address_records(a, owner, ttl, rtype::A, usize::MAX, Section::Additional, rng);
        self.address_records(aaaa, owner, ttl, rtype::AAAA, usize::MAX, Section::Additional, rng);
    }

    /// PTR records of the query name to `targets`, from the end cut when they do not fit.
    fn ptr(&mut self, targets: &[PtrTarget], ttl: u32) {
        for target in targets {
            let name = target.wire();
            if !self.fits(12 + name.len()) {
                return;
            }
            self.rr_header(QNAME, rtype::PTR, ttl, name.len());
            self.out.extend_from_slice(name);
            self.counts[Section::Answer as usize] += 1;
        }
    }

    fn soa(&mut self, zone: &Zone, table: &Table, section: Section) {
        let rdlen = NS_LABELS.len() + 2 + HOSTMASTER_LABEL.len() + 2 + 20;
        if !self.fits(12 + rdlen) {
            return;
        }
        let apex = self.apex_pointer(zone);
        let minimum = table.negative_ttl();
        // RFC 2308 §3: the SOA of a negative answer has TTL min(SOA TTL, MINIMUM).
        let ttl = match section {
            Section::Authority => table.ttl().min(minimum),
            _ => table.ttl(),
        };
        self.rr_header(apex, rtype::SOA, ttl, rdlen);
        self.out.extend_from_slice(NS_LABELS);
        self.out.extend_from_slice(&apex);
        self.out.extend_from_slice(HOSTMASTER_LABEL);
        self.out.extend_from_slice(&apex);
        for v in [table.zone_serial(zone), SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, minimum] {
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        self.counts[section as usize] += 1;
    }

    fn ns(&mut self, zone: &Zone, ttl: u32) {
        let rdlen = NS_LABELS.len() + 2;
        if !self.fits(12 + rdlen) {
            return;
        }
        let apex = self.apex_pointer(zone);
        self.rr_header(apex, rtype::NS, ttl, rdlen);
        self.out.extend_from_slice(NS_LABELS);
        self.out.extend_from_slice(&apex);
        self.counts[Section::Answer as usize] += 1;
    }

    fn opt(&mut self, code: u16) {
        let Some(edns) = self.query.edns else { return };
        let ext = u32::from(code >> 4) << 24;
        let dnssec_ok = if edns.dnssec_ok { 0x8000 } else { 0 };
        self.out.push(0);
        self.out.extend_from_slice(&rtype::OPT.to_be_bytes());
        self.out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
        self.out.extend_from_slice(&(ext | dnssec_ok).to_be_bytes());
        match self.ede {
            Some(info) => {
                self.out.extend_from_slice(&(EDE_LEN as u16).to_be_bytes());
                self.out.extend_from_slice(&ede::OPTION.to_be_bytes());
                self.out.extend_from_slice(&2u16.to_be_bytes());
                self.out.extend_from_slice(&info.to_be_bytes());
            }
            None => self.out.extend_from_slice(&[0, 0]),
        }
    }

    /// Writes flags, counts and OPT; TC=1 over UDP when an answer or authority record was
    /// left out.
    fn finish(mut self, code: u16, flags: u16) {
        let mut flags = flag::QR | flags | (self.query.flags & (flag::RD | flag::CD)) | (code & 0xF);
        if self.cut && self.udp {
            flags |= flag::TC;
        }
        self.opt(code);
        let additional = self.counts[Section::Additional as usize] + u16::from(self.query.edns.is_some());
        self.out[2..4].copy_from_slice(&flags.to_be_bytes());
        self.out[6..8].copy_from_slice(&self.counts[0].to_be_bytes());
        self.out[8..10].copy_from_slice(&self.counts[1].to_be_bytes());
        self.out[10..12].copy_from_slice(&additional.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
