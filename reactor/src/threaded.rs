//! The thread-per-connection driver: the classic server that gives every
//! client its own thread, running the *same* [`Handler`] as the [`Reactor`].
//!
//! ```text
//!   main thread (run):   poll(listener, signals, Handle wake-ups; timeout = next timer)
//!        │  accept ─► spawn reader thread ─► on_open, spawns writer thread
//!        │  timers ─► on_timer      messages ─► on_wake      signal ─► stop
//!        ▼
//!   reader thread (one per client)       writer thread (one per client)
//!     blocking read ─► lock ─► on_data     wait for queued output ─► blocking writev
//!     end of stream / error ─► on_close    closing and flushed ─► shut down writing
//! ```
//!
//! The handler sits behind one mutex, so callbacks still run one at a time
//! and the handler cannot tell this driver from the reactor. Sends never
//! write: they queue on the recipient's outbox, which its own writer thread
//! drains. So a client that stops reading blocks only its writer, never the
//! thread that sent to it, and once its outbox passes `max_output` it is cut
//! off, as on the reactor.
//!
//! The main thread waits in a poller only so that it can watch the listener,
//! the signal pipe and [`Handle`] wake-ups at once; every client's I/O is
//! plain blocking calls on its own threads.
//!
//! [`Reactor`]: crate::Reactor

use std::io::{self, Read, Write};
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
use crate::sys::{self, Registered, LISTENER_KEY, SIGNAL_KEY};
use crate::timers::Timers;
use crate::{CloseReason, Config, ConnId, Context, Error, Handler, TimerId};

/// Client threads need little stack: they block in `read` and `writev`.
const STACK_SIZE: usize = 256 * 1024;
const READ_BUFFER: usize = 16 * 1024;
/// Refused connections lingering at once, at most (see the reactor's).
const MAX_REFUSING: usize = 256;

/// A thread-per-connection server for one [`Handler`].
pub struct Threaded<M> {
    poller: Arc<Poller>,
    listener: Option<Registered<TcpListener>>,
    signals: Option<Registered<SignalPipe>>,
    config: Config,
    mailbox: Receiver<Command<M>>,
    mailbox_tx: Sender<Command<M>>,
}

impl<M: Send + 'static> Threaded<M> {
    /// A server with no listener yet; set up like a [`Reactor`](crate::Reactor).
    /// `max_connections` is lowered if the system could not give that many
    /// clients their threads (see [`thread_capacity`]).
    pub fn new(mut config: Config) -> Result<Threaded<M>, Error> {
        if let Some(capacity) = thread_capacity() {
            if config.max_connections > capacity {
                log::warn!(
                    "serving at most {capacity} clients: vm.max_map_count allows no more threads"
                );
                config.max_connections = capacity;
            }
        }
        let poller = Arc::new(Poller::new().map_err(Error::Poller)?);
        let (mailbox_tx, mailbox) = mpsc::channel();
        Ok(Threaded {
            poller,
            listener: None,
            signals: None,
            config,
            mailbox,
            mailbox_tx,
        })
    }

    /// Accepts clients from `listener`.
    pub fn listen(&mut self, listener: TcpListener) -> Result<(), Error> {
        self.listener = Some(sys::watch_listener(&self.poller, listener)?);
        Ok(())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.source().local_addr().ok()
    }

    /// Stops gracefully on SIGINT or SIGTERM, as the reactor does.
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
                },
            }),
            live: Mutex::new(Live::default()),
            all_gone: Condvar::new(),
        };
        thread::scope(|scope| self.main_loop(scope, &shared))
    }

    fn main_loop<'scope, H>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
    ) -> Result<(), Error>
    where
        H: Handler<Message = M> + Send,
    {
        let mut events = Events::new();
        let mut stop_deadline: Option<Instant> = None;
        loop {
            let next_timer = shared.lock().core.timers.next_deadline();
            let timeout = [next_timer, stop_deadline]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(Instant::now()));
            events.clear();
            self.poller.wait(&mut events, timeout)?;

            for event in events.iter() {
                match event.key {
                    LISTENER_KEY => self.accept(scope, shared),
                    SIGNAL_KEY => {
                        let signalled = self.signals.as_ref().map_or(0, |s| s.source().drain());
                        if signalled == 0 {
                            continue;
                        }
                        if stop_deadline.is_some() {
                            log::info!("second signal: stopping now");
                            stop_deadline = Some(Instant::now());
                        } else {
                            log::info!("signal received: stopping");
                        }
                        shared.lock().core.stop_requested = true;
                    }
                    _ => {}
                }
            }
            while let Ok(cmd) = self.mailbox.try_recv() {
                let mut state = shared.lock();
                match cmd {
                    Command::Message(msg) => state.call(|h, cx| h.on_wake(cx, msg)),
                    Command::Stop => state.core.stop_requested = true,
                }
            }
            loop {
                let mut state = shared.lock();
                let Some(tag) = state.core.timers.pop_due(Instant::now(), u64::MAX) else {
                    break;
                };
                state.call(|h, cx| h.on_timer(cx, tag));
            }

            let mut state = shared.lock();
            if state.core.stop_requested && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + self.config.shutdown_timeout);
                self.listener = None;
                state.call(|h, cx| h.on_stop(cx));
                let ids: Vec<ConnId> = state.core.ids();
                for id in ids {
                    state.core.begin_close(id, CloseReason::Shutdown);
                }
                state.tell_closed();
            }
            drop(state);
            if let Some(deadline) = stop_deadline {
                if shared.wait_all_gone(deadline) {
                    return Ok(());
                }
                // Deadline passed: cut everyone off; their threads then end
                // and the scope joins them.
                shared.cut_off_all();
                return Ok(());
            }
        }
    }

    fn accept<'scope, H>(&self, scope: &'scope Scope<'scope, '_>, shared: &'scope Shared<'_, H>)
    where
        H: Handler<Message = M> + Send,
    {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let stream = match listener.source().accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the level-triggered
                    // listener will report again; pause so as not to spin.
                    log::warn!("accept: {e}");
                    thread::sleep(Duration::from_millis(100));
                    return;
                }
            };
            // Client threads do blocking I/O.
            if stream.set_nonblocking(false).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.admit(scope, shared, stream);
        }
    }

    fn admit<'scope, H>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        shared: &'scope Shared<'_, H>,
        stream: TcpStream,
    ) where
        H: Handler<Message = M> + Send,
    {
        let config = &self.config;
        let stream = Arc::new(stream);
        let mut live = recover(shared.live.lock());
        let refused = live.sockets.len() - live.refusing >= config.max_connections;
        if refused && live.refusing >= MAX_REFUSING {
            return;
        }
        let key = live.sockets.insert(Arc::clone(&stream));
        live.refusing += usize::from(refused);
        drop(live);
        let config = config.clone();
        let spawned = spawn(scope, move || {
            // However the thread ends, its place is given back.
            let _done = ThreadDone {
                shared,
                key,
                refused,
            };
            if refused {
                // Asked here, not on the accepting thread: see `serve_client`.
                let refusal = shared.lock().handler.refusal();
                if let Some(text) = refusal {
                    let _ = (&*stream).write_all(&text);
                }
                linger(&stream, config.linger_timeout);
            } else {
                serve_client(scope, shared, stream, &config);
            }
        });
        if !spawned {
            shared.thread_done(key, refused);
        }
    }
}

/// Gives a client thread's place in `Live` back when dropped: at the end of
/// the thread, or as a panic unwinds it, so a handler bug cannot leak a
/// place under `max_connections` or leave a graceful stop waiting.
struct ThreadDone<'a, 'h, H: Handler> {
    shared: &'a Shared<'h, H>,
    key: usize,
    refused: bool,
}

impl<H: Handler> Drop for ThreadDone<'_, '_, H> {
    fn drop(&mut self) {
        self.shared.thread_done(self.key, self.refused);
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
    stream: Arc<TcpStream>,
    config: &Config,
) where
    H: Handler + Send,
{
    let outbox = Arc::new(Outbox::default());
    let id = {
        let mut state = shared.lock();
        if state.core.stop_requested {
            // Accepted as the server stops: closed unserved, but gently, so
            // that unread input (a `Hi` already sent) does not reset it.
            drop(state);
            linger(&stream, config.linger_timeout);
            return;
        }
        let id = state.core.insert(Arc::clone(&stream), Arc::clone(&outbox));
        // As with `on_data`: a panic here costs this client only.
        let call = || state.call(|h, cx| h.on_open(cx, id));
        if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
            log::error!("{id}: the handler panicked opening this connection; closing it");
            state.release(id, CloseReason::HandlerPanicked);
            return;
        }
        id
    };
    let writer_stream = Arc::clone(&stream);
    let writer_outbox = Arc::clone(&outbox);
    let writer = thread::Builder::new()
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, move || write_loop(&writer_stream, &writer_outbox));
    match writer {
        Ok(writer) => {
            read_loop(shared, id, &stream, &outbox, config);
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

/// Everything the threads share.
struct Shared<'h, H: Handler> {
    state: Mutex<State<'h, H>>,
    live: Mutex<Live>,
    all_gone: Condvar,
}

/// The sockets of client threads still running, closing ones included:
/// what a graceful stop waits for, and cuts off when its deadline passes.
#[derive(Default)]
struct Live {
    sockets: Slab<Arc<TcpStream>>,
    /// How many of them are refusals.
    refusing: usize,
}

impl<'h, H: Handler> Shared<'h, H> {
    fn lock(&self) -> MutexGuard<'_, State<'h, H>> {
        recover(self.state.lock())
    }

    fn thread_done(&self, key: usize, refused: bool) {
        let mut live = recover(self.live.lock());
        live.sockets.remove(key);
        if refused {
            live.refusing -= 1;
        }
        self.all_gone.notify_all();
    }

    /// Waits until every client thread has ended or `deadline` passes.
    fn wait_all_gone(&self, deadline: Instant) -> bool {
        let mut live = recover(self.live.lock());
        while !live.sockets.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = recover(self.all_gone.wait_timeout(live, left)).0;
        }
        true
    }

    fn cut_off_all(&self) {
        let mut state = self.lock();
        let ids = state.core.ids();
        for id in ids {
            state.release(id, CloseReason::Shutdown);
        }
        drop(state);
        // Those already closing too: every client thread wakes and ends.
        let live = recover(self.live.lock());
        for (_, socket) in &live.sockets {
            let _ = socket.shutdown(Shutdown::Both);
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

    fn tell_closed(&mut self) {
        while let Some((id, reason)) = self.core.closing.pop() {
            log::debug!("{id}: closed ({reason})");
            self.handler.on_close(&mut self.core, id, reason);
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
}

impl Core {
    fn insert(&mut self, stream: Arc<TcpStream>, outbox: Arc<Outbox>) -> ConnId {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
        let slot = self.peers.insert(Peer {
            gen,
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
            peer.outbox.abort();
            let _ = peer.stream.shutdown(Shutdown::Both);
            self.closing.push((id, reason));
        }
    }

    /// Closes `id` gracefully: its writer flushes and shuts down writing,
    /// its reader discards input until the peer finishes (lingering close).
    fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(peer) = self.remove(id) {
            peer.outbox.finish();
            self.closing.push((id, reason));
        }
    }
}

impl Context for Core {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, to: ConnId, data: Bytes) -> bool {
        let Some(peer) = self.get(to) else {
            return false;
        };
        if peer.outbox.push(data) > self.config.max_output {
            log::debug!("{to}: output limit");
            self.abort(to, CloseReason::OutputLimit);
        }
        true
    }

    fn backlogged(&self, id: ConnId) -> bool {
        self.get(id)
            .is_none_or(|p| p.outbox.lock().cost() > self.config.high_water)
    }

    fn pause_input(&mut self, _id: ConnId, _duration: Duration) {}

    fn close(&mut self, to: ConnId) {
        self.begin_close(to, CloseReason::Requested);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        let at = Instant::now() + after;
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
}

/// One client's output queue, shared by whoever sends and its writer thread.
#[derive(Default)]
struct Outbox {
    queue: Mutex<OutQueue>,
    ready: Condvar,
}

#[derive(Default)]
struct OutQueue {
    out: Output,
    /// Bytes the writer has taken from `out` and not yet written.
    in_flight: usize,
    /// Flush what is queued, then shut down writing.
    finishing: bool,
    /// Stop at once.
    aborted: bool,
    /// The writer thread has ended.
    done: bool,
}

impl OutQueue {
    /// What is owed: queued, and taken by the writer but not yet written.
    fn cost(&self) -> usize {
        self.out.cost() + self.in_flight
    }
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutQueue> {
        recover(self.queue.lock())
    }

    /// Queues `data`; returns what the queue now costs.
    fn push(&self, data: Bytes) -> usize {
        let mut q = self.lock();
        if !data.is_empty() {
            q.out.push(&data);
            // All: the reader may be waiting on the same condvar (`wait_done`).
            self.ready.notify_all();
        }
        q.cost()
    }

    fn finish(&self) {
        self.lock().finishing = true;
        self.ready.notify_all();
    }

    fn abort(&self) {
        self.lock().aborted = true;
        self.ready.notify_all();
    }

    /// Waits until the writer thread has ended, at most `timeout`.
    fn wait_done(&self, timeout: Duration) -> bool {
        let q = self.lock();
        let (q, _) = recover(self.ready.wait_timeout_while(q, timeout, |q| !q.done));
        q.done
    }
}

/// The writer thread: writes whatever is queued, several chunks per `writev`.
fn write_loop(stream: &TcpStream, outbox: &Outbox) {
    let mut batch = Output::default();
    'outer: loop {
        {
            let mut q = outbox.lock();
            while q.out.is_empty() && !q.finishing && !q.aborted {
                q = recover(outbox.ready.wait(q));
            }
            if q.aborted {
                break;
            }
            if q.out.is_empty() {
                // Finishing and flushed: tell the peer we are done.
                let _ = stream.shutdown(Shutdown::Write);
                break;
            }
            std::mem::swap(&mut batch, &mut q.out);
            q.in_flight = batch.len();
        }
        while !batch.is_empty() {
            match batch.write_with(|slices| (&*stream).write_vectored(slices)) {
                Ok(0) => break 'outer,
                Ok(written) => outbox.lock().in_flight -= written,
                // The reader sees the broken connection too and reports it.
                Err(_) => break 'outer,
            }
        }
    }
    outbox.lock().done = true;
    outbox.ready.notify_all();
}

/// The reader thread: reads, hands the handler what arrived, and reports
/// the end of the connection. Once the connection is closing it only
/// discards input until the peer finishes (or `linger_timeout`).
fn read_loop<H: Handler>(
    shared: &Shared<'_, H>,
    id: ConnId,
    stream: &TcpStream,
    outbox: &Outbox,
    config: &Config,
) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut input = BytesMut::new();
    let _ = stream.set_read_timeout(config.idle_timeout);
    let mut lingering = false;
    loop {
        let n = match (&*stream).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if lingering {
                    break; // linger_timeout passed
                }
                shared.lock().close(id, CloseReason::Idle);
                0
            }
            Err(e) => {
                shared.lock().release(id, CloseReason::from_error(&e));
                break;
            }
        };
        let mut state = shared.lock();
        if state.core.get(id).is_none() {
            // Closing: discard, and wait for the end of the stream.
            drop(state);
            if n == 0 {
                break;
            }
            if !lingering {
                lingering = true;
                let _ = stream.set_read_timeout(Some(config.linger_timeout));
            }
            continue;
        }
        if n == 0 {
            state.close(id, CloseReason::PeerClosed);
            break;
        }
        input.extend_from_slice(&buf[..n]);
        // As on the reactor: a panic on one client's input costs that client.
        let call = || state.call(|h, cx| h.on_data(cx, id, &mut input));
        if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
            log::error!("{id}: the handler panicked on this connection's input; closing it");
            state.release(id, CloseReason::HandlerPanicked);
            break;
        }
        if input.len() > config.max_input && state.core.get(id).is_some() {
            state.close(id, CloseReason::InputLimit);
        }
        if input.is_empty() {
            // Give the memory back: most of the time nothing is left over.
            input = BytesMut::new();
        }
    }
    // Let the writer flush what is owed (a half-closed peer still reads),
    // but not forever.
    if !outbox.wait_done(config.linger_timeout) {
        outbox.abort();
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Lingering close of a connection we only wrote to: shut down writing,
/// then discard input until the peer finishes or `timeout` passes, so that
/// unread input does not turn our close into a reset.
fn linger(stream: &TcpStream, timeout: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(timeout));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match (&*stream).read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
