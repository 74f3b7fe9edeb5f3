//! [`Handle`]: how other threads reach a running driver.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use polling::Poller;

use crate::{Error, Stream};

/// Work other threads hand to the loop through a [`Handle`].
pub(crate) enum Command<M> {
    Message(M),
    Stop,
    Attach(Stream),
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
