//! [`Output`]: the bytes a connection owes its peer, in order — short
//! messages copied into contiguous blocks, long ones shared.
//!
//! A chat relays many tiny lines. Queued one `Bytes` each, a 10-byte line
//! costs a queue slot, a shared-buffer header and an `iovec` per recipient —
//! measured at six times its payload for non-reading recipients, and one
//! `writev` slot per line. Redis copies replies into one buffer per client
//! instead (`_addReplyToBuffer`) and writes it with one `write`. So does
//! this queue, for messages up to [`COPY_MAX`]; longer ones are worth
//! sharing between recipients rather than copying to each.
//!
//! ```text
//!   pieces: [ block | shared | block ] + tail
//!             16 KiB   4 KiB    16 KiB   (the block being filled)
//!   one writev: every piece and the tail, at most MAX_IOV of them
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem;

use bytes::{Buf, Bytes, BytesMut};

/// Messages up to this long are copied into the tail block; longer ones
/// are queued as they are, shared with every other recipient.
pub(crate) const COPY_MAX: usize = 1024;

/// A tail block holding this much is closed and queued as a piece, so that a
/// partly written queue never moves more than one block's bytes.
const BLOCK: usize = 16 * 1024;

/// Most pieces handed to one `writev`. Linux allows 1024; with short
/// messages coalesced into blocks, 64 pieces are already a megabyte or more.
const MAX_IOV: usize = 64;

/// What each queued piece costs besides its bytes: the `Bytes` in the queue
/// and, for a shared one, its allocation's header. Counted so that the
/// output limit bounds memory, not just payload.
const PIECE_OVERHEAD: usize = 2 * mem::size_of::<Bytes>();

/// One connection's queued output.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Closed blocks and shared messages, oldest first.
    pieces: VecDeque<Bytes>,
    /// Short messages queued after every piece, in one contiguous buffer.
    tail: BytesMut,
    /// Bytes queued and not yet written.
    len: usize,
}

impl Output {
    /// Queues `data`: copied if short, shared if long. By reference, so
    /// that sending one message to many connections clones the `Bytes` (an
    /// atomic increment) only for those that keep it.
    #[inline]
    pub(crate) fn push(&mut self, data: &Bytes) {
        if data.len() <= COPY_MAX {
            self.push_slice(data);
        } else {
            self.close_tail();
            self.len += data.len();
            self.pieces.push_back(data.clone());
        }
    }

    /// Queues a copy of `data`: into the tail block if it fits there, as a
    /// piece of its own if it is bigger than a block (the remainder of an
    /// echo the socket did not take, say), so that the tail never grows
    /// past about a block.
    #[inline]
    pub(crate) fn push_slice(&mut self, data: &[u8]) {
        if self.tail.len() + data.len() > BLOCK {
            self.close_tail();
            if data.len() > BLOCK {
                self.len += data.len();
                self.pieces.push_back(Bytes::copy_from_slice(data));
                return;
            }
        }
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    /// Moves the tail block, if it holds anything, to the end of the pieces.
    /// `split` leaves the tail the rest of the same allocation to fill.
    fn close_tail(&mut self) {
        if !self.tail.is_empty() {
            self.pieces.push_back(self.tail.split().freeze());
        }
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the queue costs in memory, about: its bytes, its pieces'
    /// bookkeeping, and the room reserved in the tail block while it is
    /// being filled. An empty queue costs nothing: the drained tail it keeps
    /// for the next messages is at most about a block, and is given back by
    /// the loop's sweep; counting it would keep an idle connection above a
    /// low-water mark smaller than that forever. What a closed block has
    /// reserved and not used is not seen either.
    #[inline]
    pub(crate) fn cost(&self) -> usize {
        if self.len == 0 {
            return 0;
        }
        let slack = if self.tail.is_empty() {
            0
        } else {
            self.tail.capacity() - self.tail.len()
        };
        self.len + self.pieces.len() * PIECE_OVERHEAD + slack
    }

    /// Hands the front of the queue (at most `MAX_IOV` pieces, the tail
    /// last) to one vectored `write`, retried if interrupted, and removes
    /// what it wrote. Returns the bytes written; `WouldBlock` comes back as
    /// an error for the caller to treat as "full".
    pub(crate) fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        for (slice, piece) in slices
            .iter_mut()
            .zip(self.pieces.iter().map(|p| &p[..]).chain(tail))
        {
            *slice = IoSlice::new(piece);
            count += 1;
        }
        let written = loop {
            match write(&slices[..count]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => break result?,
            }
        };
        self.consume(written);
        Ok(written)
    }

    /// Removes the first `n` bytes: whole pieces popped, a partly written
    /// one advanced, then the tail.
    fn consume(&mut self, n: usize) {
        assert!(n <= self.len, "wrote more than was queued");
        self.len -= n;
        let mut left = n;
        while left > 0 {
            let Some(front) = self.pieces.front_mut() else {
                self.tail.advance(left);
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.pieces.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        if self.tail.is_empty() {
            // Keeps the allocation for the next messages; `extend_from_slice`
            // moves back to its start instead of allocating again.
            self.tail.clear();
        }
    }

    /// Drops everything queued and the memory it holds.
    pub(crate) fn clear(&mut self) {
        *self = Output::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes at most `limit` bytes per call into `sink`, like a socket
    /// with that much room.
    fn drain(out: &mut Output, limit: usize, sink: &mut Vec<u8>) -> usize {
        out.write_with(|slices| {
            let mut room = limit;
            for s in slices {
                let n = s.len().min(room);
                sink.extend_from_slice(&s[..n]);
                room -= n;
            }
            Ok(limit - room)
        })
        .unwrap()
    }

    #[test]
    fn short_and_long_messages_come_out_in_order_through_partial_writes() {
        let mut out = Output::default();
        let mut want = Vec::new();
        for i in 0..5000u32 {
            let msg = if i % 97 == 0 {
                vec![b'L'; COPY_MAX + 1 + i as usize % 3000]
            } else {
                format!("line {i}\n").into_bytes()
            };
            want.extend_from_slice(&msg);
            if i % 2 == 0 {
                out.push(&Bytes::from(msg));
            } else {
                out.push_slice(&msg);
            }
        }
        assert_eq!(out.len(), want.len());
        let mut got = Vec::new();
        let mut step = 1;
        while !out.is_empty() {
            drain(&mut out, step, &mut got);
            step = step * 3 % 70_001 + 1;
        }
        assert_eq!(got, want);
        assert_eq!(out.cost(), 0, "an empty queue costs nothing");
    }

    #[test]
    fn a_slice_bigger_than_a_block_is_a_piece_of_its_own() {
        let mut out = Output::default();
        out.push_slice(b"short");
        out.push_slice(&[b'e'; 3 * BLOCK]);
        assert_eq!(out.pieces.len(), 2, "the tail closed, then the big slice");
        assert!(out.tail.capacity() < 2 * BLOCK);
        let mut sink = Vec::new();
        drain(&mut out, usize::MAX, &mut sink);
        assert_eq!(sink.len(), 5 + 3 * BLOCK);
        assert_eq!(out.cost(), 0);
    }

    #[test]
    fn many_tiny_messages_cost_about_their_bytes() {
        let mut out = Output::default();
        let line = Bytes::from_static(b"<user1> x\n");
        for _ in 0..100_000 {
            out.push(&line);
        }
        let payload = 100_000 * line.len();
        assert_eq!(out.len(), payload);
        // About 61 blocks: their bookkeeping, and one block's slack at most.
        assert!(out.cost() < payload + payload / 10, "cost {}", out.cost());
        let mut sink = Vec::new();
        let pieces = out.pieces.len();
        assert!(pieces < 70, "{pieces} pieces");
        drain(&mut out, usize::MAX, &mut sink);
        assert!(out.len() < payload, "one writev takes many lines");
    }
}
