//! The operator console: lines typed on the server's stdin, posted to the
//! handler's `on_wake` from a thread of their own.
//!
//! A thread, not a source on the event loop, because stdin may be a regular
//! file or `/dev/null`, which epoll refuses to watch; a blocking read works
//! on all of them, and every driver accepts posts through its `Handle`.

use std::io::{self, BufRead};
use std::thread;

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
