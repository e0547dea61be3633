//! A response under construction: the header and the verbatim question, then records, each
//! written only where it still fits the client's limit beside the OPT record (and its EDE), so
//! what a large answer loses is the additional section first (no TC: RFC 2181 §9), then
//! answer records from the end (TC over UDP). Compression pointers point into the question,
//! so owner names keep the query's letter case.

use super::{EDNS_UDP_SIZE, Shuffler, Transport};
use crate::dns::wire::{self, CLASS_IN, Query, ede, flag, rtype};
use crate::table::derived::{SRV_PRIORITY, SRV_WEIGHT};
use crate::table::{
    HOSTMASTER_LABEL, NS_LABELS, Octets, PtrTarget, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Srv, Table, ToOctets, Zone,
};

/// The section a record goes in (its index in [`Response::counts`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
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
pub(super) struct Response<'q, 'o> {
    query: &'q Query<'q>,
    pub(super) out: &'o mut Vec<u8>,
    pub(super) counts: [u16; 3],
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
    #[inline]
    pub(super) fn start(query: &'q Query<'q>, out: &'o mut Vec<u8>, transport: Transport) -> Self {
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
    #[inline]
    pub(super) fn ede(&mut self, code: u16) {
        debug_assert!(self.counts == [0; 3], "the EDE is decided before the records");
        if self.query.edns.is_some() && self.ede.is_none() {
            self.ede = Some(code);
            self.reserve += EDE_LEN;
        }
    }

    /// How many records of `size` bytes still fit.
    #[inline]
    fn room(&self, size: usize) -> usize {
        self.limit.saturating_sub(self.out.len() + self.reserve) / size
    }

    /// Whether one more record of `size` bytes fits; if not, the response is cut.
    #[inline]
    fn fits(&mut self, size: usize) -> bool {
        let fits = self.room(size) > 0;
        self.cut |= !fits;
        fits
    }

    /// Compression pointer to the zone apex inside the question name.
    #[inline]
    fn apex_pointer(&self, zone: &Zone) -> [u8; 2] {
        self.pointer(zone.wire().len())
    }

    /// Compression pointer to the suffix of `len` bytes of the question name.
    #[inline]
    fn pointer(&self, len: usize) -> [u8; 2] {
        let at = wire::HEADER_LEN + self.query.lower_name().len() - len;
        (0xC000 | at as u16).to_be_bytes()
    }

    #[inline]
    fn rr_header(&mut self, owner: [u8; 2], rtype: u16, ttl: u32, rdlen: usize) {
        self.out.extend_from_slice(&owner);
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    }

    /// Address records owned by the query name, in the answer section (where they are read
    /// from decided once, not per record).
    #[inline]
    pub(super) fn addresses<T: ToOctets<N>, const N: usize>(
        &mut self,
        ips: Octets<'_, T, N>,
        ttl: u32,
        rtype: u16,
        max: usize,
        rng: &mut Shuffler,
    ) {
        match ips {
            Octets::Inline(ips) => self.address_records(ips.copied(), QNAME, ttl, rtype, max, Section::Answer, rng),
            Octets::Host(ips) => {
                let ips = ips.map(ToOctets::to_octets);
                self.address_records(ips, QNAME, ttl, rtype, max, Section::Answer, rng);
            }
        }
    }

    /// Address records owned by `owner` (a compression pointer) in `section`, at most `max` of
    /// them and as many as fit: a uniformly random choice of the addresses (every one equally
    /// likely to be served, so clients of a cut answer spread over all of them), in random
    /// order.
    #[allow(clippy::too_many_arguments)]
    #[inline]
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
        // Each record written in one piece: its header is the same for all of them.
        let mut record = [0; 12 + 16];
        record[..2].copy_from_slice(&owner);
        record[2..4].copy_from_slice(&rtype.to_be_bytes());
        record[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
        record[6..10].copy_from_slice(&ttl.to_be_bytes());
        record[10..12].copy_from_slice(&(N as u16).to_be_bytes());
        self.out.reserve(kept * size);
        for ip in ips.by_ref().take(kept) {
            record[12..size].copy_from_slice(&ip);
            self.out.extend_from_slice(&record[..size]);
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
    #[inline(never)]
    pub(super) fn srv(&mut self, srv: &Srv<'_>, ttl: u32, max: usize) {
        let target = srv.target();
        let rdlen = 6 + target.len();
        for port in srv.ports().take(max) {
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
    #[inline(never)]
    pub(super) fn targets(&mut self, srv: &Srv<'_>, ttl: u32, rng: &mut Shuffler) {
        if self.cut {
            return;
        }
        let owner = self.pointer(srv.target().len());
        let host = srv.host();
        let (a, aaaa) = (
            host.a.iter().map(ToOctets::to_octets),
            host.aaaa.iter().map(ToOctets::to_octets),
        );
        self.address_records(a, owner, ttl, rtype::A, usize::MAX, Section::Additional, rng);
        self.address_records(aaaa, owner, ttl, rtype::AAAA, usize::MAX, Section::Additional, rng);
    }

    /// PTR records of the query name to `targets`, from the end cut when they do not fit.
    #[inline(never)]
    pub(super) fn ptr(&mut self, targets: &[PtrTarget], ttl: u32) {
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

    pub(super) fn soa(&mut self, zone: &Zone, table: &Table, section: Section) {
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

    pub(super) fn ns(&mut self, zone: &Zone, ttl: u32) {
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
    pub(super) fn finish(mut self, code: u16, flags: u16) {
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
