//! Helpers for the end-to-end tests: start a server binary and wait for it
//! to listen, run a binary to its end, and talk to a server with timeouts.
//! Every wait is bounded, and a server is killed when its test ends, pass or
//! fail.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a server may take to print `listening on …`, a binary to run to
/// its end, and one read or write on a connection.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server binary running on 127.0.0.1 with a port of its choosing.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// Collects stderr, so that a server that logs never blocks on a full pipe.
    stderr: Option<JoinHandle<String>>,
}

impl Server {
    /// Starts `bin` (a path from `env!("CARGO_BIN_EXE_…")`) as
    /// `bin 127.0.0.1 0 ARGS…` and waits for it to print its address.
    pub fn start(bin: &str, args: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args(["127.0.0.1", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || read_all(stderr));

        // The first line is read on a thread so that it can be waited for
        // with a timeout; the thread then keeps stdout drained.
        let (first_line, line) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = first_line.send(stdout.read_line(&mut line).map(|_| line));
            let _ = io::copy(&mut stdout, &mut io::sink());
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: Some(stderr),
        };
        let first = match line.recv_timeout(TIMEOUT) {
            Ok(Ok(line)) if !line.is_empty() => line,
            _ => {
                let _ = server.child.kill();
                panic!(
                    "{bin} did not say where it listens; stderr:\n{}",
                    server.stderr()
                );
            }
        };
        let addr = first
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!("expected `listening on IP:PORT`, got {first:?}");
            });
        server.addr = addr.parse().expect("an IP:PORT");
        server
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends the server SIGTERM.
    pub fn sigterm(&self) {
        signal(self.child.id(), libc::SIGTERM);
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_with_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // std cannot wait for a child with a timeout; polling is cheap.
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the server wrote to stderr. Waits for it to close stderr,
    /// so call it once the server has exited (or been killed).
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().expect("the stderr reader does not panic"))
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Does nothing if the server has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin ARGS…` with `stdin` as its input, to its end, which must come
/// within [`TIMEOUT`].
pub fn run(bin: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let pid = child.id();
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    // The program may exit without reading it all: a failed write is fine.
    thread::spawn(move || input.write_all(&stdin));

    let (done, output) = mpsc::channel();
    thread::spawn(move || done.send(child.wait_with_output()));
    match output.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("{bin} {args:?} did not finish within {TIMEOUT:?}");
        }
    }
}

/// Connects to `addr`, with [`TIMEOUT`] on every read and write.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("set_write_timeout");
    stream
}

/// Reads exactly `expected.len()` bytes within `timeout` and checks they
/// are `expected`.
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = [0; 64 * 1024];
    while got.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out after {} bytes", got.len());
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        let want = (expected.len() - got.len()).min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => panic!("connection closed after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    if got != expected {
        let at = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!("received bytes differ from those expected, first at {at:?}");
    }
}

/// Checks that the server has closed `stream`: a read gives end of stream
/// or a reset, not data, within [`TIMEOUT`].
pub fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0; 1024];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("expected the connection closed, got {n} bytes"),
        Err(e) => panic!("expected the connection closed, got {e}"),
    }
}

/// A round trip on an echo connection: sends `msg` and expects it back.
pub fn echo_round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    expect_bytes(stream, msg, TIMEOUT);
}

/// Sends `sig` to the process `pid`, which must be a child not yet waited
/// for (so that the pid cannot have been reused).
fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: kill takes no pointers; it has no effect on this process's memory.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
}

fn read_all(mut from: impl Read) -> String {
    let mut text = String::new();
    let _ = from.read_to_string(&mut text);
    text
}
