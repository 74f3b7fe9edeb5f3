//! The echo workloads: every connection sends messages and expects each
//! back, byte for byte, keeping up to `pipeline` of them in flight.

use std::collections::VecDeque;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::engine::{Counts, Workload};
use crate::net::Outbox;
use crate::payload::Wheel;
use crate::stats;

/// One connection's side of the stream.
#[derive(Default)]
struct Stream {
    /// Messages queued so far.
    sent: u64,
    /// Bytes echoed so far.
    received: u64,
    /// When each message not yet fully echoed was queued, oldest first.
    in_flight: VecDeque<Instant>,
}

/// Echo, as a byte stream (`--mode echo`) or as lines (`--mode
/// echo-lines`): the same check either way, since an echo server must
/// return exactly the bytes it got, but line messages end in `\n`.
pub struct Echo {
    lines: bool,
    size: usize,
    pipeline: usize,
    /// Messages per connection, or `None` to send until told to stop.
    per_conn: Option<u64>,
    sending: bool,
    streams: Vec<Stream>,
    wheel: Wheel,
    completed: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Echo {
    /// `connections` streams of messages of `size` bytes, `lines` if each
    /// should end in a newline.
    pub fn new(
        lines: bool,
        connections: usize,
        size: usize,
        pipeline: usize,
        per_conn: Option<u64>,
    ) -> Echo {
        Echo {
            lines,
            size,
            pipeline,
            per_conn,
            sending: false,
            streams: (0..connections).map(|_| Stream::default()).collect(),
            wheel: Wheel::new(size),
            completed: 0,
            bytes: 0,
            latency: stats::new_histogram(),
        }
    }

    /// The body of message `number` on `conn`: all of it for a stream,
    /// all but the final newline for lines.
    fn body(&self, conn: usize, number: u64) -> &[u8] {
        let len = if self.lines { self.size - 1 } else { self.size };
        self.wheel.slice(conn, number, len)
    }

    /// Queues messages on `conn` until `pipeline` are in flight.
    fn top_up(&mut self, conn: usize, now: Instant, out: &mut Outbox) {
        let room = self.pipeline - self.streams[conn].in_flight.len();
        let left = self
            .per_conn
            .map_or(u64::MAX, |n| n - self.streams[conn].sent);
        let count = (room as u64).min(left);
        if !self.sending || count == 0 {
            return;
        }
        let buf = out.buf(conn);
        let first = self.streams[conn].sent;
        for number in first..first + count {
            buf.extend_from_slice(self.body(conn, number));
            if self.lines {
                buf.push(b'\n');
            }
        }
        let stream = &mut self.streams[conn];
        stream.sent += count;
        stream.in_flight.extend((0..count).map(|_| now));
    }

    /// Checks `input`, which continues the echo of `conn` at byte
    /// `received`, against what was sent.
    fn check(&self, conn: usize, received: u64, input: &[u8]) -> Result<(), String> {
        let size = self.size as u64;
        let sent = self.streams[conn].sent * size;
        if received + input.len() as u64 > sent {
            return Err(format!(
                "connection {conn}: the server sent {} bytes, only {sent} were sent to it",
                received + input.len() as u64
            ));
        }
        let mut at = 0;
        while at < input.len() {
            let offset = received + at as u64;
            let (number, skip) = (offset / size, (offset % size) as usize);
            let len = (self.size - skip).min(input.len() - at);
            let got = &input[at..at + len];
            // Bytes `skip..skip + len` of the message: a slice of its body,
            // and, for lines, perhaps the newline after it.
            let body = self.body(conn, number);
            let from_body = body.len().min(skip + len).saturating_sub(skip);
            let body_ok = got[..from_body] == body[skip..skip + from_body];
            if !body_ok || got[from_body..].iter().any(|&b| b != b'\n') {
                let expected = |j: usize| body.get(j).copied().unwrap_or(b'\n');
                let i = (0..len)
                    .find(|&i| got[i] != expected(skip + i))
                    .unwrap_or(0);
                // Show a little of what came instead: often a line of text,
                // such as a chat server's `ERR say Hi first`.
                let came = &got[i..len.min(i + 40)];
                return Err(format!(
                    "connection {conn}: echo differs at byte {} of message {number}: \
                     expected {:?}, got {:?}",
                    skip + i,
                    char::from(expected(skip + i)),
                    String::from_utf8_lossy(came),
                ));
            }
            at += len;
        }
        Ok(())
    }
}

impl Workload for Echo {
    fn connections(&self) -> usize {
        self.streams.len()
    }

    fn on_connect(&mut self, _conn: usize, _out: &mut Outbox) {}

    fn on_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String> {
        let received = self.streams[conn].received;
        self.check(conn, received, input)?;
        let size = self.size as u64;
        let total = received + input.len() as u64;
        let done = total / size - received / size;
        let stream = &mut self.streams[conn];
        stream.received = total;
        for _ in 0..done {
            let sent_at = stream.in_flight.pop_front().expect("checked: sent");
            self.latency
                .saturating_record(now.duration_since(sent_at).as_nanos() as u64);
        }
        self.completed += done;
        self.bytes += input.len() as u64;
        self.top_up(conn, now, out);
        Ok(input.len())
    }

    fn ready(&self, connected: usize) -> bool {
        connected == self.streams.len()
    }

    fn start(&mut self, now: Instant, out: &mut Outbox) {
        self.sending = true;
        for conn in 0..self.streams.len() {
            self.top_up(conn, now, out);
        }
    }

    fn stop_sending(&mut self) {
        self.sending = false;
    }

    fn finished(&self) -> bool {
        let all_sent = |s: &Stream| !self.sending || self.per_conn.is_some_and(|n| s.sent == n);
        self.streams
            .iter()
            .all(|s| all_sent(s) && s.in_flight.is_empty())
    }

    fn counts(&self) -> Counts {
        Counts {
            completed: self.completed,
            sent: self.streams.iter().map(|s| s.sent).sum(),
            bytes: self.bytes,
        }
    }

    fn total(&self) -> Option<u64> {
        self.per_conn.map(|n| n * self.streams.len() as u64)
    }

    fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }
}
