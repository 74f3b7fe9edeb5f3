//! The sockets loadgen drives, and what it does with them: connect without
//! blocking, read once per readiness into one shared buffer, and write what
//! a batch queued with one `write` per connection — the shape of the
//! reactor's loop, so that the client costs no more per message than the
//! servers it measures. With `--tls` the same reads and writes carry
//! ciphertext, and `tls` sits between them and the workload.
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

use crate::tls;

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
    /// for writability, which it does only while output waits; `tls` is
    /// the connection's TLS state, if it speaks TLS (boxed: a plain run
    /// should not carry its size in every slot).
    Open {
        stream: TcpStream,
        kept: Vec<u8>,
        out_watched: bool,
        tls: Option<Box<tls::Session>>,
    },
}

/// What a read found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// The connection is up; any input was handed over.
    Open,
    /// The TLS handshake has just completed: the connection may be used
    /// from now on. Input that came with the end of the handshake is kept
    /// for [`Net::drain`], so that the workload hears of the connection
    /// before it hears from it.
    Established,
    /// The server closed the connection (after what came before was
    /// handed over).
    Closed,
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
    /// Speak TLS on every connection, as this client.
    tls: Option<tls::Client>,
    /// What the first TLS handshake settled on (they all settle on the
    /// same with one server).
    negotiated: Option<String>,
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
    /// Room for `count` connections, none connected; each speaks TLS as
    /// `tls` if given.
    pub fn new(count: usize, tls: Option<tls::Client>) -> io::Result<Net> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let slots = (0..count).map(|_| Slot::Empty).collect();
        Ok(Net {
            epoll,
            slots,
            scratch: vec![0; READ_BUFFER],
            tls,
            negotiated: None,
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

    /// The TLS protocol version and cipher suite of the first handshake
    /// done, as `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub fn negotiated(&self) -> Option<&str> {
        self.negotiated.as_deref()
    }

    /// Whether `conn` is up and may be used: connected, and done with its
    /// TLS handshake if it has one.
    pub fn is_established(&self, conn: usize) -> bool {
        match &self.slots[conn] {
            Slot::Open { tls, .. } => !tls.as_ref().is_some_and(|t| t.is_handshaking()),
            Slot::Empty | Slot::Connecting(_) => false,
        }
    }

    /// Completes the connect of `conn` after it reported writable: fails
    /// with the connect's error (refused, unreachable), or starts watching
    /// the connection for input. Returns whether it is established; a TLS
    /// connection is not yet: its ClientHello is on its way, and a read
    /// says when the handshake is done.
    pub fn finish_connect(&mut self, conn: usize) -> io::Result<bool> {
        let Slot::Connecting(socket) = std::mem::replace(&mut self.slots[conn], Slot::Empty) else {
            return Ok(false);
        };
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        let mut stream: TcpStream = socket.into();
        let mut session = self.tls.as_ref().map(tls::Client::session).transpose()?;
        let left = match &mut session {
            Some(session) => session.write_to(&mut stream)?,
            None => false,
        };
        epoll::modify(
            &self.epoll,
            &stream,
            epoll::EventData::new_u64(conn as u64),
            interest(left),
        )?;
        let established = session.is_none();
        self.slots[conn] = Slot::Open {
            stream,
            kept: Vec::new(),
            out_watched: left,
            tls: session.map(Box::new),
        };
        Ok(established)
    }

    /// Closes `conn` (saying close_notify first if it speaks TLS); its slot
    /// may be connected again.
    pub fn close(&mut self, conn: usize) {
        if let Slot::Open {
            mut stream,
            tls: Some(mut session),
            ..
        } = std::mem::replace(&mut self.slots[conn], Slot::Empty)
        {
            session.close(&mut stream);
        }
        // Dropping the socket closes it, and epoll forgets it.
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
    /// for the next read. Over TLS the bytes read are ciphertext: what is
    /// handed over is the plaintext they hold, and anything rustls has to
    /// say in return (the rest of the handshake, an alert) is written.
    pub fn read<E>(
        &mut self,
        conn: usize,
        consume: impl FnOnce(&[u8]) -> Result<usize, E>,
    ) -> Result<Result<Status, E>, ConnError> {
        let Slot::Open {
            stream,
            kept,
            out_watched,
            tls,
        } = &mut self.slots[conn]
        else {
            return Ok(Ok(Status::Open));
        };
        let fail = |error| ConnError { conn, error };
        let n = loop {
            match stream.read(&mut self.scratch) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Ok(Status::Open)),
                Err(error) => return Err(fail(error)),
            }
        };
        let fresh = &self.scratch[..n];
        let Some(session) = tls else {
            if n == 0 {
                return Ok(Ok(Status::Closed));
            }
            // Usually nothing is kept and the fresh bytes are handed over
            // where they landed; only a remainder is copied, as in the
            // reactor.
            let result = if kept.is_empty() {
                consume(fresh).map(|used| kept.extend_from_slice(&fresh[used..]))
            } else {
                kept.extend_from_slice(fresh);
                hand_over(kept, consume)
            };
            return check_kept(conn, kept).map(|()| result.map(|()| Status::Open));
        };
        let received = session.receive(fresh, kept);
        // Whatever rustls wants to say goes out now, an alert before a
        // failure included. Only flush stops watching for room to write:
        // the workload's output may be waiting too.
        let left = session.write_to(stream).map_err(fail);
        let received = received.map_err(fail)?;
        if left? && !*out_watched {
            watch(&self.epoll, conn, stream, true).map_err(fail)?;
            *out_watched = true;
        }
        check_kept(conn, kept)?;
        if received.established {
            if self.negotiated.is_none() {
                self.negotiated = session.negotiated();
            }
            return Ok(Ok(Status::Established));
        }
        let result = if kept.is_empty() {
            Ok(())
        } else {
            hand_over(kept, consume)
        };
        let status = if received.closed {
            Status::Closed
        } else {
            Status::Open
        };
        Ok(result.map(|()| status))
    }

    /// Hands what was kept for `conn` to `consume` without reading: the
    /// plaintext that came with the end of a TLS handshake, once the
    /// workload knows of the connection ([`Status::Established`]).
    pub fn drain<E>(
        &mut self,
        conn: usize,
        consume: impl FnOnce(&[u8]) -> Result<usize, E>,
    ) -> Result<(), E> {
        match &mut self.slots[conn] {
            Slot::Open { kept, .. } if !kept.is_empty() => hand_over(kept, consume),
            _ => Ok(()),
        }
    }

    /// Writes what `outbox` holds for `conn`, as much as the socket takes,
    /// and watches the socket for writability only while some is left. Over
    /// TLS, what is left may be rustls's own (handshake messages).
    pub fn flush(&mut self, conn: usize, outbox: &mut Outbox) -> Result<(), ConnError> {
        let Slot::Open {
            stream,
            out_watched,
            tls,
            ..
        } = &mut self.slots[conn]
        else {
            return Ok(());
        };
        let buf = &mut outbox.bufs[conn];
        let written = &mut outbox.written[conn];
        let fail = |error| ConnError { conn, error };
        let left = match tls {
            None => {
                // One write: if it is short, the socket is full, and
                // level-triggered epoll says when there is room again.
                while *written < buf.len() {
                    match stream.write(&buf[*written..]) {
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(fail(e)),
                    }
                    break;
                }
                *written < buf.len()
            }
            Some(session) => loop {
                // rustls encrypts up to 64 KiB at a time: encrypt, write,
                // and again while the socket takes it all.
                *written += session.send(&buf[*written..]).map_err(fail)?;
                let tls_left = session.write_to(stream).map_err(fail)?;
                if tls_left || *written == buf.len() {
                    break tls_left || *written < buf.len();
                }
            },
        };
        if *written == buf.len() {
            buf.clear();
            *written = 0;
        }
        if left != *out_watched {
            watch(&self.epoll, conn, stream, left).map_err(fail)?;
            *out_watched = left;
        }
        Ok(())
    }
}

/// Hands `kept` to `consume` and drops what it used.
fn hand_over<E>(
    kept: &mut Vec<u8>,
    consume: impl FnOnce(&[u8]) -> Result<usize, E>,
) -> Result<(), E> {
    consume(kept).map(|used| {
        kept.drain(..used);
    })
}

/// Fails `conn` if more has piled up in `kept` than any message needs.
fn check_kept(conn: usize, kept: &[u8]) -> Result<(), ConnError> {
    if kept.len() > MAX_KEPT {
        let msg = format!("more than {MAX_KEPT} bytes arrived without the end of a message");
        let error = io::Error::new(io::ErrorKind::InvalidData, msg);
        return Err(ConnError { conn, error });
    }
    Ok(())
}

/// The events to watch a connection for: input always, room to write
/// while output waits.
fn interest(writing: bool) -> epoll::EventFlags {
    if writing {
        epoll::EventFlags::IN | epoll::EventFlags::OUT
    } else {
        epoll::EventFlags::IN
    }
}

/// Watches `stream`, connection `conn`, for input, and for room to write
/// if `writing`.
fn watch(epoll: &OwnedFd, conn: usize, stream: &TcpStream, writing: bool) -> io::Result<()> {
    let data = epoll::EventData::new_u64(conn as u64);
    epoll::modify(epoll, stream, data, interest(writing)).map_err(io::Error::from)
}
