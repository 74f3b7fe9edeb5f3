//! The operator's side of a chat server: console lines typed on stdin,
//! posted to the handler's `on_wake` from a thread of their own, and the
//! transcript written to stdout by another.
//!
//! A thread, not a source on the event loop, because stdin may be a regular
//! file or `/dev/null`, which epoll refuses to watch; a blocking read works
//! on all of them, and every driver accepts posts through its `Handle`.
//!
//! When stdin and stdout are both a terminal, the console is a line editor
//! (rustyline, as in the client): a prompt, line editing and history, and
//! the transcript printed above the prompt and the half-typed line, so that
//! a line arriving while the operator types no longer lands in the middle
//! of the typing. Otherwise lines are read and written plainly.

use std::io::{self, BufRead, IsTerminal, Write};
use std::mem::{self, MaybeUninit};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use reactor::Handle;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};

/// The console's prompt in a terminal.
const PROMPT: &str = "> ";

/// Whether the console will be a line editor: stdin and stdout are both
/// terminals. (If rustyline cannot drive the terminal, `TERM=dumb` say, the
/// console falls back to plain lines when it starts.)
pub fn is_interactive() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// Reads console lines and posts each (without its line ending, invalid
/// UTF-8 replaced) as `wrap(line)`: from the line editor if the console
/// [is interactive](is_interactive), line by line from stdin otherwise. At
/// end of input (Ctrl-D on an empty line, in a terminal), or on a read
/// error, the thread just ends: the server goes on serving without a
/// console. In a terminal Ctrl-C is still SIGINT, the graceful stop.
pub fn spawn<M: Send + 'static>(handle: Handle<M>, wrap: fn(String) -> M) {
    if is_interactive() {
        match editor() {
            Ok(editor) => {
                let edit = move || edit(editor, &handle, wrap);
                if let Err(e) = thread::Builder::new().name("console".into()).spawn(edit) {
                    tracing::warn!("no operator console: {e}");
                }
                return;
            }
            Err(e) => tracing::warn!("no line editing on the console: {e}"),
        }
    }
    let reader = move || {
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if handle.post(wrap(line.to_owned())).is_err() {
                        return; // the server has stopped
                    }
                }
            }
        }
    };
    if let Err(e) = thread::Builder::new().name("console".into()).spawn(reader) {
        tracing::warn!("no operator console: {e}");
    }
}

/// The transcript's way to the terminal once the console is a line editor:
/// rustyline's printer, which clears the prompt and the half-typed line,
/// prints, and draws them again below.
static PRINTER: Mutex<Option<Box<dyn ExternalPrinter + Send>>> = Mutex::new(None);

/// The line editor, with the transcript's printer installed, and the
/// terminal's settings saved to be put back at exit.
fn editor() -> rustyline::Result<DefaultEditor> {
    // Signals on: Ctrl-C is SIGINT, the graceful stop it always was, and
    // a second one cuts the stop short; Ctrl-Z suspends.
    let config = rustyline::Config::builder()
        .enable_signals(true)
        .auto_add_history(true)
        .build();
    let mut editor = DefaultEditor::with_config(config)?;
    let printer = editor.create_external_printer()?;
    restore_terminal_at_exit();
    *PRINTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(printer));
    Ok(editor)
}

/// The console thread in a terminal: reads lines with the editor and posts
/// them, until the end of input or the server's.
fn edit<M: Send>(mut editor: DefaultEditor, handle: &Handle<M>, wrap: fn(String) -> M) {
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if handle.post(wrap(line)).is_err() {
                    return; // the server has stopped
                }
            }
            // With signals on, Ctrl-C reaches the server as SIGINT; should
            // the editor see it all the same, it means the same.
            Err(ReadlineError::Interrupted) => {
                let _ = handle.stop();
            }
            Err(ReadlineError::Eof) => {
                tracing::warn!(
                    "console closed (end of input): Ctrl-C or a signal stops the server"
                );
                return;
            }
            Err(e) => {
                tracing::warn!("console closed: {e}");
                return;
            }
        }
    }
}

/// The terminal's settings from before the line editor changed them.
static SAVED_TERMINAL: OnceLock<libc::termios> = OnceLock::new();

/// Saves stdin's terminal settings and puts them back when the process
/// exits, as linenoise does. The server stops while the editor waits for a
/// line, in raw mode (no echo, no line discipline), and the editor cannot
/// be woken to restore it: without this, the operator's shell would be left
/// typing blind.
fn restore_terminal_at_exit() {
    let mut saved = MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr writes a termios to the pointer, which is valid for
    // it; the value is used only if the call succeeded.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: initialised by the successful tcgetattr.
    if SAVED_TERMINAL.set(unsafe { saved.assume_init() }).is_ok() {
        // SAFETY: registers a function with no preconditions.
        unsafe { libc::atexit(restore_terminal) };
    }
}

/// Run by `exit`: the saved settings back, and the prompt line erased, so
/// that the shell's prompt starts on a clean line.
extern "C" fn restore_terminal() {
    if let Some(saved) = SAVED_TERMINAL.get() {
        // SAFETY: a valid termios, and plain system calls on fds 0 and 1.
        // Not std's stdout: another thread may hold its lock at exit.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, saved);
            libc::write(
                libc::STDOUT_FILENO,
                ERASE_LINE.as_ptr().cast(),
                ERASE_LINE.len(),
            );
        }
    }
}

/// To the start of the line, and clear it: what the editor drew there.
const ERASE_LINE: &[u8] = b"\r\x1b[K";

/// Bytes of transcript waiting for stdout, at most. Past it whole lines are
/// dropped rather than queued without bound.
const TRANSCRIPT_BACKLOG: usize = 1 << 20;

/// How long the writer lets lines gather after each write. A transcript is
/// read by people: a hundred writes a second are plenty, and waking a thread
/// for every relayed line cost a busy server3 two context switches per line.
const TRANSCRIPT_PAUSE: Duration = Duration::from_millis(10);

/// How long a stopping server waits for the transcript's last lines to be
/// written: not forever, since stdout may be a pipe nobody reads.
const TRANSCRIPT_DRAIN: Duration = Duration::from_millis(500);

/// The chat transcript's sink: stdout, written by a thread of its own.
///
/// The handler runs on the server's one event-loop thread, and stdout may be
/// a pipe nobody reads (`server3 … | less`, left in the background). A
/// blocking write there would stop every client, so the handler only appends
/// lines to a shared buffer, which the writer thread takes whole and writes
/// at most every `TRANSCRIPT_PAUSE`. When `TRANSCRIPT_BACKLOG` bytes wait
/// behind the batch being written, further lines are dropped and counted,
/// and the count is logged once stdout catches up (or at the end).
pub fn transcript() -> Box<dyn Write + Send> {
    let shared = Arc::new(Shared::default());
    let theirs = Arc::clone(&shared);
    if let Err(e) = thread::Builder::new()
        .name("transcript".into())
        .spawn(move || write_out(&theirs))
    {
        tracing::warn!("no transcript: {e}");
        lock(&shared.queue).ended = true;
    }
    Box::new(Transcript {
        shared,
        partial: Vec::new(),
        dropped: 0,
    })
}

/// What the handler and the writer thread share.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the writer is waiting and there is something for it:
    /// lines, or the end.
    ready: Condvar,
    /// Signalled by the writer once it has written everything and ended.
    done: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Whole lines not yet taken by the writer.
    bytes: Vec<u8>,
    /// The writer sleeps on `ready`: only then is waking it worth a system call.
    waiting: bool,
    /// The server is stopping: write what is left, then end.
    closing: bool,
    /// The writer has ended (stdout closed, or everything written at close).
    ended: bool,
}

/// The writer thread: takes everything queued, writes it in one go, pauses
/// so the next batch can gather, and repeats until closed.
fn write_out(shared: &Shared) {
    let mut out = io::stdout();
    let mut batch = Vec::new();
    loop {
        let closing = {
            let mut queue = lock(&shared.queue);
            while queue.bytes.is_empty() && !queue.closing {
                queue.waiting = true;
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                queue.waiting = false;
            }
            if queue.bytes.is_empty() {
                break; // closing, and everything is written
            }
            // Swap, not copy: the handler goes on filling the other buffer.
            mem::swap(&mut queue.bytes, &mut batch);
            queue.closing
        };
        if write_batch(&mut out, &batch, closing).is_err() {
            break; // stdout is closed: lines pile up to the limit, then are dropped
        }
        batch.clear();
        if !closing {
            thread::sleep(TRANSCRIPT_PAUSE);
        }
    }
    lock(&shared.queue).ended = true;
    shared.done.notify_all();
}

/// Writes a batch of whole lines to the terminal's printer if the console
/// is a line editor, to stdout otherwise.
fn write_batch(out: &mut io::Stdout, batch: &[u8], closing: bool) -> io::Result<()> {
    let mut printer = PRINTER.lock().unwrap_or_else(|e| e.into_inner());
    match printer.as_mut() {
        Some(printer) if !closing => printer
            .print(String::from_utf8_lossy(batch).into_owned())
            .map_err(io::Error::other),
        // The last words, written by this thread: the printer only queues
        // lines for the editor's thread, which may not get to them before
        // the process exits. Over the prompt, which the exit erases anyway.
        Some(_) => out
            .write_all(ERASE_LINE)
            .and_then(|()| out.write_all(batch))
            .and_then(|()| out.flush()),
        None => out.write_all(batch).and_then(|()| out.flush()),
    }
}

/// Locks the queue even if the other side panicked while holding it: the
/// queue is plain bytes and flags, valid at every step.
fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// Collects bytes into lines and queues each whole line for the writer.
struct Transcript {
    shared: Arc<Shared>,
    partial: Vec<u8>,
    dropped: u64,
}

impl Transcript {
    fn queue(&mut self, line: &[u8]) {
        let mut queue = lock(&self.shared.queue);
        if queue.ended || queue.bytes.len() + line.len() > TRANSCRIPT_BACKLOG {
            self.dropped += 1;
            return;
        }
        queue.bytes.extend_from_slice(line);
        if queue.waiting {
            queue.waiting = false; // one wake-up is enough
            self.shared.ready.notify_one();
        }
        drop(queue);
        self.report_dropped();
    }

    /// Logs how many lines were dropped since the last report, if any.
    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                "stdout fell behind: {} transcript lines dropped",
                self.dropped
            );
            self.dropped = 0;
        }
    }
}

impl Write for Transcript {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.queue(&rest[..=end]);
            } else {
                self.partial.extend_from_slice(&rest[..=end]);
                let line = mem::take(&mut self.partial);
                self.queue(&line);
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Transcript {
    /// Waits for the lines still queued — the last words of a stopping
    /// server, such as `* server shutting down` — to reach stdout.
    fn drop(&mut self) {
        let mut queue = lock(&self.shared.queue);
        queue.closing = true;
        self.shared.ready.notify_one();
        let deadline = Instant::now() + TRANSCRIPT_DRAIN;
        while !queue.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self
                .shared
                .done
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(queue);
        self.report_dropped();
    }
}
