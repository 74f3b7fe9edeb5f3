//! The event loop: one thread, one poller, every connection.
//!
//! ```text
//!            ┌────────────────────────────── run() ───────────────────────────────┐
//!            │                                                                    │
//!            ▼                                                                    │
//!   wait(timeout = earliest of: timer, sweep tick, accept pause, stop deadline)   │
//!            │                                                                    │
//!            ├─ listener readable ──► accept (≤ 64) ─► on_open / refusal          │
//!            ├─ signal pipe ────────► begin graceful stop                         │
//!            ├─ connection readable ► one read into the shared scratch buffer     │
//!            │                          └─► on_data(input)  (or discard if closing)│
//!            ├─ connection writable ► queue for flush                             │
//!            ├─ mailbox (notify) ───► on_wake(msg) / stop                         │
//!            ├─ due timers ─────────► on_timer(tag)                               │
//!            ├─ once a second ──────► idle timeouts, close deadlines, free buffers│
//!            ├─ flush: one writev per connection with output; watch for writable │
//!            │         only while bytes remain; finish closes                     │
//!            └─ free the slots of connections released in this batch ────────────┘
//! ```
//!
//! Polling is level-triggered: interest is changed (one `epoll_ctl`) only
//! when a connection starts or stops having output, never to re-arm. Each
//! readiness gets one read; if more is waiting, the next `wait` says so. Sends
//! made by handlers are queued and flushed together after the batch, so that
//! several messages to one peer leave in one `writev` and each `wait` (several
//! system calls in `polling`) is paid for by as much work as possible.

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

use crate::conn::{Conn, Phase};
use crate::handle::{Command, Handle};
use crate::signals::SignalPipe;
use crate::sys::{self, Interest, Registered, LISTENER_KEY, SIGNAL_KEY};
use crate::timers::Timers;
use crate::{CloseReason, Config, ConnId, Context, Error, Handler, Stream, TimerId};

/// Size of the read buffer the whole loop shares.
const READ_BUFFER: usize = 64 * 1024;
/// Below this much room the read buffer is replaced rather than read into.
const MIN_READ: usize = 16 * 1024;
/// Connections accepted per wakeup, so that a storm of new connections
/// cannot starve the ones already being served.
const ACCEPT_BATCH: usize = 64;
/// How long to stop accepting after running out of file descriptors: a
/// level-triggered listener stays readable while `accept` fails, so retrying
/// at once would spin the CPU.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Refused connections still being closed gracefully, at most; past it a
/// refused connection is closed at once.
const MAX_REFUSING: usize = 256;
/// Events taken from the poller per wait.
const EVENT_CAPACITY: usize = 1024;

/// `EMFILE`/`ENFILE` (the same on Linux, macOS and the BSDs): out of descriptors.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// The listening socket and whether accepting is paused.
struct Listener {
    io: Registered<TcpListener>,
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
/// #         cx.send(id, input.split().freeze());
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
    listener: Option<Listener>,
    signals: Option<Registered<SignalPipe>>,
    timers: Timers,
    mailbox: Receiver<Command<M>>,
    mailbox_tx: Sender<Command<M>>,
    /// The read buffer shared by every connection (see `read`).
    scratch: BytesMut,
    /// Slots with output to write after this batch.
    flush_list: Vec<usize>,
    /// Slots released in this batch, freed after it so that no later event
    /// of the same batch can reach a new connection in the same slot.
    dead: Vec<usize>,
    /// Slots attached before `run` whose handler has not been told yet.
    unannounced: Vec<usize>,
    /// Connections that started closing in this callback, whose handler is
    /// told (`on_close`) as soon as the callback returns.
    closing: Vec<(ConnId, CloseReason)>,
    /// Connections served, including those still closing: they count
    /// against `max_connections` until their descriptor is closed.
    open: usize,
    /// Refused connections still closing.
    refusing: usize,
    next_gen: u32,
    start: Instant,
    now: Instant,
    /// Whole seconds since `start`: the coarse clock of idle and close deadlines.
    tick: u32,
    next_sweep: Instant,
    stop_requested: bool,
    /// Set once a graceful stop has begun: the time by which it must end.
    stop_deadline: Option<Instant>,
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
            listener: None,
            signals: None,
            timers: Timers::default(),
            mailbox,
            mailbox_tx,
            scratch: BytesMut::zeroed(READ_BUFFER),
            flush_list: Vec::new(),
            dead: Vec::new(),
            unannounced: Vec::new(),
            closing: Vec::new(),
            open: 0,
            refusing: 0,
            next_gen: 1,
            start: now,
            now,
            tick: 0,
            next_sweep: now + Duration::from_secs(1),
            stop_requested: false,
            stop_deadline: None,
        })
    }

    /// Accepts connections from `listener` (made non-blocking here).
    pub fn listen(&mut self, listener: TcpListener) -> Result<(), Error> {
        self.listener = Some(Listener {
            io: sys::watch_listener(&self.poller, listener)?,
            paused_until: None,
        });
        Ok(())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.io.source().local_addr().ok()
    }

    /// Serves an already-connected stream (a socket, a pipe, a terminal). The
    /// handler's `on_open` is called when `run` starts. A descriptor that
    /// cannot be polled, such as a regular file, is refused with
    /// [`Error::NotPollable`].
    pub fn attach(&mut self, stream: impl Into<Stream>) -> Result<ConnId, Error> {
        let stream = stream.into();
        stream.prepare()?;
        let id = self.register(stream).map_err(|e| {
            // epoll answers EPERM for descriptors that are always ready.
            if e.kind() == io::ErrorKind::PermissionDenied {
                Error::NotPollable
            } else {
                Error::Io(e)
            }
        })?;
        self.unannounced.push(id.slot());
        self.open += 1;
        Ok(id)
    }

    /// Stops gracefully on SIGINT or SIGTERM (a second signal cuts the
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

    /// Connections served, counting those still closing.
    pub fn connections(&self) -> usize {
        self.open
    }

    /// Runs until stopped (signal, [`Context::stop`], [`Handle::stop`]) and
    /// every connection is closed, or the shutdown timeout has passed.
    pub fn run<H: Handler<Message = M>>(&mut self, handler: &mut H) -> Result<(), Error> {
        let mut events = Events::with_capacity(EVENT_CAPACITY.try_into().expect("non-zero"));
        loop {
            self.announce(handler);
            events.clear();
            self.poller.wait(&mut events, self.timeout())?;
            self.now = Instant::now();
            self.tick = self.now.duration_since(self.start).as_secs() as u32;

            for event in events.iter() {
                match event.key {
                    LISTENER_KEY => self.accept(handler),
                    SIGNAL_KEY => self.on_signal(),
                    key => {
                        let id = ConnId::from_bits(key as u64);
                        if event.readable {
                            self.read(handler, id);
                        }
                        if event.writable {
                            self.queue_flush(id);
                        }
                    }
                }
                self.tell_closed(handler);
            }
            while let Ok(cmd) = self.mailbox.try_recv() {
                match cmd {
                    Command::Message(msg) => handler.on_wake(self, msg),
                    Command::Stop => self.stop_requested = true,
                }
                self.tell_closed(handler);
            }
            while let Some(tag) = self.timers.pop_due(self.now) {
                handler.on_timer(self, tag);
                self.tell_closed(handler);
            }
            self.resume_accepting();
            if self.now >= self.next_sweep {
                self.sweep(handler);
            }
            if self.stop_requested && self.stop_deadline.is_none() {
                self.begin_stop(handler);
            }
            self.flush_all(handler);
            for slot in self.dead.drain(..) {
                // Dropping the connection deletes it from the poller, then closes it.
                self.conns.remove(slot);
            }
            if let Some(deadline) = self.stop_deadline {
                if self.conns.is_empty() {
                    return Ok(());
                }
                if self.now >= deadline {
                    self.cut_off_all(handler);
                    return Ok(());
                }
            }
        }
    }

    /// How long the next wait may sleep: until the earliest thing that must
    /// happen without an event.
    fn timeout(&self) -> Option<Duration> {
        // Work made outside the batch (by `on_open` of attached streams)
        // must not wait for an event.
        if !self.flush_list.is_empty() || (self.stop_requested && self.stop_deadline.is_none()) {
            return Some(Duration::ZERO);
        }
        let sweep = (!self.conns.is_empty()).then_some(self.next_sweep);
        let paused = self.listener.as_ref().and_then(|l| l.paused_until);
        [
            self.timers.next_deadline(),
            sweep,
            paused,
            self.stop_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(Instant::now()))
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
            self.release(handler, id, CloseReason::HandlerPanicked);
        }
    }

    fn register(&mut self, stream: Stream) -> io::Result<ConnId> {
        let entry = self.conns.vacant_entry();
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
        let id = ConnId::new(entry.key(), gen);
        let io = Registered::new(&self.poller, stream, id.to_bits() as usize, Interest::READ)?;
        entry.insert(Conn::new(io, gen, self.tick));
        Ok(id)
    }

    /// The connection `id` names, unless it is stale or already released.
    fn live(&mut self, id: ConnId) -> Option<&mut Conn> {
        live_in(&mut self.conns, id)
    }

    fn accept<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = &mut self.listener else {
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
            self.admit(handler, stream);
        }
    }

    fn admit<H: Handler<Message = M>>(&mut self, handler: &mut H, stream: std::net::TcpStream) {
        let over_limit = self.open >= self.config.max_connections;
        if over_limit && self.refusing >= MAX_REFUSING {
            return; // dropped: closed without a word
        }
        let stream = Stream::Tcp(stream);
        let id = match stream.prepare().and_then(|()| self.register(stream)) {
            Ok(id) => id,
            Err(e) => {
                log::warn!("cannot serve a new connection: {e}");
                return;
            }
        };
        let conn = &mut self.conns[id.slot()];
        if over_limit {
            self.refusing += 1;
            conn.refused = true;
            if let Some(refusal) = handler.refusal() {
                conn.queue(refusal);
            }
            self.begin_close(id, CloseReason::Requested);
        } else {
            self.open += 1;
            conn.owed_close = true;
            self.open_conn(handler, id);
        }
    }

    fn resume_accepting(&mut self) {
        if let Some(listener) = &mut self.listener {
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

    /// One read per readiness. The bytes land in the shared scratch buffer
    /// and are split off it without copying; only what the handler leaves
    /// unconsumed is copied into the connection's own buffer. So an idle
    /// connection holds no input memory, and a read that fills the buffer is
    /// simply followed by another readiness report.
    fn read<H: Handler<Message = M>>(&mut self, handler: &mut H, id: ConnId) {
        if self.scratch.len() < MIN_READ {
            self.renew_scratch();
        }
        // The slab alone, not `self.live`: the read below borrows the
        // scratch buffer at the same time.
        let Some(conn) = live_in(&mut self.conns, id) else {
            return;
        };
        let result = loop {
            match conn.io.source().read(&mut self.scratch) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                let reason = match conn.phase {
                    Phase::Closing(r) | Phase::Lingering(r) => r,
                    _ => CloseReason::from_error(&e),
                };
                self.release(handler, id, reason);
                return;
            }
        };
        if n == 0 {
            conn.read_closed = true;
            match conn.phase {
                Phase::Lingering(reason) => self.release(handler, id, reason),
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
        let mut data = self.scratch.split_to(n);

        // Hand the handler one contiguous buffer: the fresh bytes alone, or
        // appended to what it left last time.
        let mut kept = conn.take_input();
        let from_scratch = kept.is_empty();
        let input = if from_scratch {
            &mut data
        } else {
            kept.extend_from_slice(&data);
            &mut kept
        };
        // Input comes from strangers: a handler bug it triggers costs that
        // one connection, not every client of the loop.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.on_data(self, id, input)));
        if outcome.is_err() {
            log::error!("{id}: the handler panicked on this connection's input; closing it");
            self.release(handler, id, CloseReason::HandlerPanicked);
            return;
        }

        let max_input = self.config.max_input;
        let Some(conn) = self.live(id).filter(|c| c.is_open()) else {
            return;
        };
        if input.is_empty() {
            return;
        }
        if input.len() > max_input {
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

    /// Writes every connection that has output (one `writev` each), then
    /// watches for writability only those that still have some. Releasing a
    /// connection can make the handler send more, so repeat until done.
    fn flush_all<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        let mut list = mem::take(&mut self.flush_list);
        while !list.is_empty() {
            for slot in list.drain(..) {
                self.flush(handler, slot);
                self.tell_closed(handler);
            }
            mem::swap(&mut list, &mut self.flush_list);
        }
        // Hand the (empty) vector back so its capacity is reused.
        self.flush_list = list;
    }

    fn flush<H: Handler<Message = M>>(&mut self, handler: &mut H, slot: usize) {
        let max_output = self.config.max_output;
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
                _ => CloseReason::from_error(&e),
            };
            self.release(handler, id, reason);
            return;
        }
        if conn.output_len() > max_output {
            log::debug!("{id}: output limit ({} bytes queued)", conn.output_len());
            self.release(handler, id, CloseReason::OutputLimit);
            return;
        }
        if conn.output_len() == 0 {
            if let Phase::Closing(reason) = conn.phase {
                if conn.read_closed {
                    // Nothing more will come, and all is written: done.
                    self.release(handler, id, reason);
                    return;
                }
                // Tell the peer we are done, then wait for it to finish.
                let _ = conn.io.source().shutdown_write();
                conn.phase = Phase::Lingering(reason);
            }
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            match conn.io.set_interest(wanted) {
                Ok(()) => conn.interest = wanted,
                Err(e) => {
                    let reason = CloseReason::from_error(&e);
                    self.release(handler, id, reason);
                }
            }
        }
    }

    /// Starts closing `id` gracefully: flush, shut down writing, linger.
    /// For the handler the connection is gone at once: it can no longer
    /// send to it, and is told (`on_close`) when its callback returns.
    fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        let deadline = self
            .tick
            .saturating_add(secs_ceil(self.config.linger_timeout));
        let Some(conn) = self.live(id).filter(|c| c.is_open()) else {
            return;
        };
        conn.phase = Phase::Closing(reason);
        conn.deadline = deadline;
        if let Some(bufs) = &mut conn.bufs {
            bufs.input = BytesMut::new();
        }
        if conn.owed_close {
            self.closing.push((id, reason));
        }
        // Even with nothing to write, the flush is what moves it on.
        self.queue_flush(id);
    }

    /// Calls `on_close` for the connections that began closing during the
    /// last callback. Those calls may close more; they are told too.
    fn tell_closed<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        while let Some((id, reason)) = self.closing.pop() {
            if let Some(conn) = self.live(id).filter(|c| c.owed_close) {
                conn.owed_close = false;
                log::debug!("{id}: closed ({reason})");
                handler.on_close(self, id, reason);
            }
        }
    }

    /// Ends `id` now: tells the handler if it has not been told, and frees
    /// the slot (closing the descriptor) after the batch.
    fn release<H: Handler<Message = M>>(
        &mut self,
        handler: &mut H,
        id: ConnId,
        reason: CloseReason,
    ) {
        let Some(conn) = self.live(id) else { return };
        conn.phase = Phase::Dead;
        conn.bufs = None;
        let (owed_close, refused) = (conn.owed_close, conn.refused);
        conn.owed_close = false;
        self.dead.push(id.slot());
        if refused {
            self.refusing -= 1;
        } else {
            self.open -= 1;
        }
        if owed_close {
            log::debug!("{id}: closed ({reason})");
            handler.on_close(self, id, reason);
        }
    }

    /// Once a second: idle timeouts, close deadlines, and giving back the
    /// buffers of connections with nothing in flight.
    fn sweep<H: Handler<Message = M>>(&mut self, handler: &mut H) {
        self.next_sweep = self.now + Duration::from_secs(1);
        let idle_limit = self.config.idle_timeout.map(secs_ceil);
        let mut idle = Vec::new();
        let mut expired = Vec::new();
        for (slot, conn) in &mut self.conns {
            let id = ConnId::new(slot, conn.gen);
            match conn.phase {
                Phase::Open => {
                    if idle_limit.is_some_and(|l| self.tick.saturating_sub(conn.last_active) >= l) {
                        idle.push(id);
                    }
                }
                Phase::Closing(reason) | Phase::Lingering(reason) => {
                    if self.tick >= conn.deadline {
                        expired.push((id, reason));
                    }
                }
                Phase::Dead => {}
            }
            conn.release_idle_buffers();
        }
        for id in idle {
            self.begin_close(id, CloseReason::Idle);
        }
        for (id, reason) in expired {
            self.release(handler, id, reason);
        }
        self.tell_closed(handler);
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
        self.stop_deadline = Some(self.now + self.config.shutdown_timeout);
        self.listener = None;
        handler.on_stop(self);
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
            self.release(handler, id, CloseReason::Shutdown);
        }
        self.dead.clear();
        self.conns.clear();
    }
}

impl<M: Send + 'static> Context for Reactor<M> {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, to: ConnId, data: Bytes) -> bool {
        let Some(conn) = self.live(to).filter(|c| c.is_open()) else {
            return false;
        };
        if !data.is_empty() {
            conn.queue(data);
            self.queue_flush(to);
        }
        true
    }

    fn send_slice(&mut self, to: ConnId, data: &[u8]) -> bool {
        let Some(conn) = self.live(to).filter(|c| c.is_open()) else {
            return false;
        };
        if data.is_empty() {
            return true;
        }
        // Only with nothing queued: written now, it would overtake that.
        let written = if conn.output_len() == 0 {
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
        if written < data.len() {
            self.send(to, Bytes::copy_from_slice(&data[written..]));
        }
        true
    }

    fn backlogged(&self, id: ConnId) -> bool {
        let high = self.config.high_water;
        self.conns
            .get(id.slot())
            .is_none_or(|c| c.gen != id.gen() || !c.is_open() || c.output_len() > high)
    }

    fn pause_input(&mut self, _id: ConnId, _duration: Duration) {}

    fn close(&mut self, to: ConnId) {
        self.begin_close(to, CloseReason::Requested);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        self.timers.insert(self.now + after, tag)
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
