//! The chat servers' web endpoint (`--web-port`) from the outside: a
//! WebSocket client (tungstenite's, as a browser would be) in the room with
//! a TCP one, the HTTP answers, and a client that breaks the WebSocket rules.
//! Each scenario runs on both chat drivers: server2 (a thread per client)
//! and server3 (the event loop).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::{connect, ChatClient, Server};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// Starts `bin` with a web port; returns it and the web port's address.
fn start(bin: &str) -> (Server, SocketAddr) {
    start_with(bin, &[])
}

/// Starts `bin` with a web port and `args`.
fn start_with(bin: &str, args: &[&str]) -> (Server, SocketAddr) {
    // A port free a moment ago: the server's announcement is checked
    // against it, so a port taken meanwhile fails loudly, not wrongly.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let port_arg = port.to_string();
    let server = Server::start(bin, &[&["--web-port", &port_arg][..], args].concat());
    server.expect_transcript(&format!("listening on http://127.0.0.1:{port}/"));
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Opens the WebSocket at `addr`, every read and write bounded.
fn open(addr: SocketAddr) -> WebSocket<TcpStream> {
    let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), connect(addr))
        .expect("the WebSocket handshake");
    socket
}

/// The next message, which must be text.
fn text(socket: &mut WebSocket<TcpStream>) -> String {
    match socket.read().expect("a message") {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends `request` on a connection of its own; returns all of the answer,
/// up to the server's close.
fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(request).expect("write");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the answer, then the end");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_web_client_and_a_tcp_client_chat_both_ways() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = start(bin);
        let mut browser = open(web);
        browser.send(Message::text("Hi")).unwrap();
        assert_eq!(text(&mut browser), "Hello");
        assert!(text(&mut browser).starts_with("* welcome, you are user1;"));
        let (mut terminal, nick) = ChatClient::join(server.addr());
        assert_eq!(text(&mut browser), format!("* {nick} joined"));
        browser.send(Message::text("hello from a browser")).unwrap();
        terminal.expect_line("<user1> hello from a browser");
        terminal.send("hello from a terminal");
        assert_eq!(
            text(&mut browser),
            format!("<{nick}> hello from a terminal")
        );
    }
}

#[test]
fn a_burst_past_the_flood_budget_all_arrives_in_order() {
    for bin in [SERVER2, SERVER3] {
        let args = ["--flood-burst", "5", "--flood-rate", "200"];
        let (server, web) = start_with(bin, &args);
        let (mut terminal, _) = ChatClient::join(server.addr());
        let mut browser = open(web);
        browser.send(Message::text("Hi")).unwrap();
        assert_eq!(text(&mut browser), "Hello");
        terminal.line(); // * user2 joined
        for n in 0..40 {
            browser.write(Message::text(format!("line {n}"))).unwrap();
        }
        browser.flush().unwrap();
        for n in 0..40 {
            terminal.expect_line(&format!("<user2> line {n}"));
        }
    }
}

#[test]
fn a_stop_is_the_shutdown_notice_then_a_close_frame_1001() {
    for bin in [SERVER2, SERVER3] {
        let (mut server, web) = start(bin);
        let mut browser = open(web);
        browser.send(Message::text("Hi")).unwrap();
        assert_eq!(text(&mut browser), "Hello");
        text(&mut browser); // the welcome
        server.sigterm();
        assert_eq!(text(&mut browser), "* server shutting down");
        match browser.read().expect("a close frame") {
            Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Away, "{bin}"),
            other => panic!("{bin}: expected a close frame, got {other:?}"),
        }
        // Gone at once, rather than at the end of the server's lingering close.
        drop(browser);
        server.expect_exit_success();
    }
}

#[test]
fn http_errors() {
    for bin in [SERVER2, SERVER3] {
        let (_server, web) = start(bin);
        let cases: [(&[u8], &str); 4] = [
            (
                b"GET /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                "404 Not Found",
            ),
            (
                b"PUT / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                "405 Method Not Allowed",
            ),
            (b"\x16\x03\x01\x00\x05hello\r\n\r\n", "400 Bad Request"),
            (
                &[b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 9000]].concat(),
                "431 ",
            ),
        ];
        for (request, status) in cases {
            let answer = ask(web, request);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{bin}: {answer}"
            );
        }
        let page = ask(web, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{bin}: {page}");
    }
}

#[test]
fn an_unmasked_frame_is_closed_with_1002() {
    for bin in [SERVER2, SERVER3] {
        let (_server, web) = start(bin);
        let mut socket = open(web);
        // A text frame `Hi` as a server would send it: no mask.
        socket.get_mut().write_all(b"\x81\x02Hi").unwrap();
        match socket.read().expect("a close frame") {
            Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Protocol, "{bin}"),
            other => panic!("{bin}: expected a close frame, got {other:?}"),
        }
    }
}
