//! The reactor's one error type.

use std::io;

/// What can go wrong with the loop itself.
///
/// Errors on a single connection never show up here: they close that
/// connection and reach the handler as a [`CloseReason`](crate::CloseReason).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system would not give us a poller (epoll instance).
    #[error("cannot create the poller: {0}")]
    Poller(#[source] io::Error),
    /// The poller cannot watch this kind of descriptor (a regular file,
    /// `/dev/null`): it is always "ready", so watching it would spin.
    #[error("this descriptor cannot be polled (a regular file or /dev/null?)")]
    NotPollable,
    /// Registering, changing or waiting on a source failed.
    #[error("poller: {0}")]
    Io(#[from] io::Error),
    /// The SIGINT/SIGTERM/SIGHUP handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// The loop a [`Handle`](crate::Handle) points to has already returned.
    #[error("the event loop has stopped")]
    Stopped,
}
