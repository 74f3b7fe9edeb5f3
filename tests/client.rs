//! The client binary against every server, with its stdin piped.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{run, ChatClient, Program, Server};

const CLIENT: &str = env!("CARGO_BIN_EXE_client");
const SERVER1: &str = env!("CARGO_BIN_EXE_server1");
const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// What the client prints for a chat server that takes it as `user1`.
const WELCOME: &str = "* welcome, you are user1; /help lists commands";
/// server1's answer to a second client.
const BUSY: &str = "serving another client, try again later";

/// The client's arguments for `addr`, then `more`.
fn args(addr: SocketAddr, more: &[&str]) -> Vec<String> {
    let mut args = vec![addr.ip().to_string(), addr.port().to_string()];
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// Runs the client against `server` and returns its status and stdout lines.
fn session(server: &Server, stdin: &str) -> (Option<i32>, Vec<String>) {
    let out = run(CLIENT, &args(server.addr(), &[]), stdin.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code(),
        stdout.lines().map(String::from).collect(),
    )
}

#[test]
fn sends_hi_then_stdin_up_to_bye() {
    let server = Server::start(SERVER4, &[]);
    let (status, lines) = session(&server, "hello\nbye\nnot sent\n");
    assert_eq!(status, Some(0));
    assert_eq!(lines, ["Hi", "hello", "bye"]);
}

#[test]
fn says_bye_itself_at_the_end_of_stdin() {
    let server = Server::start(SERVER4, &[]);
    let (status, lines) = session(&server, "hello\nno newline");
    assert_eq!(status, Some(0));
    assert_eq!(lines, ["Hi", "hello", "no newline", "bye"]);
}

#[test]
fn chats_with_every_chat_server() {
    for bin in [SERVER1, SERVER2, SERVER3] {
        let server = Server::start(bin, &[]);
        let (status, lines) = session(&server, "hello\nbye\n");
        assert_eq!(status, Some(0), "{bin}");
        assert_eq!(lines, ["Hello", WELCOME, "Bye"], "{bin}");
        server.expect_transcript("* user1 joined");
        server.expect_transcript("<user1> hello");
        server.expect_transcript("* user1 left");
    }
}

#[test]
fn a_busy_server_is_exit_status_3() {
    let server = Server::start(SERVER1, &[]);
    let (_first, _) = ChatClient::join(server.addr());
    let out = run(CLIENT, &args(server.addr(), &[]), b"hello\n");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("error: server busy: {BUSY}\n")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn retry_waits_for_a_busy_server() {
    let server = Server::start(SERVER1, &[]);
    let (mut first, _) = ChatClient::join(server.addr());
    let args = args(server.addr(), &["--retry", "10"]);
    let mut client = Program::start(CLIENT, &args, b"hello\nbye\n");
    // Refused once: only now does the first client leave.
    client.expect_stderr(&format!("server busy: {BUSY}; trying again for up to 10s"));
    first.send("bye");
    first.expect_line("Bye");
    first.expect_eof();
    drop(first);

    let out = client.finish();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let welcome = "* welcome, you are user2; /help lists commands";
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["Hello", welcome, "Bye"]
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn retry_gives_up_after_its_time() {
    let server = Server::start(SERVER1, &[]);
    let (_first, _) = ChatClient::join(server.addr());
    let args = args(server.addr(), &["--retry", "1"]);
    let started = Instant::now();
    let out = run(CLIENT, &args, b"");
    assert_eq!(out.status.code(), Some(3));
    // It stops trying when a pause would take it past the second.
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "server busy: {BUSY}; trying again for up to 1s\n\
             error: server busy: {BUSY}\n"
        )
    );
}

#[test]
fn a_closed_port_is_a_one_line_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port().to_string()
    };
    let out = run(CLIENT, &["127.0.0.1", &port], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr,
        format!("error: cannot connect to 127.0.0.1:{port}: connection refused\n")
    );
}
