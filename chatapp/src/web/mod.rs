//! The web endpoint: [`Web`], a handler adapter that serves a line handler
//! (the chat) to browsers as well, over HTTP and WebSocket, beside its line
//! clients.
//!
//! A connection accepted by one of the web listeners speaks HTTP/1.1 first
//! (`http.rs`): `GET /` is the chat page, `GET /ws` the WebSocket handshake,
//! anything else an HTTP error. The inner handler never hears of it until
//! it upgrades; from then on it is a participant like any other, whose
//! lines come and go as WebSocket text messages, one message a line
//! (`frames.rs` reads and writes the frames, `framed.rs` is the context
//! that frames what the inner handler sends). Connections from the other
//! listeners are passed straight through.
//!
//! Nothing is kept per connection but a stage, a message still arriving in
//! fragments, and the inner handler's own state: frames are read from the
//! driver's input as it comes and left there while the inner handler holds
//! back (flood control, a backlogged reader), so a held line is neither lost
//! nor read twice. An idle WebSocket costs about what an idle line client
//! does: with the chat, 64 bytes of state beside the connection against a
//! line client's 32, and an entry in the set of open WebSockets. (A
//! `tungstenite::WebSocket` per connection would eagerly keep a 128 KiB
//! read buffer.)

mod framed;
mod frames;
mod http;
#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reactor::{CloseReason, ConnId, Context, Handler, Input, ListenerId, Origin, Refusal, TimerId};
use rustc_hash::FxHashSet;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use framed::{Framed, Scratch};
pub use frames::MAX_HEADER;
pub use http::{Policy, MAX_HEAD};

/// How the web endpoint is served.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The listeners whose connections are web ones (HTTP, then WebSocket):
    /// the ids the driver gave them, as `Origin::Accepted` tells.
    pub listeners: Vec<ListenerId>,
    /// Who may open a WebSocket, and whether connections are kept alive.
    pub policy: Policy,
    /// How long a connection may stay plain HTTP: a request must be
    /// complete, and the WebSocket opened, within this time of the
    /// connection's opening, or it is closed.
    pub handshake_timeout: Duration,
    /// The longest message a WebSocket may send, in bytes: the inner
    /// handler's line limit. A longer one is closed with 1009.
    pub max_line: usize,
}

/// A line handler `H` served on its own listeners and on web ones.
pub struct Web<H: Handler> {
    inner: H,
    config: WebConfig,
    /// The open WebSockets: who is sent a close frame when the server stops.
    sockets: FxHashSet<ConnId>,
    /// A message as the line the inner handler is handed, with its `\n`.
    line: BytesMut,
    /// What the inner handler's sends are framed in.
    scratch: Scratch,
    /// The adapter's own answers and frames.
    out: Vec<u8>,
}

/// A connection's state: the inner handler's, and where it is in HTTP and
/// WebSocket.
#[derive(Default)]
pub struct Conn<C> {
    stage: Stage,
    /// A text message of which only the first fragments have come,
    /// unmasked; boxed, as a connection rarely has one.
    message: Option<Box<Partial>>,
    inner: C,
}

/// Where a connection is.
#[derive(Default)]
enum Stage {
    /// Not a web connection: passed straight through.
    #[default]
    Lines,
    /// A web connection before its upgrade: HTTP requests, until
    /// `deadline` (the handshake timeout).
    Http { deadline: TimerId },
    /// An open WebSocket: the inner handler has opened it.
    Open,
    /// A WebSocket the adapter closed (a protocol error, or the client's
    /// close): the inner handler is told `why` when it goes.
    Closing(CloseReason),
}

/// The fragments of a message so far.
#[derive(Default)]
struct Partial {
    text: Vec<u8>,
}

impl<H: Handler> Web<H> {
    /// Serves `inner` on every listener, with web connections from those
    /// in `config`.
    pub fn new(inner: H, config: WebConfig) -> Web<H> {
        Web {
            inner,
            config,
            sockets: FxHashSet::default(),
            line: BytesMut::new(),
            scratch: Scratch::default(),
            out: Vec::new(),
        }
    }

    /// The inner handler, and the context to give it for a callback on `cx`.
    fn wrapped<'a>(&'a mut self, cx: &'a mut dyn Context) -> (&'a mut H, Framed<'a>) {
        let Web {
            inner,
            config,
            scratch,
            ..
        } = self;
        (inner, Framed::new(cx, &config.listeners, scratch))
    }

    /// Whether `id` came from a web listener.
    fn is_web(&self, cx: &dyn Context, id: ConnId) -> bool {
        matches!(cx.origin(id), Some(Origin::Accepted(l)) if self.config.listeners.contains(&l))
    }

    /// Answers the HTTP requests at the front of `input`, until one
    /// upgrades or closes the connection.
    fn on_request(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Conn<H::Conn>,
        input: &mut Input<'_>,
    ) {
        while !input.is_empty() && !cx.backlogged(id) {
            match http::read(input, &self.config.policy) {
                http::Request::Partial => return,
                http::Request::Answer { len, answer } => {
                    self.out.clear();
                    http::write(&mut self.out, &answer);
                    cx.send(id, &self.out);
                    if answer.close {
                        // The rest of the input is discarded.
                        cx.close(id);
                        return;
                    }
                    input.consume(len);
                }
                http::Request::Upgrade { len, accept } => {
                    input.consume(len);
                    self.out.clear();
                    http::write_upgrade(&mut self.out, &accept);
                    cx.send(id, &self.out);
                    if let Stage::Http { deadline } = conn.stage {
                        cx.cancel_timer(deadline);
                    }
                    conn.stage = Stage::Open;
                    self.sockets.insert(id);
                    let (inner, mut framed) = self.wrapped(cx);
                    inner.on_open(&mut framed, id, &mut conn.inner);
                    // A client may send frames right behind its handshake.
                    return self.on_frames(cx, id, conn, input);
                }
            }
        }
    }

    /// Reads the frames at the front of `input`, handing each complete
    /// text message to the inner handler as a line. Stops where the inner
    /// handler leaves a line (the frame stays in `input`, and is read again
    /// when the driver hands it back) and while `id` is backlogged.
    fn on_frames(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Conn<H::Conn>,
        input: &mut Input<'_>,
    ) {
        while !cx.backlogged(id) {
            let so_far = conn.message.as_ref().map_or(0, |m| m.text.len());
            let room = self.config.max_line.saturating_sub(so_far);
            let frame = match frames::parse(input, room) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(code) => return self.fail(cx, id, conn, code),
            };
            let payload = &input[frame.payload.clone()];
            match frame.opcode {
                OpCode::Data(Data::Text | Data::Continue) => {
                    let starts = frame.opcode == OpCode::Data(Data::Text);
                    // A start inside a message, or a continuation of none.
                    if starts == conn.message.is_some() {
                        return self.fail(cx, id, conn, CloseCode::Protocol);
                    }
                    if !frame.is_final {
                        let message = conn.message.get_or_insert_with(Box::default);
                        let at = message.text.len();
                        message.text.extend_from_slice(payload);
                        frames::unmask(&mut message.text[at..], frame.mask, 0);
                        input.consume(frame.len());
                        continue;
                    }
                    self.line.clear();
                    if let Some(message) = &conn.message {
                        self.line.extend_from_slice(&message.text);
                    }
                    let at = self.line.len();
                    self.line.extend_from_slice(payload);
                    frames::unmask(&mut self.line[at..], frame.mask, 0);
                    // One message is one line: it must be text, and hold
                    // no line end that would make it two.
                    if std::str::from_utf8(&self.line).is_err() || self.line.contains(&b'\n') {
                        return self.fail(cx, id, conn, CloseCode::Invalid);
                    }
                    self.line.extend_from_slice(b"\n");
                    // Out of `self` for the call, and back, capacity and all.
                    let mut line = std::mem::take(&mut self.line);
                    let (inner, mut framed) = self.wrapped(cx);
                    inner.on_data(&mut framed, id, &mut conn.inner, &mut Input::new(&mut line));
                    let held = !line.is_empty();
                    line.clear();
                    self.line = line;
                    if held {
                        // Held back (flood control, or its reader is
                        // behind): the frame waits in the input, and so
                        // do the fragments before it.
                        return;
                    }
                    conn.message = None;
                    input.consume(frame.len());
                }
                OpCode::Data(Data::Binary) => {
                    return self.fail(cx, id, conn, CloseCode::Unsupported);
                }
                OpCode::Control(Control::Ping) => {
                    let mut pong = [0; 125];
                    let pong = &mut pong[..payload.len()];
                    pong.copy_from_slice(payload);
                    frames::unmask(pong, frame.mask, 0);
                    self.out.clear();
                    frames::pong(&mut self.out, pong);
                    cx.send(id, &self.out);
                    input.consume(frame.len());
                }
                OpCode::Control(Control::Pong) => input.consume(frame.len()),
                OpCode::Control(Control::Close) => {
                    let mut close = [0; 125];
                    let close = &mut close[..payload.len()];
                    close.copy_from_slice(payload);
                    frames::unmask(close, frame.mask, 0);
                    return match frames::close_code(close) {
                        Ok(code) => self.end(cx, id, conn, code, CloseReason::PeerClosed),
                        Err(code) => self.fail(cx, id, conn, code),
                    };
                }
                // `frames::parse` refuses reserved opcodes.
                OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                    return self.fail(cx, id, conn, CloseCode::Protocol);
                }
            }
        }
    }

    /// Closes the WebSocket `id` for breaking the protocol, with `code`.
    fn fail(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Conn<H::Conn>,
        code: CloseCode,
    ) {
        tracing::debug!(peer = ?cx.peer_addr(id), "WebSocket closed with {code}");
        let why = CloseReason::Error(io::ErrorKind::InvalidData);
        self.end(cx, id, conn, Some(code), why);
    }

    /// Sends `id` a close frame with `code` and closes it; the inner
    /// handler will be told `why`.
    fn end(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Conn<H::Conn>,
        code: Option<CloseCode>,
        why: CloseReason,
    ) {
        self.out.clear();
        frames::close(&mut self.out, code);
        cx.send(id, &self.out);
        cx.close(id);
        conn.stage = Stage::Closing(why);
        conn.message = None;
        self.sockets.remove(&id);
    }
}

impl<H: Handler> Handler for Web<H> {
    type Message = H::Message;
    type Conn = Conn<H::Conn>;

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn) {
        if self.is_web(cx, id) {
            let deadline = cx.set_conn_timer(id, self.config.handshake_timeout, 0);
            conn.stage = Stage::Http { deadline };
            return;
        }
        let (inner, mut framed) = self.wrapped(cx);
        inner.on_open(&mut framed, id, &mut conn.inner);
    }

    fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Self::Conn,
        input: &mut Input<'_>,
    ) {
        match conn.stage {
            Stage::Lines => {
                let (inner, mut framed) = self.wrapped(cx);
                inner.on_data(&mut framed, id, &mut conn.inner, input);
            }
            Stage::Http { .. } => self.on_request(cx, id, conn, input),
            Stage::Open => self.on_frames(cx, id, conn, input),
            Stage::Closing(_) => input.clear(),
        }
    }

    fn on_close(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: Self::Conn,
        reason: CloseReason,
    ) {
        let reason = match conn.stage {
            // The inner handler never heard of it.
            Stage::Http { .. } => return,
            Stage::Lines => reason,
            Stage::Open => {
                self.sockets.remove(&id);
                reason
            }
            Stage::Closing(why) => why,
        };
        let (inner, mut framed) = self.wrapped(cx);
        inner.on_close(&mut framed, id, conn.inner, reason);
    }

    fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        let (inner, mut framed) = self.wrapped(cx);
        inner.on_timer(&mut framed, tag);
    }

    fn on_conn_timer(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn, tag: u64) {
        match conn.stage {
            // The only timer of an HTTP connection is its deadline.
            Stage::Http { .. } => {
                tracing::debug!(peer = ?cx.peer_addr(id), "no WebSocket in time");
                cx.close(id);
            }
            Stage::Lines | Stage::Open => {
                let (inner, mut framed) = self.wrapped(cx);
                inner.on_conn_timer(&mut framed, id, &mut conn.inner, tag);
            }
            Stage::Closing(_) => {}
        }
    }

    fn on_start(&mut self, cx: &mut dyn Context) {
        let (inner, mut framed) = self.wrapped(cx);
        inner.on_start(&mut framed);
    }

    fn on_wake(&mut self, cx: &mut dyn Context, msg: Self::Message) {
        let (inner, mut framed) = self.wrapped(cx);
        inner.on_wake(&mut framed, msg);
    }

    /// The inner handler says goodbye, then every WebSocket is sent a
    /// close frame, 1001 (going away), after it.
    fn on_stop(&mut self, cx: &mut dyn Context) {
        let (inner, mut framed) = self.wrapped(cx);
        inner.on_stop(&mut framed);
        self.out.clear();
        frames::close(&mut self.out, Some(CloseCode::Away));
        for &id in &self.sockets {
            cx.send(id, &self.out);
        }
    }

    /// A web listener's refusal is an HTTP 503; the others are the inner
    /// handler's.
    fn refusal(&self, listener: ListenerId, why: Refusal) -> Option<Bytes> {
        if !self.config.listeners.contains(&listener) {
            return self.inner.refusal(listener, why);
        }
        let mut out = Vec::new();
        let answer = http::Answer {
            status: http::Status::Unavailable,
            close: true,
        };
        http::write(&mut out, &answer);
        Some(Bytes::from(out))
    }
}
