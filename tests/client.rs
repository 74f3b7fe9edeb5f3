//! The client binary against server4, with its stdin piped.

mod common;

use std::net::TcpListener;

use common::{run, Server};

const CLIENT: &str = env!("CARGO_BIN_EXE_client");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// Runs the client against a fresh echo server and returns its status and
/// stdout lines.
fn chat(stdin: &str) -> (Option<i32>, Vec<String>) {
    let server = Server::start(SERVER4, &[]);
    let addr = server.addr();
    let out = run(
        CLIENT,
        &[&addr.ip().to_string(), &addr.port().to_string()],
        stdin.as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code(),
        stdout.lines().map(String::from).collect(),
    )
}

#[test]
fn sends_hi_then_stdin_up_to_bye() {
    let (status, lines) = chat("hello\nbye\nnot sent\n");
    assert_eq!(status, Some(0));
    assert_eq!(lines, ["Hi", "hello", "bye"]);
}

#[test]
fn says_bye_itself_at_the_end_of_stdin() {
    let (status, lines) = chat("hello\nno newline");
    assert_eq!(status, Some(0));
    assert_eq!(lines, ["Hi", "hello", "no newline", "bye"]);
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
