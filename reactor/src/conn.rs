//! One connection's state in the slab: its stream, where it is in its life,
//! and its buffers — which exist only while data is in flight.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};

use crate::sys::{Interest, Registered};
use crate::{CloseReason, Stream};

/// Most chunks handed to one `writev`. Linux allows 1024; 64 already turns a
/// burst of small messages into one system call.
const MAX_IOV: usize = 64;

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
    /// Released: the handler has been told; the slot is freed after the batch.
    Dead,
}

/// Input the handler has not consumed yet and output the peer has not read.
/// Boxed and optional in [`Conn`], so an idle connection carries one pointer.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub(crate) input: BytesMut,
    output: VecDeque<Bytes>,
    output_len: usize,
}

/// A connection in the loop's slab.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: Registered<Stream>,
    pub(crate) gen: u32,
    pub(crate) phase: Phase,
    /// The handler was told of this connection (`on_open`) and has not yet
    /// been told it closed: it is owed exactly one `on_close`.
    pub(crate) owed_close: bool,
    /// Accepted over the connection limit only to be sent the refusal; the
    /// handler never hears of it.
    pub(crate) refused: bool,
    /// The peer has finished sending (we read end of stream).
    pub(crate) read_closed: bool,
    /// What the poller watches this connection for now.
    pub(crate) interest: Interest,
    /// On the loop's list of connections to flush after this batch.
    pub(crate) flush_queued: bool,
    /// The loop's tick (whole seconds) of the last input, for the idle timeout.
    pub(crate) last_active: u32,
    /// The tick by which a closing connection is cut off.
    pub(crate) deadline: u32,
    pub(crate) bufs: Option<Box<Buffers>>,
}

impl Conn {
    pub(crate) fn new(io: Registered<Stream>, gen: u32, tick: u32) -> Conn {
        Conn {
            io,
            gen,
            phase: Phase::Open,
            owed_close: false,
            refused: false,
            read_closed: false,
            interest: Interest::READ,
            flush_queued: false,
            last_active: tick,
            deadline: u32::MAX,
            bufs: None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Appends `data` to the output queue.
    pub(crate) fn queue(&mut self, data: Bytes) {
        let bufs = self.bufs.get_or_insert_with(Box::default);
        bufs.output_len += data.len();
        bufs.output.push_back(data);
    }

    /// Bytes queued and not yet written.
    pub(crate) fn output_len(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.output_len)
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
        self.bufs.get_or_insert_with(Box::default).input = input;
    }

    /// Gives back buffer memory when nothing is in flight, so that a quiet
    /// connection costs no more than its slab entry. Called from the
    /// once-a-second sweep rather than after every flush, so that a busy
    /// connection does not allocate its queue anew for every message.
    pub(crate) fn release_idle_buffers(&mut self) {
        if let Some(b) = &self.bufs {
            if b.output.is_empty() && b.input.is_empty() {
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

    /// Writes as much queued output as the socket takes in one `writev`.
    /// Returns `Ok` also when the socket is full (`WouldBlock`).
    pub(crate) fn write_out(&mut self) -> io::Result<()> {
        let Some(bufs) = self.bufs.as_mut() else {
            return Ok(());
        };
        if bufs.output.is_empty() {
            return Ok(());
        }
        let stream = self.io.source();
        match write_chunks(&mut bufs.output, |slices| stream.write_vectored(slices)) {
            Ok(written) => {
                bufs.output_len -= written;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What the poller should watch for: input unless the peer is done
    /// sending (a level-triggered end of stream would report forever), and
    /// writability only while output waits.
    pub(crate) fn wanted_interest(&self) -> Interest {
        Interest {
            read: !self.read_closed,
            write: self.output_len() > 0,
        }
    }
}

/// Hands the front of `chunks` (at most `MAX_IOV` of them) to one vectored
/// `write`, retried if interrupted, and removes what it wrote: whole chunks
/// popped, a partly written one advanced. Returns the bytes written. Both
/// drivers write their output queues through it.
pub(crate) fn write_chunks(
    chunks: &mut VecDeque<Bytes>,
    mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let mut count = 0;
    for (slice, chunk) in slices.iter_mut().zip(chunks.iter()) {
        *slice = IoSlice::new(chunk);
        count += 1;
    }
    let written = loop {
        match write(&slices[..count]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => break result?,
        }
    };
    let mut left = written;
    while left > 0 {
        let front = chunks.front_mut().expect("wrote more than was queued");
        if front.len() <= left {
            left -= front.len();
            chunks.pop_front();
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Ok(written)
}
