//! One connection's state in the slab: its stream, where it is in its life,
//! and its buffers — which exist only while data is in flight.

use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::BytesMut;

use crate::output::Output;
use crate::slots::Generation;
use crate::sys::{Interest, Registered};
use crate::transport::Transport;
use crate::{CloseReason, Origin, Stream};

/// Bytes written to one connection per turn, at most, before the others get
/// their turn; what is left waits for the next. Redis writes 64 KiB
/// (`NET_MAX_WRITES_PER_EVENT`); a fan-out turn can owe a fast reader more
/// than that (one 16 KiB read of tiny lines is about five times as much to
/// every recipient), and it must be able to keep up.
const WRITE_BUDGET: usize = 256 * 1024;

/// `soft_since` when the connection is not over its soft output limit.
pub(crate) const NOT_OVER: u32 = u32::MAX;
/// `idle_limit` of a connection that is never idle-timed-out.
pub(crate) const NEVER: u32 = u32::MAX;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving: input goes to the handler, output is queued.
    Open,
    /// Asked to close: output is still being flushed, input is discarded.
    Closing(CloseReason),
    /// Output flushed and write side shut down: waiting for the peer's end of
    /// stream (discarding input) so that closing does not reset the
    /// connection and destroy the last bytes we sent. Apache's lingering close.
    Lingering(CloseReason),
    /// Released: the handler is told (if it was not already) when the
    /// current callback returns; the slot is freed after the batch.
    Dead,
}

/// Input the handler has not consumed yet and output the peer has not read.
/// Boxed and optional in [`Conn`], so an idle connection carries one pointer.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub(crate) input: BytesMut,
    pub(crate) output: Output,
    /// Set by `Context::pause_input`: input is not read nor handed to the
    /// handler before then.
    pub(crate) paused_until: Option<Instant>,
}

/// A connection in the loop's slab.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) io: Registered<Stream>,
    pub(crate) transport: Transport,
    pub(crate) gen: u32,
    pub(crate) origin: Origin,
    pub(crate) phase: Phase,
    /// An outbound connection whose `connect` has not completed: it is
    /// watched for writability only, which is how completion is reported.
    pub(crate) connecting: bool,
    /// Not yet established (connecting, or in its TLS handshake): the
    /// handler is told `on_open` once it is.
    pub(crate) pending_open: bool,
    /// The handler was told of this connection (`on_open`) and has not yet
    /// been told it closed: it is owed exactly one `on_close`.
    pub(crate) owed_close: bool,
    /// Accepted over the connection limit only to be sent the refusal; the
    /// handler never hears of it.
    pub(crate) refused: bool,
    /// The peer has finished sending (we read end of stream).
    pub(crate) read_closed: bool,
    /// Its queued output passed `Config::high_water` and has not yet drained
    /// to `Config::low_water`: it is not read meanwhile.
    pub(crate) held_for_output: bool,
    /// What the poller watches this connection for now.
    pub(crate) interest: Interest,
    /// On the loop's list of connections to flush after this batch.
    pub(crate) flush_queued: bool,
    /// The turn in which a send was last written through (see
    /// `Context::send`): later sends of that turn are queued.
    pub(crate) written_through: u32,
    /// The loop's tick (whole seconds) of the last input, for the idle timeout.
    pub(crate) last_active: u32,
    /// Seconds without input after which it is closed, or `NEVER`.
    pub(crate) idle_limit: u32,
    /// The tick since which its output has been over `Config::soft_output`,
    /// or `NOT_OVER`.
    pub(crate) soft_since: u32,
    pub(crate) bufs: Option<Box<Buffers>>,
    /// The handler's state for this connection (`Handler::Conn`): out of
    /// its place only while a callback about this connection runs, and for
    /// good once `on_close` has it.
    pub(crate) state: Option<S>,
}

impl<S> Generation for Conn<S> {
    fn generation(&self) -> u32 {
        self.gen
    }
}

impl<S: Default> Conn<S> {
    pub(crate) fn new(
        io: Registered<Stream>,
        transport: Transport,
        gen: u32,
        origin: Origin,
        tick: u32,
    ) -> Conn<S> {
        Conn {
            io,
            transport,
            gen,
            origin,
            phase: Phase::Open,
            connecting: false,
            pending_open: false,
            owed_close: false,
            refused: false,
            read_closed: false,
            held_for_output: false,
            interest: Interest::READ,
            flush_queued: false,
            written_through: NEVER,
            last_active: tick,
            idle_limit: NEVER,
            soft_since: NOT_OVER,
            bufs: None,
            state: Some(S::default()),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// The buffers, made if there were none.
    pub(crate) fn bufs(&mut self) -> &mut Buffers {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// Bytes queued and not yet written.
    pub(crate) fn output_len(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.output.len())
    }

    /// What the queued output costs in memory (see `Output::cost`).
    pub(crate) fn output_cost(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.output.cost())
    }

    /// Whether its input is held back: by backpressure or by a pause.
    pub(crate) fn input_held(&self) -> bool {
        self.held_for_output || self.bufs.as_ref().is_some_and(|b| b.paused_until.is_some())
    }

    /// Bytes of input the handler left unconsumed.
    pub(crate) fn input_len(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.input.len())
    }

    /// Whether it has input the handler left unconsumed.
    pub(crate) fn has_input(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.input.is_empty())
    }

    /// Takes the unconsumed input, leaving none.
    pub(crate) fn take_input(&mut self) -> BytesMut {
        self.bufs
            .as_mut()
            .map(|b| std::mem::take(&mut b.input))
            .unwrap_or_default()
    }

    /// Keeps `input` (non-empty) until the next read.
    pub(crate) fn keep_input(&mut self, input: BytesMut) {
        self.bufs().input = input;
    }

    /// Gives back buffer memory when nothing is in flight, so that a quiet
    /// connection costs no more than its slab entry. Called from the
    /// once-a-second sweep rather than after every flush, so that a busy
    /// connection does not allocate its queue anew for every message.
    pub(crate) fn release_idle_buffers(&mut self) {
        if let Some(b) = &self.bufs {
            if b.output.is_empty() && b.input.is_empty() && b.paused_until.is_none() {
                self.bufs = None;
            }
        }
    }

    /// Writes `data` straight to the socket, ahead of no queued output;
    /// returns how much the socket took, 0 if it is full.
    pub(crate) fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        let slice = [IoSlice::new(data)];
        loop {
            match self.io.source().write_vectored(&slice) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                result => return result,
            }
        }
    }

    /// Writes queued output (through the transport) until the socket is
    /// full (`WouldBlock`), nothing is left, or `WRITE_BUDGET` bytes have
    /// gone out this turn. Returns `Ok` also when the socket is full.
    pub(crate) fn write_out(&mut self) -> io::Result<()> {
        if self.connecting {
            return Ok(());
        }
        let mut none = Output::default();
        let output = self.bufs.as_mut().map_or(&mut none, |b| &mut b.output);
        self.transport
            .write(self.io.source(), output, WRITE_BUDGET)
            .map(drop)
    }

    /// Whether everything it was sent, and everything its transport has
    /// to say, has been written.
    pub(crate) fn written(&self) -> bool {
        self.output_len() == 0 && !self.transport.wants_write()
    }

    /// What the poller should watch for: input unless the peer is done
    /// sending (a level-triggered end of stream would report forever) or an
    /// open connection's input is held; writability only while output waits.
    /// A closing connection is read whatever its holds, to see the peer's
    /// end of stream.
    ///
    /// A connection still connecting is watched for writability alone, and
    /// output waiting for a handshake is not written (the transport holds
    /// it) until the handshake is done, which a read brings.
    pub(crate) fn wanted_interest(&self) -> Interest {
        if self.connecting {
            return Interest::WRITE;
        }
        let held = self.is_open() && self.input_held();
        let output = self.output_len() > 0 && !self.transport.handshaking();
        Interest {
            read: !self.read_closed && !held,
            write: output || self.transport.wants_write(),
        }
    }
}
