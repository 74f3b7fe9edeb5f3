//! The operator's side of a chat server: console lines typed on stdin,
//! posted to the handler's `on_wake` from a thread of their own, and the
//! transcript written to stdout by another.
//!
//! A thread, not a source on the event loop, because stdin may be a regular
//! file or `/dev/null`, which epoll refuses to watch; a blocking read works
//! on all of them, and every driver accepts posts through its `Handle`.

use std::io::{self, BufRead, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;
use std::time::Duration;

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

/// Lines of transcript waiting for stdout, at most. Past it lines are
/// dropped rather than queued without bound.
const TRANSCRIPT_BACKLOG: usize = 4096;

/// The chat transcript's sink: stdout, written by a thread of its own.
///
/// The handler runs on the server's one event-loop thread, and stdout may be
/// a pipe nobody reads (`server3 … | less`, left in the background). A
/// blocking write there would stop every client, so the handler only queues
/// lines; when stdout falls `TRANSCRIPT_BACKLOG` lines behind, further lines
/// are dropped and counted, and the count is logged once stdout catches up.
pub fn transcript() -> Box<dyn Write + Send> {
    let (lines, rx) = mpsc::sync_channel::<Vec<u8>>(TRANSCRIPT_BACKLOG);
    let (finished, done) = mpsc::channel();
    let writer = move || {
        let mut out = io::stdout();
        for line in rx {
            if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                return; // stdout is closed: the queue fills, lines are dropped
            }
        }
        let _ = finished.send(());
    };
    if let Err(e) = thread::Builder::new()
        .name("transcript".into())
        .spawn(writer)
    {
        tracing::warn!("no transcript: {e}");
    }
    Box::new(Transcript {
        lines: Some(lines),
        done,
        partial: Vec::new(),
        dropped: 0,
    })
}

/// How long a stopping server waits for the transcript's last lines to be
/// written: not forever, since stdout may be a pipe nobody reads.
const TRANSCRIPT_DRAIN: Duration = Duration::from_secs(2);

/// Collects bytes into lines and hands each whole line to the writer thread.
struct Transcript {
    /// `None` once dropping: closing the channel ends the writer thread.
    lines: Option<SyncSender<Vec<u8>>>,
    /// Reports that the writer thread has written every line.
    done: Receiver<()>,
    partial: Vec<u8>,
    dropped: u64,
}

impl Write for Transcript {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..=end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            let Some(lines) = &self.lines else { break };
            match lines.try_send(line) {
                Ok(()) if self.dropped > 0 => {
                    tracing::warn!(
                        "stdout fell behind: {} transcript lines dropped",
                        self.dropped
                    );
                    self.dropped = 0;
                }
                Ok(()) => {}
                Err(_) => self.dropped += 1,
            }
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
        self.lines = None;
        let _ = self.done.recv_timeout(TRANSCRIPT_DRAIN);
    }
}
