//! The relay example (examples/relay.rs) from the outside, in front of
//! server4 (echo) or of a listener of the test's own: lines go through both
//! ways, an upstream that cannot be reached is one `ERR` line, and either
//! end closing ends the other.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, expect_bytes, write_until_stopped, ChatClient, Server, TIMEOUT};

const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// The relay example's binary, built on first use by the cargo that runs
/// these tests. `CARGO_BIN_EXE_…` names binaries only, and `cargo test`
/// builds the examples only when it builds every target (not for
/// `cargo test --test relay`), so this file cannot rely on one being there,
/// or being fresh. Cargo says where it put it; when it is up to date, the
/// build costs a fraction of a second.
fn relay_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        // Without the variables cargo set for this test: build scripts
        // (ring's) are rerun when they change, so the inner build would
        // rebuild half the tree, and the next outer build the same again.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
            {
                cargo.env_remove(&*name);
            }
        }
        let output = cargo
            .args(["build", "--quiet", "--example", "relay"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo");
        assert!(
            output.status.success(),
            "cargo build --example relay failed"
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "relay")
            .find_map(|msg| msg["executable"].as_str().map(str::to_owned))
            .expect("cargo names the relay's executable")
    })
}

/// The relay on 127.0.0.1, in front of `upstream` (`HOST:PORT`).
fn relay(upstream: &str) -> Server {
    Server::start(relay_bin(), &[upstream])
}

/// A listener on 127.0.0.1 whose `accept` gives up after [`TIMEOUT`].
fn upstream_listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SO_RCVTIMEO bounds `accept` too, on Linux.
    socket2::SockRef::from(&listener)
        .set_read_timeout(Some(TIMEOUT))
        .unwrap();
    listener
}

/// The next connection to `listener`, with [`TIMEOUT`] on its reads.
fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
    let (stream, _) = listener.accept().expect("the relay connects");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    BufReader::new(stream)
}

/// The next line from `from`, with its `\n`; empty at the end of the stream.
fn read_line(from: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    from.read_line(&mut line)
        .expect("a line within the timeout");
    line
}

#[test]
fn lines_go_through_to_the_upstream_and_back() {
    let echo = Server::start(SERVER4, &[]);
    let relay = relay(&echo.addr().to_string());
    let mut client = ChatClient::connect(relay.addr());
    client.send("Hi");
    client.expect_line("Hi");
    // Only whole lines are passed on: the first half waits for the rest.
    client.send_bytes(b"half a ");
    client.send("line");
    client.expect_line("half a line");

    // Half a megabyte of lines, written while the echo is read: more than
    // a read, a write budget or a queue's high water, and it comes back
    // whole and in order.
    let lines: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
    let mut stream = connect(relay.addr());
    let mut writer = stream.try_clone().unwrap();
    let sent = lines.clone();
    let writing = thread::spawn(move || writer.write_all(sent.as_bytes()));
    expect_bytes(&mut stream, lines.as_bytes(), TIMEOUT);
    writing.join().unwrap().expect("write");
}

#[test]
fn an_upstream_that_cannot_be_reached_is_one_err_line_then_the_end() {
    // A port nobody listens on: bound, then closed.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = relay(&gone.to_string());
    let mut client = ChatClient::connect(relay.addr());
    client.expect_line("ERR upstream unreachable: connection refused");
    client.expect_eof();
}

#[test]
fn lines_sent_before_the_upstream_is_reached_are_not_lost() {
    // An upstream whose backlog (0: one connection waiting) is full: the
    // kernel drops the relay's SYN, and the connect waits for its
    // retransmission, a second later.
    let upstream = TcpListener::from(
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap(),
    );
    let socket = socket2::SockRef::from(&upstream);
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let addr = upstream.local_addr().unwrap();
    let _waiting = TcpStream::connect(addr).unwrap();

    let relay = relay(&addr.to_string());
    let mut client = ChatClient::connect(relay.addr());
    client.send("early");
    await_connecting_to(addr);
    // Room for one more: the retransmitted SYN gets in.
    drop(upstream.accept().unwrap());
    let mut upstream = accept(&upstream);
    assert_eq!(read_line(&mut upstream), "early\n");
    upstream.get_mut().write_all(b"late\n").unwrap();
    client.expect_line("late");
}

/// Waits until a socket of this host is connecting to `addr` (`SYN_SENT`
/// in /proc/net/tcp), for [`TIMEOUT`] at most. Nothing can be read that
/// would say so, so this looks every few milliseconds.
fn await_connecting_to(addr: SocketAddr) {
    // Addresses are hex there, the IPv4 one in the byte order of memory.
    let SocketAddr::V4(v4) = addr else {
        panic!("an IPv4 address")
    };
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let connecting = table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"02")
        });
        if connecting {
            return;
        }
        assert!(Instant::now() < deadline, "nothing connects to {addr}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_upstream_closing_ends_the_client() {
    // server4 echoes `bye`, then closes.
    let echo = Server::start(SERVER4, &[]);
    let relay = relay(&echo.addr().to_string());
    let mut client = ChatClient::connect(relay.addr());
    client.send("bye");
    client.expect_line("bye");
    client.expect_eof();
}

#[test]
fn the_client_closing_ends_its_upstream_connection() {
    let listener = upstream_listener();
    let relay = relay(&listener.local_addr().unwrap().to_string());
    let mut client = ChatClient::connect(relay.addr());
    let mut upstream = accept(&listener);
    client.send("to the upstream");
    assert_eq!(read_line(&mut upstream), "to the upstream\n");
    upstream.get_mut().write_all(b"to the client\n").unwrap();
    client.expect_line("to the client");
    drop(client);
    assert_eq!(read_line(&mut upstream), "", "the end of the stream");
}

#[test]
fn a_client_that_does_not_read_slows_its_upstream_and_loses_nothing() {
    let listener = upstream_listener();
    let relay = relay(&listener.local_addr().unwrap().to_string());
    let mut client = connect(relay.addr());
    let mut upstream = accept(&listener).into_inner();

    // The upstream writes and the client does not read. The socket buffers
    // fill, then the relay's queue to the client, to high water; then the
    // relay stops reading the upstream, and TCP stops it: a write blocks.
    // Without that hold, the relay would read on and queue until the
    // client's queue passed max_output (1 MiB), and cut the client off.
    upstream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let lines: String = (0..8_000).map(|i| format!("line {i}\n")).collect();
    let sent = write_until_stopped(&mut upstream, lines.as_bytes(), "the upstream");
    // Once the client reads, it gets every whole line the upstream wrote
    // (a line the last write cut short waits for its end).
    let end = sent
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    expect_bytes(&mut client, &sent[..end], TIMEOUT);
}
