//! client: a line client for the netchat servers.
//!
//! Three threads: one copies the server's bytes to stdout, one sends stdin's
//! lines to the server, and `main` waits for either to finish and decides how
//! the program ends.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use chatapp::cli::{self, describe};
use clap::Parser;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait, once `bye` is sent, for the server to close.
const BYE_WAIT: Duration = Duration::from_secs(2);

/// Line client for the netchat servers.
///
/// Connects, sends `Hi`, then sends each line read from stdin (a terminal, a
/// pipe or a file) and prints every line the server sends. After sending
/// `bye` — which it sends itself at the end of stdin — it waits up to two
/// seconds for the server to close the connection, then exits.
#[derive(Parser)]
#[command(
    version,
    after_help = "Exit status: 0 when the session ended (bye sent, or the server closed \
                  the connection), 1 on an error (cannot connect, connection reset), 2 on \
                  a usage error."
)]
struct Args {
    /// Server to connect to: a name such as `localhost`, an IPv4 or an IPv6
    /// address.
    host: String,
    /// The server's port.
    port: u16,
}

/// What the two threads report to `main` when they are done.
enum Done {
    /// The server closed the connection (`Ok`), or it broke.
    Server(Result<(), String>),
    /// Input was sent up to `bye`, or could not be.
    Input(Result<(), String>),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stream = connect(&args.host, args.port).unwrap_or_else(|e| cli::fail(e));
    let from_server = stream
        .try_clone()
        .unwrap_or_else(|e| cli::fail(describe(&e)));

    let (done, finished) = mpsc::channel();
    let input_done = done.clone();
    thread::spawn(move || done.send(Done::Server(print_all(from_server))));
    thread::spawn(move || input_done.send(Done::Input(send_input(stream))));

    let outcome = match finished.recv().expect("both threads report") {
        Done::Server(result) => result,
        // Either the server closes now, as it should after `bye`, or we stop
        // waiting; a thread still blocked reading stdin ends with the process.
        Done::Input(sent) => match finished.recv_timeout(BYE_WAIT) {
            Ok(Done::Server(result)) => result,
            _ => sent,
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(e),
    }
}

/// Connects to the first address of `host` that answers.
fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|_| format!("cannot resolve host '{host}'"))?;
    let mut last_error = format!("cannot resolve host '{host}'");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = format!("cannot connect to {host}:{port}: {}", describe(&e)),
        }
    }
    Err(last_error)
}

/// Copies what the server sends to stdout as it arrives, until the server
/// closes the connection. A last line without a newline is given one, so
/// that the shell's prompt starts on a line of its own.
fn print_all(mut from: TcpStream) -> Result<(), String> {
    let mut out = io::stdout();
    let mut buf = [0; 8192];
    let mut at_line_start = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err("connection reset by server".into())
            }
            Err(e) => return Err(format!("connection lost: {}", describe(&e))),
        };
        out.write_all(&buf[..n])
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {}", describe(&e)))?;
        at_line_start = buf[n - 1] == b'\n';
    }
    if !at_line_start {
        let _ = writeln!(out);
    }
    Ok(())
}

/// Sends `Hi`, then stdin line by line up to a line `bye`, which it sends
/// itself at the end of stdin. It does not shut down its side of the
/// connection: the server is to see `bye` and close first.
fn send_input(mut to: TcpStream) -> Result<(), String> {
    let cannot_send = |e: io::Error| format!("cannot send: {}", describe(&e));
    to.write_all(b"Hi\n").map_err(cannot_send)?;
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = stdin
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read stdin: {}", describe(&e)))?;
        if n == 0 {
            return to.write_all(b"bye\n").map_err(cannot_send);
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        to.write_all(&line).map_err(cannot_send)?;
        if line.trim_ascii().eq_ignore_ascii_case(b"bye") {
            return Ok(());
        }
    }
}
