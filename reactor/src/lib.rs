//! A small, fast, readable event loop for TCP servers, on `polling`.
//!
//! An application is a [`Handler`]: callbacks for a connection opening,
//! data arriving, a connection closing, a timer firing and a message posted
//! from another thread. The handler acts only through a [`Context`] — send,
//! send to many, close, set a timer, stop — so one handler runs unchanged on
//! the single-threaded [`Reactor`], on the thread-per-connection
//! [`threaded`] driver, and in unit tests on the in-memory
//! [`testing::Harness`], with no socket at all.
//!
//! Start reading at `event_loop.rs`: one turn of the loop is one short
//! function there, `Reactor::turn`, with the parts it calls in the modules
//! under `event_loop/`.

mod clock;
mod config;
mod conn;
mod driver;
mod endpoint;
mod error;
mod event_loop;
mod handle;
mod handler;
mod id;
mod listeners;
mod output;
mod places;
mod received;
mod signals;
mod slots;
mod stop;
mod stream;
mod sys;
pub mod testing;
pub mod threaded;
mod timers;
mod transport;

pub use config::Config;
pub use driver::Driver;
pub use endpoint::{Connect, Endpoint, Origin};
pub use error::Error;
pub use event_loop::Reactor;
pub use handle::Handle;
pub use handler::{CloseReason, Context, Handler, Refusal};
pub use id::{ConnId, ListenerId, TimerId};
pub use received::{Input, LineTooLong};
/// The TLS library the transports use, so that configurations can be made
/// with the same version.
pub use rustls;
pub use stream::Stream;
