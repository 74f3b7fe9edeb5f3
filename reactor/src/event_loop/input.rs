//! Input: one bounded read per readiness (through the transport), handing
//! it to the handler, and holds on input (backpressure, pauses) ending.

use super::*;
use crate::Input;

/// Size of the read buffer the whole loop shares.
pub(super) const READ_BUFFER: usize = 64 * 1024;
/// Below this much room the read buffer is renewed rather than read into.
const MIN_READ: usize = 16 * 1024;

/// Looks at what waits on `conn`'s socket without taking it (`MSG_PEEK`):
/// `Ok(0)` is an end of stream with nothing before it. Only plain TCP can
/// look (TLS records are no end of stream even when they are a
/// `close_notify`); the others answer that nothing can be told (`WouldBlock`).
fn peek<S>(conn: &Conn<S>) -> io::Result<usize> {
    match (conn.io.source(), &conn.transport) {
        (Stream::Tcp(s), Transport::Plain) => s.peek(&mut [0]),
        _ => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl<H: Handler> Reactor<H> {
    /// A pause set with `pause_input` may be over: if it is (it may have
    /// been replaced by a later one), read again and hand back what waits.
    pub(super) fn end_pause(&mut self, id: ConnId) {
        let now = self.now;
        let Some(conn) = self.live(id).filter(|c| c.is_open()) else {
            return;
        };
        let Some(bufs) = conn.bufs.as_mut() else {
            return;
        };
        if bufs.paused_until.is_some_and(|until| until <= now) {
            bufs.paused_until = None;
            self.resume_input(id);
        }
    }

    /// A hold on `id`'s input has ended: unless another holds it still,
    /// hand its unconsumed input back next and watch it for input again.
    pub(super) fn resume_input(&mut self, id: ConnId) {
        let tick = self.tick;
        let Some(conn) = self.live(id) else { return };
        if conn.input_held() {
            return;
        }
        // Not read while held: its idle time starts now.
        conn.last_active = tick;
        if conn.has_input() {
            self.redeliver.push(id);
        }
        // The flush is what changes the interest back.
        self.queue_flush(id);
    }

    /// Hands held input back to the handler, for the connections whose
    /// hold ended in the last turn — after a read: while it was held the
    /// socket was not watched for input, and its peer may have finished or
    /// gone meanwhile. A flooder paused again by every line it is handed
    /// back would otherwise never be read, and a client that left would
    /// keep its place for as long as its delayed lines took.
    pub(super) fn hand_back_input(&mut self, handler: &mut H) {
        for id in mem::take(&mut self.redeliver) {
            let ready = self
                .live(id)
                .is_some_and(|c| c.is_open() && !c.input_held());
            if ready {
                self.read(handler, id, true);
                self.tell_closed(handler);
            }
        }
    }

    /// One read per readiness, of at most `Config::max_read`. The bytes land in
    /// the shared scratch buffer and are split off it without copying; only
    /// what the handler leaves unconsumed is copied into the connection's own
    /// buffer. So an idle connection holds no input memory, and a read that
    /// leaves more waiting is simply followed by another readiness report.
    pub(super) fn read(&mut self, handler: &mut H, id: ConnId, hand_back: bool) {
        // TLS decrypts into the scratch buffer what it reads now and what
        // it held of a record begun in an earlier read: room for a record more.
        let tls =
            live_in(&mut self.conns, id).is_some_and(|c| matches!(c.transport, Transport::Tls(_)));
        let slack = if tls { MAX_RECORD } else { 0 };
        if self.scratch.len() < MIN_READ + slack {
            self.renew_scratch();
        }
        let window = self.scratch.len().min(self.config.max_read.max(1));
        let cipher_window = window.min(self.scratch.len() - slack);
        let max_input = self.config.max_input;
        // The slab alone, not `self.live`: the read below borrows the
        // scratch buffer at the same time.
        let Some(conn) = live_in(&mut self.conns, id) else {
            return;
        };
        if conn.is_open() && conn.input_held() {
            if conn.interest.read {
                // Held since this batch was reported; the flush turns reading off.
                return;
            }
            // With reading off, a readable report can only be a hangup or
            // an error, which epoll reports whatever the interest: the peer
            // is gone, and there is nobody to answer what it left. Not
            // acting on it would have it reported again at once, forever;
            // reading would hand the handler input it is holding back.
            self.release(id, CloseReason::Reset);
            return;
        }
        if conn.read_closed {
            // Its end of stream is in: there is only held input left to
            // hand back. Reading is off, so a report is a hangup or an error.
            if hand_back {
                self.deliver(handler, id, BytesMut::new());
            } else {
                let reason = match conn.phase {
                    Phase::Closing(r) | Phase::Lingering(r) => r,
                    _ => CloseReason::Reset,
                };
                self.release(id, reason);
            }
            return;
        }
        let result = if hand_back && conn.is_open() && conn.input_len() >= max_input {
            // The handler has a full buffer of this connection's input it
            // has not taken (it is handing back what it held): read no
            // more, or held input could grow without bound, but look for an
            // end of stream or a reset behind it. (Not on a readiness
            // report: that read goes ahead, and what it brings past the
            // limit closes the connection. Peeking there would leave the
            // bytes waiting, and the socket readable, forever.)
            match peek(conn) {
                Ok(0) => Ok(0),
                Ok(_) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e),
            }
        } else {
            if tls && self.cipher.len() < cipher_window {
                self.cipher.resize(cipher_window, 0);
            }
            let (cipher, plain) = if tls {
                (cipher_window, cipher_window + slack)
            } else {
                (0, window)
            };
            conn.transport.read(
                conn.io.source(),
                &mut self.cipher[..cipher],
                &mut self.scratch[..plain],
            )
        };
        if matches!(conn.transport, Transport::Tls(_)) {
            // The transport may have something to say (the handshake's
            // next message, an alert), or output may have been waiting
            // for the handshake: the flush sees to both.
            if !conn.flush_queued {
                conn.flush_queued = true;
                self.flush_list.push(id.slot());
            }
            let failed = matches!(&result, Err(e) if e.kind() != io::ErrorKind::WouldBlock);
            if conn.pending_open && !conn.transport.handshaking() && !failed {
                self.establish(handler, id);
            }
        }
        // Looked up again: `on_open` may have closed it.
        let Some(conn) = live_in(&mut self.conns, id) else {
            return;
        };
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if hand_back {
                    self.deliver(handler, id, BytesMut::new());
                }
                return;
            }
            Err(e) => {
                let reason = match conn.phase {
                    Phase::Closing(r) | Phase::Lingering(r) => r,
                    _ => close_reason(&e),
                };
                self.release(id, reason);
                return;
            }
        };
        if n == 0 {
            conn.read_closed = true;
            match conn.phase {
                Phase::Lingering(reason) => self.release(id, reason),
                // Input the handler held back (delayed lines) is still its
                // to take, as the holds allow, for `linger_timeout` at most:
                // a half-closed peer may be waiting for the answers, but one
                // that left must not keep its place for as long as its lines
                // would take at a flood-control pace.
                Phase::Open if conn.has_input() => {
                    let at = deadline(self.now, self.config.linger_timeout);
                    self.linger_deadlines.push(id, at);
                    self.queue_flush(id);
                    if hand_back {
                        self.deliver(handler, id, BytesMut::new());
                    }
                }
                // The peer may have only half-closed: it still gets what it is owed.
                Phase::Open => self.begin_close(id, CloseReason::PeerClosed),
                _ => self.queue_flush(id),
            }
            return;
        }
        if !conn.is_open() {
            return; // closing: input is discarded
        }
        conn.last_active = self.tick;
        // The peer's end came with these bytes (TLS: its last line and
        // `close_notify` in one packet): the socket may never be readable
        // again, so the end is read next turn without waiting for it.
        if conn.transport.peer_ended() {
            self.redeliver.push(id);
        }
        let data = self.scratch.split_to(n);
        self.deliver(handler, id, data);
    }

    /// Hands the handler `fresh` bytes, after what it left unconsumed last
    /// time, as one contiguous buffer; keeps what it leaves now. With no
    /// fresh bytes, this hands back input that was held.
    pub(super) fn deliver(&mut self, handler: &mut H, id: ConnId, mut fresh: BytesMut) {
        let Some(conn) = self.live(id) else { return };
        let mut kept = conn.take_input();
        let from_scratch = kept.is_empty();
        let input = if from_scratch {
            &mut fresh
        } else {
            kept.extend_from_slice(&fresh);
            &mut kept
        };
        if input.is_empty() {
            return;
        }
        // Input comes from strangers: a handler bug it triggers costs that
        // one connection, not every client of the loop.
        let outcome = self.with_state(id, |cx, conn| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                handler.on_data(cx, id, conn, &mut Input::new(input))
            }))
        });
        if matches!(outcome, Some(Err(_))) {
            log::error!("{id}: the handler panicked on this connection's input; closing it");
            self.release(id, CloseReason::HandlerPanicked);
            return;
        }

        let max_input = self.config.max_input;
        let Some(conn) = self.live(id).filter(|c| c.is_open()) else {
            return;
        };
        if conn.read_closed && (input.is_empty() || !conn.input_held()) {
            // The peer has finished sending, and the handler has taken all
            // it will: what is left, unheld, is a frame that cannot end.
            self.begin_close(id, CloseReason::PeerClosed);
            return;
        }
        if input.is_empty() {
            return;
        }
        // Input left while held is the handler waiting, not the peer
        // overrunning the limit: it is at most one portion over, and no
        // more is read until the hold ends.
        if input.len() > max_input && !conn.input_held() {
            self.begin_close(id, CloseReason::InputLimit);
        } else if from_scratch {
            // Copy the remainder out: keeping a slice of the scratch buffer
            // would pin all 64 KiB of it to this connection.
            conn.keep_input(BytesMut::from(&input[..]));
        } else {
            conn.keep_input(mem::take(input));
        }
    }

    /// Makes the scratch buffer whole again once it is nearly used up.
    ///
    /// Every slice split off it has been dropped by now — a handler is
    /// only lent its input ([`Input`]), what it sends is copied or written
    /// through, and what it leaves is copied into its connection's buffer —
    /// so the same allocation is taken back. Allocating afresh instead costs more
    /// than the allocator: glibc returns a freed 64 KiB to the kernel, and
    /// the next buffer is faulted in page by page. The memory is zeroed again
    /// either way, because safe code may only read into initialised bytes.
    pub(super) fn renew_scratch(&mut self) {
        self.scratch.clear();
        if !self.scratch.try_reclaim(READ_BUFFER) {
            // A slice outlived its read after all: it keeps the old
            // allocation alive only as long as it lives.
            self.scratch = BytesMut::with_capacity(READ_BUFFER);
        }
        self.scratch.resize(READ_BUFFER, 0);
    }
}
