//! The sockets loadgen drives, and what it does with them: connect without
//! blocking, read once per readiness into one shared buffer, and write what
//! a batch queued with one `write` per connection — the shape of the
//! reactor's loop, so that the client costs no more per message than the
//! servers it measures.
//!
//! epoll is called through rustix rather than `polling`: `polling`'s `wait`
//! costs about five system calls on Linux (a timer and a notifier are re-armed
//! every time, see /work/shared/design-notes.md), and a load generator that
//! pays more per message than its server would be measuring itself.
//! rustix's epoll is safe Rust and costs one.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{epoll, Timespec};
use socket2::{Domain, SockAddr, Socket, Type};

/// Size of the read buffer every connection shares.
const READ_BUFFER: usize = 64 * 1024;
/// Most input kept for one connection between reads: a server that sends
/// more than this without the framing the workload expects is broken.
const MAX_KEPT: usize = 1 << 20;
/// `EINPROGRESS`: a non-blocking connect that has started.
const EINPROGRESS: i32 = 115;

/// Where one connection stands.
enum Slot {
    /// Not connected yet.
    Empty,
    /// A non-blocking connect is under way: the socket becomes writable
    /// when it is done, one way or the other.
    Connecting(Socket),
    /// Connected. `kept` is input the workload has not consumed yet (a
    /// partial line or frame); `out_watched` says whether epoll watches it
    /// for writability, which it does only while output waits.
    Open {
        stream: TcpStream,
        kept: Vec<u8>,
        out_watched: bool,
    },
}

/// Output queued for each connection during a batch, written after it.
pub struct Outbox {
    bufs: Vec<Vec<u8>>,
    /// How much of each buffer is already written.
    written: Vec<usize>,
    queued: Vec<bool>,
    dirty: Vec<usize>,
}

impl Outbox {
    /// An outbox for `count` connections, all empty.
    pub fn new(count: usize) -> Outbox {
        Outbox {
            bufs: vec![Vec::new(); count],
            written: vec![0; count],
            queued: vec![false; count],
            dirty: Vec::new(),
        }
    }

    /// The buffer to append output for `conn` to; it is written after the
    /// batch.
    pub fn buf(&mut self, conn: usize) -> &mut Vec<u8> {
        self.mark(conn);
        &mut self.bufs[conn]
    }

    /// Puts `conn` on the list of connections to write after the batch.
    fn mark(&mut self, conn: usize) {
        if !self.queued[conn] {
            self.queued[conn] = true;
            self.dirty.push(conn);
        }
    }

    /// Takes the list of connections with output to write.
    pub fn take_dirty(&mut self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &conn in into.iter() {
            self.queued[conn] = false;
        }
    }
}

/// A failed connection: which one, and why.
#[derive(Debug)]
pub struct ConnError {
    /// The connection's index.
    pub conn: usize,
    /// What went wrong.
    pub error: io::Error,
}

/// Every connection of a run, and the epoll instance watching them.
pub struct Net {
    epoll: OwnedFd,
    slots: Vec<Slot>,
    scratch: Vec<u8>,
}

/// Readiness for one connection, out of a wait.
#[derive(Clone, Copy)]
pub struct Ready {
    /// The connection's index.
    pub conn: usize,
    /// Input (or end of stream, or an error) is waiting.
    pub readable: bool,
    /// Room to write, or a connect finished.
    pub writable: bool,
}

impl Net {
    /// Room for `count` connections, none connected.
    pub fn new(count: usize) -> io::Result<Net> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let slots = (0..count).map(|_| Slot::Empty).collect();
        Ok(Net {
            epoll,
            slots,
            scratch: vec![0; READ_BUFFER],
        })
    }

    /// Starts connecting `conn` to `addr`, from `source` if given (an
    /// address to bind first, so that more than one local address shares
    /// the connections when one runs out of ports).
    pub fn connect(
        &mut self,
        conn: usize,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        // Messages are written whole, a batch at a time: no Nagle delay.
        socket.set_tcp_nodelay(true)?;
        if let Some(ip) = source {
            socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        epoll::add(
            &self.epoll,
            &socket,
            epoll::EventData::new_u64(conn as u64),
            epoll::EventFlags::OUT,
        )?;
        self.slots[conn] = Slot::Connecting(socket);
        Ok(())
    }

    /// Whether `conn` is still connecting.
    pub fn is_connecting(&self, conn: usize) -> bool {
        matches!(self.slots[conn], Slot::Connecting(_))
    }

    /// Completes the connect of `conn` after it reported writable: fails
    /// with the connect's error (refused, unreachable), or starts watching
    /// the connection for input.
    pub fn finish_connect(&mut self, conn: usize) -> io::Result<()> {
        let Slot::Connecting(socket) = std::mem::replace(&mut self.slots[conn], Slot::Empty) else {
            return Ok(());
        };
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        let stream: TcpStream = socket.into();
        epoll::modify(
            &self.epoll,
            &stream,
            epoll::EventData::new_u64(conn as u64),
            epoll::EventFlags::IN,
        )?;
        self.slots[conn] = Slot::Open {
            stream,
            kept: Vec::new(),
            out_watched: false,
        };
        Ok(())
    }

    /// Waits up to `timeout` for readiness and appends it to `ready`.
    pub fn wait(
        &self,
        events: &mut Vec<epoll::Event>,
        ready: &mut Vec<Ready>,
        timeout: Duration,
    ) -> io::Result<()> {
        events.clear();
        let timeout = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        match epoll::wait(&self.epoll, spare_capacity(events), Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let bad = epoll::EventFlags::ERR | epoll::EventFlags::HUP;
        ready.clear();
        ready.extend(events.iter().map(|event| {
            let flags = event.flags;
            Ready {
                conn: event.data.u64() as usize,
                // An error or hang-up shows up as a failed or empty read.
                readable: flags.intersects(epoll::EventFlags::IN | bad),
                writable: flags.intersects(epoll::EventFlags::OUT | bad),
            }
        }));
        Ok(())
    }

    /// Reads `conn` once and hands everything unconsumed so far to
    /// `consume`, which returns how many bytes it used; the rest is kept
    /// for the next read. Returns whether the connection is still open:
    /// `Ok(false)` at the server's end of stream.
    pub fn read<E>(
        &mut self,
        conn: usize,
        consume: impl FnOnce(&[u8]) -> Result<usize, E>,
    ) -> Result<Result<bool, E>, ConnError> {
        let Slot::Open { stream, kept, .. } = &mut self.slots[conn] else {
            return Ok(Ok(true));
        };
        let n = loop {
            match stream.read(&mut self.scratch) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Ok(true)),
                Err(error) => return Err(ConnError { conn, error }),
            }
        };
        if n == 0 {
            return Ok(Ok(false));
        }
        let fresh = &self.scratch[..n];
        // Usually nothing is kept and the fresh bytes are handed over where
        // they landed; only a remainder is copied, as in the reactor.
        let result = if kept.is_empty() {
            consume(fresh).map(|used| {
                kept.extend_from_slice(&fresh[used..]);
            })
        } else {
            kept.extend_from_slice(fresh);
            consume(kept).map(|used| {
                kept.drain(..used);
            })
        };
        if kept.len() > MAX_KEPT {
            let msg = format!("more than {MAX_KEPT} bytes arrived without the end of a message");
            let error = io::Error::new(io::ErrorKind::InvalidData, msg);
            return Err(ConnError { conn, error });
        }
        Ok(result.map(|()| true))
    }

    /// Writes what `outbox` holds for `conn`, as much as the socket takes,
    /// and watches the socket for writability only while some is left.
    pub fn flush(&mut self, conn: usize, outbox: &mut Outbox) -> Result<(), ConnError> {
        let Slot::Open {
            stream,
            out_watched,
            ..
        } = &mut self.slots[conn]
        else {
            return Ok(());
        };
        let buf = &mut outbox.bufs[conn];
        let written = &mut outbox.written[conn];
        let fail = |error| ConnError { conn, error };
        // One write: if it is short, the socket is full, and level-triggered
        // epoll says when there is room again.
        while *written < buf.len() {
            match stream.write(&buf[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(e)),
            }
            break;
        }
        let left = *written < buf.len();
        if !left {
            buf.clear();
            *written = 0;
        }
        if left != *out_watched {
            let flags = if left {
                epoll::EventFlags::IN | epoll::EventFlags::OUT
            } else {
                epoll::EventFlags::IN
            };
            let data = epoll::EventData::new_u64(conn as u64);
            epoll::modify(&self.epoll, &*stream, data, flags).map_err(|e| fail(e.into()))?;
            *out_watched = left;
        }
        Ok(())
    }
}
