//! What handlers may do: the reactor's side of [`Context`].

use super::*;

impl<H: Handler> Context for Reactor<H> {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, to: ConnId, data: &[u8]) -> bool {
        let turn = self.turns;
        let Some(conn) = self.live(to).filter(|c| c.is_open()) else {
            return false;
        };
        if data.is_empty() {
            return true;
        }
        // Written through only with nothing queued (it would overtake
        // that), once a turn (later sends of the turn wait, and leave
        // together), in plain (TLS must encrypt it first), and not while
        // connecting (the socket would answer for the connect).
        let through = conn.output_len() == 0
            && conn.written_through != turn
            && !conn.connecting
            && matches!(conn.transport, Transport::Plain);
        let written = if through {
            conn.written_through = turn;
            match conn.write_now(data) {
                Ok(n) => n,
                Err(e) => {
                    // Broken: closed with what broke it, like a failed flush.
                    self.begin_close(to, CloseReason::from_error(&e));
                    return false;
                }
            }
        } else {
            0
        };
        let rest = &data[written..];
        rest.is_empty() || self.enqueue(to, rest.len(), |output| output.push_slice(rest))
    }

    fn send_many(&mut self, to: &[ConnId], data: &[u8]) -> usize {
        if data.is_empty() {
            return to.iter().filter(|&&id| self.send(id, data)).count();
        }
        if data.len() <= COPY_MAX {
            return to
                .iter()
                .filter(|&&id| self.enqueue(id, data.len(), |output| output.push_slice(data)))
                .count();
        }
        // Long: one copy, shared by every queue that takes it.
        let shared = Bytes::copy_from_slice(data);
        to.iter()
            .filter(|&&id| self.enqueue(id, data.len(), |output| output.push(&shared)))
            .count()
    }

    fn backlogged(&self, id: ConnId) -> bool {
        // The hold itself, so that a handler that stops for it is sure to be
        // handed its input back when it ends.
        self.conns
            .by_id(id)
            .is_none_or(|c| !c.is_open() || c.held_for_output)
    }

    fn pause_input(&mut self, id: ConnId, duration: Duration) {
        let until = deadline(self.now, duration);
        let Some(conn) = self.live(id).filter(|c| c.is_open()) else {
            return;
        };
        conn.bufs().paused_until = Some(until);
        self.timers.insert(until, Due::Resume(id));
        // The flush turns reading off.
        self.queue_flush(id);
    }

    fn close(&mut self, to: ConnId) {
        self.begin_close(to, CloseReason::Requested);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        self.timers
            .insert(deadline(self.now, after), Due::Handler(tag))
    }

    fn set_conn_timer(&mut self, id: ConnId, after: Duration, tag: u64) -> TimerId {
        self.timers
            .insert(deadline(self.now, after), Due::Conn(id, tag))
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.cancel(timer);
    }

    fn stop(&mut self) {
        self.stop.request();
    }

    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let conn = self.conns.by_id(id).filter(|c| c.is_open())?;
        conn.io.source().peer_addr()
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        Some(self.conns.by_id(id).filter(|c| c.is_open())?.origin)
    }

    fn connect(&mut self, to: Connect) -> io::Result<ConnId> {
        let stream = sys::connect(to.addr)?;
        let transport = match &to.tls {
            Some((config, name)) => Transport::tls_client(config, name.clone())?,
            None => Transport::Plain,
        };
        let stream = Stream::Tcp(stream);
        stream.prepare()?;
        // Watched for writability: that is how the end of a connect is told.
        let id = self.register(stream, transport, Origin::Connected, Interest::WRITE, None)?;
        let conn = &mut self.conns[id.slot()];
        conn.connecting = true;
        conn.pending_open = true;
        // The handler has the id: it is owed an `on_close` from now on.
        conn.owed_close = true;
        conn.idle_limit = to.idle_timeout.map_or(NEVER, secs_ceil);
        self.timers
            .insert(deadline(self.now, to.timeout), Due::Establish(id));
        Ok(id)
    }
}
