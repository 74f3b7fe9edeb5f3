//! The only `unsafe` in the crate: registering descriptors with `polling`.
//!
//! `Poller::add` is unsafe because epoll keeps a reference to the open file
//! description: a source closed while still registered can keep producing
//! events under its old key, or be confused with a new descriptor that reuses
//! the number. The rule is "delete before drop". [`Registered`] makes that
//! rule structural: it owns the source, and the only way to drop the source is
//! to drop the guard, whose `Drop` deletes it from the poller first.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use polling::{Event, PollMode, Poller};

use crate::signals::SignalPipe;
use crate::Error;

/// Poller key of a driver's listening socket. Connection keys are `ConnId`
/// bits, whose generation is never zero, so keys with generation zero are
/// free for the driver's own sources.
pub(crate) const LISTENER_KEY: usize = 0;
/// Poller key of a driver's signal pipe.
pub(crate) const SIGNAL_KEY: usize = 1;

/// Which readiness a source is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

impl Interest {
    pub(crate) const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub(crate) const NONE: Interest = Interest {
        read: false,
        write: false,
    };
}

/// A source registered with a poller, level-triggered, under a fixed key.
#[derive(Debug)]
pub(crate) struct Registered<S: AsFd> {
    source: S,
    key: usize,
    poller: Arc<Poller>,
}

impl<S: AsFd> Registered<S> {
    /// Registers `source` under `key`, watched for `interest`.
    pub(crate) fn new(
        poller: &Arc<Poller>,
        source: S,
        key: usize,
        interest: Interest,
    ) -> io::Result<Registered<S>> {
        let fd = source.as_fd().as_raw_fd();
        // SAFETY: `source` is moved into the guard returned below and never
        // leaves it: `Registered` has no method that gives the source away.
        // The guard's `Drop` deletes `fd` from the poller, and Rust drops the
        // `source` field only after `Drop::drop` has returned, so the
        // descriptor is always deleted before it is closed. If the guard is
        // leaked instead (`mem::forget`), the descriptor is never closed
        // either, which is safe. If `add` fails, nothing was registered and
        // `source` is simply dropped.
        unsafe {
            poller.add_with_mode(fd, event(key, interest), PollMode::Level)?;
        }
        Ok(Registered {
            source,
            key,
            poller: Arc::clone(poller),
        })
    }

    /// Changes what the source is watched for: one `epoll_ctl`, so callers
    /// call it only when the interest really changes.
    pub(crate) fn set_interest(&self, interest: Interest) -> io::Result<()> {
        self.poller
            .modify_with_mode(&self.source, event(self.key, interest), PollMode::Level)
    }

    /// The registered source.
    pub(crate) fn source(&self) -> &S {
        &self.source
    }
}

impl<S: AsFd> Drop for Registered<S> {
    fn drop(&mut self) {
        // Deleting can only fail if the descriptor was never added or is
        // already gone from the epoll set; either way nothing is left to undo.
        let _ = self.poller.delete(&self.source);
    }
}

fn event(key: usize, interest: Interest) -> Event {
    Event::new(key, interest.read, interest.write)
}

/// Registers a listening socket under [`LISTENER_KEY`], made non-blocking
/// so that a driver can accept every pending connection per wake-up and go
/// back to waiting.
pub(crate) fn watch_listener(
    poller: &Arc<Poller>,
    listener: TcpListener,
) -> Result<Registered<TcpListener>, Error> {
    listener.set_nonblocking(true)?;
    Ok(Registered::new(
        poller,
        listener,
        LISTENER_KEY,
        Interest::READ,
    )?)
}

/// Installs the SIGINT/SIGTERM/SIGHUP pipe and registers it under [`SIGNAL_KEY`].
pub(crate) fn watch_signals(poller: &Arc<Poller>) -> Result<Registered<SignalPipe>, Error> {
    let pipe = SignalPipe::new(true).map_err(Error::Signals)?;
    Ok(Registered::new(poller, pipe, SIGNAL_KEY, Interest::READ)?)
}
