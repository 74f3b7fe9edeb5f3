//! loadgen: a load generator for the netchat servers, and for the peer
//! servers in bench/ that they are compared with.
//!
//! One thread drives every connection with epoll (see `net`): blocking
//! threads would be simpler, but 10,000 idle clients, or 1,000 in one chat
//! room, on a two-core machine need a loop. A run connects, waits until
//! every connection is ready (greeted, for chat), then measures: messages
//! per second, bytes per second, latency percentiles from an HDR
//! histogram, and, given the server's pid, its CPU time per message. What
//! comes back is checked, and the first mismatch ends the run with an
//! error. With `--tls` every connection speaks TLS (see `tls`), and
//! `--mode handshake` measures the handshakes themselves.

mod echo;
mod engine;
mod fanout;
mod handshake;
mod nats;
mod net;
mod payload;
mod stats;
mod tls;
mod ws;

use std::io::{self, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chatapp::cli::describe;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use engine::{Counts, Failure, Outcome, Plan, Workload};
use fanout::Protocol;
use stats::Latency;

/// How long a run may take when neither --timeout nor --duration says:
/// generous for a count-bound run on loopback, and still bounded.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message: the whole pipeline of a connection must fit in memory
/// many times over.
const MAX_SIZE: u64 = 1 << 20;
/// Descriptors loadgen needs besides its connections (stdio, epoll, /proc).
const SPARE_FILES: u64 = 32;

/// Load generator for the netchat servers: opens connections, sends
/// messages, checks every byte that comes back, and reports throughput,
/// latency percentiles and (with --server-pid) the server's CPU time per
/// message.
///
/// Examples: `loadgen 5000 -c 50 -s 64 --pipeline 16 -d 10s` (echo);
/// `loadgen 5000 --mode chat -c 100 -n 100` (chat: every client sends 100
/// lines, each relayed to the 99 others); `loadgen 4222 --mode nats -c 100
/// --senders 1 --batch 64 -d 5s` (one publisher to 100 NATS subscribers, 64
/// messages to a write); `loadgen 5000 --mode chat -c 10000 --idle -d 30s`
/// (hold 10,000 greeted clients for 30 s); `loadgen 5001 --tls --ca
/// cert.pem --mode handshake -c 50 -d 5s` (TLS handshakes, 50 at a time).
#[derive(Parser)]
#[command(
    version,
    after_help = "Exit status: 0 when every message came back as sent, 1 on an error \
                  (cannot connect, a mismatch, a connection closed, the timeout), 2 on a \
                  usage error."
)]
struct Args {
    /// The server's port.
    #[arg(required_unless_present = "servers")]
    port: Option<u16>,
    /// Spread the connections over several servers on --host, in turn
    /// (`--servers 5000,5001`): a cluster of chat servers, measured as one.
    /// Instead of PORT.
    #[arg(
        long,
        value_name = "PORT,PORT",
        value_delimiter = ',',
        conflicts_with = "port"
    )]
    servers: Vec<u16>,
    /// The server's address. Only loopback addresses are accepted unless
    /// --allow-remote is given.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// What to speak.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Connections: echo streams, chat clients, Redis or NATS subscribers,
    /// or handshakes at a time.
    #[arg(short = 'c', long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connections: u64,
    /// Messages each connection sends (fan-out: each sender; handshake:
    /// handshakes each connection makes, one after the other).
    #[arg(short = 'n', long, default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Bytes per message, newline included for echo-lines and chat (a
    /// chat message is at least its header, about 20 bytes).
    #[arg(short = 's', long, default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SIZE))]
    size: u64,
    /// Messages each connection (or sender) keeps in flight: sent, and not
    /// yet echoed or delivered to everyone. The next is sent as soon as the
    /// oldest is done.
    #[arg(long, default_value_t = 1, value_name = "D",
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pipeline: u64,
    /// Fan-out: each sender sends N messages in one write, then waits until
    /// every receiver has all N before it sends the next N (instead of
    /// --pipeline's sliding window).
    #[arg(long, value_name = "N", conflicts_with = "pipeline",
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    batch: Option<u64>,
    /// Send for this long (`10s`, `500ms`) instead of -n messages; with
    /// --idle, how long to hold the connections.
    #[arg(short = 'd', long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Fan-out: how many clients send (default: all of them). Chat senders
    /// are the first clients; Redis and NATS senders get connections of
    /// their own.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    senders: Option<u64>,
    /// Only connect (chat: and greet) every connection, hold them all for
    /// --duration, then close them; reports the server's memory.
    #[arg(long, requires = "duration")]
    idle: bool,
    /// Fail if the run, connecting included, takes longer than this
    /// (default: --duration plus a minute, or a minute).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The server's process id: report its CPU time per message (from
    /// /proc/PID/stat, over the measured part of the run) and its memory.
    /// With several servers, their ids (`--server-pid 123,456`): the CPU
    /// time and memory reported are their sum.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Connect from this many local addresses, 127.0.0.1, 127.0.0.2, …
    /// (IPv4 loopback servers only): each has about 28,000 ephemeral ports.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=254))]
    sources: u64,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Allow a server address that is not loopback.
    #[arg(long)]
    allow_remote: bool,
    /// Speak TLS (echo, echo-lines, chat, handshake): the server's
    /// certificate must be signed by --ca and name --tls-name.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// The certificate (PEM) to trust with --tls: benchmarks use
    /// self-signed ones, so no system roots are trusted.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// The name the server's certificate must have.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "localhost",
        requires = "tls"
    )]
    tls_name: String,
}

/// What loadgen speaks to the server.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A byte stream echoed back (server4, any echo server).
    Echo,
    /// Newline-terminated messages echoed back.
    EchoLines,
    /// The netchat chat protocol: greet, then every line goes to the
    /// others; measures deliveries.
    Chat,
    /// The chat protocol over a WebSocket (a chat server's --web-port): one
    /// text message is one line.
    Web,
    /// Redis pub/sub on one channel, as a reference for chat fan-out.
    Redis,
    /// NATS on one subject, a second reference for chat fan-out.
    Nats,
    /// TLS handshakes (needs --tls): connect, complete the handshake,
    /// close, again; measures handshakes.
    Handshake,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::EchoLines => "echo-lines",
            Mode::Chat => "chat",
            Mode::Web => "web",
            Mode::Redis => "redis",
            Mode::Nats => "nats",
            Mode::Handshake => "handshake",
        }
    }

    /// The fan-out protocol this mode speaks, if it is a fan-out mode.
    fn fanout(self) -> Option<Protocol> {
        match self {
            Mode::Echo | Mode::EchoLines | Mode::Handshake => None,
            Mode::Chat => Some(Protocol::Chat),
            Mode::Web => Some(Protocol::Web),
            Mode::Redis => Some(Protocol::Redis),
            Mode::Nats => Some(Protocol::Nats),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let ports = args
        .port
        .map_or_else(|| args.servers.clone(), |port| vec![port]);
    let addrs = ports
        .iter()
        .map(|&port| resolve(&args.host, port))
        .collect::<Result<Vec<_>, _>>()?;
    // Every server is on the same host: the first stands for it.
    let addr = addrs[0];
    // How the report names them: `127.0.0.1:5000`, or `127.0.0.1:5000,5001`.
    let target = std::iter::once(addr.to_string())
        .chain(ports[1..].iter().map(u16::to_string))
        .collect::<Vec<_>>()
        .join(",");
    if !addr.ip().is_loopback() && !args.allow_remote {
        return Err(format!(
            "{} is not a loopback address: pass --allow-remote to load another host",
            addr.ip()
        ));
    }
    let sources = sources(args.sources, addr)?;
    let tls = match &args.ca {
        Some(ca) if args.tls => Some(tls::Client::new(ca, &args.tls_name)?),
        _ => None,
    };
    if tls.is_some() && matches!(args.mode, Mode::Redis | Mode::Nats) {
        return Err(format!(
            "--tls is for netchat's servers (echo, echo-lines, chat, handshake), not {}",
            args.mode.name()
        ));
    }
    if args.mode == Mode::Handshake && tls.is_none() {
        return Err("--mode handshake measures TLS handshakes: add --tls --ca FILE".into());
    }
    let epoch = Instant::now();
    let workload = workload(args, epoch)?;
    let connections = workload
        .as_ref()
        .map_or(args.connections as usize, |w| w.connections());
    raise_file_limit(connections as u64)?;

    let timeout = args
        .timeout
        .unwrap_or_else(|| args.duration.unwrap_or_default() + DEFAULT_TIMEOUT);
    let progress = if io::stdout().is_terminal() && !args.json {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {percent:>3}% {elapsed}")
            .expect("a valid template");
        bar.set_style(style.progress_chars("=> "));
        bar
    } else {
        ProgressBar::hidden()
    };
    let plan = Plan {
        addrs,
        sources,
        duration: args.duration,
        idle: args.idle,
        deadline: epoch + timeout,
        server_pids: args.server_pid.clone(),
        tls,
        progress,
    };
    let per_conn = args.duration.is_none().then_some(args.messages);
    let (result, total) = match workload {
        None => {
            let result = handshake::run(&plan, connections, per_conn)
                .map(|h| (h.outcome, h.counts, h.latency));
            (result, per_conn.map(|n| n * connections as u64))
        }
        Some(mut workload) => {
            let result = engine::run(workload.as_mut(), &plan)
                .map(|outcome| (outcome, workload.counts(), workload.latency().clone()));
            (result, workload.total())
        }
    };
    plan.progress.finish_and_clear();
    let (outcome, counts, latency) =
        result.map_err(|failure| explain(failure, &target, total, timeout))?;
    let run = Run {
        connections,
        counts,
        latency: &latency,
        outcome: &outcome,
    };
    report(&mut io::stdout().lock(), args, &target, &run)
        .map_err(|e| format!("cannot write the report: {e}"))
}

/// The workload `args` ask for, or `None` for handshakes, which are not one
/// (see `handshake`).
fn workload(args: &Args, epoch: Instant) -> Result<Option<Box<dyn Workload>>, String> {
    let connections = args.connections as usize;
    let size = args.size as usize;
    let pipeline = args.batch.unwrap_or(args.pipeline) as usize;
    let per_conn = args.duration.is_none().then_some(args.messages);
    let Some(protocol) = args.mode.fanout() else {
        for (given, option) in [
            (args.senders.is_some(), "--senders"),
            (args.batch.is_some(), "--batch"),
        ] {
            if given {
                return Err(format!(
                    "{option} is for the fan-out modes: chat, web, redis, nats"
                ));
            }
        }
        if args.mode == Mode::Handshake {
            if args.idle {
                return Err("--idle holds connections; --mode handshake closes them".into());
            }
            return Ok(None);
        }
        let lines = args.mode == Mode::EchoLines;
        return Ok(Some(Box::new(echo::Echo::new(
            lines,
            connections,
            size,
            pipeline,
            per_conn,
        ))));
    };
    if protocol.room() && connections < 2 && !args.idle {
        return Err("chat needs at least two clients (-c 2): one to send, one to receive".into());
    }
    let senders = args.senders.map_or(connections, |n| n as usize);
    if protocol.room() && senders > connections {
        return Err(format!(
            "--senders {senders} is more than the {connections} clients"
        ));
    }
    Ok(Some(Box::new(fanout::Fanout::new(
        protocol,
        connections,
        senders,
        size,
        pipeline,
        args.batch.is_some(),
        per_conn,
        epoch,
    ))))
}

/// The first address `host` resolves to.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("cannot resolve host '{host}'"))
}

/// The local addresses to spread connections over: none (the kernel
/// picks) for one, 127.0.0.1 … 127.0.0.N for more.
fn sources(count: u64, server: SocketAddr) -> Result<Vec<IpAddr>, String> {
    if count == 1 {
        return Ok(Vec::new());
    }
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ok((1..=count as u8)
            .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
            .collect()),
        _ => Err("--sources needs an IPv4 loopback server (127.x.x.x)".into()),
    }
}

/// Raises the open-file limit to the hard limit, and checks that
/// `connections` fit under it.
fn raise_file_limit(connections: u64) -> Result<(), String> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the open-file limit: {}", describe(&e)))?;
    if connections + SPARE_FILES > limit {
        return Err(format!(
            "{connections} connections need more open files than the limit of {limit}: \
             raise it (ulimit -n {})",
            connections + SPARE_FILES
        ));
    }
    Ok(())
}

/// A failed run as a sentence; `total` is how many messages (or
/// handshakes) it was to complete, if known.
fn explain(failure: Failure, addr: &str, total: Option<u64>, timeout: Duration) -> String {
    match failure {
        Failure::Connect(e, connected) => {
            let hint = match e.raw_os_error() {
                // EADDRNOTAVAIL: every local port towards the server is taken.
                Some(99) => ": out of local ports, spread the connections with --sources",
                // EMFILE
                Some(24) => ": raise the open-file limit (ulimit -n)",
                _ => "",
            };
            let after = if connected > 0 {
                format!(" (after {connected} connections)")
            } else {
                String::new()
            };
            format!("cannot connect to {addr}: {}{hint}{after}", describe(&e))
        }
        Failure::Run(message) => message,
        Failure::Timeout(counts) => {
            let of = total.map_or(String::new(), |total| format!(" of {total}"));
            format!(
                "timed out after {}: {}{of} completed",
                humantime::format_duration(timeout),
                counts.completed
            )
        }
    }
}

/// What a run did, for the report.
struct Run<'a> {
    connections: usize,
    counts: Counts,
    /// The latency of every message (delivery, handshake), in nanoseconds.
    latency: &'a Histogram<u64>,
    outcome: &'a Outcome,
}

/// Writes what was measured to `out`, for people or (--json) for scripts.
fn report(out: &mut dyn Write, args: &Args, addr: &str, run: &Run) -> io::Result<()> {
    let (counts, outcome) = (run.counts, run.outcome);
    let seconds = outcome.elapsed.as_secs_f64();
    let rate = counts.completed as f64 / seconds;
    let mb_per_sec = counts.bytes as f64 / seconds / 1e6;
    let latency = Latency::of(run.latency);
    let per_message =
        |d: Duration| (counts.completed > 0).then(|| d.as_nanos() as f64 / counts.completed as f64);
    let server_ns = outcome.server_cpu.and_then(|cpu| per_message(cpu.total()));
    let own_ns = per_message(outcome.own_cpu.total());
    let fanout = args.mode.fanout().is_some();

    if args.json {
        let value = serde_json::json!({
            "mode": args.mode.name(),
            "tls": outcome.tls,
            "addr": addr,
            "connections": run.connections,
            "senders": fanout.then(|| args.senders.unwrap_or(args.connections)),
            "size": args.size,
            "pipeline": args.batch.unwrap_or(args.pipeline),
            "batch": args.batch.is_some(),
            "idle": args.idle,
            "setup_s": outcome.setup.as_secs_f64(),
            "seconds": seconds,
            "sent": counts.sent,
            "completed": counts.completed,
            "bytes": counts.bytes,
            "per_s": rate,
            "mb_per_s": mb_per_sec,
            "latency_us": {
                "p50": latency.p50, "p99": latency.p99,
                "p999": latency.p999, "max": latency.max,
            },
            "server_cpu_ns_per_msg": server_ns,
            "server_user_ns_per_msg": outcome.server_cpu.and_then(|c| per_message(c.user)),
            "server_sys_ns_per_msg": outcome.server_cpu.and_then(|c| per_message(c.system)),
            "server_cpu_s": outcome.server_cpu.map(|c| c.total().as_secs_f64()),
            "server_rss_kib": outcome.server_rss_kib,
            "loadgen_cpu_ns_per_msg": own_ns,
        });
        return writeln!(out, "{value}");
    }

    let (what, one) = match args.mode {
        _ if fanout => ("deliveries", "delivery"),
        Mode::Handshake => ("handshakes", "handshake"),
        _ => ("messages", "message"),
    };
    let over = match &outcome.tls {
        Some(negotiated) => format!(" over {negotiated}"),
        None => String::new(),
    };
    if args.mode == Mode::Handshake {
        writeln!(
            out,
            "handshakes with {addr}{over}: {} at a time",
            run.connections
        )?;
    } else {
        let in_flight = match args.batch {
            Some(n) => format!("batches of {n}"),
            None => format!("pipeline {}", args.pipeline),
        };
        writeln!(
            out,
            "{} to {addr}{over}: {} connections, {}-byte messages, {in_flight}",
            args.mode.name(),
            run.connections,
            args.size,
        )?;
        writeln!(
            out,
            "  ready        {} connections in {:.2} s",
            run.connections,
            outcome.setup.as_secs_f64()
        )?;
    }
    if args.idle {
        writeln!(out, "  held         for {seconds:.2} s")?;
    } else {
        if fanout {
            writeln!(out, "  sent         {} messages", counts.sent)?;
        }
        // Handshakes carry no data of the workload's.
        let throughput = if args.mode == Mode::Handshake {
            String::new()
        } else {
            format!(", {mb_per_sec:.1} MB/s")
        };
        writeln!(
            out,
            "  {what:<12} {} in {seconds:.2} s: {rate:.0}/s{throughput}",
            counts.completed
        )?;
        writeln!(
            out,
            "  latency      p50 {}, p99 {}, p99.9 {}, max {}",
            micros(latency.p50),
            micros(latency.p99),
            micros(latency.p999),
            micros(latency.max)
        )?;
    }
    if let (Some(cpu), Some(ns)) = (outcome.server_cpu, server_ns) {
        let user = per_message(cpu.user).unwrap_or_default();
        let system = per_message(cpu.system).unwrap_or_default();
        writeln!(
            out,
            "  server CPU   {:.2} s: {ns:.0} ns per {one} (user {user:.0}, system {system:.0})",
            cpu.total().as_secs_f64(),
        )?;
    }
    if let Some(ns) = own_ns {
        writeln!(out, "  loadgen CPU  {ns:.0} ns per {one}")?;
    }
    if let Some(kib) = outcome.server_rss_kib {
        writeln!(out, "  server RSS   {kib} KiB")?;
    }
    Ok(())
}

/// Microseconds, or milliseconds when that is easier to read.
fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}
