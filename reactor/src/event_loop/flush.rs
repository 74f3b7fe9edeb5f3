//! Output: queueing a send under the output limits, and flushing every
//! connection that has something to write after the batch.

use super::*;

impl<H: Handler> Reactor<H> {
    pub(super) fn queue_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.live(id) {
            if !conn.flush_queued {
                conn.flush_queued = true;
                self.flush_list.push(id.slot());
            }
        }
    }

    /// Writes every connection that has output, then watches for
    /// writability only those that still have some. Closing a connection
    /// can make the handler send more, so repeat until done.
    pub(super) fn flush_all(&mut self, handler: &mut H) {
        let mut list = mem::take(&mut self.flush_list);
        while !list.is_empty() {
            for slot in list.drain(..) {
                self.flush(slot);
                self.tell_closed(handler);
            }
            mem::swap(&mut list, &mut self.flush_list);
        }
        // Hand the (empty) vector back so its capacity is reused.
        self.flush_list = list;
    }

    pub(super) fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.flush_queued = false;
        let id = ConnId::new(slot, conn.gen);
        if conn.phase == Phase::Dead {
            return;
        }
        if let Err(e) = conn.write_out() {
            let reason = match conn.phase {
                Phase::Closing(r) | Phase::Lingering(r) => r,
                _ => close_reason(&e),
            };
            self.release(id, reason);
            return;
        }
        if conn.is_open() {
            let cost = conn.output_cost();
            if cost <= self.config.soft_output {
                conn.soft_since = NOT_OVER;
            }
            if conn.held_for_output && cost <= self.config.low_water() {
                conn.held_for_output = false;
                self.resume_input(id);
            }
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Phase::Closing(reason) = conn.phase {
            // A handshake still under way is let finish: a refusal waits
            // for it inside the transport.
            if conn.output_len() == 0 && !conn.transport.handshaking() {
                // TLS says it is done (`close_notify`) before TCP does.
                conn.transport.close();
                if conn.write_out().is_err() {
                    self.release(id, reason);
                    return;
                }
                if conn.written() {
                    if conn.read_closed {
                        // Nothing more will come, and all is written: done.
                        self.release(id, reason);
                        return;
                    }
                    // Tell the peer we are done, then wait for it to finish.
                    let _ = conn.io.source().shutdown_write();
                    conn.phase = Phase::Lingering(reason);
                }
            }
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            match conn.io.set_interest(wanted) {
                Ok(()) => conn.interest = wanted,
                Err(e) => self.release(id, CloseReason::from_error(&e)),
            }
        }
    }

    /// Queues `len` bytes for `to` with `push`, under the output limits:
    /// a queue that would pass `max_output` is cut off instead (Redis's
    /// check at the moment a reply is added, not after the batch); one that
    /// passes `high_water` is no longer read; one that passes `soft_output`
    /// starts its clock. Returns whether the bytes were queued.
    pub(super) fn enqueue(
        &mut self,
        to: ConnId,
        len: usize,
        push: impl FnOnce(&mut Output),
    ) -> bool {
        let config = &self.config;
        let Some(conn) = live_in(&mut self.conns, to).filter(|c| c.is_open()) else {
            return false;
        };
        let output = &mut conn.bufs().output;
        if output.cost().saturating_add(len) > config.max_output {
            self.cut_off(to);
            return false;
        }
        push(output);
        // Exactly, not estimated: a copy may have made the tail block grow,
        // and `backlogged` must agree with the hold, or a handler would
        // wait for a hand-back that never comes.
        let cost = output.cost();
        if cost > config.high_water {
            conn.held_for_output = true;
        }
        if cost > config.soft_output && conn.soft_since == NOT_OVER {
            conn.soft_since = self.tick;
        }
        // `queue_flush`, without looking the connection up again: this is
        // the path of every message to every recipient.
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.flush_list.push(to.slot());
        }
        true
    }

    /// Cuts `id` off for not reading: what it is owed is dropped at once,
    /// then it closes like any other, so that a reset does not hit a peer
    /// that is merely slow to read our end of stream.
    pub(super) fn cut_off(&mut self, id: ConnId) {
        if let Some(conn) = self.live(id) {
            log::debug!("{id}: output limit ({} bytes queued)", conn.output_cost());
            if let Some(bufs) = &mut conn.bufs {
                bufs.output.clear();
            }
        }
        self.begin_close(id, CloseReason::OutputLimit);
    }
}
