//! DNS messages at the byte level: the query parser of the answer path.
//!
//! Only what answering needs is decoded (RFC 1035 §4.1): the header, the one question and an
//! EDNS(0) OPT record (RFC 6891 §6.1) in the additional section; every other record is
//! skipped over, so odd but well-formed queries are answered. Nothing allocates.

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;

/// Response codes used here (RFC 1035 §4.1.1, RFC 6891 §9).
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// The query could not be interpreted.
    pub const FORMERR: u16 = 1;
    /// The server failed (or has not synced yet).
    pub const SERVFAIL: u16 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Opcode not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused by policy.
    pub const REFUSED: u16 = 5;
    /// EDNS version not supported; extended, needs an OPT record.
    pub const BADVERS: u16 = 16;
}

/// Record types used here.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Domain name pointer (reverse zones, RFC 1035 §3.5).
    pub const PTR: u16 = 12;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service location (RFC 2782).
    pub const SRV: u16 = 33;
    /// EDNS(0) pseudo-record.
    pub const OPT: u16 = 41;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Full zone transfer.
    pub const AXFR: u16 = 252;
    /// Every type ("ANY", RFC 8482).
    pub const ANY: u16 = 255;
}

/// Extended DNS Error INFO-CODEs used here (RFC 8914 §4), in an OPT option of code
/// [`ede::OPTION`], sent only to clients that sent EDNS.
pub mod ede {
    /// The EDNS option code of an Extended DNS Error.
    pub const OPTION: u16 = 15;
    /// 3: the answer comes from a source that is stale (its last known entries).
    pub const STALE_ANSWER: u16 = 3;
    /// 14: SERVFAIL before the first sync of the local cluster.
    pub const NOT_READY: u16 = 14;
    /// 18: a zone transfer refused.
    pub const PROHIBITED: u16 = 18;
    /// 22: forwarding failed, every upstream timed out or was down.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
    /// 23: forwarding failed with a network error (refused, unreachable).
    pub const NETWORK_ERROR: u16 = 23;

    /// The name RFC 8914 §5.2 gives a code, for people.
    pub fn name(code: u16) -> &'static str {
        match code {
            STALE_ANSWER => "Stale Answer",
            NOT_READY => "Not Ready",
            PROHIBITED => "Prohibited",
            NO_REACHABLE_AUTHORITY => "No Reachable Authority",
            NETWORK_ERROR => "Network Error",
            _ => "Other",
        }
    }
}

/// Class IN.
pub const CLASS_IN: u16 = 1;
/// QCLASS `*`.
pub const CLASS_ANY: u16 = 255;

/// Header flag bits (second 16-bit word).
pub mod flag {
    /// Response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Checking disabled (RFC 4035 §3.2.2: copied into the response).
    pub const CD: u16 = 0x0010;
    /// Opcode mask.
    pub const OPCODE: u16 = 0x7800;
}

/// The EDNS(0) parameters of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size.
    pub udp_size: u16,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK bit.
    pub dnssec_ok: bool,
}

/// A well-formed query.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// Message ID.
    pub id: u16,
    /// Flags word as received.
    pub flags: u16,
    /// The question exactly as received: name, type, class.
    pub question: &'a [u8],
    lower: [u8; LOWER_LEN],
    lower_len: usize,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The query name in lower-case wire format.
    pub fn lower_name(&self) -> &[u8] {
        &self.lower[..self.lower_len]
    }
}

/// Why a message is not answered normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not answerable: shorter than a header, or a response (QR=1), which must never be
    /// answered (that is how reflection loops start).
    Drop,
    /// Answer with this rcode and the header only.
    Reply(u16),
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// Skips a possibly compressed name; returns where it ends.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + len as usize,
            0xC0 => return msg.get(pos + 1).map(|_| pos + 2),
            _ => return None, // extended label types (RFC 6891 §5) are not supported
        }
    }
}

/// Room for a lower-case question name: [`crate::name::MAX_WIRE_LEN`] rounded up to whole
/// 16-byte chunks, which [`lower_name`] lower-cases at once.
pub const LOWER_LEN: usize = 256;

/// The question name of `msg` (uncompressed, at most 255 bytes, labels of at most 63) copied
/// into `lower` in lower case; returns its length, or `None` when it is not such a name or is
/// cut short. The labels are walked first, then the name is lower-cased in whole 16-byte
/// chunks (what follows it in `lower` is overwritten too): a few vector instructions instead
/// of a loop per byte.
#[inline]
fn lower_name(msg: &[u8], lower: &mut [u8; LOWER_LEN]) -> Option<usize> {
    let mut end = HEADER_LEN;
    loop {
        let len = *msg.get(end)? as usize;
        end += 1 + len;
        if len > crate::name::MAX_LABEL_LEN || end - HEADER_LEN > crate::name::MAX_WIRE_LEN {
            return None;
        }
        if len == 0 {
            break;
        }
    }
    let n = end - HEADER_LEN;
    lower[..n].copy_from_slice(&msg[HEADER_LEN..end]);
    for chunk in lower[..n.next_multiple_of(16)].as_chunks_mut::<16>().0 {
        for b in chunk {
            *b = b.to_ascii_lowercase();
        }
    }
    Some(n)
}

/// The question name of `msg` in lower-case wire format, read into `buf` as [`parse`] reads it,
/// without the rest of the message (what comes before or after it is not checked): for work
/// ahead of answering (`answer::fetch_ahead`). `None` when [`parse`] would find no such name.
pub fn question_name<'b>(msg: &[u8], buf: &'b mut [u8; LOWER_LEN]) -> Option<&'b [u8]> {
    let n = lower_name(msg, buf)?;
    Some(&buf[..n])
}

/// Parses a query. The question name must be uncompressed (nothing precedes it to point
/// to), at most 255 bytes, with labels of at most 63.
///
/// # Errors
///
/// - [`Reject::Drop`] for a message shorter than a header, or a response (QR=1);
/// - [`Reject::Reply`] with NOTIMP for an opcode other than QUERY;
/// - [`Reject::Reply`] with FORMERR when QDCOUNT is not 1, the question is cut short, its
///   name is compressed, too long or has a label over 63 bytes, a record is cut short, or an
///   OPT record is misplaced, repeated, not owned by the root or its options overrun it
///   (RFC 6891 §6.1.1).
pub fn parse(msg: &[u8]) -> Result<Query<'_>, Reject> {
    if msg.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & flag::QR != 0 {
        return Err(Reject::Drop);
    }
    if flags & flag::OPCODE != 0 {
        return Err(Reject::Reply(rcode::NOTIMP));
    }
    let count = |i: usize| u16::from_be_bytes([msg[4 + 2 * i], msg[5 + 2 * i]]);
    if count(0) != 1 {
        return Err(Reject::Reply(rcode::FORMERR));
    }
    let formerr = Reject::Reply(rcode::FORMERR);
    let mut lower = [0u8; LOWER_LEN];
    let lower_len = lower_name(msg, &mut lower).ok_or(formerr)?;
    let mut pos = HEADER_LEN + lower_len;
    let qtype = u16_at(msg, pos).ok_or(formerr)?;
    let qclass = u16_at(msg, pos + 2).ok_or(formerr)?;
    let question = &msg[HEADER_LEN..pos + 4];
    pos += 4;

    let mut edns = None;
    let records = count(1) as usize + count(2) as usize + count(3) as usize;
    let additional_from = count(1) as usize + count(2) as usize;
    for i in 0..records {
        let name_end = skip_name(msg, pos).ok_or(formerr)?;
        let rtype = u16_at(msg, name_end).ok_or(formerr)?;
        let class = u16_at(msg, name_end + 2).ok_or(formerr)?;
        let ttl_hi = u16_at(msg, name_end + 4).ok_or(formerr)?;
        let ttl_lo = u16_at(msg, name_end + 6).ok_or(formerr)?;
        let rdlen = u16_at(msg, name_end + 8).ok_or(formerr)? as usize;
        let rdata = name_end + 10;
        let end = rdata + rdlen;
        if end > msg.len() {
            return Err(formerr);
        }
        if rtype == rtype::OPT {
            // RFC 6891 §6.1.1: one OPT, owned by the root, in the additional section.
            if i < additional_from || edns.is_some() || name_end != pos + 1 {
                return Err(formerr);
            }
            let mut opt = rdata;
            while opt < end {
                let len = u16_at(msg, opt + 2).filter(|_| opt + 4 <= end).ok_or(formerr)? as usize;
                opt += 4 + len;
            }
            if opt != end {
                return Err(formerr);
            }
            edns = Some(Edns {
                udp_size: class,
                version: (ttl_hi & 0xff) as u8,
                dnssec_ok: ttl_lo & 0x8000 != 0,
            });
        }
        pos = end;
    }
    Ok(Query {
        id,
        flags,
        question,
        lower,
        lower_len,
        qtype,
        qclass,
        edns,
    })
}

/// Whether `reply` answers `query`: a response with the query's ID and its question, or with
/// no question at all and an error rcode (what servers send when they could not read the
/// question). The question's name compares case-insensitively (RFC 4343 §3: an upstream may
/// answer in another case than asked); its QTYPE and QCLASS are numbers and compare exactly
/// (type 0x0041 is not 0x0061).
pub fn answers(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= 2 && query.len() >= 2 && reply[..2] == query[..2] && answers_question(reply, query)
}

/// [`answers`] but for the ID, which the caller matched already (a query kept with another ID
/// than it was sent with).
pub fn answers_question(reply: &[u8], query: &[u8]) -> bool {
    if reply.len() < HEADER_LEN || query.len() < HEADER_LEN || reply[2] & 0x80 == 0 {
        return false;
    }
    let qdcount = u16::from_be_bytes([reply[4], reply[5]]);
    if qdcount == 0 {
        return reply[3] & 0x0f != 0;
    }
    let Ok(q) = parse(query) else { return false };
    let (name, type_and_class) = q.question.split_at(q.question.len() - 4);
    qdcount == 1
        && reply
            .get(HEADER_LEN..HEADER_LEN + q.question.len())
            .is_some_and(|r| r[..name.len()].eq_ignore_ascii_case(name) && r[name.len()..] == *type_and_class)
}

/// The Extended DNS Error (RFC 8914) of a response whose last record is an OPT holding one EDE
/// option without EXTRA-TEXT, as globaldns writes them; `None` otherwise. No parse, no
/// allocation: cheap enough to count every response.
pub fn extended_error(reply: &[u8]) -> Option<u16> {
    const OPT_WITH_EDE: usize = 17;
    let n = reply.len();
    if n < HEADER_LEN + OPT_WITH_EDE || reply[10..12] == [0, 0] {
        return None;
    }
    let opt = &reply[n - OPT_WITH_EDE..];
    let [root, t1, t2, .., l1, l2, c1, c2, o1, o2, i1, i2] = *opt else {
        return None;
    };
    let ede = [root, t1, t2, l1, l2, c1, c2, o1, o2] == [0, 0, 41, 0, 6, 0, ede::OPTION as u8, 0, 2];
    ede.then(|| u16::from_be_bytes([i1, i2]))
}

/// The QTYPE of a message with one uncompressed question, without parsing the rest (for
/// metrics).
pub fn qtype(msg: &[u8]) -> Option<u16> {
    if msg.get(4..6)? != [0, 1] {
        return None;
    }
    let mut pos = HEADER_LEN;
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return u16_at(msg, pos + 1);
        }
        if len > crate::name::MAX_LABEL_LEN {
            return None;
        }
        pos += 1 + len;
    }
}

#[cfg(test)]
mod tests;
