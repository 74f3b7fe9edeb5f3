//! The web endpoint under attack, black-box: what a client on the open
//! internet can do to the chat servers' HTTP and WebSocket port (request
//! heads that never end, requests kept alive or pipelined without end,
//! bodies announced and never sent, broken handshakes, frames announcing
//! exabytes, messages that never end, pings from a peer that does not read,
//! bad close frames, bytes after the close, half-closes, header injection),
//! and what it must cost: that client alone, for a bounded time, never the
//! server or the others. Each case ends by checking that the room is still
//! served, and runs on both chat drivers: server2 (a thread per client) and
//! server3 (the event loop).
//!
//! Frames are written by hand, with a mask of zeros (a legal mask, which
//! leaves the payload as it is) so that the bytes can be read here; the
//! server's are read with tungstenite. Every wait is a read with a
//! timeout; all traffic stays on 127.0.0.1.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{connect, write_until_stopped, ChatClient, Server, TIMEOUT};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// A WebSocket handshake as a program sends it (no `Origin`), with the
/// key of RFC 6455's example.
const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// `bin` with a web port and `more`; returns it and the web address.
fn serve(bin: &str, more: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--web-port", "0"];
    args.extend_from_slice(more);
    let server = Server::start(bin, &args);
    let web = server.web_addr();
    (server, web)
}

/// Connects to `addr` with small socket buffers on this side, so that a
/// client that does not read is stopped by TCP after little more than the
/// server holds for it; every read and write bounded.
fn connect_small(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.connect_timeout(&addr.into(), TIMEOUT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// The resident memory of `server`, in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The CPU time `server` has used (user and system), in clock
/// ticks (1/100 s).
fn cpu_ticks(server: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    // The fields after the command name, which is in parentheses: utime
    // and stime are the 14th and 15th of the line, the 12th and 13th here.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Writes `unit` (a request, a frame) again and again until TCP stops
/// the writer (`common::write_until_stopped`); returns how many went out
/// whole.
fn write_units_until_stopped(stream: &mut TcpStream, unit: &[u8], who: &str) -> usize {
    write_until_stopped(stream, &unit.repeat(64), who).len() / unit.len()
}

/// A client's frame with the mask bit set and a mask of zeros: `first` is
/// FIN, RSV and opcode, `payload` at most 125 bytes.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let len = u8::try_from(payload.len()).expect("a short payload");
    assert!(len <= 125);
    [&[first, 0x80 | len, 0, 0, 0, 0][..], payload].concat()
}

/// Reads one HTTP answer from `stream`: its head, and a body of its
/// `Content-Length`. Byte by byte, so that an answer pipelined behind it
/// stays unread.
fn answer(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the answer ended with {other:?} after {head:?}"),
        }
    }
    let head = String::from_utf8(head).expect("an answer's head is text");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.parse().expect("a length"));
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("the body");
    head + &String::from_utf8_lossy(&body)
}

/// A connection whose WebSocket is open, for bytes written by hand and the
/// server's frames read with tungstenite.
fn upgraded(addr: SocketAddr) -> WebSocket<TcpStream> {
    let mut stream = connect(addr);
    stream.write_all(HANDSHAKE).unwrap();
    let head = answer(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    WebSocket::from_raw_socket(stream, Role::Client, None)
}

/// How soon a connection the server has done with must end: well before
/// any deadline the tests set (1 s) or leave (10 s, the handshake's).
const PROMPTLY: Duration = Duration::from_secs(3);

/// Reads on to the server's close frame, then the end of the connection;
/// returns the frame's code. The chat's own lines before it are skipped.
/// The frames are read by hand: tungstenite would report a code that may
/// not be sent as 1002, hiding a server that echoed it.
fn close_code(socket: &mut WebSocket<TcpStream>) -> Option<CloseCode> {
    let stream = socket.get_mut();
    loop {
        let mut head = [0; 2];
        stream.read_exact(&mut head).expect("a frame");
        // A server's frames are not masked, and its close and text
        // messages here are short; a longer text has 16 bits of length.
        let len = match head[1] {
            126 => {
                let mut len = [0; 2];
                stream.read_exact(&mut len).unwrap();
                usize::from(u16::from_be_bytes(len))
            }
            len => usize::from(len),
        };
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).expect("a payload");
        match head[0] {
            0x81 => {}
            0x88 => {
                expect_end(stream);
                return match payload[..] {
                    [] => None,
                    [high, low, ..] => Some(CloseCode::from(u16::from_be_bytes([high, low]))),
                    _ => panic!("a close frame of one byte"),
                };
            }
            other => panic!("expected a close frame, got {other:#x} {payload:?}"),
        }
    }
}

/// Checks that the server ends `stream` [`PROMPTLY`], whatever it sends
/// first.
fn expect_end(stream: &mut TcpStream) {
    let started = Instant::now();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
    }
}

/// A web participant and a TCP one, both new, talk both ways: whatever
/// came before cost the room nothing.
fn the_room_is_served(server: &Server, web: SocketAddr) {
    let mut browser = upgraded(web);
    browser.send(Message::text("Hi")).unwrap();
    let mut next = || match browser.read() {
        Ok(Message::Text(text)) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    };
    assert_eq!(next(), "Hello");
    let welcome = next();
    let (mut terminal, nick) = ChatClient::join(server.addr());
    assert_eq!(next(), format!("* {nick} joined"));
    terminal.send("still served");
    assert_eq!(next(), format!("<{nick}> still served"));
    assert!(welcome.starts_with("* welcome, you are "), "{welcome}");
    let name = &welcome["* welcome, you are ".len()..welcome.find(';').unwrap()];
    browser.send(Message::text("both ways")).unwrap();
    terminal.expect_line(&format!("<{name}> both ways"));
}

/// Slowloris over HTTP: request heads sent a byte every 100 ms, never
/// finished. Each is closed at the handshake deadline, one deadline from
/// the connection's opening, however steadily its bytes come; a WebSocket
/// opened before them is not (its deadline ended with its handshake).
#[test]
fn request_heads_that_never_end_are_closed_at_the_handshake_deadline() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "1"]);
        let mut early = upgraded(web);
        early.send(Message::text("Hi")).unwrap();
        let mut slow: Vec<TcpStream> = (0..5).map(|_| connect(web)).collect();
        let mut open = vec![true; slow.len()];
        let started = Instant::now();
        let request = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ".iter();
        for &byte in request.chain([b'a'; 100].iter()) {
            if !open.contains(&true) {
                break;
            }
            for (stream, open) in slow.iter_mut().zip(&mut open) {
                if *open && stream.write_all(&[byte]).is_err() {
                    *open = false;
                }
            }
            // The pause between bytes: a read that times out, or the end.
            for (stream, open) in slow.iter_mut().zip(&mut open) {
                stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                match stream.read(&mut [0; 256]) {
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Ok(n) => {
                        assert_eq!(n, 0, "{bin}: an answer to half a request");
                        *open = false;
                    }
                    Err(_) => *open = false,
                }
            }
            assert!(
                started.elapsed() < PROMPTLY,
                "{bin}: half a request still open after {:?}",
                started.elapsed()
            );
        }
        assert!(!open.contains(&true), "{bin}: never closed");
        assert!(started.elapsed() >= Duration::from_millis(900), "{bin}");
        // The WebSocket opened first is still in the room, past the
        // deadline: it is answered now.
        assert!(matches!(early.read(), Ok(Message::Text(t)) if t == "Hello"));
        assert!(matches!(early.read(), Ok(Message::Text(t)) if t.starts_with("* welcome")));
        early.send(Message::text("/who")).unwrap();
        assert!(matches!(early.read(), Ok(Message::Text(_))), "{bin}");
        the_room_is_served(&server, web);
    }
}

/// Requests one after the other on one kept-alive connection: each is
/// answered, but keep-alive does not let a connection stay HTTP for ever:
/// it is closed at the handshake deadline.
#[test]
fn keep_alive_requests_are_answered_until_the_handshake_deadline() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "1"]);
        let mut stream = connect(web);
        let started = Instant::now();
        let mut answered = 0;
        loop {
            assert!(started.elapsed() < PROMPTLY, "{bin}");
            // After the close, a write may still go out, or find a reset.
            if stream
                .write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
                .is_err()
            {
                break;
            }
            let mut first = [0];
            match stream.read(&mut first) {
                Ok(1) => {}
                _ => break,
            }
            let rest = answer(&mut stream);
            assert!(rest.starts_with("TTP/1.1 404 "), "{bin}: {rest}");
            assert!(rest.contains("Connection: keep-alive\r\n"), "{bin}");
            answered += 1;
        }
        let lasted = started.elapsed();
        assert!(answered >= 10, "{bin}: {answered} answered");
        assert!(lasted >= Duration::from_millis(900), "{bin}: {lasted:?}");
        the_room_is_served(&server, web);
    }
}

/// A body announced and never sent (a `Content-Length` of petabytes on a
/// GET, a chunked one): the body is not waited for. The request is
/// answered, with `Connection: close`, and the connection closed at once,
/// long before the handshake deadline: the rest is never read.
#[test]
fn a_body_announced_on_a_get_is_not_waited_for() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "30"]);
        for body in [
            "Content-Length: 99999999999999999\r\n",
            "Content-Length: 184467440737095516160\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            let mut stream = connect(web);
            let request = format!("GET / HTTP/1.1\r\nHost: h\r\n{body}\r\nsome of the body");
            stream.write_all(request.as_bytes()).unwrap();
            let head = answer(&mut stream);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{bin}: {head}");
            assert!(head.contains("Connection: close\r\n"), "{bin}: {head}");
            expect_end(&mut stream);
        }
        the_room_is_served(&server, web);
    }
}

/// Requests pipelined by a client that writes without reading, until TCP
/// stops it: the server stops reading it once its answers back up (so its
/// memory is bounded by what one client may owe, not by how much it
/// sends), and every whole request is answered, in order, once the client
/// reads. (It sends a few MiB before TCP stops it: the socket buffers.)
#[test]
fn pipelined_requests_from_a_client_that_reads_late_are_all_answered() {
    // Padded, so that the answers are fewer bytes than the requests: what
    // the test reads stays small whatever the socket buffers take in.
    let request = format!(
        "GET /nope HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(300)
    );
    let request = request.as_bytes();
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "30"]);
        let mut stream = connect_small(web);
        // Every answer is the same bytes: those of the first.
        stream.write_all(request).unwrap();
        let one = answer(&mut stream);
        let before = rss_kib(&server);
        stream
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let whole = write_units_until_stopped(&mut stream, request, "the pipeliner");
        let grew = rss_kib(&server).saturating_sub(before);
        eprintln!("{bin}: {whole} requests pipelined, the server grew by {grew} KiB");
        assert!(grew < 4 * 1024, "{bin}: the server grew by {grew} KiB");
        // Meanwhile, the others.
        the_room_is_served(&server, web);
        common::expect_bytes(&mut stream, one.repeat(whole).as_bytes(), TIMEOUT);
    }
}

/// Handshakes that are not quite WebSocket ones: each gets its HTTP error,
/// and the connection is kept (HTTP/1.1), so a client may try again on it
/// with a proper one, as RFC 6455 §4.4 has it after a 426. Firefox's
/// `Connection: keep-alive, Upgrade` and a capitalised `Upgrade:
/// WebSocket` are proper.
#[test]
fn handshakes_with_a_bad_key_or_version_are_refused_and_the_connection_kept() {
    let good = std::str::from_utf8(HANDSHAKE).unwrap();
    let cases = [
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "",
            "400 ",
        ),
        (
            "dGhlIHNhbXBsZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "400 ",
        ),
        ("Version: 13", "Version: 8", "426 "),
        ("Sec-WebSocket-Version: 13\r\n", "", "426 "),
        ("Upgrade: websocket", "Upgrade: h2c", "400 "),
        ("GET /ws", "GET /ws/../ws", "404 "),
    ];
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &[]);
        for (from, to, status) in cases {
            let mut stream = connect(web);
            stream.write_all(good.replace(from, to).as_bytes()).unwrap();
            let head = answer(&mut stream);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}")),
                "{to:?}: {head}"
            );
            if status == "426 " {
                assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
            }
            stream.write_all(HANDSHAKE).unwrap();
            let head = answer(&mut stream);
            assert!(
                head.starts_with("HTTP/1.1 101 "),
                "{bin} after {to:?}: {head}"
            );
        }
        let firefox = good
            .replace("Connection: Upgrade", "Connection: keep-alive, Upgrade")
            .replace("Upgrade: websocket", "Upgrade: WebSocket");
        let mut stream = connect(web);
        stream.write_all(firefox.as_bytes()).unwrap();
        let head = answer(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101 "), "{bin}: {head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        the_room_is_served(&server, web);
    }
}

/// Frame headers announcing 2^63 bytes and more (the most a header can
/// say, and past what RFC 6455 allows): refused from the header, at once,
/// with nothing allocated for them.
#[test]
fn frames_announcing_exabytes_are_refused_from_the_header() {
    let mask = [0; 4];
    let huge =
        |first: u8, length: u64| [&[first, 0x80 | 127][..], &length.to_be_bytes(), &mask].concat();
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &[]);
        for (bytes, code) in [
            (huge(0x81, 1 << 63), CloseCode::Size),
            (huge(0x81, u64::MAX), CloseCode::Size),
            (huge(0x01, (1 << 63) - 1), CloseCode::Size),
            (
                [frame(0x01, b"a"), huge(0x80, 1 << 63)].concat(),
                CloseCode::Size,
            ),
            (huge(0x89, 1 << 63), CloseCode::Protocol),
            (huge(0x82, 1 << 63), CloseCode::Size),
        ] {
            let mut socket = upgraded(web);
            socket.get_mut().write_all(&bytes).unwrap();
            assert_eq!(close_code(&mut socket), Some(code), "{bin}: {bytes:02x?}");
        }
        the_room_is_served(&server, web);
    }
}

/// A message begun and never finished, empty fragments trickled behind it
/// so that the connection is never idle: before its `Hi`, the chat's
/// greeting deadline ends it (1008 after `ERR timeout`), as it ends a line
/// that never ends. (After the greeting, fragments are bounded by the line
/// limit, 1009: see tests/web.rs.)
#[test]
fn a_message_that_never_ends_is_closed_at_the_greeting_deadline() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--greeting-timeout", "1"]);
        let mut socket = upgraded(web);
        let started = Instant::now();
        socket.get_mut().write_all(&frame(0x01, b"H")).unwrap();
        socket
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let code = loop {
            assert!(started.elapsed() < PROMPTLY, "{bin}");
            // A write may find the connection gone.
            let _ = socket.get_mut().write_all(&frame(0x00, b""));
            match socket.read() {
                Ok(Message::Close(close)) => break close.map(|c| c.code),
                Ok(Message::Text(text)) => assert!(text.starts_with("ERR timeout"), "{text}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                other => panic!("{bin}: {other:?}"),
            }
        };
        assert_eq!(code, Some(CloseCode::Policy), "{bin}");
        assert!(started.elapsed() >= Duration::from_millis(900), "{bin}");
        the_room_is_served(&server, web);
    }
}

/// Pings from a client that never reads the pongs, written until TCP stops
/// it: the server stops reading it once the pongs back up, instead of
/// queueing a pong per ping without bound, and when the client reads, it
/// gets a pong for every ping, with its bytes. Meanwhile the room is served.
#[test]
fn pings_from_a_client_that_never_reads_are_answered_as_it_reads() {
    let ping = frame(0x89, &[b'p'; 125]);
    let pong = [&[0x8a, 125][..], &[b'p'; 125]].concat();
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &[]);
        let mut socket = upgraded(web);
        let before = rss_kib(&server);
        let stream = socket.get_mut();
        stream
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let whole = write_units_until_stopped(stream, &ping, "the pinger");
        let grew = rss_kib(&server).saturating_sub(before);
        eprintln!("{bin}: {whole} pings unread, the server grew by {grew} KiB");
        assert!(grew < 4 * 1024, "{bin}: the server grew by {grew} KiB");
        the_room_is_served(&server, web);
        common::expect_bytes(stream, &pong.repeat(whole), TIMEOUT);
    }
}

/// Close frames whose payload breaks the rules (a one-byte code, codes
/// that may not be sent, a reason that is not UTF-8) are answered 1002 or
/// 1007; good ones, 1000 and a private 4000, are echoed. Every one ends
/// its connection.
#[test]
fn close_frames_with_bad_codes_are_refused_and_good_ones_echoed() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &[]);
        for (payload, answer) in [
            (&b"\x03"[..], Some(CloseCode::Protocol)),
            (b"\x03\xed", Some(CloseCode::Protocol)), // 1005, "no code"
            (b"\x03\xee", Some(CloseCode::Protocol)), // 1006, "abnormal"
            (b"\x03\xe7", Some(CloseCode::Protocol)), // 999
            (b"\x13\x88", Some(CloseCode::Protocol)), // 5000
            (b"\x03\xe8bye \xff", Some(CloseCode::Invalid)),
            (b"\x03\xe8bye", Some(CloseCode::Normal)),
            (b"\x0f\xa0", Some(CloseCode::from(4000))),
            (b"", None),
        ] {
            let mut socket = upgraded(web);
            socket.get_mut().write_all(&frame(0x88, payload)).unwrap();
            assert_eq!(close_code(&mut socket), answer, "{bin}: {payload:?}");
        }
        the_room_is_served(&server, web);
    }
}

/// Frames sent after a close frame, in the same packet: never read. The
/// room hears the participant leave, not its line.
#[test]
fn nothing_after_a_close_frame_is_read() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &[]);
        let (mut terminal, _) = ChatClient::join(server.addr());
        let mut socket = upgraded(web);
        socket.send(Message::text("Hi")).unwrap();
        let mut texts = 0;
        while texts < 2 {
            if let Ok(Message::Text(_)) = socket.read() {
                texts += 1;
            }
        }
        let nick = terminal.line();
        let nick = nick
            .strip_suffix(" joined")
            .unwrap()
            .strip_prefix("* ")
            .unwrap();
        let bytes = [
            frame(0x88, b"\x03\xe8"),
            frame(0x81, b"after the close"),
            frame(0x89, b"and a ping"),
        ]
        .concat();
        socket.get_mut().write_all(&bytes).unwrap();
        assert_eq!(close_code(&mut socket), Some(CloseCode::Normal), "{bin}");
        terminal.expect_line(&format!("* {nick} left"));
        the_room_is_served(&server, web);
    }
}

/// Half-closes: a client that sends its request, or its handshake and
/// `Hi`, and then shuts its write side gets its answers, then the end; one
/// that half-closes in the middle of a request or a frame is closed at
/// once, not at a deadline.
#[test]
fn half_closed_connections_get_their_answers_then_the_end() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "30"]);
        let mut stream = connect(web);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert!(
            answer(&mut stream).starts_with("HTTP/1.1 200 OK\r\n"),
            "{bin}"
        );
        expect_end(&mut stream);

        let mut socket = upgraded(web);
        socket.get_mut().write_all(&frame(0x81, b"Hi")).unwrap();
        socket.get_mut().shutdown(Shutdown::Write).unwrap();
        assert!(
            matches!(socket.read(), Ok(Message::Text(t)) if t == "Hello"),
            "{bin}"
        );
        assert!(matches!(socket.read(), Ok(Message::Text(t)) if t.starts_with("* welcome")));
        expect_end(socket.get_mut());

        for half in [&b"GET / HTTP/1.1\r\nHo"[..], &frame(0x81, b"Hi")[..3]] {
            let mut stream = if half.starts_with(b"GET") {
                connect(web)
            } else {
                upgraded(web).into_inner()
            };
            stream.write_all(half).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            expect_end(&mut stream);
        }
        the_room_is_served(&server, web);
    }
}

/// A connection that says nothing at all holds its place until the
/// handshake deadline, then is closed without a word.
#[test]
fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "1"]);
        let mut silent = connect(web);
        let mut said = Vec::new();
        let started = Instant::now();
        silent.read_to_end(&mut said).expect("the end");
        assert!(said.is_empty(), "{bin}: {said:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < PROMPTLY);
        the_room_is_served(&server, web);
    }
}

/// A path cannot add a header to the answer: encoded line ends stay in the
/// path (never written back), raw ones are not HTTP, and a path longer
/// than the head's limit is 431.
#[test]
fn a_path_cannot_inject_headers() {
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &[]);
        let mut stream = connect(web);
        let request = b"GET /%0d%0aSet-Cookie:%20a=b HTTP/1.1\r\nHost: h\r\n\r\n";
        stream.write_all(request).unwrap();
        let head = answer(&mut stream);
        assert!(head.starts_with("HTTP/1.1 404 "), "{bin}: {head}");
        assert!(!head.to_lowercase().contains("set-cookie"), "{bin}: {head}");
        for request in [
            &b"GET /\rSet-Cookie: a=b HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET /\nSet-Cookie: a=b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            let mut stream = connect(web);
            stream.write_all(request).unwrap();
            let head = answer(&mut stream);
            assert!(head.starts_with("HTTP/1.1 400 "), "{bin}: {head}");
            assert!(!head.to_lowercase().contains("set-cookie"), "{bin}: {head}");
            expect_end(&mut stream);
        }
        let mut stream = connect(web);
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
        stream.write_all(long.as_bytes()).unwrap();
        assert!(answer(&mut stream).starts_with("HTTP/1.1 431 "), "{bin}");
        expect_end(&mut stream);
        the_room_is_served(&server, web);
    }
}

/// Web connections in every idle state, none of which may keep the server
/// busy (a level-triggered interest in reading input that is kept, or in
/// writing what cannot be written, would spin): WebSockets in the room,
/// opened and not greeted, a pinger stopped by TCP with its pongs unread,
/// and connections with half a request head, or an answered request and
/// half the next.
#[test]
fn idle_web_connections_cost_no_cpu() {
    let ping = frame(0x89, &[b'p'; 125]);
    for bin in [SERVER2, SERVER3] {
        let (server, web) = serve(bin, &["--handshake-timeout", "30"]);
        let mut keep = Vec::new();
        for _ in 0..5 {
            let mut socket = upgraded(web);
            socket.send(Message::text("Hi")).unwrap();
            keep.push(socket);
            keep.push(upgraded(web));
        }
        let mut pinger = upgraded(web);
        let stream = pinger.get_mut();
        stream
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        write_units_until_stopped(stream, &ping, "the pinger");
        let mut partial = Vec::new();
        for _ in 0..5 {
            let mut stream = connect(web);
            stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
            partial.push(stream);
            let mut stream = connect(web);
            stream
                .write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET")
                .unwrap();
            answer(&mut stream);
            partial.push(stream);
        }
        // Settled: everyone read, and the room served after them.
        the_room_is_served(&server, web);
        let before = cpu_ticks(&server);
        let started = Instant::now();
        let mut quiet = connect(server.addr());
        quiet
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert!(quiet.read(&mut [0; 1]).is_err(), "silence");
        let used = cpu_ticks(&server) - before;
        let elapsed = started.elapsed();
        eprintln!("{bin}: {used} ticks in {elapsed:?} with idle web connections");
        assert!(
            used <= 10,
            "{bin}: {used} ticks of CPU in {elapsed:?}, all idle"
        );
        drop((keep, pinger, partial));
    }
}

/// Connects to `to` from the loopback address `source` (another host, to
/// the server) and sends `request`; returns the first line of the answer.
fn ask_from(source: [u8; 4], to: SocketAddr, request: &[u8]) -> String {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect_timeout(&to.into(), TIMEOUT).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let answer = answer(&mut stream);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Connections from one address that open and say nothing, to take every
/// place: with `--max-per-ip`, the ones past it are told `503` (with
/// `Connection: close`) and closed at once, and another address is served.
#[test]
fn silent_connections_from_one_address_cannot_take_every_place() {
    let page = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    for bin in [SERVER2, SERVER3] {
        let args = ["--max-per-ip", "2", "--max-clients", "10"];
        let (_server, web) = serve(bin, &args);
        let silent: Vec<TcpStream> = (0..2).map(|_| connect(web)).collect();
        // Accepted by now: a request from that address was answered 503
        // after them, and closed.
        let refused = ask_from([127, 0, 0, 1], web, page);
        assert_eq!(refused, "HTTP/1.1 503 Service Unavailable", "{bin}");
        let served = ask_from([127, 0, 0, 2], web, page);
        assert_eq!(served, "HTTP/1.1 200 OK", "{bin}");
        drop(silent);
    }
}
