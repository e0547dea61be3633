//! DNS messages as text, for people (`/debug/explain`, `globaldns explain`): the one module
//! that uses hickory-proto outside the tests. Off the answer path, which has its own small
//! wire code; here a well-kept library reads what that code wrote.

use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};

use super::wire::{self, ede, rtype};

/// A response read back: rcode, flags and each section's records as presentation text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decoded {
    /// The rcode's mnemonic (`NOERROR`, `NXDOMAIN`, …), extended rcodes included.
    pub rcode: String,
    /// The header flags set (`qr`, `aa`, `tc`, `rd`, `ra`), as dig lists them.
    pub flags: Vec<&'static str>,
    /// The answer section: `owner TTL IN TYPE data`.
    pub answer: Vec<String>,
    /// The authority section.
    pub authority: Vec<String>,
    /// The additional section, without the OPT record.
    pub additional: Vec<String>,
    /// The Extended DNS Error of its OPT record (RFC 8914), if any.
    pub extended_error: Option<ExtendedError>,
}

/// An Extended DNS Error: its INFO-CODE and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ExtendedError {
    /// The INFO-CODE.
    pub code: u16,
    /// Its name (RFC 8914 §5.2).
    pub name: &'static str,
}

/// The mnemonic of an rcode (RFC 1035 §4.1.1, RFC 6891 §9).
pub fn rcode_name(code: u16) -> String {
    let known = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
    match code {
        16 => "BADVERS".into(),
        c => known
            .get(c as usize)
            .map_or_else(|| format!("RCODE{c}"), |n| (*n).to_owned()),
    }
}

/// A query type from text: a mnemonic in any case (`A`, `srv`), `TYPE<n>` (RFC 3597 §5) or a
/// number. `None` for anything else.
pub fn parse_type(text: &str) -> Option<u16> {
    let upper = text.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<u16>() {
        return Some(n);
    }
    if let Some(n) = upper.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()) {
        return Some(n);
    }
    // hickory parses every mnemonic but IXFR (RFC 1995's 251).
    if upper == "IXFR" {
        return Some(u16::from(RecordType::IXFR));
    }
    match upper.parse::<RecordType>() {
        Ok(RecordType::Unknown(_)) | Err(_) => None,
        Ok(t) => Some(u16::from(t)),
    }
}

/// The mnemonic of a type (`TYPE<n>` for those without one).
pub fn type_name(qtype: u16) -> String {
    match RecordType::from(qtype) {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

fn record_text(r: &Record) -> String {
    format!("{} {} IN {} {}", r.name, r.ttl, r.record_type(), r.data)
}

/// Reads a response globaldns made; `None` when it does not parse.
pub fn decode(reply: &[u8]) -> Option<Decoded> {
    let m = Message::from_vec(reply).ok()?;
    let meta = &m.metadata;
    let flags = [
        (true, "qr"),
        (meta.authoritative, "aa"),
        (meta.truncation, "tc"),
        (meta.recursion_desired, "rd"),
        (meta.recursion_available, "ra"),
    ];
    let rcode = u16::from(reply[3] & 0x0f) | m.edns.as_ref().map_or(0, |e| u16::from(e.rcode_high()) << 4);
    Some(Decoded {
        rcode: rcode_name(rcode),
        flags: flags.iter().filter(|(set, _)| *set).map(|(_, f)| *f).collect(),
        answer: m.answers.iter().map(record_text).collect(),
        authority: m.authorities.iter().map(record_text).collect(),
        additional: m
            .additionals
            .iter()
            .filter(|r| u16::from(r.record_type()) != rtype::OPT)
            .map(record_text)
            .collect(),
        extended_error: wire::extended_error(reply).map(|code| ExtendedError {
            code,
            name: ede::name(code),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_text() {
        assert_eq!(parse_type("A"), Some(1));
        assert_eq!(parse_type("srv"), Some(33));
        assert_eq!(parse_type("Ptr"), Some(12));
        assert_eq!(parse_type("TYPE65"), Some(65));
        assert_eq!(parse_type("255"), Some(255));
        assert_eq!((parse_type("ixfr"), parse_type("AXFR")), (Some(251), Some(252)));
        assert_eq!((type_name(251), type_name(252)), ("IXFR".into(), "AXFR".into()));
        assert_eq!(parse_type("NOPE"), None);
        assert_eq!(parse_type(""), None);
        assert_eq!(type_name(33), "SRV");
        assert_eq!(type_name(65000), "TYPE65000");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(16), "BADVERS");
    }
}
