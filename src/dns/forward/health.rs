//! Whether an upstream is up: consecutive failures mark it down, an answer marks it up.
//!
//! As CoreDNS's `forward` does with `max_fails`: [`MAX_FAILS`] failures in a row (timeouts,
//! ICMP errors) mark an upstream down, one failure does not; any answer (whatever its rcode)
//! resets the count and marks it up. One more condition keeps a lossy but working upstream
//! up: a failure marks it down only when the upstream has answered nothing for at least the
//! time an attempt may take (`patience`), so under load a few lost datagrams among thousands
//! of answers change nothing, while a black-holed or dead upstream is down after two
//! failures. A down upstream gets no queries, only probes ([`super::PROBE_EVERY`]).
//!
//! Times are milliseconds since the forwarder started, from 1 (0: never), so the state is a few
//! atomics read and written from any thread without a lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Failures in a row that mark an upstream down.
pub const MAX_FAILS: u32 = 2;

/// One upstream's health.
#[derive(Debug)]
pub(super) struct Health {
    fails: AtomicU32,
    /// When it last answered (ms), 0: never.
    answered_at: AtomicU64,
    up: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            fails: AtomicU32::new(0),
            answered_at: AtomicU64::new(0),
            up: AtomicBool::new(true),
        }
    }
}

/// What a report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing.
    None,
    /// It was up and is now down.
    Down,
    /// It was down and is now up.
    Up,
}

impl Health {
    /// Whether queries go to it.
    pub(super) fn is_up(&self) -> bool {
        // (SeqCst: the prober's hand-over in `forward::probe` reads it after a store.)
        self.up.load(Ordering::SeqCst)
    }

    /// It answered at `now` (ms).
    pub(super) fn answered(&self, now: u64) -> Change {
        // Loads before stores: under load every answer reports, and most change nothing.
        if self.answered_at.load(Ordering::Relaxed) != now {
            self.answered_at.store(now, Ordering::Relaxed);
        }
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        if !self.is_up() && !self.up.swap(true, Ordering::SeqCst) {
            return Change::Up;
        }
        Change::None
    }

    /// An attempt at it failed at `now` (ms); an attempt may take up to `patience` ms.
    pub(super) fn failed(&self, now: u64, patience: u64) -> Change {
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.answered_at.load(Ordering::Relaxed);
        let quiet = last == 0 || now.saturating_sub(last) >= patience;
        if fails >= MAX_FAILS && quiet && self.up.swap(false, Ordering::SeqCst) {
            return Change::Down;
        }
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: u64 = 800;

    #[test]
    fn one_failure_does_not_mark_down_two_in_a_row_do() {
        let h = Health::default();
        assert!(h.is_up());
        assert_eq!(h.failed(1000, PATIENCE), Change::None, "a single timeout");
        assert!(h.is_up());
        assert_eq!(h.answered(1100), Change::None);
        assert_eq!(
            h.failed(3000, PATIENCE),
            Change::None,
            "not in a row: an answer between"
        );
        assert!(h.is_up());
        assert_eq!(h.failed(3800, PATIENCE), Change::Down);
        assert!(!h.is_up());
        assert_eq!(h.failed(3900, PATIENCE), Change::None, "reported once");
        assert_eq!(h.answered(4000), Change::Up, "any answer brings it back");
        assert!(h.is_up());
        assert_eq!(h.answered(4001), Change::None);
    }

    #[test]
    fn a_lossy_upstream_that_keeps_answering_stays_up() {
        let h = Health::default();
        for t in (1000..2000).step_by(10) {
            h.answered(t);
            // Lost datagrams: their timeouts end between answers.
            assert_eq!(h.failed(t + 5, PATIENCE), Change::None);
            assert_eq!(h.failed(t + 6, PATIENCE), Change::None);
        }
        assert!(h.is_up());
        assert_eq!(
            h.failed(2000 + PATIENCE, PATIENCE),
            Change::Down,
            "silent for an attempt's time"
        );
    }

    #[test]
    fn never_answered_and_failing_twice_is_down() {
        let h = Health::default();
        assert_eq!(h.failed(5, PATIENCE), Change::None);
        assert_eq!(h.failed(10, PATIENCE), Change::Down, "no answer ever: quiet");
    }
}
