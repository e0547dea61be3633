//! DNS queries as bytes, for the benchmarks and the allocation test.

/// A query (RD set) for `name` (presentation format, no trailing dot) of type `qtype`, class
/// IN, with an OPT record (payload 1232) when `edns`.
pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns),
    ];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    q
}
