//! Where connections come from: accepting from the listeners (and
//! refusing past their limits), streams attached or handed over, outbound
//! connects, and telling the handler once a connection is established.

use std::net::{IpAddr, TcpStream};

use super::*;

impl<H: Handler> Reactor<H> {
    pub(super) fn announce(&mut self, handler: &mut H) {
        while let Some(slot) = self.unannounced.pop() {
            let conn = &mut self.conns[slot];
            conn.owed_close = true;
            let id = ConnId::new(slot, conn.gen);
            self.open_conn(handler, id);
        }
    }

    /// Tells the handler of a new connection. As with `on_data`, a panic
    /// in the handler costs only this connection.
    pub(super) fn open_conn(&mut self, handler: &mut H, id: ConnId) {
        let outcome = self.with_state(id, |cx, conn| {
            panic::catch_unwind(AssertUnwindSafe(|| handler.on_open(cx, id, conn)))
        });
        if matches!(outcome, Some(Err(_))) {
            log::error!("{id}: the handler panicked opening this connection; closing it");
            self.release(id, CloseReason::HandlerPanicked);
        }
        self.tell_closed(handler);
    }

    /// Puts `stream` in a slot, watched for input, and counts it in its
    /// places (under `address`, if addresses are counted).
    pub(super) fn register(
        &mut self,
        stream: Stream,
        transport: Transport,
        origin: Origin,
        interest: Interest,
        address: Option<IpAddr>,
    ) -> io::Result<ConnId> {
        let (id, entry) = self.conns.vacant();
        let io = Registered::new(&self.poller, stream, id.slot(), interest)?;
        let mut conn = Conn::new(io, transport, id.gen(), origin, self.tick);
        conn.interest = interest;
        if origin != Origin::Connected {
            conn.idle_limit = self.config.idle_timeout.map_or(NEVER, secs_ceil);
        }
        entry.insert(conn);
        self.places.count_in(id.slot(), origin, address);
        Ok(id)
    }

    /// Serves a stream handed over through a [`Handle`]: it is opened at once.
    pub(super) fn adopt(&mut self, handler: &mut H, stream: Stream) {
        let registered = stream.prepare().and_then(|()| {
            self.register(
                stream,
                Transport::Plain,
                Origin::Attached,
                Interest::READ,
                None,
            )
        });
        match registered {
            Ok(id) => {
                self.conns[id.slot()].owed_close = true;
                self.open_conn(handler, id);
            }
            Err(e) => log::warn!("cannot serve a stream handed over: {e}"),
        }
    }

    /// An outbound connection reported writable (or broken): its `connect`
    /// is done, one way or the other.
    pub(super) fn finish_connect(&mut self, handler: &mut H, id: ConnId) {
        let Some(conn) = self.live(id) else { return };
        let Stream::Tcp(socket) = conn.io.source() else {
            return;
        };
        let outcome = match socket.take_error() {
            Ok(None) => socket.peer_addr().map(drop),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {}
            // Reported before it finished: wait for the next report.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                log::debug!("{id}: cannot connect: {e}");
                self.release(id, CloseReason::ConnectFailed(e.kind()));
                return;
            }
        }
        conn.connecting = false;
        let established = !conn.transport.handshaking();
        // The flush watches it for input now, and writes what was queued
        // (or the TLS client's first handshake message).
        self.queue_flush(id);
        if established {
            self.establish(handler, id);
        }
    }

    /// `id` is established (connected, its handshake done): the handler hears of it.
    pub(super) fn establish(&mut self, handler: &mut H, id: ConnId) {
        let Some(conn) = self.live(id).filter(|c| c.pending_open) else {
            return;
        };
        conn.pending_open = false;
        conn.owed_close = true;
        self.open_conn(handler, id);
    }

    /// The deadline for establishing `id` passed: if it is not yet, it is
    /// given up.
    pub(super) fn establish_expired(&mut self, id: ConnId) {
        let Some(conn) = self.live(id).filter(|c| c.pending_open) else {
            return;
        };
        if conn.origin == Origin::Connected {
            log::debug!("{id}: cannot connect: timed out");
            self.release(id, CloseReason::ConnectFailed(io::ErrorKind::TimedOut));
        } else {
            log::debug!("{id}: no TLS handshake in time");
            self.release(id, CloseReason::Tls);
        }
    }

    pub(super) fn accept(&mut self, handler: &mut H, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some(stream) = self.listeners.accept(index, self.now) else {
                return;
            };
            self.admit(handler, index, stream);
        }
    }

    pub(super) fn admit(&mut self, handler: &mut H, index: usize, stream: TcpStream) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let from = ListenerId(index as u32);
        let peer = stream.peer_addr().ok();
        let Some(Admission { refusal, address }) =
            self.places.admit(from, &listener.endpoint, peer)
        else {
            return; // dropped: closed without a word
        };
        let handshake = listener.endpoint.handshake_timeout;
        let transport = match &listener.endpoint.tls {
            Some(config) => Transport::tls_server(config),
            None => Ok(Transport::Plain),
        };
        let stream = Stream::Tcp(stream);
        let registered = transport.and_then(|transport| {
            stream.prepare()?;
            let origin = Origin::Accepted(from);
            self.register(stream, transport, origin, Interest::READ, address)
        });
        let id = match registered {
            Ok(id) => id,
            Err(e) => {
                log::warn!("cannot serve a new connection: {e}");
                return;
            }
        };
        let conn = &mut self.conns[id.slot()];
        if let Some(why) = refusal {
            // The refusal goes through the transport like any output: a
            // TLS client reads it once its handshake is done.
            conn.refused = true;
            if let Some(refusal) = handler.refusal(from, why) {
                conn.bufs().output.push(&refusal);
            }
            self.begin_close(id, CloseReason::Requested);
        } else if conn.transport.handshaking() {
            conn.pending_open = true;
            self.timers
                .insert(deadline(self.now, handshake), Due::Establish(id));
        } else {
            conn.owed_close = true;
            self.open_conn(handler, id);
        }
    }
}
