//! The fast reading of [`super::parse`]: libyaml's events (the `unsafe-libyaml` crate, a
//! line-by-line Rust translation of the C library) composed into one [`Tree`] per document,
//! whose [`Node::to_value`] is the `serde_json::Value` serde-saphyr would have made of it.
//! The tree is reused from document to document, and its strings are slices of the text
//! wherever libyaml's value is the text as written: reading a ServiceEntry from it
//! (`super::fast`) allocates only what the entry keeps.
//!
//! libyaml walks an entries file ~3× faster than serde-saphyr's parser, but the two do not
//! agree on every text. So this reading only takes the YAML whose value the tests show to be
//! serde-saphyr's (the differential tests below run both over the fuzz corpus, the real-world
//! fixtures and strung-together or mutated texts; the fuzz target does too): block mappings and sequences, flow ones, single-line plain and quoted
//! scalars. At anything else it gives up ([`GiveUp`]) and the caller reads the whole text with
//! serde-saphyr: an error of libyaml's, a directive, tag, anchor or alias, a block or
//! multi-line scalar, an escape in a double-quoted one, a plain scalar that may be a float or
//! an odd integer, a key that is not a plain word or quoted, a merge (`<<`) or duplicate key,
//! a `#` right after a token outside a scalar (a comment to libyaml, an error to YAML 1.2), a
//! `?` outside a scalar (an explicit key to libyaml even when a plain scalar follows it), a tab
//! in a line's indentation (a separator to libyaml in a flow collection, an error there), a
//! BOM inside the text or a YAML 1.1 line break (NEL, LS, PS), nesting deeper than 32, or
//! sizes near serde-saphyr's budget.
//!
//! Plain scalars resolve as serde-saphyr's untyped reading does with `strict_booleans`
//! (YAML 1.2 core schema): `""`, `~`, `null`, `Null`, `NULL` are null; `true`, `True`, `TRUE`
//! and the three spellings of false are booleans; a decimal integer without a leading zero is
//! a number; anything that neither its integer nor its float parser can take (it starts
//! with none of `0-9 + - .`, holds a byte outside `0-9 A-Z a-z _ + - .`, two dots, a sign not
//! after an `e`, or a letter no number holds: see `is_no_number`) is a string.
// The measured reason for `unsafe`: libyaml's C-shaped API. Reading and stripping the load
// benchmark's 100 000 entries (21.6 MB) takes 0.65–0.73 s of CPU this way against 2.07 s with
// serde-saphyr alone. Every block below is one call or one read of libyaml's event, see SAFETY.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::mem::MaybeUninit;

use serde_json::{Map, Number, Value};
use unsafe_libyaml as unsafe_sys;

/// Why the fast reading left a text to serde-saphyr (the differential test counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct GiveUp(pub(super) &'static str);

/// serde-saphyr's default `max_depth` is 64; half of it stays well clear.
const MAX_DEPTH: usize = 32;
/// serde-saphyr's `max_total_scalar_bytes` is 64 MiB; half of it.
const MAX_SCALAR_BYTES: usize = 32 << 20;
/// serde-saphyr's `simple_key_max_lookahead` is 1 024 characters; a key's bytes stay below it.
const MAX_KEY_BYTES: usize = 256;
/// Our budget for serde-saphyr allows 10 M documents; half of it.
const MAX_DOCUMENTS: usize = 5_000_000;
/// A text larger than this is left to serde-saphyr (its reader's limit is 256 MiB). With it,
/// the nodes and events of a text stay far below that budget's 200 M and 400 M.
const MAX_TEXT_BYTES: usize = 128 << 20;

/// Reads `text` and hands each document's tree to `each`, in order.
///
/// # Errors
///
/// [`GiveUp`] when the text holds anything this reading has not been shown to read as
/// serde-saphyr does; `each` may have been given the documents before that point.
pub(super) fn read<'t>(text: &'t str, mut each: impl FnMut(Node<'_, 't>)) -> Result<(), GiveUp> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(GiveUp("text size"));
    }
    // libyaml skips a BOM inside the text and breaks lines at NEL, LS and PS (YAML 1.1);
    // serde-saphyr rejects the BOM and takes the others as content (YAML 1.2).
    if !text.is_ascii() && text.contains(['\u{feff}', '\u{85}', '\u{2028}', '\u{2029}']) {
        return Err(GiveUp("BOM or YAML 1.1 line break"));
    }
    // A tab in a line's indentation separates tokens in a flow collection for libyaml (YAML
    // 1.1), but is an error for serde-saphyr (`x: [\n\t]`).
    if text.contains('\t')
        && text
            .split('\n')
            .any(|line| line.trim_start_matches(' ').starts_with('\t'))
    {
        return Err(GiveUp("tab in indentation"));
    }
    // Characters that are fine only inside a scalar: a `#` right after a non-space starts a
    // comment for libyaml (`[a]#c`) but is an error for serde-saphyr, as YAML wants; a `?`
    // outside a scalar is an explicit key for libyaml even without a space after it
    // (`{?name: a}`), part of a plain scalar for serde-saphyr.
    let mut marks = text
        .match_indices(['#', '?'])
        .filter(|&(at, mark)| mark == "?" || at > 0 && !matches!(text.as_bytes()[at - 1], b' ' | b'\t' | b'\r' | b'\n'))
        .peekable();
    let outside = |mark: &str| {
        GiveUp(if mark == "#" {
            "comment right after a token"
        } else {
            "? outside a scalar"
        })
    };
    let mut parser = Parser::new(text);
    let mut tree = Tree::default();
    // The collections being read, innermost last.
    let mut stack: Vec<Frame> = Vec::new();
    // Scratch for the duplicate key check.
    let mut keys: Vec<usize> = Vec::new();
    let (mut scalar_bytes, mut documents) = (0usize, 0usize);
    loop {
        let event = parser.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd => continue,
            Event::StreamEnd => {
                if let Some((_, mark)) = marks.next() {
                    return Err(outside(mark));
                }
                return Ok(());
            }
            Event::DocumentStart { directives } => {
                if directives {
                    return Err(GiveUp("directive"));
                }
                documents += 1;
                if documents > MAX_DOCUMENTS {
                    return Err(GiveUp("documents"));
                }
                continue;
            }
            Event::SequenceStart | Event::MappingStart => {
                if let Some(Frame { key_next: true, .. }) = stack.last() {
                    return Err(GiveUp("complex key"));
                }
                let map = matches!(event, Event::MappingStart);
                stack.push(Frame {
                    at: tree.nodes.len(),
                    key_next: map,
                });
                tree.nodes.push(if map {
                    Kind::Map { end: 0 }
                } else {
                    Kind::Seq { end: 0 }
                });
                if stack.len() > MAX_DEPTH {
                    return Err(GiveUp("depth"));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let end = tree.nodes.len();
                match stack.pop().map(|frame| (frame, &mut tree.nodes[frame.at])) {
                    Some((_, Kind::Seq { end: at_end })) => *at_end = end,
                    // libyaml ends a mapping only after a key's value, and balances its events.
                    Some((Frame { key_next: true, at }, Kind::Map { end: at_end })) => {
                        *at_end = end;
                        if tree.has_duplicate_key(at, &mut keys) {
                            return Err(GiveUp("duplicate key"));
                        }
                    }
                    _ => return Err(GiveUp("unbalanced events")),
                }
            }
            Event::Scalar(scalar) => {
                while let Some(&(at, mark)) = marks.peek().filter(|&&(at, _)| at < scalar.end) {
                    if at < scalar.start {
                        return Err(outside(mark));
                    }
                    marks.next();
                }
                scalar_bytes += scalar.text.len();
                if scalar_bytes > MAX_SCALAR_BYTES {
                    return Err(GiveUp("scalar bytes"));
                }
                if let Some(frame @ Frame { key_next: true, .. }) = stack.last_mut() {
                    frame.key_next = false;
                    tree.nodes.push(Kind::Str(scalar.key()?));
                    continue;
                }
                tree.nodes.push(scalar.value()?);
            }
        }
        // A value is complete: the next of its mapping is a key; or it is the document's.
        match stack.last_mut() {
            None => {
                each(Node { tree: &tree, at: 0 });
                tree.nodes.clear();
            }
            Some(frame) => frame.key_next = matches!(tree.nodes[frame.at], Kind::Map { .. }),
        }
    }
}

/// A collection being read: where its node is, and for a mapping whether a key comes next.
#[derive(Debug, Clone, Copy)]
struct Frame {
    at: usize,
    key_next: bool,
}

/// One document as read: its nodes in document order, a collection before its items and each
/// key of a mapping before its value.
#[derive(Debug, Default)]
pub(super) struct Tree<'t> {
    nodes: Vec<Kind<'t>>,
}

impl Tree<'_> {
    /// Whether the mapping at `at` (complete) holds a key twice; `keys` is scratch.
    fn has_duplicate_key(&self, at: usize, keys: &mut Vec<usize>) -> bool {
        keys.clear();
        keys.extend(Node { tree: self, at }.entries().map(|(key, _)| key.at));
        let key = |at: usize| Node { tree: self, at }.as_str().unwrap_or_default();
        keys.sort_unstable_by(|&a, &b| key(a).cmp(key(b)));
        keys.windows(2).any(|pair| key(pair[0]) == key(pair[1]))
    }
}

/// A node of a [`Tree`].
#[derive(Debug)]
enum Kind<'t> {
    Null,
    Bool(bool),
    Number(Number),
    /// A string, as written in the text or (quoted with `''`) as libyaml made it.
    Str(Cow<'t, str>),
    /// A sequence: its items are the nodes before `end`.
    Seq {
        end: usize,
    },
    /// A mapping: its keys (strings) and values alternate up to `end`.
    Map {
        end: usize,
    },
}

/// A node of a document's [`Tree`], and the nodes under it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Node<'a, 't> {
    tree: &'a Tree<'t>,
    at: usize,
}

impl<'a, 't> Node<'a, 't> {
    fn kind(self) -> &'a Kind<'t> {
        &self.tree.nodes[self.at]
    }

    /// Where the nodes under it end.
    fn end(self) -> usize {
        match self.kind() {
            Kind::Seq { end } | Kind::Map { end } => *end,
            _ => self.at + 1,
        }
    }

    /// The string it is.
    pub(super) fn as_str(self) -> Option<&'a str> {
        match self.kind() {
            Kind::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The unsigned integer it is.
    pub(super) fn as_u64(self) -> Option<u64> {
        match self.kind() {
            Kind::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// Whether it is a number.
    pub(super) fn is_number(self) -> bool {
        matches!(self.kind(), Kind::Number(_))
    }

    /// Whether it is a sequence.
    pub(super) fn is_seq(self) -> bool {
        matches!(self.kind(), Kind::Seq { .. })
    }

    /// Whether it is a mapping.
    pub(super) fn is_map(self) -> bool {
        matches!(self.kind(), Kind::Map { .. })
    }

    /// The nodes under it, one after another: a sequence's items, a mapping's keys and values.
    fn children(self) -> impl Iterator<Item = Node<'a, 't>> {
        let (tree, end) = (self.tree, self.end());
        let mut at = self.at + 1;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let child = Node { tree, at };
                at = child.end();
                child
            })
        })
    }

    /// A sequence's items (none for any other node).
    pub(super) fn items(self) -> impl Iterator<Item = Node<'a, 't>> {
        let seq = self.is_seq();
        self.children().filter(move |_| seq)
    }

    /// A mapping's keys and values, in the text's order (none for any other node).
    fn entries(self) -> impl Iterator<Item = (Node<'a, 't>, Node<'a, 't>)> {
        let map = self.is_map();
        let mut children = self.children().filter(move |_| map);
        std::iter::from_fn(move || Some((children.next()?, children.next()?)))
    }

    /// A mapping's keys (as strings) and values.
    pub(super) fn fields(self) -> impl Iterator<Item = (&'a str, Node<'a, 't>)> {
        self.entries()
            .map(|(key, value)| (key.as_str().unwrap_or_default(), value))
    }

    /// The value of a mapping's `key`.
    pub(super) fn get(self, key: &str) -> Option<Node<'a, 't>> {
        self.fields().find(|(k, _)| *k == key).map(|(_, value)| value)
    }

    /// The `serde_json::Value` it is, as serde-saphyr makes it.
    pub(super) fn to_value(self) -> Value {
        match self.kind() {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(n) => Value::Number(n.clone()),
            Kind::Str(text) => Value::String(text.clone().into_owned()),
            Kind::Seq { .. } => Value::Array(self.children().map(Node::to_value).collect()),
            Kind::Map { .. } => Value::Object(
                self.fields()
                    .map(|(key, value)| (key.to_owned(), value.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

/// The events of libyaml this reading uses; everything else is a [`GiveUp`] already.
enum Event<'t> {
    StreamStart,
    StreamEnd,
    DocumentStart { directives: bool },
    DocumentEnd,
    SequenceStart,
    SequenceEnd,
    MappingStart,
    MappingEnd,
    Scalar(Scalar<'t>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Quoted,
}

/// A single-line, untagged, unanchored plain or quoted scalar without escapes.
struct Scalar<'t> {
    /// Its value: the text as written (without quotes) where libyaml's value is that.
    text: Cow<'t, str>,
    style: Style,
    /// Where it is in the text, in bytes (quotes included).
    start: usize,
    end: usize,
}

impl<'t> Scalar<'t> {
    /// The scalar as a mapping key: serde_json's keys are strings, so only a quoted one or a
    /// plain word serde-saphyr reads as a string.
    fn key(self) -> Result<Cow<'t, str>, GiveUp> {
        if self.text.len() > MAX_KEY_BYTES {
            return Err(GiveUp("long key"));
        }
        // serde_json treats a few `$serde_json::…` keys specially with some of its features.
        if self.text.starts_with('$') {
            return Err(GiveUp("key starting with $"));
        }
        // serde-saphyr merges the mapping given to `<<` into its own.
        if self.text == "<<" {
            return Err(GiveUp("merge key"));
        }
        match self.style {
            Style::Quoted => Ok(self.text),
            Style::Plain => match resolve_plain(&self.text)? {
                Kind::Str(_) => Ok(self.text),
                _ => Err(GiveUp("non-string key")),
            },
        }
    }

    fn value(self) -> Result<Kind<'t>, GiveUp> {
        match self.style {
            Style::Quoted => Ok(Kind::Str(self.text)),
            Style::Plain => match resolve_plain(&self.text)? {
                Kind::Str(_) => Ok(Kind::Str(self.text)),
                other => Ok(other),
            },
        }
    }
}

/// What serde-saphyr's untyped reading makes of a plain scalar (see the module's doc); the
/// string case returns an empty string (the caller keeps its own text).
fn resolve_plain(text: &str) -> Result<Kind<'static>, GiveUp> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Kind::Null),
        "true" | "True" | "TRUE" => return Ok(Kind::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Kind::Bool(false)),
        _ => {}
    }
    let bytes = text.as_bytes();
    if !matches!(bytes[0], b'0'..=b'9' | b'+' | b'-' | b'.') {
        return Ok(Kind::Str(Cow::Borrowed("")));
    }
    let (negative, digits) = match bytes.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    // Up to 18 digits always fit: no overflow case to mirror.
    if !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
    {
        let magnitude = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Ok(if negative {
            // `-0` is the integer 0 in serde-saphyr: i64 zero.
            #[allow(clippy::cast_possible_wrap)] // below 10^18
            Kind::Number(Number::from(-(magnitude as i64)))
        } else {
            Kind::Number(Number::from(magnitude))
        });
    }
    if is_no_number(bytes) {
        return Ok(Kind::Str(Cow::Borrowed("")));
    }
    Err(GiveUp("number-like plain scalar"))
}

/// Whether neither serde-saphyr's integer parser (sign, then decimal digits and `_`, or
/// `0x`/`0o`/`0b` and hex digits) nor its float parser (Rust's `f64` grammar: sign, digits,
/// one `.`, `e` and a signed exponent; `.inf`/`.nan`) can take `bytes` (not empty).
fn is_no_number(bytes: &[u8]) -> bool {
    let unsigned = bytes
        .strip_prefix(b"+")
        .or_else(|| bytes.strip_prefix(b"-"))
        .unwrap_or(bytes);
    // A byte neither grammar has: `10.0.0.0/8`, `2001:db8::1`, `80 TCP`.
    bytes.iter().any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.')))
        // Two dots: `10.0.0.1`.
        || bytes.iter().filter(|&&b| b == b'.').count() > 1
        // A sign inside but not after an exponent's `e`: `3e5c08e1-7a45`.
        || bytes.windows(2).any(|w| matches!(w[1], b'+' | b'-') && !matches!(w[0], b'e' | b'E'))
        // Starting with a digit, a letter no hex integer or float holds: `10m`, `1s`.
        || unsigned.first().is_some_and(u8::is_ascii_digit)
            && unsigned.iter().any(|b| b.is_ascii_alphabetic() && !matches!(b.to_ascii_lowercase(), b'a'..=b'f' | b'x' | b'o'))
}

/// libyaml's parser over one text. Boxed: libyaml keeps pointers into its own struct.
struct Parser<'t> {
    sys: Box<MaybeUninit<unsafe_sys::yaml_parser_t>>,
    text: &'t str,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Self {
        let mut sys = Box::new(MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit());
        let parser = sys.as_mut_ptr();
        // SAFETY: `parser` points to writable memory for a `yaml_parser_t`, which initialize
        // zeroes and fills; the input is `text`, which outlives the parser ('t); libyaml only
        // reads it. Initialize fails only when malloc does, like any allocation here.
        unsafe {
            assert!(unsafe_sys::yaml_parser_initialize(parser).ok, "libyaml: out of memory");
            unsafe_sys::yaml_parser_set_encoding(parser, unsafe_sys::YAML_UTF8_ENCODING);
            unsafe_sys::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        }
        Self { sys, text }
    }

    fn next(&mut self) -> Result<Event<'t>, GiveUp> {
        let parser = self.sys.as_mut_ptr();
        let mut event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new` and is used by this thread only; after
        // an error libyaml's parser only reports errors again (checked first). On success the
        // event is initialized, and deleted once converted (the conversion copies what it keeps).
        unsafe {
            let failed_before = (&*parser).error != unsafe_sys::YAML_NO_ERROR;
            if failed_before || !unsafe_sys::yaml_parser_parse(parser, event.as_mut_ptr()).ok {
                return Err(GiveUp("libyaml error"));
            }
            let event = event.as_mut_ptr();
            let converted = convert(&*event, self.text);
            unsafe_sys::yaml_event_delete(event);
            converted
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`; deleted once, here.
        unsafe { unsafe_sys::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}

/// The event as this reading uses it.
///
/// # Safety
///
/// `event` is one libyaml has just produced from `text` and not yet deleted.
unsafe fn convert<'t>(event: &unsafe_sys::yaml_event_t, text: &'t str) -> Result<Event<'t>, GiveUp> {
    // SAFETY: the union's fields are read only for the event type that owns them; the
    // pointers libyaml gives (anchor, tag, value) are valid until the event is deleted.
    unsafe {
        Ok(match event.type_ {
            unsafe_sys::YAML_STREAM_START_EVENT => Event::StreamStart,
            unsafe_sys::YAML_STREAM_END_EVENT => Event::StreamEnd,
            unsafe_sys::YAML_DOCUMENT_START_EVENT => {
                let doc = &event.data.document_start;
                Event::DocumentStart {
                    directives: !doc.version_directive.is_null() || doc.tag_directives.start != doc.tag_directives.end,
                }
            }
            unsafe_sys::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
            unsafe_sys::YAML_ALIAS_EVENT => return Err(GiveUp("alias")),
            unsafe_sys::YAML_SEQUENCE_START_EVENT => {
                let seq = &event.data.sequence_start;
                if !seq.anchor.is_null() || !seq.tag.is_null() {
                    return Err(GiveUp("anchor or tag"));
                }
                Event::SequenceStart
            }
            unsafe_sys::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
            unsafe_sys::YAML_MAPPING_START_EVENT => {
                let map = &event.data.mapping_start;
                if !map.anchor.is_null() || !map.tag.is_null() {
                    return Err(GiveUp("anchor or tag"));
                }
                Event::MappingStart
            }
            unsafe_sys::YAML_MAPPING_END_EVENT => Event::MappingEnd,
            unsafe_sys::YAML_SCALAR_EVENT => {
                let scalar = &event.data.scalar;
                if !scalar.anchor.is_null() || !scalar.tag.is_null() {
                    return Err(GiveUp("anchor or tag"));
                }
                if event.start_mark.line != event.end_mark.line {
                    return Err(GiveUp("multi-line scalar"));
                }
                let style = match scalar.style {
                    unsafe_sys::YAML_PLAIN_SCALAR_STYLE => Style::Plain,
                    unsafe_sys::YAML_SINGLE_QUOTED_SCALAR_STYLE | unsafe_sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE => {
                        Style::Quoted
                    }
                    _ => return Err(GiveUp("block scalar")),
                };
                // Marks are byte offsets into `text`.
                let (start, end) = (event.start_mark.index as usize, event.end_mark.index as usize);
                if scalar.style == unsafe_sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE {
                    let source = text.as_bytes().get(start..end);
                    if source.is_none_or(|s| s.contains(&b'\\')) {
                        return Err(GiveUp("escape"));
                    }
                }
                let bytes = std::slice::from_raw_parts(scalar.value, scalar.length as usize);
                // The text as written, quotes cut: libyaml's value unless quoted with `''`. Then
                // the value is a slice of the text, which needs no UTF-8 check.
                let written = match style {
                    Style::Plain => text.get(start..end),
                    Style::Quoted => text.get(start + 1..end.saturating_sub(1)),
                };
                let text = match written {
                    Some(written) if written.as_bytes() == bytes => Cow::Borrowed(written),
                    _ => match std::str::from_utf8(bytes) {
                        Ok(value) => Cow::Owned(value.to_owned()),
                        Err(_) => return Err(GiveUp("not UTF-8")),
                    },
                };
                Event::Scalar(Scalar {
                    text,
                    style,
                    start,
                    end,
                })
            }
            _ => return Err(GiveUp("unknown event")),
        })
    }
}

#[cfg(test)]
mod tests;
