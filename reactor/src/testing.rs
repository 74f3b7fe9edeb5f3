//! Running a handler with no sockets: [`Harness`] plays the loop, and
//! [`MemoryContext`] records what the handler would have sent and closed.
//!
//! ```
//! use reactor::testing::Harness;
//! # use reactor::{Handler, Context, ConnId, Input};
//! # struct Echo;
//! # impl Handler for Echo {
//! #     type Message = ();
//! #     type Conn = ();
//! #     fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut Input<'_>) {
//! #         cx.send(id, input);
//! #         input.clear();
//! #     }
//! # }
//! let mut h = Harness::new(Echo);
//! let alice = h.connect();
//! h.receive(alice, "Hi\n");
//! assert_eq!(h.take_text(alice), "Hi\n");
//! ```
//!
//! The harness holds input back the way a driver does, so that a handler's
//! flow control can be tested too:
//!
//! - What was sent to a connection and not yet [`take`](Harness::take)n is
//!   its queued output. Above the high-water mark the connection is
//!   [`backlogged`](Context::backlogged); a send that would take it past
//!   the output limit closes it with [`CloseReason::OutputLimit`].
//! - A connection is *held* when the handler leaves input while it is
//!   backlogged, and *paused* after [`Context::pause_input`]. Bytes that
//!   arrive for it meanwhile are only added to its input, as they would
//!   wait in the socket: `on_data` is not called. A [`take`](Harness::take)
//!   (the peer reading) ends a hold, the end of the pause (in
//!   [`advance`](Harness::advance)) ends a pause, and `on_data` is then
//!   called with the input it left.
//! - Each call of [`advance`](Harness::advance) is one turn of the loop. A
//!   timer or pause set during a turn with no delay waits for the next turn,
//!   so a timer that sets itself again with no delay fires once per
//!   `advance` instead of looping forever; `advance(Duration::ZERO)` is one
//!   more turn.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::timers::Timers;
use crate::{
    CloseReason, Config, ConnId, Connect, Context, Handler, Input, ListenerId, Origin, TimerId,
};

/// One pretend connection.
#[derive(Debug)]
struct MemConn {
    origin: Origin,
    /// Where it was asked to connect to with `Context::connect`.
    dialing: Option<SocketAddr>,
    /// An outbound connection not yet established (by
    /// [`Harness::establish`]) nor failed (by [`Harness::fail_connect`]).
    pending: bool,
    /// Everything the handler sent, not yet taken by the test: the queued
    /// output.
    output: Vec<u8>,
    /// What the handler left unconsumed, handed back with the next bytes.
    input: BytesMut,
    /// How the handler's callback closed it (`Requested`, or `OutputLimit`
    /// from a send): carried out once the callback returns.
    closing: Option<CloseReason>,
    /// How it closed; `None` while open.
    closed: Option<CloseReason>,
    /// The handler left input while the connection was backlogged: it is
    /// not read until the peer takes its output.
    held: bool,
    /// The pause the handler asked for, as its key in `MemoryContext::due`.
    paused: Option<TimerId>,
}

impl MemConn {
    fn new(origin: Origin) -> MemConn {
        MemConn {
            origin,
            dialing: None,
            pending: false,
            output: Vec::new(),
            input: BytesMut::new(),
            closing: None,
            closed: None,
            held: false,
            paused: None,
        }
    }
}

/// What falls due at an instant.
#[derive(Debug)]
enum Due {
    /// A timer the handler set, with its tag.
    Timer(u64),
    /// A timer the handler set for a connection, with its tag.
    ConnTimer(ConnId, u64),
    /// The end of a connection's input pause.
    Resume(ConnId),
}

/// An in-memory [`Context`]: sends are appended to per-connection byte
/// vectors, closes and timers are recorded, and time moves only when told.
#[derive(Debug)]
pub struct MemoryContext {
    now: Instant,
    conns: BTreeMap<ConnId, MemConn>,
    next_slot: usize,
    /// Timers and pause ends, in deadline order (the drivers' queue):
    /// equal deadlines fall due in the order set.
    due: Timers<Due>,
    /// Entries set with no delay since the current turn began: they fall
    /// due on the next turn, not this one.
    next_turn: BTreeSet<TimerId>,
    high_water: usize,
    max_output: usize,
    stopped: bool,
}

impl MemoryContext {
    fn new() -> MemoryContext {
        let config = Config::default();
        MemoryContext {
            now: Instant::now(),
            conns: BTreeMap::new(),
            next_slot: 0,
            due: Timers::default(),
            next_turn: BTreeSet::new(),
            high_water: config.high_water,
            max_output: config.max_output,
            stopped: false,
        }
    }

    fn open(&self, id: ConnId) -> Option<&MemConn> {
        self.conns
            .get(&id)
            .filter(|c| c.closed.is_none() && c.closing.is_none())
    }

    /// Whether the handler called [`Context::stop`].
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Queues `due` for `after` from now.
    fn schedule(&mut self, after: Duration, due: Due) -> TimerId {
        let key = self.due.insert(self.now + after, due);
        if after.is_zero() {
            self.next_turn.insert(key);
        }
        key
    }

    /// Removes a queued entry, if it is still queued.
    fn unschedule(&mut self, key: TimerId) -> Option<Due> {
        self.next_turn.remove(&key);
        self.due.cancel(key)
    }

    /// The earliest entry due by `end` that may fall due in this turn.
    fn next_due(&self, end: Instant) -> Option<TimerId> {
        self.due
            .ids()
            .find(|key| !self.next_turn.contains(key))
            .filter(|key| key.at <= end)
    }
}

impl Context for MemoryContext {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, to: ConnId, data: &[u8]) -> bool {
        let max_output = self.max_output;
        let Some(conn) = self.conns.get_mut(&to) else {
            return false;
        };
        if conn.closed.is_some() || conn.closing.is_some() {
            return false;
        }
        if conn.output.len() + data.len() > max_output {
            conn.closing = Some(CloseReason::OutputLimit);
            return false;
        }
        conn.output.extend_from_slice(data);
        true
    }

    fn backlogged(&self, id: ConnId) -> bool {
        self.open(id)
            .is_none_or(|conn| conn.output.len() > self.high_water)
    }

    fn pause_input(&mut self, id: ConnId, duration: Duration) {
        let Some(old) = self.open(id).map(|conn| conn.paused) else {
            return;
        };
        if let Some(old) = old {
            self.unschedule(old);
        }
        let key = self.schedule(duration, Due::Resume(id));
        self.conns.get_mut(&id).expect("checked above").paused = Some(key);
    }

    fn close(&mut self, to: ConnId) {
        if self.open(to).is_some() {
            self.conns.get_mut(&to).expect("checked above").closing = Some(CloseReason::Requested);
        }
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        self.schedule(after, Due::Timer(tag))
    }

    fn set_conn_timer(&mut self, id: ConnId, after: Duration, tag: u64) -> TimerId {
        self.schedule(after, Due::ConnTimer(id, tag))
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        // A pause's key is never handed out, but a forged one must not
        // cancel it.
        if matches!(
            self.due.get(timer),
            Some(Due::Timer(_) | Due::ConnTimer(..))
        ) {
            self.unschedule(timer);
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    /// Every pretend connection comes from 127.0.0.1, each from its own
    /// port; an outbound one is at the address it was asked for.
    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let port = 1024 + (id.slot() % 64_000) as u16;
        let conn = self.open(id)?;
        Some(
            conn.dialing
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], port))),
        )
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        self.open(id).map(|c| c.origin)
    }

    /// Records the request; the test then says how it ends, with
    /// [`Harness::establish`] or [`Harness::fail_connect`].
    fn connect(&mut self, to: Connect) -> io::Result<ConnId> {
        let id = self.new_id();
        let mut conn = MemConn::new(Origin::Connected);
        conn.dialing = Some(to.addr);
        conn.pending = true;
        self.conns.insert(id, conn);
        Ok(id)
    }
}

impl MemoryContext {
    fn new_id(&mut self) -> ConnId {
        // Generations start at 1, like the loop's.
        let id = ConnId::new(self.next_slot, 1);
        self.next_slot += 1;
        id
    }
}

/// Plays the event loop for one handler: connect, feed bytes, move time, and
/// read back what the handler sent and closed. Callbacks happen in the same
/// order as under the real loop; a close the handler asks for, or causes by
/// sending past the output limit, takes effect (with `on_close`) as soon as
/// its callback returns.
pub struct Harness<H: Handler> {
    /// The handler under test, for inspecting its state.
    pub handler: H,
    /// The handler's state of each connection open for it.
    states: BTreeMap<ConnId, H::Conn>,
    /// The context the handler acts on.
    pub cx: MemoryContext,
    max_input: Option<usize>,
}

impl<H: Handler> Harness<H> {
    /// A harness serving `handler`, with no connections, at an arbitrary
    /// start time, with the output marks of [`Config::default`]. The
    /// handler is told it started (`on_start`), as a driver tells it when
    /// it begins to run.
    pub fn new(handler: H) -> Harness<H> {
        let mut harness = Harness {
            handler,
            states: BTreeMap::new(),
            cx: MemoryContext::new(),
            max_input: None,
        };
        harness.handler.on_start(&mut harness.cx);
        harness.settle();
        harness
    }

    /// Closes a connection with `CloseReason::InputLimit` when the handler
    /// leaves more than `max` bytes unconsumed, as the loop does. Input left
    /// while the connection is held or paused does not count: a driver
    /// would not have read it.
    pub fn with_max_input(mut self, max: usize) -> Harness<H> {
        self.max_input = Some(max);
        self
    }

    /// A connection is [`backlogged`](Context::backlogged) while more than
    /// `bytes` sent to it have not been taken
    /// ([`Config::high_water`]).
    pub fn with_high_water(mut self, bytes: usize) -> Harness<H> {
        self.cx.high_water = bytes;
        self
    }

    /// A send that would leave more than `bytes` sent to a connection and not
    /// taken closes it with `CloseReason::OutputLimit`
    /// ([`Config::max_output`]).
    pub fn with_max_output(mut self, bytes: usize) -> Harness<H> {
        self.cx.max_output = bytes;
        self
    }

    /// A new connection, as if accepted by the first listener; the
    /// handler's `on_open` runs.
    pub fn connect(&mut self) -> ConnId {
        self.connect_to(ListenerId(0))
    }

    /// A new connection accepted by `listener`; the handler's `on_open` runs.
    pub fn connect_to(&mut self, listener: ListenerId) -> ConnId {
        let id = self.cx.new_id();
        self.cx
            .conns
            .insert(id, MemConn::new(Origin::Accepted(listener)));
        self.open(id);
        id
    }

    /// Tells the handler of `id`, with a state made for it.
    fn open(&mut self, id: ConnId) {
        let state = self.states.entry(id).or_default();
        self.handler.on_open(&mut self.cx, id, state);
        self.settle();
    }

    /// The handler's state of `id`, while it is open.
    pub fn state(&self, id: ConnId) -> Option<&H::Conn> {
        self.states.get(&id)
    }

    /// The outbound connections the handler asked for that are still
    /// being made, with where to.
    pub fn dialing(&self) -> Vec<(ConnId, SocketAddr)> {
        self.cx
            .conns
            .iter()
            .filter(|(_, c)| c.pending && c.closed.is_none() && c.closing.is_none())
            .filter_map(|(&id, c)| c.dialing.map(|addr| (id, addr)))
            .collect()
    }

    /// The outbound connection `id` is established: `on_open` runs.
    pub fn establish(&mut self, id: ConnId) {
        if self.dialing().iter().any(|&(d, _)| d == id) {
            self.cx.conns.get_mut(&id).expect("dialing").pending = false;
            self.open(id);
        }
    }

    /// The outbound connection `id` cannot be made: `on_close` runs with
    /// [`CloseReason::ConnectFailed`].
    pub fn fail_connect(&mut self, id: ConnId, kind: io::ErrorKind) {
        if self.dialing().iter().any(|&(d, _)| d == id) {
            self.finish(id, CloseReason::ConnectFailed(kind));
            self.settle();
        }
    }

    /// Bytes arrive from the peer of `id` (ignored once it is closing). If
    /// `id` is held or paused they are only added to its input.
    pub fn receive(&mut self, id: ConnId, bytes: impl AsRef<[u8]>) {
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return;
        };
        if conn.closed.is_some() || conn.closing.is_some() {
            return;
        }
        conn.input.extend_from_slice(bytes.as_ref());
        if !conn.held && conn.paused.is_none() {
            self.feed(id);
        }
    }

    /// The peer of `id` goes away.
    pub fn disconnect(&mut self, id: ConnId) {
        self.finish(id, CloseReason::PeerClosed);
        self.settle();
    }

    /// One turn of the loop, `by` later: timers and pauses that fall due by
    /// then fire in deadline order, time moving to each deadline in turn.
    /// What they set with no delay waits for the next call.
    pub fn advance(&mut self, by: Duration) {
        let end = self.cx.now + by;
        self.cx.next_turn.clear();
        while let Some(key) = self.cx.next_due(end) {
            self.cx.now = self.cx.now.max(key.at);
            match self.cx.unschedule(key) {
                Some(Due::Timer(tag)) => {
                    self.handler.on_timer(&mut self.cx, tag);
                    self.settle();
                }
                Some(Due::ConnTimer(id, tag)) => {
                    // Only while open: a connection's timers end with it.
                    if self.cx.open(id).is_some() {
                        let state = self.states.entry(id).or_default();
                        self.handler.on_conn_timer(&mut self.cx, id, state, tag);
                        self.settle();
                    }
                }
                Some(Due::Resume(id)) => self.resume(id),
                None => unreachable!("next_due returns a queued key"),
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

    /// Takes what the handler has sent to `id` since the last take: the peer
    /// reads its queue. If that ends a hold, `on_data` is then called with
    /// the input the handler left, and what it sends waits for the next take.
    pub fn take(&mut self, id: ConnId) -> Vec<u8> {
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return Vec::new();
        };
        let output = std::mem::take(&mut conn.output);
        if conn.held && conn.paused.is_none() && conn.closed.is_none() && conn.closing.is_none() {
            conn.held = false;
            self.feed(id);
        }
        output
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

    /// Bytes sent to `id` and not yet taken.
    pub fn queued_output(&self, id: ConnId) -> usize {
        self.cx.conns.get(&id).map_or(0, |c| c.output.len())
    }

    /// When the input pause of `id` ends, if it is paused.
    pub fn paused_until(&self, id: ConnId) -> Option<Instant> {
        self.cx.conns.get(&id)?.paused.map(|key| key.at)
    }

    /// Hands `id`'s input to `on_data`, then holds it if the handler left
    /// input because it is backlogged.
    fn feed(&mut self, id: ConnId) {
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return;
        };
        let mut input = std::mem::take(&mut conn.input);
        let state = self.states.entry(id).or_default();
        self.handler
            .on_data(&mut self.cx, id, state, &mut Input::new(&mut input));
        let backlogged = self.cx.backlogged(id);
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return;
        };
        let waiting = !input.is_empty() && backlogged && conn.closing.is_none();
        conn.held = waiting;
        let excused = waiting || conn.paused.is_some();
        let too_long = !excused && self.max_input.is_some_and(|max| input.len() > max);
        conn.input = input;
        if too_long {
            self.finish(id, CloseReason::InputLimit);
        }
        self.settle();
    }

    /// The pause of `id` is over: its input goes to `on_data`, unless its
    /// output holds it until the peer takes it.
    fn resume(&mut self, id: ConnId) {
        let Some(conn) = self.cx.conns.get_mut(&id) else {
            return;
        };
        conn.paused = None;
        if conn.closed.is_some() || conn.closing.is_some() || conn.input.is_empty() {
            return;
        }
        if conn.output.len() > self.cx.high_water {
            conn.held = true;
        } else {
            self.feed(id);
        }
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
        conn.held = false;
        if let Some(pause) = conn.paused.take() {
            self.cx.unschedule(pause);
        }
        let state = self.states.remove(&id).unwrap_or_default();
        self.handler.on_close(&mut self.cx, id, state, reason);
    }

    /// Carries out the closes the handler asked for or caused, which may
    /// cause more.
    fn settle(&mut self) {
        loop {
            let closing = self.cx.conns.iter().find_map(|(&id, c)| {
                c.closing
                    .filter(|_| c.closed.is_none())
                    .map(|why| (id, why))
            });
            match closing {
                Some((id, reason)) => self.finish(id, reason),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers each line `L` with `L` repeated `copies` times, while its
    /// peer is not backlogged; a line `pause` pauses it for a second and a
    /// line `tick` sets a timer that sets itself again with no delay.
    struct Repeat {
        copies: usize,
        ticks: usize,
    }

    impl Handler for Repeat {
        type Message = ();
        type Conn = ();

        fn on_data(
            &mut self,
            cx: &mut dyn Context,
            id: ConnId,
            _conn: &mut (),
            input: &mut Input<'_>,
        ) {
            while !cx.backlogged(id) {
                let Some(end) = input.iter().position(|&b| b == b'\n') else {
                    return;
                };
                match &input[..=end] {
                    b"pause\n" => {
                        input.consume(end + 1);
                        cx.pause_input(id, Duration::from_secs(1));
                        return;
                    }
                    b"tick\n" => {
                        cx.set_timer(Duration::ZERO, 0);
                    }
                    line => {
                        for _ in 0..self.copies {
                            cx.send(id, line);
                        }
                    }
                }
                input.consume(end + 1);
            }
        }

        fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
            self.ticks += 1;
            cx.set_timer(Duration::ZERO, tag);
        }
    }

    fn repeat(copies: usize) -> Harness<Repeat> {
        Harness::new(Repeat { copies, ticks: 0 })
    }

    #[test]
    fn a_backlogged_connection_is_held_until_its_peer_takes() {
        let mut h = repeat(2).with_high_water(10);
        let id = h.connect();
        h.receive(id, "a\nb\nc\nd\n");
        assert_eq!(h.queued_output(id), 12, "three lines answered, then held");
        assert_eq!(h.pending_input(id), 2);
        h.receive(id, "e\n");
        assert_eq!(h.queued_output(id), 12, "a held connection is not read");
        assert_eq!(h.take_text(id), "a\na\nb\nb\nc\nc\n");
        assert_eq!(h.take_text(id), "d\nd\ne\ne\n", "handed back on take");
        assert_eq!(h.pending_input(id), 0);
    }

    #[test]
    fn a_send_past_the_output_limit_closes_with_output_limit() {
        let mut h = repeat(1).with_high_water(100).with_max_output(5);
        let id = h.connect();
        h.receive(id, "ab\n");
        assert_eq!(h.closed(id), None);
        h.receive(id, "cd\n");
        assert_eq!(h.closed(id), Some(CloseReason::OutputLimit));
        assert_eq!(
            h.take_text(id),
            "ab\n",
            "the send that passed it was dropped"
        );
    }

    #[test]
    fn paused_input_waits_for_the_end_of_the_pause_then_comes_in_order() {
        let mut h = repeat(1);
        let id = h.connect();
        h.receive(id, "a\npause\nb\n");
        h.receive(id, "c\n");
        assert_eq!(h.take_text(id), "a\n");
        h.advance(Duration::from_millis(999));
        assert_eq!(h.take_text(id), "", "still paused");
        h.advance(Duration::from_millis(1));
        assert_eq!(h.take_text(id), "b\nc\n");
        assert_eq!(h.paused_until(id), None);
    }

    #[test]
    fn a_timer_set_again_with_no_delay_fires_once_per_turn() {
        let mut h = repeat(1);
        let id = h.connect();
        h.receive(id, "tick\n");
        assert_eq!(h.handler.ticks, 0, "timers fire only when time moves");
        h.advance(Duration::ZERO);
        assert_eq!(h.handler.ticks, 1);
        h.advance(Duration::from_secs(1));
        assert_eq!(h.handler.ticks, 2);
    }
}
