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
/// The length of a tick.
const SECOND: Duration = Duration::from_secs(1);

/// The clock of a driver's turns.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    /// The tick of the last reading, and when the next one begins.
    tick: u32,
    next_tick: Instant,
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
#[inline]
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
            tick: 0,
            next_tick: start + SECOND,
            next_sweep: start + SWEEP_EVERY,
        }
    }

    /// Reads the time. The tick is worked out again only once a second
    /// has passed: this runs every turn, and comparing two instants costs
    /// a fraction of subtracting them.
    #[inline]
    pub(crate) fn read(&mut self) -> Now {
        let at = Instant::now();
        if at >= self.next_tick {
            let secs = at.duration_since(self.start).as_secs();
            self.tick = secs as u32;
            self.next_tick = self.start + Duration::from_secs(secs.saturating_add(1));
        }
        Now {
            at,
            tick: self.tick,
        }
    }

    /// When the next sweep is due.
    #[inline]
    pub(crate) fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Whether a sweep is due at `now`; if so, the next is a second later.
    #[inline]
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
    fn the_tick_counts_whole_seconds_since_the_start() {
        let mut clock = Clock::new();
        assert_eq!(clock.read().tick, 0);
        // As if the clock had started 5.5 s ago and not been read since.
        clock.start -= Duration::from_millis(5_500);
        clock.next_tick -= Duration::from_millis(5_500);
        assert_eq!(clock.read().tick, 5);
        assert_eq!(clock.read().tick, 5, "the same second");
        assert_eq!(clock.next_tick, clock.start + 6 * SECOND);
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
