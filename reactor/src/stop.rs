//! The graceful stop, as a state both drivers keep: running, asked to stop,
//! stopping by a deadline (explained to the operator once), and what to do
//! about it at the end of each turn.

use std::time::{Duration, Instant};

use crate::timers::deadline;

/// Where a driver is in stopping.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    /// A stop was asked for (a signal, `Context::stop`, `Handle::stop`); it
    /// begins at the end of the turn.
    requested: bool,
    /// Set once the stop has begun: the time by which it must end.
    deadline: Option<Instant>,
    /// Whether the operator has been told what the stop waits for.
    explained: bool,
}

/// What a stopping driver is to do at the end of a turn.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not stopping, or stopping and still waiting for connections to go.
    Wait,
    /// Waiting, for the first time: say what for, then wait.
    Explain,
    /// Out of time: cut off whoever is left; then done.
    CutOff,
    /// Everyone is gone.
    Done,
}

impl Stop {
    /// A stop is asked for.
    pub(crate) fn request(&mut self) {
        self.requested = true;
    }

    /// Whether a stop was asked for and has not begun: it is to begin now
    /// (and the next wait must not sleep).
    pub(crate) fn due(&self) -> bool {
        self.requested && self.deadline.is_none()
    }

    /// Whether a stop was asked for, begun or not.
    pub(crate) fn requested(&self) -> bool {
        self.requested
    }

    /// The stop begins at `now`, and must be over `timeout` later.
    pub(crate) fn begin(&mut self, now: Instant, timeout: Duration) {
        self.requested = true;
        self.deadline = Some(deadline(now, timeout));
    }

    /// The time by which a stop under way must end.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A signal came at `now`: the first asks for a stop, a second one
    /// during the stop cuts it short.
    pub(crate) fn signal(&mut self, now: Instant) {
        if self.deadline.is_some() {
            log::info!("second signal: stopping now");
            self.deadline = Some(now);
        } else {
            log::info!("signal received: stopping");
            self.requested = true;
        }
    }

    /// What to do at `now`, with `left` connections still there.
    pub(crate) fn step(&mut self, now: Instant, left: usize) -> Step {
        let Some(deadline) = self.deadline else {
            return Step::Wait;
        };
        if left == 0 {
            Step::Done
        } else if now >= deadline {
            Step::CutOff
        } else if !self.explained {
            self.explained = true;
            Step::Explain
        } else {
            Step::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_waits_explains_once_then_cuts_off_or_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut stop = Stop::default();
        assert_eq!(stop.step(t0, 3), Step::Wait, "running");
        stop.request();
        assert!(stop.due() && stop.requested());
        assert_eq!(stop.step(t0, 3), Step::Wait, "asked for, not begun");
        stop.begin(t0, s(5));
        assert!(!stop.due());
        assert_eq!(stop.deadline(), Some(t0 + s(5)));
        assert_eq!(stop.step(t0, 3), Step::Explain);
        assert_eq!(stop.step(t0 + s(1), 3), Step::Wait, "explained once");
        assert_eq!(stop.step(t0 + s(5), 3), Step::CutOff);
        assert_eq!(stop.step(t0 + s(1), 0), Step::Done);
    }

    #[test]
    fn a_second_signal_cuts_the_stop_short() {
        let t0 = Instant::now();
        let mut stop = Stop::default();
        stop.signal(t0);
        assert!(stop.due());
        stop.begin(t0, Duration::from_secs(5));
        stop.signal(t0 + Duration::from_secs(1));
        assert_eq!(stop.deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(stop.step(t0 + Duration::from_secs(1), 1), Step::CutOff);
    }
}
