//! The client's side of a session with a netchat server, apart from the
//! terminal: connect (with `--retry`), over TCP or TLS; say `Hi`; tell a
//! busy server from one that takes us, and learn the longest line it takes
//! from its welcome; then read the server's lines and send the user's.
//!
//! The transport is chosen here and only here: a [`Session`]'s two halves,
//! [`ToServer`] and [`FromServer`], move lines over plain TCP or TLS alike,
//! and the binary's session loops never ask which.

mod tls;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::describe;

pub use tls::TlsOptions;

/// How long one connection attempt may take, and with TLS each wait for
/// the server during the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to answer `Hi`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two attempts of `join` while it retries.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long the end of a line may keep us waiting: after this much silence
/// in the middle of a line, what the server sent is shown as a line. Our
/// servers end every line, in one write; some servers (the Python programs
/// this exercise began as) answer with one send and no line end, and then
/// wait for us.
pub const QUIET: Duration = Duration::from_millis(500);
/// The longest line shown whole: a longer one is shown in pieces this long,
/// so that a server that never ends its line cannot fill our memory.
const MAX_SHOWN: usize = 64 * 1024;
/// The longest line the server takes when its welcome does not say: the
/// protocol's default (docs/protocol.md, Framing).
pub const DEFAULT_MAX_LINE: usize = 4096;

/// A connection whose greeting the server has answered.
pub struct Session {
    /// Where lines for the server go.
    pub to: ToServer,
    /// What the server sends, starting with its answer to `Hi`.
    pub from: FromServer,
    /// The longest line the server takes, not counting its `\n`: from its
    /// welcome, or [`DEFAULT_MAX_LINE`].
    pub max_line: usize,
}

/// The connection under both halves of a session. Plain TCP needs no
/// sharing (a socket can be read and written at once); a TLS connection is
/// one state for both directions, see [`tls`].
#[derive(Clone)]
enum Transport {
    Plain(Arc<TcpStream>),
    Tls(Arc<tls::Connection>),
}

impl Transport {
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => (&**socket).write_all(bytes),
            Transport::Tls(conn) => conn.send(bytes),
        }
    }

    fn receive(&self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => (&**socket).read(out),
            Transport::Tls(conn) => conn.receive(out),
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(conn) => conn.socket(),
        }
    }
}

/// The half of a session that sends.
pub struct ToServer(Transport);

impl ToServer {
    /// Sends `line` and a `\n`, in one write.
    pub fn send_line(&mut self, line: &[u8]) -> Result<(), String> {
        self.0
            .send(&[line, b"\n"].concat())
            .map_err(|e| format!("cannot send: {}", tls::describe_error(&e)))
    }
}

/// The half of a session that receives: lines, where a quiet period also
/// ends one (see [`QUIET`]).
pub struct FromServer {
    transport: Transport,
    /// Received and not yet handed out as lines.
    buf: Vec<u8>,
    /// The socket's read timeout as last set (none, on a new connection),
    /// to set it only when it changes.
    timeout: Option<Duration>,
}

impl FromServer {
    fn new(transport: Transport) -> FromServer {
        FromServer {
            transport,
            buf: Vec::new(),
            timeout: None,
        }
    }

    /// The next line, without its `\n`, or `None` once the server has
    /// closed the connection. Bytes that have no `\n` after [`QUIET`] of
    /// silence, or at the close, are a line too. With a `deadline`, a wait
    /// for the line's first byte that reaches it is an error of kind
    /// `TimedOut`.
    fn read_line(&mut self, deadline: Option<Instant>) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.buf) {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.buf.len() >= MAX_SHOWN {
                return Ok(Some(self.buf.drain(..MAX_SHOWN).collect()));
            }
            let wait = if !self.buf.is_empty() {
                Some(QUIET)
            } else if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Some(left)
            } else {
                None
            };
            if wait != self.timeout {
                self.transport.socket().set_read_timeout(wait)?;
                self.timeout = wait;
            }
            let mut chunk = [0; 16 * 1024];
            match self.transport.receive(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Ok(Some(std::mem::take(&mut self.buf))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && !self.buf.is_empty() => {
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
                Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts `lines` back in front of what is still to be read, as lines.
    fn unread(&mut self, lines: &[Vec<u8>]) {
        let mut bytes: Vec<u8> = lines
            .iter()
            .flat_map(|l| [&l[..], b"\n"].concat())
            .collect();
        bytes.append(&mut self.buf);
        self.buf = bytes;
    }
}

/// Whether `e` is a socket's read timeout: `WouldBlock` on Unix, `TimedOut`
/// on Windows.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Why there is no session.
pub enum Refusal {
    /// The server answered `ERR busy: REASON`; this is the reason.
    Busy(String),
    /// Nothing listens at the address: the connection was refused.
    Refused(String),
    /// Anything else: an unknown host, a timeout, a broken connection.
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Busy(reason) => write!(f, "server busy: {reason}"),
            Refusal::Refused(message) | Refusal::Failed(message) => f.write_str(message),
        }
    }
}

/// Connects, over TLS if `tls` is given, and greets; while the server is
/// busy or refuses the connection, tries again every [`RETRY_PAUSE`] for up
/// to `retry_for`, calling `retrying` before the first retry (to tell the
/// user why it waits). A TLS failure is not retried: it would fail again.
pub fn join(
    host: &str,
    port: u16,
    tls: Option<&TlsOptions>,
    retry_for: Duration,
    mut retrying: impl FnMut(&Refusal),
) -> Result<Session, Refusal> {
    let tls = match tls {
        Some(options) => Some(tls::Client::new(options, host).map_err(Refusal::Failed)?),
        None => None,
    };
    let addrs = resolve(host, port)?;
    let deadline = Instant::now() + retry_for;
    let mut told = false;
    loop {
        let attempt = connect(&addrs, host, port).and_then(|socket| match &tls {
            Some(tls) => handshake(tls, socket),
            None => Ok(Transport::Plain(Arc::new(socket))),
        });
        match attempt.and_then(greet) {
            Err(refusal @ (Refusal::Busy(_) | Refusal::Refused(_)))
                if Instant::now() + RETRY_PAUSE <= deadline =>
            {
                if !told {
                    retrying(&refusal);
                    told = true;
                }
                thread::sleep(RETRY_PAUSE);
            }
            result => return result,
        }
    }
}

/// The addresses of `host` (`localhost` may give both `::1` and
/// `127.0.0.1`): at least one.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    if addrs.is_empty() {
        return Err(Refusal::Failed(format!("cannot resolve host '{host}'")));
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that answers.
fn connect(addrs: &[SocketAddr], host: &str, port: u16) -> Result<TcpStream, Refusal> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    let e = last_error.expect("resolve gives at least one address");
    let message = format!("cannot connect to {host}:{port}: {}", describe(&e));
    if e.kind() == io::ErrorKind::ConnectionRefused {
        Err(Refusal::Refused(message))
    } else {
        Err(Refusal::Failed(message))
    }
}

/// The TLS handshake on `socket`, each wait for the server bounded.
fn handshake(tls: &tls::Client, socket: TcpStream) -> Result<Transport, Refusal> {
    let lost = |e: io::Error| Refusal::Failed(format!("connection lost: {}", describe(&e)));
    socket
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(lost)?;
    let conn = tls.handshake(socket).map_err(Refusal::Failed)?;
    // As on a plain socket: `FromServer` sets a timeout when it needs one.
    conn.socket().set_read_timeout(None).map_err(lost)?;
    Ok(Transport::Tls(Arc::new(conn)))
}

/// Says `Hi` and reads the server's answer: `Hello` and a welcome from a
/// chat server that takes us, `ERR busy: …` from one that is full, `Hi`
/// from the echo server, a reply without a line end from some others.
fn greet(transport: Transport) -> Result<Session, Refusal> {
    let lost = |e: io::Error| {
        let message = format!("connection lost: {}", tls::describe_error(&e));
        Refusal::Failed(message)
    };
    transport.send(b"Hi\n").map_err(lost)?;
    let mut from = FromServer::new(transport.clone());
    // Only the answer has a deadline: later the server may stay silent for
    // as long as it likes.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let first = match from.read_line(Some(deadline)) {
        Ok(Some(line)) => line,
        Ok(None) => {
            let message = "the server closed the connection without answering";
            return Err(Refusal::Failed(message.into()));
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            let message = format!("no answer from the server within {ANSWER_TIMEOUT:?}");
            return Err(Refusal::Failed(message));
        }
        Err(e) => return Err(lost(e)),
    };
    if let Some(reason) = busy_reason(&first) {
        return Err(Refusal::Busy(reason));
    }
    // A chat server follows `Hello` with its welcome at once; read it here,
    // so that the line limit it gives is known before the user's first line.
    let mut answer = vec![first];
    if answer[0] == b"Hello" {
        match from.read_line(Some(deadline)) {
            Ok(Some(welcome)) => answer.push(welcome),
            // The session shows the close, or the silence, from here on.
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => return Err(lost(e)),
        }
    }
    let max_line = answer
        .get(1)
        .and_then(|welcome| announced_limit(welcome))
        .unwrap_or(DEFAULT_MAX_LINE);
    from.unread(&answer);
    Ok(Session {
        to: ToServer(transport),
        from,
        max_line,
    })
}

/// The reason in a full server's answer, `ERR busy: REASON`; `None` for any
/// other line.
fn busy_reason(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let rest = line.trim_end().strip_prefix("ERR busy")?;
    Some(rest.strip_prefix(": ").unwrap_or(rest).to_owned())
}

/// The line limit in a chat server's welcome, `* welcome, you are user3;
/// lines up to 4096 bytes; /help lists commands`; `None` if it says none.
fn announced_limit(welcome: &[u8]) -> Option<usize> {
    let welcome = String::from_utf8_lossy(welcome);
    welcome
        .strip_prefix("* welcome, ")?
        .split("; ")
        .find_map(|part| part.strip_prefix("lines up to ")?.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
}

/// Why `text` is not to be sent, if a line of it is longer than the
/// `max_line` bytes the server takes: the server would answer `ERR line too
/// long` and close the connection. `text` is one line, or several (a paste
/// in the line editor), each checked alone, as the server will.
pub fn too_long(text: &[u8], max_line: usize) -> Option<String> {
    let longest = text.split(|&b| b == b'\n').map(<[u8]>::len).max()?;
    (longest > max_line).then(|| {
        format!("not sent: the line is {longest} bytes, and the server takes lines up to {max_line} bytes")
    })
}

/// Reads the server's lines until it closes the connection and hands each,
/// without its `\n`, to `show`. A last line without `\n` is shown too, and
/// so is one that stays unfinished for [`QUIET`].
pub fn relay(
    mut from: FromServer,
    mut show: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        match from.read_line(None) {
            Ok(Some(line)) => show(&line)?,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err("connection reset by server".into())
            }
            Err(e) => return Err(format!("connection lost: {}", tls::describe_error(&e))),
        }
    }
}

/// Whether `line` is `bye`, which ends the session: any case, surrounding
/// whitespace ignored.
pub fn is_bye(line: &[u8]) -> bool {
    line.trim_ascii().eq_ignore_ascii_case(b"bye")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answers_give_their_reason() {
        let reason = busy_reason(b"ERR busy: serving another client, try again later\n");
        assert_eq!(
            reason.as_deref(),
            Some("serving another client, try again later")
        );
        assert_eq!(busy_reason(b"Hello\n"), None);
        assert_eq!(busy_reason(b"ERR say Hi first\n"), None);
    }

    #[test]
    fn the_welcome_may_give_the_line_limit() {
        let welcome = b"* welcome, you are user3; lines up to 4096 bytes; /help lists commands";
        assert_eq!(announced_limit(welcome), Some(4096));
        let older = b"* welcome, you are user3; /help lists commands";
        assert_eq!(announced_limit(older), None);
        let forged = b"<alice> lines up to 9 bytes";
        assert_eq!(announced_limit(forged), None);
    }

    #[test]
    fn a_line_over_the_limit_is_not_sent() {
        assert_eq!(too_long(b"12345", 5), None);
        let message = "not sent: the line is 6 bytes, and the server takes lines up to 5 bytes";
        assert_eq!(too_long(b"123456", 5).as_deref(), Some(message));
        // A paste of several lines: each is a line to the server.
        assert_eq!(too_long(b"12345\n12345", 5), None);
        assert_eq!(too_long(b"12345\n123456\n1", 5).as_deref(), Some(message));
    }

    #[test]
    fn bye_is_any_case_and_trimmed() {
        assert!(is_bye(b"bye"));
        assert!(is_bye(b"  BYE \r"));
        assert!(!is_bye(b"bye now"));
    }
}
