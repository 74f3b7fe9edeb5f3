//! The client binary against every server, with its stdin piped and in a
//! pseudo-terminal, and against small servers of the tests' own: over TLS,
//! with a line limit, without line ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::tls::Certs;
use common::{run, ChatClient, Program, Server, TIMEOUT};
use rexpect::process::wait::WaitStatus;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const CLIENT: &str = env!("CARGO_BIN_EXE_client");
const SERVER1: &str = env!("CARGO_BIN_EXE_server1");
const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// What the client prints for a chat server that takes it as `user1`.
const WELCOME: &str = "* welcome, you are user1; lines up to 4096 bytes; /help lists commands";
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
    let welcome = "* welcome, you are user2; lines up to 4096 bytes; /help lists commands";
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

// ---- servers of the tests' own ----

/// What a test server does with a line it read.
enum Reply {
    /// Sends these bytes, as they are, and reads on.
    Send(String),
    /// Sends these bytes, then closes the connection.
    Close(String),
}

/// A chat server in miniature: `Hello` and `welcome` to `Hi`, `Bye` and a
/// close to `bye`, and every other line back as `<you> LINE`.
fn chat_like(welcome: &'static str) -> impl FnMut(&str) -> Reply + Send + 'static {
    move |line| match line {
        "Hi" => Reply::Send(format!("Hello\n{welcome}\n")),
        "bye" => Reply::Close("Bye\n".into()),
        _ => Reply::Send(format!("<you> {line}\n")),
    }
}

/// Serves one connection on 127.0.0.1, over TLS with `tls`, in a thread:
/// reads lines and does with each what `answer` says, until it closes or
/// the client does. The thread returns the lines it read, without their
/// `\n`. Every read and write has [`TIMEOUT`].
fn serve_one(
    tls: Option<Arc<ServerConfig>>,
    answer: impl FnMut(&str) -> Reply + Send + 'static,
) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let served = thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        socket.set_write_timeout(Some(TIMEOUT)).expect("timeout");
        match tls {
            None => converse(socket, answer).0,
            Some(config) => {
                let conn = ServerConnection::new(config).expect("a server connection");
                let (read, mut stream) = converse(StreamOwned::new(conn, socket), answer);
                // A TLS server says it closes, so that the client can tell a
                // close from a cut.
                stream.conn.send_close_notify();
                let _ = stream.flush();
                read
            }
        }
    });
    (addr, served)
}

/// The conversation of [`serve_one`] on `stream`, which it gives back with
/// the lines read.
fn converse<S: Read + Write>(stream: S, mut answer: impl FnMut(&str) -> Reply) -> (Vec<String>, S) {
    let mut stream = BufReader::new(stream);
    let mut read = Vec::new();
    let mut line = String::new();
    // A failed read is the client gone (a failed handshake, for TLS).
    while matches!(stream.read_line(&mut line), Ok(n) if n > 0) {
        let text = line.trim_end_matches('\n').to_owned();
        line.clear();
        read.push(text.clone());
        let (bytes, close) = match answer(&text) {
            Reply::Send(bytes) => (bytes, false),
            Reply::Close(bytes) => (bytes, true),
        };
        let sent = stream.get_mut().write_all(bytes.as_bytes());
        if sent.and_then(|()| stream.get_mut().flush()).is_err() || close {
            break;
        }
    }
    (read, stream.into_inner())
}

/// The client's arguments for `--tls` with `--ca CA` (if any), then `more`.
fn tls_args(ca: Option<&Path>, more: &[&str]) -> Vec<String> {
    let mut args = vec!["--tls".to_owned()];
    if let Some(ca) = ca {
        args.extend(["--ca".to_owned(), ca.display().to_string()]);
    }
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// The lines of `bytes`, for comparing outputs.
fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(String::from)
        .collect()
}

/// The old welcome, which gives no line limit.
const PLAIN_WELCOME: &str =
    "* welcome, you are user1; lines up to 4096 bytes; /help lists commands";

// ---- TLS ----

#[test]
fn chats_over_tls_with_the_ca() {
    let certs = Certs::new();
    let (addr, served) = serve_one(Some(certs.server_config()), chat_like(PLAIN_WELCOME));
    let port = addr.port().to_string();
    let args = tls_args(Some(&certs.ca()), &["localhost", &port]);
    let out = run(CLIENT, &args, b"hello\nbye\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out.stdout),
        ["Hello", PLAIN_WELCOME, "<you> hello", "Bye"]
    );
    assert_eq!(served.join().unwrap(), ["Hi", "hello", "bye"]);
}

#[test]
fn without_ca_the_system_roots_decide() {
    // rustls-native-certs reads SSL_CERT_FILE in place of the system's
    // store when it is set: the system's roots, made to hold our CA.
    let certs = Certs::new();
    let (addr, served) = serve_one(Some(certs.server_config()), chat_like(PLAIN_WELCOME));
    let out = Command::new(CLIENT)
        .args(tls_args(None, &["127.0.0.1", &addr.port().to_string()]))
        .env("SSL_CERT_FILE", certs.ca())
        .stdin(Stdio::null())
        .output()
        .expect("run the client");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&out.stdout), ["Hello", PLAIN_WELCOME, "Bye"]);
    assert_eq!(served.join().unwrap(), ["Hi", "bye"]);
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let certs = Certs::new();
    let stranger = Certs::new();
    let (addr, served) = serve_one(Some(certs.server_config()), chat_like(PLAIN_WELCOME));
    let port = addr.port().to_string();
    let args = tls_args(Some(&stranger.ca()), &["127.0.0.1", &port]);
    let out = run(CLIENT, &args, b"hello\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: tls: certificate is not trusted (unknown issuer)\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(served.join().unwrap(), Vec::<String>::new());
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    // The host is the name checked, unless --tls-name gives another.
    let certs = Certs::for_names(&["chat.test"]);
    for (more, name) in [
        (&[][..], "127.0.0.1"),
        (&["--tls-name", "example.org"][..], "example.org"),
    ] {
        let (addr, served) = serve_one(Some(certs.server_config()), chat_like(PLAIN_WELCOME));
        let mut args = tls_args(Some(&certs.ca()), more);
        args.extend(["127.0.0.1".to_owned(), addr.port().to_string()]);
        let out = run(CLIENT, &args, b"hello\n");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("error: tls: certificate is not valid for name \"{name}\"\n")
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert_eq!(served.join().unwrap(), Vec::<String>::new());
    }
}

#[test]
fn tls_name_gives_the_name_to_check() {
    let certs = Certs::for_names(&["chat.test"]);
    let (addr, served) = serve_one(Some(certs.server_config()), chat_like(PLAIN_WELCOME));
    let port = addr.port().to_string();
    let more = ["--tls-name", "chat.test", "127.0.0.1", &port];
    let out = run(CLIENT, &tls_args(Some(&certs.ca()), &more), b"hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out.stdout),
        ["Hello", PLAIN_WELCOME, "<you> hello", "Bye"]
    );
    assert_eq!(served.join().unwrap(), ["Hi", "hello", "bye"]);
}

#[test]
fn tls_options_need_tls() {
    let out = run(CLIENT, &["--ca", "ca.pem", "127.0.0.1", "1"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: the following required arguments were not provided:")
            && stderr.contains("--tls"),
        "{stderr}"
    );
}

// ---- the line limit ----

#[test]
fn a_line_over_the_announced_limit_is_not_sent() {
    let welcome = "* welcome, you are user1; lines up to 8 bytes; lines up to 4096 bytes; /help lists commands";
    let (addr, served) = serve_one(None, chat_like(welcome));
    let stdin = b"12345678\n123456789\nafter\nbye\n";
    let out = run(CLIENT, &args(addr, &[]), stdin);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "not sent: the line is 9 bytes, and the server takes lines up to 8 bytes\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out.stdout),
        ["Hello", welcome, "<you> 12345678", "<you> after", "Bye"]
    );
    assert_eq!(served.join().unwrap(), ["Hi", "12345678", "after", "bye"]);
}

#[test]
fn without_a_limit_in_the_welcome_the_limit_is_4096() {
    let (addr, served) = serve_one(None, chat_like(PLAIN_WELCOME));
    let longest = "x".repeat(4096);
    let stdin = format!("{longest}\n{longest}x\nbye\n");
    let out = run(CLIENT, &args(addr, &[]), stdin.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "not sent: the line is 4097 bytes, and the server takes lines up to 4096 bytes\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(served.join().unwrap(), ["Hi", &longest, "bye"]);
}

#[test]
fn in_a_terminal_a_typed_or_pasted_line_over_the_limit_is_not_sent() {
    let welcome = "* welcome, you are user1; lines up to 8 bytes; lines up to 4096 bytes; /help lists commands";
    let (addr, served) = serve_one(None, chat_like(welcome));
    let mut command = Command::new(CLIENT);
    command.args(args(addr, &[])).env("TERM", "xterm");
    let timeout_ms = TIMEOUT.as_millis() as u64;
    let mut terminal = rexpect::session::spawn_command(command, Some(timeout_ms)).unwrap();
    terminal.exp_string(welcome).unwrap();
    let refused = "not sent: the line is 9 bytes, and the server takes lines up to 8 bytes";
    terminal.send_line("123456789").unwrap();
    terminal.exp_string(refused).unwrap();
    // A bracketed paste of two lines: each is a line to the server.
    terminal.send("\x1b[200~1234\n5678\x1b[201~").unwrap();
    terminal.send_line("").unwrap();
    terminal.exp_string("<you> 5678").unwrap();
    terminal
        .send("\x1b[200~12345678\n123456789\x1b[201~")
        .unwrap();
    terminal.send_line("").unwrap();
    terminal.exp_string(refused).unwrap();
    terminal.send_line("bye").unwrap();
    terminal.exp_eof().unwrap();
    assert_eq!(served.join().unwrap(), ["Hi", "1234", "5678", "bye"]);
}

// ---- the server going away ----

/// Runs the client with `args` and a stdin that stays open, as a person's
/// terminal does, until it exits by itself (within [`TIMEOUT`], or it is
/// killed and the test fails); `meanwhile` runs once it has started.
fn run_with_stdin_open(args: &[String], meanwhile: impl FnOnce()) -> Output {
    let mut client = Command::new(CLIENT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let stdin = client.stdin.take();
    meanwhile();
    let deadline = Instant::now() + TIMEOUT;
    while client.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = client.kill();
            panic!("the client did not exit by itself");
        }
        // std cannot wait for a child with a timeout; polling is cheap.
        thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    client.wait_with_output().unwrap()
}

#[test]
fn the_server_closing_first_is_exit_status_4() {
    let mut server = Server::start(SERVER3, &[]);
    let out = run_with_stdin_open(&args(server.addr(), &[]), || {
        server.expect_transcript("* user1 joined");
        server.console("/kick user1");
        server.expect_transcript("* user1 was kicked");
    });
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        lines(&out.stdout),
        ["Hello", WELCOME, "ERR kicked by the operator"]
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "the server closed the connection\n"
    );
}

#[test]
fn over_tls_too_the_server_closing_first_is_exit_status_4() {
    let certs = Certs::new();
    let config = Some(certs.server_config());
    let (addr, served) = serve_one(config, |line| match line {
        "Hi" => Reply::Close(format!("Hello\n{PLAIN_WELCOME}\n")),
        _ => Reply::Send(String::new()),
    });
    let port = addr.port().to_string();
    let out = run_with_stdin_open(&tls_args(Some(&certs.ca()), &["127.0.0.1", &port]), || {});
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(lines(&out.stdout), ["Hello", PLAIN_WELCOME]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "the server closed the connection\n"
    );
    assert_eq!(served.join().unwrap(), ["Hi"]);
}

#[test]
fn in_a_terminal_the_server_closing_ends_the_prompt() {
    let mut server = Server::start(SERVER3, &[]);
    let mut command = Command::new(CLIENT);
    command.args(args(server.addr(), &[])).env("TERM", "xterm");
    let timeout_ms = TIMEOUT.as_millis() as u64;
    let mut terminal = rexpect::session::spawn_command(command, Some(timeout_ms)).unwrap();
    terminal.exp_string(WELCOME).unwrap();
    terminal.exp_string("> ").unwrap();
    server.expect_transcript("* user1 joined");
    terminal.send_line("hello").unwrap();
    server.expect_transcript("<user1> hello");

    // Nothing is typed from here on: the client ends by itself.
    server.console("/kick user1");
    terminal.exp_string("ERR kicked by the operator").unwrap();
    terminal
        .exp_string("the server closed the connection")
        .unwrap();
    terminal.exp_eof().unwrap();
    match terminal.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 4),
        other => panic!("the client ended with {other:?}"),
    }
}

#[test]
fn in_a_terminal_over_tls_a_session_ends_with_bye() {
    let certs = Certs::new();
    let (addr, served) = serve_one(Some(certs.server_config()), chat_like(PLAIN_WELCOME));
    let port = addr.port().to_string();
    let mut command = Command::new(CLIENT);
    command
        .args(tls_args(Some(&certs.ca()), &["localhost", &port]))
        .env("TERM", "xterm");
    let timeout_ms = TIMEOUT.as_millis() as u64;
    let mut terminal = rexpect::session::spawn_command(command, Some(timeout_ms)).unwrap();
    terminal.exp_string(PLAIN_WELCOME).unwrap();
    terminal.exp_string("> ").unwrap();
    terminal.send_line("hello").unwrap();
    terminal.exp_string("<you> hello").unwrap();
    terminal.send_line("bye").unwrap();
    terminal.exp_string("Bye").unwrap();
    terminal.exp_eof().unwrap();
    match terminal.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("the client ended with {other:?}"),
    }
    assert_eq!(served.join().unwrap(), ["Hi", "hello", "bye"]);
}

// ---- replies without a line end ----

#[test]
fn a_reply_without_a_newline_is_shown() {
    // The servers of the original Python exercise answer with one send and
    // no line end, then wait.
    let (addr, served) = serve_one(None, |line| match line {
        "Hi" => Reply::Send("hello".into()),
        "bye" => Reply::Close(String::new()),
        _ => Reply::Send("fine".into()),
    });
    let out = run(CLIENT, &args(addr, &[]), b"how are you\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&out.stdout), ["hello", "fine"]);
    assert_eq!(served.join().unwrap(), ["Hi", "how are you", "bye"]);
}

#[test]
fn a_line_without_an_end_is_shown_in_pieces_of_64_kib() {
    let (addr, served) = serve_one(None, |line| match line {
        "Hi" => Reply::Send("x".repeat(64 * 1024 + 5)),
        _ => Reply::Close(String::new()),
    });
    let out = run(CLIENT, &args(addr, &[]), b"");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&out.stdout), ["x".repeat(64 * 1024), "x".repeat(5)]);
    assert_eq!(served.join().unwrap(), ["Hi", "bye"]);
}
