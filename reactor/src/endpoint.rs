//! Where connections come from: [`Endpoint`], the policy of one listener;
//! [`Connect`], an outbound connection a handler asks for; and [`Origin`],
//! which of those (or an attached stream) a connection is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::ListenerId;

/// How the connections accepted by one listener are served. A driver can
/// listen on any number of sockets at once (IPv4 and IPv6, plain and TLS, a
/// chat port and a web port), each with an `Endpoint` of its own.
///
/// ```no_run
/// # use reactor::{Endpoint, Reactor, Config, Handler, Context, ConnId};
/// # use std::sync::Arc;
/// # fn tls() -> Arc<rustls::ServerConfig> { unimplemented!() }
/// # struct Chat;
/// # impl Handler for Chat {
/// #     type Message = ();
/// #     type Conn = ();
/// #     fn on_data(&mut self, _: &mut dyn Context, _: ConnId, _: &mut (), _: &mut reactor::Input<'_>) {}
/// # }
/// let mut reactor: Reactor<Chat> = Reactor::new(Config::default())?;
/// let plain = reactor.listen(std::net::TcpListener::bind("127.0.0.1:5000")?)?;
/// let secure = reactor.listen_on(
///     std::net::TcpListener::bind("127.0.0.1:5001")?,
///     Endpoint::tls(tls()),
/// )?;
/// # Ok::<(), reactor::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Connections from this listener served at once, at most; one more is
    /// sent the handler's [`refusal`](crate::Handler::refusal) and closed.
    /// [`Config::max_connections`](crate::Config::max_connections) bounds
    /// every listener's together.
    pub max_connections: usize,
    /// TLS for every connection, or `None` for plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a TLS client may take to finish its handshake; the handler
    /// hears of a connection (`on_open`) only once it has. A client that
    /// stalls in the handshake is closed at this deadline, having cost a
    /// slot and nothing else.
    pub handshake_timeout: Duration,
}

impl Endpoint {
    /// Plain TCP, limited only by the driver's `Config`.
    pub fn plain() -> Endpoint {
        Endpoint {
            max_connections: usize::MAX,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// TLS with `config` (its certificate, key and protocol versions).
    pub fn tls(config: Arc<rustls::ServerConfig>) -> Endpoint {
        Endpoint {
            tls: Some(config),
            ..Endpoint::plain()
        }
    }
}

impl Default for Endpoint {
    fn default() -> Endpoint {
        Endpoint::plain()
    }
}

/// An outbound connection, as a handler asks for it with
/// [`Context::connect`](crate::Context::connect): where to, how long it
/// may take to be established, and over what.
///
/// ```
/// # use reactor::Connect;
/// # use std::time::Duration;
/// let to_broker = Connect::new("127.0.0.1:6379".parse().unwrap())
///     .timeout(Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct Connect {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// How long connecting (and the TLS handshake, if any) may take before
    /// it fails with [`CloseReason::ConnectFailed`](crate::CloseReason)`(TimedOut)`.
    pub timeout: Duration,
    /// TLS, with the client configuration and the name the server's
    /// certificate must be valid for; `None` for plain TCP.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Closes the connection after this long without input. Outbound
    /// connections are links the handler keeps on purpose, so by default
    /// they are never idle-timed-out, whatever `Config::idle_timeout` says.
    pub idle_timeout: Option<Duration>,
}

impl Connect {
    /// Plain TCP to `addr`, 10 seconds to connect, no idle timeout.
    pub fn new(addr: SocketAddr) -> Connect {
        Connect {
            addr,
            timeout: Duration::from_secs(10),
            tls: None,
            idle_timeout: None,
        }
    }

    /// Sets how long connecting may take.
    pub fn timeout(self, timeout: Duration) -> Connect {
        Connect { timeout, ..self }
    }

    /// Connects over TLS, checking the server's certificate for `name`.
    pub fn tls(self, config: Arc<rustls::ClientConfig>, name: ServerName<'static>) -> Connect {
        Connect {
            tls: Some((config, name)),
            ..self
        }
    }

    /// Closes the connection after `idle` without input.
    pub fn idle_timeout(self, idle: Duration) -> Connect {
        Connect {
            idle_timeout: Some(idle),
            ..self
        }
    }
}

/// Where a connection came from, as [`Context::origin`](crate::Context::origin) tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Accepted by this listener.
    Accepted(ListenerId),
    /// Opened by the handler with `Context::connect`. It does not count
    /// against client limits.
    Connected,
    /// A stream attached with `attach` (a pipe, a terminal, a socket made
    /// elsewhere, one handed over by another thread).
    Attached,
}
