//! The thread-per-connection driver: the classic server that gives every
//! client its own thread, running the *same* [`Handler`] as the [`Reactor`].
//!
//! ```text
//!   main thread (run): on_start, then round after round:
//!                      poll(listeners, signals, Handle wake-ups;
//!                           timeout = earliest of: timer, linger deadline, sweep, accept pause, stop)
//!        ├─ accept (≤ 64) ─► a place, open or refused ─► spawn its reader thread
//!        ├─ mailbox (≤ 256) ─► on_wake; a stream attached ─► a place ─► spawn its reader thread
//!        ├─ due timers set before the round ─► on_timer / on_conn_timer (if still open)
//!        ├─ outbound connections asked for ─► spawn a thread: connect (≤ timeout), then as a reader
//!        ├─ linger deadlines ─► shut down both ways what has not finished closing
//!        ├─ once a second ─► cut off who stayed over soft_output for soft_output_time
//!        └─ stop ─► on_stop, close all; keep going round until all are gone or shutdown_timeout
//!
//!   reader thread (one per client)            writer thread (one per client)
//!     spawn the writer                          wait for queued output, or TLS's own records
//!     TLS: read, feed rustls, wake the writer   take it all ─► blocking writev ─► repeat
//!       until the handshake is done (deadline)    (TLS: encrypt into records ─► write them)
//!     on_open                                   (wakes the reader at low water)
//!     wait out holds: a pause, or output        closing and flushed ─► TLS close_notify
//!       over high water until low water           ─► shut down writing
//!     hand back held input ─► on_data
//!     blocking read (16 KiB; TLS: fed to rustls) ─► on_data
//!     closing ─► discard input until the peer's end (or the linger deadline)
//! ```
//!
//! The handler sits behind one mutex, so callbacks still run one at a time
//! and the handler cannot tell this driver from the reactor. Sends never
//! write: they queue on the recipient's outbox, which its own writer thread
//! drains once the callback that sent has returned. So a client that stops reading blocks only its writer, never the
//! thread that sent to it; a send that would take its outbox past
//! `max_output` cuts it off, as on the reactor.
//!
//! The main thread waits in a poller only so that it can watch the listeners,
//! the signal pipe and [`Handle`] wake-ups at once; every client's I/O is
//! plain blocking calls on its own threads.
//!
//! Flow control and lifecycle are the reactor's, with these differences,
//! most because a thread blocked in `read` can only be woken by data, an
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
//!   outside: the main thread keeps the closing connections' deadlines (the
//!   reactor's FIFO, `Linger`) and shuts the socket down both ways when one
//!   passes, which wakes both threads.
//! - **Idle timeouts are the socket's receive timeout**, set before the
//!   first read; a connection whose input is held is not reading, so it is
//!   not timed out meanwhile.
//! - **`Context::now` is the wall clock.** Callbacks run on many threads, at
//!   any time, not in batches that share one start time.
//! - **TLS is one session shared by two threads.** The connection's rustls
//!   session sits behind a mutex of its own, held only while a thread works
//!   it, never across a blocking call. Only the writer writes to the socket,
//!   so records never interleave: the reader reads ciphertext outside the
//!   lock, feeds it to rustls, and wakes the writer when rustls has
//!   something of its own to send (handshake messages, an alert, a ticket).
//!   The writer copies rustls's records into a buffer of its own and writes
//!   that with the lock let go — one copy more than the reactor, which lets
//!   rustls write to its non-blocking socket directly; a blocking write
//!   under the lock would stop the reader feeding rustls, which is how two
//!   peers that both write before they read deadlock. The handshake deadline
//!   is the reader's receive timeout (only the reader reads), and after a
//!   TLS error the writer sends rustls's alert before the reader shuts the
//!   socket down. What is the same: `on_open` only after the handshake, a
//!   refusal sent through TLS once it is done, a stalled handshake closed at
//!   the deadline unannounced (and at once by a stop), `close_notify`
//!   before the TCP shutdown, flow control on the plaintext queue.
//! - **An outbound connection is a blocking connect on a thread of its
//!   own**, which then serves it. A callback cannot start that thread (it
//!   has no thread scope), so `connect` reserves the id and a place (which
//!   counts against no client limit) and wakes the main thread, which
//!   starts it; if the system will not, the handler hears
//!   `ConnectFailed(kind)` instead of an error from `connect`. The
//!   connecting socket is in place before the connect begins, so a close or
//!   a stop shuts it down, which ends the connect at once (on Linux).
//! - **Only sockets can be attached.** A thread blocked reading a pipe or a
//!   terminal (`Stream::Fd`) could not be woken to close it, so such a
//!   stream is logged and dropped; the reactor serves them.
//!
//! As on the reactor, a panic in `on_timer`, `on_wake` or `on_stop` is
//! caught and logged: it costs that call. Here it matters twice: unwinding
//! out of the main thread would leave the thread scope waiting, forever,
//! for client threads blocked in `read`, and the server deaf to signals.
//!
//! [`Reactor`]: crate::Reactor

use std::io::{self, IoSlice, Read, Write};
use std::mem;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, LockResult, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use polling::{Events, Poller};

use crate::clock::{sleep_until, Clock};
use crate::handle::{Command, Handle, Mailbox};
use crate::listeners::{Listeners, ACCEPT_BATCH};
use crate::output::{Output, COPY_MAX};
use crate::places::{Admission, Linger, Places};
use crate::signals::SignalPipe;
use crate::slots::{Generation, Slots};
use crate::stop::{Step, Stop};
use crate::sys::{self, Key, Registered};
use crate::timers::{deadline, Timers};
use crate::transport::{close_reason, is_tls_error, Transport, MAX_RECORD};
use crate::{
    CloseReason, Config, ConnId, Connect, Context, Endpoint, Error, Handler, ListenerId, Origin,
    Refusal, Stream, TimerId,
};

/// Client threads need little stack: they block in `read` and `writev`.
const STACK_SIZE: usize = 256 * 1024;
/// Bytes read at once: `Config::max_read`'s default. A blocking reader
/// cannot bound one turn's work (there are no turns), so it is fixed.
const READ_BUFFER: usize = 16 * 1024;

/// A thread-per-connection server for one [`Handler`].
pub struct Threaded<M> {
    poller: Arc<Poller>,
    /// Every listener, by `ListenerId`; all dropped when a stop begins.
    listeners: Listeners,
    signals: Option<Registered<SignalPipe>>,
    config: Config,
    mailbox: Mailbox<M>,
    /// The main thread's rounds' time (not the callbacks': see `Context::now`).
    clock: Clock,
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
        Ok(Threaded {
            listeners: Listeners::new(&poller),
            poller,
            signals: None,
            config,
            mailbox: Mailbox::new(),
            clock: Clock::new(),
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
        self.listeners.add(listener, endpoint)
    }

    /// The address `listener` is bound to, until the server stops.
    pub fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        self.listeners.local_addr(listener)
    }

    /// Stops gracefully on SIGINT, SIGTERM or SIGHUP, as the reactor does.
    pub fn stop_on_signals(&mut self) -> Result<(), Error> {
        self.signals = Some(sys::watch_signals(&self.poller)?);
        Ok(())
    }

    /// A handle for other threads to post messages or stop the server.
    pub fn handle(&self) -> Handle<M> {
        self.mailbox.handle(&self.poller)
    }

    /// Serves until stopped, then waits (up to `shutdown_timeout`) for every
    /// client to be flushed and closed. All client threads have ended when
    /// this returns.
    pub fn run<H>(&mut self, handler: &mut H) -> Result<(), Error>
    where
        H: Handler<Message = M> + Send,
        H::Conn: Send,
    {
        let clients = Arc::new(Mutex::new(Clients::new(&self.config, &self.poller)));
        let shared = Shared {
            state: Mutex::new(State {
                handler,
                states: Vec::new(),
                core: Core {
                    peers: Slots::new(),
                    timers: Timers::default(),
                    closing: Vec::new(),
                    stop: Stop::default(),
                    config: self.config.clone(),
                    poller: Arc::clone(&self.poller),
                    clients: Arc::clone(&clients),
                    dials: Vec::new(),
                    to_wake: Vec::new(),
                },
            }),
            clients,
        };
        self.clock = Clock::new();
        shared
            .lock()
            .call_guarded("on_start", |h, cx| h.on_start(cx));
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
        H::Conn: Send,
    {
        events.clear();
        self.poller.wait(events, self.timeout(shared))?;
        let now = self.clock.read().at;
        for event in events.iter() {
            match Key::of(event.key) {
                Key::Listener(index) => self.accept(scope, shared, index, now),
                Key::Signals => self.on_signal(shared, now),
                Key::Conn(_) => {}
            }
        }
        self.take_mail(scope, shared);
        fire_timers(shared, now);
        start_dials(scope, shared);
        self.listeners.resume(now);
        shared.clients().expire(now);
        if self.clock.sweep_due(now) {
            self.sweep(shared, now);
        }
        if shared.lock().core.stop.due() {
            self.begin_stop(shared, now);
        }
        Ok(self.stopped(shared, now))
    }

    /// How long the next wait may sleep: until the earliest thing that must
    /// happen without an event.
    fn timeout<H: Handler>(&self, shared: &Shared<'_, H>) -> Option<Duration> {
        let (next_timer, stop_due, stop_deadline) = {
            let state = shared.lock();
            let stop = &state.core.stop;
            (
                state.core.timers.next_deadline(),
                stop.due(),
                stop.deadline(),
            )
        };
        if self.mailbox.has_more() || stop_due {
            return Some(Duration::ZERO);
        }
        let (linger, sweep) = {
            let clients = shared.clients();
            let sweep = (!clients.places.is_empty()).then_some(self.clock.next_sweep());
            (clients.linger.next(), sweep)
        };
        let paused = self.listeners.next_resume();
        sleep_until([next_timer, linger, sweep, paused, stop_deadline])
    }

    fn on_signal<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) {
        let signalled = self.signals.as_ref().map_or(0, |s| s.source().drain());
        if signalled > 0 {
            shared.lock().core.stop.signal(now);
        }
    }

    /// Messages posted from other threads, at most `MAILBOX_BATCH` a round.
    /// The handler's lock is taken per message, so that client threads get
    /// their turn between them.
    fn take_mail<'scope, H>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
    ) where
        H: Handler<Message = M> + Send,
        H::Conn: Send,
    {
        self.mailbox.begin();
        while let Some(cmd) = self.mailbox.take() {
            match cmd {
                Command::Message(msg) => {
                    shared
                        .lock()
                        .call_guarded("on_wake", |h, cx| h.on_wake(cx, msg));
                }
                Command::Stop => shared.lock().core.stop.request(),
                Command::Attach(stream) => self.adopt(scope, shared, stream),
            }
        }
    }

    /// Serves a stream handed over through a [`Handle`] as a client of its
    /// own, with `Origin::Attached`: at once, counted against
    /// `max_connections` but never refused, as on the reactor.
    fn adopt<'scope, H>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
        stream: Stream,
    ) where
        H: Handler + Send,
        H::Conn: Send,
    {
        let socket = match Socket::adopt(stream) {
            Ok(socket) => socket,
            Err(e) => {
                log::warn!("cannot serve a stream handed over: {e}");
                return;
            }
        };
        let link = Arc::new(Link::new(Some(socket), None));
        let key = shared
            .clients()
            .insert(Arc::clone(&link), Origin::Attached, None);
        let client = Client {
            key,
            link,
            outbox: Arc::new(Outbox::new(false)),
            start: Start::Attached,
            handshake_by: Instant::now(),
            idle: self.config.idle_timeout,
        };
        let spawned = spawn(scope, move || {
            let _done = ThreadDone { shared, key };
            client.serve(scope, shared);
        });
        if spawned.is_err() {
            shared.clients().remove(key);
        }
    }

    /// Once a second: connections over `soft_output` for longer than
    /// `soft_output_time` are cut off.
    fn sweep<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) {
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
        self.listeners.clear();
        // Before the closes: a graceful stop lingers whoever is closing.
        shared.clients().begin_stop();
        let mut state = shared.lock();
        state.core.stop.begin(now, self.config.shutdown_timeout);
        state.call_guarded("on_stop", |h, cx| h.on_stop(cx));
        for id in state.core.peers.ids() {
            state.core.begin_close(id, CloseReason::Shutdown);
        }
        state.tell_closed();
    }

    /// Whether a graceful stop has ended: every client thread gone, or the
    /// deadline passed (then whoever is left is cut off, and the thread
    /// scope joins them). The first round of a stop that still waits says
    /// what for, as the reactor does.
    fn stopped<H: Handler>(&mut self, shared: &Shared<'_, H>, now: Instant) -> bool {
        let left = shared.clients().places.len();
        let step = shared.lock().core.stop.step(now, left);
        match step {
            Step::Wait => false,
            Step::Explain => {
                self.config.explain_stop(left);
                false
            }
            Step::CutOff => {
                shared.cut_off_all();
                true
            }
            Step::Done => true,
        }
    }

    fn accept<'scope, H>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
        index: usize,
        now: Instant,
    ) where
        H: Handler<Message = M> + Send,
        H::Conn: Send,
    {
        for _ in 0..ACCEPT_BATCH {
            let Some(stream) = self.listeners.accept(index, now) else {
                return;
            };
            // Client threads do blocking I/O.
            let Ok(socket) = Socket::tcp(stream) else {
                continue;
            };
            self.admit(scope, shared, ListenerId(index as u32), socket);
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
        socket: Socket,
    ) where
        H: Handler<Message = M> + Send,
        H::Conn: Send,
    {
        let Some(endpoint) = self.listeners.get(from.index()).map(|l| &l.endpoint) else {
            return;
        };
        let handshake_by = deadline(Instant::now(), endpoint.handshake_timeout);
        let mut clients = shared.clients();
        let Some(Admission { refusal, address }) =
            clients.count.admit(from, endpoint, socket.peer_addr())
        else {
            return;
        };
        // Not before: a connection dropped unanswered needs no session.
        let tls = match endpoint.tls.as_ref().map(Transport::tls_server).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                log::warn!("cannot serve a new connection: {e}");
                return;
            }
        };
        let link = Arc::new(Link::new(Some(socket), tls));
        let key = clients.insert(Arc::clone(&link), Origin::Accepted(from), address);
        if refusal.is_some() {
            clients.start_closing(key);
        }
        drop(clients);
        let client = Client {
            key,
            outbox: Arc::new(Outbox::new(link.tls.is_some())),
            link,
            start: match refusal {
                Some(why) => Start::Refused(from, why),
                None => Start::Accepted(from),
            },
            handshake_by,
            idle: self.config.idle_timeout,
        };
        let spawned = spawn(scope, move || {
            // However the thread ends, its place is given back.
            let _done = ThreadDone { shared, key };
            client.serve(scope, shared);
        });
        if spawned.is_err() {
            shared.clients().remove(key);
        }
    }
}

/// Starts the threads of the outbound connections the handler asked for
/// since the last round. A callback cannot start them itself: it runs on
/// whichever thread holds the handler's lock, and only the main thread has
/// the thread scope.
fn start_dials<'scope, H>(scope: &'scope Scope<'scope, '_>, shared: &'scope Shared<'_, H>)
where
    H: Handler + Send,
    H::Conn: Send,
{
    let dials = mem::take(&mut shared.lock().core.dials);
    for dial in dials {
        let (id, key) = (dial.id, dial.key);
        if dial.outbox.lock().aborted {
            // Closed before it was started: the handler has been told.
            shared.clients().remove(key);
            continue;
        }
        let spawned = spawn(scope, move || {
            let _done = ThreadDone { shared, key };
            if let Some(client) = dial.connect(shared) {
                client.serve(scope, shared);
            }
        });
        if let Err(e) = spawned {
            // Released before its place is given back: the place's key
            // could otherwise be someone else's by then.
            shared
                .lock()
                .release(id, CloseReason::ConnectFailed(e.kind()));
            shared.clients().remove(key);
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
        let Some(due) = state.core.timers.pop_due(now, horizon) else {
            return;
        };
        match due {
            Due::Handler(tag) => state.call_guarded("on_timer", |h, cx| h.on_timer(cx, tag)),
            Due::Conn(id, tag) => {
                // A connection's timers end with it.
                if state.core.get(id).is_none() {
                    continue;
                }
                let call = || state.call_on(id, |h, cx, conn| h.on_conn_timer(cx, id, conn, tag));
                if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
                    log::error!(
                        "{id}: the handler panicked in this connection's timer; closing it"
                    );
                    state.release(id, CloseReason::HandlerPanicked);
                }
            }
        }
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
        self.shared.clients().remove(self.key);
    }
}

/// How a client's thread begins.
#[derive(Clone, Copy)]
enum Start {
    /// Accepted from this listener: the handler hears of it once it is
    /// established (for TLS, once its handshake is done).
    Accepted(ListenerId),
    /// Accepted over a limit: it is sent the refusal (through TLS, after
    /// the handshake) and closed; the handler never hears of it.
    Refused(ListenerId, Refusal),
    /// Handed over through a [`Handle`].
    Attached,
    /// Opened with `Context::connect`: the handler has had the id since.
    Connected(ConnId),
}

/// What a client's thread starts with, once it has a socket.
struct Client {
    /// Its place in `Clients`.
    key: usize,
    link: Arc<Link>,
    outbox: Arc<Outbox>,
    start: Start,
    /// The deadline of its TLS handshake.
    handshake_by: Instant,
    /// Its idle timeout.
    idle: Option<Duration>,
}

impl Client {
    /// The client's own thread, from its start to its end: it starts the
    /// writer, completes the TLS handshake if any, joins the handler's
    /// table (`on_open`) and reads until the connection is over.
    ///
    /// Joining takes the handler's lock, so it happens here and not on the
    /// accepting thread: were each accept to wait for a handler busy under
    /// that lock (a broadcast to thousands), the kernel's listen queue would
    /// overflow and new clients be reset.
    fn serve<'scope, H>(self, scope: &'scope Scope<'scope, '_>, shared: &'scope Shared<'_, H>)
    where
        H: Handler + Send,
        H::Conn: Send,
    {
        let Some(socket) = self.link.stream.get() else {
            return;
        };
        if let (Start::Refused(from, why), None) = (self.start, &self.link.tls) {
            // Plain: the refusal needs no writer thread of its own.
            // Asked here, not on the accepting thread: see above.
            let refusal = shared.lock().handler.refusal(from, why);
            if let Some(text) = refusal {
                let _ = socket.write_all(&text);
            }
            linger(socket);
            return;
        }
        let config = shared.lock().core.config.clone();
        let writer = {
            let (link, outbox, config) = (
                Arc::clone(&self.link),
                Arc::clone(&self.outbox),
                config.clone(),
            );
            thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(scope, move || write_loop(&link, &outbox, &config))
        };
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                log::warn!("cannot start a writer thread: {e}");
                if let Start::Connected(id) = self.start {
                    shared.lock().release(id, CloseReason::Error(e.kind()));
                }
                return;
            }
        };
        let wire = Wire {
            socket,
            tls: self.link.tls.as_ref(),
        };
        let mut buf = ReadBuf::new(wire.tls.is_some());
        let mut first = 0;
        if wire.tls.is_some() {
            match handshake(&wire, &self.outbox, &mut buf, self.handshake_by) {
                Ok(n) => first = n,
                Err(e) => self.handshake_failed(shared, &wire, &e),
            }
        }
        let lingering = if self.outbox.lock().closing() {
            false
        } else {
            match self.establish(shared) {
                Some(id) => {
                    // What came with the end of the handshake is its first input.
                    let input = BytesMut::from(&buf.plain[..first]);
                    let reader = Reader {
                        shared,
                        id,
                        wire: &wire,
                        outbox: &self.outbox,
                        config: &config,
                        idle: self.idle,
                    };
                    reader.run(&mut buf, input)
                }
                None => self.outbox.lock().finishing,
            }
        };
        if lingering {
            let _ = socket.set_read_timeout(None);
            discard_input(socket);
        }
        // Let the writer flush what is owed (a half-closed peer still
        // reads), until the linger deadline at most.
        self.outbox.wait_done();
        socket.shutdown(Shutdown::Both);
        let _ = writer.join();
    }

    /// A TLS handshake that did not finish: the connection ends, after the
    /// alert rustls has for the peer if it failed for TLS's reasons. A
    /// connection the handler asked for is reported to it; an accepted one
    /// is not, as the handler never heard of it.
    fn handshake_failed<H: Handler>(&self, shared: &Shared<'_, H>, wire: &Wire<'_>, e: &io::Error) {
        let tls = is_tls_error(e);
        if let Start::Connected(id) = self.start {
            let reason = if timed_out(e) {
                CloseReason::ConnectFailed(io::ErrorKind::TimedOut)
            } else if e.kind() == io::ErrorKind::UnexpectedEof {
                CloseReason::PeerClosed
            } else {
                close_reason(e)
            };
            log::debug!("{id}: no TLS handshake: {e}");
            let mut state = shared.lock();
            if tls {
                state.fail(id, reason);
            } else {
                state.release(id, reason);
            }
            drop(state);
            // Closed by the handler meanwhile, it was aborted already.
            self.outbox.abort();
            return;
        }
        log::debug!("no TLS handshake: {e}");
        if tls && shared.clients().start_closing(self.key) {
            self.outbox.fail();
        } else {
            self.outbox.abort();
            wire.socket.shutdown(Shutdown::Both);
        }
    }

    /// Tells the handler of the connection, now established; returns its
    /// id, or `None` if it is not to be served: a refusal (queued here),
    /// one the handler closed before it was established, one accepted as
    /// the server stops, or one whose `on_open` panicked.
    fn establish<H: Handler>(&self, shared: &Shared<'_, H>) -> Option<ConnId> {
        let mut state = shared.lock();
        let id = match self.start {
            Start::Refused(from, why) => {
                let refusal = state.handler.refusal(from, why);
                drop(state);
                if let Some(text) = refusal {
                    self.outbox.lock().out.push(&text);
                }
                self.outbox.finish();
                return None;
            }
            Start::Connected(id) => {
                // Gone if the handler closed it meanwhile (it was told then).
                let peer = state.core.peers.by_id_mut(id)?;
                peer.pending = false;
                id
            }
            Start::Accepted(_) | Start::Attached if state.core.stop.requested() => {
                // Arrived as the server stops: closed unserved, but gently,
                // so that unread input (a `Hi` already sent) does not reset it.
                drop(state);
                if shared.clients().start_closing(self.key) {
                    self.outbox.finish();
                } else {
                    self.outbox.abort();
                }
                return None;
            }
            Start::Accepted(from) => state.core.insert(
                self.key,
                Origin::Accepted(from),
                Arc::clone(&self.link),
                Arc::clone(&self.outbox),
            ),
            Start::Attached => state.core.insert(
                self.key,
                Origin::Attached,
                Arc::clone(&self.link),
                Arc::clone(&self.outbox),
            ),
        };
        // As with `on_data`: a panic here costs this client only.
        let call = || state.call_on(id, |h, cx, conn| h.on_open(cx, id, conn));
        if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
            log::error!("{id}: the handler panicked opening this connection; closing it");
            state.release(id, CloseReason::HandlerPanicked);
            return None;
        }
        Some(id)
    }
}

/// An outbound connection the handler asked for, until its thread starts.
struct Dial {
    id: ConnId,
    key: usize,
    to: Connect,
    link: Arc<Link>,
    outbox: Arc<Outbox>,
}

impl Dial {
    /// Connects, blocking until `to.timeout` at most — or until the
    /// connection is closed or the server stops: the socket is in the link
    /// before the connect begins, so that shutting it down (as a close or a
    /// stop does) ends the wait. On failure the handler is told
    /// (`ConnectFailed`); on success the connection is to be served like an
    /// accepted one, unless the handler closed it meanwhile (it was told
    /// then).
    fn connect<H: Handler>(self, shared: &Shared<'_, H>) -> Option<Client> {
        let Dial {
            id,
            key,
            to,
            link,
            outbox,
        } = self;
        let by = deadline(Instant::now(), to.timeout);
        let connected = if to.timeout.is_zero() {
            // `connect_timeout` refuses a zero timeout; the reactor's
            // deadline has passed at once.
            Err(io::ErrorKind::TimedOut.into())
        } else {
            connect(&link, &outbox, &to)
        };
        match connected {
            Ok(()) => {
                if outbox.lock().closing() {
                    return None;
                }
                Some(Client {
                    key,
                    link,
                    outbox,
                    start: Start::Connected(id),
                    handshake_by: by,
                    idle: to.idle_timeout,
                })
            }
            Err(e) => {
                log::debug!("{id}: cannot connect: {e}");
                shared
                    .lock()
                    .release(id, CloseReason::ConnectFailed(e.kind()));
                None
            }
        }
    }
}

/// Connects `link`'s socket, made here, to `to.addr` within `to.timeout`.
/// The socket is in the link before the connect begins, and the close is
/// looked for after: a close from then on shuts the connecting socket
/// down, which Linux answers by ending the connect at once.
fn connect(link: &Link, outbox: &Outbox, to: &Connect) -> io::Result<()> {
    use socket2::{Domain, Protocol, SockRef, Type};
    let socket = socket2::Socket::new(
        Domain::for_address(to.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    let _ = link.stream.set(Socket::tcp(socket.into())?);
    if outbox.lock().closing() {
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    let Some(Socket::Tcp(stream)) = link.stream.get() else {
        unreachable!("a TCP socket was just put in place");
    };
    SockRef::from(stream).connect_timeout(&to.addr.into(), to.timeout)
}

/// The reader's side of a TLS handshake: reads and feeds rustls (which
/// wakes the writer for the replies) until the handshake is done, by `by`.
/// Returns how much plaintext arrived with its end, at the front of
/// `buf.plain`: a client's first line may share a packet with its
/// `Finished`. The socket's receive timeout keeps the deadline, since only
/// this thread reads it.
fn handshake(
    wire: &Wire<'_>,
    outbox: &Outbox,
    buf: &mut ReadBuf,
    by: Instant,
) -> io::Result<usize> {
    loop {
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        wire.socket.set_read_timeout(Some(left))?;
        match wire.read_once(outbox, buf, usize::MAX)? {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed during the TLS handshake",
                ))
            }
            Some(n) => return Ok(n),
            None if !wire.handshaking() => return Ok(0),
            None => {}
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

/// Starts a client thread, or says why the system would not.
fn spawn<'scope>(
    scope: &'scope Scope<'scope, '_>,
    f: impl FnOnce() + Send + 'scope,
) -> io::Result<()> {
    match thread::Builder::new()
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, f)
    {
        Ok(_) => Ok(()),
        Err(e) => {
            log::warn!("cannot start a client thread: {e}");
            Err(e)
        }
    }
}

/// Everything the threads share. Lock order: `state`, then `clients`, then
/// an outbox; never the other way round.
struct Shared<'h, H: Handler> {
    state: Mutex<State<'h, H>>,
    clients: Arc<Mutex<Clients>>,
}

impl<'h, H: Handler> Shared<'h, H> {
    fn lock(&self) -> MutexGuard<'_, State<'h, H>> {
        recover(self.state.lock())
    }

    fn clients(&self) -> MutexGuard<'_, Clients> {
        recover(self.clients.lock())
    }

    /// The stop deadline passed: everyone is ended now, those already
    /// closing too, so that every client thread wakes and ends.
    fn cut_off_all(&self) {
        let mut state = self.lock();
        for id in state.core.peers.ids() {
            state.release(id, CloseReason::Shutdown);
        }
        drop(state);
        for (_, place) in self.clients().places.iter() {
            place.link.shutdown(Shutdown::Both);
        }
    }
}

/// The client threads still running, each in a place of its own, kept
/// apart from the handler's lock so that accepting never waits for a
/// callback; their places counted against the limits (`Places`, as on the
/// reactor). A place counts as open until it starts closing (refusals from
/// the start), and as closing from then until its thread ends. Closing
/// connections must be gone by `linger_timeout` after they began: `linger`
/// holds their deadlines (the reactor's `linger_deadlines`), which the main
/// thread keeps.
struct Clients {
    places: Slots<Place>,
    count: Places,
    /// The closing places, by id (slot and generation): those gone since
    /// are skipped.
    linger: Linger<ConnId>,
    linger_timeout: Duration,
    /// To wake the main thread for a deadline earlier than it sleeps until,
    /// or for the last thread of a stop.
    poller: Arc<Poller>,
}

/// One client thread's place.
struct Place {
    link: Arc<Link>,
    origin: Origin,
    /// Tells this place from a later one in the same slot.
    gen: u32,
    closing: bool,
}

impl Generation for Place {
    fn generation(&self) -> u32 {
        self.gen
    }
}

impl Clients {
    fn new(config: &Config, poller: &Arc<Poller>) -> Clients {
        Clients {
            places: Slots::new(),
            count: Places::new(config),
            linger: Linger::new(),
            linger_timeout: config.linger_timeout,
            poller: Arc::clone(poller),
        }
    }

    /// A place for a new, open connection, counted under `address`.
    fn insert(&mut self, link: Arc<Link>, origin: Origin, address: Option<IpAddr>) -> usize {
        let (id, entry) = self.places.vacant();
        entry.insert(Place {
            link,
            origin,
            gen: id.gen(),
            closing: false,
        });
        self.count.count_in(id.slot(), origin, address);
        id.slot()
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
        place.closing = true;
        if !self.count.start_closing(key, place.origin) {
            return false;
        }
        if self.linger.is_empty() {
            // The main thread may be asleep with no deadline to wait for.
            let _ = self.poller.notify();
        }
        let at = deadline(Instant::now(), self.linger_timeout);
        self.linger.push(ConnId::new(key, place.gen), at);
        true
    }

    /// Shuts down both ways the sockets of closing connections whose
    /// deadline has passed: their reader (blocked in `read`) and writer
    /// (blocked in `writev` to a peer that does not read) wake and end.
    fn expire(&mut self, now: Instant) {
        while let Some(id) = self.linger.pop_due(now) {
            if let Some(place) = self.places.by_id(id) {
                log::debug!("a connection did not finish closing in time: cut off");
                place.link.shutdown(Shutdown::Both);
            }
        }
    }

    /// A graceful stop has begun: closing connections linger however many
    /// there are, and TLS clients still in their handshake are ended now,
    /// unannounced, as on the reactor, rather than waited for until their
    /// handshake deadline.
    fn begin_stop(&mut self) {
        self.count.begin_stop();
        for (_, place) in self.places.iter() {
            let tls = place.link.tls.as_ref();
            if !place.closing && tls.is_some_and(|tls| recover(tls.lock()).handshaking()) {
                place.link.shutdown(Shutdown::Both);
            }
        }
    }

    /// A client thread has ended.
    fn remove(&mut self, key: usize) {
        let place = self.places.remove(key);
        self.count.remove(key, place.origin, place.closing);
        if self.count.stopping() && self.places.is_empty() {
            // The main thread waits for this in its stop.
            let _ = self.poller.notify();
        }
    }
}

/// The handler and the driver's side of its context, behind one lock.
struct State<'h, H: Handler> {
    handler: &'h mut H,
    core: Core,
    /// The handler's state of each connection it knows, by slot (with the
    /// generation it belongs to): made when first needed, given to
    /// `on_close` at the end.
    states: Vec<Option<(u32, H::Conn)>>,
}

impl<H: Handler> State<'_, H> {
    /// Runs a callback about `id` with its state, then tells the handler
    /// of closes it caused (`id`'s own among them, with the state).
    fn call_on(&mut self, id: ConnId, f: impl FnOnce(&mut H, &mut Core, &mut H::Conn)) {
        let mut conn = self.take_state(id);
        f(self.handler, &mut self.core, &mut conn);
        let slot = id.slot();
        if self.states.len() <= slot {
            self.states.resize_with(slot + 1, || None);
        }
        self.states[slot] = Some((id.gen(), conn));
        self.tell_closed();
    }

    /// `id`'s state, out of the table: its own, or a new one.
    fn take_state(&mut self, id: ConnId) -> H::Conn {
        match self.states.get_mut(id.slot()).and_then(Option::take) {
            Some((gen, conn)) if gen == id.gen() => conn,
            _ => H::Conn::default(),
        }
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

    /// Wakes the writers that the last callback sent output to.
    fn wake_writers(&mut self) {
        for outbox in self.core.to_wake.drain(..) {
            let mut q = outbox.lock();
            q.wake_due = false;
            // Woken, if not yet running: no longer idle, or a callback that
            // comes before it runs would hold it back again, and a sender
            // calling back and back could starve it.
            q.writer_idle = false;
            drop(q);
            outbox.to_writer.notify_one();
        }
    }

    /// Tells the handler of the closes the last callback caused, then wakes
    /// the writers it (and they) sent output to. A panic in
    /// `on_close` costs that call, as on the reactor: the connection is
    /// gone already, and unwinding here would take down whichever thread
    /// holds the lock — the main one included, which would then hang.
    fn tell_closed(&mut self) {
        while let Some((id, reason)) = self.core.closing.pop() {
            log::debug!("{id}: closed ({reason})");
            let conn = self.take_state(id);
            let (handler, core) = (&mut *self.handler, &mut self.core);
            let call = || handler.on_close(core, id, conn, reason);
            if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
                log::error!("the handler panicked in on_close; carrying on without that call");
            }
        }
        // Every callback ends here, and so does what it sent: now it may go.
        self.wake_writers();
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

    /// Ends `id` after a TLS error and tells the handler.
    fn fail(&mut self, id: ConnId, reason: CloseReason) {
        self.core.fail(id, reason);
        self.tell_closed();
    }
}

/// What a timer of the driver's own queue is for.
#[derive(Debug)]
enum Due {
    /// The handler's, set with `Context::set_timer`.
    Handler(u64),
    /// A connection's, set with `Context::set_conn_timer`.
    Conn(ConnId, u64),
}

/// A client as the handler sees it: open until removed from the slab.
struct Peer {
    gen: u32,
    origin: Origin,
    /// Its place in `Clients`.
    key: usize,
    link: Arc<Link>,
    outbox: Arc<Outbox>,
    /// An outbound connection not yet established: closing it ends it at
    /// once, since nothing was said that needs flushing.
    pending: bool,
}

impl Generation for Peer {
    fn generation(&self) -> u32 {
        self.gen
    }
}

/// The driver's side of the context.
struct Core {
    peers: Slots<Peer>,
    timers: Timers<Due>,
    /// Connections that began closing in the current callback.
    closing: Vec<(ConnId, CloseReason)>,
    stop: Stop,
    config: Config,
    poller: Arc<Poller>,
    clients: Arc<Mutex<Clients>>,
    /// Outbound connections asked for, for the main thread to start.
    dials: Vec<Dial>,
    /// The writers of the connections the current callback sent output to,
    /// woken once it has returned: as on the reactor, what a callback sends
    /// is written after it, so that the rest of it (a close after a last
    /// line) has happened before the peer can see that line and act on it.
    to_wake: Vec<Arc<Outbox>>,
}

impl Core {
    /// Queues `len` bytes for `to` with `push`, checking the limits at the
    /// moment of the send, as the reactor does: no outbox grows past
    /// `max_output` plus one message. Its writer is woken when the callback
    /// returns (`to_wake`).
    fn enqueue(&mut self, to: ConnId, len: usize, push: impl FnOnce(&mut Output)) -> bool {
        let Some(peer) = self.get(to) else {
            return false;
        };
        let mut q = peer.outbox.lock();
        if q.cost().saturating_add(len) > self.config.max_output {
            drop(q);
            self.cut_off(to);
            return false;
        }
        push(&mut q.out);
        let cost = q.cost();
        if cost > self.config.high_water {
            // Set here, not when the reader looks: the writer may have
            // drained the queue by then, and the input the handler left
            // for being backlogged must still be handed back.
            q.held_for_output = true;
        }
        if q.soft_since.is_none() && cost > self.config.soft_output {
            q.soft_since = Some(self.now());
        }
        if q.writer_idle && !q.wake_due {
            q.wake_due = true;
            drop(q);
            let outbox = Arc::clone(&peer.outbox);
            self.to_wake.push(outbox);
        }
        true
    }

    fn insert(
        &mut self,
        key: usize,
        origin: Origin,
        link: Arc<Link>,
        outbox: Arc<Outbox>,
    ) -> ConnId {
        let (id, entry) = self.peers.vacant();
        entry.insert(Peer {
            gen: id.gen(),
            origin,
            key,
            link,
            outbox,
            pending: false,
        });
        id
    }

    fn get(&self, id: ConnId) -> Option<&Peer> {
        self.peers.by_id(id)
    }

    /// Ends `id` at once: nothing more is written, and shutting the socket
    /// down both ways wakes its reader and writer threads.
    fn abort(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(peer) = self.peers.remove_id(id) {
            // Counted as closing until its threads end, which the shutdown
            // below makes prompt.
            recover(self.clients.lock()).start_closing(peer.key);
            end_now(&peer);
            self.closing.push((id, reason));
        }
    }

    /// Closes `id` gracefully: its writer flushes and shuts down writing,
    /// its reader discards input until the peer finishes (lingering close),
    /// all by the linger deadline. Past `max_closing` it is ended at once.
    fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        if self.get(id).is_some_and(|p| p.pending) {
            self.abort(id, reason);
            return;
        }
        let Some(peer) = self.peers.remove_id(id) else {
            return;
        };
        let mut clients = recover(self.clients.lock());
        if clients.start_closing(peer.key) {
            peer.outbox.finish();
        } else {
            log::debug!(
                "{id}: closed at once: {} connections are closing",
                clients.count.closing() - 1
            );
            end_now(&peer);
        }
        self.closing.push((id, reason));
    }

    /// Ends `id` after a TLS error: its writer sends the alert rustls has
    /// queued, if any, and stops; its reader then shuts the socket down. By
    /// the linger deadline, like any close; past `max_closing`, at once.
    fn fail(&mut self, id: ConnId, reason: CloseReason) {
        let Some(peer) = self.peers.remove_id(id) else {
            return;
        };
        if recover(self.clients.lock()).start_closing(peer.key) {
            peer.outbox.fail();
        } else {
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
    peer.link.shutdown(Shutdown::Both);
}

impl Context for Core {
    /// The wall clock, read at each call: callbacks run on many threads, at
    /// any time, not in turns that share one start time (see `Clock`).
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, to: ConnId, data: &[u8]) -> bool {
        if data.is_empty() {
            return self.get(to).is_some();
        }
        self.enqueue(to, data.len(), |output| output.push_slice(data))
    }

    fn send_many(&mut self, to: &[ConnId], data: &[u8]) -> usize {
        if data.len() <= COPY_MAX {
            return to.iter().filter(|&&id| self.send(id, data)).count();
        }
        // Long: one copy, shared by every queue that takes it.
        let shared = Bytes::copy_from_slice(data);
        to.iter()
            .filter(|&&id| self.enqueue(id, data.len(), |output| output.push(&shared)))
            .count()
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
        peer.outbox.lock().paused_until = Some(deadline(self.now(), duration));
        // A reader waiting out an earlier pause waits for this one instead.
        peer.outbox.to_reader.notify_all();
    }

    fn close(&mut self, to: ConnId) {
        self.begin_close(to, CloseReason::Requested);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        let at = deadline(self.now(), after);
        if self.timers.next_deadline().is_none_or(|next| at < next) {
            // The main thread may be asleep until a later deadline.
            let _ = self.poller.notify();
        }
        self.timers.insert(at, Due::Handler(tag))
    }

    fn set_conn_timer(&mut self, id: ConnId, after: Duration, tag: u64) -> TimerId {
        let at = deadline(self.now(), after);
        if self.timers.next_deadline().is_none_or(|next| at < next) {
            let _ = self.poller.notify();
        }
        self.timers.insert(at, Due::Conn(id, tag))
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.cancel(timer);
    }

    fn stop(&mut self) {
        self.stop.request();
        let _ = self.poller.notify();
    }

    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.get(id)?.link.stream.get()?.peer_addr()
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        Some(self.get(id)?.origin)
    }

    /// Reserves the id and a place (which counts against no client limit)
    /// at once, so that sends queue until the connection is established;
    /// the main thread starts its thread, which connects, blocking.
    fn connect(&mut self, to: Connect) -> io::Result<ConnId> {
        let tls = match &to.tls {
            Some((config, name)) => Some(Transport::tls_client(config, name.clone())?),
            None => None,
        };
        let link = Arc::new(Link::new(None, tls));
        let outbox = Arc::new(Outbox::new(link.tls.is_some()));
        let key = recover(self.clients.lock()).insert(Arc::clone(&link), Origin::Connected, None);
        let id = self.insert(
            key,
            Origin::Connected,
            Arc::clone(&link),
            Arc::clone(&outbox),
        );
        if let Some(peer) = self.peers.by_id_mut(id) {
            peer.pending = true;
        }
        self.dials.push(Dial {
            id,
            key,
            to,
            link,
            outbox,
        });
        // The main thread may be asleep.
        let _ = self.poller.notify();
        Ok(id)
    }
}

/// One client's output queue and the holds on its input, shared by whoever
/// sends, its writer thread and its reader thread.
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
    /// A callback running now has sent output to an idle writer: the
    /// writer leaves the queue alone until the callback has returned and
    /// wakes it (`Core::to_wake`), so the peer sees nothing of a callback
    /// before all of it has happened. A writer that is busy writing takes
    /// on what comes meanwhile, so that a sender that calls back and back
    /// cannot starve it.
    wake_due: bool,
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
    /// TLS failed: the writer sends what rustls has to say (an alert), and
    /// nothing more.
    failed: bool,
    /// The TLS handshake is under way: queued plaintext waits.
    handshaking: bool,
    /// rustls has something of its own to send: the reader says so.
    tls_turn: bool,
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
        self.finishing || self.aborted || self.failed
    }

    /// Whether the writer has something to do: output (not during the
    /// handshake), TLS's own records, or the end.
    fn writer_has_work(&self) -> bool {
        self.aborted
            || self.failed
            || self.tls_turn
            || (!self.handshaking && !self.wake_due && (!self.out.is_empty() || self.finishing))
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
    /// An empty outbox; for TLS, the writer starts with the session's turn
    /// (a client's first handshake message).
    fn new(tls: bool) -> Outbox {
        Outbox {
            queue: Mutex::new(OutQueue {
                handshaking: tls,
                tls_turn: tls,
                // Idle until it first looks: what is sent before then waits
                // for its callback to end, like what is sent to it later.
                writer_idle: true,
                ..OutQueue::default()
            }),
            to_writer: Condvar::new(),
            to_reader: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutQueue> {
        recover(self.queue.lock())
    }

    /// The reader fed the TLS session: the writer is woken if rustls has
    /// something to send, or if the handshake just ended (queued output
    /// may go now).
    fn tls_progress(&self, wants_write: bool, handshaking: bool) {
        let mut q = self.lock();
        let established = q.handshaking && !handshaking;
        q.handshaking = handshaking;
        q.tls_turn |= wants_write;
        if wants_write || established {
            self.to_writer.notify_one();
        }
    }

    fn fail(&self) {
        self.lock().failed = true;
        self.to_writer.notify_one();
        self.to_reader.notify_all();
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
/// pieces per `writev` (or, for TLS, as records encrypted from them), until
/// the connection is closed and flushed. For TLS it is the only thread that
/// writes to the socket, so records never interleave: the reader wakes it
/// when rustls has something of its own to send (the handshake, an alert,
/// a session ticket).
fn write_loop(link: &Link, outbox: &Outbox, config: &Config) {
    if let Some(socket) = link.stream.get() {
        let wire = Wire {
            socket,
            tls: link.tls.as_ref(),
        };
        write_out(&wire, outbox, config);
    }
    outbox.lock().done = true;
    outbox.to_reader.notify_all();
}

fn write_out(wire: &Wire<'_>, outbox: &Outbox, config: &Config) {
    // TLS records made and not yet written. Given back whenever the writer
    // waits, so that an idle connection holds none.
    let mut records = Vec::new();
    let mut q = outbox.lock();
    loop {
        while !q.writer_has_work() {
            q.writer_idle = true;
            records = Vec::new();
            q = recover(outbox.to_writer.wait(q));
        }
        q.writer_idle = false;
        if q.aborted {
            return;
        }
        q.tls_turn = false;
        if q.failed || q.handshaking || (q.out.is_empty() && !q.finishing) {
            // Only what the session has to say itself: its handshake, a
            // ticket after it, or the alert of a failure (and then no more).
            let failed = q.failed;
            drop(q);
            if wire
                .send_records(&mut Output::default(), &mut records)
                .is_err()
                || failed
            {
                return;
            }
            q = outbox.lock();
            continue;
        }
        if q.out.is_empty() {
            // Finishing and flushed: tell the peer we are done.
            drop(q);
            wire.finish(&mut records);
            return;
        }
        // Taken, not swapped: the queue left behind costs nothing until
        // the next send.
        let mut batch = mem::take(&mut q.out);
        q.in_flight = batch.len();
        drop(q);
        loop {
            let result = wire.write(&mut batch, &mut records);
            q = outbox.lock();
            if !matches!(result, Ok(n) if n > 0) {
                // Broken: the reader sees it too and reports it.
                q.in_flight = 0;
                return;
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
}

/// A client's reader thread, once the connection is established: waits out
/// holds, reads, hands the handler what arrived (or what it left, once a
/// hold ends), and reports the end of the connection.
struct Reader<'a, 'h, H: Handler> {
    shared: &'a Shared<'h, H>,
    id: ConnId,
    wire: &'a Wire<'a>,
    outbox: &'a Outbox,
    config: &'a Config,
    idle: Option<Duration>,
}

impl<H: Handler> Reader<'_, '_, H> {
    /// Reads until the connection is over, starting with `input` (what
    /// came with the end of a TLS handshake). Returns whether it is closing
    /// gracefully: then the caller discards input until the peer finishes
    /// (or the linger deadline).
    fn run(&self, buf: &mut ReadBuf, mut input: BytesMut) -> bool {
        let (shared, id, wire, outbox, config) =
            (self.shared, self.id, self.wire, self.outbox, self.config);
        // Whether `input` holds bytes the handler has not been handed since
        // they arrived, or since a hold on them ended.
        let mut unseen = !input.is_empty();
        // Set once the peer's end of stream is read while the handler still
        // held input back: the time by which it must have taken the rest.
        let mut finish_by: Option<Instant> = None;
        let _ = wire.socket.set_read_timeout(self.idle);
        loop {
            match outbox.wait_out_holds(config) {
                Holds::Closing => return true,
                Holds::Ended { paused: true } if finish_by.is_none() => {
                    // Nothing was read or written during the pause: look,
                    // without waiting, whether the peer finished or went
                    // meanwhile (see `peek_after_hold`), before handing back
                    // what was held. (After a hold for output, the peer was
                    // reading: a peer that went makes the writer fail.)
                    let room = config.max_input.saturating_sub(input.len());
                    match self.peek_after_hold(buf, room) {
                        Peeked::Nothing => {}
                        Peeked::Bytes(n) => input.extend_from_slice(&buf.plain[..n]),
                        Peeked::End => {
                            finish_by = Some(deadline(Instant::now(), config.linger_timeout))
                        }
                        Peeked::Broken(e) => {
                            self.broken(&e);
                            return false;
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
                    return false;
                }
            }
            if unseen && !input.is_empty() {
                unseen = false;
                if !deliver(shared, id, &mut input, outbox, config) {
                    return true;
                }
                continue;
            }
            if finish_by.is_some() {
                // Held again: wait for the hold; there is nothing to read.
                continue;
            }
            let n = match wire.read(outbox, buf, self.idle) {
                Ok(n) => n,
                Err(e) if timed_out(&e) => {
                    shared.lock().close(id, CloseReason::Idle);
                    return true;
                }
                Err(e) => {
                    self.broken(&e);
                    return false;
                }
            };
            if n == 0 {
                // The peer may have only half-closed: it still gets what it is owed.
                shared.lock().close(id, CloseReason::PeerClosed);
                return false;
            }
            input.extend_from_slice(&buf.plain[..n]);
            unseen = true;
        }
    }

    /// The connection broke, or its TLS failed: ended now, except that
    /// after a TLS error the writer first sends the alert rustls queued.
    fn broken(&self, e: &io::Error) {
        let mut state = self.shared.lock();
        if is_tls_error(e) {
            state.fail(self.id, CloseReason::Tls);
        } else {
            state.release(self.id, CloseReason::from_error(e));
        }
    }

    /// Reads once, waiting at most a moment, after a hold on the
    /// connection's input ended. While held, the reader did not read, so it
    /// cannot have seen the peer finish or reset: a flooder paused again by
    /// every line it is handed back would never be read, and one that left
    /// would keep its place for as long as its delayed lines took. The
    /// reactor reads at the same point. The wait is the shortest receive
    /// timeout the socket takes (a clock tick, a few milliseconds), paid
    /// only when a pause ends. What it reads fills `room` at most.
    fn peek_after_hold(&self, buf: &mut ReadBuf, room: usize) -> Peeked {
        let wire = self.wire;
        let _ = wire.socket.set_read_timeout(Some(Duration::from_micros(1)));
        // With no room left under `max_input`, only look (`MSG_PEEK`): held
        // input must not grow without bound while the handler works it off.
        let peeked = if room == 0 {
            match wire.peek() {
                Ok(0) => Peeked::End,
                Ok(_) => Peeked::Nothing,
                Err(e) if timed_out(&e) => Peeked::Nothing,
                Err(e) => Peeked::Broken(e),
            }
        } else {
            match wire.read_once(self.outbox, buf, room) {
                Ok(Some(0)) => Peeked::End,
                Ok(Some(n)) => Peeked::Bytes(n),
                Ok(None) => Peeked::Nothing,
                Err(e) if timed_out(&e) => Peeked::Nothing,
                Err(e) => Peeked::Broken(e),
            }
        };
        let _ = wire.socket.set_read_timeout(self.idle);
        peeked
    }
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
    let call = || {
        state.call_on(id, |h, cx, conn| {
            h.on_data(cx, id, conn, &mut crate::Input::new(input))
        })
    };
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

/// A socket a client's threads can block on and be woken from, by shutting
/// it down. A pipe or a terminal (`Stream::Fd`) has no such shutdown: a
/// thread blocked reading one could not be woken to close it at a linger
/// deadline or a cut-off, so this driver does not serve them.
#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// A TCP connection, made ready for blocking I/O.
    fn tcp(stream: TcpStream) -> io::Result<Socket> {
        stream.set_nonblocking(false)?;
        // As on the reactor: chat lines are small and latency matters.
        let _ = stream.set_nodelay(true);
        Ok(Socket::Tcp(stream))
    }

    /// A stream handed over, made ready for blocking I/O.
    fn adopt(stream: Stream) -> io::Result<Socket> {
        match stream {
            Stream::Tcp(stream) => Socket::tcp(stream),
            Stream::Unix(stream) => {
                stream.set_nonblocking(false)?;
                Ok(Socket::Unix(stream))
            }
            Stream::Fd(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the threaded driver serves sockets only: a thread blocked reading \
                 a pipe or a terminal could not be woken to close it (use the reactor)",
            )),
        }
    }

    /// One read, retried if a signal interrupted it.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Socket::Tcp(s) => (&*s).read(buf),
                Socket::Unix(s) => (&*s).read(buf),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).write_vectored(bufs),
            Socket::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => (&*s).write_all(buf),
            Socket::Unix(s) => (&*s).write_all(buf),
        }
    }

    /// Shuts down `how`; a blocked thread wakes. Errors (not connected)
    /// mean there is nothing left to shut down.
    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        };
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(timeout),
            Socket::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Socket::Tcp(s) => s.peer_addr().ok(),
            Socket::Unix(_) => None,
        }
    }
}

/// One connection's socket and TLS session, shared by its threads, its
/// place (which shuts it down at the linger deadline) and its peer entry.
struct Link {
    /// Set once there is a socket: from the start for accepted and attached
    /// streams, just before the connect for outbound ones (so that a close
    /// can end the connect).
    stream: OnceLock<Socket>,
    /// The TLS session, shared by the reader (which feeds it what it reads)
    /// and the writer (which takes its records), each holding the lock only
    /// while it works the session, never while it blocks on the socket.
    tls: Option<Mutex<Transport>>,
}

impl Link {
    fn new(stream: Option<Socket>, tls: Option<Transport>) -> Link {
        Link {
            stream: stream.map(OnceLock::from).unwrap_or_default(),
            tls: tls.map(Mutex::new),
        }
    }

    /// Shuts the socket down, if there is one yet.
    fn shutdown(&self, how: Shutdown) {
        if let Some(socket) = self.stream.get() {
            socket.shutdown(how);
        }
    }
}

/// What a client's threads do their I/O through: its socket and, for TLS,
/// its session.
struct Wire<'a> {
    socket: &'a Socket,
    tls: Option<&'a Mutex<Transport>>,
}

/// What a reader reads into: plaintext for the handler and, for TLS, the
/// ciphertext before it.
struct ReadBuf {
    plain: Vec<u8>,
    cipher: Vec<u8>,
}

impl ReadBuf {
    fn new(tls: bool) -> ReadBuf {
        if !tls {
            return ReadBuf {
                plain: vec![0; READ_BUFFER],
                cipher: Vec::new(),
            };
        }
        // One record more than is read: a read may complete a record begun
        // in the read before. Plaintext left in rustls would otherwise wait
        // there for the next read, which may never come if the peer waits
        // for an answer to it.
        ReadBuf {
            plain: vec![0; READ_BUFFER + MAX_RECORD],
            cipher: vec![0; READ_BUFFER],
        }
    }
}

impl Wire<'_> {
    /// Reads once, at most `room` bytes, and returns how much plaintext it
    /// brought, at the front of `buf.plain` (`Some(0)`: the end of the
    /// stream). For TLS the ciphertext is read outside the session's lock,
    /// then fed to rustls; the writer is woken if rustls now has something
    /// to send. `None`: records with nothing for the handler (handshake
    /// messages, a ticket).
    fn read_once(
        &self,
        outbox: &Outbox,
        buf: &mut ReadBuf,
        room: usize,
    ) -> io::Result<Option<usize>> {
        let Some(tls) = self.tls else {
            let take = buf.plain.len().min(room);
            return self.socket.read(&mut buf.plain[..take]).map(Some);
        };
        let take = buf.cipher.len().min(room);
        // A peer that has ended may never make the socket readable again:
        // the end is the session's to give, without a blocking read.
        let ended = recover(tls.lock()).peer_ended();
        let n = if ended {
            0
        } else {
            self.socket.read(&mut buf.cipher[..take])?
        };
        let mut session = recover(tls.lock());
        let result = session.feed(&buf.cipher[..n], &mut buf.plain);
        let (wants_write, handshaking) = (session.wants_write(), session.handshaking());
        drop(session);
        outbox.tls_progress(wants_write, handshaking);
        match result {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads until there is plaintext for the handler, or the end (`Ok(0)`).
    /// The socket's receive timeout is `idle`; records with nothing for the
    /// handler do not restart it, as on the reactor, where only input
    /// counts as activity.
    fn read(
        &self,
        outbox: &Outbox,
        buf: &mut ReadBuf,
        idle: Option<Duration>,
    ) -> io::Result<usize> {
        let idle_by = idle.map(|idle| deadline(Instant::now(), idle));
        let mut shortened = false;
        let result = loop {
            match self.read_once(outbox, buf, usize::MAX) {
                Ok(Some(n)) => break Ok(n),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if let Some(by) = idle_by {
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Err(io::ErrorKind::TimedOut.into());
                }
                self.socket.set_read_timeout(Some(left))?;
                shortened = true;
            }
        };
        if shortened {
            self.socket.set_read_timeout(idle)?;
        }
        result
    }

    /// Looks at what waits without taking it (`MSG_PEEK`), as the reactor's
    /// `peek`: only plain TCP can tell an end of stream this way; the others
    /// answer that nothing can be told (`WouldBlock`).
    fn peek(&self) -> io::Result<usize> {
        match (self.socket, self.tls) {
            (Socket::Tcp(s), None) => s.peek(&mut [0]),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn handshaking(&self) -> bool {
        self.tls
            .is_some_and(|tls| recover(tls.lock()).handshaking())
    }

    /// Writes some of `batch`, blocking; returns how much of it went
    /// (`Ok(0)` only if the socket is broken). For TLS, encrypted records
    /// of it, after whatever the session had to say ahead of them.
    fn write(&self, batch: &mut Output, records: &mut Vec<u8>) -> io::Result<usize> {
        if self.tls.is_none() {
            return batch.write_with(|slices| self.socket.write_vectored(slices));
        }
        let before = batch.len();
        self.send_records(batch, records)?;
        Ok(before - batch.len())
    }

    /// TLS: encrypts what it can of `output` (none during the handshake)
    /// and writes the records, with what the session had to say ahead of
    /// them, blocking. The session's lock is let go before the write.
    fn send_records(&self, output: &mut Output, records: &mut Vec<u8>) -> io::Result<()> {
        let Some(tls) = self.tls else {
            return Ok(());
        };
        records.clear();
        recover(tls.lock()).take_records(output, records)?;
        self.socket.write_all(records)
    }

    /// Ends our side once everything is written: TLS says so first
    /// (`close_notify`, so the peer can tell our end from a truncation),
    /// then TCP (a FIN: the peer reads its end of stream).
    fn finish(&self, records: &mut Vec<u8>) {
        if let Some(tls) = self.tls {
            recover(tls.lock()).close();
            let _ = self.send_records(&mut Output::default(), records);
        }
        self.socket.shutdown(Shutdown::Write);
    }
}

/// Lingering close of a connection we only wrote to: shut down writing,
/// then discard input until the peer finishes, so that unread input does
/// not turn our close into a reset.
fn linger(socket: &Socket) {
    socket.shutdown(Shutdown::Write);
    discard_input(socket);
}

/// Reads and drops input until the peer's end of stream or an error —
/// the one the main thread causes at the linger deadline, if not before.
fn discard_input(socket: &Socket) {
    let mut buf = [0u8; 4096];
    while let Ok(1..) = socket.read(&mut buf) {}
}
