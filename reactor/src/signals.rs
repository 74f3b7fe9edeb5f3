//! SIGINT, SIGTERM and SIGHUP turned into a readable socket, so that a signal
//! wakes the poller like any other event (the self-pipe trick, done by
//! signal-hook).
//!
//! SIGHUP is what a server started from a terminal gets when the terminal
//! closes; by default it kills the process at once, and the clients would
//! never hear that the server is going. Here it stops the server like the
//! other two. (A daemon that reloads its configuration on SIGHUP would treat
//! it differently; these servers have nothing to reload.)

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::low_level::{pipe, unregister};
use signal_hook::SigId;

/// The read end of a socket pair that receives a byte per SIGINT, SIGTERM or
/// SIGHUP.
/// While it exists those signals no longer kill the process; dropping it
/// restores that.
#[derive(Debug)]
pub(crate) struct SignalPipe {
    read: UnixStream,
    ids: Vec<SigId>,
}

impl SignalPipe {
    /// Installs the handlers. `nonblocking` is for a reader that polls the
    /// pipe; a thread that waits on it wants it blocking.
    pub(crate) fn new(nonblocking: bool) -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(nonblocking)?;
        let mut pipe_ = SignalPipe {
            read,
            ids: Vec::new(),
        };
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            pipe_.ids.push(pipe::register(signal, write.try_clone()?)?);
        }
        Ok(pipe_)
    }

    /// Reads what has arrived and returns how many signals that was. Blocks
    /// if the pipe is blocking and nothing has arrived yet.
    pub(crate) fn drain(&self) -> usize {
        let mut buf = [0u8; 64];
        let mut count = 0;
        loop {
            match (&self.read).read(&mut buf) {
                Ok(0) => return count,
                Ok(n) => {
                    count += n;
                    if n < buf.len() {
                        return count;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return count,
            }
        }
    }
}

impl AsFd for SignalPipe {
    /// The socket to watch for readability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            unregister(id);
        }
    }
}
