//! [`Handle`]: how other threads reach a running driver.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use polling::Poller;

use crate::{Error, Stream};

/// Work other threads hand to the loop through a [`Handle`].
pub(crate) enum Command<M> {
    Message(M),
    Stop,
    Attach(Stream),
}

/// Messages taken from the mailbox per turn, at most: a handler that posts
/// to its own driver from `on_wake` must not keep it from everything else
/// (connections, timers, signals, accepts).
const MAILBOX_BATCH: usize = 256;

/// A driver's end of its handles: what other threads have posted, taken
/// at most [`MAILBOX_BATCH`] a turn.
pub(crate) struct Mailbox<M> {
    rx: Receiver<Command<M>>,
    tx: Sender<Command<M>>,
    /// Taken in this turn so far.
    taken: usize,
    /// The last turn stopped at `MAILBOX_BATCH`: more may wait, and the
    /// next wait must not sleep.
    more: bool,
}

impl<M> Mailbox<M> {
    pub(crate) fn new() -> Mailbox<M> {
        let (tx, rx) = mpsc::channel();
        Mailbox {
            rx,
            tx,
            taken: 0,
            more: false,
        }
    }

    /// A handle that posts here and wakes `poller`.
    pub(crate) fn handle(&self, poller: &Arc<Poller>) -> Handle<M> {
        Handle::new(self.tx.clone(), poller)
    }

    /// Starts a turn's taking.
    pub(crate) fn begin(&mut self) {
        self.taken = 0;
        self.more = false;
    }

    /// The next command of this turn, if any, and if the turn's share is not
    /// used up.
    pub(crate) fn take(&mut self) -> Option<Command<M>> {
        if self.taken == MAILBOX_BATCH {
            self.more = true;
            return None;
        }
        let cmd = self.rx.try_recv().ok()?;
        self.taken += 1;
        Some(cmd)
    }

    /// Whether commands were left for the next turn.
    pub(crate) fn has_more(&self) -> bool {
        self.more
    }
}

/// Sends messages to a running driver from any thread, or stops it. The
/// driver's waiting thread sleeps in a poller; the handle queues the message
/// on a channel and wakes it with `Poller::notify`.
pub struct Handle<M> {
    tx: Sender<Command<M>>,
    poller: Arc<Poller>,
}

impl<M> Handle<M> {
    pub(crate) fn new(tx: Sender<Command<M>>, poller: &Arc<Poller>) -> Handle<M> {
        Handle {
            tx,
            poller: Arc::clone(poller),
        }
    }
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            poller: Arc::clone(&self.poller),
        }
    }
}

impl<M: Send> Handle<M> {
    /// Delivers `msg` to the handler's `on_wake` on the loop's thread.
    pub fn post(&self, msg: M) -> Result<(), Error> {
        self.command(Command::Message(msg))
    }

    /// Stops the loop gracefully, as SIGTERM does.
    pub fn stop(&self) -> Result<(), Error> {
        self.command(Command::Stop)
    }

    /// Hands `stream` (a connection accepted or made elsewhere, say by
    /// another loop) to the driver, which serves it from then on: the
    /// handler hears `on_open`, with [`Origin::Attached`](crate::Origin).
    pub fn attach(&self, stream: impl Into<Stream>) -> Result<(), Error> {
        self.command(Command::Attach(stream.into()))
    }

    fn command(&self, cmd: Command<M>) -> Result<(), Error> {
        self.tx.send(cmd).map_err(|_| Error::Stopped)?;
        // `notify` wakes the poller at most once however often it is called;
        // the channel holds every message, and is drained after each wait.
        self.poller.notify()?;
        Ok(())
    }
}
