//! Serials by RFC 1982 and the clock (pending changes sealed the second after), a bounded
//! history, and the zone walk.

use super::*;

fn record(i: u32) -> ZoneRecord {
    ZoneRecord {
        owner: format!("h{i}.global").into(),
        data: RData::A(i.into()),
    }
}

fn change(removed: Vec<ZoneRecord>, added: Vec<ZoneRecord>) -> Changes {
    Changes {
        removed: removed.into_iter().collect(),
        added: added.into_iter().collect(),
    }
}

#[test]
fn serials_compare_by_rfc_1982_and_are_the_clock_of_the_change() {
    assert!(serial_gt(1, 0) && serial_gt(0, u32::MAX) && !serial_gt(0, 1) && !serial_gt(5, 5));
    // A change in a later second: sealed at once, the serial that second; across the wrap too.
    assert_eq!(
        Version::new(100).advance(change(vec![], vec![record(1)]), 200).serial,
        200
    );
    assert_eq!(
        Version::new(u32::MAX)
            .advance(change(vec![], vec![record(1)]), 5)
            .serial,
        5
    );
    // A clock behind the serial (stepped back): the change waits; the serial never runs ahead.
    let v = Version::new(300).advance(change(vec![], vec![record(1)]), 200);
    assert_eq!((v.serial, v.is_pending(), v.seals_at()), (300, true, Some(301)));
    assert_eq!(v.sealed(300).serial, 300);
    assert_eq!(v.sealed(301).serial, 301);
    // No change, no new serial.
    assert_eq!(Version::new(7).advance(change(vec![], vec![]), 200).serial, 7);
}

#[test]
fn a_burst_in_one_second_is_one_serial_sealed_the_next_second() {
    let v = Version::new(1000);
    // Three changes within second 1000: served, pending, coalesced.
    let v = v.advance(change(vec![], vec![record(1), record(2)]), 1000);
    let v = v.advance(change(vec![record(9)], vec![record(3)]), 1000);
    let v = v.advance(change(vec![record(1)], vec![]), 1000); // added then removed: cancels
    assert_eq!((v.serial, v.is_pending()), (1000, true));
    assert_eq!(v.changes_since(1000).unwrap().len(), 0, "nothing sealed yet");
    assert_eq!(v.sealed(1000).serial, 1000, "not before the clock passes the serial");
    let sealed = v.sealed(1001);
    assert_eq!((sealed.serial, sealed.is_pending()), (1001, false));
    let deltas = sealed.changes_since(1000).unwrap();
    assert_eq!(deltas.len(), 1, "one serial for the burst");
    let (removed, added): (Vec<_>, Vec<_>) = (deltas[0].removed().collect(), deltas[0].added().collect());
    assert_eq!(
        (deltas[0].from, deltas[0].to, removed, added),
        (1000, 1001, vec![&record(9)], vec![&record(2), &record(3)])
    );
    // A change in a later second seals what is pending with it, at that second.
    let later = v.advance(change(vec![record(3)], vec![]), 1005);
    assert_eq!(later.serial, 1005);
    assert_eq!(
        later.changes_since(1000).unwrap()[0].added().collect::<Vec<_>>(),
        [&record(2)]
    );
}

#[test]
fn a_change_undone_within_its_second_changes_no_serial() {
    let v = Version::new(50).advance(change(vec![record(1)], vec![record(2)]), 50);
    let v = v.advance(change(vec![record(2)], vec![record(1)]), 50);
    let sealed = v.sealed(60);
    assert_eq!((sealed.serial, sealed.is_pending()), (50, false));
}

#[test]
fn the_start_up_serial_is_never_an_ixfr_base() {
    // The first records in the start-up second: that zone at its serial is the empty
    // start-up one, never transferred; sealed the next second.
    let v = Version::at_start(70).advance(change(vec![], vec![record(1)]), 70);
    assert!(!v.transferable() && v.is_pending());
    assert!(v.sealed(71).transferable());
    // Another process may have served other records at the same second.
    let v = Version::at_start(70).advance(change(vec![], vec![record(1)]), 71);
    assert!(v.transferable());
    assert_eq!(v.serial, 71);
    assert!(v.changes_since(70).is_none(), "the whole zone from the start-up serial");
    let v = v.advance(change(vec![], vec![record(2)]), 72);
    assert_eq!(v.changes_since(71).unwrap().len(), 1);
}

#[test]
fn the_history_keeps_the_last_changes_within_its_bounds() {
    let mut v = Version::new(1);
    let first = v.serial;
    for i in 0..(HISTORY_CHANGES as u32 + 5) {
        v = v.advance(change(vec![], vec![record(i)]), i + 2);
    }
    assert_eq!(v.history.len(), HISTORY_CHANGES);
    assert!(v.changes_since(first).is_none(), "the oldest went");
    let from = v.history[0].from;
    assert_eq!(v.changes_since(from).unwrap().len(), HISTORY_CHANGES);
    assert_eq!(v.changes_since(v.serial).unwrap().len(), 0);
    // Bytes: one change larger than the bound is not kept at all.
    let big: Vec<ZoneRecord> = (0..(HISTORY_BYTES / 20) as u32).map(record).collect();
    let v = v.advance(change(vec![], big), 10_000);
    assert!(v.history.is_empty() && v.bytes == 0);
    assert!(v.changes_since(from).is_none());
}
