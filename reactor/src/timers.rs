//! The timer queue: deadlines in order, each with the tag its handler gave it.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::TimerId;

/// One-shot timers ordered by deadline.
///
/// A `BTreeMap` keyed by (deadline, sequence) gives the earliest deadline in
/// O(log n) for the poll timeout, and cancels a timer in O(log n) because the
/// [`TimerId`] carries its own key: no lazy-cancellation bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeMap<TimerId, u64>,
    next_seq: u64,
}

impl Timers {
    /// Adds a timer that fires at `at` and reports `tag`.
    pub(crate) fn insert(&mut self, at: Instant, tag: u64) -> TimerId {
        let id = TimerId {
            at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.queue.insert(id, tag);
        id
    }

    /// Removes a timer that has not fired yet; a fired or unknown one is ignored.
    pub(crate) fn cancel(&mut self, id: TimerId) {
        self.queue.remove(&id);
    }

    /// The earliest deadline, which bounds how long the loop may sleep.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(id, _)| id.at)
    }

    /// Removes and returns the tag of the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        match self.queue.first_key_value() {
            Some((id, _)) if id.at <= now => self.queue.pop_first().map(|(_, tag)| tag),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.insert(t0 + Duration::from_secs(2), 2);
        timers.insert(t0 + Duration::from_secs(1), 1);
        timers.insert(t0 + Duration::from_secs(1), 11);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due = t0 + Duration::from_secs(1);
        assert_eq!(
            timers.pop_due(due),
            Some(1),
            "equal deadlines fire in the order set"
        );
        assert_eq!(timers.pop_due(due), Some(11));
        assert_eq!(timers.pop_due(due), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), Some(2));
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let a = timers.insert(t0, 1);
        timers.insert(t0, 2);
        timers.cancel(a);
        timers.cancel(a);
        assert_eq!(timers.pop_due(t0), Some(2));
        assert_eq!(timers.pop_due(t0), None);
    }
}
