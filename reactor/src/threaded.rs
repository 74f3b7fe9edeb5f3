//! The thread-per-connection driver: the classic server that gives every
//! client its own thread, running the *same* [`Handler`] as the [`Reactor`].
//!
//! ```text
//!   main thread (run): poll(listener, signals, Handle wake-ups;
//!                           timeout = earliest of: timer, linger deadline, sweep, accept pause, stop)
//!        ├─ accept (≤ 64) ─► a place, open or refused ─► spawn its reader thread
//!        ├─ mailbox (≤ 256) ─► on_wake      ├─ due timers set before the round ─► on_timer
//!        ├─ linger deadlines ─► shut down both ways what has not finished closing
//!        ├─ once a second ─► cut off who stayed over soft_output for soft_output_time
//!        └─ stop ─► on_stop, close all; keep going round until all are gone or shutdown_timeout
//!
//!   reader thread (one per client)            writer thread (one per client)
//!     on_open, spawn the writer                 wait for queued output
//!     wait out holds: a pause, or output        take it all ─► blocking writev ─► repeat
//!       over high water until low water         (wakes the reader at low water)
//!     hand back held input ─► on_data           closing and flushed ─► shut down writing
//!     blocking read (16 KiB) ─► on_data
//!     closing ─► discard input until the peer's end (or the linger deadline)
//! ```
//!
//! The handler sits behind one mutex, so callbacks still run one at a time
//! and the handler cannot tell this driver from the reactor. Sends never
//! write: they queue on the recipient's outbox, which its own writer thread
//! drains. So a client that stops reading blocks only its writer, never the
//! thread that sent to it; a send that would take its outbox past
//! `max_output` cuts it off, as on the reactor.
//!
//! The main thread waits in a poller only so that it can watch the listener,
//! the signal pipe and [`Handle`] wake-ups at once; every client's I/O is
//! plain blocking calls on its own threads.
//!
//! Flow control and lifecycle are the reactor's, with these differences,
//! all because a thread blocked in `read` can only be woken by data, an
//! error, or its socket being shut down:
//!
//! - **Holds take effect between reads.** A reader checks its holds (a
//!   pause, output over `high_water`) before each read, not while blocked in
//!   one: when another connection's callback pushes this one over high
//!   water, or pauses it, the read in progress still completes, and its
//!   bytes are kept (unseen by the handler) until the hold ends. For the
//!   same reason, a hold set while the reader is blocked hands the input
//!   left from before back only when the read returns.
//! - **Linger deadlines are kept by the main thread.** A socket's receive
//!   timeout set while a thread is already blocked in `recv` does not apply
//!   to that call, so a closing connection's threads are bounded from
//!   outside: the main thread keeps the closing connections' deadlines (a
//!   FIFO, like the reactor's) and shuts the socket down both ways when one
//!   passes, which wakes both threads.
//! - **Idle timeouts are the socket's receive timeout**, set before the
//!   first read; a connection whose input is held is not reading, so it is
//!   not timed out meanwhile.
//! - **`Context::now` is the wall clock.** Callbacks run on many threads, at
//!   any time, not in batches that share one start time.
//!
//! As on the reactor, a panic in `on_timer`, `on_wake` or `on_stop` is
//! caught and logged: it costs that call. Here it matters twice: unwinding
//! out of the main thread would leave the thread scope waiting, forever,
//! for client threads blocked in `read`, and the server deaf to signals.
//!
//! [`Reactor`]: crate::Reactor

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, LockResult, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use polling::{Events, Poller};
use slab::Slab;

use crate::handle::{Command, Handle};
use crate::output::Output;
use crate::signals::SignalPipe;
use crate::sys::{self, Interest, Key, Registered};
use crate::timers::{deadline, Timers};
use crate::{
    CloseReason, Config, ConnId, Connect, Context, Endpoint, Error, Handler, ListenerId, Origin,
    TimerId,
};

/// Client threads need little stack: they block in `read` and `writev`.
const STACK_SIZE: usize = 256 * 1024;
/// Bytes read at once: `Config::max_read`'s default. A blocking reader
/// cannot bound one turn's work (there are no turns), so it is fixed.
const READ_BUFFER: usize = 16 * 1024;
/// Messages taken from the mailbox per round, at most, as on the reactor: a
/// handler that posts to itself from `on_wake` must not keep the main
/// thread from its timers, signals and accepts.
const MAILBOX_BATCH: usize = 256;
/// Connections accepted per wake-up, so that timers and signals are seen
/// during a storm of new connections.
const ACCEPT_BATCH: usize = 64;
/// How long to stop accepting after running out of file descriptors (see
/// the reactor's).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often the main thread looks for connections too long over the soft
/// output limit.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// `EMFILE`/`ENFILE`: out of descriptors.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A listening socket, its policy, and whether accepting is paused.
struct Listener {
    io: Registered<TcpListener>,
    endpoint: Endpoint,
    paused_until: Option<Instant>,
}

/// A thread-per-connection server for one [`Handler`].
pub struct Threaded<M> {
    poller: Arc<Poller>,
    /// Every listener, by `ListenerId`; all dropped when a stop begins.
    listeners: Vec<Listener>,
    signals: Option<Registered<SignalPipe>>,
    config: Config,
    mailbox: Receiver<Command<M>>,
    mailbox_tx: Sender<Command<M>>,
    /// The last round stopped taking messages at `MAILBOX_BATCH`: more wait.
    mailbox_more: bool,
    next_sweep: Instant,
    /// Set once a graceful stop has begun: the time by which it must end.
    stop_deadline: Option<Instant>,
    /// Whether the operator has been told what the stop is waiting for.
    stop_explained: bool,
}

impl<M: Send + 'static> Threaded<M> {
    /// A server with no listener yet; set up like a [`Reactor`](crate::Reactor).
    /// `max_connections` and `max_closing` are lowered if the system could
    /// not give that many clients their threads (a tenth of `vm.max_map_count`),
    /// and `max_closing` to an eighth of that.
    pub fn new(mut config: Config) -> Result<Threaded<M>, Error> {
        if let Some(capacity) = thread_capacity() {
            if config.max_connections > capacity {
                log::warn!(
                    "serving at most {capacity} clients: vm.max_map_count allows no more threads"
                );
                config.max_connections = capacity;
            }
            // Closing connections keep their threads until they are gone;
            // the tenth above leaves room for an eighth as many more.
            config.max_closing = config.max_closing.min(capacity / 8);
        }
        let poller = Arc::new(Poller::new().map_err(Error::Poller)?);
        let (mailbox_tx, mailbox) = mpsc::channel();
        Ok(Threaded {
            poller,
            listeners: Vec::new(),
            signals: None,
            config,
            mailbox,
            mailbox_tx,
            mailbox_more: false,
            next_sweep: Instant::now(),
            stop_deadline: None,
            stop_explained: false,
        })
    }

    /// Accepts plain TCP clients from `listener`, beside any other listeners.
    pub fn listen(&mut self, listener: TcpListener) -> Result<ListenerId, Error> {
        self.listen_on(listener, Endpoint::plain())
    }

    /// Accepts clients from `listener`, served as `endpoint` says.
    pub fn listen_on(
        &mut self,
        listener: TcpListener,
        endpoint: Endpoint,
    ) -> Result<ListenerId, Error> {
        if endpoint.tls.is_some() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS is not yet served by the threaded driver",
            )));
        }
        let index = self.listeners.len();
        self.listeners.push(Listener {
            io: sys::watch_listener(&self.poller, listener, index)?,
            endpoint,
            paused_until: None,
        });
        Ok(ListenerId(index as u32))
    }

    /// The address `listener` is bound to, until the server stops.
    pub fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        let listener = self.listeners.get(listener.index())?;
        listener.io.source().local_addr().ok()
    }

    /// Stops gracefully on SIGINT, SIGTERM or SIGHUP, as the reactor does.
    pub fn stop_on_signals(&mut self) -> Result<(), Error> {
        self.signals = Some(sys::watch_signals(&self.poller)?);
        Ok(())
    }

    /// A handle for other threads to post messages or stop the server.
    pub fn handle(&self) -> Handle<M> {
        Handle::new(self.mailbox_tx.clone(), &self.poller)
    }

    /// Serves until stopped, then waits (up to `shutdown_timeout`) for every
    /// client to be flushed and closed. All client threads have ended when
    /// this returns.
    pub fn run<H>(&mut self, handler: &mut H) -> Result<(), Error>
    where
        H: Handler<Message = M> + Send,
    {
        let places = Arc::new(Mutex::new(Places::new(&self.config, &self.poller)));
        let shared = Shared {
            state: Mutex::new(State {
                handler,
                core: Core {
                    peers: Slab::new(),
                    next_gen: 1,
                    timers: Timers::default(),
                    closing: Vec::new(),
                    stop_requested: false,
                    config: self.config.clone(),
                    poller: Arc::clone(&self.poller),
                    places: Arc::clone(&places),
                },
            }),
            places,
        };
        self.next_sweep = deadline(Instant::now(), SWEEP_EVERY);
        thread::scope(|scope| {
            let mut events = Events::new();
            while !self.round(scope, &shared, &mut events)? {}
            Ok(())
        })
    }

    /// One round of the main thread: wait, then everything that is due.
    /// Returns whether the server is done. As on the reactor, what a
    /// callback starts for the main thread itself (a timer with no delay, a
    /// message posted to itself) waits for the next round.
    fn round<'scope, H>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
        events: &mut Events,
    ) -> Result<bool, Error>
    where
        H: Handler<Message = M> + Send,
    {
        events.clear();
        self.poller.wait(events, self.timeout(shared))?;
        let now = Instant::now();
        for event in events.iter() {
            match Key::of(event.key) {
                Key::Listener(index) => self.accept(scope, shared, index, now),
                Key::Signals => self.on_signal(shared, now),
                Key::Conn(_) => {}
            }
        }
        self.take_mail(shared);
        fire_timers(shared, now);
        self.resume_accepting(now);
        shared.places().expire(now);
        if now >= self.next_sweep {
            self.sweep(shared, now);
        }
        if shared.lock().core.stop_requested && self.stop_deadline.is_none() {
            self.begin_stop(shared, now);
        }
        Ok(self.stopped(shared, now))
    }

    /// How long the next wait may sleep: until the earliest thing that must
    /// happen without an event.
    fn timeout<H: Handler>(&self, shared: &Shared<'_, H>) -> Option<Duration> {
        let (next_timer, stop_requested) = {
            let state = shared.lock();
            (state.core.timers.next_deadline(), state.core.stop_requested)
        };
        if self.mailbox_more || (stop_requested && self.stop_deadline.is_none()) {
            return Some(Duration::ZERO);
        }
        let (linger, sweep) = {
            let places = shared.places();
            let sweep = (places.open > 0).then_some(self.next_sweep);
            (places.next_deadline(), sweep)
        };
        let paused = self.listeners.iter().filter_map(|l| l.paused_until).min();
        [next_timer, linger, sweep, paused, self.stop_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn on_signal<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) {
        let signalled = self.signals.as_ref().map_or(0, |s| s.source().drain());
        if signalled == 0 {
            return;
        }
        if self.stop_deadline.is_some() {
            log::info!("second signal: stopping now");
            self.stop_deadline = Some(now);
        } else {
            log::info!("signal received: stopping");
            shared.lock().core.stop_requested = true;
        }
    }

    /// Messages posted from other threads, at most `MAILBOX_BATCH` a round.
    /// The handler's lock is taken per message, so that client threads get
    /// their turn between them.
    fn take_mail<H: Handler<Message = M>>(&mut self, shared: &Shared<'_, H>) {
        self.mailbox_more = false;
        for _ in 0..MAILBOX_BATCH {
            let Ok(cmd) = self.mailbox.try_recv() else {
                return;
            };
            let mut state = shared.lock();
            match cmd {
                Command::Message(msg) => state.call_guarded("on_wake", |h, cx| h.on_wake(cx, msg)),
                Command::Stop => state.core.stop_requested = true,
                Command::Attach(_) => {
                    log::warn!("the threaded driver cannot yet serve a stream handed over");
                }
            }
        }
        self.mailbox_more = true;
    }

    fn resume_accepting(&mut self, now: Instant) {
        for listener in &mut self.listeners {
            if listener.paused_until.is_some_and(|t| now >= t)
                && listener.io.set_interest(Interest::READ).is_ok()
            {
                listener.paused_until = None;
            }
        }
    }

    /// Once a second: connections over `soft_output` for longer than
    /// `soft_output_time` are cut off.
    fn sweep<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) {
        self.next_sweep = deadline(now, SWEEP_EVERY);
        let soft_time = self.config.soft_output_time;
        let mut state = shared.lock();
        let slow: Vec<ConnId> = state
            .core
            .peers
            .iter()
            .filter(|(_, peer)| {
                let q = peer.outbox.lock();
                q.soft_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= soft_time)
            })
            .map(|(slot, peer)| ConnId::new(slot, peer.gen))
            .collect();
        for id in slow {
            state.core.cut_off(id);
        }
        state.tell_closed();
    }

    /// Begins a graceful stop: no more accepting, a last word from the
    /// handler, then every connection flushed and closed.
    fn begin_stop<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) {
        self.stop_deadline = Some(deadline(now, self.config.shutdown_timeout));
        self.listeners.clear();
        // Before the closes: a graceful stop lingers whoever is closing.
        shared.places().stopping = true;
        let mut state = shared.lock();
        state.call_guarded("on_stop", |h, cx| h.on_stop(cx));
        for id in state.core.ids() {
            state.core.begin_close(id, CloseReason::Shutdown);
        }
        state.tell_closed();
    }

    /// Whether a graceful stop has ended: every client thread gone, or the
    /// deadline passed (then whoever is left is cut off, and the thread
    /// scope joins them). The first round of a stop that still waits says
    /// what for, as the reactor does.
    fn stopped<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) -> bool {
        let Some(deadline) = self.stop_deadline else {
            return false;
        };
        let left = shared.places().places.len();
        if left == 0 {
            return true;
        }
        if now >= deadline {
            shared.cut_off_all();
            return true;
        }
        if !self.stop_explained {
            self.stop_explained = true;
            self.config.explain_stop(left);
        }
        false
    }

    fn accept<'scope, H>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
        index: usize,
        now: Instant,
    ) where
        H: Handler<Message = M> + Send,
    {
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listeners.get_mut(index) else {
                return;
            };
            let stream = match listener.io.source().accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => {
                    // The level-triggered listener stays readable while
                    // accept fails: stop watching it for a while rather
                    // than spin (or sleep, which would stop the timers).
                    log::warn!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    if listener.io.set_interest(Interest::NONE).is_ok() {
                        listener.paused_until = Some(deadline(now, ACCEPT_PAUSE));
                    }
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like: that one connection is gone.
                    log::debug!("accept: {e}");
                    continue;
                }
            };
            // Client threads do blocking I/O.
            if stream.set_nonblocking(false).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.admit(scope, shared, ListenerId(index as u32), stream);
        }
    }

    /// Gives a new connection a place, open or — over `max_connections` —
    /// refused (closing from the start, so it takes no client's place), and
    /// its thread. Once half of `max_closing` are closing, a refusal is
    /// dropped without a word, as on the reactor.
    fn admit<'scope, H>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
        from: ListenerId,
        stream: TcpStream,
    ) where
        H: Handler<Message = M> + Send,
    {
        let config = &self.config;
        let stream = Arc::new(stream);
        let mut places = shared.places();
        let limit = self.listeners[from.index()].endpoint.max_connections;
        let refused = places.open >= config.max_connections || places.open_from(from) >= limit;
        if refused && places.closing >= config.max_closing / 2 {
            return;
        }
        let key = places.insert(Arc::clone(&stream), from);
        if refused {
            places.start_closing(key);
        }
        drop(places);
        let spawned = spawn(scope, move || {
            // However the thread ends, its place is given back.
            let _done = ThreadDone { shared, key };
            if refused {
                // Asked here, not on the accepting thread: see `serve_client`.
                let refusal = shared.lock().handler.refusal(from);
                if let Some(text) = refusal {
                    let _ = (&*stream).write_all(&text);
                }
                linger(&stream);
            } else {
                serve_client(scope, shared, key, from, stream);
            }
        });
        if !spawned {
            shared.places().remove(key);
        }
    }
}

/// Calls `on_timer` for the timers due at `now` that were set before this
/// round (ae.c's `maxId` guard, as on the reactor), taking the handler's
/// lock per timer so that client threads get their turn between them.
fn fire_timers<H: Handler>(shared: &Shared<'_, H>, now: Instant) {
    let horizon = shared.lock().core.timers.horizon();
    loop {
        let mut state = shared.lock();
        let Some(tag) = state.core.timers.pop_due(now, horizon) else {
            return;
        };
        state.call_guarded("on_timer", |h, cx| h.on_timer(cx, tag));
    }
}

/// Gives a client thread's place back when dropped: at the end of the
/// thread, or as a panic unwinds it, so a handler bug cannot leak a place
/// under `max_connections` or leave a graceful stop waiting.
struct ThreadDone<'a, 'h, H: Handler> {
    shared: &'a Shared<'h, H>,
    key: usize,
}

impl<H: Handler> Drop for ThreadDone<'_, '_, H> {
    fn drop(&mut self) {
        self.shared.places().remove(self.key);
    }
}

/// A client's own thread, from its `on_open` to its end: it joins the
/// handler's table, starts its writer and reads until the connection is over.
///
/// Joining takes the handler's lock, so it happens here and not on the
/// accepting thread: were each accept to wait for a handler busy under that
/// lock (a broadcast to thousands), the kernel's listen queue would overflow
/// and new clients be reset.
fn serve_client<'scope, H>(
    scope: &'scope Scope<'scope, '_>,
    shared: &'scope Shared<'_, H>,
    key: usize,
    from: ListenerId,
    stream: Arc<TcpStream>,
) where
    H: Handler + Send,
{
    let outbox = Arc::new(Outbox::default());
    let (id, config) = {
        let mut state = shared.lock();
        if state.core.stop_requested {
            // Accepted as the server stops: closed unserved, but gently, so
            // that unread input (a `Hi` already sent) does not reset it.
            drop(state);
            if shared.places().start_closing(key) {
                linger(&stream);
            }
            return;
        }
        let id = state
            .core
            .insert(key, from, Arc::clone(&stream), Arc::clone(&outbox));
        // As with `on_data`: a panic here costs this client only.
        let call = || state.call(|h, cx| h.on_open(cx, id));
        if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
            log::error!("{id}: the handler panicked opening this connection; closing it");
            state.release(id, CloseReason::HandlerPanicked);
            return;
        }
        (id, state.core.config.clone())
    };
    let writer_stream = Arc::clone(&stream);
    let writer_outbox = Arc::clone(&outbox);
    let writer_config = config.clone();
    let writer = thread::Builder::new()
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, move || {
            write_loop(&writer_stream, &writer_outbox, &writer_config)
        });
    match writer {
        Ok(writer) => {
            read_loop(shared, id, &stream, &outbox, &config);
            let _ = writer.join();
        }
        Err(e) => {
            log::warn!("cannot start a writer thread: {e}");
            shared.lock().release(id, CloseReason::Error(e.kind()));
        }
    }
}

/// How many clients this driver can give threads to, if the system says.
///
/// Every thread's stack is memory mappings of its own (the stack and its
/// guard page), and a process may have at most `vm.max_map_count` of them
/// (65,530 by default). Past that, starting a thread does not fail cleanly:
/// the runtime aborts the whole process while setting up the new thread's
/// guard page. Two threads per client at about four mappings each is eight
/// (measured: the abort came at about 8,190 clients of 65,530 mappings);
/// one client per ten mappings leaves room for the rest of the process.
fn thread_capacity() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    Some(text.trim().parse::<usize>().ok()? / 10)
}

/// The guard (or wait result) even from a poisoned lock. A handler that
/// panicked while one client's thread held a lock must not take the whole
/// server down with it; the panic itself is dealt with where it happened.
fn recover<T>(result: LockResult<T>) -> T {
    result.unwrap_or_else(PoisonError::into_inner)
}

/// Starts a client thread; `false` if the system would not.
fn spawn<'scope>(scope: &'scope Scope<'scope, '_>, f: impl FnOnce() + Send + 'scope) -> bool {
    match thread::Builder::new()
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, f)
    {
        Ok(_) => true,
        Err(e) => {
            log::warn!("cannot start a client thread: {e}");
            false
        }
    }
}

/// Everything the threads share. Lock order: `state`, then `places`, then
/// an outbox; never the other way round.
struct Shared<'h, H: Handler> {
    state: Mutex<State<'h, H>>,
    places: Arc<Mutex<Places>>,
}

impl<'h, H: Handler> Shared<'h, H> {
    fn lock(&self) -> MutexGuard<'_, State<'h, H>> {
        recover(self.state.lock())
    }

    fn places(&self) -> MutexGuard<'_, Places> {
        recover(self.places.lock())
    }

    /// The stop deadline passed: everyone is ended now, those already
    /// closing too, so that every client thread wakes and ends.
    fn cut_off_all(&self) {
        let mut state = self.lock();
        for id in state.core.ids() {
            state.release(id, CloseReason::Shutdown);
        }
        drop(state);
        for (_, place) in &self.places().places {
            let _ = place.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The places of the client threads still running, kept apart from the
/// handler's lock so that accepting never waits for a callback.
///
/// A connection counts against `max_connections` while open, and against
/// `max_closing` from the moment it starts closing (refusals from the
/// start) until its thread ends. Closing connections must be gone by
/// `linger_timeout` after they began: `linger` holds their deadlines in the
/// order they began closing, which, since they all wait the same time, is
/// also the order of the deadlines (the reactor's `linger_deadlines`).
struct Places {
    places: Slab<Place>,
    open: usize,
    closing: usize,
    /// (key, serial, deadline) of each closing connection; entries of
    /// places gone since are skipped.
    linger: VecDeque<(usize, u64, Instant)>,
    next_serial: u64,
    /// A graceful stop has begun: closing connections are not crowded out.
    stopping: bool,
    linger_timeout: Duration,
    max_closing: usize,
    /// To wake the main thread for a deadline earlier than it sleeps until,
    /// or for the last thread of a stop.
    poller: Arc<Poller>,
}

/// One client thread's place.
struct Place {
    stream: Arc<TcpStream>,
    from: ListenerId,
    /// Tells this place from a later one in the same slot.
    serial: u64,
    closing: bool,
}

impl Places {
    fn new(config: &Config, poller: &Arc<Poller>) -> Places {
        Places {
            places: Slab::new(),
            open: 0,
            closing: 0,
            linger: VecDeque::new(),
            next_serial: 0,
            stopping: false,
            linger_timeout: config.linger_timeout,
            max_closing: config.max_closing,
            poller: Arc::clone(poller),
        }
    }

    /// A place for a new, open connection from `from`.
    fn insert(&mut self, stream: Arc<TcpStream>, from: ListenerId) -> usize {
        self.next_serial += 1;
        self.open += 1;
        self.places.insert(Place {
            stream,
            from,
            serial: self.next_serial,
            closing: false,
        })
    }

    /// `key` starts closing: it stops counting as open and must be gone by
    /// `linger_timeout` from now. Returns `false` if `max_closing`
    /// connections were closing already (and no graceful stop is under
    /// way): the caller is to close it at once instead, without lingering.
    fn start_closing(&mut self, key: usize) -> bool {
        let Some(place) = self.places.get_mut(key) else {
            return false;
        };
        if place.closing {
            return true;
        }
        let crowded = self.closing >= self.max_closing && !self.stopping;
        place.closing = true;
        self.open -= 1;
        self.closing += 1;
        if crowded {
            return false;
        }
        if self.linger.is_empty() {
            // The main thread may be asleep with no deadline to wait for.
            let _ = self.poller.notify();
        }
        let at = deadline(Instant::now(), self.linger_timeout);
        self.linger.push_back((key, place.serial, at));
        true
    }

    /// Open connections from `listener`.
    fn open_from(&self, listener: ListenerId) -> usize {
        self.places
            .iter()
            .filter(|(_, p)| p.from == listener && !p.closing)
            .count()
    }

    /// The next linger deadline (perhaps of a place gone since).
    fn next_deadline(&self) -> Option<Instant> {
        self.linger.front().map(|&(_, _, at)| at)
    }

    /// Shuts down both ways the sockets of closing connections whose
    /// deadline has passed: their reader (blocked in `read`) and writer
    /// (blocked in `writev` to a peer that does not read) wake and end.
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, serial, at)) = self.linger.front() {
            if at > now {
                return;
            }
            self.linger.pop_front();
            if let Some(place) = self.places.get(key).filter(|p| p.serial == serial) {
                log::debug!("a connection did not finish closing in time: cut off");
                let _ = place.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// A client thread has ended.
    fn remove(&mut self, key: usize) {
        let place = self.places.remove(key);
        if place.closing {
            self.closing -= 1;
        } else {
            self.open -= 1;
        }
        if self.stopping && self.places.is_empty() {
            // The main thread waits for this in its stop.
            let _ = self.poller.notify();
        }
    }
}

/// The handler and the driver's side of its context, behind one lock.
struct State<'h, H> {
    handler: &'h mut H,
    core: Core,
}

impl<H: Handler> State<'_, H> {
    /// Runs a callback, then tells the handler of closes it caused.
    fn call(&mut self, f: impl FnOnce(&mut H, &mut Core)) {
        f(self.handler, &mut self.core);
        self.tell_closed();
    }

    /// Runs a callback of the main thread's (`on_timer`, `on_wake`,
    /// `on_stop`): a panic in it costs that callback only. Unwinding out of
    /// the main thread would leave the thread scope waiting for client
    /// threads blocked in `read`, forever, and the server deaf to signals.
    fn call_guarded(&mut self, what: &str, f: impl FnOnce(&mut H, &mut Core)) {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(self.handler, &mut self.core)));
        if outcome.is_err() {
            log::error!("the handler panicked in {what}; carrying on without that call");
        }
        self.tell_closed();
    }

    /// Tells the handler of the closes the last callback caused. A panic in
    /// `on_close` costs that call, as on the reactor: the connection is
    /// gone already, and unwinding here would take down whichever thread
    /// holds the lock — the main one included, which would then hang.
    fn tell_closed(&mut self) {
        while let Some((id, reason)) = self.core.closing.pop() {
            log::debug!("{id}: closed ({reason})");
            let (handler, core) = (&mut *self.handler, &mut self.core);
            let call = || handler.on_close(core, id, reason);
            if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
                log::error!("the handler panicked in on_close; carrying on without that call");
            }
        }
    }

    /// Closes `id` gracefully and tells the handler.
    fn close(&mut self, id: ConnId, reason: CloseReason) {
        self.core.begin_close(id, reason);
        self.tell_closed();
    }

    /// Ends `id` at once and tells the handler.
    fn release(&mut self, id: ConnId, reason: CloseReason) {
        self.core.abort(id, reason);
        self.tell_closed();
    }
}

/// A client as the handler sees it: open until removed from the slab.
struct Peer {
    gen: u32,
    from: ListenerId,
    /// Its place in `Places`.
    key: usize,
    stream: Arc<TcpStream>,
    outbox: Arc<Outbox>,
}

/// The driver's side of the context.
struct Core {
    peers: Slab<Peer>,
    next_gen: u32,
    timers: Timers,
    /// Connections that began closing in the current callback.
    closing: Vec<(ConnId, CloseReason)>,
    stop_requested: bool,
    config: Config,
    poller: Arc<Poller>,
    places: Arc<Mutex<Places>>,
}

impl Core {
    fn insert(
        &mut self,
        key: usize,
        from: ListenerId,
        stream: Arc<TcpStream>,
        outbox: Arc<Outbox>,
    ) -> ConnId {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
        let slot = self.peers.insert(Peer {
            gen,
            from,
            key,
            stream,
            outbox,
        });
        ConnId::new(slot, gen)
    }

    fn get(&self, id: ConnId) -> Option<&Peer> {
        self.peers.get(id.slot()).filter(|p| p.gen == id.gen())
    }

    fn remove(&mut self, id: ConnId) -> Option<Peer> {
        self.get(id)?;
        Some(self.peers.remove(id.slot()))
    }

    fn ids(&self) -> Vec<ConnId> {
        self.peers
            .iter()
            .map(|(slot, p)| ConnId::new(slot, p.gen))
            .collect()
    }

    /// Ends `id` at once: nothing more is written, and shutting the socket
    /// down both ways wakes its reader and writer threads.
    fn abort(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(peer) = self.remove(id) {
            // Counted as closing until its threads end, which the shutdown
            // below makes prompt.
            recover(self.places.lock()).start_closing(peer.key);
            end_now(&peer);
            self.closing.push((id, reason));
        }
    }

    /// Closes `id` gracefully: its writer flushes and shuts down writing,
    /// its reader discards input until the peer finishes (lingering close),
    /// all by the linger deadline. Past `max_closing` it is ended at once.
    fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        let Some(peer) = self.remove(id) else {
            return;
        };
        let mut places = recover(self.places.lock());
        if places.start_closing(peer.key) {
            peer.outbox.finish();
        } else {
            log::debug!(
                "{id}: closed at once: {} connections are closing",
                places.closing
            );
            end_now(&peer);
        }
        self.closing.push((id, reason));
    }

    /// Cuts `id` off for not reading: what it is owed is dropped at once,
    /// then it closes like any other, as on the reactor.
    fn cut_off(&mut self, id: ConnId) {
        if let Some(peer) = self.get(id) {
            let mut q = peer.outbox.lock();
            log::debug!("{id}: output limit ({} bytes queued)", q.cost());
            q.out.clear();
            q.discard = true;
        }
        self.begin_close(id, CloseReason::OutputLimit);
    }
}

/// Ends a connection's threads now: the writer stops, and shutting the
/// socket down both ways wakes whichever is blocked in I/O.
fn end_now(peer: &Peer) {
    peer.outbox.abort();
    let _ = peer.stream.shutdown(Shutdown::Both);
}

impl Context for Core {
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Checks the limits at the moment of the send, as the reactor does:
    /// no outbox grows past `max_output` plus one message.
    fn send(&mut self, to: ConnId, data: Bytes) -> bool {
        let Some(peer) = self.get(to) else {
            return false;
        };
        if data.is_empty() {
            return true;
        }
        let mut q = peer.outbox.lock();
        if q.cost().saturating_add(data.len()) > self.config.max_output {
            drop(q);
            self.cut_off(to);
            return false;
        }
        q.out.push(&data);
        let cost = q.cost();
        if cost > self.config.high_water {
            // Set here, not when the reader looks: the writer may have
            // drained the queue by then, and the input the handler left
            // for being backlogged must still be handed back.
            q.held_for_output = true;
        }
        if q.soft_since.is_none() && cost > self.config.soft_output {
            q.soft_since = Some(Instant::now());
        }
        if q.writer_idle {
            peer.outbox.to_writer.notify_one();
        }
        true
    }

    fn backlogged(&self, id: ConnId) -> bool {
        // The hold itself, as on the reactor: a handler that stops for it
        // is then sure to be handed its input back.
        self.get(id).is_none_or(|p| p.outbox.lock().held_for_output)
    }

    fn pause_input(&mut self, id: ConnId, duration: Duration) {
        let Some(peer) = self.get(id) else {
            return;
        };
        peer.outbox.lock().paused_until = Some(deadline(Instant::now(), duration));
        // A reader waiting out an earlier pause waits for this one instead.
        peer.outbox.to_reader.notify_all();
    }

    fn close(&mut self, to: ConnId) {
        self.begin_close(to, CloseReason::Requested);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        let at = deadline(Instant::now(), after);
        if self.timers.next_deadline().is_none_or(|next| at < next) {
            // The main thread may be asleep until a later deadline.
            let _ = self.poller.notify();
        }
        self.timers.insert(at, tag)
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.cancel(timer);
    }

    fn stop(&mut self) {
        self.stop_requested = true;
        let _ = self.poller.notify();
    }

    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.get(id)?.stream.peer_addr().ok()
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        Some(Origin::Accepted(self.get(id)?.from))
    }

    fn connect(&mut self, _to: Connect) -> io::Result<ConnId> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the threaded driver cannot yet connect out",
        ))
    }
}

/// One client's output queue and the holds on its input, shared by whoever
/// sends, its writer thread and its reader thread.
#[derive(Default)]
struct Outbox {
    queue: Mutex<OutQueue>,
    /// Output queued, or the connection closing: for the writer.
    to_writer: Condvar,
    /// A hold on input changed or ended, the connection is closing, or the
    /// writer has ended: for the reader.
    to_reader: Condvar,
}

#[derive(Default)]
struct OutQueue {
    out: Output,
    /// Bytes the writer has taken from `out` and not yet written.
    in_flight: usize,
    /// The writer waits for output: a send must wake it.
    writer_idle: bool,
    /// A send took output past `high_water`, and the reader has not yet
    /// seen it drained to `low_water`: the reader waits, and the writer
    /// wakes it at low water.
    held_for_output: bool,
    /// Set by `Context::pause_input`: input is not read nor handed to the
    /// handler before then.
    paused_until: Option<Instant>,
    /// Since when output has been over `soft_output`.
    soft_since: Option<Instant>,
    /// Cut off: the writer drops what it has in flight.
    discard: bool,
    /// Flush what is queued, then shut down writing.
    finishing: bool,
    /// Stop at once.
    aborted: bool,
    /// The writer thread has ended.
    done: bool,
}

impl OutQueue {
    /// What is owed: the queue's cost, and what the writer has taken from
    /// it and not yet written.
    fn cost(&self) -> usize {
        self.out.cost() + self.in_flight
    }

    fn closing(&self) -> bool {
        self.finishing || self.aborted
    }
}

/// What a reader found when it waited out the holds on its input.
enum Holds {
    /// None held it: read on.
    None,
    /// A hold ended: hand the input left back to the handler. `paused`:
    /// one of the holds was a pause, during which nothing was written to the
    /// peer either, so only a look at the socket can tell it is still there.
    Ended { paused: bool },
    /// The connection is closing: read no more for the handler.
    Closing,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutQueue> {
        recover(self.queue.lock())
    }

    fn finish(&self) {
        self.lock().finishing = true;
        self.to_writer.notify_one();
        self.to_reader.notify_all();
    }

    fn abort(&self) {
        self.lock().aborted = true;
        self.to_writer.notify_one();
        self.to_reader.notify_all();
    }

    /// Waits while the connection's input is held: paused, or its output
    /// over `high_water` until it has drained to `low_water`.
    fn wait_out_holds(&self, config: &Config) -> Holds {
        let mut q = self.lock();
        let (mut held, mut paused) = (false, false);
        loop {
            if q.closing() {
                return Holds::Closing;
            }
            if let Some(until) = q.paused_until {
                let left = until.saturating_duration_since(Instant::now());
                held = true;
                paused = true;
                if left.is_zero() {
                    q.paused_until = None;
                } else {
                    // With a timeout, so a pause replaced or a close wakes it.
                    q = recover(self.to_reader.wait_timeout(q, left)).0;
                }
                continue;
            }
            if q.held_for_output {
                held = true;
                // Unless the writer has ended: then the next read reports why.
                if q.cost() > config.low_water() && !q.done {
                    q = recover(self.to_reader.wait(q));
                    continue;
                }
                q.held_for_output = false;
            }
            return if held {
                Holds::Ended { paused }
            } else {
                Holds::None
            };
        }
    }

    /// Whether input left now would be the handler waiting for a hold to
    /// end, not the peer overrunning `max_input`.
    fn input_held(&self) -> bool {
        let q = self.lock();
        q.paused_until.is_some() || q.held_for_output
    }

    /// Waits until the writer thread has ended. It does, by the linger
    /// deadline at the latest: the main thread then shuts the socket down.
    fn wait_done(&self) {
        let mut q = self.lock();
        while !q.done {
            q = recover(self.to_reader.wait(q));
        }
    }
}

/// The writer thread: takes whatever is queued and writes it, several
/// pieces per `writev`, until the connection is closed and flushed.
fn write_loop(stream: &TcpStream, outbox: &Outbox, config: &Config) {
    let mut q = outbox.lock();
    'outer: loop {
        while q.out.is_empty() && !q.closing() {
            q.writer_idle = true;
            q = recover(outbox.to_writer.wait(q));
        }
        q.writer_idle = false;
        if q.aborted {
            break;
        }
        if q.out.is_empty() {
            // Finishing and flushed: tell the peer we are done.
            let _ = stream.shutdown(Shutdown::Write);
            break;
        }
        // Taken, not swapped: the queue left behind costs nothing until
        // the next send.
        let mut batch = mem::take(&mut q.out);
        q.in_flight = batch.len();
        drop(q);
        loop {
            let result = batch.write_with(|slices| (&*stream).write_vectored(slices));
            q = outbox.lock();
            if !matches!(result, Ok(n) if n > 0) {
                // Broken: the reader sees it too and reports it.
                q.in_flight = 0;
                break 'outer;
            }
            if q.discard || q.aborted {
                q.discard = false;
                batch.clear();
            }
            q.in_flight = batch.len();
            let cost = q.cost();
            if cost <= config.soft_output {
                q.soft_since = None;
            }
            if q.held_for_output && cost <= config.low_water() {
                outbox.to_reader.notify_all();
            }
            if batch.is_empty() {
                break;
            }
            drop(q);
        }
    }
    q.done = true;
    drop(q);
    outbox.to_reader.notify_all();
}

/// The reader thread: waits out holds, reads, hands the handler what
/// arrived (or what it left, once a hold ends), and reports the end of the
/// connection. Once the connection is closing it only discards input until
/// the peer finishes (or the linger deadline).
fn read_loop<H: Handler>(
    shared: &Shared<'_, H>,
    id: ConnId,
    stream: &TcpStream,
    outbox: &Outbox,
    config: &Config,
) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut input = BytesMut::new();
    // Whether `input` holds bytes the handler has not been handed since
    // they arrived, or since a hold on them ended.
    let mut unseen = false;
    // Set once the peer's end of stream is read while the handler still
    // held input back: the time by which it must have taken the rest.
    let mut finish_by: Option<Instant> = None;
    let _ = stream.set_read_timeout(config.idle_timeout);
    let lingering = loop {
        match outbox.wait_out_holds(config) {
            Holds::Closing => break true,
            Holds::Ended { paused: true } if finish_by.is_none() => {
                // Nothing was read or written during the pause: look,
                // without waiting, whether the peer finished or went
                // meanwhile (see `peek_after_hold`), before handing back
                // what was held. (After a hold for output, the peer was
                // reading: a peer that went makes the writer fail.)
                let room = config.max_input.saturating_sub(input.len());
                match peek_after_hold(stream, &mut buf, room, config) {
                    Peeked::Nothing => {}
                    Peeked::Bytes(n) => input.extend_from_slice(&buf[..n]),
                    Peeked::End => {
                        finish_by = Some(deadline(Instant::now(), config.linger_timeout))
                    }
                    Peeked::Broken(e) => {
                        shared.lock().release(id, CloseReason::from_error(&e));
                        break false;
                    }
                }
                unseen = true;
            }
            Holds::Ended { .. } => unseen = true,
            Holds::None => {}
        }
        if let Some(by) = finish_by {
            // The peer has finished: hand back what it sent, as the holds
            // allow, until it is all taken, the handler leaves the rest
            // without holding it (a partial line: no more is coming), or
            // the time is up.
            if input.is_empty() || !unseen || Instant::now() >= by {
                shared.lock().close(id, CloseReason::PeerClosed);
                break false;
            }
        }
        if unseen && !input.is_empty() {
            unseen = false;
            if !deliver(shared, id, &mut input, outbox, config) {
                break true;
            }
            continue;
        }
        if finish_by.is_some() {
            // Held again: wait for the hold; there is nothing to read.
            continue;
        }
        let n = match (&*stream).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if timed_out(&e) => {
                shared.lock().close(id, CloseReason::Idle);
                break true;
            }
            Err(e) => {
                shared.lock().release(id, CloseReason::from_error(&e));
                break false;
            }
        };
        if n == 0 {
            // The peer may have only half-closed: it still gets what it is owed.
            shared.lock().close(id, CloseReason::PeerClosed);
            break false;
        }
        input.extend_from_slice(&buf[..n]);
        unseen = true;
    };
    if lingering {
        let _ = stream.set_read_timeout(None);
        discard_input(stream);
    }
    // Let the writer flush what is owed (a half-closed peer still reads),
    // until the linger deadline at most.
    outbox.wait_done();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Whether a blocking read ended for its receive timeout: Linux reports it
/// as `WouldBlock` (`EAGAIN`), other systems as `TimedOut`.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What a look at the socket after a hold found.
enum Peeked {
    Nothing,
    Bytes(usize),
    End,
    Broken(io::Error),
}

/// Reads once, waiting at most a moment, after a hold on the connection's
/// input ended. While held, the reader did not read, so it cannot have seen
/// the peer finish or reset: a flooder paused again by every line it is
/// handed back would never be read, and one that left would keep its place
/// for as long as its delayed lines took. The reactor reads at the same
/// point. The wait is the shortest receive timeout the socket takes (a
/// clock tick, a few milliseconds), paid only when a pause ends. What it
/// reads fills `room` at most.
fn peek_after_hold(stream: &TcpStream, buf: &mut [u8], room: usize, config: &Config) -> Peeked {
    let _ = stream.set_read_timeout(Some(Duration::from_micros(1)));
    let peeked = loop {
        // With no room left under `max_input`, only look (`MSG_PEEK`): held
        // input must not grow without bound while the handler works it off.
        let result = if room == 0 {
            match stream.peek(&mut buf[..1]) {
                Ok(0) => Ok(0),
                Ok(_) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e),
            }
        } else {
            let take = buf.len().min(room);
            (&*stream).read(&mut buf[..take])
        };
        break match result {
            Ok(0) => Peeked::End,
            Ok(n) => Peeked::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if timed_out(&e) => Peeked::Nothing,
            Err(e) => Peeked::Broken(e),
        };
    };
    let _ = stream.set_read_timeout(config.idle_timeout);
    peeked
}

/// Hands `input` to the handler and keeps what it leaves; returns whether
/// the connection is still open (if not, it is closing: the handler closed
/// it, or it panicked and the connection was ended).
fn deliver<H: Handler>(
    shared: &Shared<'_, H>,
    id: ConnId,
    input: &mut BytesMut,
    outbox: &Outbox,
    config: &Config,
) -> bool {
    let mut state = shared.lock();
    if state.core.get(id).is_none() {
        return false; // closing: discard
    }
    // As on the reactor: a panic on one client's input costs that client.
    let call = || state.call(|h, cx| h.on_data(cx, id, input));
    if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
        log::error!("{id}: the handler panicked on this connection's input; closing it");
        state.release(id, CloseReason::HandlerPanicked);
        return false;
    }
    if state.core.get(id).is_none() {
        return false;
    }
    // Input left while held is the handler waiting, not the peer
    // overrunning the limit: it is at most one read over, and no more is
    // read until the hold ends.
    if input.len() > config.max_input && !outbox.input_held() {
        state.close(id, CloseReason::InputLimit);
        return false;
    }
    if input.is_empty() {
        // Give the memory back: most of the time nothing is left over.
        *input = BytesMut::new();
    }
    true
}

/// Lingering close of a connection we only wrote to: shut down writing,
/// then discard input until the peer finishes, so that unread input does
/// not turn our close into a reset.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    discard_input(stream);
}

/// Reads and drops input until the peer's end of stream or an error —
/// the one the main thread causes at the linger deadline, if not before.
fn discard_input(stream: &TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
