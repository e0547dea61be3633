//! Matching a reply to its query ([`answers`]); reading the question name ([`parse`], [`question_name`]).

use super::*;

/// A query for `name` of `qtype`, class IN, ID 0x1234, RD set.
fn query(name: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// The reply an upstream would send to `query` (QR set, one A record), with `edit` applied
/// to its question bytes (name, type, class).
fn reply(query: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] |= 0x80;
    r[7] = 1;
    edit(&mut r[HEADER_LEN..]);
    r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1]);
    r
}

const NAME: &[u8] = b"\x03www\x07example\x03com\x00";
/// HTTPS (65, 0x0041): its low byte is the letter `A`, whose lower case is 0x61.
const HTTPS: u16 = 65;

#[test]
fn the_name_matches_in_any_case() {
    let q = query(NAME, HTTPS);
    assert!(answers(&reply(&q, |_| {}), &q));
    let upper = reply(&q, |question| question[..NAME.len()].make_ascii_uppercase());
    assert!(answers(&upper, &q), "RFC 4343: names compare case-insensitively");
}

#[test]
fn type_and_class_match_exactly() {
    let q = query(NAME, HTTPS);
    let at = NAME.len();
    // 0x0041 → 0x0061: the same bytes but for the ASCII case bit of the type's low byte.
    let other_type = reply(&q, |question| question[at + 1] ^= 0x20);
    assert_eq!(u16::from_be_bytes([other_type[12 + at], other_type[13 + at]]), 0x61);
    assert!(!answers(&other_type, &q), "type 0x0061 does not answer 0x0041");
    // The class likewise: a query of class 0x0041 is not answered by class 0x0061.
    let mut q = query(NAME, HTTPS);
    q[HEADER_LEN + at + 3] = 0x41;
    let other_class = reply(&q, |question| question[at + 3] = 0x61);
    assert!(!answers(&other_class, &q), "class 0x0061 does not answer 0x0041");
    assert!(answers(&reply(&q, |_| {}), &q));
}

#[test]
fn other_ids_and_questions_do_not_match() {
    let q = query(NAME, rtype::A);
    let mut wrong_id = reply(&q, |_| {});
    wrong_id[1] ^= 1;
    assert!(!answers(&wrong_id, &q));
    let other_name = reply(&q, |question| question[1] = b'x');
    assert!(!answers(&other_name, &q));
    let not_a_response = q.clone();
    assert!(!answers(&not_a_response, &q));
    // No question and an error rcode: a server that could not read the question.
    let mut formerr = q[..HEADER_LEN].to_vec();
    formerr[2] |= 0x80;
    formerr[3] |= 1;
    formerr[5] = 0;
    assert!(answers(&formerr, &q));
}

/// A name of `labels` (each at most 63 bytes) in wire format, with the root label.
fn wire_name(labels: &[Vec<u8>]) -> Vec<u8> {
    let mut name: Vec<u8> = labels.iter().flat_map(|l| [&[l.len() as u8][..], l].concat()).collect();
    name.push(0);
    name
}

/// The longest name (255 bytes), in mixed case across every 16-byte chunk, parses in lower case;
/// one byte more is no name.
#[test]
fn the_longest_name_is_read_in_lower_case_and_one_more_byte_is_not() {
    let label = |n: usize| {
        (0..n)
            .map(|i| if i % 3 == 0 { b'A' + (i % 26) as u8 } else { b'z' })
            .collect()
    };
    let longest = wire_name(&[label(63), label(63), label(63), label(61)]);
    assert_eq!(longest.len(), 255);
    let msg = query(&longest, 1);
    let q = parse(&msg).expect("255 bytes");
    assert_eq!(q.lower_name(), longest.to_ascii_lowercase());
    let mut buf = [0; LOWER_LEN];
    assert_eq!(
        question_name(&query(&longest, 1), &mut buf),
        Some(&longest.to_ascii_lowercase()[..])
    );
    let over = wire_name(&[label(63), label(63), label(63), label(62)]);
    assert_eq!(parse(&query(&over, 1)).unwrap_err(), Reject::Reply(rcode::FORMERR));
    assert_eq!(question_name(&query(&over, 1), &mut buf), None);
}

proptest::proptest! {
    /// Any question name, cut anywhere or not: the parse reads it in lower case exactly when
    /// it is whole, and `question_name` (read ahead of answering) reads the same name.
    #[test]
    fn question_names_are_read_alike_in_lower_case(
        labels in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..70), 0..6),
        cut in proptest::option::of(0usize..400),
    ) {
        let labels: Vec<Vec<u8>> = labels.into_iter().filter(|l| !l.is_empty()).collect();
        let name = wire_name(&labels);
        let mut msg = query(&name, 1);
        if let Some(cut) = cut {
            msg.truncate(cut.max(HEADER_LEN));
        }
        let whole = msg.len() >= HEADER_LEN + name.len() + 4
            && name.len() <= crate::name::MAX_WIRE_LEN
            && labels.iter().all(|l| l.len() <= crate::name::MAX_LABEL_LEN);
        let parsed = parse(&msg);
        let mut buf = [0; LOWER_LEN];
        let ahead = question_name(&msg, &mut buf).map(<[u8]>::to_vec);
        match parsed {
            Ok(q) => {
                proptest::prop_assert!(whole);
                proptest::prop_assert_eq!(q.lower_name(), &name.to_ascii_lowercase()[..]);
                proptest::prop_assert_eq!(ahead, Some(name.to_ascii_lowercase()));
            }
            Err(e) => {
                proptest::prop_assert!(!whole, "{:?}", e);
                proptest::prop_assert_eq!(e, Reject::Reply(rcode::FORMERR));
            }
        }
    }
}
