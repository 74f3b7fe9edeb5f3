//! [`Driver`]: what the two drivers have in common, so that a program can
//! be written once and run on either.

use std::net::{SocketAddr, TcpListener};

use crate::threaded::Threaded;
use crate::{Config, Endpoint, Error, Handle, Handler, ListenerId, Reactor};

/// Something that serves connections to a handler `H`: the single-threaded
/// [`Reactor`] or the thread-per-connection [`Threaded`]. Both are set up
/// the same way — `new`, `listen_on` for each listener, `stop_on_signals` —
/// and then `run`.
pub trait Driver<H: Handler>: Sized {
    /// A driver with these limits and no listener.
    fn new(config: Config) -> Result<Self, Error>;
    /// Accepts connections from `listener`, served as `endpoint` says,
    /// beside any other listeners.
    fn listen_on(&mut self, listener: TcpListener, endpoint: Endpoint)
        -> Result<ListenerId, Error>;
    /// The address `listener` is bound to.
    fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr>;
    /// Stops gracefully on SIGINT, SIGTERM or SIGHUP.
    fn stop_on_signals(&mut self) -> Result<(), Error>;
    /// A handle for other threads to post messages or stop the driver.
    fn handle(&self) -> Handle<H::Message>;
    /// Serves until stopped and every connection is closed.
    fn run(&mut self, handler: &mut H) -> Result<(), Error>;
}

impl<H: Handler> Driver<H> for Reactor<H> {
    fn new(config: Config) -> Result<Self, Error> {
        Reactor::new(config)
    }
    fn listen_on(
        &mut self,
        listener: TcpListener,
        endpoint: Endpoint,
    ) -> Result<ListenerId, Error> {
        Reactor::listen_on(self, listener, endpoint)
    }
    fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        Reactor::local_addr(self, listener)
    }
    fn stop_on_signals(&mut self) -> Result<(), Error> {
        Reactor::stop_on_signals(self)
    }
    fn handle(&self) -> Handle<H::Message> {
        Reactor::handle(self)
    }
    fn run(&mut self, handler: &mut H) -> Result<(), Error> {
        Reactor::run(self, handler)
    }
}

/// The handler is shared by every client's thread, so it must be `Send`.
impl<H: Handler + Send> Driver<H> for Threaded<H::Message>
where
    H::Conn: Send,
{
    fn new(config: Config) -> Result<Self, Error> {
        Threaded::new(config)
    }
    fn listen_on(
        &mut self,
        listener: TcpListener,
        endpoint: Endpoint,
    ) -> Result<ListenerId, Error> {
        Threaded::listen_on(self, listener, endpoint)
    }
    fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        Threaded::local_addr(self, listener)
    }
    fn stop_on_signals(&mut self) -> Result<(), Error> {
        Threaded::stop_on_signals(self)
    }
    fn handle(&self) -> Handle<H::Message> {
        Threaded::handle(self)
    }
    fn run(&mut self, handler: &mut H) -> Result<(), Error> {
        Threaded::run(self, handler)
    }
}
