//! [`Framed`]: the [`Context`] the inner line handler is given, which
//! forwards everything to the driver's, except that what it sends to a
//! WebSocket becomes text frames, one message per line.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reactor::{ConnId, Connect, Context, ListenerId, Origin, TimerId};
use tungstenite::protocol::frame::coding::CloseCode;

use super::frames;

/// How the line protocol's errors begin: a connection the inner handler
/// closes right after sending it one was cut off for breaking a rule (a
/// wrong greeting, a timeout, a kick), and its close frame says 1008
/// (policy violation) rather than 1000. See docs/protocol.md.
const ERROR: &[u8] = b"ERR ";

/// What a web adapter lends [`Framed`] for the length of a callback: the
/// buffers it frames in, kept from one broadcast to the next so that none
/// allocates.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// The frames of one send.
    frames: Vec<u8>,
    /// A broadcast's line recipients.
    lines: Vec<ConnId>,
    /// A broadcast's WebSocket recipients.
    sockets: Vec<ConnId>,
}

/// The inner handler's context: the driver's, with sends to WebSockets framed.
pub(super) struct Framed<'a> {
    cx: &'a mut dyn Context,
    /// The web listeners: a connection accepted by one that the inner
    /// handler knows of is an open WebSocket (it never hears of the others).
    web: &'a [ListenerId],
    scratch: &'a mut Scratch,
    /// The WebSocket last sent an `ERR` line, if that was the last thing sent.
    erred: Option<ConnId>,
}

impl<'a> Framed<'a> {
    /// Wraps `cx` for a callback of the inner handler.
    pub(super) fn new(
        cx: &'a mut dyn Context,
        web: &'a [ListenerId],
        scratch: &'a mut Scratch,
    ) -> Framed<'a> {
        Framed {
            cx,
            web,
            scratch,
            erred: None,
        }
    }

    /// Whether `id` is a WebSocket.
    fn is_socket(&self, id: ConnId) -> bool {
        // Without a web listener nothing is: the common case costs nothing.
        !self.web.is_empty()
            && matches!(self.cx.origin(id), Some(Origin::Accepted(l)) if self.web.contains(&l))
    }
}

/// Puts `data` into `out` as text frames: one message per line, without
/// its `\n` (and a `\r` before it); an unterminated rest is a message too.
/// A text message must be UTF-8: any invalid byte is sent as U+FFFD.
fn frame_lines(out: &mut Vec<u8>, data: &[u8]) {
    out.clear();
    if data.is_empty() {
        return;
    }
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let bytes = match &text {
            Cow::Borrowed(text) => text.as_bytes(),
            Cow::Owned(text) => text.as_bytes(),
        };
        frames::text(out, bytes);
    }
}

impl Context for Framed<'_> {
    fn now(&self) -> Instant {
        self.cx.now()
    }

    fn send(&mut self, to: ConnId, data: &[u8]) -> bool {
        if !self.is_socket(to) {
            return self.cx.send(to, data);
        }
        let last = data.strip_suffix(b"\n").unwrap_or(data);
        let last = last.rsplit(|&b| b == b'\n').next().unwrap_or(last);
        if last.starts_with(ERROR) {
            self.erred = Some(to);
        } else if self.erred == Some(to) {
            self.erred = None;
        }
        frame_lines(&mut self.scratch.frames, data);
        self.cx.send(to, &self.scratch.frames)
    }

    fn backlogged(&self, id: ConnId) -> bool {
        self.cx.backlogged(id)
    }

    fn pause_input(&mut self, id: ConnId, duration: Duration) {
        self.cx.pause_input(id, duration);
    }

    /// Line connections are sent `data`, WebSockets its frames, made once:
    /// a server's frames are not masked, so every WebSocket gets the same
    /// bytes, shared as the line connections' are.
    fn send_many(&mut self, to: &[ConnId], data: &[u8]) -> usize {
        if self.web.is_empty() {
            return self.cx.send_many(to, data);
        }
        let mut lines = std::mem::take(&mut self.scratch.lines);
        let mut sockets = std::mem::take(&mut self.scratch.sockets);
        lines.clear();
        sockets.clear();
        for &id in to {
            if self.is_socket(id) {
                sockets.push(id);
            } else {
                lines.push(id);
            }
        }
        let mut took = self.cx.send_many(&lines, data);
        if !sockets.is_empty() {
            frame_lines(&mut self.scratch.frames, data);
            took += self.cx.send_many(&sockets, &self.scratch.frames);
        }
        self.scratch.lines = lines;
        self.scratch.sockets = sockets;
        took
    }

    /// A WebSocket is sent a close frame first: 1008 after an `ERR` line,
    /// 1000 otherwise.
    fn close(&mut self, to: ConnId) {
        if self.is_socket(to) {
            let code = if self.erred == Some(to) {
                CloseCode::Policy
            } else {
                CloseCode::Normal
            };
            self.scratch.frames.clear();
            frames::close(&mut self.scratch.frames, Some(code));
            self.cx.send(to, &self.scratch.frames);
        }
        self.cx.close(to);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        self.cx.set_timer(after, tag)
    }

    fn set_conn_timer(&mut self, id: ConnId, after: Duration, tag: u64) -> TimerId {
        self.cx.set_conn_timer(id, after, tag)
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.cx.cancel_timer(timer);
    }

    fn stop(&mut self) {
        self.cx.stop();
    }

    fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.cx.peer_addr(id)
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        self.cx.origin(id)
    }

    fn connect(&mut self, to: Connect) -> io::Result<ConnId> {
        self.cx.connect(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_per_line_without_its_end() {
        let mut out = Vec::new();
        frame_lines(&mut out, b"Hello\n* welcome\r\n");
        assert_eq!(out, b"\x81\x05Hello\x81\x09* welcome");
        frame_lines(&mut out, b"\n");
        assert_eq!(out, b"\x81\x00", "an empty line is an empty message");
        frame_lines(&mut out, b"");
        assert_eq!(out, b"", "nothing is nothing");
        frame_lines(&mut out, b"bad \xff");
        assert_eq!(out, [&[0x81, 7][..], "bad \u{fffd}".as_bytes()].concat());
    }
}
