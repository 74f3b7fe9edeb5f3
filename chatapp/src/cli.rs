//! What every server binary shares: its common arguments, binding the
//! listener, logging, and how it reports success and failure.
//!
//! stdout is kept for what scripts read (`listening on …` and, for the chat
//! servers, the transcript); logs and errors go to stderr.

use std::error::Error;
use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use reactor::{Config, Driver, Endpoint, Handler, ListenerId};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::chat::{Chat, ChatConfig, ClusterConfig, Url};
use crate::web::{self, Policy, WebConfig};
use crate::{console, tls};

/// The exit statuses of every server, for the end of its `--help`.
pub const SERVER_EXIT_STATUS: &str = "Exit status: 0 after a graceful stop (SIGINT, SIGTERM or \
                                       SIGHUP), 1 on an error (such as a port in use), 2 on a \
                                       usage error.";

/// The exit statuses of the chat servers, which also stop on `/quit`.
pub const CHAT_SERVER_EXIT_STATUS: &str = "Exit status: 0 after a graceful stop (SIGINT, SIGTERM, \
                                            SIGHUP, or /quit on the console), 1 on an error \
                                            (such as a port in use), 2 on a usage error.";

/// The most clients `--max-clients` (and the chat servers' `--max-per-ip`
/// and `--announce-limit`) may name: each client is a file descriptor, and
/// Linux lets a process have about this many open (`fs.nr_open`, 1048576).
pub const MAX_CLIENTS: u64 = 1_000_000;

/// The arguments every server takes.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on: a name such as `localhost`, an IPv4 address or an
    /// IPv6 address (`::1`, `::` for all interfaces).
    pub host: String,
    /// Port to listen on, 0 to 65535; 0 picks a free one. The address
    /// actually used is printed on stdout as `listening on IP:PORT`.
    pub port: u16,
    /// Also serve TLS on this port of the same host; 0 picks a free one.
    /// Printed after the plain one as `listening on tls://IP:PORT`. TLS and
    /// plain clients are served alike. Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "PORT", requires_all = ["tls_cert", "tls_key"])]
    pub tls_port: Option<u16>,
    /// The TLS certificate chain, PEM: the server's certificate first. For
    /// --tls-port (and, on the chat servers, --web-tls-port).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a TLS client may take to finish its handshake, 1 to 60; then
    /// it is closed, having cost nobody else anything. On the chat servers'
    /// web ports, also the time an HTTP connection may take to open its
    /// WebSocket (or be idle between requests) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub handshake_timeout: u64,
    /// Clients served at once, 1 to 1000000 (default 10000); one more is told
    /// the server is busy and closed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_CLIENTS))]
    pub max_clients: Option<u64>,
    /// Close a connection that has sent nothing for SECS seconds, 1 to 604800
    /// (a week; default: never).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub idle_timeout: Option<u64>,
    /// Seconds a graceful stop may take to deliver what the clients are
    /// owed, 1 to 300; then the rest are cut off. A second signal cuts them
    /// off at once.
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub shutdown_timeout: u64,
    /// Seconds a connection the server closes may take to receive its last
    /// bytes and for its client to close too (lingering close), 1 to 60;
    /// then it is cut off.
    #[arg(long, value_name = "SECS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub linger_timeout: u64,
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
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            linger_timeout: Duration::from_secs(self.linger_timeout),
            ..defaults
        }
    }

    /// The listeners of a server without a web endpoint: the plain port,
    /// and the TLS one if asked for.
    pub fn plan(&self) -> Plan {
        let mut listeners = vec![Listener::Plain(self.port)];
        listeners.extend(self.tls_port.map(Listener::Tls));
        Plan { listeners }
    }

    /// Resolves `host` and listens on the first of its addresses that works
    /// (`localhost` may give both `::1` and `127.0.0.1`). The error reads as
    /// a sentence: `cannot listen on 127.0.0.1:5000: address already in use`.
    pub fn bind(&self) -> io::Result<TcpListener> {
        self.bind_port(self.port)
    }

    /// Like [`bind`](ServerArgs::bind), on another port of the same host.
    pub fn bind_port(&self, port: u16) -> io::Result<TcpListener> {
        let cannot_resolve = || {
            let msg = format!("cannot resolve host '{}'", self.host);
            io::Error::new(io::ErrorKind::NotFound, msg)
        };
        let addrs = (self.host.as_str(), port)
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
    /// Longest line a client may send, in bytes (at most 65536); a longer
    /// one is answered with `ERR line too long` and the client is
    /// disconnected.
    // At most 64 KiB: a relayed line can be three times as long as it came
    // (each invalid byte becomes a three-byte U+FFFD), and one line must fit
    // well within what the loop lets a reader owe (`max_output`, 1 MiB);
    // with `--max-line 400000` one line cut off every reader in the room.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(16..=65_536))]
    pub max_line: u64,
    /// Seconds a new client has to say `Hi` before it is disconnected.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub greeting_timeout: u64,
    /// Connections one IP address may have at once (default: no limit); one
    /// more is told `ERR busy: too many connections from your address`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_CLIENTS))]
    pub max_per_ip: Option<u64>,
    /// Tell the room of joins and leaves only while it has at most N
    /// participants; in a bigger room they would be most of the traffic.
    /// The transcript has them all.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(..=MAX_CLIENTS))]
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
    /// Rooms there may be at once, 1 to 1000000, `#lobby` included (it is
    /// always there); a `/join` that would make one more is answered
    /// `ERR too many rooms`. A room is made by the first to join it and goes
    /// when the last one leaves.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CLIENTS))]
    pub max_rooms: usize,
    /// Also serve the chat in a browser over HTTP on this port of the same
    /// host, 0 to 65535; 0 picks a free one. `GET /` is the chat page,
    /// `GET /ws` its WebSocket; web users are participants like any other.
    /// Printed after the other endpoints as `listening on http://IP:PORT/`.
    #[arg(long, value_name = "PORT")]
    pub web_port: Option<u16>,
    /// The same over HTTPS (and WSS) on this port; 0 picks a free one.
    /// Printed as `listening on https://IP:PORT/`. Needs --tls-cert and
    /// --tls-key; --tls-port is not needed.
    #[arg(long, value_name = "PORT", requires_all = ["tls_cert", "tls_key"])]
    pub web_tls_port: Option<u16>,
    /// Also let pages from ORIGIN (such as `https://chat.example.com`) open
    /// the WebSocket; may be given more than once. By default only the
    /// server's own page may: a page elsewhere could otherwise chat in the
    /// name of whoever visits it. Clients that send no Origin (not
    /// browsers) are let in.
    #[arg(long, value_name = "ORIGIN", value_parser = parse_origin)]
    pub web_origin: Vec<String>,
    /// Log joins (info) even when the console is a terminal. When stdin,
    /// stdout and stderr are all terminals, only warnings and errors are
    /// logged by default: the transcript shows the joins on the same screen.
    #[arg(long)]
    pub verbose: bool,
    /// Be one chat with every server started with the same Redis: rooms,
    /// nicks, /who, /rooms, /msg and the console's /kick span them all (see
    /// docs/cluster.md). URL is `redis://[:PASSWORD@]HOST[:PORT][/DB]`. If
    /// Redis cannot be reached, the server serves its own clients alone,
    /// logs a warning, and keeps trying (1 s, doubling up to 30 s).
    #[arg(long, value_name = "URL")]
    pub cluster: Option<Url>,
    /// With --cluster: seconds the participants of a server that died
    /// without a word (SIGKILL, a crash) stay in the others' /who and keep
    /// their nicks. The server renews its presence every third of it.
    #[arg(long, value_name = "SECS", default_value_t = 15, requires = "cluster",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub cluster_ttl: u64,
}

impl ChatArgs {
    /// Whether the log shows only warnings and errors: with `--quiet`
    /// (`quiet`), or when the console and the log share the operator's
    /// terminal, unless `--verbose`.
    pub fn quiet_log(&self, quiet: bool) -> bool {
        quiet || (!self.verbose && console::is_interactive() && io::stderr().is_terminal())
    }

    /// The chat handler, with its transcript on stdout and `busy` as the
    /// line sent to a client over the limit.
    pub fn handler(&self, busy: Option<&str>) -> Chat {
        Chat::new(self.config(busy), console::transcript())
    }

    /// The listeners of a chat server: `server`'s, then the web ones, each
    /// if asked for.
    pub fn plan(&self, server: &ServerArgs) -> Plan {
        let mut plan = server.plan();
        plan.listeners.extend(self.web_port.map(Listener::Web));
        plan.listeners
            .extend(self.web_tls_port.map(Listener::WebTls));
        plan
    }

    /// How the web endpoint of `plan` is served: its listeners, the
    /// origins allowed, the TLS handshake's timeout for the HTTP request
    /// too, and the chat's line limit for a message. Keep-alive on.
    pub fn web_config(&self, server: &ServerArgs, plan: &Plan) -> WebConfig {
        WebConfig {
            listeners: plan.web_ids(),
            policy: Policy {
                origins: self.web_origin.clone(),
                keep_alive: true,
            },
            handshake_timeout: Duration::from_secs(server.handshake_timeout),
            max_line: self.max_line as usize,
        }
    }

    /// The loop's limits for a chat server: `config` with room in the input
    /// buffer for a whole line of `--max-line`, its `\r\n` and the start of
    /// a telnet command that may wait behind it, or the header of a
    /// WebSocket frame before it. Otherwise, with `--max-line`
    /// near the loop's input limit (64 KiB), a long line would cut the client
    /// off as `InputLimit` before the chat could answer `ERR line too long`.
    /// And `--max-per-ip` is the loop's `max_per_address`: the driver counts
    /// addresses at the accept, before a TLS handshake.
    pub fn loop_config(&self, config: Config) -> Config {
        Config {
            max_input: config
                .max_input
                .max(self.max_line as usize + 2 + crate::telnet::MAX_UNFINISHED)
                .max(self.max_line as usize + web::MAX_HEADER),
            // Counted by the driver, at the accept: before a TLS handshake.
            max_per_address: self.max_per_ip.map_or(usize::MAX, |n| n as usize),
            ..config
        }
    }

    fn config(&self, busy: Option<&str>) -> ChatConfig {
        let defaults = ChatConfig::default();
        ChatConfig {
            max_line: self.max_line as usize,
            greeting_timeout: Duration::from_secs(self.greeting_timeout),
            busy_message: busy.map_or(defaults.busy_message, str::to_owned),
            announce_limit: self.announce_limit,
            flood_rate: self.flood_rate,
            flood_burst: self.flood_burst,
            max_rooms: self.max_rooms,
            cluster: self.cluster.clone().map(|url| ClusterConfig {
                url,
                ttl: Duration::from_secs(self.cluster_ttl),
            }),
        }
    }
}

/// One listener a server binds, with the port asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The line protocol in plain TCP.
    Plain(u16),
    /// The line protocol over TLS.
    Tls(u16),
    /// HTTP and WebSocket.
    Web(u16),
    /// HTTPS and WebSocket over TLS.
    WebTls(u16),
}

impl Listener {
    /// How it is announced: `listening on` and this, with the address.
    fn announcement(self, addr: SocketAddr) -> String {
        match self {
            Listener::Plain(_) => format!("{addr}"),
            Listener::Tls(_) => format!("tls://{addr}"),
            Listener::Web(_) => format!("http://{addr}/"),
            Listener::WebTls(_) => format!("https://{addr}/"),
        }
    }
}

/// The listeners a server binds, in the order it binds them: a driver
/// numbers its listeners in the order it is given them, so the `n`th here
/// is `ListenerId::nth(n)`. [`serve_on`] binds them in this order and
/// checks the ids it is given; the web adapter is told the same ids with
/// [`Plan::web_ids`]. Nothing is guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Plain first, then TLS, web and web TLS, each if asked for.
    pub listeners: Vec<Listener>,
}

impl Plan {
    /// The ids the web listeners will have.
    pub fn web_ids(&self) -> Vec<ListenerId> {
        (0u32..)
            .zip(&self.listeners)
            .filter(|(_, l)| matches!(l, Listener::Web(_) | Listener::WebTls(_)))
            .map(|(n, _)| ListenerId::nth(n))
            .collect()
    }
}

/// `--web-origin`: an origin as a browser sends it, `http://` or `https://`
/// and a host with an optional port, without a path.
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim_end_matches('/');
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {
            Ok(origin.to_owned())
        }
        _ => Err("expected an origin such as https://chat.example.com".to_owned()),
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
/// the open-file limit and fit the client limit to it, bind (the plain
/// port, and the TLS one if asked), set up driver `D` with `config`, stop
/// on SIGINT/SIGTERM/SIGHUP, start the operator console if the handler
/// takes one (`console` wraps each stdin line in the handler's message
/// type), announce the addresses, and serve `handler` until stopped. An
/// error ends the program with `error: …`.
pub fn serve<D, H>(
    args: &ServerArgs,
    config: Config,
    handler: &mut H,
    console: Option<fn(String) -> H::Message>,
) where
    D: Driver<H>,
    H: Handler,
{
    serve_on::<D, H>(args, &args.plan(), config, handler, console);
}

/// [`serve`], binding the listeners of `plan`, in its order, on `args`'s
/// host: the chat servers' web ports too.
pub fn serve_on<D, H>(
    args: &ServerArgs,
    plan: &Plan,
    config: Config,
    handler: &mut H,
    console: Option<fn(String) -> H::Message>,
) where
    D: Driver<H>,
    H: Handler,
{
    // Clap cannot say this itself: which options open a TLS port depends
    // on the program (server4 has no web port).
    let secure = plan
        .listeners
        .iter()
        .any(|l| matches!(l, Listener::Tls(_) | Listener::WebTls(_)));
    if (args.tls_cert.is_some() || args.tls_key.is_some()) && !secure {
        let msg = "--tls-cert and --tls-key are for a TLS port: add --tls-port PORT \
                   (on the chat servers, or --web-tls-port PORT)\n";
        clap::Error::raw(clap::error::ErrorKind::MissingRequiredArgument, msg).exit();
    }
    if let Err(e) = try_serve::<D, H>(args, plan, config, handler, console) {
        fail(e);
    }
}

fn try_serve<D, H>(
    args: &ServerArgs,
    plan: &Plan,
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
    let config = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!("up to {limit} open files");
            fit_to_open_files(config, limit)
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            config
        }
    };
    // Everything that can fail on the user's input before anything is bound.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let mut driver = D::new(config)?;
    let mut bound = Vec::new();
    for (n, &listener) in (0u32..).zip(&plan.listeners) {
        let (port, secure) = match listener {
            Listener::Plain(port) | Listener::Web(port) => (port, false),
            Listener::Tls(port) | Listener::WebTls(port) => (port, true),
        };
        let endpoint = match (secure, &tls) {
            (false, _) => Endpoint::plain(),
            (true, Some(tls)) => Endpoint {
                handshake_timeout: Duration::from_secs(args.handshake_timeout),
                ..Endpoint::tls(tls.clone())
            },
            (true, None) => return Err("a TLS port needs --tls-cert and --tls-key".into()),
        };
        let id = driver.listen_on(args.bind_port(port)?, endpoint)?;
        // The web adapter was told the ids of the plan: they must be these.
        if id != ListenerId::nth(n) {
            let expected = ListenerId::nth(n);
            return Err(format!("expected {expected:?} to be bound as planned, got {id:?}").into());
        }
        bound.push((listener, id));
    }
    driver.stop_on_signals()?;
    // Only now: whoever waits for these lines may connect, or send a signal.
    // The plain endpoint first, in the form it always had.
    for (listener, id) in bound {
        let addr = driver.local_addr(id).ok_or("a listener has no address")?;
        announce(&listener.announcement(addr));
    }
    // After the addresses: in a terminal the console draws its prompt at
    // once, and the addresses must not land after it.
    if let Some(wrap) = console {
        console::spawn(driver.handle(), wrap);
    }
    driver.run(handler)?;
    tracing::info!("stopped");
    Ok(())
}

/// Descriptors kept for everything but clients: the listeners, the poller,
/// the signal pipe, stdio, the log, and room to spare (Redis keeps 32).
const RESERVED_FILES: u64 = 32;

/// Lowers the client limits if the open-file limit `files` cannot hold
/// them, and says so: each client, served or closing, is a descriptor, and
/// a server that runs out of them fails at `accept` instead of telling the
/// next client it is busy. The closing get an eighth of what is left.
fn fit_to_open_files(config: Config, files: u64) -> Config {
    let room = usize::try_from(files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if config.max_connections.saturating_add(config.max_closing) <= room {
        return config;
    }
    let max_closing = config.max_closing.min(room / 8).max(1);
    let max_connections = room
        .saturating_sub(max_closing)
        .clamp(1, config.max_connections);
    if max_connections < config.max_connections {
        tracing::warn!(
            "serving at most {max_connections} clients, not {}: the open-file limit is {files}",
            config.max_connections
        );
    }
    Config {
        max_connections,
        max_closing,
        ..config
    }
}

/// Log lines waiting for stderr, at most; past it lines are dropped, and
/// counted. About 2 MiB of typical lines.
const LOG_BACKLOG: usize = 16 * 1024;

/// How long an exiting server waits for its last log lines, and the count of
/// the dropped ones, to reach stderr: not forever, since stderr may be a pipe
/// nobody reads.
const LOG_DRAIN: Duration = Duration::from_millis(500);

/// The log's writer thread and its count of dropped lines, from
/// [`init_logging`] until [`finish_logging`].
static LOG: Mutex<Option<LogWriter>> = Mutex::new(None);

struct LogWriter {
    /// Dropping it tells the writer thread to write what is queued and end.
    guard: WorkerGuard,
    dropped: ErrorCounter,
}

/// Sends logs to stderr: info and above, or warnings and above if `quiet`.
/// Records of the `log` crate, which the reactor uses, are logged too: `init`
/// installs the `tracing-log` bridge (a default feature of
/// `tracing-subscriber`). Call it once, first thing in `main`, and keep what
/// it returns until the end of `main`: dropping it calls [`finish_logging`].
///
/// Lines are written by a thread of their own (`tracing-appender`'s
/// non-blocking writer), never by the thread that logs: stderr may be a pipe
/// nobody reads (a stuck log shipper, `2>&1 | less` in the background), and
/// a blocking write there would stop the event loop, and with it every
/// client. When `LOG_BACKLOG` lines wait, further ones are dropped and
/// counted, and the count is reported at the end.
#[must_use = "the log is flushed when this is dropped"]
pub fn init_logging(quiet: bool) -> LogGuard {
    let level = if quiet {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BACKLOG)
        .thread_name("log")
        .finish(io::stderr());
    let dropped = writer.error_counter();
    *lock_log() = Some(LogWriter { guard, dropped });
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(io::stderr().is_terminal())
        .with_max_level(level)
        .init();
    LogGuard(())
}

/// Held by `main` while it logs; see [`init_logging`].
#[derive(Debug)]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        finish_logging();
    }
}

/// Writes the log lines still queued to stderr, then how many were dropped,
/// if any, and ends the log: later lines are lost. Waits at most `LOG_DRAIN`
/// for that, so that a full stderr cannot keep the process from exiting.
/// Called when `main`'s [`LogGuard`] is dropped, and by [`fail`]; a second
/// call does nothing.
pub fn finish_logging() {
    finish_log(String::new());
}

/// Finishes the log, then writes `last_words` to stderr, all within
/// `LOG_DRAIN`.
fn finish_log(last_words: String) {
    let log = lock_log().take();
    if log.is_none() && last_words.is_empty() {
        return;
    }
    let (done, finished) = mpsc::channel();
    // The guard's drop waits for the writer thread (up to about a second);
    // the lines after it are plain writes to stderr, which may block for
    // good. A thread of their own bounds both: the process exits without it.
    let write_out = move || {
        let mut text = String::new();
        if let Some(LogWriter { guard, dropped }) = log {
            drop(guard);
            let count = dropped.dropped_lines();
            if count > 0 {
                text = format!("warning: {count} log lines dropped: stderr was not read in time\n");
            }
        }
        text.push_str(&last_words);
        let _ = io::stderr().write_all(text.as_bytes());
        let _ = done.send(());
    };
    // Without a thread nothing more is written: better than a hang on the
    // way out.
    if thread::Builder::new()
        .name("log-end".into())
        .spawn(write_out)
        .is_ok()
    {
        let _ = finished.recv_timeout(LOG_DRAIN);
    }
}

/// Locks the log's state even if a thread panicked while holding it: it is
/// an `Option` replaced whole.
fn lock_log() -> MutexGuard<'static, Option<LogWriter>> {
    LOG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prints `listening on ENDPOINT` (`IP:PORT`, `tls://IP:PORT`,
/// `http://IP:PORT/`) on stdout, at once: whoever started the server may
/// be waiting for that line to learn the port.
pub fn announce(endpoint: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout is no reason to stop serving.
    let _ = writeln!(out, "listening on {endpoint}");
    let _ = out.flush();
}

/// Prints `error: <err>` on stderr and exits with status 1: how a binary
/// reports a mistake of its user (a bad host, a port in use) — one line, not
/// a panic. The log is finished first, so that the error is its last line.
pub fn fail(err: impl Display) -> ! {
    finish_log(format!("error: {err}\n"));
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
            "--shutdown-timeout",
            "7",
            "--linger-timeout",
            "1",
        ])
        .config();
        assert_eq!(config.max_connections, 3);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(config.linger_timeout, Duration::from_secs(1));
    }

    #[test]
    fn server_option_defaults_are_the_loop_defaults() {
        // clap needs its defaults as literals; this keeps them from drifting.
        let parsed = args(&["localhost", "0"]).config();
        let defaults = Config::default();
        assert_eq!(parsed.max_connections, defaults.max_connections);
        assert_eq!(parsed.idle_timeout, defaults.idle_timeout);
        assert_eq!(parsed.shutdown_timeout, defaults.shutdown_timeout);
        assert_eq!(parsed.linger_timeout, defaults.linger_timeout);
    }

    #[test]
    fn the_input_limit_holds_a_whole_line() {
        let cli = Cli::parse_from(["server", "localhost", "0", "--max-line", "65536"]);
        let config = cli.chat.loop_config(cli.server.config());
        // A whole frame of a message of that length: 14 bytes of header.
        assert_eq!(config.max_input, 65_536 + web::MAX_HEADER);
        let cli = Cli::parse_from(["server", "localhost", "0"]);
        let config = cli.chat.loop_config(cli.server.config());
        assert_eq!(config.max_input, Config::default().max_input);
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
        assert_eq!(parsed.announce_limit, defaults.announce_limit);
        assert_eq!(parsed.flood_rate, defaults.flood_rate);
        assert_eq!(parsed.flood_burst, defaults.flood_burst);
        assert_eq!(parsed.max_rooms, defaults.max_rooms);
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
    fn max_rooms_is_1_to_a_million() {
        let parse = |n| Cli::try_parse_from(["server", "h", "0", "--max-rooms", n]);
        assert_eq!(parse("1").unwrap().chat.config(None).max_rooms, 1);
        assert!(parse("1000000").is_ok());
        assert!(parse("0").is_err(), "the lobby is always there");
        assert!(parse("1000001").is_err());
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

    /// Each ranged option with the values just inside and just outside its
    /// range.
    const RANGES: &[(&str, &str, &str)] = &[
        ("--max-clients", "1", "0"),
        ("--max-clients", "1000000", "1000001"),
        ("--idle-timeout", "1", "0"),
        ("--idle-timeout", "604800", "604801"),
        ("--shutdown-timeout", "1", "0"),
        ("--shutdown-timeout", "300", "301"),
        ("--linger-timeout", "1", "0"),
        ("--linger-timeout", "60", "61"),
        ("--max-line", "16", "15"),
        ("--max-line", "65536", "65537"),
        ("--greeting-timeout", "1", "0"),
        ("--greeting-timeout", "3600", "3601"),
        ("--max-per-ip", "1", "0"),
        ("--max-per-ip", "1000000", "1000001"),
        ("--announce-limit", "1000000", "1000001"),
    ];

    #[test]
    fn durations_and_sizes_have_ranges() {
        use clap::error::ErrorKind;
        let parse = |option, value| Cli::try_parse_from(["server", "h", "0", option, value]);
        for &(option, inside, outside) in RANGES {
            assert!(parse(option, inside).is_ok(), "{option} {inside}");
            let err = parse(option, outside).err();
            let kind = err.as_ref().map(clap::Error::kind);
            assert_eq!(kind, Some(ErrorKind::ValueValidation), "{option} {outside}");
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "{option} {outside}");
        }
        assert!(parse("--announce-limit", "0").is_ok(), "never announce");
        // Accepted once, and every connection then panicked: the greeting
        // deadline overflowed `Instant`.
        assert!(parse("--greeting-timeout", "18446744073709551615").is_err());
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
    fn the_web_ids_are_those_the_listeners_are_bound_with() {
        let plan = |argv: &[&str]| {
            let cli = Cli::parse_from(["server", "h", "0"].iter().chain(argv));
            cli.chat.plan(&cli.server)
        };
        assert_eq!(plan(&[]).web_ids(), []);
        assert_eq!(plan(&["--web-port", "0"]).web_ids(), [ListenerId::nth(1)]);
        let tls = ["--tls-port", "0", "--tls-cert", "c", "--tls-key", "k"];
        let both = plan(&[&tls[..], &["--web-port", "8", "--web-tls-port", "9"]].concat());
        assert_eq!(
            both.listeners,
            [
                Listener::Plain(0),
                Listener::Tls(0),
                Listener::Web(8),
                Listener::WebTls(9)
            ]
        );
        assert_eq!(both.web_ids(), [ListenerId::nth(2), ListenerId::nth(3)]);
    }

    #[test]
    fn web_origins_are_origins() {
        assert_eq!(
            parse_origin("https://a.example/"),
            Ok("https://a.example".into())
        );
        assert!(parse_origin("http://localhost:8080").is_ok());
        for bad in ["a.example", "https://", "https://a.example/chat", "ftp://a"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
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
