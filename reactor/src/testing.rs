//! Running a handler with no sockets: [`Harness`] plays the loop, and
//! [`MemoryContext`] records what the handler would have sent and closed.
//!
//! ```
//! use reactor::testing::Harness;
//! # use reactor::{Handler, Context, ConnId};
//! # use bytes::BytesMut;
//! # struct Echo;
//! # impl Handler for Echo {
//! #     type Message = ();
//! #     fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, input: &mut BytesMut) {
//! #         cx.send(id, input.split().freeze());
//! #     }
//! # }
//! let mut h = Harness::new(Echo);
//! let alice = h.connect();
//! h.receive(alice, "Hi\n");
//! assert_eq!(h.take_text(alice), "Hi\n");
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::timers::Timers;
use crate::{CloseReason, ConnId, Context, Handler, TimerId};

/// One pretend connection.
#[derive(Debug, Default)]
struct MemConn {
    /// Everything the handler sent, not yet taken by the test.
    output: Vec<u8>,
    /// What the handler left unconsumed, handed back with the next bytes.
    input: BytesMut,
    /// The handler asked to close it (it is closed once the callback returns).
    close_requested: bool,
    /// How it closed; `None` while open.
    closed: Option<CloseReason>,
}

/// An in-memory [`Context`]: sends are appended to per-connection byte
/// vectors, closes and timers are recorded, and time moves only when told.
#[derive(Debug)]
pub struct MemoryContext {
    now: Instant,
    conns: BTreeMap<ConnId, MemConn>,
    next_slot: usize,
    timers: Timers,
    stopped: bool,
}

impl MemoryContext {
    fn new() -> MemoryContext {
        MemoryContext {
            now: Instant::now(),
            conns: BTreeMap::new(),
            next_slot: 0,
            timers: Timers::default(),
            stopped: false,
        }
    }

    fn open(&self, id: ConnId) -> Option<&MemConn> {
        self.conns
            .get(&id)
            .filter(|c| c.closed.is_none() && !c.close_requested)
    }

    /// Whether the handler called [`Context::stop`].
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

impl Context for MemoryContext {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, to: ConnId, data: Bytes) -> bool {
        if self.open(to).is_none() {
            return false;
        }
        let conn = self.conns.get_mut(&to).expect("checked above");
        conn.output.extend_from_slice(&data);
        true
    }

    fn backlogged(&self, id: ConnId) -> bool {
        self.open(id).is_none()
    }

    fn pause_input(&mut self, _id: ConnId, _duration: Duration) {}

    fn close(&mut self, to: ConnId) {
        if self.open(to).is_some() {
            self.conns
                .get_mut(&to)
                .expect("checked above")
                .close_requested = true;
        }
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        self.timers.insert(self.now + after, tag)
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.cancel(timer);
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    /// Every pretend connection comes from 127.0.0.1, each from its own port.
    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let port = 1024 + (id.slot() % 64_000) as u16;
        self.open(id)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

/// Plays the event loop for one handler: connect, feed bytes, move time, and
/// read back what the handler sent and closed. Callbacks happen in the same
/// order as under the real loop; a close the handler asks for takes effect
/// (with `on_close(Requested)`) as soon as its callback returns.
pub struct Harness<H: Handler> {
    /// The handler under test, for inspecting its state.
    pub handler: H,
    /// The context the handler acts on.
    pub cx: MemoryContext,
    max_input: Option<usize>,
}

impl<H: Handler> Harness<H> {
    /// A harness with no connections, at an arbitrary start time.
    pub fn new(handler: H) -> Harness<H> {
        Harness {
            handler,
            cx: MemoryContext::new(),
            max_input: None,
        }
    }

    /// Closes a connection with `CloseReason::InputLimit` when the handler
    /// leaves more than `max` bytes unconsumed, as the loop does.
    pub fn with_max_input(mut self, max: usize) -> Harness<H> {
        self.max_input = Some(max);
        self
    }

    /// A new connection; the handler's `on_open` runs.
    pub fn connect(&mut self) -> ConnId {
        // Generations start at 1, like the loop's.
        let id = ConnId::new(self.cx.next_slot, 1);
        self.cx.next_slot += 1;
        self.cx.conns.insert(id, MemConn::default());
        self.handler.on_open(&mut self.cx, id);
        self.settle();
        id
    }

    /// Bytes arrive from the peer of `id` (ignored once it is closing).
    pub fn receive(&mut self, id: ConnId, bytes: impl AsRef<[u8]>) {
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return;
        };
        if conn.closed.is_some() || conn.close_requested {
            return;
        }
        let mut input = std::mem::take(&mut conn.input);
        input.extend_from_slice(bytes.as_ref());
        self.handler.on_data(&mut self.cx, id, &mut input);
        let too_long = self.max_input.is_some_and(|max| input.len() > max);
        if let Some(conn) = self.cx.conns.get_mut(&id) {
            conn.input = input;
        }
        if too_long {
            self.finish(id, CloseReason::InputLimit);
        }
        self.settle();
    }

    /// The peer of `id` goes away.
    pub fn disconnect(&mut self, id: ConnId) {
        self.finish(id, CloseReason::PeerClosed);
        self.settle();
    }

    /// Moves time on by `by`, firing the timers that fall due, in order.
    pub fn advance(&mut self, by: Duration) {
        let end = self.cx.now + by;
        while let Some(next) = self.cx.timers.next_deadline().filter(|&t| t <= end) {
            self.cx.now = self.cx.now.max(next);
            while let Some(tag) = self.cx.timers.pop_due(self.cx.now, u64::MAX) {
                self.handler.on_timer(&mut self.cx, tag);
                self.settle();
            }
        }
        self.cx.now = end;
    }

    /// A message arrives from another thread.
    pub fn post(&mut self, msg: H::Message) {
        self.handler.on_wake(&mut self.cx, msg);
        self.settle();
    }

    /// Stops gracefully, as on SIGTERM: `on_stop`, then every open
    /// connection closes with `CloseReason::Shutdown`.
    pub fn stop(&mut self) {
        self.handler.on_stop(&mut self.cx);
        let open: Vec<ConnId> = self.open_ids();
        for id in open {
            self.finish(id, CloseReason::Shutdown);
        }
        self.settle();
    }

    /// Takes what the handler has sent to `id` since the last take.
    pub fn take(&mut self, id: ConnId) -> Vec<u8> {
        self.cx
            .conns
            .get_mut(&id)
            .map(|c| std::mem::take(&mut c.output))
            .unwrap_or_default()
    }

    /// [`Harness::take`] as text (lossy UTF-8).
    pub fn take_text(&mut self, id: ConnId) -> String {
        String::from_utf8_lossy(&self.take(id)).into_owned()
    }

    /// How `id` closed, or `None` if it is still open.
    pub fn closed(&self, id: ConnId) -> Option<CloseReason> {
        self.cx.conns.get(&id).and_then(|c| c.closed)
    }

    /// Bytes of `id`'s input the handler has left unconsumed.
    pub fn pending_input(&self, id: ConnId) -> usize {
        self.cx.conns.get(&id).map_or(0, |c| c.input.len())
    }

    fn open_ids(&self) -> Vec<ConnId> {
        self.cx
            .conns
            .iter()
            .filter(|(_, c)| c.closed.is_none())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Marks `id` closed and tells the handler, once.
    fn finish(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return;
        };
        if conn.closed.is_some() {
            return;
        }
        conn.closed = Some(reason);
        conn.input = BytesMut::new();
        self.handler.on_close(&mut self.cx, id, reason);
    }

    /// Carries out the closes the handler asked for, which may ask for more.
    fn settle(&mut self) {
        loop {
            let requested = self
                .cx
                .conns
                .iter()
                .find(|(_, c)| c.close_requested && c.closed.is_none())
                .map(|(&id, _)| id);
            match requested {
                Some(id) => self.finish(id, CloseReason::Requested),
                None => return,
            }
        }
    }
}
