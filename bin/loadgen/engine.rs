//! The run itself: connect every connection (over TLS: and finish its
//! handshake), wait until the workload says all are ready (greeted,
//! subscribed), then measure — or, with `--idle`, just hold them — within a
//! deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::net::{ConnError, Net, Outbox, Ready, Status};
use crate::stats::{self, CpuTime};
use crate::tls;

/// Connects started but not finished (TLS: handshakes included), at most:
/// enough to keep the server's accept queue busy, few enough not to
/// overflow it (a dropped SYN is retried only a second later), nor to keep
/// a handshake waiting behind so many others that it times out.
const CONNECT_WINDOW: usize = 256;
/// Longest a wait may sleep, so that deadlines and the progress bar are
/// looked at often enough.
pub const TICK: Duration = Duration::from_millis(100);

/// What a workload has done so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Messages answered (echo) or delivered (fan-out).
    pub completed: u64,
    /// Messages sent.
    pub sent: u64,
    /// Bytes of answers or deliveries received.
    pub bytes: u64,
}

/// What the loop asks of a workload: what to send when, and what to make of
/// what arrives.
pub trait Workload {
    /// How many connections it needs.
    fn connections(&self) -> usize;
    /// Connection `conn` is up (over TLS: its handshake done): queue its
    /// greeting, if it has one.
    fn on_connect(&mut self, conn: usize, out: &mut Outbox);
    /// Bytes from `conn` (with whatever it left unconsumed last time):
    /// check them, queue what follows, and return how many were consumed.
    /// An error is a mismatch: the run fails with it.
    fn on_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String>;
    /// Whether every connection is ready to be measured, `connected` of
    /// them having connected.
    fn ready(&self, connected: usize) -> bool;
    /// Starts sending.
    fn start(&mut self, now: Instant, out: &mut Outbox);
    /// Sends nothing new from now on; what is in flight is still awaited.
    fn stop_sending(&mut self);
    /// Whether everything that will be sent has been answered.
    fn finished(&self) -> bool;
    /// What has been done so far.
    fn counts(&self) -> Counts;
    /// How many messages will complete in all, if that is known in advance.
    fn total(&self) -> Option<u64>;
    /// The latency of every completed message, in nanoseconds.
    fn latency(&self) -> &Histogram<u64>;
}

/// How to run.
pub struct Plan {
    /// Local addresses to connect from, in turn; empty to let the kernel pick.
    pub sources: Vec<IpAddr>,
    /// Send for this long (or, idle, hold this long) rather than a count.
    pub duration: Option<Duration>,
    /// Only connect (and greet) and hold the connections.
    pub idle: bool,
    /// When the whole run must have ended.
    pub deadline: Instant,
    /// Where to connect: connection `n` goes to `addrs[n % addrs.len()]`,
    /// so that one run can spread its clients over several servers.
    pub addrs: Vec<SocketAddr>,
    /// The servers' processes, to measure their CPU time and memory
    /// (together, when there are several).
    pub server_pids: Vec<u32>,
    /// Speak TLS, as this client.
    pub tls: Option<tls::Client>,
    /// Progress, or a hidden bar.
    pub progress: ProgressBar,
}

impl Plan {
    /// Where connection `conn` connects to.
    pub fn addr(&self, conn: usize) -> SocketAddr {
        self.addrs[conn % self.addrs.len()]
    }
}

/// What a run measured.
pub struct Outcome {
    /// From the first connect until every connection was ready.
    pub setup: Duration,
    /// From the start of sending until the last answer (or the hold's end).
    pub elapsed: Duration,
    /// The server's CPU time over `elapsed`.
    pub server_cpu: Option<CpuTime>,
    /// loadgen's own CPU time over `elapsed`.
    pub own_cpu: CpuTime,
    /// The server's resident memory at the end, in KiB.
    pub server_rss_kib: Option<u64>,
    /// Over TLS: the protocol version and cipher suite negotiated.
    pub tls: Option<String>,
}

/// Why a run failed.
pub enum Failure {
    /// A connection could not be made.
    Connect(std::io::Error, usize),
    /// Something went wrong on an open connection, or with what came back.
    Run(String),
    /// The deadline passed first.
    Timeout(Counts),
}

/// Where the run is.
#[derive(Clone, Copy)]
enum Phase {
    /// Connecting and greeting.
    Setup,
    /// Sending and receiving, since `since`.
    Measuring {
        since: Instant,
        stop_at: Option<Instant>,
    },
    /// Idle: holding every connection until `until`.
    Holding { since: Instant, until: Instant },
}

/// Runs `workload` as `plan` says.
pub fn run(workload: &mut dyn Workload, plan: &Plan) -> Result<Outcome, Failure> {
    let count = workload.connections();
    let fail = |e: std::io::Error| Failure::Run(crate::describe(&e));
    let mut net = Net::new(count, plan.tls.clone()).map_err(fail)?;
    let mut out = Outbox::new(count);
    let mut events = Vec::with_capacity(1024);
    let mut ready = Vec::with_capacity(1024);
    let mut dirty = Vec::new();

    let setup_start = Instant::now();
    let mut started = 0;
    let mut connecting = 0;
    let mut connected = 0;
    let mut phase = Phase::Setup;
    let mut setup = Duration::ZERO;
    let mut cpu_before = Start::default();
    let progress = &plan.progress;
    progress.set_length(count as u64);
    progress.set_message("connecting");
    let mut next_progress = setup_start;

    loop {
        while started < count && connecting < CONNECT_WINDOW {
            let source =
                (!plan.sources.is_empty()).then(|| plan.sources[started % plan.sources.len()]);
            net.connect(started, plan.addr(started), source)
                .map_err(|e| Failure::Connect(e, connected))?;
            started += 1;
            connecting += 1;
        }
        net.wait(&mut events, &mut ready, TICK).map_err(fail)?;
        let now = Instant::now();
        for &Ready {
            conn,
            readable,
            writable,
        } in &ready
        {
            let mut established = false;
            if net.is_connecting(conn) {
                established = net
                    .finish_connect(conn)
                    .map_err(|e| Failure::Connect(e, connected))?;
            } else if readable {
                let result = net
                    .read(conn, |input| workload.on_input(conn, input, now, &mut out))
                    .map_err(|e| broken(&net, e, connected))?;
                match result.map_err(Failure::Run)? {
                    Status::Open => {}
                    Status::Established => established = true,
                    Status::Closed => {
                        return Err(Failure::Run(format!(
                            "connection {conn} was closed by the server"
                        )))
                    }
                }
            }
            if established {
                connecting -= 1;
                connected += 1;
                workload.on_connect(conn, &mut out);
                net.drain(conn, |input| workload.on_input(conn, input, now, &mut out))
                    .map_err(Failure::Run)?;
            } else if writable {
                net.flush(conn, &mut out)
                    .map_err(|e| broken(&net, e, connected))?;
            }
        }

        match phase {
            Phase::Setup if connected == count && workload.ready(connected) => {
                setup = now - setup_start;
                cpu_before = Start::now(plan);
                if plan.idle {
                    let hold = plan.duration.unwrap_or_default();
                    progress.set_message("holding");
                    progress.set_length(hold.as_millis() as u64);
                    progress.set_position(0);
                    phase = Phase::Holding {
                        since: now,
                        until: now + hold,
                    };
                } else {
                    workload.start(now, &mut out);
                    progress.set_message("measuring");
                    progress.set_length(
                        workload.total().unwrap_or_else(|| {
                            plan.duration.unwrap_or_default().as_millis() as u64
                        }),
                    );
                    progress.set_position(0);
                    phase = Phase::Measuring {
                        since: now,
                        stop_at: plan.duration.map(|d| now + d),
                    };
                }
            }
            Phase::Measuring { since, stop_at } => {
                if stop_at.is_some_and(|at| now >= at) {
                    workload.stop_sending();
                }
                if workload.finished() {
                    return Ok(finish(plan, &net, setup, now - since, cpu_before));
                }
            }
            Phase::Holding { since, until } if now >= until => {
                return Ok(finish(plan, &net, setup, now - since, cpu_before));
            }
            _ => {}
        }

        out.take_dirty(&mut dirty);
        for &conn in &dirty {
            net.flush(conn, &mut out)
                .map_err(|e| broken(&net, e, connected))?;
        }

        if now >= plan.deadline {
            return Err(Failure::Timeout(workload.counts()));
        }
        if now >= next_progress {
            next_progress = now + TICK;
            progress.set_position(match phase {
                Phase::Setup => connected as u64,
                Phase::Measuring { since, .. } if workload.total().is_none() => {
                    (now - since).as_millis() as u64
                }
                Phase::Measuring { .. } => workload.counts().completed,
                Phase::Holding { since, .. } => (now - since).as_millis() as u64,
            });
        }
    }
}

/// A connection that broke, as a failure of the run: one that was not yet
/// established (a TLS handshake that failed: a certificate not trusted, a
/// server that does not speak TLS) is one the run could not make.
pub fn broken(net: &Net, e: ConnError, connected: usize) -> Failure {
    if !net.is_established(e.conn) {
        return Failure::Connect(e.error, connected);
    }
    Failure::Run(format!(
        "connection {}: {}",
        e.conn,
        crate::describe(&e.error)
    ))
}

/// The CPU times taken when the measured part of a run starts.
#[derive(Clone, Copy, Default)]
pub struct Start {
    server: Option<CpuTime>,
    own: CpuTime,
}

impl Start {
    /// The CPU times of the server (if `plan` names it) and of loadgen now.
    pub fn now(plan: &Plan) -> Start {
        Start {
            server: CpuTime::of_all(&plan.server_pids),
            own: CpuTime::of(None).unwrap_or_default(),
        }
    }
}

/// The measurements taken when the run over `net` ends, against those taken
/// when it started.
pub fn finish(plan: &Plan, net: &Net, setup: Duration, elapsed: Duration, start: Start) -> Outcome {
    let server_cpu = start
        .server
        .and_then(|before| Some(CpuTime::of_all(&plan.server_pids)?.since(before)));
    Outcome {
        setup,
        elapsed,
        server_cpu,
        own_cpu: CpuTime::of(None).unwrap_or_default().since(start.own),
        server_rss_kib: plan
            .server_pids
            .iter()
            .map(|&pid| stats::rss_kib(pid).ok())
            .sum::<Option<u64>>()
            .filter(|_| !plan.server_pids.is_empty()),
        tls: net.negotiated().map(str::to_string),
    }
}
