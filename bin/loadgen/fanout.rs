//! The fan-out workloads: some clients send, every other client receives
//! every message. `--mode chat` speaks the netchat protocol (greet with
//! `Hi`, send lines, receive `<nick> line`), `--mode web` the same over a
//! WebSocket, a text message a line (see `ws`); `--mode redis` and `--mode
//! nats` do the same with Redis pub/sub on one channel and NATS on one
//! subject, the references. All senders sending is the all-to-all room;
//! one sender (`--senders 1`) is an announcement.
//!
//! Each message carries its sender, its number and the time it was sent:
//! `m SENDER NUMBER NANOS PADDING`. A receiver checks that messages from
//! each sender arrive complete, once, and in order, and records the latency
//! of each delivery. A sender keeps at most `pipeline` messages that have
//! not yet reached everyone: a closed loop, so the server's queues stay
//! bounded however fast loadgen is. By default it sends the next message as
//! soon as the oldest has reached every receiver (a sliding window); in
//! batches (`--batch`) it sends a whole window in one write and the next
//! only once every receiver has all of it.

use std::io::Write;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::engine::{Counts, Workload};
use crate::nats::{self, Frame};
use crate::net::Outbox;
use crate::payload::Wheel;
use crate::{stats, ws};

/// Which server protocol carries the messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The netchat chat protocol (docs/protocol.md).
    Chat,
    /// The same over a WebSocket: one text message is one line.
    Web,
    /// Redis: receivers `SUBSCRIBE room`, senders `PUBLISH room …` on
    /// connections of their own (a subscribed connection cannot publish).
    Redis,
    /// NATS: receivers `SUB room`, senders `PUB room …` on connections of
    /// their own, as for Redis (see `nats`).
    Nats,
}

impl Protocol {
    /// Whether this is a broker: every client only receives, and the
    /// senders are connections of their own, after the receivers.
    fn broker(self) -> bool {
        matches!(self, Protocol::Redis | Protocol::Nats)
    }

    /// Whether this is a chat room: every client both sends and receives,
    /// and the server relays to everyone but the sender.
    pub fn room(self) -> bool {
        matches!(self, Protocol::Chat | Protocol::Web)
    }
}

/// Redis's confirmation of `SUBSCRIBE room`.
const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n";
/// How every message pushed to a subscriber of `room` starts, up to the
/// payload's length.
const PUSH: &[u8] = b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$";

/// Where one connection is in its protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Web: asked for the upgrade to a WebSocket, waiting for the answer.
    Upgrading,
    /// Chat: said `Hi`, waiting for `Hello`.
    Greeting,
    /// Chat: got `Hello`, waiting for the welcome notice.
    Welcome,
    /// In the room (chat) or subscribed (Redis, NATS): receiving.
    Receiving,
    /// Redis, NATS: subscribed, waiting for the confirmation (Redis's
    /// reply, NATS's PONG).
    Subscribing,
    /// NATS: a publisher that sent CONNECT, waiting for the PONG that says
    /// the server took it.
    Opening,
    /// Redis, NATS: a connection that only publishes.
    Publisher,
}

/// A sender's messages that have not reached every receiver yet: numbers
/// `oldest..next`, never more than `pipeline` of them.
struct Window {
    next: u64,
    oldest: u64,
    /// Receivers still to get message `n`, at `n % pipeline`.
    pending: Vec<u32>,
}

/// Chat, Redis or NATS fan-out among `clients` receivers, the first
/// `senders` of which (or, for a broker, as many publishing connections)
/// send.
pub struct Fanout {
    protocol: Protocol,
    clients: usize,
    size: usize,
    pipeline: usize,
    /// Send windows whole (`--batch`): `pipeline` messages in one write,
    /// and the next ones only once every receiver has all of them.
    batch: bool,
    /// Messages per sender, or `None` to send until told to stop.
    per_sender: Option<u64>,
    sending: bool,
    peers: Vec<Peer>,
    ready: usize,
    windows: Vec<Window>,
    /// The next message number receiver `r` expects from sender `s`, at
    /// `r * senders + s`.
    expected: Vec<u32>,
    /// How many receivers each message goes to.
    recipients: u32,
    wheel: Wheel,
    /// When loadgen started: message times are nanoseconds since then.
    epoch: Instant,
    deliveries: u64,
    bytes: u64,
    latency: Histogram<u64>,
    /// Room to build one message in.
    text: Vec<u8>,
}

impl Fanout {
    /// A room of `clients` receivers and `senders` senders sending messages
    /// of `size` bytes (the chat line with its newline; for a broker the
    /// payload is the same text), `pipeline` of them in flight — in whole
    /// windows if `batch`.
    #[allow(clippy::too_many_arguments)] // each is one of loadgen's options
    pub fn new(
        protocol: Protocol,
        clients: usize,
        senders: usize,
        size: usize,
        pipeline: usize,
        batch: bool,
        per_sender: Option<u64>,
        epoch: Instant,
    ) -> Fanout {
        let (peers, recipients) = match protocol {
            // A chat client is both: the server relays to everyone else.
            Protocol::Chat => (vec![Peer::Greeting; clients], clients - 1),
            Protocol::Web => (vec![Peer::Upgrading; clients], clients - 1),
            Protocol::Redis | Protocol::Nats => {
                // A Redis publisher may publish at once; NATS's says CONNECT first.
                let publisher = if protocol == Protocol::Nats {
                    Peer::Opening
                } else {
                    Peer::Publisher
                };
                let mut peers = vec![Peer::Subscribing; clients];
                peers.extend(std::iter::repeat_n(publisher, senders));
                (peers, clients)
            }
        };
        let window = || Window {
            next: 0,
            oldest: 0,
            pending: vec![0; pipeline],
        };
        Fanout {
            protocol,
            clients,
            size,
            pipeline,
            batch,
            per_sender,
            sending: false,
            peers,
            ready: 0,
            windows: (0..senders).map(|_| window()).collect(),
            expected: vec![0; clients * senders],
            recipients: recipients as u32,
            wheel: Wheel::new(size),
            epoch,
            deliveries: 0,
            bytes: 0,
            latency: stats::new_histogram(),
            text: Vec::with_capacity(size + 64),
        }
    }

    /// The connection sender `s` sends on.
    fn sender_conn(&self, s: usize) -> usize {
        if self.protocol.broker() {
            self.clients + s
        } else {
            s
        }
    }

    /// Sends messages from `s` until its window is full or it is done; in
    /// batches, only into an empty window.
    fn top_up(&mut self, s: usize, now: Instant, out: &mut Outbox) {
        let window = &self.windows[s];
        if !self.sending || (self.batch && window.oldest < window.next) {
            return;
        }
        let conn = self.sender_conn(s);
        // Everything queued here leaves in one write, after the batch.
        loop {
            let window = &mut self.windows[s];
            let full = window.next >= window.oldest + self.pipeline as u64;
            if full || self.per_sender.is_some_and(|n| window.next >= n) {
                return;
            }
            let number = window.next;
            window.pending[(number % self.pipeline as u64) as usize] = self.recipients;
            window.next += 1;
            let nanos = now.duration_since(self.epoch).as_nanos() as u64;
            self.text.clear();
            let _ = write!(self.text, "m {s} {number} {nanos}");
            let pad = pad_len(self.size, self.text.len());
            if pad > 0 {
                self.text.push(b' ');
                self.text
                    .extend_from_slice(self.wheel.slice(s, number, pad));
            }
            let buf = out.buf(conn);
            match self.protocol {
                Protocol::Chat => {
                    buf.extend_from_slice(&self.text);
                    buf.push(b'\n');
                }
                Protocol::Web => ws::text(buf, &self.text),
                Protocol::Redis => {
                    let _ = write!(
                        buf,
                        "*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n${}\r\n",
                        self.text.len()
                    );
                    buf.extend_from_slice(&self.text);
                    buf.extend_from_slice(b"\r\n");
                }
                Protocol::Nats => nats::publish(buf, &self.text),
            }
        }
    }

    /// Receiver `r` got `text`: check it, time it, and count it against its
    /// sender's window, which may let the sender send again.
    fn deliver(
        &mut self,
        r: usize,
        text: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), String> {
        let bad = || format!("client {r} got a malformed message: {}", show(text));
        let (s, number, nanos, pad) = parse_message(text).ok_or_else(bad)?;
        let senders = self.windows.len();
        if s >= senders || (self.protocol.room() && s == r) {
            return Err(format!(
                "client {r} got a message from sender {s}, who is not one"
            ));
        }
        let expected = &mut self.expected[r * senders + s];
        if number != u64::from(*expected) {
            return Err(format!(
                "client {r} got message {number} from sender {s}, expected {expected}: \
                 lost, duplicated or out of order"
            ));
        }
        *expected += 1;
        let header = text.len() - pad.map_or(0, |p| p.len() + 1);
        let want = pad_len(self.size, header);
        if pad.map_or(0, <[u8]>::len) != want
            || pad.is_some_and(|p| p != self.wheel.slice(s, number, want))
        {
            return Err(format!(
                "client {r} got message {number} from sender {s} altered"
            ));
        }
        let sent = self.epoch + std::time::Duration::from_nanos(nanos);
        self.latency
            .saturating_record(now.saturating_duration_since(sent).as_nanos() as u64);
        self.deliveries += 1;

        let window = &mut self.windows[s];
        if number < window.oldest || number >= window.next {
            return Err(format!("message {number} from sender {s} was never sent"));
        }
        let slot = &mut window.pending[(number % self.pipeline as u64) as usize];
        *slot -= 1;
        if *slot == 0 {
            while window.oldest < window.next
                && window.pending[(window.oldest % self.pipeline as u64) as usize] == 0
            {
                window.oldest += 1;
            }
            self.top_up(s, now, out);
        }
        Ok(())
    }

    /// Chat: every complete line in `input` from connection `conn`.
    fn chat_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String> {
        let mut used = 0;
        while let Some(end) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + end];
            used += end + 1;
            self.chat_line(conn, line, now, out)?;
        }
        Ok(used)
    }

    /// Web: the answer to the upgrade, then every whole text message in
    /// `input` from connection `conn`, each a chat line.
    fn web_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String> {
        let mut used = 0;
        if self.peers[conn] == Peer::Upgrading {
            let Some(end) = ws::upgraded(input).map_err(|e| format!("client {conn}: {e}"))? else {
                return Ok(0);
            };
            used = end;
            self.peers[conn] = Peer::Greeting;
            ws::text(out.buf(conn), b"Hi");
        }
        while let Some((line, len)) =
            ws::next(&input[used..]).map_err(|e| format!("client {conn}: {e}"))?
        {
            used += len;
            self.chat_line(conn, line, now, out)?;
        }
        Ok(used)
    }

    /// Chat, over TCP or a WebSocket: one line from connection `conn`.
    fn chat_line(
        &mut self,
        conn: usize,
        line: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), String> {
        let unexpected =
            |wanted: &str| format!("client {conn}: expected {wanted}, got {}", show(line));
        match self.peers[conn] {
            Peer::Greeting if line == b"Hello" => self.peers[conn] = Peer::Welcome,
            Peer::Greeting => return Err(unexpected("Hello")),
            Peer::Welcome if line.starts_with(b"* welcome") => {
                self.peers[conn] = Peer::Receiving;
                self.ready += 1;
            }
            Peer::Welcome => return Err(unexpected("the welcome notice")),
            // Someone joined or left.
            Peer::Receiving if line.starts_with(b"* ") => {}
            Peer::Receiving => {
                let text = line
                    .strip_prefix(b"<")
                    .and_then(|l| l.iter().position(|&b| b == b'>').map(|i| &l[i + 1..]))
                    .and_then(|l| l.strip_prefix(b" "))
                    .ok_or_else(|| unexpected("<nick> message"))?;
                self.bytes += line.len() as u64 + 1;
                self.deliver(conn, text, now, out)?;
            }
            Peer::Upgrading | Peer::Subscribing | Peer::Opening | Peer::Publisher => {
                unreachable!("not chat states")
            }
        }
        Ok(())
    }

    /// Redis: every complete reply or message in `input` from `conn`.
    fn redis_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            if rest.is_empty() {
                return Ok(used);
            }
            if rest[0] == b'-' {
                let end = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
                return Err(format!("Redis answered {}", show(&rest[..end])));
            }
            match self.peers[conn] {
                Peer::Subscribing => {
                    if rest.len() < SUBSCRIBED.len() {
                        return Ok(used);
                    }
                    if &rest[..SUBSCRIBED.len()] != SUBSCRIBED {
                        return Err(format!("connection {conn}: SUBSCRIBE was not confirmed"));
                    }
                    used += SUBSCRIBED.len();
                    self.peers[conn] = Peer::Receiving;
                    self.ready += 1;
                }
                Peer::Publisher => {
                    // `:N\r\n`: how many subscribers got the message.
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        return Ok(used);
                    };
                    let reached = rest[1..end].iter().try_fold(0usize, |n, &d| {
                        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
                    });
                    if rest[0] != b':' || reached != Some(self.clients) {
                        let reply = show(&rest[..end]);
                        return Err(format!(
                            "PUBLISH answered {reply}, expected :{} (one per subscriber)",
                            self.clients
                        ));
                    }
                    used += end + 2;
                }
                Peer::Receiving => {
                    let Some((text, len)) = parse_push(rest)? else {
                        return Ok(used);
                    };
                    self.bytes += len as u64;
                    used += len;
                    self.deliver(conn, text, now, out)?;
                }
                Peer::Upgrading | Peer::Greeting | Peer::Welcome | Peer::Opening => {
                    unreachable!("chat and NATS states")
                }
            }
        }
    }

    /// NATS: every complete frame in `input` from `conn`.
    fn nats_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String> {
        let mut used = 0;
        while let Some((frame, len)) = nats::parse(&input[used..])? {
            let whole = &input[used..used + len];
            used += len;
            match (frame, self.peers[conn]) {
                (Frame::Info, _) => {}
                (Frame::Ping, _) => out.buf(conn).extend_from_slice(nats::PONG),
                // Without its CRLF: `NATS answered "-ERR 'Authorization Violation'"`.
                (Frame::Err, _) => {
                    return Err(format!("NATS answered {}", show(&whole[..len - 2])))
                }
                (Frame::Pong, Peer::Subscribing) => {
                    self.peers[conn] = Peer::Receiving;
                    self.ready += 1;
                }
                (Frame::Pong, Peer::Opening) => {
                    self.peers[conn] = Peer::Publisher;
                    self.ready += 1;
                }
                (Frame::Msg(text), Peer::Receiving) => {
                    self.bytes += len as u64;
                    self.deliver(conn, text, now, out)?;
                }
                (Frame::Pong | Frame::Msg(_), _) => {
                    return Err(format!("connection {conn}: unexpected {}", show(whole)))
                }
            }
        }
        Ok(used)
    }
}

impl Workload for Fanout {
    fn connections(&self) -> usize {
        self.peers.len()
    }

    fn on_connect(&mut self, conn: usize, out: &mut Outbox) {
        match self.peers[conn] {
            Peer::Greeting => out.buf(conn).extend_from_slice(b"Hi\n"),
            Peer::Upgrading => out.buf(conn).extend_from_slice(ws::UPGRADE),
            Peer::Subscribing if self.protocol == Protocol::Nats => {
                out.buf(conn).extend_from_slice(nats::SUBSCRIBE)
            }
            Peer::Subscribing => out.buf(conn).extend_from_slice(b"SUBSCRIBE room\r\n"),
            Peer::Opening => out.buf(conn).extend_from_slice(nats::CONNECT),
            Peer::Publisher => self.ready += 1,
            Peer::Welcome | Peer::Receiving => {}
        }
    }

    fn on_input(
        &mut self,
        conn: usize,
        input: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Result<usize, String> {
        match self.protocol {
            Protocol::Chat => self.chat_input(conn, input, now, out),
            Protocol::Web => self.web_input(conn, input, now, out),
            Protocol::Redis => self.redis_input(conn, input, now, out),
            Protocol::Nats => self.nats_input(conn, input, now, out),
        }
    }

    fn ready(&self, _connected: usize) -> bool {
        self.ready == self.peers.len()
    }

    fn start(&mut self, now: Instant, out: &mut Outbox) {
        self.sending = true;
        for s in 0..self.windows.len() {
            self.top_up(s, now, out);
        }
    }

    fn stop_sending(&mut self) {
        self.sending = false;
    }

    fn finished(&self) -> bool {
        self.windows.iter().all(|w| {
            let all_sent = !self.sending || self.per_sender.is_some_and(|n| w.next == n);
            all_sent && w.oldest == w.next
        })
    }

    fn counts(&self) -> Counts {
        Counts {
            completed: self.deliveries,
            sent: self.windows.iter().map(|w| w.next).sum(),
            bytes: self.bytes,
        }
    }

    fn total(&self) -> Option<u64> {
        let per_sender = self.per_sender?;
        Some(per_sender * self.windows.len() as u64 * u64::from(self.recipients))
    }

    fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }
}

/// How much padding makes a message of `size` bytes (with its newline) out
/// of a header of `header` bytes, a space and the padding; none if the
/// header alone is that long.
fn pad_len(size: usize, header: usize) -> usize {
    size.saturating_sub(header + 2)
}

/// Splits `m SENDER NUMBER NANOS [PADDING]` into its parts.
fn parse_message(text: &[u8]) -> Option<(usize, u64, u64, Option<&[u8]>)> {
    let mut fields = text.splitn(5, |&b| b == b' ');
    if fields.next()? != b"m" {
        return None;
    }
    let number = |field: &[u8]| -> Option<u64> {
        if field.is_empty() || field.len() > 19 {
            return None;
        }
        field.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    let sender = number(fields.next()?)?;
    let seq = number(fields.next()?)?;
    let nanos = number(fields.next()?)?;
    Some((usize::try_from(sender).ok()?, seq, nanos, fields.next()))
}

/// One pushed message at the start of `input`: its payload and the length
/// of the whole frame, or `None` if it has not all arrived.
fn parse_push(input: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let head = PUSH.len().min(input.len());
    if input[..head] != PUSH[..head] {
        return Err(format!("unexpected data from Redis: {}", show(input)));
    }
    let after = &input[head..];
    let Some(digits) = after.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    let len = std::str::from_utf8(&after[..digits])
        .ok()
        .and_then(|d| d.parse::<usize>().ok())
        .ok_or_else(|| format!("bad length from Redis: {}", show(&after[..digits])))?;
    let start = head + digits + 2;
    let end = start + len + 2;
    if input.len() < end {
        return Ok(None);
    }
    Ok(Some((&input[start..start + len], end)))
}

/// A received line or frame, quoted and cut short, for an error message.
pub fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    let more = if bytes.len() > 80 { "…" } else { "" };
    format!("{text:?}{more}")
}
