//! The original assignment's programs against ours. Its client sends each
//! message with one write and no line end, then makes one read of up to
//! 1024 bytes with a 2-second timeout: our servers must answer it in time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use chatapp::calc::{Calc, EndLines};
use common::{Server, TIMEOUT};
use reactor::{Config, Handle, Reactor};

const SERVER1: &str = env!("CARGO_BIN_EXE_server1");
const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// How long the assignment's client waits for its answer.
const ITS_PATIENCE: Duration = Duration::from_secs(2);

/// A client that behaves as the assignment's does.
struct Unterminated(TcpStream);

impl Unterminated {
    fn connect(addr: SocketAddr) -> Unterminated {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream
            .set_read_timeout(Some(ITS_PATIENCE))
            .expect("set_read_timeout");
        Unterminated(stream)
    }

    /// Sends `message` with one write and no line end, and returns what
    /// one read of up to 1024 bytes gets within 2 s.
    fn ask(&mut self, message: &str) -> String {
        self.0.write_all(message.as_bytes()).expect("write");
        let mut buf = [0; 1024];
        match self.0.read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!("no answer to {message:?} within {ITS_PATIENCE:?}: {e}"),
        }
    }
}

#[test]
fn server1_greets_a_hi_without_a_line_end() {
    greets_a_hi_without_a_line_end(SERVER1);
}

#[test]
fn server2_greets_a_hi_without_a_line_end() {
    greets_a_hi_without_a_line_end(SERVER2);
}

#[test]
fn server3_greets_a_hi_without_a_line_end() {
    greets_a_hi_without_a_line_end(SERVER3);
}

/// `Hi` with no line end is answered in time, with what a greeting always
/// gets, and the client is in the room: the transcript has its join.
fn greets_a_hi_without_a_line_end(bin: &str) {
    let server = Server::start(bin, &[]);
    let mut client = Unterminated::connect(server.addr());
    let answer = client.ask("Hi");
    assert!(answer.starts_with("Hello\n"), "{answer:?}");
    server.expect_transcript("* user1 joined");
}

/// The calculator on the reactor, wrapped as `examples/calc_server` wraps
/// it. (The example is not a binary the tests can name; this is all its
/// `main` does besides parsing its arguments.)
struct CalcServer {
    addr: SocketAddr,
    handle: Handle<()>,
    serving: Option<thread::JoinHandle<()>>,
}

impl CalcServer {
    fn start() -> CalcServer {
        let (started, start) = mpsc::channel();
        let serving = thread::spawn(move || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            let mut reactor = Reactor::new(Config::default()).expect("a reactor");
            reactor.listen(listener).expect("listen");
            started
                .send((addr, reactor.handle()))
                .expect("the test waits");
            reactor.run(&mut EndLines::new(Calc)).expect("run");
        });
        let (addr, handle) = start.recv_timeout(TIMEOUT).expect("the server starts");
        CalcServer {
            addr,
            handle,
            serving: Some(serving),
        }
    }
}

impl Drop for CalcServer {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(serving) = self.serving.take() {
            let _ = serving.join();
        }
    }
}

#[test]
fn the_calculator_answers_expressions_without_line_ends() {
    let server = CalcServer::start();
    let mut client = Unterminated::connect(server.addr);
    assert_eq!(client.ask("Hi"), "Hello\n");
    assert_eq!(client.ask("1 + 2 * 3"), "7\n");
    assert_eq!(client.ask("2 x 3"), "ERR unexpected 'x' at column 3\n");
}
