//! The chat servers' web endpoint (`--web-port`) from the outside: a
//! WebSocket client (tungstenite's, as a browser would be) in the room with
//! a TCP one, the HTTP answers, the `Origin` check, and clients that break
//! the WebSocket rules (frames tungstenite's client would not send are sent
//! as `Message::Frame`, which it only masks, or as bytes) or never read.
//! Each scenario runs on both chat drivers: server2 (a thread per client)
//! and server3 (the event loop). tests/attack_web.rs has the attacks.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{connect, ChatClient, Server, TIMEOUT};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::{Error, HandshakeError, Message, WebSocket};

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// Starts `bin` with a web port; returns it and the web port's address.
fn start(bin: &str) -> (Server, SocketAddr) {
    start_with(bin, &[])
}

/// Starts `bin` with a web port and `args`.
fn start_with(bin: &str, args: &[&str]) -> (Server, SocketAddr) {
    let server = Server::start(bin, &[&["--web-port", "0"][..], args].concat());
    let web = server.web_addr();
    (server, web)
}

/// Opens the WebSocket at `addr`, every read and write bounded.
fn open(addr: SocketAddr) -> WebSocket<TcpStream> {
    let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), connect(addr))
        .expect("the WebSocket handshake");
    socket
}

/// Opens the WebSocket at `addr` and joins the room; returns it and its nick.
fn join(addr: SocketAddr) -> (WebSocket<TcpStream>, String) {
    let mut socket = open(addr);
    let nick = greet(&mut socket);
    (socket, nick)
}

/// Says `Hi` on `socket`, expects `Hello` and the welcome, and returns the
/// nick the welcome gives.
fn greet(socket: &mut WebSocket<TcpStream>) -> String {
    socket.send(Message::text("Hi")).unwrap();
    assert_eq!(text(socket), "Hello");
    let welcome = text(socket);
    welcome
        .strip_prefix("* welcome, you are ")
        .and_then(|rest| rest.split_once(';'))
        .map(|(nick, _)| nick.to_owned())
        .unwrap_or_else(|| panic!("expected the welcome, got {welcome:?}"))
}

/// Sends one frame of a text message: the first if `starts`, the last if
/// `ends`. tungstenite masks it, and checks nothing of its text.
fn fragment(socket: &mut WebSocket<TcpStream>, text: &[u8], starts: bool, ends: bool) {
    let opcode = OpCode::Data(if starts { Data::Text } else { Data::Continue });
    let frame = Frame::message(text.to_vec(), opcode, ends);
    socket.send(Message::Frame(frame)).expect("send a frame");
}

/// Reads on to the server's close frame, which must carry `code`.
fn expect_close(socket: &mut WebSocket<TcpStream>, code: CloseCode, what: &str) {
    loop {
        match socket.read() {
            Ok(Message::Close(Some(close))) => {
                assert_eq!(close.code, code, "{what}");
                return;
            }
            // The chat's own lines before the close (none are expected
            // but the greeting's).
            Ok(Message::Text(_)) => {}
            other => panic!("{what}: expected a close frame with {code}, got {other:?}"),
        }
    }
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

#[test]
fn text_that_is_not_utf8_is_closed_with_1007() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = start(bin);
        let (mut terminal, _) = ChatClient::join(server.addr());
        let (mut browser, nick) = join(web);
        terminal.expect_line(&format!("* {nick} joined"));
        // A character split between two fragments is text once they are
        // put together: not an error.
        fragment(&mut browser, b"caf\xc3", true, false);
        fragment(&mut browser, b"\xa9", false, true);
        terminal.expect_line(&format!("<{nick}> caf\u{e9}"));
        // One frame that is not UTF-8: a TCP line would be cleaned (U+FFFD),
        // a text message that is not text breaks the protocol.
        fragment(&mut browser, b"bad \xff\xfe", true, true);
        expect_close(&mut browser, CloseCode::Invalid, bin);
        terminal.expect_line(&format!("* {nick} left"));
        // The same in fragments: each is a fine start, together not text.
        let (mut browser, _) = join(web);
        fragment(&mut browser, b"ok \xe2\x82", true, false);
        fragment(&mut browser, b"\xff", false, true);
        expect_close(&mut browser, CloseCode::Invalid, bin);
    }
}

#[test]
fn a_message_over_the_line_limit_is_closed_with_1009() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = start_with(bin, &["--max-line", "100"]);
        let (mut terminal, _) = ChatClient::join(server.addr());
        let (mut browser, nick) = join(web);
        terminal.expect_line(&format!("* {nick} joined"));
        // At the limit: a line.
        fragment(&mut browser, &[b'a'; 100], true, true);
        terminal.expect_line(&format!("<{nick}> {}", "a".repeat(100)));
        // One byte over, in one frame.
        fragment(&mut browser, &[b'a'; 101], true, true);
        expect_close(&mut browser, CloseCode::Size, bin);
        // Over in fragments that are each under it.
        let (mut browser, _) = join(web);
        fragment(&mut browser, &[b'a'; 40], true, false);
        fragment(&mut browser, &[b'a'; 40], false, false);
        fragment(&mut browser, &[b'a'; 40], false, true);
        expect_close(&mut browser, CloseCode::Size, bin);
        // A frame header that announces 65,536 bytes, and none of them:
        // refused from the header alone, without waiting for the payload.
        let (mut browser, _) = join(web);
        let header = [0x81, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        browser.get_mut().write_all(&header).unwrap();
        expect_close(&mut browser, CloseCode::Size, bin);
    }
}

/// Opens `/ws` at `addr` as a page from `origin` would; returns the HTTP
/// status of the answer.
fn open_from(addr: SocketAddr, origin: &str) -> StatusCode {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let origin = HeaderValue::from_str(origin).unwrap();
    request.headers_mut().insert("Origin", origin);
    match tungstenite::client(request, connect(addr)) {
        Ok((_, response)) => response.status(),
        Err(HandshakeError::Failure(Error::Http(response))) => response.status(),
        Err(e) => panic!("the handshake failed: {e}"),
    }
}

#[test]
fn a_page_of_another_origin_is_forbidden_unless_allowed() {
    for bin in [SERVER2, SERVER3] {
        let (_server, web) = start(bin);
        let own = format!("http://{web}");
        assert_eq!(open_from(web, &own), StatusCode::SWITCHING_PROTOCOLS);
        let evil = "https://evil.example";
        assert_eq!(open_from(web, evil), StatusCode::FORBIDDEN, "{bin}");
        let other_port = format!("http://127.0.0.1:{}", web.port() ^ 1);
        assert_eq!(open_from(web, &other_port), StatusCode::FORBIDDEN);
        let args = ["--web-origin", "https://chat.example"];
        let (_server, web) = start_with(bin, &args);
        let allowed = open_from(web, "https://Chat.Example");
        assert_eq!(allowed, StatusCode::SWITCHING_PROTOCOLS, "{bin}");
        assert_eq!(open_from(web, evil), StatusCode::FORBIDDEN, "{bin}");
    }
}

#[test]
fn a_ping_is_answered_with_a_pong_of_the_same_bytes() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = start(bin);
        let mut browser = open(web);
        // Before the greeting, and with any bytes, up to the 125 allowed.
        let payload: Vec<u8> = (0..125).map(|i| (i * 7) as u8).collect();
        browser.send(Message::Ping(payload.clone().into())).unwrap();
        match browser.read().expect("a pong") {
            Message::Pong(got) => assert_eq!(got, payload, "{bin}"),
            other => panic!("{bin}: expected a pong, got {other:?}"),
        }
        // Between the fragments of a message, as RFC 6455 allows: answered,
        // and the message still arrives whole.
        let nick = greet(&mut browser);
        let (mut terminal, _) = ChatClient::join(server.addr());
        text(&mut browser); // * user2 joined
        fragment(&mut browser, b"one ", true, false);
        browser
            .send(Message::Ping(b"in between".to_vec().into()))
            .unwrap();
        match browser.read().expect("a pong") {
            Message::Pong(got) => assert_eq!(got, b"in between".as_slice(), "{bin}"),
            other => panic!("{bin}: expected a pong, got {other:?}"),
        }
        fragment(&mut browser, b"message", false, true);
        terminal.expect_line(&format!("<{nick}> one message"));
    }
}

/// A web participant that never reads while the room talks is cut off at
/// the output limit (1 MiB queued for it), as a TCP one is, and the room
/// is told it left; a TCP participant and another web one chat on. With
/// flood control off, the talker goes as fast as the others read.
#[test]
fn a_web_reader_that_never_reads_is_cut_off_and_the_others_chat_on() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = start_with(bin, &["--flood-rate", "0"]);
        let (mut stuck, stuck_nick) = join(web);
        let (mut watcher, watcher_nick) = join(web);
        let (mut talker, talker_nick) = ChatClient::join(server.addr());
        assert_eq!(text(&mut watcher), format!("* {talker_nick} joined"));
        let left = format!("* {stuck_nick} left");
        // Up to 16 MiB in lines of 4000 bytes: sixteen times the limit,
        // and more than the loopback socket buffers take.
        let line = "x".repeat(3990);
        let lines = 4096;
        let mut cut_after = None;
        for i in 0..lines {
            talker.send(&format!("{i:05} {line}"));
            // The watcher keeps up, and paces the talker.
            loop {
                let got = text(&mut watcher);
                if got == left {
                    cut_after = Some(i);
                } else if got.starts_with(&format!("<{talker_nick}> {i:05} ")) {
                    break;
                }
            }
            if cut_after.is_some() {
                break;
            }
        }
        let cut_after = cut_after.unwrap_or_else(|| panic!("{bin}: never cut off"));
        eprintln!("{bin}: cut off after {cut_after} lines");
        talker.expect_line(&left);
        // The stuck one's connection ends, without a close frame (it is
        // not reading one), after less than it was sent.
        let mut got = Vec::new();
        stuck.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
        match stuck.get_mut().read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{bin}: the stuck reader's connection did not end: {e}"),
        }
        assert!(got.len() < (cut_after + 1) * 4000, "{bin}: got it all");
        // The others chat on, both ways.
        talker.send("still here");
        assert_eq!(text(&mut watcher), format!("<{talker_nick}> still here"));
        watcher.send(Message::text("me too")).unwrap();
        talker.expect_line(&format!("<{watcher_nick}> me too"));
    }
}
