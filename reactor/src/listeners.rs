//! The listeners a driver accepts from, and the accept policy both drivers
//! share: what each `accept` error means, and when to stop watching a
//! listener for a while.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::Poller;

use crate::sys::{self, Interest, Registered};
use crate::timers::deadline;
use crate::{Endpoint, Error, ListenerId, Refusal};

/// Connections accepted from one listener per wake-up, so that a storm of
/// new connections cannot starve the ones already being served (nor, on
/// the threaded driver, the main thread's timers and signals).
pub(crate) const ACCEPT_BATCH: usize = 64;

/// `EPROTO`: a protocol error on the connection being accepted.
const EPROTO: i32 = 71;

/// How long to stop accepting after running out of file descriptors: a
/// level-triggered listener stays readable while `accept` fails, so retrying
/// at once would spin the CPU (and sleeping would stop the timers).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A listening socket, its policy, and whether accepting is paused.
pub(crate) struct Listener {
    io: Registered<TcpListener>,
    pub(crate) endpoint: Endpoint,
    paused_until: Option<Instant>,
}

/// Every listener of a driver, by `ListenerId`.
pub(crate) struct Listeners {
    list: Vec<Listener>,
    poller: Arc<Poller>,
}

impl Listeners {
    pub(crate) fn new(poller: &Arc<Poller>) -> Listeners {
        Listeners {
            list: Vec::new(),
            poller: Arc::clone(poller),
        }
    }

    /// Watches `listener` (made non-blocking) for connections to serve as
    /// `endpoint` says.
    pub(crate) fn add(
        &mut self,
        listener: TcpListener,
        endpoint: Endpoint,
    ) -> Result<ListenerId, Error> {
        let index = self.list.len();
        self.list.push(Listener {
            io: sys::watch_listener(&self.poller, listener, index)?,
            endpoint,
            paused_until: None,
        });
        Ok(ListenerId(index as u32))
    }

    /// The address `id` is bound to, while it listens.
    pub(crate) fn local_addr(&self, id: ListenerId) -> Option<SocketAddr> {
        self.list.get(id.index())?.io.source().local_addr().ok()
    }

    pub(crate) fn get(&self, index: usize) -> Option<&Listener> {
        self.list.get(index)
    }

    /// Stops listening, on every listener: a stop has begun.
    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    /// The next connection waiting on listener `index`, or `None` when
    /// there is none now. An error that concerns one connection only
    /// (`ECONNABORTED`: it left before it was accepted) skips it. Any other
    /// — out of descriptors (`EMFILE`, `ENFILE`), of memory (`ENOBUFS`,
    /// `ENOMEM`), or what else a kernel may say — would say the same again
    /// at once, and a level-triggered listener stays readable meanwhile:
    /// the listener is not watched for [`ACCEPT_PAUSE`] (see
    /// [`resume`](Listeners::resume)), rather than retried in a spin.
    pub(crate) fn accept(&mut self, index: usize, now: Instant) -> Option<TcpStream> {
        let listener = self.list.get_mut(index)?;
        loop {
            match listener.io.source().accept() {
                Ok((stream, _)) => return Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Errors of one connection, which Linux's accept passes on
                // (accept(2): treat them like EAGAIN and retry).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::PermissionDenied
                    ) || e.raw_os_error() == Some(EPROTO) =>
                {
                    log::debug!("accept: {e}");
                }
                Err(e) => {
                    log::warn!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    if listener.io.set_interest(Interest::NONE).is_ok() {
                        listener.paused_until = Some(deadline(now, ACCEPT_PAUSE));
                    }
                    return None;
                }
            }
        }
    }

    /// When the earliest pause ends, if a listener is paused.
    pub(crate) fn next_resume(&self) -> Option<Instant> {
        self.list.iter().filter_map(|l| l.paused_until).min()
    }

    /// Watches again the listeners whose pause is over at `now`.
    pub(crate) fn resume(&mut self, now: Instant) {
        for listener in &mut self.list {
            if listener.paused_until.is_some_and(|t| now >= t)
                && listener.io.set_interest(Interest::READ).is_ok()
            {
                listener.paused_until = None;
            }
        }
    }
}

/// The address a new connection from `peer` is counted under, where
/// addresses are counted (`max_per_address` is set): at the accept, so that
/// a TLS client is held to it from before its handshake. Canonical: an IPv4
/// client counts the same whether it came in over IPv4 or as a v4-mapped
/// address on a dual-stack listener.
pub(crate) fn counted_address(max_per_address: usize, peer: Option<SocketAddr>) -> Option<IpAddr> {
    (max_per_address != usize::MAX)
        .then(|| peer.map(|a| a.ip().to_canonical()))
        .flatten()
}

/// Which limit, if any, a new connection is over: `full` (the loop's or
/// its listener's `max_connections`), or its address's `open` connections
/// against `max_per_address`.
pub(crate) fn refusal(full: bool, open: Option<usize>, max_per_address: usize) -> Option<Refusal> {
    if full {
        Some(Refusal::Full)
    } else if open.is_some_and(|open| open >= max_per_address) {
        Some(Refusal::FromAddress)
    } else {
        None
    }
}
