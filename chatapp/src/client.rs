//! The client's side of a session with a netchat server, apart from the
//! terminal: connect (with `--retry`), say `Hi`, tell a busy server from one
//! that takes us, then read the server's lines and send the user's.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::describe;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to answer `Hi`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two attempts of `join` while it retries.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A connection whose greeting the server has answered.
pub struct Session {
    /// Where lines for the server go.
    pub to: TcpStream,
    /// What the server sends, starting with its answer to `Hi`.
    pub from: FromServer,
}

/// The server's answer to `Hi`, already read, put back in front of the rest
/// of what it sends.
pub type FromServer = io::Chain<io::Cursor<Vec<u8>>, BufReader<TcpStream>>;

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

/// Connects and greets; while the server is busy or refuses the connection,
/// tries again every [`RETRY_PAUSE`] for up to `retry_for`, calling
/// `retrying` before the first retry (to tell the user why it waits).
pub fn join(
    host: &str,
    port: u16,
    retry_for: Duration,
    mut retrying: impl FnMut(&Refusal),
) -> Result<Session, Refusal> {
    let addrs = resolve(host, port)?;
    let deadline = Instant::now() + retry_for;
    let mut told = false;
    loop {
        match connect(&addrs, host, port).and_then(greet) {
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

/// Says `Hi` and reads the server's first line: `Hello` from a chat server
/// that takes us, `ERR busy: …` from one that is full, `Hi` from the echo
/// server.
fn greet(mut to: TcpStream) -> Result<Session, Refusal> {
    let lost = |e: io::Error| Refusal::Failed(format!("connection lost: {}", describe(&e)));
    to.write_all(b"Hi\n").map_err(lost)?;
    // The timeout is the socket's, shared by both halves, and only for this
    // first line: later the server may stay silent for as long as it likes.
    to.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(lost)?;
    let mut from = BufReader::new(to.try_clone().map_err(lost)?);
    let mut first = Vec::new();
    match from.read_until(b'\n', &mut first) {
        Ok(0) => {
            let message = "the server closed the connection without answering";
            return Err(Refusal::Failed(message.into()));
        }
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            let message = format!("no answer from the server within {ANSWER_TIMEOUT:?}");
            return Err(Refusal::Failed(message));
        }
        Err(e) => return Err(lost(e)),
    }
    to.set_read_timeout(None).map_err(lost)?;
    if let Some(reason) = busy_reason(&first) {
        return Err(Refusal::Busy(reason));
    }
    let from = io::Cursor::new(first).chain(from);
    Ok(Session { to, from })
}

/// The reason in a full server's answer, `ERR busy: REASON`; `None` for any
/// other line.
fn busy_reason(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let rest = line.trim_end().strip_prefix("ERR busy")?;
    Some(rest.strip_prefix(": ").unwrap_or(rest).to_owned())
}

/// Reads the server's lines until it closes the connection and hands each,
/// without its `\n`, to `show`. A last line without `\n` is shown too.
pub fn relay(
    mut from: FromServer,
    mut show: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => show(line.strip_suffix(b"\n").unwrap_or(&line))?,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err("connection reset by server".into())
            }
            Err(e) => return Err(format!("connection lost: {}", describe(&e))),
        }
    }
}

/// Sends `line` and a `\n`, in one write.
pub fn send_line(to: &mut TcpStream, line: &[u8]) -> Result<(), String> {
    to.write_all(&[line, b"\n"].concat())
        .map_err(|e| format!("cannot send: {}", describe(&e)))
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
    fn bye_is_any_case_and_trimmed() {
        assert!(is_bye(b"bye"));
        assert!(is_bye(b"  BYE \r"));
        assert!(!is_bye(b"bye now"));
    }
}
