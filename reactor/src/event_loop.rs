//! The event loop: one thread, one poller, every connection.
//!
//! ```text
//!   run() = loop { turn() }
//!
//!   turn():
//!     wait(timeout = earliest of: timer, linger deadline, sweep, accept pause, stop)
//!     ├─ listener readable ──► accept (≤ 64) ─► on_open / refusal
//!     ├─ signal pipe ────────► begin graceful stop
//!     ├─ connection readable ► unless its input is held: one read of ≤ max_read
//!     │                          └─► on_data(input)  (or discard if closing)
//!     ├─ connection writable ► queue for flush
//!     ├─ mailbox (≤ 256) ────► on_wake(msg) / stop
//!     ├─ due timers ─────────► on_timer(tag) / a pause ends; not those they set themselves
//!     ├─ held input ─────────► on_data again for connections whose hold ended
//!     ├─ linger deadlines ───► cut off what has not finished closing
//!     ├─ once a second ──────► idle and soft-limit timeouts, free idle buffers
//!     ├─ flush: write each connection until full or 256 KiB; hold input over
//!     │         high water, release it under low water; finish closes
//!     └─ free the slots of connections released in this turn
//! ```
//!
//! Polling is level-triggered: interest is changed (one `epoll_ctl`) only
//! when a connection starts or stops having output or having its input
//! held, never to re-arm. Each readiness gets one bounded read; if more is
//! waiting, the next `wait` says so. Sends made by handlers are queued and
//! flushed together after the batch, so that several messages to one peer
//! leave in one `writev` and each `wait` (several system calls in
//! `polling`) is paid for by as much work as possible.
//!
//! Flow control is the same idea three times. Reads are bounded, so one
//! sender's burst is taken a portion per turn and fanned out while every
//! recipient is flushed between portions; a connection that owes its peer
//! more than `high_water` is not read until it is down to `low_water`, so
//! TCP slows whoever asks faster than they read; and a send that would pass
//! `max_output` cuts that one connection off, so no queue grows without
//! bound and one reader that does not read stalls nobody else.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use polling::{Events, Poller};
use slab::Slab;

use crate::conn::{Conn, Phase, NEVER, NOT_OVER};
use crate::handle::{Command, Handle};
use crate::output::Output;
use crate::signals::SignalPipe;
use crate::sys::{self, Interest, Key, Registered};
use crate::timers::{deadline, Timers};
use crate::transport::{is_tls_error, Transport, MAX_RECORD};
use crate::{
    CloseReason, Config, ConnId, Connect, Context, Endpoint, Error, Handler, ListenerId, Origin,
    Stream, TimerId,
};

/// Size of the read buffer the whole loop shares.
const READ_BUFFER: usize = 64 * 1024;
/// Below this much room the read buffer is renewed rather than read into.
const MIN_READ: usize = 16 * 1024;
/// Messages taken from the mailbox per turn, at most: a handler that posts
/// to its own loop from `on_wake` must not keep it from everything else.
const MAILBOX_BATCH: usize = 256;
/// Connections accepted per wakeup, so that a storm of new connections
/// cannot starve the ones already being served.
const ACCEPT_BATCH: usize = 64;
/// How long to stop accepting after running out of file descriptors: a
/// level-triggered listener stays readable while `accept` fails, so retrying
/// at once would spin the CPU.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Events taken from the poller per wait.
const EVENT_CAPACITY: usize = 1024;

/// `EMFILE`/`ENFILE` (the same on Linux, macOS and the BSDs): out of descriptors.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A listening socket, its policy, and whether accepting is paused.
struct Listener {
    io: Registered<TcpListener>,
    endpoint: Endpoint,
    /// Its connections being served (not those closing).
    open: usize,
    paused_until: Option<Instant>,
}

/// A single-threaded event loop serving connections to one [`Handler`].
///
/// ```no_run
/// # use reactor::{Reactor, Config, Handler, Context, ConnId};
/// # use bytes::BytesMut;
/// # struct Echo;
/// # impl Handler for Echo {
/// #     type Message = ();
/// #     fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, input: &mut BytesMut) {
/// #         cx.send_slice(id, input);
/// #         input.clear();
/// #     }
/// # }
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut reactor = Reactor::new(Config::default())?;
/// reactor.listen(listener)?;
/// reactor.stop_on_signals()?;
/// reactor.run(&mut Echo)?;
/// # Ok::<(), reactor::Error>(())
/// ```
pub struct Reactor<M = ()> {
    poller: Arc<Poller>,
    config: Config,
    conns: Slab<Conn>,
    /// Every listener, by `ListenerId`; all dropped when a stop begins.
    listeners: Vec<Listener>,
    signals: Option<Registered<SignalPipe>>,
    timers: Timers<Due>,
    mailbox: Receiver<Command<M>>,
    mailbox_tx: Sender<Command<M>>,
    /// The last turn stopped taking messages at `MAILBOX_BATCH`: more wait.
    mailbox_more: bool,
    /// The read buffer shared by every connection (see `read`).
    scratch: BytesMut,
    /// Where TLS connections read their ciphertext to, before it is
    /// decrypted into `scratch`; made on the first TLS read.
    cipher: Vec<u8>,
    /// Slots with output to write after this batch.
    flush_list: Vec<usize>,
    /// Connections whose held input is to be handed to the handler again.
    redeliver: Vec<ConnId>,
    /// Slots released in this batch, freed after it so that no later event
    /// of the same batch can reach a new connection in the same slot.
    dead: Vec<usize>,
    /// Slots attached before `run` whose handler has not been told yet.
    unannounced: Vec<usize>,
    /// Connections that closed during this callback, whose handler is told
    /// (`on_close`) as soon as the callback returns.
    untold: Vec<(ConnId, CloseReason)>,
    /// When each closing connection must be gone, in the order they began
    /// closing. They all wait the same `linger_timeout`, so this order is
    /// also the order of their deadlines: the front is always the next.
    /// Entries of connections that finished earlier are skipped. An open
    /// connection whose peer finished sending while its input was held has
    /// an entry too: the time by which the handler must have taken it.
    linger_deadlines: VecDeque<(ConnId, Instant)>,
    /// Connections served: those open, not those closing, and not the
    /// handler's own outbound ones. A connection stops counting against
    /// `max_connections` as soon as it starts closing.
    open: usize,
    /// Connections closing: flushing, lingering, refusals.
    closing: usize,
    next_gen: u32,
    start: Instant,
    now: Instant,
    /// Whole seconds since `start`: the coarse clock of idle and soft-limit
    /// timeouts.
    tick: u32,
    next_sweep: Instant,
    stop_requested: bool,
    /// Set once a graceful stop has begun: the time by which it must end.
    stop_deadline: Option<Instant>,
    /// Whether the operator has been told what the stop is waiting for.
    stop_explained: bool,
}

/// What a timer of the loop's own queue is for.
#[derive(Debug)]
enum Due {
    /// The handler's, set with `Context::set_timer`.
    Handler(u64),
    /// The end of a `Context::pause_input`.
    Resume(ConnId),
    /// The deadline of a connection that must be established by then: an
    /// outbound connect, or a TLS handshake.
    Establish(ConnId),
}

impl<M: Send + 'static> Reactor<M> {
    /// Creates a loop with no sources.
    pub fn new(config: Config) -> Result<Reactor<M>, Error> {
        let poller = Poller::new().map_err(Error::Poller)?;
        if !poller.supports_level() {
            return Err(Error::Poller(io::Error::new(
                io::ErrorKind::Unsupported,
                "this platform's poller has no level-triggered mode",
            )));
        }
        let (mailbox_tx, mailbox) = mpsc::channel();
        let now = Instant::now();
        Ok(Reactor {
            poller: Arc::new(poller),
            config,
            conns: Slab::new(),
            listeners: Vec::new(),
            signals: None,
            timers: Timers::default(),
            mailbox,
            mailbox_tx,
            mailbox_more: false,
            scratch: BytesMut::zeroed(READ_BUFFER),
            cipher: Vec::new(),
            flush_list: Vec::new(),
            redeliver: Vec::new(),
            dead: Vec::new(),
            unannounced: Vec::new(),
            untold: Vec::new(),
            linger_deadlines: VecDeque::new(),
            open: 0,
            closing: 0,
            next_gen: 1,
            start: now,
            now,
            tick: 0,
            next_sweep: now + Duration::from_secs(1),
            stop_requested: false,
            stop_deadline: None,
            stop_explained: false,
        })
    }

    /// Accepts plain TCP connections from `listener` (made non-blocking
    /// here), beside any other listeners.
    pub fn listen(&mut self, listener: TcpListener) -> Result<ListenerId, Error> {
        self.listen_on(listener, Endpoint::plain())
    }

    /// Accepts connections from `listener` and serves them as `endpoint`
    /// says (limits, TLS), beside any other listeners.
    pub fn listen_on(
        &mut self,
        listener: TcpListener,
        endpoint: Endpoint,
    ) -> Result<ListenerId, Error> {
        let index = self.listeners.len();
        self.listeners.push(Listener {
            io: sys::watch_listener(&self.poller, listener, index)?,
            endpoint,
            open: 0,
            paused_until: None,
        });
        Ok(ListenerId(index as u32))
    }

    /// The address `listener` is bound to, until the loop stops.
    pub fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        let listener = self.listeners.get(listener.index())?;
        listener.io.source().local_addr().ok()
    }

    /// Serves an already-connected stream (a socket, a pipe, a terminal). The
    /// handler's `on_open` is called when `run` starts. A descriptor that
    /// cannot be polled, such as a regular file, is refused with
    /// [`Error::NotPollable`].
    pub fn attach(&mut self, stream: impl Into<Stream>) -> Result<ConnId, Error> {
        let stream = stream.into();
        stream.prepare()?;
        let id = self
            .register(stream, Transport::Plain, Origin::Attached, Interest::READ)
            .map_err(|e| {
                // epoll answers EPERM for descriptors that are always ready.
                if e.kind() == io::ErrorKind::PermissionDenied {
                    Error::NotPollable
                } else {
                    Error::Io(e)
                }
            })?;
        self.unannounced.push(id.slot());
        Ok(id)
    }

    /// Stops gracefully on SIGINT, SIGTERM or SIGHUP (a second signal cuts the
    /// graceful stop short). Until the loop is dropped those signals no
    /// longer end the process by themselves.
    pub fn stop_on_signals(&mut self) -> Result<(), Error> {
        self.signals = Some(sys::watch_signals(&self.poller)?);
        Ok(())
    }

    /// A handle for other threads to post messages to this loop or stop it.
    pub fn handle(&self) -> Handle<M> {
        Handle::new(self.mailbox_tx.clone(), &self.poller)
    }

    /// Connections served: open ones, not those closing.
    pub fn connections(&self) -> usize {
        self.open
    }

    /// Runs until stopped (signal, [`Context::stop`], [`Handle::stop`]) and
    /// every connection is closed, or the shutdown timeout has passed.
    pub fn run<H: Handler<Message = M>>(&mut self, handler: &mut H) -> Result<(), Error> {
        let mut events = Events::with_capacity(EVENT_CAPACITY.try_into().expect("non-zero"));
        while !self.turn(handler, &mut events)? {}
        Ok(())
    }

    /// One iteration of the loop, in the order of the diagram at the top of
    /// this file; returns whether the loop is done. One turn's work is
    /// bounded however the handler behaves: timers that timers set, and
    /// input handed back after a hold, wait for the next turn, and the
    /// mailbox gives at most 256 messages.
    fn turn<H: Handler<Message = M>>(
        &mut self,
        handler: &mut H,
        events: &mut Events,
    ) -> Result<bool, Error> {
        self.announce(handler);
        events.clear();
        self.poller.wait(events, self.timeout())?;
        self.now = Instant::now();
        self.tick = self.now.duration_since(self.start).as_secs() as u32;

        for event in events.iter() {
            match Key::of(event.key) {
                Key::Listener(index) => self.accept(handler, index),
                Key::Signals => self.on_signal(),
                Key::Conn(slot) => {
                    // The slot still holds the connection the event is
                    // for: slots are freed only after the batch.
                    let Some(conn) = self.conns.get(slot) else {
                        continue;
                    };
                    let id = ConnId::new(slot, conn.gen);
                    if conn.connecting {
                        self.finish_connect(handler, id);
                    } else {
                        if event.readable {
                            self.read(handler, id, false);
                        }
                        if event.writable {
                            self.queue_flush(id);
                        }
                    }
                }
            }
            self.tell_closed(handler);
        }
        self.take_mail(handler);
        self.fire_timers(handler);
        self.hand_back_input(handler);
        self.resume_accepting();
        self.expire_lingering();
        if self.now >= self.next_sweep {
            self.sweep();
        }
        self.tell_closed(handler);
        if self.stop_requested && self.stop_deadline.is_none() {
            self.begin_stop(handler);
        }
        self.flush_all(handler);
        self.free_dead(handler);
        Ok(self.stopped(handler))
    }

    /// How long the next wait may sleep: until the earliest thing that must
    /// happen without an event.
    fn timeout(&self) -> Option<Duration> {
        // Work left for the next turn (output queued by `on_open` of attached
        // streams, held input handed back, more mail) must not wait for an event.
        if !self.flush_list.is_empty()
            || !self.redeliver.is_empty()
            || self.mailbox_more
            || (self.stop_requested && self.stop_deadline.is_none())
        {
            return Some(Duration::ZERO);
        }
        let sweep = (!self.conns.is_empty()).then_some(self.next_sweep);
        let paused = self.listeners.iter().filter_map(|l| l.paused_until).min();
        let linger = self.linger_deadlines.front().map(|&(_, at)| at);
        [
            self.timers.next_deadline(),
            linger,
            sweep,
            paused,
            self.stop_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Messages posted from other threads, at most `MAILBOX_BATCH` a turn.
    fn take_mail<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        self.mailbox_more = false;
        for _ in 0..MAILBOX_BATCH {
            let Ok(cmd) = self.mailbox.try_recv() else {
                return;
            };
            match cmd {
                Command::Message(msg) => {
                    self.guarded(handler, "on_wake", |h, cx| h.on_wake(cx, msg))
                }
                Command::Stop => self.stop_requested = true,
                Command::Attach(stream) => self.adopt(handler, stream),
            }
            self.tell_closed(handler);
        }
        self.mailbox_more = true;
    }

    /// The timers due now that were set before this turn.
    fn fire_timers<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        let horizon = self.timers.horizon();
        while let Some(due) = self.timers.pop_due(self.now, horizon) {
            match due {
                Due::Handler(tag) => {
                    self.guarded(handler, "on_timer", |h, cx| h.on_timer(cx, tag));
                    self.tell_closed(handler);
                }
                Due::Resume(id) => self.end_pause(id),
                Due::Establish(id) => self.establish_expired(id),
            }
        }
    }

    /// Runs a callback that no connection can pay for (a message, a timer,
    /// the stop, a close). As a panic on one connection's input costs that
    /// connection, a panic here costs this call and nothing more: it is
    /// logged, and the loop goes on serving everyone.
    fn guarded<H: Handler<Message = M>>(
        &mut self,
        handler: &mut H,
        what: &str,
        call: impl FnOnce(&mut H, &mut Self),
    ) {
        if panic::catch_unwind(AssertUnwindSafe(|| call(handler, self))).is_err() {
            log::error!("the handler panicked in {what}; carrying on without that call");
        }
    }

    /// A pause set with `pause_input` may be over: if it is (it may have
    /// been replaced by a later one), read again and hand back what waits.
    fn end_pause(&mut self, id: ConnId) {
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
    fn resume_input(&mut self, id: ConnId) {
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
    fn hand_back_input<H: Handler<Message = M>>(&mut self, handler: &mut H) {
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

    /// Ends the closing connections whose linger deadline has passed, and
    /// open ones that finished sending and still hold input then.
    fn expire_lingering(&mut self) {
        while let Some(&(id, at)) = self.linger_deadlines.front() {
            if at > self.now {
                return;
            }
            self.linger_deadlines.pop_front();
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
    fn free_dead<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        self.tell_closed(handler);
        for slot in self.dead.drain(..) {
            // Dropping the connection deletes it from the poller, then closes it.
            self.conns.remove(slot);
        }
    }

    /// Whether a graceful stop has ended: everyone gone, or the deadline
    /// passed (then whoever is left is cut off). The first turn of a stop
    /// that still waits says what for.
    fn stopped<H: Handler<Message = M>>(&mut self, handler: &mut H) -> bool {
        let Some(deadline) = self.stop_deadline else {
            return false;
        };
        if self.conns.is_empty() {
            return true;
        }
        if self.now >= deadline {
            self.cut_off_all(handler);
            return true;
        }
        if !self.stop_explained {
            self.stop_explained = true;
            self.config.explain_stop(self.conns.len());
        }
        false
    }

    fn announce<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        while let Some(slot) = self.unannounced.pop() {
            let conn = &mut self.conns[slot];
            conn.owed_close = true;
            let id = ConnId::new(slot, conn.gen);
            self.open_conn(handler, id);
        }
    }

    /// Tells the handler of a new connection. As with `on_data`, a panic
    /// in the handler costs only this connection.
    fn open_conn<H: Handler<Message = M>>(&mut self, handler: &mut H, id: ConnId) {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.on_open(self, id)));
        if outcome.is_err() {
            log::error!("{id}: the handler panicked opening this connection; closing it");
            self.release(id, CloseReason::HandlerPanicked);
        }
        self.tell_closed(handler);
    }

    /// Puts `stream` in a slot, watched for input, and counts it where it
    /// counts: against the client limits unless it is the handler's own.
    fn register(
        &mut self,
        stream: Stream,
        transport: Transport,
        origin: Origin,
        interest: Interest,
    ) -> io::Result<ConnId> {
        let entry = self.conns.vacant_entry();
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
        let id = ConnId::new(entry.key(), gen);
        let io = Registered::new(&self.poller, stream, entry.key(), interest)?;
        let mut conn = Conn::new(io, transport, gen, origin, self.tick);
        conn.interest = interest;
        if origin != Origin::Connected {
            conn.idle_limit = self.config.idle_timeout.map_or(NEVER, secs_ceil);
            self.open += 1;
        }
        if let Origin::Accepted(listener) = origin {
            self.listeners[listener.index()].open += 1;
        }
        entry.insert(conn);
        Ok(id)
    }

    /// `origin` no longer counts as served: it has started closing.
    fn uncount(&mut self, origin: Origin) {
        if origin != Origin::Connected {
            self.open -= 1;
        }
        if let Origin::Accepted(listener) = origin {
            // The listeners are gone once a stop has begun.
            if let Some(listener) = self.listeners.get_mut(listener.index()) {
                listener.open -= 1;
            }
        }
    }

    /// Serves a stream handed over through a [`Handle`]: it is opened at once.
    fn adopt<H: Handler<Message = M>>(&mut self, handler: &mut H, stream: Stream) {
        let registered = stream.prepare().and_then(|()| {
            self.register(stream, Transport::Plain, Origin::Attached, Interest::READ)
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
    fn finish_connect<H: Handler<Message = M>>(&mut self, handler: &mut H, id: ConnId) {
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
    fn establish<H: Handler<Message = M>>(&mut self, handler: &mut H, id: ConnId) {
        let Some(conn) = self.live(id).filter(|c| c.pending_open) else {
            return;
        };
        conn.pending_open = false;
        conn.owed_close = true;
        self.open_conn(handler, id);
    }

    /// The deadline for establishing `id` passed: if it is not yet, it is
    /// given up.
    fn establish_expired(&mut self, id: ConnId) {
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

    /// The connection `id` names, unless it is stale or already released.
    fn live(&mut self, id: ConnId) -> Option<&mut Conn> {
        live_in(&mut self.conns, id)
    }

    fn accept<H: Handler<Message = M>>(&mut self, handler: &mut H, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listeners.get_mut(index) else {
                return;
            };
            let stream = match listener.io.source().accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => {
                    log::warn!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    if listener.io.set_interest(Interest::NONE).is_ok() {
                        listener.paused_until = Some(self.now + ACCEPT_PAUSE);
                    }
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like: that one connection is gone.
                    log::debug!("accept: {e}");
                    continue;
                }
            };
            self.admit(handler, index, stream);
        }
    }

    fn admit<H: Handler<Message = M>>(
        &mut self,
        handler: &mut H,
        index: usize,
        stream: std::net::TcpStream,
    ) {
        let listener = &self.listeners[index];
        let from = ListenerId(index as u32);
        let over_limit = self.open >= self.config.max_connections
            || listener.open >= listener.endpoint.max_connections;
        // Refusals may take half the closing places at most: one address
        // connecting hundreds of times a second must not crowd out the last
        // lines (`Bye`) of clients that were served.
        if over_limit && self.closing >= self.config.max_closing / 2 {
            return; // dropped: closed without a word
        }
        let handshake = listener.endpoint.handshake_timeout;
        let transport = match &listener.endpoint.tls {
            Some(config) => Transport::tls_server(config),
            None => Ok(Transport::Plain),
        };
        let stream = Stream::Tcp(stream);
        let registered = transport.and_then(|transport| {
            stream.prepare()?;
            self.register(stream, transport, Origin::Accepted(from), Interest::READ)
        });
        let id = match registered {
            Ok(id) => id,
            Err(e) => {
                log::warn!("cannot serve a new connection: {e}");
                return;
            }
        };
        let conn = &mut self.conns[id.slot()];
        if over_limit {
            // The refusal goes through the transport like any output: a
            // TLS client reads it once its handshake is done.
            conn.refused = true;
            if let Some(refusal) = handler.refusal(from) {
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

    fn resume_accepting(&mut self) {
        for listener in &mut self.listeners {
            if listener.paused_until.is_some_and(|t| self.now >= t)
                && listener.io.set_interest(Interest::READ).is_ok()
            {
                listener.paused_until = None;
            }
        }
    }

    fn on_signal(&mut self) {
        let Some(signals) = &self.signals else { return };
        if signals.source().drain() == 0 {
            return;
        }
        if self.stop_deadline.is_some() {
            log::info!("second signal: stopping now");
            self.stop_deadline = Some(self.now);
        } else {
            log::info!("signal received: stopping");
            self.stop_requested = true;
        }
    }

    /// One read per readiness, of at most `Config::max_read`. The bytes land in
    /// the shared scratch buffer and are split off it without copying; only
    /// what the handler leaves unconsumed is copied into the connection's own
    /// buffer. So an idle connection holds no input memory, and a read that
    /// leaves more waiting is simply followed by another readiness report.
    fn read<H: Handler<Message = M>>(&mut self, handler: &mut H, id: ConnId, hand_back: bool) {
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
        let result = if conn.is_open() && conn.input_len() >= max_input {
            // The handler has a full buffer of this connection's input it
            // has not taken (it is handing back what it held): read no
            // more, or held input could grow without bound, but look for an
            // end of stream or a reset behind it.
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
                    self.linger_deadlines.push_back((id, at));
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
        let data = self.scratch.split_to(n);
        self.deliver(handler, id, data);
    }

    /// Hands the handler `fresh` bytes, after what it left unconsumed last
    /// time, as one contiguous buffer; keeps what it leaves now. With no
    /// fresh bytes, this hands back input that was held.
    fn deliver<H: Handler<Message = M>>(
        &mut self,
        handler: &mut H,
        id: ConnId,
        mut fresh: BytesMut,
    ) {
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
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.on_data(self, id, input)));
        if outcome.is_err() {
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
    /// Usually every slice split off it has been dropped by now (echo writes
    /// its input through with `send_slice`, chat copies its lines), so the
    /// same allocation is taken back. Allocating afresh instead costs more
    /// than the allocator: glibc returns a freed 64 KiB to the kernel, and
    /// the next buffer is faulted in page by page. The memory is zeroed again
    /// either way, because safe code may only read into initialised bytes.
    fn renew_scratch(&mut self) {
        self.scratch.clear();
        if !self.scratch.try_reclaim(READ_BUFFER) {
            // A handler still holds a slice (a frame it kept, output not yet
            // written): that keeps the old allocation alive only as long as
            // the slice lives.
            self.scratch = BytesMut::with_capacity(READ_BUFFER);
        }
        self.scratch.resize(READ_BUFFER, 0);
    }

    fn queue_flush(&mut self, id: ConnId) {
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
    fn flush_all<H: Handler<Message = M>>(&mut self, handler: &mut H) {
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

    fn flush(&mut self, slot: usize) {
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

    /// Starts closing `id` gracefully: flush, shut down writing, linger.
    /// For the handler the connection is gone at once: it can no longer
    /// send to it, and is told (`on_close`) when its callback returns. It
    /// no longer counts against `max_connections`; past `max_closing`
    /// connections already closing (and not in a graceful stop, which closes
    /// everyone at once) it is closed at once instead.
    fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        let at = deadline(self.now, self.config.linger_timeout);
        let crowded = self.closing >= self.config.max_closing && self.stop_deadline.is_none();
        let Some(conn) = self.live(id).filter(|c| c.is_open()) else {
            return;
        };
        if conn.pending_open {
            // Not established: nothing was said that needs flushing.
            self.release(id, reason);
            return;
        }
        if crowded {
            log::debug!(
                "{id}: closed at once: {} connections are closing",
                self.closing
            );
            self.release(id, reason);
            return;
        }
        conn.phase = Phase::Closing(reason);
        if let Some(bufs) = &mut conn.bufs {
            bufs.input = BytesMut::new();
            bufs.paused_until = None;
        }
        let (owed_close, origin) = (conn.owed_close, conn.origin);
        if owed_close {
            self.untold.push((id, reason));
        }
        self.uncount(origin);
        self.closing += 1;
        self.linger_deadlines.push_back((id, at));
        // Even with nothing to write, the flush is what moves it on.
        self.queue_flush(id);
    }

    /// Queues `len` bytes for `to` with `push`, under the output limits:
    /// a queue that would pass `max_output` is cut off instead (Redis's
    /// check at the moment a reply is added, not after the batch); one that
    /// passes `high_water` is no longer read; one that passes `soft_output`
    /// starts its clock. Returns whether the bytes were queued.
    fn enqueue(&mut self, to: ConnId, len: usize, push: impl FnOnce(&mut Output)) -> bool {
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
    fn cut_off(&mut self, id: ConnId) {
        if let Some(conn) = self.live(id) {
            log::debug!("{id}: output limit ({} bytes queued)", conn.output_cost());
            if let Some(bufs) = &mut conn.bufs {
                bufs.output.clear();
            }
        }
        self.begin_close(id, CloseReason::OutputLimit);
    }

    /// Calls `on_close` for the connections that closed during the last
    /// callback. Those calls may close more; they are told too.
    fn tell_closed<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        while let Some((id, reason)) = self.untold.pop() {
            let Some(conn) = self.conns.get_mut(id.slot()) else {
                continue;
            };
            if conn.gen == id.gen() && conn.owed_close {
                conn.owed_close = false;
                log::debug!("{id}: closed ({reason})");
                self.guarded(handler, "on_close", |h, cx| h.on_close(cx, id, reason));
            }
        }
    }

    /// Ends `id` now: the slot is freed (closing the descriptor) after the
    /// batch, and the handler, if it has not been told, is told when the
    /// current callback returns.
    fn release(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.live(id) else { return };
        let was_open = conn.is_open();
        let origin = conn.origin;
        conn.phase = Phase::Dead;
        conn.bufs = None;
        if conn.owed_close {
            self.untold.push((id, reason));
        }
        self.dead.push(id.slot());
        if was_open {
            self.uncount(origin);
        } else {
            self.closing -= 1;
        }
    }

    /// Once a second: idle timeouts, connections too long over the soft
    /// output limit, and giving back the buffers of connections with nothing
    /// in flight.
    fn sweep(&mut self) {
        self.next_sweep = self.now + Duration::from_secs(1);
        let soft_time = secs_ceil(self.config.soft_output_time);
        let mut idle = Vec::new();
        let mut slow = Vec::new();
        for (slot, conn) in &mut self.conns {
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

    /// The ids of every connection in the slab.
    fn ids(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .map(|(slot, c)| ConnId::new(slot, c.gen))
            .collect()
    }

    /// Begins a graceful stop: no more accepting, a last word from the
    /// handler, then every connection flushed and closed.
    fn begin_stop<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        self.stop_deadline = Some(deadline(self.now, self.config.shutdown_timeout));
        self.listeners.clear();
        self.guarded(handler, "on_stop", |h, cx| h.on_stop(cx));
        let ids = self.ids();
        for id in ids {
            self.begin_close(id, CloseReason::Shutdown);
        }
        self.tell_closed(handler);
    }

    /// The stop deadline passed: whoever is still there is cut off.
    fn cut_off_all<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        let ids = self.ids();
        for id in ids {
            self.release(id, CloseReason::Shutdown);
        }
        self.tell_closed(handler);
        self.dead.clear();
        self.conns.clear();
    }
}

impl<M: Send + 'static> Context for Reactor<M> {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, to: ConnId, data: Bytes) -> bool {
        if data.is_empty() {
            return self.live(to).is_some_and(|c| c.is_open());
        }
        self.enqueue(to, data.len(), |output| output.push(&data))
    }

    fn send_many(&mut self, to: &[ConnId], data: &Bytes) -> usize {
        if data.is_empty() {
            return to.iter().filter(|&&id| self.send(id, Bytes::new())).count();
        }
        to.iter()
            .filter(|&&id| self.enqueue(id, data.len(), |output| output.push(data)))
            .count()
    }

    fn send_slice(&mut self, to: ConnId, data: &[u8]) -> bool {
        let Some(conn) = self.live(to).filter(|c| c.is_open()) else {
            return false;
        };
        if data.is_empty() {
            return true;
        }
        // Only with nothing queued: written now, it would overtake that.
        // And only in plain: TLS must encrypt it first.
        let written = if conn.output_len() == 0 && matches!(conn.transport, Transport::Plain) {
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

    fn backlogged(&self, id: ConnId) -> bool {
        // The hold itself, so that a handler that stops for it is sure to be
        // handed its input back when it ends.
        self.conns
            .get(id.slot())
            .is_none_or(|c| c.gen != id.gen() || !c.is_open() || c.held_for_output)
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

    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.cancel(timer);
    }

    fn stop(&mut self) {
        self.stop_requested = true;
    }

    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let conn = self.conns.get(id.slot())?;
        (conn.gen == id.gen() && conn.is_open()).then(|| conn.io.source().peer_addr())?
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        let conn = self.conns.get(id.slot())?;
        (conn.gen == id.gen() && conn.is_open()).then_some(conn.origin)
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
        let id = self.register(stream, transport, Origin::Connected, Interest::WRITE)?;
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

/// Looks at what waits on `conn`'s socket without taking it (`MSG_PEEK`):
/// `Ok(0)` is an end of stream with nothing before it. Only plain TCP can
/// look (TLS records are no end of stream even when they are a
/// `close_notify`); the others answer that nothing can be told (`WouldBlock`).
fn peek(conn: &Conn) -> io::Result<usize> {
    match (conn.io.source(), &conn.transport) {
        (Stream::Tcp(s), Transport::Plain) => s.peek(&mut [0]),
        _ => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// Why a connection whose read or write failed with `err` is closed.
fn close_reason(err: &io::Error) -> CloseReason {
    if is_tls_error(err) {
        CloseReason::Tls
    } else {
        CloseReason::from_error(err)
    }
}

/// The connection `id` names in `conns`, unless it is stale or released.
fn live_in(conns: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.slot())
        .filter(|c| c.gen == id.gen() && c.phase != Phase::Dead)
}

/// A duration in whole seconds, rounded up, for the coarse tick clock.
fn secs_ceil(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}
