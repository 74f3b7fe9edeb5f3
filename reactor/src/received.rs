//! What `on_data` is handed: a connection's pending input, lent for the
//! length of the callback.
//!
//! The bytes may lie in the loop's shared 64 KiB read buffer. A handler that
//! could take a `Bytes` or `BytesMut` of them (`split_to(n).freeze()`) and
//! keep it would keep that whole buffer alive without knowing: a 6-byte line
//! stored in a chat history, or queued for a slow reader, would cost 64 KiB.
//! So [`Input`] gives only borrowed access — slices, and lines as slices,
//! that cannot outlive the callback — and the one way to keep a byte past it
//! is to copy it, which costs what the bytes cost and no more.

use std::ops::{Deref, DerefMut};

use bytes::{Buf, BytesMut};

/// A connection's input, lent to [`Handler::on_data`](crate::Handler::on_data):
/// everything received and not yet consumed. Read it as a `[u8]` (it
/// dereferences to one), take from its front with [`consume`](Input::consume)
/// or [`next_line`](Input::next_line), and leave the rest: what is not
/// consumed is handed back, with the bytes that arrive after it, to the next
/// `on_data`.
///
/// Nothing it hands out can outlive the callback, so a handler cannot keep a
/// part of the loop's read buffer, and pin the whole of it, by accident.
/// Keeping a byte means copying it:
///
/// ```compile_fail
/// use reactor::{ConnId, Context, Handler, Input};
///
/// /// Keeps every line it is handed: but a line is only lent.
/// struct Hoard<'a> {
///     lines: Vec<&'a [u8]>,
/// }
///
/// impl<'a> Handler for Hoard<'a> {
///     type Message = ();
///     type Conn = ();
///
///     fn on_data(&mut self, _: &mut dyn Context, _: ConnId, _: &mut (), input: &mut Input<'_>) {
///         while let Some(Ok(line)) = input.next_line(1024) {
///             self.lines.push(line); // error: the line does not live that long
///         }
///     }
/// }
/// ```
///
/// Nor is there a way to cut a `Bytes` or `BytesMut` off it:
///
/// ```compile_fail
/// # use reactor::Input;
/// fn keep(input: &mut Input<'_>, kept: &mut Vec<bytes::Bytes>) {
///     kept.push(input.split_to(2).freeze()); // error: no such method
/// }
/// ```
///
/// Consuming costs nothing until the callback returns: the consumed bytes
/// are taken off the front once, when the `Input` is dropped, so the lines
/// already handed out stay valid while the handler loops over them.
///
/// ```
/// use bytes::BytesMut;
/// use reactor::Input;
///
/// let mut pending = BytesMut::from("Hi\r\nsecond\npart");
/// let mut input = Input::new(&mut pending);
/// let mut lines = Vec::new();
/// while let Some(Ok(line)) = input.next_line(100) {
///     lines.push(line.to_vec()); // a copy: the only way to keep it
/// }
/// assert_eq!(lines, [&b"Hi"[..], b"second"]);
/// assert_eq!(&input[..], b"part");
/// drop(input);
/// assert_eq!(&pending[..], b"part", "what is left waits for more");
/// ```
#[derive(Debug)]
pub struct Input<'a> {
    /// The pending input, of which `taken` bytes at the front are consumed
    /// and the last `aside` are out of sight until the next call.
    buf: &'a mut BytesMut,
    /// Consumed in this callback, and taken off `buf` when it ends: not at
    /// once, because the lines handed out still point into these bytes.
    taken: usize,
    /// Set aside with [`Input::set_aside`].
    aside: usize,
}

/// A line longer than the limit arrived (or is arriving: no newline within
/// `max + 1` bytes). The connection should be told and closed: the rest of
/// the stream cannot be framed reliably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl<'a> Input<'a> {
    /// Lends `buf` as input: what is consumed is taken off its front when
    /// the `Input` is dropped. The drivers make one for every `on_data`; a
    /// handler makes one to hand input it holds itself to another handler's
    /// `on_data` (input it delayed, say), and tests make one to drive a
    /// framer.
    #[inline]
    pub fn new(buf: &'a mut BytesMut) -> Input<'a> {
        Input {
            buf,
            taken: 0,
            aside: 0,
        }
    }

    /// Where the bytes still in sight end in `buf`.
    #[inline]
    fn end(&self) -> usize {
        self.buf.len() - self.aside
    }

    /// Consumes the first `n` bytes: they are gone once the callback
    /// returns.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](slice::len): a handler cannot consume
    /// bytes it has not been handed.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed {n} of {} bytes", self.len());
        self.taken += n;
    }

    /// Consumes everything: what a handler does that answers all it is
    /// handed at once (an echo).
    #[inline]
    pub fn clear(&mut self) {
        self.taken = self.end();
    }

    /// Takes the next complete line off the front, without its `\n` and
    /// without a `\r` just before it. Returns `None` when no complete line
    /// has arrived yet, and `Err(LineTooLong)` as soon as a line is certain
    /// to exceed `max` bytes (its terminator not counted), so that a line
    /// that never ends costs at most `max + 1` buffered bytes. A too-long
    /// line that has ended is consumed; one still arriving is left.
    pub fn next_line(&mut self, max: usize) -> Option<Result<&[u8], LineTooLong>> {
        let rest = &self[..];
        // A line of `max` bytes may be followed by "\r\n": look that far.
        let window = rest.len().min(max.saturating_add(2));
        match rest[..window].iter().position(|&b| b == b'\n') {
            Some(end) => {
                let start = self.taken;
                self.taken += end + 1;
                let line = &self.buf[start..start + end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Some(if line.len() > max {
                    Err(LineTooLong)
                } else {
                    Ok(line)
                })
            }
            None if rest.len() > max.saturating_add(1) => Some(Err(LineTooLong)),
            None if rest.len() > max && rest.last() != Some(&b'\r') => Some(Err(LineTooLong)),
            None => None,
        }
    }

    /// Drops all but the first `len` bytes in sight, for a handler that
    /// edits its input in place (through `&mut [u8]`) and ends up with less
    /// of it: telnet's commands taken out from between the data, say. Does
    /// nothing if there are no more than `len`.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        let (keep, end) = (self.taken + len, self.end());
        // What is set aside stays, after what is kept.
        self.buf.copy_within(end.., keep);
        self.buf.truncate(keep + self.aside);
    }

    /// Leaves the last `n` bytes for the next call, out of sight for the
    /// rest of this one: for the start of something that has not all
    /// arrived and must not be framed with the data before it (a telnet
    /// command cut short by the end of a read). They are handed back, after
    /// what is left in sight, with the next bytes that arrive.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](slice::len).
    pub fn set_aside(&mut self, n: usize) {
        assert!(n <= self.len(), "set aside {n} of {} bytes", self.len());
        self.aside += n;
    }

    /// Puts `bytes` in front of the input, as though they had arrived first:
    /// for a handler that took the start of a frame aside (to wait a while
    /// for its end) and must frame it again with what came after. Copies
    /// the input; a rare path, not one for every call.
    pub fn put_back(&mut self, bytes: &[u8]) {
        let rest = &self.buf[self.taken..];
        let mut joined = BytesMut::with_capacity(bytes.len() + rest.len());
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(rest);
        *self.buf = joined;
        self.taken = 0;
    }
}

impl Deref for Input<'_> {
    type Target = [u8];

    /// The bytes not yet consumed (nor set aside).
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.buf[self.taken..self.end()]
    }
}

impl DerefMut for Input<'_> {
    /// The same bytes, to edit in place.
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buf[self.taken..end]
    }
}

impl Drop for Input<'_> {
    /// Takes what was consumed off the front of the pending input, at once.
    #[inline]
    fn drop(&mut self) {
        // Most callbacks take everything: then the buffer keeps its place
        // (and its capacity) rather than moving its start past the end.
        if self.taken == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.advance(self.taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `next_line` finds in `bytes`, up to and including the
    /// first error, and how many bytes it leaves.
    fn lines(bytes: &[u8], max: usize) -> (Vec<Result<Vec<u8>, LineTooLong>>, usize) {
        let mut buf = BytesMut::from(bytes);
        let mut input = Input::new(&mut buf);
        let mut out = Vec::new();
        while let Some(line) = input.next_line(max) {
            let stop = line.is_err();
            out.push(line.map(<[u8]>::to_vec));
            if stop {
                break;
            }
        }
        drop(input);
        (out, buf.len())
    }

    #[test]
    fn splits_lines_and_keeps_the_partial_one() {
        let (out, left) = lines(b"Hi\r\nsecond\npart", 100);
        assert_eq!(out, vec![Ok(b"Hi".to_vec()), Ok(b"second".to_vec())]);
        assert_eq!(left, 4);
    }

    #[test]
    fn only_a_final_cr_is_dropped() {
        let (out, _) = lines(b"a\rb\r\n\n", 100);
        assert_eq!(out, vec![Ok(b"a\rb".to_vec()), Ok(Vec::new())]);
    }

    #[test]
    fn exactly_max_is_allowed_with_or_without_cr() {
        assert_eq!(lines(b"abcd\n", 4).0, vec![Ok(b"abcd".to_vec())]);
        assert_eq!(lines(b"abcd\r\n", 4).0, vec![Ok(b"abcd".to_vec())]);
        assert_eq!(lines(b"abcd\r", 4).0, vec![], "may still be a CRLF");
        assert_eq!(lines(b"abcd", 4).0, vec![]);
    }

    #[test]
    fn too_long_is_reported_before_the_newline_arrives() {
        assert_eq!(lines(b"abcde\n", 4), (vec![Err(LineTooLong)], 0));
        assert_eq!(lines(b"abcde", 4), (vec![Err(LineTooLong)], 5));
        assert_eq!(lines(b"abcd\rx", 4), (vec![Err(LineTooLong)], 6));
    }

    #[test]
    fn what_is_left_is_handed_back_with_the_next_read() {
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for read in [&b"fir"[..], b"st\nsec", b"ond\r", b"\nthird\n"] {
            buf.extend_from_slice(read);
            let mut input = Input::new(&mut buf);
            while let Some(line) = input.next_line(10) {
                seen.push(line.unwrap().to_vec());
            }
        }
        assert_eq!(seen, [&b"first"[..], b"second", b"third"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn consumed_bytes_go_when_the_input_is_dropped() {
        let mut buf = BytesMut::from("hello, world");
        let mut input = Input::new(&mut buf);
        input.consume(7);
        assert_eq!(&input[..], b"world");
        input.consume(0);
        assert_eq!(input.len(), 5);
        drop(input);
        assert_eq!(&buf[..], b"world");

        let mut input = Input::new(&mut buf);
        input.clear();
        assert!(input.is_empty());
        drop(input);
        assert!(buf.is_empty());
    }

    #[test]
    fn lines_stay_valid_while_more_are_taken() {
        let mut buf = BytesMut::from("a\nb\nc");
        let mut input = Input::new(&mut buf);
        let first = input.next_line(10).unwrap().unwrap().to_vec();
        let second = input.next_line(10).unwrap().unwrap();
        assert_eq!((&first[..], second), (&b"a"[..], &b"b"[..]));
        assert_eq!(&input[..], b"c");
    }

    #[test]
    #[should_panic(expected = "consumed 4 of 3 bytes")]
    fn consuming_more_than_there_is_panics() {
        let mut buf = BytesMut::from("abc");
        Input::new(&mut buf).consume(4);
    }

    #[test]
    fn truncate_keeps_the_front_and_what_is_set_aside() {
        let mut buf = BytesMut::from(&b"xxdata!!\xff"[..]);
        let mut input = Input::new(&mut buf);
        input.consume(2);
        input.set_aside(1);
        input[4] = b'?';
        input.truncate(5);
        assert_eq!(&input[..], b"data?");
        input.truncate(9);
        assert_eq!(&input[..], b"data?", "nothing to drop");
        drop(input);
        assert_eq!(&buf[..], b"data?\xff");
    }

    #[test]
    fn what_is_set_aside_is_out_of_the_lines_reach() {
        // Four bytes may be a line of `max` 4; with a fifth they may not.
        let mut buf = BytesMut::from(&b"abcd\xff"[..]);
        let mut input = Input::new(&mut buf);
        input.set_aside(1);
        assert_eq!(input.next_line(4), None);
        assert_eq!(&input[..], b"abcd");
        drop(input);
        assert_eq!(&buf[..], b"abcd\xff", "handed back next time");
    }

    #[test]
    fn put_back_frames_again_with_what_came_after() {
        let mut buf = BytesMut::from("xx\r\nmore");
        let mut input = Input::new(&mut buf);
        input.put_back(b"Hi");
        assert_eq!(input.next_line(10), Some(Ok(&b"Hixx"[..])));
        drop(input);
        assert_eq!(&buf[..], b"more");
    }
}
