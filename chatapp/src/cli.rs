//! What every server binary shares: its common arguments, binding the
//! listener, logging, and how it reports success and failure.
//!
//! stdout is kept for what scripts read (`listening on …` and, for the chat
//! servers, the transcript); logs and errors go to stderr.

use std::error::Error;
use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use reactor::{Config, Driver, Handler};

use crate::chat::{Chat, ChatConfig};
use crate::console;

/// The exit statuses of every server, for the end of its `--help`.
pub const SERVER_EXIT_STATUS: &str = "Exit status: 0 after a graceful stop (signal or /quit), \
                                       1 on an error (such as a port in use), 2 on a usage error.";

/// The arguments every server takes.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on: a name such as `localhost`, an IPv4 address or an
    /// IPv6 address (`::1`, `::` for all interfaces).
    pub host: String,
    /// Port to listen on, 0 to 65535; 0 picks a free one. The address
    /// actually used is printed on stdout as `listening on IP:PORT`.
    pub port: u16,
    /// Clients served at once (default 10000); one more is told the server is
    /// busy and closed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_clients: Option<u64>,
    /// Close a connection that has sent nothing for SECS seconds (default:
    /// never).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: Option<u64>,
    /// Log only warnings and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

impl ServerArgs {
    /// The loop's configuration: the defaults, with these limits.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        Config {
            max_connections: self
                .max_clients
                .map_or(defaults.max_connections, |n| n as usize),
            idle_timeout: self.idle_timeout.map(Duration::from_secs),
            ..defaults
        }
    }

    /// Resolves `host` and listens on the first of its addresses that works
    /// (`localhost` may give both `::1` and `127.0.0.1`). The error reads as
    /// a sentence: `cannot listen on 127.0.0.1:5000: address already in use`.
    pub fn bind(&self) -> io::Result<TcpListener> {
        let cannot_resolve = || {
            let msg = format!("cannot resolve host '{}'", self.host);
            io::Error::new(io::ErrorKind::NotFound, msg)
        };
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|_| cannot_resolve())?;
        let mut last_error = cannot_resolve();
        for addr in addrs {
            match listen(addr) {
                Ok(listener) => return Ok(listener),
                Err(e) => {
                    let msg = format!("cannot listen on {addr}: {}", describe(&e));
                    last_error = io::Error::new(e.kind(), msg);
                }
            }
        }
        Err(last_error)
    }
}

/// The arguments the chat servers (server1, server2, server3) add.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Longest line a client may send, in bytes; a longer one is answered
    /// with `ERR line too long` and the client is disconnected.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub max_line: u64,
    /// Seconds a new client has to say `Hi` before it is disconnected.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub greeting_timeout: u64,
    /// Connections one IP address may have at once (default: no limit); one
    /// more is told `ERR busy: too many connections from your address`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_per_ip: Option<u64>,
    /// Tell the room of joins and leaves only while it has at most N
    /// participants; in a bigger room they would be most of the traffic.
    /// The transcript has them all.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub announce_limit: usize,
    /// Flood control: lines a client may send per second, on average, after
    /// its burst; 0 turns flood control off. A client over its budget is
    /// slowed down (its input is read later), never cut off, and nothing it
    /// sends is lost. The default, 5, is quick for a person and slow for a
    /// script: a paste of a few dozen lines goes through at once, a flood of
    /// thousands takes minutes, and the room stays readable meanwhile.
    #[arg(long, value_name = "LINES_PER_SEC", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub flood_rate: u32,
    /// Flood control: lines a client may send at once after a quiet moment.
    /// The default, 30, lets a client greet, rename and paste a short text
    /// without waiting. A nick change counts as 3 lines.
    #[arg(long, value_name = "LINES", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub flood_burst: u32,
}

impl ChatArgs {
    /// The chat handler, with its transcript on stdout and `busy` as the
    /// line sent to a client over the limit.
    pub fn handler(&self, busy: Option<&str>) -> Chat {
        Chat::new(self.config(busy), console::transcript())
    }

    fn config(&self, busy: Option<&str>) -> ChatConfig {
        let defaults = ChatConfig::default();
        ChatConfig {
            max_line: self.max_line as usize,
            greeting_timeout: Duration::from_secs(self.greeting_timeout),
            busy_message: busy.map_or(defaults.busy_message, str::to_owned),
            max_per_ip: self.max_per_ip.map(|n| n as usize),
            announce_limit: self.announce_limit,
            flood_rate: self.flood_rate,
            flood_burst: self.flood_burst,
        }
    }
}

/// Longest queue of connections the kernel completes before we accept them.
/// std's `TcpListener::bind` asks for 128, and a burst of more (a few hundred
/// clients connecting at once) then has SYNs dropped and retried a second
/// later; Redis asks for 511. Linux caps it at `net.core.somaxconn` (4096).
const BACKLOG: i32 = 1024;

/// `TcpListener::bind` with a deeper backlog: the same socket options
/// (`SO_REUSEADDR`, so a restarted server can bind while old connections
/// linger in TIME_WAIT), a different `listen` call.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// What every server's `main` does once its arguments are parsed: raise
/// the open-file limit to the hard limit, bind,
/// set up driver `D` with `config`, stop on SIGINT/SIGTERM, start the
/// operator console if the handler takes one (`console` wraps each stdin
/// line in the handler's message type), announce the address, and serve
/// `handler` until stopped. An error ends the program with `error: …`.
pub fn serve<D, H>(
    args: &ServerArgs,
    config: Config,
    handler: &mut H,
    console: Option<fn(String) -> H::Message>,
) where
    D: Driver<H>,
    H: Handler,
{
    if let Err(e) = try_serve::<D, H>(args, config, handler, console) {
        fail(e);
    }
}

fn try_serve<D, H>(
    args: &ServerArgs,
    config: Config,
    handler: &mut H,
    console: Option<fn(String) -> H::Message>,
) -> Result<(), Box<dyn Error>>
where
    D: Driver<H>,
    H: Handler,
{
    // Every client is a file descriptor, and the soft limit (often 1024) is
    // far below what a server is allowed: take the hard limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("up to {limit} open files"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let listener = args.bind()?;
    let addr = listener.local_addr()?;
    let mut driver = D::new(config)?;
    driver.listen(listener)?;
    driver.stop_on_signals()?;
    if let Some(wrap) = console {
        console::spawn(driver.handle(), wrap);
    }
    // Only now: whoever waits for this line may connect, or send a signal.
    announce(addr);
    driver.run(handler)?;
    tracing::info!("stopped");
    Ok(())
}

/// Sends logs to stderr: info and above, or warnings and above if `quiet`.
/// Records of the `log` crate, which the reactor uses, are logged too: `init`
/// installs the `tracing-log` bridge (a default feature of
/// `tracing-subscriber`). Call it once, first thing in `main`.
pub fn init_logging(quiet: bool) {
    let level = if quiet {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_max_level(level)
        .init();
}

/// Prints `listening on IP:PORT` on stdout, at once: whoever started the
/// server may be waiting for that line to learn the port.
pub fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    // A closed stdout is no reason to stop serving.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Prints `error: <err>` on stderr and exits with status 1: how a binary
/// reports a mistake of its user (a bad host, a port in use) — one line, not
/// a panic.
pub fn fail(err: impl Display) -> ! {
    eprintln!("error: {err}");
    std::process::exit(1);
}

/// An I/O error as a short phrase for the end of a message: `address
/// already in use`, not `Address already in use (os error 98)`.
pub fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        chat: ChatArgs,
    }

    fn args(argv: &[&str]) -> ServerArgs {
        Cli::parse_from(["server"].iter().chain(argv)).server
    }

    #[test]
    fn options_make_the_config() {
        let config = args(&[
            "localhost",
            "0",
            "--max-clients",
            "3",
            "--idle-timeout",
            "5",
        ])
        .config();
        assert_eq!(config.max_connections, 3);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(args(&["localhost", "0"]).config().idle_timeout, None);
    }

    #[test]
    fn chat_option_defaults_are_the_handler_defaults() {
        // clap needs its defaults as literals; this keeps them from drifting.
        let parsed = Cli::parse_from(["server", "localhost", "0"])
            .chat
            .config(None);
        let defaults = ChatConfig::default();
        assert_eq!(parsed.max_line, defaults.max_line);
        assert_eq!(parsed.greeting_timeout, defaults.greeting_timeout);
        assert_eq!(parsed.busy_message, defaults.busy_message);
        assert_eq!(parsed.max_per_ip, defaults.max_per_ip);
        assert_eq!(parsed.announce_limit, defaults.announce_limit);
        assert_eq!(parsed.flood_rate, defaults.flood_rate);
        assert_eq!(parsed.flood_burst, defaults.flood_burst);
    }

    #[test]
    fn flood_options_have_ranges() {
        let parse = |argv: &[&str]| {
            let argv = ["server", "localhost", "0"].iter().chain(argv);
            Cli::try_parse_from(argv).map(|cli| cli.chat.config(None))
        };
        let off = parse(&["--flood-rate", "0"]).unwrap();
        assert_eq!(off.flood_rate, 0, "0 turns it off");
        let set = parse(&["--flood-rate", "100000", "--flood-burst", "1"]).unwrap();
        assert_eq!((set.flood_rate, set.flood_burst), (100_000, 1));
        for argv in [
            &["--flood-rate", "-1"][..],
            &["--flood-rate", "100001"],
            &["--flood-rate", "1.5"],
            &["--flood-burst", "0"],
            &["--flood-burst", "100001"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn bad_numbers_are_usage_errors() {
        for argv in [
            &["h", "x"][..],
            &["h", "70000"],
            &["h", "0", "--idle-timeout", "0"],
        ] {
            let argv = ["server"].iter().chain(argv);
            assert!(Cli::try_parse_from(argv).is_err());
        }
    }

    #[test]
    fn bind_errors_read_as_sentences() {
        let taken = args(&["127.0.0.1", "0"]).bind().unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let err = args(&["127.0.0.1", &port]).bind().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot listen on 127.0.0.1:{port}: address already in use")
        );
        let err = args(&["nosuch.invalid", "0"]).bind().unwrap_err();
        assert_eq!(err.to_string(), "cannot resolve host 'nosuch.invalid'");
    }

    #[test]
    fn describe_lowercases_and_drops_the_os_error_number() {
        assert_eq!(describe(&io::Error::other("Odd thing")), "odd thing");
        let err = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| TcpListener::bind(l.local_addr()?))
            .unwrap_err();
        assert_eq!(describe(&err), "address already in use");
    }
}
