//! Flood control: how many lines a client may send how fast.
//!
//! A token bucket, kept as GCRA (the generic cell rate algorithm of ATM
//! networks): rather than a count of tokens and the time it was last
//! refilled, each client has one instant, its *theoretical arrival time* —
//! when its next line would be due if it sent at exactly the allowed rate.
//! Each line moves it on by one interval (`1 / rate`); a line is allowed as
//! long as that instant is at most `burst - 1` intervals ahead of now. A
//! client that has been quiet for a while has it in the past and may send a
//! whole burst at once; one that keeps sending is held to the rate. Nothing
//! needs refilling, so an idle client costs no work and one `Instant`.

use std::time::{Duration, Instant};

/// A rate and a burst, as the interval between lines and how far ahead of
/// now a client's arrival time may run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    /// The time one line costs: `1 / rate`.
    interval: Duration,
    /// How far ahead of now the arrival time may be for a line to be
    /// allowed: `burst - 1` intervals, so that `burst` lines may come at once.
    tolerance: Duration,
}

impl Budget {
    /// `rate` lines per second after a burst of `burst`; `None` (no limit)
    /// if `rate` is 0.
    pub(super) fn new(rate: u32, burst: u32) -> Option<Budget> {
        if rate == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / rate;
        Some(Budget {
            interval,
            tolerance: interval * burst.saturating_sub(1),
        })
    }

    /// How long a client whose arrival time is `due` must wait before its
    /// next line; zero if it may send one now.
    pub(super) fn wait(&self, due: Instant, now: Instant) -> Duration {
        due.saturating_duration_since(now + self.tolerance)
    }

    /// Charges a client whose arrival time is `due` for a line that costs
    /// `lines` lines, sent `now`.
    pub(super) fn charge(&self, due: &mut Instant, now: Instant, lines: u32) {
        // An arrival time in the past is a full bucket: it starts from now.
        *due = (*due).max(now) + self.interval * lines;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `lines` lines as fast as `budget` allows; returns when each
    /// was allowed, from the first.
    fn sent(budget: Budget, lines: usize) -> Vec<Duration> {
        let start = Instant::now();
        let (mut now, mut due) = (start, start);
        (0..lines)
            .map(|_| {
                now += budget.wait(due, now);
                budget.charge(&mut due, now, 1);
                now - start
            })
            .collect()
    }

    #[test]
    fn a_burst_comes_at_once_then_the_rate() {
        let times = sent(Budget::new(5, 3).unwrap(), 6);
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 200, 400, 600]);
    }

    #[test]
    fn a_quiet_client_gets_its_burst_back_and_no_more() {
        let budget = Budget::new(10, 2).unwrap();
        let start = Instant::now();
        let mut due = start;
        budget.charge(&mut due, start, 1);
        budget.charge(&mut due, start, 1);
        assert_eq!(budget.wait(due, start), Duration::from_millis(100));
        let later = start + Duration::from_secs(60);
        assert_eq!(budget.wait(due, later), Duration::ZERO);
        budget.charge(&mut due, later, 1);
        budget.charge(&mut due, later, 1);
        assert!(
            budget.wait(due, later) > Duration::ZERO,
            "a minute saves no more than a burst"
        );
    }

    #[test]
    fn a_costly_line_makes_the_next_wait_longer() {
        let budget = Budget::new(10, 1).unwrap();
        let now = Instant::now();
        let mut due = now;
        budget.charge(&mut due, now, 3);
        assert_eq!(budget.wait(due, now), Duration::from_millis(300));
    }

    #[test]
    fn rate_zero_is_no_limit() {
        assert!(Budget::new(0, 30).is_none());
    }
}
