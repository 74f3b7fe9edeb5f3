//! client: a line client for the netchat servers.
//!
//! It connects, says `Hi` and reads the server's first line: `ERR busy: …`
//! means the server is full (exit status 3, or try again with `--retry`).
//! Then two things go on at once, on two threads: lines from the server are
//! shown as they arrive, and lines from the user are sent. In a terminal the
//! user types into a line editor (rustyline) and arriving lines are printed
//! above its prompt; with stdin from a pipe or a file, lines are read and
//! printed plainly, which is what scripts and the tests use.

use std::fmt;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chatapp::cli::{self, describe};
use clap::Parser;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to answer `Hi`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait, once `bye` is sent, for the server to close.
const BYE_WAIT: Duration = Duration::from_secs(2);
/// The pause between two attempts of `--retry`.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The exit status when the server is busy.
const EXIT_BUSY: u8 = 3;
/// The line editor's prompt.
const PROMPT: &str = "> ";

/// Line client for the netchat servers.
///
/// Connects, sends `Hi`, then sends each line read from stdin and prints
/// every line the server sends. In a terminal, lines are typed with line
/// editing and history, and what arrives meanwhile is printed above the
/// prompt; Ctrl-D and Ctrl-C leave, as `bye` does, and once the server has
/// closed the connection, Enter quits. With stdin from a pipe or a file,
/// `bye` is sent at its end. After sending `bye` the client waits up
/// to two seconds for the server to close the connection, then exits.
#[derive(Parser)]
#[command(
    version,
    after_help = "Exit status: 0 when the session ended (bye sent, or the server closed \
                  the connection), 1 on an error (cannot connect, connection lost), 2 on \
                  a usage error, 3 when the server is busy (after --retry, if given)."
)]
struct Args {
    /// Server to connect to: a name such as `localhost`, an IPv4 or an IPv6
    /// address.
    host: String,
    /// The server's port.
    port: u16,
    /// While the server is busy or refuses the connection, try again every
    /// 0.2 seconds, for up to SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    retry: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let retry_for = Duration::from_secs(args.retry);
    let session = match join(&args.host, args.port, retry_for) {
        Ok(session) => session,
        Err(busy @ Refusal::Busy(_)) => {
            eprintln!("error: {busy}");
            return ExitCode::from(EXIT_BUSY);
        }
        Err(refusal) => cli::fail(refusal),
    };
    let outcome = match terminal() {
        Some((editor, printer)) => chat_in_terminal(session, editor, printer),
        None => chat_plainly(session),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(e),
    }
}

/// A connection whose greeting the server has answered.
struct Session {
    /// Where lines for the server go.
    to: TcpStream,
    /// What the server sends, starting with its answer to `Hi`.
    from: FromServer,
}

/// The server's answer to `Hi`, already read, put back in front of the rest
/// of what it sends.
type FromServer = io::Chain<io::Cursor<Vec<u8>>, BufReader<TcpStream>>;

/// Why there is no session.
enum Refusal {
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
/// tries again every [`RETRY_PAUSE`] for up to `retry_for`, after saying so
/// once on stderr.
fn join(host: &str, port: u16, retry_for: Duration) -> Result<Session, Refusal> {
    let addrs = resolve(host, port)?;
    let deadline = Instant::now() + retry_for;
    let mut said_so = false;
    loop {
        match connect(&addrs, host, port).and_then(greet) {
            Err(refusal @ (Refusal::Busy(_) | Refusal::Refused(_)))
                if Instant::now() + RETRY_PAUSE <= deadline =>
            {
                if !said_so {
                    eprintln!("{refusal}; trying again for up to {retry_for:?}");
                    said_so = true;
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
fn relay(
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
fn send_line(to: &mut TcpStream, line: &[u8]) -> Result<(), String> {
    to.write_all(&[line, b"\n"].concat())
        .map_err(|e| format!("cannot send: {}", describe(&e)))
}

/// Whether `line` is `bye`, which ends the session: any case, surrounding
/// whitespace ignored.
fn is_bye(line: &[u8]) -> bool {
    line.trim_ascii().eq_ignore_ascii_case(b"bye")
}

// ---- stdin from a pipe or a file ----

/// What the two threads of [`chat_plainly`] report when they are done.
enum Done {
    /// The server closed the connection (`Ok`), or it broke.
    Server(Result<(), String>),
    /// Input was sent up to `bye`, or could not be.
    Input(Result<(), String>),
}

/// The session without a line editor: one thread prints the server's lines
/// on stdout, another sends stdin's, and whichever is done first decides how
/// the program ends.
fn chat_plainly(session: Session) -> Result<(), String> {
    let Session { to, from } = session;
    let (done, finished) = mpsc::channel();
    let input_done = done.clone();
    thread::spawn(move || {
        let mut out = io::stdout().lock();
        let shown = relay(from, |line| {
            out.write_all(&[line, b"\n"].concat())
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write to stdout: {}", describe(&e)))
        });
        done.send(Done::Server(shown))
    });
    thread::spawn(move || input_done.send(Done::Input(send_stdin(to))));

    match finished.recv().expect("both threads report") {
        Done::Server(result) => result,
        // Either the server closes now, as it should after `bye`, or we stop
        // waiting; a thread still blocked reading stdin ends with the process.
        Done::Input(sent) => match finished.recv_timeout(BYE_WAIT) {
            Ok(Done::Server(result)) => result,
            _ => sent,
        },
    }
}

/// Sends stdin line by line up to a line `bye`, which it sends itself at the
/// end of stdin. It does not shut down its side of the connection: the
/// server is to see `bye` and close first.
fn send_stdin(mut to: TcpStream) -> Result<(), String> {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = stdin
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read stdin: {}", describe(&e)))?;
        if n == 0 {
            return send_line(&mut to, b"bye");
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        send_line(&mut to, line)?;
        if is_bye(line) {
            return Ok(());
        }
    }
}

// ---- a terminal ----

/// The line editor, and a printer for what arrives while the user types, if
/// stdin and stdout are both terminals that rustyline can drive (it cannot
/// drive `TERM=dumb`).
fn terminal() -> Option<(DefaultEditor, impl ExternalPrinter + Send + 'static)> {
    if !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
        return None;
    }
    let mut editor = DefaultEditor::new().ok()?;
    let printer = editor.create_external_printer().ok()?;
    Some((editor, printer))
}

/// The session in a terminal: the main thread runs the line editor, and
/// another prints the server's lines through rustyline's external printer,
/// which clears the prompt and the half-typed line, prints, and draws them
/// again below.
///
/// When the server closes the connection on its own (a kick, a shutdown),
/// the client says so and quits at the next Enter, Ctrl-D or Ctrl-C:
/// `readline` cannot be cancelled from another thread. (Raising SIGINT,
/// which rustyline catches, would end it, but rustyline reacts to the signal
/// before it prints what is still queued, and the server's last line, the
/// one that says why, would be lost.)
fn chat_in_terminal(
    session: Session,
    mut editor: DefaultEditor,
    mut printer: impl ExternalPrinter + Send + 'static,
) -> Result<(), String> {
    let Session { mut to, from } = session;
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let mut answered_bye = false;
        let shown = relay(from, |line| {
            // `Bye` from a chat server, `bye` echoed by the echo server.
            answered_bye = is_bye(line);
            printer
                .print(printable(line))
                .map_err(|e| format!("cannot print: {e}"))
        });
        // Unless the server's last line answered the user's `bye`, the
        // editor is still waiting for a line, and the user must be told.
        if !answered_bye {
            let _ = printer.print("(disconnected: press Enter to quit)\n".to_owned());
        }
        let _ = done.send(shown);
    });

    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            // Ctrl-D, and Ctrl-C, leave as `bye` does.
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => "bye".to_owned(),
            Err(e) => return Err(format!("cannot read the terminal: {e}")),
        };
        if let Ok(shown) = finished.try_recv() {
            return shown; // the server has gone: nobody to send the line to
        }
        // History is a convenience: an entry that cannot be added is no loss.
        let _ = editor.add_history_entry(line.as_str());
        send_line(&mut to, line.as_bytes())?;
        if is_bye(line.as_bytes()) {
            break;
        }
    }
    // As in a pipe: the server answers `Bye` and closes, or we stop waiting.
    finished.recv_timeout(BYE_WAIT).unwrap_or(Ok(()))
}

/// `line` made fit for the terminal, with its `\n`: invalid UTF-8 replaced,
/// control characters but tab dropped. The chat servers send none, but a
/// server could send anything, and an ESC or a CR would garble the editor's
/// display.
fn printable(line: &[u8]) -> String {
    let mut text: String = String::from_utf8_lossy(line)
        .chars()
        .filter(|&c| c == '\t' || !c.is_control())
        .collect();
    text.push('\n');
    text
}
