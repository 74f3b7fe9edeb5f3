//! The loop's limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of a loop. Every limit costs only the connection that
/// exceeds it.
///
/// Output is governed by three marks, lowest first (Redis's
/// `client-output-buffer-limit` with a high-water mark for backpressure in
/// front of it):
///
/// ```text
///   queued output ──► 0 ── low ── high_water ────── soft_output ────── max_output
///                          └ reading resumes  └ reading stops   └ cut off after   └ cut off at
///                                                                 soft_output_time  the send
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections served at once. One more is accepted, sent the handler's
    /// [`refusal`](crate::Handler::refusal) and closed, as Redis does at
    /// `maxclients`. A connection stops counting as soon as it starts
    /// closing: one lingering over its last bytes is no longer a client.
    pub max_connections: usize,
    /// Connections accepted from one IP address served at once, over every
    /// listener; one more is sent the handler's refusal
    /// ([`Refusal::FromAddress`](crate::Refusal)) and closed. Counted from
    /// the accept, before a TLS handshake: a client that never finishes
    /// its handshake holds a place of its address's like any other.
    /// `usize::MAX` (the default): no such limit.
    pub max_per_address: usize,
    /// Connections closing at once (flushing their last bytes, lingering
    /// for the peer's end of stream, refusals). Past it a connection that
    /// starts closing is closed at once, without lingering; past half of it,
    /// a connection over `max_connections` is closed without its refusal, so
    /// that refusals cannot crowd out served clients' last lines.
    pub max_closing: usize,
    /// Bytes the reactor reads from one connection per readiness, at most
    /// (the threaded driver always reads 16 KiB; Redis reads
    /// 16 KiB, `PROTO_IOBUF_LEN`); more than 64 KiB, the loop's read buffer,
    /// counts as 64 KiB. It bounds what one sender can make one turn do: 16
    /// KiB of tiny chat lines is about 80 KiB queued for every recipient, and
    /// a burst is spread over turns with everyone flushed in between. A
    /// handler whose output is no larger than its input (an echo) loses
    /// nothing by reading more at once, and saves system calls.
    pub max_read: usize,
    /// Bytes received from one connection and not yet consumed by the handler
    /// (a line without its end, say). Past it the connection is closed with
    /// `CloseReason::InputLimit`.
    pub max_input: usize,
    /// Bytes queued for one connection above which the driver stops reading
    /// it, until the peer has read it down to half of this. This is
    /// backpressure: an echo client that reads slower than it writes is
    /// slowed by TCP instead of being cut off. A handler should stop taking
    /// input from a connection that is [`backlogged`](crate::Context::backlogged).
    pub high_water: usize,
    /// Bytes queued for one connection that may stay queued for at most
    /// `soft_output_time`; a connection above it for longer is closed with
    /// `CloseReason::OutputLimit`.
    pub soft_output: usize,
    /// See `soft_output`.
    pub soft_output_time: Duration,
    /// Bytes queued for one connection that the peer has not read, at most:
    /// a send that would pass it closes the connection at once with
    /// `CloseReason::OutputLimit`. What is counted is what the queue costs —
    /// payload plus the bookkeeping of each queued piece — so N connections
    /// at the limit hold about N times this much memory. A connection that
    /// starts closing keeps what it is owed for `linger_timeout`, so the
    /// bound of all queues together is `(max_connections + max_closing) ×
    /// max_output`.
    pub max_output: usize,
    /// Close a connection that has sent nothing for this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// How long a closing connection may take to flush its output and for the
    /// peer to finish (lingering close) before it is cut off. Apache waits 2 s.
    pub linger_timeout: Duration,
    /// How long a graceful stop may take to flush every connection.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_connections: 10_000,
            max_per_address: usize::MAX,
            max_closing: 1024,
            max_read: 16 * 1024,
            max_input: 64 * 1024,
            high_water: 64 * 1024,
            soft_output: 256 * 1024,
            soft_output_time: Duration::from_secs(10),
            max_output: 1024 * 1024,
            idle_timeout: None,
            linger_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Tells the operator, once, what a graceful stop that cannot end at once
    /// is waiting for: how many connections, how long at most, and how to
    /// cut it short. Both drivers say it in the same words.
    pub(crate) fn explain_stop(&self, left: usize) {
        let most = self.linger_timeout.min(self.shutdown_timeout);
        log::warn!(
            "stopping: waiting up to {:.1}s for {left} connection(s) to take their last bytes \
             and close; signal again (Ctrl-C) to stop now",
            most.as_secs_f64(),
        );
    }

    /// Where reading resumes after `high_water` stopped it: half of it, so
    /// that a connection near the mark does not switch on and off (two
    /// `epoll_ctl` calls each time) for every message.
    pub fn low_water(&self) -> usize {
        self.high_water / 2
    }
}
