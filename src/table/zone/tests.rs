//! Serials by RFC 1982, a bounded history, and the zone walk.

use super::*;

fn record(i: u32) -> ZoneRecord {
    ZoneRecord {
        owner: format!("h{i}.global").into(),
        data: RData::A(i.into()),
    }
}

#[test]
fn serials_compare_and_advance_by_rfc_1982() {
    assert!(serial_gt(1, 0) && serial_gt(0, u32::MAX) && !serial_gt(0, 1) && !serial_gt(5, 5));
    // At least the Unix time, else one more; across the wrap too.
    assert_eq!(Version::new(100).advance(vec![], vec![record(1)], 200).serial, 200);
    assert_eq!(Version::new(300).advance(vec![], vec![record(1)], 200).serial, 301);
    assert_eq!(Version::new(u32::MAX).advance(vec![], vec![record(1)], 5).serial, 5);
    assert_eq!(
        Version::new(u32::MAX).advance(vec![], vec![record(1)], 1 << 31).serial,
        0
    );
    // No change, no new serial.
    assert_eq!(Version::new(7).advance(vec![], vec![], 200).serial, 7);
}

#[test]
fn the_history_keeps_the_last_changes_within_its_bounds() {
    let mut v = Version::new(1);
    let first = v.serial;
    for i in 0..(HISTORY_CHANGES as u32 + 5) {
        v = v.advance(vec![], vec![record(i)], 0);
    }
    assert_eq!(v.history.len(), HISTORY_CHANGES);
    assert!(v.changes_since(first).is_none(), "the oldest went");
    let from = v.history[0].from;
    assert_eq!(v.changes_since(from).unwrap().len(), HISTORY_CHANGES);
    assert_eq!(v.changes_since(v.serial).unwrap().len(), 0);
    // Bytes: one change larger than the bound is not kept at all.
    let big: Vec<ZoneRecord> = (0..(HISTORY_BYTES / 20) as u32).map(record).collect();
    let v = v.advance(vec![], big, 0);
    assert!(v.history.is_empty() && v.bytes == 0);
    assert!(v.changes_since(from).is_none());
}
