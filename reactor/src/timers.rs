//! The timer queue: deadlines in order, each with what it is for — the tag
//! a handler gave it, or the driver's own business.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::TimerId;

/// `now + after`, or a point decades away if that is past what an
/// `Instant` can hold: a timeout of `u64::MAX` seconds means "never", not a
/// panic.
pub(crate) fn deadline(now: Instant, after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(after.min(FAR))
        .or_else(|| now.checked_add(FAR / 100))
        .unwrap_or(now)
}

/// One-shot timers ordered by deadline, each carrying a `T`.
///
/// A `BTreeMap` keyed by (deadline, sequence) gives the earliest deadline in
/// O(log n) for the poll timeout, and cancels a timer in O(log n) because the
/// [`TimerId`] carries its own key: no lazy-cancellation bookkeeping.
#[derive(Debug)]
pub(crate) struct Timers<T = u64> {
    queue: BTreeMap<TimerId, T>,
    next_seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            queue: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Adds a timer that fires at `at` and reports `tag`.
    pub(crate) fn insert(&mut self, at: Instant, tag: T) -> TimerId {
        let id = TimerId {
            at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.queue.insert(id, tag);
        id
    }

    /// Removes a timer that has not fired yet and returns what it carried;
    /// a fired or unknown one is ignored.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.queue.remove(&id)
    }

    /// What a timer that has not fired yet carries.
    pub(crate) fn get(&self, id: TimerId) -> Option<&T> {
        self.queue.get(&id)
    }

    /// Every timer not fired yet, earliest first: for a driver that chooses
    /// among the due ones itself (the test harness).
    pub(crate) fn ids(&self) -> impl Iterator<Item = TimerId> + '_ {
        self.queue.keys().copied()
    }

    /// The earliest deadline, which bounds how long the loop may sleep.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(id, _)| id.at)
    }

    /// Where the timers set from now on begin: pass it to `pop_due` to
    /// leave them for the next turn.
    pub(crate) fn horizon(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the tag of the earliest timer due at `now` that
    /// was set before `horizon`. A timer set while timers fire is due no
    /// earlier than the turn's `now`, so it sorts after every older one that
    /// is due, and stopping at the first new one skips no old one. This is
    /// ae.c's `maxId` guard: a timer that re-arms itself with no delay
    /// fires once per turn, not forever within one.
    pub(crate) fn pop_due(&mut self, now: Instant, horizon: u64) -> Option<T> {
        match self.queue.first_key_value() {
            Some((id, _)) if id.at <= now && id.seq < horizon => {
                self.queue.pop_first().map(|(_, tag)| tag)
            }
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
        assert_eq!(timers.pop_due(t0, u64::MAX), None);
        let due = t0 + Duration::from_secs(1);
        assert_eq!(
            timers.pop_due(due, u64::MAX),
            Some(1),
            "equal deadlines fire in the order set"
        );
        assert_eq!(timers.pop_due(due, u64::MAX), Some(11));
        assert_eq!(timers.pop_due(due, u64::MAX), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(5), u64::MAX),
            Some(2)
        );
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
        assert_eq!(timers.pop_due(t0, u64::MAX), Some(2));
        assert_eq!(timers.pop_due(t0, u64::MAX), None);
    }

    #[test]
    fn deadlines_saturate() {
        let t0 = Instant::now();
        assert_eq!(
            deadline(t0, Duration::from_secs(1)),
            t0 + Duration::from_secs(1)
        );
        assert!(deadline(t0, Duration::MAX) > t0 + Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn timers_set_past_the_horizon_wait_for_the_next_turn() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.insert(t0, 1);
        let horizon = timers.horizon();
        assert_eq!(timers.pop_due(t0, horizon), Some(1));
        // Re-armed with no delay while firing: not again in this turn.
        timers.insert(t0, 1);
        assert_eq!(timers.pop_due(t0, horizon), None);
        assert_eq!(timers.pop_due(t0, timers.horizon()), Some(1));
    }
}
