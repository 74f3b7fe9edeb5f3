//! The operator's side of a chat server: console lines typed on stdin,
//! posted to the handler's `on_wake` from a thread of their own, and the
//! transcript written to stdout by another.
//!
//! A thread, not a source on the event loop, because stdin may be a regular
//! file or `/dev/null`, which epoll refuses to watch; a blocking read works
//! on all of them, and every driver accepts posts through its `Handle`.

use std::io::{self, BufRead, Write};
use std::mem;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use reactor::Handle;

/// Reads stdin line by line and posts each (without its line ending, invalid
/// UTF-8 replaced) as `wrap(line)`. At end of input, or on a read error, the
/// thread just ends: the server goes on serving without a console.
pub fn spawn<M: Send + 'static>(handle: Handle<M>, wrap: fn(String) -> M) {
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
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
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
