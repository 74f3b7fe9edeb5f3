//! The properties behind `tests/properties.rs` and the fuzz targets in
//! `fuzz/`: each `check_*` function takes an input, runs the code under test
//! on it, and panics if a property does not hold. The property tests
//! generate those inputs with proptest, the fuzz targets decode them from
//! the fuzzer's bytes; both then call the same check, so that the two can
//! never disagree about what "correct" means.
//!
//! (A directory under `tests/` is not a test crate of its own: this file is
//! compiled only where it is included, with `mod checks;` here and
//! `#[path = …]` in the fuzz targets.)

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chatapp::chat::{Chat, ChatConfig, ConsoleLine};
use chatapp::echo::Echo;
use reactor::testing::Harness;
use reactor::{
    CloseReason, ConnId, Connect, Context, Handler, Input, LineTooLong, Origin, TimerId,
};

/// `data` cut at each of `cuts` (offsets, in any order, out of range ones
/// clamped): the reads a connection might have received it in.
pub fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        chunks.push(&data[start..cut]);
        start = cut;
    }
    chunks.push(&data[start..]);
    chunks
}

/// What `Input::next_line` must find in `data`, worked out from the whole stream
/// at once: its lines, up to and including the first one over `max`.
fn reference_lines(data: &[u8], max: usize) -> Vec<Result<Vec<u8>, LineTooLong>> {
    let mut lines = Vec::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        if line.len() > max {
            lines.push(Err(LineTooLong));
            return lines;
        }
        lines.push(Ok(line.to_vec()));
        rest = &rest[end + 1..];
    }
    // An unfinished line is too long once even a `\r\n` could not save it.
    if rest.len() > max + 1 || (rest.len() > max && rest.last() != Some(&b'\r')) {
        lines.push(Err(LineTooLong));
    }
    lines
}

/// The line framer, fed `data` in the reads `cuts` makes, the way a handler
/// uses it (append the read to what was left, take every complete line,
/// stop at the first error), finds exactly the lines of the whole stream,
/// and never leaves more than `max + 1` bytes unframed.
pub fn check_framer(data: &[u8], cuts: &[usize], max: usize) {
    let mut input = BytesMut::new();
    let mut lines = Vec::new();
    'reads: for chunk in split(data, cuts) {
        input.extend_from_slice(chunk);
        let mut read = Input::new(&mut input);
        while let Some(line) = read.next_line(max) {
            let too_long = line.is_err();
            lines.push(line.map(<[u8]>::to_vec));
            if too_long {
                break 'reads;
            }
        }
        drop(read);
        assert!(
            input.len() <= max + 1,
            "{} bytes left unframed with max {max}",
            input.len()
        );
    }
    assert_eq!(lines, reference_lines(data, max));
}

/// The echo handler, fed `data` in the reads `cuts` makes, echoes exactly
/// what it would for the whole stream at once: everything up to and
/// including the first `bye` line, then closes; with `raw`, everything, and
/// never closes.
pub fn check_echo(data: &[u8], cuts: &[usize], raw: bool) {
    let mut h = Harness::new(Echo::new(raw));
    let id = h.connect();
    let mut echoed = Vec::new();
    for chunk in split(data, cuts) {
        h.receive(id, chunk);
        echoed.extend(h.take(id));
    }
    // The first line that is `bye`, ignoring case and surrounding whitespace.
    let bye_end = data
        .split_inclusive(|&b| b == b'\n')
        .scan(0, |end, line| {
            *end += line.len();
            Some((*end, line))
        })
        .find(|(_, line)| line.ends_with(b"\n") && line.trim_ascii().eq_ignore_ascii_case(b"bye"))
        .map(|(end, _)| end);
    let (expected, closes) = match bye_end {
        Some(end) if !raw => (&data[..end], true),
        _ => (data, false),
    };
    assert!(
        echoed == expected,
        "echoed {echoed:?}, expected {expected:?}"
    );
    assert_eq!(h.closed(id).is_some(), closes, "close decision");
}

/// One thing that happens to a chat server, in [`check_chat`].
#[derive(Clone, Debug)]
pub enum ChatOp {
    /// A new client connects.
    Connect,
    /// Bytes arrive from a client: the `n`th connected, counted modulo how
    /// many have (closed ones included, whose bytes are then ignored).
    Send(usize, Vec<u8>),
    /// A client goes away.
    Disconnect(usize),
    /// Time moves on, by this many milliseconds.
    Advance(u64),
    /// The operator types a line on the console. The operator's lines have
    /// no length limit: for the bound on output lines to hold, keep them to
    /// [`CHAT_MAX_LINE`] bytes.
    Console(String),
}

/// The longest line a client may send in [`check_chat`]: small, so that
/// overlong lines are cheap to generate.
pub const CHAT_MAX_LINE: usize = 32;

/// A bound on the lines the chat server sends (docs/protocol.md, Framing):
/// `<`, the longest nick, `> (private) `, then a text of `CHAT_MAX_LINE`
/// bytes of invalid UTF-8, each byte of which cleaning turns into the three
/// bytes of U+FFFD.
pub const CHAT_MAX_OUTPUT_LINE: usize = 3 * CHAT_MAX_LINE + "<> (private) ".len() + 32;

/// A sink that the test reads while the handler writes to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

impl io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`Context`] that passes everything on, and notes every send that the
/// context refused: a send to a connection that is closed or closing.
struct Watch<'a> {
    cx: &'a mut dyn Context,
    refused: &'a mut Vec<ConnId>,
}

impl Context for Watch<'_> {
    fn now(&self) -> Instant {
        self.cx.now()
    }

    fn send(&mut self, to: ConnId, data: &[u8]) -> bool {
        let taken = self.cx.send(to, data);
        if !taken {
            self.refused.push(to);
        }
        taken
    }

    fn close(&mut self, to: ConnId) {
        self.cx.close(to);
    }

    fn backlogged(&self, id: ConnId) -> bool {
        self.cx.backlogged(id)
    }

    fn pause_input(&mut self, id: ConnId, duration: Duration) {
        self.cx.pause_input(id, duration);
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

    fn peer_addr(&self, id: ConnId) -> Option<std::net::SocketAddr> {
        self.cx.peer_addr(id)
    }

    fn origin(&self, id: ConnId) -> Option<Origin> {
        self.cx.origin(id)
    }

    fn connect(&mut self, to: Connect) -> io::Result<ConnId> {
        self.cx.connect(to)
    }
}

/// [`Chat`], run through a [`Watch`]: the harness itself drops a send to a
/// closed connection silently, and this is what makes such a send visible.
struct Watched {
    chat: Chat,
    refused: Vec<ConnId>,
}

impl Watched {
    fn watch<'a>(&'a mut self, cx: &'a mut dyn Context) -> (&'a mut Chat, Watch<'a>) {
        let watch = Watch {
            cx,
            refused: &mut self.refused,
        };
        (&mut self.chat, watch)
    }
}

impl Handler for Watched {
    type Message = ConsoleLine;
    type Conn = <Chat as Handler>::Conn;

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_open(&mut cx, id, conn);
    }

    fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Self::Conn,
        input: &mut Input<'_>,
    ) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_data(&mut cx, id, conn, input);
    }

    fn on_close(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: Self::Conn,
        reason: CloseReason,
    ) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_close(&mut cx, id, conn, reason);
    }

    fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_timer(&mut cx, tag);
    }

    fn on_conn_timer(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn, tag: u64) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_conn_timer(&mut cx, id, conn, tag);
    }

    fn on_wake(&mut self, cx: &mut dyn Context, msg: ConsoleLine) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_wake(&mut cx, msg);
    }

    fn on_stop(&mut self, cx: &mut dyn Context) {
        let (chat, mut cx) = self.watch(cx);
        chat.on_stop(&mut cx);
    }
}

/// What the check knows of one client, learnt only from what it was sent.
struct Client {
    id: ConnId,
    /// Its nick, from its welcome and the renames it was told of; `None`
    /// until it is welcomed.
    nick: Option<String>,
    /// Whether it has been sent anything yet.
    spoken_to: bool,
    /// The last line it was sent.
    last_line: Option<String>,
}

/// `bytes` without the chat's answers to telnet commands: `IAC` (0xFF) and
/// two bytes more (`WILL`, `WONT` or `DONT`, and the option), which is all
/// it ever sends of telnet. They are protocol, not text, and would not be
/// UTF-8. An `IAC` followed by anything else is left, for the check to find.
fn without_telnet_answers(bytes: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xFF
            && matches!(bytes.get(i + 1), Some(0xFB | 0xFC | 0xFE))
            && i + 2 < bytes.len()
        {
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Checks `bytes`, everything sent to one client (or the transcript) in one
/// step, and returns its lines: whole lines of UTF-8 with no control
/// character but tab, none longer than [`CHAT_MAX_OUTPUT_LINE`].
fn clean_lines(bytes: Vec<u8>, whose: &str) -> Vec<String> {
    let text = String::from_utf8(without_telnet_answers(bytes))
        .unwrap_or_else(|e| panic!("{whose}: not UTF-8: {e}"));
    if text.is_empty() {
        return Vec::new();
    }
    let body = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{whose}: not whole lines: {text:?}"));
    body.split('\n')
        .map(|line| {
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "{whose}: a control character in {line:?}"
            );
            assert!(
                line.len() <= CHAT_MAX_OUTPUT_LINE,
                "{whose}: a line of {} bytes: {line:?}",
                line.len()
            );
            line.to_owned()
        })
        .collect()
}

/// The nick in a `* NICK left` or `* NICK was kicked` notice, or in the
/// transcript's `* NICK left (WHY)`, which says why a client was cut off.
fn departure(line: &str) -> Option<&str> {
    const WHY: &[&str] = &[
        "line too long",
        "not reading",
        "idle",
        "flooding",
        "connection reset",
        "connection error",
        "server error",
    ];
    let rest = line.strip_prefix("* ")?;
    let nick = rest
        .strip_suffix(" left")
        .or_else(|| rest.strip_suffix(" was kicked"))
        .or_else(|| {
            let (nick, why) = rest.strip_suffix(')')?.split_once(" left (")?;
            WHY.contains(&why).then_some(nick)
        })?;
    (!nick.contains(' ')).then_some(nick)
}

/// Runs the chat handler through `ops`, then stops it, checking after every
/// step that:
///
/// - it never sends to a connection that is closed or closing;
/// - everything it sends, to clients and to the transcript, is whole lines
///   of UTF-8 with no control character but tab, and bounded in length;
/// - a client's first line is `Hello` or an `ERR`;
/// - a client is never sent its own message back (a private message to
///   itself, `<nick> (private) …`, is the one line from a nick it may get
///   while it speaks);
/// - `* NICK left` (or `was kicked`) is told exactly when, and as often as,
///   a client that had joined closes, except on shutdown, when nobody is;
/// - on shutdown, every client in the room is sent `* server shutting
///   down` last.
pub fn check_chat(ops: &[ChatOp]) {
    let transcript = Shared::default();
    let config = ChatConfig {
        max_line: CHAT_MAX_LINE,
        // A small flood budget, so that scripts often run past it: a client
        // whose input is paused must keep every promise too.
        flood_burst: 8,
        ..ChatConfig::default()
    };
    let chat = Chat::new(config, Box::new(transcript.clone()));
    let mut h = Harness::new(Watched {
        chat,
        refused: Vec::new(),
    });
    let mut clients: Vec<Client> = Vec::new();

    for op in ops {
        if h.cx.stopped() {
            // The console said /quit: the loop stops, as it would under a driver.
            break;
        }
        let was_open: Vec<bool> = clients.iter().map(|c| h.closed(c.id).is_none()).collect();
        let mut speaker = None;
        match op {
            ChatOp::Connect => {
                let id = h.connect();
                clients.push(Client {
                    id,
                    nick: None,
                    spoken_to: false,
                    last_line: None,
                });
            }
            ChatOp::Send(n, bytes) if !clients.is_empty() => {
                let i = n % clients.len();
                speaker = Some(i);
                h.receive(clients[i].id, bytes);
            }
            ChatOp::Disconnect(n) if !clients.is_empty() => {
                h.disconnect(clients[n % clients.len()].id);
            }
            ChatOp::Send(..) | ChatOp::Disconnect(_) => {}
            ChatOp::Advance(ms) => h.advance(Duration::from_millis(*ms)),
            ChatOp::Console(line) => h.post(ConsoleLine(line.clone())),
        }
        after_step(&mut h, &mut clients, &transcript, &was_open, speaker, op);
    }

    let was_open: Vec<bool> = clients.iter().map(|c| h.closed(c.id).is_none()).collect();
    h.stop();
    for (client, &open) in clients.iter_mut().zip(&was_open) {
        let lines = clean_lines(h.take(client.id), "a client at shutdown");
        if let Some(last) = lines.last() {
            client.last_line = Some(last.clone());
        }
        if open && client.nick.is_some() {
            assert_eq!(
                client.last_line.as_deref(),
                Some("* server shutting down"),
                "the last line of {:?}",
                client.nick
            );
        }
    }
    let told = clean_lines(transcript.take(), "the transcript at shutdown");
    assert!(
        told.iter().all(|line| departure(line).is_none()),
        "nobody leaves on shutdown: {told:?}"
    );
    assert_eq!(h.handler.refused, [], "sent to a closed connection");
}

/// The checks of [`check_chat`] after one step.
fn after_step(
    h: &mut Harness<Watched>,
    clients: &mut [Client],
    transcript: &Shared,
    was_open: &[bool],
    speaker: Option<usize>,
    op: &ChatOp,
) {
    assert_eq!(
        h.handler.refused,
        [],
        "sent to a closed connection during {op:?}"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let lines = clean_lines(h.take(client.id), "a client");
        if !client.spoken_to {
            if let Some(first) = lines.first() {
                assert!(
                    first == "Hello" || first.starts_with("ERR "),
                    "a first line of {first:?}"
                );
                client.spoken_to = true;
            }
        }
        for line in &lines {
            if let Some(rest) = line.strip_prefix("* welcome, you are ") {
                let nick = rest.split(';').next().expect("split has a first part");
                client.nick = Some(nick.to_owned());
            } else if let Some((old, new)) = line
                .strip_prefix("* ")
                .and_then(|rest| rest.split_once(" is now "))
            {
                if client.nick.as_deref() == Some(old) {
                    client.nick = Some(new.to_owned());
                }
            }
            if speaker == Some(i) && line.starts_with('<') {
                let own_private = client
                    .nick
                    .as_ref()
                    .is_some_and(|nick| line.starts_with(&format!("<{nick}> (private) ")));
                assert!(own_private, "a speaker was sent {line:?} during {op:?}");
            }
        }
        if let Some(last) = lines.last() {
            client.last_line = Some(last.clone());
        }
    }

    // Who should have been told to have left: those that joined (even in
    // this very step) and were open before it, and are closed after it.
    let mut gone: Vec<String> = clients
        .iter()
        .zip(was_open.iter().chain(std::iter::repeat(&true)))
        .filter(|&(c, &open)| open && h.closed(c.id).is_some())
        .filter_map(|(c, _)| c.nick.clone())
        .collect();
    gone.sort();
    let mut told: Vec<String> = clean_lines(transcript.take(), "the transcript")
        .iter()
        .filter_map(|line| departure(line).map(str::to_owned))
        .collect();
    told.sort();
    let distinct: BTreeSet<&String> = told.iter().collect();
    assert_eq!(
        distinct.len(),
        told.len(),
        "a departure told twice: {told:?}"
    );
    assert_eq!(told, gone, "departures told during {op:?}");
}
