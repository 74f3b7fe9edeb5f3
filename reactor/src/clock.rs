//! A driver's notion of "now": the time read once at the start of each
//! turn, which everything done in the turn shares, the coarse clock of
//! whole seconds that idle and soft-limit timeouts count in, and when the
//! once-a-second sweep is due.
//!
//! The reactor reads it once per turn: every callback of a turn sees the
//! same `Context::now`, and the timers, deadlines and idle ticks of the
//! turn agree with it. The threaded driver's main thread reads it once per
//! round, for its timers, linger deadlines, accept pauses, sweep and stop;
//! its callbacks, though, run on many threads at any moment, not in turns
//! that share a start, so there `Context::now` (and whatever a callback
//! sets a deadline from) is the wall clock at the call.

use std::time::{Duration, Instant};

/// How often a driver sweeps its connections for timeouts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The clock of a driver's turns.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    next_sweep: Instant,
}

/// The time of one turn.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub(crate) at: Instant,
    /// Whole seconds since the clock started, rounded down, wrapping after
    /// 136 years.
    pub(crate) tick: u32,
}

/// How long a driver's wait may sleep: until the earliest of `deadlines`
/// (whichever are set), or until woken if none is.
pub(crate) fn sleep_until(
    deadlines: impl IntoIterator<Item = Option<Instant>>,
) -> Option<Duration> {
    deadlines
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(Instant::now()))
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let start = Instant::now();
        Clock {
            start,
            next_sweep: start + SWEEP_EVERY,
        }
    }

    /// The time, read once for a turn.
    pub(crate) fn read(&self) -> Now {
        let at = Instant::now();
        let tick = at.duration_since(self.start).as_secs() as u32;
        Now { at, tick }
    }

    /// When the next sweep is due.
    pub(crate) fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Whether a sweep is due at `now`; if so, the next is a second later.
    pub(crate) fn sweep_due(&mut self, now: Instant) -> bool {
        let due = now >= self.next_sweep;
        if due {
            self.next_sweep = now + SWEEP_EVERY;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_once_a_second() {
        let mut clock = Clock::new();
        let t0 = clock.start;
        assert_eq!(clock.read().tick, 0);
        assert!(!clock.sweep_due(t0));
        let t1 = t0 + SWEEP_EVERY;
        assert!(clock.sweep_due(t1));
        assert!(!clock.sweep_due(t1), "not again in the same second");
        assert_eq!(clock.next_sweep(), t1 + SWEEP_EVERY);
    }

    #[test]
    fn a_wait_sleeps_until_the_earliest_deadline_set() {
        assert_eq!(sleep_until([None, None]), None, "until woken");
        let soon = Instant::now() + Duration::from_secs(5);
        let sleep = sleep_until([Some(soon + SWEEP_EVERY), None, Some(soon)]).expect("a deadline");
        assert!(sleep <= Duration::from_secs(5) && sleep > Duration::from_secs(4));
        let past = Instant::now() - SWEEP_EVERY;
        assert_eq!(sleep_until([Some(soon), Some(past)]), Some(Duration::ZERO));
    }
}
