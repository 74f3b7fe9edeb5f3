//! The loop's limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of a loop. Every limit costs only the connection that
/// exceeds it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections served at once. One more is accepted, sent the handler's
    /// [`refusal`](crate::Handler::refusal) and closed, as Redis does at `maxclients`.
    pub max_connections: usize,
    /// Bytes received from one connection and not yet consumed by the handler
    /// (a line without its end, say). Past it the connection is closed with
    /// `CloseReason::InputLimit`.
    pub max_input: usize,
    /// Bytes queued for one connection that the peer has not read. Past it the
    /// connection is closed at once with `CloseReason::OutputLimit`.
    pub max_output: usize,
    /// Close a connection that has sent nothing for this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// How long a closing connection may take to flush its output and for the
    /// peer to finish (lingering close) before it is cut off.
    pub close_timeout: Duration,
    /// How long a graceful stop may take to flush every connection.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_connections: 10_000,
            max_input: 64 * 1024,
            max_output: 1024 * 1024,
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}
