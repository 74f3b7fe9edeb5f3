//! The layer between a connection's socket and its buffers: bytes as they
//! are, or TLS.
//!
//! TLS is rustls driven sans-IO: the loop reads ciphertext from the socket
//! itself (one bounded read per readiness, as for plain connections), hands
//! it to rustls, and takes the plaintext out into the same shared read
//! buffer the handler is given; on the way out, the connection's queued
//! plaintext is handed to rustls, which encrypts it, and the records are
//! written with the same vectored writes. So flow control works on both
//! sides of the encryption: the connection's output queue (plaintext) has
//! the usual limits, and rustls holds at most [`TLS_BUFFER`] of ciphertext
//! besides.
//!
//! The transport may want to write for reasons of its own — the handshake,
//! an alert, `close_notify` — and reads the handler never sees (handshake
//! messages): [`Transport::wants_write`] makes the loop watch for
//! writability, and a read that produced no plaintext is `WouldBlock` to it.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::output::Output;
use crate::{CloseReason, Stream};

/// Ciphertext rustls may hold, encrypted and not yet written, per
/// connection; also the plaintext it holds for a handshake still under way.
/// rustls's default.
const TLS_BUFFER: usize = 64 * 1024;

/// The most plaintext one TLS record carries (2^14 bytes). A read can
/// complete a record begun in an earlier one, so the plaintext of `n` bytes
/// of ciphertext is at most `n + MAX_RECORD`.
pub(crate) const MAX_RECORD: usize = 16 * 1024;

/// How a connection's bytes cross its socket.
#[derive(Debug)]
pub(crate) enum Transport {
    /// As they are.
    Plain,
    /// Through TLS. Boxed: a rustls connection is a few hundred bytes
    /// before its buffers, and plain connections should not pay for it.
    Tls(Box<Tls>),
}

/// One TLS session.
#[derive(Debug)]
pub(crate) struct Tls {
    session: rustls::Connection,
    /// `close_notify` has been queued.
    closing: bool,
    /// The peer has ended (`close_notify`, or the socket's end): once its
    /// last plaintext is taken, reads give the end without asking the
    /// socket, which may never be readable again (a peer that sends its
    /// last line and `close_notify` together, then waits).
    ended: bool,
    /// Handshake bytes a server has taken from its client so far, to bound
    /// what a client that never finishes its handshake can make it hold.
    handshake_input: usize,
}

/// The most a client may send before its handshake is done. A ClientHello
/// is a few hundred bytes to a few KiB (post-quantum key shares included);
/// rustls alone would hold up to 64 KiB of one, for as long as the
/// handshake deadline allows, for each of `max_connections` clients.
const MAX_HANDSHAKE_INPUT: usize = 8 * 1024;

/// The most rustls's `read_tls` takes in one call (its deframer's
/// `READ_SIZE`).
const RUSTLS_READ: usize = 4096;

impl Transport {
    /// The server side of TLS with `config`.
    pub(crate) fn tls_server(config: &Arc<rustls::ServerConfig>) -> io::Result<Transport> {
        let session = rustls::ServerConnection::new(Arc::clone(config)).map_err(tls_error)?;
        Ok(Transport::tls(session.into()))
    }

    /// The client side of TLS with `config`, for a server called `name`.
    pub(crate) fn tls_client(
        config: &Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Transport> {
        let session = rustls::ClientConnection::new(Arc::clone(config), name).map_err(tls_error)?;
        Ok(Transport::tls(session.into()))
    }

    fn tls(mut session: rustls::Connection) -> Transport {
        session.set_buffer_limit(Some(TLS_BUFFER));
        Transport::Tls(Box::new(Tls {
            session,
            closing: false,
            ended: false,
            handshake_input: 0,
        }))
    }

    /// Whether the handshake is still under way: the handler has not been
    /// told of the connection yet, and no application data can flow.
    pub(crate) fn handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.session.is_handshaking(),
        }
    }

    /// Whether the peer has ended its side (a TLS `close_notify` or the end
    /// of the stream seen through TLS): a read gives the rest and the end
    /// without the socket, so the driver should read again even if the
    /// socket is never readable again.
    pub(crate) fn peer_ended(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.ended)
    }

    /// Whether the transport has bytes of its own to write (handshake
    /// messages, alerts, encrypted records not yet taken by the socket).
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.session.wants_write(),
        }
    }

    /// Reads once from `stream` and puts the plaintext at the front of
    /// `plain`, returning how much; `Ok(0)` is the end of the stream.
    /// `cipher` is where TLS reads ciphertext to; `plain` must have room for
    /// [`MAX_RECORD`] more, so that all the plaintext is taken out of rustls
    /// now: what stayed there would wait for the socket to be readable
    /// again, which it may never be. A read that brought only handshake
    /// messages is `WouldBlock`: there is nothing for the handler.
    pub(crate) fn read(
        &mut self,
        stream: &Stream,
        cipher: &mut [u8],
        plain: &mut [u8],
    ) -> io::Result<usize> {
        let n = match self {
            Transport::Plain => return read_retrying(stream, plain),
            // The peer is done: what rustls still holds, then the end.
            Transport::Tls(tls) if tls.ended => 0,
            Transport::Tls(_) => read_retrying(stream, cipher)?,
        };
        let result = self.feed(&cipher[..n], plain);
        if let (Err(e), Transport::Tls(tls)) = (&result, self) {
            if is_tls_error(e) {
                // rustls has queued an alert saying what went wrong: try
                // once to send it, without waiting, before giving up.
                let _ = tls.session.write_tls(&mut Writer(stream));
            }
        }
        result
    }

    /// Hands rustls `cipher`, ciphertext read from the socket (empty: the
    /// end of the stream), and puts the plaintext it yields at the front of
    /// `plain`, as [`read`](Self::read) does after its read. For a driver
    /// that reads the socket itself, outside whatever guards the session.
    /// After a TLS error, rustls holds an alert to send (`wants_write`).
    /// Plain: `Unsupported`.
    ///
    /// `plain` should have room for `cipher.len()` plus
    /// [`MAX_RECORD`]: `cipher` may complete a record begun in an
    /// earlier read, so it can yield more plaintext than its own length.
    /// Plaintext that does not fit stays in rustls until the next call,
    /// late: a peer waiting for its answer may send nothing to make one.
    pub(crate) fn feed(&mut self, cipher: &[u8], plain: &mut [u8]) -> io::Result<usize> {
        let Transport::Tls(tls) = self else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        debug_assert!(cipher.len() + MAX_RECORD <= plain.len());
        let server = matches!(tls.session, rustls::Connection::Server(_));
        let mut rest = cipher;
        let mut got = 0;
        let mut ended = false;
        loop {
            // rustls takes at most one 4 KiB portion per call: feed it all,
            // taking the plaintext out between portions so that its
            // plaintext buffer never fills. An empty slice reads as the
            // end of the stream, which is what it is when `cipher` is empty.
            let (before, handshaking) = (rest.len(), tls.session.is_handshaking());
            if server && handshaking {
                // Counted a portion at a time, before rustls takes it (it
                // would keep it until the deadline): the portion that ends
                // the handshake may bring the first data with it, which is
                // no longer the handshake's once it is done.
                let portion = rest.len().min(RUSTLS_READ);
                if tls.handshake_input + portion > MAX_HANDSHAKE_INPUT {
                    let why = "the client's handshake is too large";
                    return Err(tls_error(rustls::Error::General(why.into())));
                }
            }
            tls.session.read_tls(&mut rest)?;
            if server && handshaking {
                tls.handshake_input += before - rest.len();
            }
            tls.session.process_new_packets().map_err(tls_error)?;
            // A full `plain` would read as `Ok(0)`, the end of the stream.
            while got < plain.len() {
                match tls.session.reader().read(&mut plain[got..]) {
                    Ok(0) => {
                        // `close_notify`: the peer will send no more.
                        ended = true;
                        break;
                    }
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The socket ended without `close_notify`. For our
                    // line protocols a truncation is visible anyway (a
                    // line without its end is dropped), so it reads as an
                    // ordinary end of stream.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        ended = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        tls.ended |= ended;
        match (got, ended) {
            // With plaintext, the end comes with the next read, which
            // `ended` answers without the socket: the driver reads again
            // (`peer_ended`).
            (0, true) => Ok(0),
            (0, false) => Err(io::ErrorKind::WouldBlock.into()),
            (got, _) => Ok(got),
        }
    }

    /// For a driver whose socket is written by another thread than the one
    /// that holds the session (the threaded driver's writer): appends to
    /// `records` what rustls has to send, its own messages first so that
    /// records leave in order, and encrypts plaintext from `output` — none
    /// while the handshake is under way — until `output` is empty or about
    /// [`TLS_BUFFER`] of records are waiting. Plain: does nothing.
    pub(crate) fn take_records(
        &mut self,
        output: &mut Output,
        records: &mut Vec<u8>,
    ) -> io::Result<()> {
        let Transport::Tls(tls) = self else {
            return Ok(());
        };
        loop {
            while tls.session.wants_write() {
                tls.session.write_tls(records)?;
            }
            if output.is_empty() || tls.session.is_handshaking() || records.len() >= TLS_BUFFER {
                return Ok(());
            }
            let taken = output.write_with(|slices| tls.session.writer().write_vectored(slices))?;
            if taken == 0 && !tls.session.wants_write() {
                // rustls takes no more (it has sent `close_notify`).
                return Ok(());
            }
        }
    }

    /// Writes `output` to `stream` until the socket is full
    /// (`Ok(false)`), everything is written (`Ok(true)`), or about `budget`
    /// bytes have gone out (`Ok(false)`). For TLS, what rustls already
    /// holds goes out before more is encrypted, so records leave in order.
    pub(crate) fn write(
        &mut self,
        stream: &Stream,
        output: &mut Output,
        mut budget: usize,
    ) -> io::Result<bool> {
        loop {
            if let Transport::Tls(tls) = self {
                while tls.session.wants_write() {
                    match tls.session.write_tls(&mut Writer(stream)) {
                        Ok(n) => budget = budget.saturating_sub(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) => return Err(e),
                    }
                    if budget == 0 {
                        return Ok(false);
                    }
                }
            }
            if output.is_empty() {
                return Ok(true);
            }
            let mut offered = 0;
            let result = output.write_with(|slices| {
                offered = slices.iter().map(|s| s.len()).sum();
                match self {
                    Transport::Plain => stream.write_vectored(slices),
                    Transport::Tls(tls) => tls.session.writer().write_vectored(slices),
                }
            });
            match (&mut *self, result) {
                // The socket took less than it was offered: it is full
                // now, and another write would only return `WouldBlock`.
                (Transport::Plain, Ok(written)) if written < offered => return Ok(false),
                (Transport::Plain, Ok(written)) => budget = budget.saturating_sub(written),
                // rustls's buffer is full: write it out first.
                (Transport::Tls(tls), Ok(0)) if !tls.session.wants_write() => return Ok(false),
                (Transport::Tls(_), Ok(_)) => {}
                (_, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                (_, Err(e)) => return Err(e),
            }
            if budget == 0 {
                return Ok(false);
            }
        }
    }

    /// Queues `close_notify`, once, so that the peer can tell our end of
    /// stream from a truncation; it is written like any other output.
    pub(crate) fn close(&mut self) {
        if let Transport::Tls(tls) = self {
            if !tls.closing {
                tls.closing = true;
                tls.session.send_close_notify();
            }
        }
    }
}

/// Whether `err` is the TLS layer failing (as opposed to the socket).
pub(crate) fn is_tls_error(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<rustls::Error>())
}

/// Why a connection whose read or write failed with `err` is closed: its
/// TLS layer failed, or its socket did.
pub(crate) fn close_reason(err: &io::Error) -> CloseReason {
    if is_tls_error(err) {
        CloseReason::Tls
    } else {
        CloseReason::from_error(err)
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn read_retrying(stream: &Stream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// `io::Write` over a stream the loop shares, for rustls's `write_tls`.
struct Writer<'a>(&'a Stream);

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match self.0.write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
