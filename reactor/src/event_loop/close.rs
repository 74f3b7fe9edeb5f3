//! How connections end: graceful closes, lingering, releases, the
//! once-a-second sweep of idle and slow connections, and the graceful stop.

use super::*;

impl<H: Handler> Reactor<H> {
    /// Starts closing `id` gracefully: flush, shut down writing, linger.
    /// For the handler the connection is gone at once: it can no longer
    /// send to it, and is told (`on_close`) when its callback returns. It
    /// no longer counts against `max_connections`; past `max_closing`
    /// connections already closing (and not in a graceful stop, which closes
    /// everyone at once) it is closed at once instead.
    pub(super) fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        let at = deadline(self.now, self.config.linger_timeout);
        let Some(conn) = live_in(&mut self.conns, id).filter(|c| c.is_open()) else {
            return;
        };
        if conn.pending_open {
            // Not established: nothing was said that needs flushing.
            self.release(id, reason);
            return;
        }
        conn.phase = Phase::Closing(reason);
        if !self.places.start_closing(id.slot(), conn.origin) {
            log::debug!(
                "{id}: closed at once: {} connections are closing",
                self.places.closing() - 1
            );
            // Closing: the release gives back its closing place.
            self.release(id, reason);
            return;
        }
        if let Some(bufs) = &mut conn.bufs {
            bufs.input = BytesMut::new();
            bufs.paused_until = None;
        }
        if conn.owed_close {
            self.untold.push((id, reason));
        }
        self.linger_deadlines.push(id, at);
        // Even with nothing to write, the flush is what moves it on.
        self.queue_flush(id);
    }

    /// Calls `on_close` for the connections that closed during the last
    /// callback. Those calls may close more; they are told too.
    pub(super) fn tell_closed(&mut self, handler: &mut H) {
        while let Some((id, reason)) = self.untold.pop() {
            let Some(conn) = self.conns.by_id_mut(id) else {
                continue;
            };
            if conn.owed_close {
                conn.owed_close = false;
                // Out of the slot for good: the handler has it back.
                let state = conn.state.take().unwrap_or_default();
                log::debug!("{id}: closed ({reason})");
                self.guarded(handler, "on_close", |h, cx| {
                    h.on_close(cx, id, state, reason)
                });
            }
        }
    }

    /// Ends `id` now: the slot is freed (closing the descriptor) after the
    /// batch, and the handler, if it has not been told, is told when the
    /// current callback returns.
    pub(super) fn release(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = live_in(&mut self.conns, id) else {
            return;
        };
        let closing = !conn.is_open();
        conn.phase = Phase::Dead;
        conn.bufs = None;
        if conn.owed_close {
            self.untold.push((id, reason));
        }
        self.dead.push(id.slot());
        self.places.remove(id.slot(), conn.origin, closing);
    }

    /// Ends the closing connections whose linger deadline has passed, and
    /// open ones that finished sending and still hold input then.
    pub(super) fn expire_lingering(&mut self) {
        while let Some(id) = self.linger_deadlines.pop_due(self.now) {
            if let Some(conn) = self.live(id) {
                match conn.phase {
                    Phase::Closing(reason) | Phase::Lingering(reason) => self.release(id, reason),
                    // Finished sending, and its held input not all taken in
                    // time: the rest is dropped.
                    Phase::Open if conn.read_closed => {
                        self.begin_close(id, CloseReason::PeerClosed)
                    }
                    _ => {}
                }
            }
        }
    }

    /// Frees the slots released in this turn; told first, if not yet.
    pub(super) fn free_dead(&mut self, handler: &mut H) {
        self.tell_closed(handler);
        for slot in self.dead.drain(..) {
            // Dropping the connection deletes it from the poller, then closes it.
            self.conns.remove(slot);
        }
    }

    /// Whether a graceful stop has ended: everyone gone, or the deadline
    /// passed (then whoever is left is cut off). The first turn of a stop
    /// that still waits says what for.
    pub(super) fn stopped(&mut self, handler: &mut H) -> bool {
        match self.stop.step(self.now, self.conns.len()) {
            Step::Wait => false,
            Step::Explain => {
                self.config.explain_stop(self.conns.len());
                false
            }
            Step::CutOff => {
                self.cut_off_all(handler);
                true
            }
            Step::Done => true,
        }
    }

    /// Once a second: idle timeouts, connections too long over the soft
    /// output limit, and giving back the buffers of connections with nothing
    /// in flight.
    pub(super) fn sweep(&mut self) {
        let soft_time = secs_ceil(self.config.soft_output_time);
        let mut idle = Vec::new();
        let mut slow = Vec::new();
        for (slot, conn) in self.conns.iter_mut() {
            if conn.is_open() {
                let id = ConnId::new(slot, conn.gen);
                // `>`, not `>=`: both ticks are whole seconds rounded down,
                // so a difference of `l` may be a moment more than `l - 1`.
                // A connection whose input is held is not being read, so
                // its peer is not idle for it.
                let idle_for = self.tick.saturating_sub(conn.last_active);
                let quiet = conn.idle_limit != NEVER && idle_for > conn.idle_limit;
                if quiet && !conn.input_held() && !conn.pending_open {
                    idle.push(id);
                } else if conn.soft_since != NOT_OVER
                    && self.tick.saturating_sub(conn.soft_since) > soft_time
                {
                    slow.push(id);
                }
            }
            conn.release_idle_buffers();
        }
        for id in idle {
            self.begin_close(id, CloseReason::Idle);
        }
        for id in slow {
            self.cut_off(id);
        }
    }

    /// Begins a graceful stop: no more accepting, a last word from the
    /// handler, then every connection flushed and closed.
    pub(super) fn begin_stop(&mut self, handler: &mut H) {
        self.stop.begin(self.now, self.config.shutdown_timeout);
        self.places.begin_stop();
        self.listeners.clear();
        self.guarded(handler, "on_stop", |h, cx| h.on_stop(cx));
        for id in self.conns.ids() {
            self.begin_close(id, CloseReason::Shutdown);
        }
        self.tell_closed(handler);
    }

    /// The stop deadline passed: whoever is still there is cut off.
    pub(super) fn cut_off_all(&mut self, handler: &mut H) {
        for id in self.conns.ids() {
            self.release(id, CloseReason::Shutdown);
        }
        self.tell_closed(handler);
        self.dead.clear();
        self.conns.clear();
    }
}
