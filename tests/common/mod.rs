//! Helpers for the end-to-end tests: start a server binary and wait for it
//! to listen, type on its console and read its transcript, run a binary to
//! its end, and talk to a server with timeouts. Every wait is bounded, and a
//! server is killed when its test ends, pass or fail.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub mod tls;

/// How long a server may take to print `listening on …`, a binary to run to
/// its end, and one read or write on a connection.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server binary running on 127.0.0.1 with a port of its choosing.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// Where it serves TLS, if it was started with `--tls-port`.
    tls_addr: Option<SocketAddr>,
    web_addr: Option<SocketAddr>,
    web_tls_addr: Option<SocketAddr>,
    /// The server's stdin: the chat servers' operator console.
    console: ChildStdin,
    /// The lines of stdout after `listening on …` (the chat servers'
    /// transcript), without their `\n`.
    stdout: Receiver<String>,
    /// Collects stderr, so that a server that logs never blocks on a full pipe.
    stderr: Option<JoinHandle<String>>,
}

impl Server {
    /// Starts `bin` (a path from `env!("CARGO_BIN_EXE_…")`) as
    /// `bin 127.0.0.1 0 ARGS…` and waits for it to print its address. Its
    /// stdin is a pipe for [`console`](Server::console), and its stdout is
    /// read as it comes, for [`expect_transcript`](Server::expect_transcript).
    pub fn start(bin: &str, args: &[&str]) -> Server {
        let (mut server, stderr) = Server::spawn(bin, args);
        server.stderr = Some(thread::spawn(move || read_all(stderr)));
        server.await_address(bin);
        // The other endpoints' lines, in the order the servers print them.
        if args.contains(&"--tls-port") {
            server.tls_addr = Some(server.endpoint("listening on tls://", ""));
        }
        if args.contains(&"--web-port") {
            server.web_addr = Some(server.endpoint("listening on http://", "/"));
        }
        if args.contains(&"--web-tls-port") {
            server.web_tls_addr = Some(server.endpoint("listening on https://", "/"));
        }
        server
    }

    /// The address of the next endpoint line, `BEFORE` IP:PORT `AFTER`.
    fn endpoint(&self, before: &str, after: &str) -> SocketAddr {
        let line = self.stdout.recv_timeout(TIMEOUT).expect("an endpoint line");
        line.strip_prefix(before)
            .and_then(|rest| rest.strip_suffix(after))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("expected `{before}IP:PORT{after}`, got {line:?}"))
    }

    /// Starts `bin` like [`start`](Server::start), except that its stderr is
    /// a pipe that nobody reads: once the log has filled it (64 KiB on
    /// Linux), every write to stderr would block. The pipe stays open, unread,
    /// as long as the returned `ChildStderr` lives, so keep it until the
    /// server has exited. [`stderr`](Server::stderr) is then empty.
    pub fn start_with_stderr_unread(bin: &str, args: &[&str]) -> (Server, ChildStderr) {
        let (mut server, stderr) = Server::spawn(bin, args);
        server.await_address(bin);
        (server, stderr)
    }

    /// Runs `bin 127.0.0.1 0 ARGS…` with every standard stream a pipe.
    fn spawn(bin: &str, args: &[&str]) -> (Server, ChildStderr) {
        let mut child = Command::new(bin)
            .args(["127.0.0.1", "0"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let console = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_addr: None,
            web_addr: None,
            web_tls_addr: None,
            console,
            stdout: read_lines(stdout),
            stderr: None,
        };
        (server, stderr)
    }

    /// Waits for `listening on IP:PORT` and takes the address from it.
    fn await_address(&mut self, bin: &str) {
        let first = match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                panic!(
                    "{bin} did not say where it listens; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        let addr = first.strip_prefix("listening on ").unwrap_or_else(|| {
            panic!("expected `listening on IP:PORT`, got {first:?}");
        });
        self.addr = addr.parse().expect("an IP:PORT");
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the server serves TLS (it was started with `--tls-port`).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr.expect("started with --tls-port")
    }

    /// Where the server serves HTTP and WebSocket (it was started with
    /// `--web-port`).
    pub fn web_addr(&self) -> SocketAddr {
        self.web_addr.expect("started with --web-port")
    }

    /// Where the server serves HTTPS and WSS (it was started with
    /// `--web-tls-port`).
    pub fn web_tls_addr(&self) -> SocketAddr {
        self.web_tls_addr.expect("started with --web-tls-port")
    }

    /// Types `line` on the server's console (its stdin).
    pub fn console(&mut self, line: &str) {
        self.console
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the server's stdin");
    }

    /// Checks that the next line the server writes on stdout, within
    /// [`TIMEOUT`], is `expected`.
    pub fn expect_transcript(&self, expected: &str) {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => assert_eq!(line, expected, "transcript"),
            Err(e) => panic!("expected {expected:?} in the transcript, got {e}"),
        }
    }

    /// Waits up to [`TIMEOUT`] for the server to exit, and checks that it
    /// exits with status 0.
    pub fn expect_exit_success(&mut self) {
        let status = self.wait_with_timeout(TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "server exit: {status:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Sends the server SIGTERM.
    pub fn sigterm(&self) {
        signal(self.child.id(), libc::SIGTERM);
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_with_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_with_timeout(&mut self.child, timeout)
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
pub fn run(bin: &str, args: &[impl AsRef<OsStr> + Debug], stdin: &[u8]) -> Output {
    Program::start(bin, args, stdin).finish()
}

/// A binary other than a server, such as the client, started with its stdin
/// written, its stderr readable line by line as it runs. It is killed when
/// its test ends, pass or fail.
pub struct Program {
    child: Child,
    name: String,
    /// Collects stdout, so that the program never blocks on a full pipe.
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Receiver<String>,
}

impl Program {
    /// Starts `bin ARGS…` with `stdin` as its input.
    pub fn start(bin: &str, args: &[impl AsRef<OsStr> + Debug], stdin: &[u8]) -> Program {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut input = child.stdin.take().expect("piped");
        let stdin = stdin.to_vec();
        // The program may exit without reading it all: a failed write is fine.
        thread::spawn(move || input.write_all(&stdin));
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = read_lines(child.stderr.take().expect("piped"));
        let stdout = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        Program {
            child,
            name: format!("{bin} {args:?}"),
            stdout: Some(stdout),
            stderr,
        }
    }

    /// Checks that the next line the program writes on stderr, within
    /// [`TIMEOUT`], is `expected`.
    pub fn expect_stderr(&self, expected: &str) {
        match self.stderr.recv_timeout(TIMEOUT) {
            Ok(line) => assert_eq!(line, expected, "stderr of {}", self.name),
            Err(e) => panic!("expected {expected:?} on stderr of {}, got {e}", self.name),
        }
    }

    /// Waits up to [`TIMEOUT`] for the program to exit, and returns its
    /// status, its stdout, and the lines of stderr not read yet.
    pub fn finish(&mut self) -> Output {
        let Some(status) = wait_with_timeout(&mut self.child, TIMEOUT) else {
            panic!("{} did not finish within {TIMEOUT:?}", self.name);
        };
        let stdout = self.stdout.take().map(|t| t.join().expect("no panic"));
        // The program has exited, so its stderr is at its end.
        let stderr: String = self.stderr.iter().map(|line| line + "\n").collect();
        Output {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.into_bytes(),
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Does nothing if the program has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // std cannot wait for a child with a timeout; polling is cheap.
        thread::sleep(Duration::from_millis(5));
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

/// Writes `chunk` to `stream` again and again, as a peer that never reads
/// its answers would, until a write blocks past the stream's write timeout
/// (set one first): the server has stopped reading it, and TCP has stopped
/// the writer. A write cut short is resumed where it stopped, so what the
/// server reads is whole chunks (requests, frames, lines) one after the
/// other, but for the last. Returns exactly what went out. Fails if the
/// writer is never stopped (within `TIMEOUT` and 16 MiB) or the connection
/// breaks; `who` names the writer in the failure.
pub fn write_until_stopped(stream: &mut TcpStream, chunk: &[u8], who: &str) -> Vec<u8> {
    let mut sent = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline && sent.len() < 16 << 20,
            "{who} was never slowed down"
        );
        let at = sent.len() % chunk.len();
        match stream.write(&chunk[at..]) {
            Ok(n) => sent.extend_from_slice(&chunk[at..at + n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return sent
            }
            Err(e) => panic!("{who} was cut off after {} bytes: {e}", sent.len()),
        }
    }
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
pub fn signal(pid: u32, sig: libc::c_int) {
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

/// Reads `from` line by line on a thread of its own, and passes each line,
/// without its `\n`, to the receiver. Every line is read, wanted or not, so
/// that the writer never blocks on a full pipe.
fn read_lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (lines, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match from.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
                    // Nobody listens once the test is done with the server.
                    let _ = lines.send(text.into_owned());
                }
            }
        }
    });
    receiver
}

/// A client of a chat server that reads line by line, every read bounded.
pub struct ChatClient {
    to: TcpStream,
    from: BufReader<TcpStream>,
}

impl ChatClient {
    /// Connects to `addr`, and says nothing yet.
    pub fn connect(addr: SocketAddr) -> ChatClient {
        let to = connect(addr);
        let from = BufReader::with_capacity(64 * 1024, to.try_clone().expect("try_clone"));
        ChatClient { to, from }
    }

    /// Connects to `addr` and greets; returns the client and its nick.
    pub fn join(addr: SocketAddr) -> (ChatClient, String) {
        let mut client = ChatClient::connect(addr);
        let nick = client.greet();
        (client, nick)
    }

    /// Says `Hi`, expects `Hello` and the welcome, and returns the nick the
    /// welcome gives.
    pub fn greet(&mut self) -> String {
        self.send("Hi");
        self.expect_line("Hello");
        self.welcome()
    }

    /// Reads the welcome that follows `Hello`, and returns the nick it gives.
    pub fn welcome(&mut self) -> String {
        let welcome = self.line();
        welcome
            .strip_prefix("* welcome, you are ")
            .and_then(|rest| rest.split_once(';'))
            .map(|(nick, _)| nick.to_owned())
            .unwrap_or_else(|| panic!("expected the welcome, got {welcome:?}"))
    }

    /// Sends `line` and a `\n`.
    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Sends `bytes` as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.to.write_all(bytes).expect("write");
    }

    /// The next line, without its `\n`, within [`TIMEOUT`].
    pub fn line(&mut self) -> String {
        self.line_within(TIMEOUT)
    }

    /// The next line, without its `\n`, within `timeout`; panics if none
    /// comes, or the connection ends first.
    pub fn line_within(&mut self, timeout: Duration) -> String {
        self.to
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
        let mut line = Vec::new();
        match self.from.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                String::from_utf8(line).expect("the server sends UTF-8")
            }
            Ok(_) => panic!("connection closed; last bytes {line:?}"),
            Err(e) => panic!("no line within {timeout:?}: {e}; got {line:?}"),
        }
    }

    /// Checks that the next line, within [`TIMEOUT`], is `expected`.
    pub fn expect_line(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// Checks that the server closes the connection, with nothing more to
    /// read, within [`TIMEOUT`].
    pub fn expect_eof(&mut self) {
        self.to
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        let mut rest = Vec::new();
        match self.from.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected the end, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && rest.is_empty() => {}
            Err(e) => panic!("expected the end, got {e} after {rest:?}"),
        }
    }

    /// Reads and throws away everything up to the end of the connection,
    /// which must come within `timeout`; returns how many bytes came.
    pub fn count_to_end(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut count = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "still open after {count} bytes");
            self.to
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            let n = match self.from.fill_buf() {
                Ok([]) => return count,
                Ok(buf) => buf.len(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("read after {count} bytes: {e}"),
            };
            self.from.consume(n);
            count += n;
        }
    }
}

impl Server {
    /// Sends the server SIGHUP, what a terminal that closes sends.
    pub fn sighup(&self) {
        signal(self.child.id(), libc::SIGHUP);
    }
}
