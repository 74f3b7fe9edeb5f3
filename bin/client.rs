//! client: a line client for the netchat servers.
//!
//! It connects, over TLS with `--tls`, says `Hi` and reads the server's
//! answer: `ERR busy: …` means the server is full (exit status 3, or try
//! again with `--retry`); a chat server's welcome may say how long a line it
//! takes. Then two things go on at once, on two threads: lines from the
//! server are shown as they arrive, and lines from the user are sent. In a
//! terminal the user types into a line editor (rustyline) and arriving lines
//! are printed above its prompt; with stdin from a pipe or a file, lines are
//! read and printed plainly, which is what scripts and the tests use.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use chatapp::cli::{self, describe};
use chatapp::client::{self, is_bye, relay, too_long, Refusal, Session, TlsOptions, ToServer};
use clap::Parser;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};

/// How long to wait, once `bye` is sent, for the server to close.
const BYE_WAIT: Duration = Duration::from_secs(2);
/// The exit status when the server is busy.
const EXIT_BUSY: u8 = 3;
/// The exit status when the server closed the connection before the user
/// left.
const EXIT_CLOSED: u8 = 4;
/// The line editor's prompt.
const PROMPT: &str = "> ";
/// How often the line editor is interrupted until it returns, once the
/// server has gone (see [`interrupt_editor`]).
const INTERRUPT_EVERY: Duration = Duration::from_millis(50);

/// Line client for the netchat servers.
///
/// Connects, sends `Hi`, then sends each line read from stdin and prints
/// every line the server sends. In a terminal, lines are typed with line
/// editing and history, and what arrives meanwhile is printed above the
/// prompt; Ctrl-D and Ctrl-C leave, as `bye` does. With stdin from a pipe or
/// a file, `bye` is sent at its end. After sending `bye` the client waits up
/// to two seconds for the server to close the connection, then exits. When
/// the server closes the connection first, the client says so and exits at
/// once.
///
/// A line longer than the server takes (the limit its welcome gives, or
/// 4096 bytes) is not sent: the client says so and goes on. A reply that
/// does not end in a newline is shown once the server has been quiet for
/// half a second.
///
/// With --tls, the server's certificate must be valid for HOST (or
/// --tls-name) and signed by one of the system's root certificates (or by
/// the CA of --ca); otherwise the client stops with an error.
#[derive(Parser)]
#[command(
    version,
    after_help = "Exit status: 0 when the user ended the session (bye sent, Ctrl-D or Ctrl-C, \
                  the end of stdin), 1 on an error (cannot connect, a TLS failure, connection lost), \
                  2 on a usage error, 3 when the server is busy (after --retry, if given), \
                  4 when the server closed the connection first."
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
    /// Connect with TLS, checking the server's certificate.
    #[arg(long)]
    tls: bool,
    /// With --tls: trust only the certificate authority (or the self-signed
    /// certificate) in this PEM file, instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must be valid for,
    /// instead of HOST.
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_name: Option<String>,
}

/// Who ended a session that went well.
enum Ending {
    /// The user: `bye`, Ctrl-D, Ctrl-C, the end of stdin.
    User,
    /// The server, by closing the connection before the user left.
    Server,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tls = args.tls.then(|| TlsOptions {
        ca: args.ca.clone(),
        name: args.tls_name.clone(),
    });
    let retry_for = Duration::from_secs(args.retry);
    let retrying = |why: &Refusal| eprintln!("{why}; trying again for up to {retry_for:?}");
    let session = match client::join(&args.host, args.port, tls.as_ref(), retry_for, retrying) {
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
        Ok(Ending::User) => ExitCode::SUCCESS,
        Ok(Ending::Server) => {
            eprintln!("the server closed the connection");
            ExitCode::from(EXIT_CLOSED)
        }
        Err(e) => cli::fail(e),
    }
}

/// Who ended the session, once the server has closed the connection: the
/// user, if `bye` was on its way.
fn ending(said_bye: &AtomicBool) -> Ending {
    if said_bye.load(Ordering::SeqCst) {
        Ending::User
    } else {
        Ending::Server
    }
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
fn chat_plainly(session: Session) -> Result<Ending, String> {
    let Session { to, from, max_line } = session;
    let said_bye = Arc::new(AtomicBool::new(false));
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
    let sending = said_bye.clone();
    thread::spawn(move || input_done.send(Done::Input(send_stdin(to, max_line, &sending))));

    match finished.recv().expect("both threads report") {
        Done::Server(result) => result.map(|()| ending(&said_bye)),
        // Either the server closes now, as it should after `bye`, or we stop
        // waiting; a thread still blocked reading stdin ends with the process.
        Done::Input(sent) => match finished.recv_timeout(BYE_WAIT) {
            Ok(Done::Server(result)) => result.map(|()| ending(&said_bye)),
            _ => sent.map(|()| Ending::User),
        },
    }
}

/// Sends stdin line by line up to a line `bye`, which it sends itself at the
/// end of stdin, and says on stderr which lines are too long to send. It
/// does not shut down its side of the connection: the server is to see
/// `bye` and close first.
fn send_stdin(mut to: ToServer, max_line: usize, said_bye: &AtomicBool) -> Result<(), String> {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = stdin
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read stdin: {}", describe(&e)))?;
        let line = match n {
            0 => &b"bye"[..],
            _ => buf.strip_suffix(b"\n").unwrap_or(&buf),
        };
        if let Some(why) = too_long(line, max_line) {
            eprintln!("{why}");
            continue;
        }
        let bye = is_bye(line);
        // Before it is sent: the server may answer and close at once.
        said_bye.store(bye, Ordering::SeqCst);
        to.send_line(line)?;
        if bye {
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
/// the client quits at once: the printing thread interrupts `readline` (see
/// [`interrupt_editor`]), and the main thread, finding the server gone,
/// returns.
fn chat_in_terminal(
    session: Session,
    mut editor: DefaultEditor,
    mut printer: impl ExternalPrinter + Send + 'static,
) -> Result<Ending, String> {
    let Session {
        mut to,
        from,
        max_line,
    } = session;
    // SIGINT interrupts `readline`, whose handler for it rustyline installs
    // only while it reads; between two reads it is ignored, as the terminal
    // is then not in raw mode and Ctrl-C would otherwise kill the client.
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours
    // in a handler.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let said_bye = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel();
    let leaving = said_bye.clone();
    thread::spawn(move || {
        let shown = relay(from, |line| {
            printer
                .print(printable(line))
                .map_err(|e| format!("cannot print: {e}"))
        });
        if leaving.load(Ordering::SeqCst) {
            // The main thread sent `bye` and waits for this, not for a key.
            let _ = done.send(shown);
            return;
        }
        // The editor looks for a signal before it prints a queued line, so
        // the server's last line (the one that says why) could be lost to
        // the interrupt. But rustyline's printer queues one line at most (a
        // channel of one, in rustyline 19), so this empty line is queued only
        // once the last one has left the queue, and the editor prints that
        // before it looks again. The empty line may be dropped: no loss.
        let _ = printer.print(String::new());
        let _ = done.send(shown);
        interrupt_editor();
    });

    loop {
        let read = editor.readline(PROMPT);
        if let Ok(shown) = finished.try_recv() {
            // The server has gone: nobody to send the line to.
            return shown.map(|()| ending(&said_bye));
        }
        let line = match read {
            Ok(line) => line,
            // Ctrl-D, and Ctrl-C, leave as `bye` does.
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => "bye".to_owned(),
            Err(e) => return Err(format!("cannot read the terminal: {e}")),
        };
        // History is a convenience: an entry that cannot be added is no loss.
        let _ = editor.add_history_entry(line.as_str());
        if let Some(why) = too_long(line.as_bytes(), max_line) {
            eprintln!("{why}");
            continue;
        }
        let bye = is_bye(line.as_bytes());
        said_bye.store(bye, Ordering::SeqCst);
        if let Err(e) = to.send_line(line.as_bytes()) {
            // The server may have closed the connection meanwhile, and then
            // its story is the one to tell.
            let shown = finished.recv_timeout(BYE_WAIT).unwrap_or(Err(e));
            return shown.map(|()| ending(&said_bye));
        }
        if bye {
            break;
        }
    }
    // As in a pipe: the server answers `Bye` and closes, or we stop waiting.
    finished
        .recv_timeout(BYE_WAIT)
        .unwrap_or(Ok(()))
        .map(|()| Ending::User)
}

/// Makes the main thread's `readline` return, once the server has gone.
///
/// `readline` cannot be cancelled from another thread, but it returns on
/// SIGINT, which it catches while it reads (in raw mode, Ctrl-C is a key,
/// not a signal) and then restores the terminal as on any return. A signal
/// that comes between two reads is ignored, and the main thread may be
/// about to read again, so it is raised until the process ends, which it
/// does as soon as the main thread sees that the server has gone. (Exiting
/// from this thread instead would leave the terminal in raw mode unless we
/// restored it behind rustyline's back.)
fn interrupt_editor() -> ! {
    loop {
        // SAFETY: raise has no preconditions; the handler is rustyline's,
        // or SIG_IGN.
        unsafe { libc::raise(libc::SIGINT) };
        thread::sleep(INTERRUPT_EVERY);
    }
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
