//! The web endpoint on the in-memory harness, serving the chat: HTTP,
//! the WebSocket rules, and web users in the room beside line clients.

use std::io::{self, Cursor};
use std::time::Duration;

use reactor::testing::Harness;
use reactor::{CloseReason, ConnId, Handler, ListenerId, Refusal};
use tungstenite::protocol::frame::FrameHeader;

use super::frames::masked;
use super::*;
use crate::chat::{Chat, ChatConfig, Client};

/// The web listener; the line clients come from `ListenerId::nth(0)`.
const WEB: ListenerId = ListenerId::nth(1);

/// A handshake from a page of the server's own origin.
const HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: chat:80\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                         Origin: http://chat:80\r\n\r\n";

const TIMEOUT: Duration = Duration::from_secs(10);

fn web_with(config: ChatConfig) -> Harness<Web<Chat>> {
    let max_line = config.max_line;
    let chat = Chat::new(config, Box::new(io::sink()));
    let web = WebConfig {
        listeners: vec![WEB],
        policy: Policy {
            origins: vec!["https://friend.example".into()],
            keep_alive: true,
        },
        handshake_timeout: TIMEOUT,
        max_line,
    };
    Harness::new(Web::new(chat, web))
}

fn web() -> Harness<Web<Chat>> {
    web_with(ChatConfig::default())
}

/// What a server sent a WebSocket, a frame at a time.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Pong(Vec<u8>),
    Close(Option<u16>),
}

/// Takes what `id` was sent, as frames.
fn frames(h: &mut Harness<Web<Chat>>, id: ConnId) -> Vec<Got> {
    let bytes = h.take(id);
    let mut cursor = Cursor::new(&bytes[..]);
    let mut got = Vec::new();
    while (cursor.position() as usize) < bytes.len() {
        let (header, len) = FrameHeader::parse(&mut cursor)
            .unwrap()
            .expect("whole frames");
        assert!(header.mask.is_none() && header.is_final, "{header:?}");
        let start = cursor.position() as usize;
        let payload = bytes[start..start + len as usize].to_vec();
        cursor.set_position((start + payload.len()) as u64);
        got.push(match u8::from(header.opcode) {
            0x1 => Got::Text(String::from_utf8(payload).unwrap()),
            0xa => Got::Pong(payload),
            0x8 => Got::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            op => panic!("opcode {op}"),
        });
    }
    got
}

/// The texts of the messages `id` was sent.
fn texts(h: &mut Harness<Web<Chat>>, id: ConnId) -> Vec<String> {
    frames(h, id)
        .into_iter()
        .map(|got| match got {
            Got::Text(text) => text,
            other => panic!("expected text, got {other:?}"),
        })
        .collect()
}

/// A text message in one frame.
fn text(line: &str) -> Vec<u8> {
    masked(0x81, line.as_bytes())
}

/// A WebSocket, opened: the `101` taken.
fn socket(h: &mut Harness<Web<Chat>>) -> ConnId {
    let id = h.connect_to(WEB);
    h.receive(id, HANDSHAKE);
    let answer = h.take_text(id);
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    id
}

/// A WebSocket in the room: greeted, its welcome taken.
fn joined(h: &mut Harness<Web<Chat>>) -> ConnId {
    let id = socket(h);
    h.receive(id, text("Hi"));
    assert_eq!(texts(h, id)[0], "Hello");
    id
}

/// A line client in the room, its welcome taken.
fn line_client(h: &mut Harness<Web<Chat>>) -> ConnId {
    let id = h.connect();
    h.receive(id, "Hi\n");
    assert!(h.take_text(id).starts_with("Hello\n"));
    id
}

#[test]
fn a_web_user_and_a_line_user_chat_both_ways() {
    let mut h = web();
    let browser = joined(&mut h);
    let telnet = line_client(&mut h);
    assert_eq!(texts(&mut h, browser), ["* user2 joined"]);
    h.receive(browser, text("hello from the web"));
    assert_eq!(h.take_text(telnet), "<user1> hello from the web\n");
    h.receive(telnet, "hello from a terminal\n");
    assert_eq!(texts(&mut h, browser), ["<user2> hello from a terminal"]);
    h.receive(browser, text("/who"));
    assert_eq!(texts(&mut h, browser), ["* 2 online: user1, user2"]);
}

#[test]
fn frames_right_behind_the_handshake_are_read() {
    let mut h = web();
    let id = h.connect_to(WEB);
    h.receive(id, [HANDSHAKE.as_bytes(), &text("Hi")].concat());
    let answer = h.take(id);
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&answer[at..at + 7], b"\x81\x05Hello");
}

#[test]
fn a_broadcast_is_framed_once_for_every_web_user() {
    let mut h = web();
    let sockets: Vec<ConnId> = (0..3).map(|_| joined(&mut h)).collect();
    let telnet = line_client(&mut h);
    for &id in &sockets {
        h.take(id);
    }
    h.receive(telnet, "to all\n");
    for &id in &sockets {
        assert_eq!(texts(&mut h, id), ["<user4> to all"]);
    }
}

#[test]
fn a_fragmented_message_is_one_line_and_pings_between_are_answered() {
    let mut h = web();
    let id = socket(&mut h);
    h.receive(id, masked(0x01, b"H"));
    h.receive(id, masked(0x89, b"are you there"));
    assert_eq!(frames(&mut h, id), [Got::Pong(b"are you there".to_vec())]);
    h.receive(id, masked(0x00, b""));
    h.receive(id, masked(0x80, b"i"));
    assert_eq!(texts(&mut h, id)[0], "Hello");
    h.receive(id, masked(0x8a, b"unasked"));
    assert_eq!(frames(&mut h, id), [], "a pong is not answered");
}

#[test]
fn protocol_errors_close_with_their_codes() {
    let cases: &[(&str, Vec<Vec<u8>>, u16)] = &[
        ("unmasked", vec![b"\x81\x02Hi".to_vec()], 1002),
        ("a reserved bit", vec![masked(0xc1, b"Hi")], 1002),
        ("a reserved opcode", vec![masked(0x83, b"Hi")], 1002),
        ("a continuation of nothing", vec![masked(0x80, b"Hi")], 1002),
        (
            "a start inside a message",
            vec![masked(0x01, b"H"), masked(0x81, b"i")],
            1002,
        ),
        ("a long ping", vec![masked(0x89, &[b'x'; 126])], 1002),
        ("a fragmented ping", vec![masked(0x09, b"x")], 1002),
        ("a one-byte close", vec![masked(0x88, b"\x03")], 1002),
        ("not UTF-8", vec![masked(0x81, b"H\xffi")], 1007),
        (
            "UTF-8 split by fragments",
            vec![masked(0x01, b"\xc3"), masked(0x80, b"")],
            1007,
        ),
        ("two lines in one", vec![masked(0x81, b"Hi\nbye")], 1007),
        ("binary", vec![masked(0x82, b"Hi")], 1003),
        ("too long", vec![masked(0x81, &[b'x'; 4097])], 1009),
        (
            "too long in fragments",
            vec![masked(0x01, &[b'x'; 4000]), masked(0x80, &[b'x'; 97])],
            1009,
        ),
    ];
    for (what, frames, code) in cases {
        let mut h = web();
        let id = socket(&mut h);
        for frame in frames {
            h.receive(id, frame);
        }
        assert_eq!(
            super::tests::frames(&mut h, id),
            [Got::Close(Some(*code))],
            "{what}"
        );
        assert_eq!(h.closed(id), Some(CloseReason::Requested), "{what}");
    }
}

#[test]
fn a_message_of_the_line_limit_is_a_line() {
    let mut h = web();
    let id = joined(&mut h);
    let other = line_client(&mut h);
    h.take(id);
    let long = "x".repeat(4096);
    h.receive(id, masked(0x01, &long.as_bytes()[..4000]));
    h.receive(id, masked(0x80, &long.as_bytes()[4000..]));
    assert_eq!(h.take_text(other), format!("<user1> {long}\n"));
}

#[test]
fn a_close_is_echoed_and_the_user_leaves() {
    let mut h = web();
    let other = line_client(&mut h);
    let id = joined(&mut h);
    h.take(other);
    h.receive(id, masked(0x88, b"\x03\xe8going"));
    assert_eq!(frames(&mut h, id), [Got::Close(Some(1000))]);
    assert_eq!(h.closed(id), Some(CloseReason::Requested));
    assert_eq!(h.take_text(other), "* user2 left\n");
    let quiet = socket(&mut h);
    h.receive(quiet, masked(0x88, b""));
    assert_eq!(
        frames(&mut h, quiet),
        [Got::Close(None)],
        "no code, none echoed"
    );
}

#[test]
fn the_chat_closing_a_web_user_is_a_close_frame() {
    let mut h = web();
    let id = joined(&mut h);
    h.receive(id, text("bye"));
    assert_eq!(
        frames(&mut h, id),
        [Got::Text("Bye".into()), Got::Close(Some(1000))]
    );
    let rude = socket(&mut h);
    h.receive(rude, text("hello?"));
    let got = frames(&mut h, rude);
    assert_eq!(
        got,
        [Got::Text("ERR say Hi first".into()), Got::Close(Some(1008))]
    );
    assert_eq!(h.closed(rude), Some(CloseReason::Requested));
}

#[test]
fn the_shutdown_notice_is_followed_by_a_close_frame() {
    let mut h = web();
    let id = joined(&mut h);
    let greeting = socket(&mut h);
    h.stop();
    assert_eq!(
        frames(&mut h, id),
        [
            Got::Text("* server shutting down".into()),
            Got::Close(Some(1001))
        ]
    );
    assert_eq!(frames(&mut h, greeting), [Got::Close(Some(1001))]);
}

#[test]
fn lines_held_by_flood_control_all_come_in_order() {
    let mut h = web_with(ChatConfig {
        flood_rate: 10,
        flood_burst: 3,
        ..ChatConfig::default()
    });
    let other = line_client(&mut h);
    let id = joined(&mut h);
    h.take(other);
    // Hi was one line of the budget: two more go at once, the rest wait.
    let burst: Vec<u8> = (0..10).flat_map(|n| text(&format!("line {n}"))).collect();
    h.receive(id, burst);
    let mut seen = h.take_text(other);
    assert_eq!(seen, "<user2> line 0\n<user2> line 1\n");
    for _ in 0..20 {
        h.advance(Duration::from_millis(100));
        seen += &h.take_text(other);
    }
    let expected: String = (0..10).map(|n| format!("<user2> line {n}\n")).collect();
    assert_eq!(seen, expected);
    assert_eq!(h.pending_input(id), 0);
}

#[test]
fn the_page_and_http_errors() {
    let mut h = web();
    let id = h.connect_to(WEB);
    h.receive(
        id,
        "GET / HTTP/1.1\r\nHost: chat\r\n\r\nGET /nope HTTP/1.1\r\nHost: chat\r\n\r\n",
    );
    let answers = h.take_text(id);
    assert!(answers.starts_with("HTTP/1.1 200 OK\r\n"), "{answers}");
    assert!(answers.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(
        answers.contains("HTTP/1.1 404 Not Found\r\n"),
        "kept alive: {answers}"
    );
    assert_eq!(h.closed(id), None);

    let cases = [
        (
            "POST / HTTP/1.1\r\nHost: chat\r\n\r\n",
            "405 Method Not Allowed",
            false,
        ),
        (
            "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n",
            "400 Bad Request",
            true,
        ),
        ("GET / HTTP/1.1\r\n\r\n", "400 Bad Request", true),
        (
            "GET /ws HTTP/1.1\r\nHost: chat\r\n\r\n",
            "400 Bad Request",
            false,
        ),
        ("GET / HTTP/1.0\r\nHost: chat\r\n\r\n", "200 OK", true),
    ];
    for (request, status, closed) in cases {
        let id = h.connect_to(WEB);
        h.receive(id, request);
        let answer = h.take_text(id);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?}: {answer}"
        );
        assert_eq!(h.closed(id).is_some(), closed, "{request:?}");
    }
    let id = h.connect_to(WEB);
    h.receive(id, "POST /ws HTTP/1.1\r\nHost: chat\r\n\r\n");
    assert!(h.take_text(id).contains("\r\nAllow: GET\r\n"));

    let id = h.connect_to(WEB);
    h.receive(
        id,
        format!(
            "GET / HTTP/1.1\r\nHost: chat\r\nX: {}",
            "a".repeat(MAX_HEAD)
        ),
    );
    let answer = h.take_text(id);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(h.closed(id).is_some());
}

#[test]
fn a_page_of_another_origin_cannot_open_a_websocket() {
    let mut h = web();
    let id = h.connect_to(WEB);
    h.receive(
        id,
        HANDSHAKE.replace("http://chat:80", "https://evil.example"),
    );
    assert!(h.take_text(id).starts_with("HTTP/1.1 403 Forbidden\r\n"));
    let friend = h.connect_to(WEB);
    h.receive(
        friend,
        HANDSHAKE.replace("http://chat:80", "https://friend.example"),
    );
    assert!(
        h.take_text(friend).starts_with("HTTP/1.1 101 "),
        "--web-origin"
    );
}

#[test]
fn a_request_must_come_within_the_handshake_timeout() {
    let mut h = web_with(ChatConfig {
        greeting_timeout: TIMEOUT * 2,
        ..ChatConfig::default()
    });
    let slow = h.connect_to(WEB);
    h.receive(slow, "GET / HTTP/1.1\r\nHo");
    let open = socket(&mut h);
    h.advance(TIMEOUT);
    assert_eq!(h.closed(slow), Some(CloseReason::Requested));
    assert_eq!(h.take(slow), b"");
    // Its deadline ended at the upgrade: only the chat's greeting timeout
    // is left, and it is later.
    assert_eq!(
        h.closed(open),
        None,
        "an open WebSocket has no such deadline"
    );
    h.advance(TIMEOUT);
    let timeout = Got::Text("ERR timeout: say Hi first".into());
    assert_eq!(frames(&mut h, open), [timeout, Got::Close(Some(1008))]);
}

#[test]
fn a_web_listener_refuses_in_http() {
    let h = web();
    let refusal = h.handler.refusal(WEB, Refusal::Full).unwrap();
    let refusal = String::from_utf8_lossy(&refusal);
    assert!(
        refusal.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refusal}"
    );
    assert!(refusal.contains("\r\nConnection: close\r\n"));
    let line = h
        .handler
        .refusal(ListenerId::nth(0), Refusal::Full)
        .unwrap();
    assert!(line.starts_with(b"ERR busy"));
}

#[test]
fn a_web_client_costs_little_more_than_a_line_client() {
    // What the driver keeps beside each connection.
    let web = std::mem::size_of::<Conn<Client>>();
    let line = std::mem::size_of::<Client>();
    assert!(web <= line + 40, "{web} bytes, a line client's {line}");
}
