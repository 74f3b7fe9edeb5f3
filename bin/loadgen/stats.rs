//! What loadgen measures besides its own counts: the CPU time and memory of
//! a process, from `/proc`, and latency percentiles.

use std::fs;
use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;

/// CPU time a process has used, in user space and in the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    /// utime: running its own code.
    pub user: Duration,
    /// stime: in system calls (and the network stack's work done in them).
    pub system: Duration,
}

impl CpuTime {
    /// The CPU time of several processes together (`pids`, all of them
    /// readable), or `None` if there are none.
    pub fn of_all(pids: &[u32]) -> Option<CpuTime> {
        let mut sum: Option<CpuTime> = None;
        for &pid in pids {
            let one = CpuTime::of(Some(pid)).ok()?;
            let total = sum.get_or_insert_with(CpuTime::default);
            total.user += one.user;
            total.system += one.system;
        }
        sum
    }

    /// Reads utime and stime of process `pid` (all its threads), or of
    /// loadgen itself, from `/proc/PID/stat`. They count in clock ticks,
    /// usually 10 ms: measure over seconds, not milliseconds.
    pub fn of(pid: Option<u32>) -> io::Result<CpuTime> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/stat"),
            None => "/proc/self/stat".to_string(),
        };
        let stat = fs::read_to_string(&path)?;
        // The command name (field 2) is in parentheses and may hold spaces:
        // count fields from the last `)`. Field 3 (state) comes first.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |field: usize| -> io::Result<Duration> {
            let value: u64 = fields
                .get(field - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| io::Error::other(format!("cannot parse {path}")))?;
            let per_second = rustix::param::clock_ticks_per_second();
            Ok(Duration::from_nanos(value * 1_000_000_000 / per_second))
        };
        Ok(CpuTime {
            user: ticks(14)?,
            system: ticks(15)?,
        })
    }

    /// The time used between `earlier` and this sample.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// User and system time together.
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS` in
/// `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))
}

/// A latency histogram in nanoseconds, from 1 ns to an hour, to three
/// significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

/// The percentiles loadgen reports, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// The median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest seen.
    pub max: f64,
}

impl Latency {
    /// The percentiles of `hist` (nanoseconds), in microseconds.
    pub fn of(hist: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(hist.value_at_quantile(0.5)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
        }
    }
}
