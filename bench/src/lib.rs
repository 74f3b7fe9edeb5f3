//! What the peer servers share: their command line, the same as netchat's
//! servers (`HOST PORT`), so that one harness drives them all.

use std::env;
use std::process;

/// A peer server's arguments: `HOST PORT [--current-thread]`.
pub struct ServerArgs {
    /// `HOST:PORT` to listen on (port 0 picks a free one).
    pub addr: String,
    /// For the tokio servers: run on tokio's current-thread runtime rather
    /// than the default multi-thread one.
    pub current_thread: bool,
}

impl ServerArgs {
    /// Parses the command line, or prints a usage line and exits with
    /// status 2.
    pub fn parse() -> ServerArgs {
        let mut args = env::args().skip(1);
        let current_thread = env::args().any(|a| a == "--current-thread");
        let mut positional = args.by_ref().filter(|a| !a.starts_with("--"));
        match (
            positional.next(),
            positional.next().map(|p| p.parse::<u16>()),
        ) {
            (Some(host), Some(Ok(port))) => ServerArgs {
                // An IPv6 host needs brackets in `HOST:PORT`.
                addr: if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                },
                current_thread,
            },
            _ => {
                let name = env::args().next().unwrap_or_default();
                eprintln!("usage: {name} HOST PORT [--current-thread]");
                process::exit(2);
            }
        }
    }
}
