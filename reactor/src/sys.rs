//! The only `unsafe` in the crate: registering descriptors with `polling`.
//!
//! `Poller::add` is unsafe because epoll keeps a reference to the open file
//! description: a source closed while still registered can keep producing
//! events under its old key, or be confused with a new descriptor that reuses
//! the number. The rule is "delete before drop". [`Registered`] makes that
//! rule structural: it owns the source, and the only way to drop the source is
//! to drop the guard, whose `Drop` deletes it from the poller first.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use polling::{Event, PollMode, Poller};

use crate::signals::SignalPipe;
use crate::Error;

/// Poller keys from here up are a driver's own sources; below it, a key is
/// a connection's slot. Half the key space: a slab cannot grow that far,
/// and the slot fits a key whole on 32-bit targets too (a key made of a
/// `ConnId`'s 64 bits would not).
const OWN_KEYS: usize = 1 << (usize::BITS - 1);
/// Poller key of a driver's signal pipe.
pub(crate) const SIGNAL_KEY: usize = OWN_KEYS;

/// What a poller key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    /// The connection in this slot.
    Conn(usize),
    /// The listener with this index.
    Listener(usize),
    /// The signal pipe.
    Signals,
}

impl Key {
    /// The poller key of the listener with `index`.
    pub(crate) fn listener(index: usize) -> usize {
        SIGNAL_KEY + 1 + index
    }

    /// What `key` names.
    pub(crate) fn of(key: usize) -> Key {
        match key {
            k if k < OWN_KEYS => Key::Conn(k),
            SIGNAL_KEY => Key::Signals,
            k => Key::Listener(k - SIGNAL_KEY - 1),
        }
    }
}

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
    pub(crate) const WRITE: Interest = Interest {
        read: false,
        write: true,
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

/// Registers the listening socket with `index`, made non-blocking so that
/// a driver can accept every pending connection per wake-up and go back to
/// waiting.
pub(crate) fn watch_listener(
    poller: &Arc<Poller>,
    listener: TcpListener,
    index: usize,
) -> Result<Registered<TcpListener>, Error> {
    listener.set_nonblocking(true)?;
    Ok(Registered::new(
        poller,
        listener,
        Key::listener(index),
        Interest::READ,
    )?)
}

/// Installs the SIGINT/SIGTERM/SIGHUP pipe and registers it under [`SIGNAL_KEY`].
pub(crate) fn watch_signals(poller: &Arc<Poller>) -> Result<Registered<SignalPipe>, Error> {
    let pipe = SignalPipe::new(true).map_err(Error::Signals)?;
    Ok(Registered::new(poller, pipe, SIGNAL_KEY, Interest::READ)?)
}

/// Starts connecting a TCP socket to `addr` without waiting: the socket is
/// returned at once, and its becoming writable says the connect is done
/// (`take_error` then tells whether it worked). std can only connect
/// blocking, hence `socket2`.
pub(crate) fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// `EINPROGRESS`: a non-blocking connect has begun.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EINPROGRESS: i32 = 115;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EINPROGRESS: i32 = 36;
