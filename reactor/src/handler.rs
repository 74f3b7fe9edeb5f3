//! The two traits an application is written against: [`Handler`], the
//! callbacks the loop calls, and [`Context`], what those callbacks may do.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{ConnId, Connect, Input, ListenerId, Origin, TimerId};

/// An application: the callbacks a driver (the [`Reactor`](crate::Reactor),
/// the [`threaded`](crate::threaded) driver, or the in-memory
/// [`Harness`](crate::testing::Harness)) calls as things happen.
///
/// A handler never touches a socket. It acts only through the [`Context`] it
/// is given, so the same code runs on every driver and in unit tests.
pub trait Handler {
    /// What other threads may post to the loop with
    /// [`Handle::post`](crate::Handle::post); `()` if nothing.
    type Message: Send + 'static;

    /// What the handler keeps for each connection; `()` if nothing. The
    /// driver holds it beside the connection: made with `Default` when the
    /// connection is first known (accepted, attached, or asked for with
    /// [`Context::connect`]), handed to every callback about that
    /// connection, and handed back, by value, to `on_close`. So state that
    /// belongs to one connection needs no map in the handler, and cannot
    /// outlive it.
    type Conn: Default;

    /// A connection is established and may now be sent to: accepted (for
    /// TLS, once its handshake is done), attached, or one the handler
    /// opened with [`Context::connect`]. [`Context::origin`] tells which.
    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn) {
        let _ = (cx, id, conn);
    }

    /// Bytes arrived. `input` holds everything received and not yet consumed:
    /// take the complete frames from its front ([`Input::next_line`],
    /// [`Input::consume`]) and leave any partial one, which is kept and
    /// handed back, grown, with the next read. `input` is only lent, and may
    /// lie in the loop's read buffer: what is kept past the callback is
    /// copied out of it, so nothing a handler keeps can pin that buffer.
    ///
    /// A handler may also leave complete frames: while `id` is
    /// [`backlogged`](Context::backlogged) or after
    /// [`pause_input`](Context::pause_input). The driver then stops reading
    /// `id` and calls `on_data` again with the same unconsumed input, and no
    /// new bytes, once the hold ends. So `on_data` may be handed input it has
    /// seen before; it must take up where it left off.
    fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Self::Conn,
        input: &mut Input<'_>,
    );

    /// The connection is gone for the handler: `id` is stale from now on.
    /// Called exactly once for every id the handler was given — every
    /// connection that was opened (also one whose `on_open` panicked before
    /// it finished), and every one it asked for with [`Context::connect`],
    /// established or not ([`CloseReason::ConnectFailed`]) — as soon as it
    /// starts closing (the loop may still be flushing it to the peer).
    /// `conn` is the connection's state, given back.
    fn on_close(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: Self::Conn,
        reason: CloseReason,
    ) {
        let _ = (cx, id, conn, reason);
    }

    /// A timer set with [`Context::set_timer`] fired; `tag` is what it was set with.
    fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        let _ = (cx, tag);
    }

    /// A timer set with [`Context::set_conn_timer`] for `id` fired; `tag`
    /// is what it was set with. Never called once `id` has closed: a
    /// connection's timers end with it. As with `on_data`, a panic here
    /// costs only this connection.
    fn on_conn_timer(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn, tag: u64) {
        let _ = (cx, id, conn, tag);
    }

    /// The driver has started: called once, before any other callback,
    /// when `run` begins (on the reactor, at the first `turn`). The place
    /// for what a handler does before any client comes: connect out, set
    /// its first timers.
    fn on_start(&mut self, cx: &mut dyn Context) {
        let _ = cx;
    }

    /// A message posted from another thread arrived.
    fn on_wake(&mut self, cx: &mut dyn Context, msg: Self::Message) {
        let _ = (cx, msg);
    }

    /// The loop is stopping (signal or [`Context::stop`]): the last chance to
    /// send. Every connection is then flushed and closed with
    /// [`CloseReason::Shutdown`].
    fn on_stop(&mut self, cx: &mut dyn Context) {
        let _ = cx;
    }

    /// What a connection to `listener` over a limit (`why`) is sent before
    /// it is closed; `None` closes it without a word. Asked per listener,
    /// because each may speak another protocol (a chat line, an HTTP 503).
    fn refusal(&self, listener: ListenerId, why: Refusal) -> Option<Bytes> {
        let _ = (listener, why);
        None
    }
}

/// What a handler can do: the loop's side of every callback.
pub trait Context {
    /// The time the current batch of events started; use it instead of
    /// `Instant::now()` so that tests can control time.
    fn now(&self) -> Instant;

    /// Sends `data` to `to`, after what was sent to it before. Borrowed:
    /// the driver keeps a copy of what it cannot write at once, so a handler
    /// may send straight from its input, and nothing it sends can pin the
    /// loop's read buffer. On the reactor, the first send to a connection
    /// in a turn, with nothing queued ahead of it, is written through
    /// before `send` returns (an echo then costs neither an allocation nor
    /// a copy); what the socket does not take, and every later send of the
    /// turn, is queued — short messages copied into the connection's
    /// contiguous output buffer — and written together when the callbacks
    /// are done, in one `writev`. Returns `false`, dropping `data`, if `to`
    /// is closed or closing, if the write found it broken (it is then
    /// closing), or if `data` would take its queue past
    /// [`Config::max_output`](crate::Config::max_output): `to` is then
    /// closed at once with [`CloseReason::OutputLimit`].
    fn send(&mut self, to: ConnId, data: &[u8]) -> bool;

    /// Whether `id` owes its peer more than [`Config::high_water`] (or is
    /// closed or closing). A handler that answers input should then stop
    /// consuming `id`'s input and leave the rest in the buffer: the driver
    /// stops reading `id` until its peer has read the queue down to
    /// [`Config::low_water`], then hands the rest back to `on_data`. That is
    /// how a client that asks faster than it reads (pipelined commands whose
    /// answers are larger than the commands) is slowed down rather than cut
    /// off or allowed to fill the server's memory.
    ///
    /// [`Config::high_water`]: crate::Config::high_water
    /// [`Config::low_water`]: crate::Config::low_water
    fn backlogged(&self, id: ConnId) -> bool;

    /// Stops reading `id` for `duration`, then calls `on_data` with its
    /// unconsumed input: the input is delayed, not dropped, and the peer is
    /// slowed by TCP meanwhile. For rate limits (a chat's flood control):
    /// consume what the budget allows, leave the rest, and pause until the
    /// budget has grown back. Pausing again replaces the previous pause.
    fn pause_input(&mut self, id: ConnId, duration: Duration);

    /// Sends the same bytes to each of `to`; returns how many took them.
    /// Never written through: a fan-out turn's messages to one recipient
    /// leave in one write. A long message is copied once and shared by
    /// every recipient's queue.
    fn send_many(&mut self, to: &[ConnId], data: &[u8]) -> usize {
        to.iter().filter(|&&id| self.send(id, data)).count()
    }

    /// Closes `to` once what was sent to it has been written. Its input is
    /// discarded from now on; `on_close` follows with `CloseReason::Requested`.
    fn close(&mut self, to: ConnId);

    /// Calls `on_timer(tag)` once, `after` from now. A timer set from
    /// `on_timer` fires on a later turn of the driver, even when `after` is
    /// zero, so that a timer that sets itself again cannot keep the driver
    /// from its other work.
    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId;

    /// Calls `on_conn_timer(id, tag)` once, `after` from now, with `id`'s
    /// state — unless `id` has closed by then: the timer ends with the
    /// connection, and needs no cancelling in `on_close`. Fires on a later
    /// turn, as `set_timer` does.
    fn set_conn_timer(&mut self, id: ConnId, after: Duration, tag: u64) -> TimerId;

    /// Cancels a timer that has not fired (either kind); otherwise does nothing.
    fn cancel_timer(&mut self, timer: TimerId);

    /// Stops the loop gracefully, as SIGTERM does.
    fn stop(&mut self);

    /// The address of the peer, if `id` is an open network connection.
    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr>;

    /// Where `id` came from, while it is open.
    fn origin(&self, id: ConnId) -> Option<Origin>;

    /// Opens a connection to `to.addr` without waiting for it: the id is
    /// returned at once, and the handler hears `on_open(id)` when the
    /// connection is established, or `on_close(id, ConnectFailed(kind))` if
    /// it cannot be (refused, unreachable, or not within `to.timeout`).
    /// Data sent before then is queued and written once it is. An error
    /// here means no attempt was made (out of descriptors, say).
    fn connect(&mut self, to: Connect) -> io::Result<ConnId>;
}

/// Which limit a connection the driver refuses is over, as asked of
/// [`Handler::refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The loop's `Config::max_connections`, or its listener's
    /// `Endpoint::max_connections`: the server is full.
    Full,
    /// `Config::max_per_address`: its address has as many as it may.
    FromAddress,
}

/// Why a connection closed, as told to [`Handler::on_close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side (end of stream).
    PeerClosed,
    /// The peer reset the connection, or it broke (`ECONNRESET`, `EPIPE`).
    Reset,
    /// Another I/O error.
    Error(io::ErrorKind),
    /// The handler called [`Context::close`].
    Requested,
    /// The peer sent more than `Config::max_input` without the handler consuming it.
    InputLimit,
    /// The peer did not read: a send would have taken its queue past
    /// `Config::max_output`, or it stayed above `Config::soft_output` for
    /// `Config::soft_output_time`.
    OutputLimit,
    /// The peer sent nothing for `Config::idle_timeout`.
    Idle,
    /// The loop stopped.
    Shutdown,
    /// A connection the handler asked for with `Context::connect` could not
    /// be established: refused, unreachable, or `TimedOut`.
    ConnectFailed(io::ErrorKind),
    /// The TLS layer failed: a bad handshake or record, or the peer's alert.
    Tls,
    /// The handler panicked in `on_open`, `on_data` or `on_conn_timer` for
    /// this connection.
    /// The driver logs it and closes only this connection; the others are
    /// served on.
    HandlerPanicked,
}

impl CloseReason {
    /// Classifies an I/O error on a connection.
    pub fn from_error(err: &io::Error) -> CloseReason {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CloseReason::Reset,
            kind => CloseReason::Error(kind),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Reset => f.write_str("connection reset"),
            CloseReason::Error(kind) => write!(f, "error: {kind}"),
            CloseReason::Requested => f.write_str("closed by the server"),
            CloseReason::InputLimit => f.write_str("input limit"),
            CloseReason::OutputLimit => f.write_str("output limit"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Shutdown => f.write_str("shutdown"),
            CloseReason::ConnectFailed(kind) => write!(f, "cannot connect: {kind}"),
            CloseReason::Tls => f.write_str("TLS error"),
            CloseReason::HandlerPanicked => f.write_str("the handler panicked"),
        }
    }
}
