//! Domain names as the table and the answer path see them: lower-case wire format.
//!
//! A name is a sequence of length-prefixed labels ending in the zero-length root label
//! (RFC 1035 §3.1), ASCII letters folded to lower case so that a lookup is one byte
//! comparison (RFC 4343: DNS names compare case-insensitively, but the answer echoes the
//! query's own letters, which the answer path copies from the request).

/// Longest name in wire format, root label included (RFC 1035 §2.3.4).
pub const MAX_WIRE_LEN: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Converts a presentation-format name (`httpbin.bar.global`, trailing dot optional) into
/// lower-case wire format. `None` when a label is empty or too long, or the name too long.
pub fn to_wire(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let mut wire = Vec::with_capacity(text.len() + 2);
    if !text.is_empty() {
        for label in text.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return None;
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    wire.push(0);
    (wire.len() <= MAX_WIRE_LEN).then_some(wire)
}

/// Presentation format of a wire name with a trailing dot; bytes outside `[a-z0-9-_*]` are
/// escaped as `\DDD` (RFC 1035 §5.1) so that a crafted query name never garbles a log line.
pub fn to_text(wire: &[u8]) -> String {
    let mut out = String::with_capacity(wire.len() + 1);
    let mut labels = Labels::new(wire);
    for label in &mut labels {
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*' {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Offsets at which each label of a well-formed wire name starts, the root label excluded.
pub fn label_starts(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len = *wire.get(pos)? as usize;
        if len == 0 {
            return None;
        }
        let start = pos;
        pos += 1 + len;
        Some(start)
    })
}

/// The labels of a well-formed wire name, root label excluded.
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Labels<'a> {
    /// Iterates the labels of `wire`.
    pub fn new(wire: &'a [u8]) -> Self {
        Labels { wire, pos: 0 }
    }
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = *self.wire.get(self.pos)? as usize;
        if len == 0 {
            return None;
        }
        let label = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(label)
    }
}

/// Where `suffix` starts in `name` when `name` equals `suffix` or lies below it, on a label
/// boundary (both in lower-case wire format).
pub fn suffix_offset(name: &[u8], suffix: &[u8]) -> Option<usize> {
    if name.len() < suffix.len() {
        return None;
    }
    let want = name.len() - suffix.len();
    if want == 0 {
        return (name == suffix).then_some(0);
    }
    label_starts(name)
        .find(|&start| start >= want)
        .filter(|&start| start == want && &name[start..] == suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_folds_case_and_trailing_dot() {
        let wire = to_wire("HttpBin.Bar.GLOBAL.").unwrap();
        assert_eq!(wire, b"\x07httpbin\x03bar\x06global\x00");
        assert_eq!(to_text(&wire), "httpbin.bar.global.");
        assert_eq!(to_wire("global").unwrap(), b"\x06global\x00");
        assert_eq!(to_wire("").unwrap(), b"\x00");
        assert_eq!(to_text(b"\x00"), ".");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(to_wire("a..b").is_none());
        assert!(to_wire(&"a".repeat(64)).is_none());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(to_wire(&long).is_none());
    }

    #[test]
    fn escapes_odd_bytes() {
        assert_eq!(to_text(b"\x03a.b\x00"), "a\\046b.");
    }

    #[test]
    fn suffixes_on_label_boundaries_only() {
        let name = to_wire("a.bar.global").unwrap();
        let global = to_wire("global").unwrap();
        assert_eq!(suffix_offset(&name, &global), Some(6));
        assert_eq!(suffix_offset(&name, &name), Some(0));
        assert_eq!(suffix_offset(&name, &to_wire("ar.global").unwrap()), None);
        assert_eq!(suffix_offset(&global, &name), None);
        assert_eq!(suffix_offset(&name, &to_wire("bar.global").unwrap()), Some(2));
    }
}
