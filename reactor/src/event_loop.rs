//! The event loop: one thread, one poller, every connection.
//!
//! ```text
//!   run() = loop { turn() }
//!
//!   turn():
//!     the first turn only: on_start
//!     on_open for streams attached before `run`
//!     wait(timeout = earliest of: timer, linger deadline, sweep, accept pause, stop)
//!     ├─ a listener readable ► accept (≤ 64) ─► plain: on_open / TLS: handshake first
//!     │                          └─► over its limit or the loop's: the refusal, closed
//!     ├─ signal pipe ────────► begin graceful stop
//!     ├─ connecting, ready ──► connected? plain: on_open / TLS: handshake first
//!     │                          └─► failed: on_close(ConnectFailed)
//!     ├─ connection readable ► unless its input is held: one read of ≤ max_read,
//!     │                        through its transport (TLS: decrypt, answer the
//!     │                        handshake, on_open once it is done)
//!     │                          └─► on_data(input)  (or discard if closing)
//!     ├─ connection writable ► queue for flush
//!     ├─ mailbox (≤ 256) ────► on_wake(msg) / stop / serve a stream handed over
//!     ├─ due timers ─────────► on_timer(tag) / on_conn_timer(id, tag) if open /
//!     │                        a pause ends / a connect or a
//!     │                        handshake out of time; not those they set themselves
//!     ├─ held input ─────────► on_data again for connections whose hold ended
//!     ├─ accept pauses over ─► watch those listeners again
//!     ├─ linger deadlines ───► cut off what has not finished closing
//!     ├─ once a second ──────► idle and soft-limit timeouts, free idle buffers
//!     ├─ stop asked for ─────► drop the listeners, on_stop, close everyone
//!     ├─ flush: write each connection (through its transport) until full or
//!     │         256 KiB; hold input over high water, release it under low
//!     │         water; finish closes (TLS: close_notify, then FIN)
//!     └─ free the slots of connections released in this turn
//! ```
//!
//! The parts live in modules named for what they hold: `open` (where
//! connections come from), `input`, `flush`, `close` (how they end), and
//! `context` (what handlers may do).
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

mod close;
mod context;
mod flush;
mod input;
mod open;

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use polling::{Events, Poller};

use crate::clock::{sleep_until, Clock};
use crate::conn::{Conn, Phase, NEVER, NOT_OVER};
use crate::handle::{Command, Handle, Mailbox};
use crate::listeners::{Listeners, ACCEPT_BATCH};
use crate::output::{Output, COPY_MAX};
use crate::places::{Admission, Linger, Places};
use crate::signals::SignalPipe;
use crate::slots::Slots;
use crate::stop::{Step, Stop};
use crate::sys::{self, Interest, Key, Registered};
use crate::timers::{deadline, Timers};
use crate::transport::{close_reason, Transport, MAX_RECORD};
use crate::{
    CloseReason, Config, ConnId, Connect, Context, Endpoint, Error, Handler, ListenerId, Origin,
    Stream, TimerId,
};
use input::READ_BUFFER;

/// Events taken from the poller per wait.
const EVENT_CAPACITY: usize = 1024;

/// A single-threaded event loop serving connections to one [`Handler`].
///
/// ```no_run
/// # use reactor::{Reactor, Config, Handler, Context, ConnId, Input};
/// # struct Echo;
/// # impl Handler for Echo {
/// #     type Message = ();
/// #     type Conn = ();
/// #     fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut Input<'_>) {
/// #         cx.send(id, input);
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
pub struct Reactor<H: Handler> {
    poller: Arc<Poller>,
    /// The poller's events, kept between turns so that a turn allocates
    /// nothing; out of place only during a turn.
    events: Option<Events>,
    config: Config,
    conns: Slots<Conn<H::Conn>>,
    /// Every listener, by `ListenerId`; all dropped when a stop begins.
    listeners: Listeners,
    signals: Option<Registered<SignalPipe>>,
    timers: Timers<Due>,
    mailbox: Mailbox<H::Message>,
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
    /// When each closing connection must be gone. An open connection whose
    /// peer finished sending while its input was held has an entry too:
    /// the time by which the handler must have taken it.
    linger_deadlines: Linger<ConnId>,
    /// The connections served and closing, against the limits; counted
    /// by slot.
    places: Places,
    /// Turns taken, wrapping: what `Context::send` tells one turn from the
    /// next by.
    turns: u32,
    /// Whether the handler has been told the loop started (`on_start`).
    started: bool,
    clock: Clock,
    /// The time of this turn, read once (see `Clock`).
    now: Instant,
    /// Whole seconds since the clock started: the coarse clock of idle and
    /// soft-limit timeouts.
    tick: u32,
    stop: Stop,
}

/// What a timer of the loop's own queue is for.
#[derive(Debug)]
enum Due {
    /// The handler's, set with `Context::set_timer`.
    Handler(u64),
    /// A connection's, set with `Context::set_conn_timer`.
    Conn(ConnId, u64),
    /// The end of a `Context::pause_input`.
    Resume(ConnId),
    /// The deadline of a connection that must be established by then: an
    /// outbound connect, or a TLS handshake.
    Establish(ConnId),
}

impl<H: Handler> Reactor<H> {
    /// Creates a loop with no sources.
    pub fn new(config: Config) -> Result<Reactor<H>, Error> {
        let poller = Poller::new().map_err(Error::Poller)?;
        if !poller.supports_level() {
            return Err(Error::Poller(io::Error::new(
                io::ErrorKind::Unsupported,
                "this platform's poller has no level-triggered mode",
            )));
        }
        let poller = Arc::new(poller);
        let mut clock = Clock::new();
        let now = clock.read();
        Ok(Reactor {
            listeners: Listeners::new(&poller),
            poller,
            events: None,
            places: Places::new(&config),
            config,
            conns: Slots::new(),
            signals: None,
            timers: Timers::default(),
            mailbox: Mailbox::new(),
            scratch: BytesMut::zeroed(READ_BUFFER),
            cipher: Vec::new(),
            flush_list: Vec::new(),
            redeliver: Vec::new(),
            dead: Vec::new(),
            unannounced: Vec::new(),
            untold: Vec::new(),
            linger_deadlines: Linger::new(),
            turns: 0,
            started: false,
            clock,
            now: now.at,
            tick: now.tick,
            stop: Stop::default(),
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
        self.listeners.add(listener, endpoint)
    }

    /// The address `listener` is bound to, until the loop stops.
    pub fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        self.listeners.local_addr(listener)
    }

    /// Serves an already-connected stream (a socket, a pipe, a terminal). The
    /// handler's `on_open` is called when `run` starts. A descriptor that
    /// cannot be polled, such as a regular file, is refused with
    /// [`Error::NotPollable`].
    pub fn attach(&mut self, stream: impl Into<Stream>) -> Result<ConnId, Error> {
        let stream = stream.into();
        stream.prepare()?;
        let id = self
            .register(
                stream,
                Transport::Plain,
                Origin::Attached,
                Interest::READ,
                None,
            )
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
    pub fn handle(&self) -> Handle<H::Message> {
        self.mailbox.handle(&self.poller)
    }

    /// Connections served: open ones, not those closing.
    pub fn connections(&self) -> usize {
        self.places.open()
    }

    /// Runs until stopped (signal, [`Context::stop`], [`Handle::stop`]) and
    /// every connection is closed, or the shutdown timeout has passed.
    pub fn run(&mut self, handler: &mut H) -> Result<(), Error> {
        while !self.turn(handler)? {}
        Ok(())
    }

    /// One iteration of the loop (ae.c's `aeProcessEvents`), in the order of
    /// the diagram at the top of this file: it waits until something is
    /// ready or due, does all of it, and returns whether the loop is done.
    /// [`run`](Reactor::run) is `while !turn() {}`; a program with a loop of
    /// its own, or a test, can call it directly. One turn's work is bounded
    /// however the handler behaves: timers that timers set, and input handed
    /// back after a hold, wait for the next turn, and the mailbox gives at
    /// most 256 messages.
    pub fn turn(&mut self, handler: &mut H) -> Result<bool, Error> {
        let capacity = EVENT_CAPACITY.try_into().expect("non-zero");
        let mut events = self
            .events
            .take()
            .unwrap_or_else(|| Events::with_capacity(capacity));
        let done = self.turn_with(handler, &mut events);
        self.events = Some(events);
        done
    }

    fn turn_with(&mut self, handler: &mut H, events: &mut Events) -> Result<bool, Error> {
        if !self.started {
            self.started = true;
            self.guarded(handler, "on_start", |h, cx| h.on_start(cx));
            self.tell_closed(handler);
        }
        self.turns = self.turns.wrapping_add(1);
        self.announce(handler);
        events.clear();
        self.poller.wait(events, self.timeout())?;
        let now = self.clock.read();
        (self.now, self.tick) = (now.at, now.tick);

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
                        // Read first, as ae.c does: what the handler answers
                        // is then written in this turn's flush.
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
        self.listeners.resume(self.now);
        self.expire_lingering();
        if self.clock.sweep_due(self.now) {
            self.sweep();
        }
        self.tell_closed(handler);
        if self.stop.due() {
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
            || self.mailbox.has_more()
            || self.stop.due()
        {
            return Some(Duration::ZERO);
        }
        let sweep = (!self.conns.is_empty()).then_some(self.clock.next_sweep());
        let paused = self.listeners.next_resume();
        sleep_until([
            self.timers.next_deadline(),
            self.linger_deadlines.next(),
            sweep,
            paused,
            self.stop.deadline(),
        ])
    }

    /// Messages posted from other threads, at most `MAILBOX_BATCH` a turn.
    fn take_mail(&mut self, handler: &mut H) {
        self.mailbox.begin();
        while let Some(cmd) = self.mailbox.take() {
            match cmd {
                Command::Message(msg) => {
                    self.guarded(handler, "on_wake", |h, cx| h.on_wake(cx, msg))
                }
                Command::Stop => self.stop.request(),
                Command::Attach(stream) => self.adopt(handler, stream),
            }
            self.tell_closed(handler);
        }
    }

    /// The timers due now that were set before this turn.
    fn fire_timers(&mut self, handler: &mut H) {
        let horizon = self.timers.horizon();
        while let Some(due) = self.timers.pop_due(self.now, horizon) {
            match due {
                Due::Handler(tag) => {
                    self.guarded(handler, "on_timer", |h, cx| h.on_timer(cx, tag));
                    self.tell_closed(handler);
                }
                Due::Conn(id, tag) => {
                    self.fire_conn_timer(handler, id, tag);
                    self.tell_closed(handler);
                }
                Due::Resume(id) => self.end_pause(id),
                Due::Establish(id) => self.establish_expired(id),
            }
        }
    }

    /// A connection's timer is due: `on_conn_timer`, if the connection is
    /// still open for the handler. Like input, a panic costs only it.
    fn fire_conn_timer(&mut self, handler: &mut H, id: ConnId, tag: u64) {
        if !self.live(id).is_some_and(|c| c.is_open() && c.owed_close) {
            return; // gone: its timers went with it
        }
        let outcome = self.with_state(id, |cx, conn| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                handler.on_conn_timer(cx, id, conn, tag)
            }))
        });
        if matches!(outcome, Some(Err(_))) {
            log::error!("{id}: the handler panicked in this connection's timer; closing it");
            self.release(id, CloseReason::HandlerPanicked);
        }
    }

    /// Runs `call` with `id`'s handler state, taken out of its slot for the
    /// call (whose context is the whole loop, slab included) and put back
    /// after: the slot is still there, as slots are freed only after the
    /// batch. `None` if `id` is stale, released, or its state is out.
    fn with_state<R>(
        &mut self,
        id: ConnId,
        call: impl FnOnce(&mut Self, &mut H::Conn) -> R,
    ) -> Option<R> {
        let mut state = live_in(&mut self.conns, id)?.state.take()?;
        let result = call(self, &mut state);
        if let Some(conn) = self.conns.by_id_mut(id) {
            conn.state = Some(state);
        }
        Some(result)
    }

    /// Runs a callback that no connection can pay for (a message, a timer,
    /// the stop, a close). As a panic on one connection's input costs that
    /// connection, a panic here costs this call and nothing more: it is
    /// logged, and the loop goes on serving everyone.
    fn guarded(&mut self, handler: &mut H, what: &str, call: impl FnOnce(&mut H, &mut Self)) {
        if panic::catch_unwind(AssertUnwindSafe(|| call(handler, self))).is_err() {
            log::error!("the handler panicked in {what}; carrying on without that call");
        }
    }

    /// The connection `id` names, unless it is stale or already released.
    fn live(&mut self, id: ConnId) -> Option<&mut Conn<H::Conn>> {
        live_in(&mut self.conns, id)
    }

    fn on_signal(&mut self) {
        let Some(signals) = &self.signals else { return };
        if signals.source().drain() > 0 {
            self.stop.signal(self.now);
        }
    }
}

/// The connection `id` names in `conns`, unless it is stale or released.
fn live_in<S>(conns: &mut Slots<Conn<S>>, id: ConnId) -> Option<&mut Conn<S>> {
    conns.by_id_mut(id).filter(|c| c.phase != Phase::Dead)
}

/// A duration in whole seconds, rounded up, for the coarse tick clock.
fn secs_ceil(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}
