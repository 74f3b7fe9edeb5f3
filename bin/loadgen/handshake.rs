//! `--mode handshake`: how many TLS handshakes a server completes per
//! second, and what each costs it. `-c` connections at a time each connect,
//! complete the handshake, say close_notify, close, and start again, until
//! each has made `-n` handshakes or `--duration` is over. A handshake's
//! latency runs from its connect to its end.
//!
//! This mode has a loop of its own rather than being an engine workload:
//! the engine sets connections up, then measures messages over them while
//! they stay up; here setting up is what is measured, from the first
//! connect on, and connections come and go. The sockets and TLS are the
//! engine's (`net`, `tls`).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::engine::{self, Counts, Failure, Outcome, Plan, Start, TICK};
use crate::net::{Net, Outbox, Ready, Status};
use crate::stats;

/// What a handshake run did.
pub struct Handshakes {
    /// The measurements; `setup` is zero, there is none.
    pub outcome: Outcome,
    /// `completed`: handshakes completed; `sent`: handshakes started.
    pub counts: Counts,
    /// The latency of every completed handshake, in nanoseconds.
    pub latency: Histogram<u64>,
}

/// Runs `concurrency` connections through handshakes, `per_conn` each if
/// given (else for `plan.duration`), as `plan` says.
pub fn run(plan: &Plan, concurrency: usize, per_conn: Option<u64>) -> Result<Handshakes, Failure> {
    let fail = |e: std::io::Error| Failure::Run(crate::describe(&e));
    let mut net = Net::new(concurrency, plan.tls.clone()).map_err(fail)?;
    // Never written to: no plaintext is sent, only what rustls sends itself.
    let mut out = Outbox::new(concurrency);
    let mut events = Vec::with_capacity(1024);
    let mut ready = Vec::with_capacity(1024);
    let mut latency = stats::new_histogram();
    let mut counts = Counts::default();
    let total = per_conn.map(|n| n * concurrency as u64);

    let start = Instant::now();
    let cpu_before = Start::now(plan);
    let stop_at = plan.duration.map(|d| start + d);
    // Slots not connected, and when each of the others started connecting.
    // Every slot is busy at once: `-c` is the concurrency asked for.
    let mut free: Vec<usize> = (0..concurrency).rev().collect();
    let mut began = vec![start; concurrency];
    let mut stopping = false;
    let progress = &plan.progress;
    progress.set_message("handshakes");
    progress
        .set_length(total.unwrap_or_else(|| plan.duration.unwrap_or_default().as_millis() as u64));
    let mut next_progress = start;

    loop {
        while !stopping && total.is_none_or(|t| counts.sent < t) {
            let Some(conn) = free.pop() else { break };
            let source = (!plan.sources.is_empty())
                .then(|| plan.sources[counts.sent as usize % plan.sources.len()]);
            began[conn] = Instant::now();
            net.connect(conn, plan.addr(conn), source)
                .map_err(|e| Failure::Connect(e, counts.completed as usize))?;
            counts.sent += 1;
        }
        net.wait(&mut events, &mut ready, TICK).map_err(fail)?;
        let now = Instant::now();
        for &Ready {
            conn,
            readable,
            writable,
        } in &ready
        {
            let done = counts.completed as usize;
            let status = if net.is_connecting(conn) {
                net.finish_connect(conn)
                    .map_err(|e| Failure::Connect(e, done))?;
                Status::Open
            } else if readable {
                // Nothing is sent, so nothing but the handshake comes back;
                // whatever might come with its end is dropped with the
                // connection.
                net.read(conn, |_| Ok::<_, String>(0))
                    .map_err(|e| engine::broken(&net, e, done))?
                    .map_err(Failure::Run)?
            } else {
                Status::Open
            };
            match status {
                Status::Open if writable => net
                    .flush(conn, &mut out)
                    .map_err(|e| engine::broken(&net, e, done))?,
                Status::Open => {}
                Status::Established => {
                    latency.saturating_record((now - began[conn]).as_nanos() as u64);
                    counts.completed += 1;
                    net.close(conn);
                    free.push(conn);
                }
                Status::Closed => {
                    return Err(Failure::Connect(
                        std::io::Error::other("the server closed the connection"),
                        done,
                    ))
                }
            }
        }

        if stop_at.is_some_and(|at| now >= at) {
            stopping = true;
        }
        let all_started = stopping || total.is_some_and(|t| counts.sent == t);
        if all_started && free.len() == concurrency {
            let outcome = engine::finish(plan, &net, Duration::ZERO, now - start, cpu_before);
            return Ok(Handshakes {
                outcome,
                counts,
                latency,
            });
        }
        if now >= plan.deadline {
            return Err(Failure::Timeout(counts));
        }
        if now >= next_progress {
            next_progress = now + TICK;
            progress.set_position(match total {
                Some(_) => counts.completed,
                None => (now - start).as_millis() as u64,
            });
        }
    }
}
