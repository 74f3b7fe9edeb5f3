//! The chat servers (server1, server2, server3) from the outside: through
//! sockets, their console, their transcript, signals and exit status. A
//! scenario is written once, as a function of the server binary, and run
//! for each server it applies to.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, expect_bytes, ChatClient, Server, TIMEOUT};

const SERVER1: &str = env!("CARGO_BIN_EXE_server1");
const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// server1's answer to a client while it serves another.
const BUSY: &str = "ERR busy: serving another client, try again later";

#[test]
fn server1_refuses_a_second_client_until_the_first_leaves() {
    let server = Server::start(SERVER1, &[]);
    let (mut first, _) = ChatClient::join(server.addr());

    // Refused at once, without having to say anything.
    let asked = Instant::now();
    let mut second = ChatClient::connect(server.addr());
    assert_eq!(second.line_within(Duration::from_secs(1)), BUSY);
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    second.expect_eof();

    first.send("bye");
    first.expect_line("Bye");
    first.expect_eof();
    drop(first);
    // The refused client never greeted, so it took no nick.
    let (_third, nick) = join_when_free(server.addr());
    assert_eq!(nick, "user2");
}

/// Joins server1 as soon as it is free. The server frees its one place
/// only once the previous client's connection is closed at both ends, which
/// the test cannot see: it tries again, for up to [`TIMEOUT`].
fn join_when_free(addr: SocketAddr) -> (ChatClient, String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut client = ChatClient::connect(addr);
        client.send("Hi");
        match client.line().as_str() {
            "Hello" => {
                let nick = client.welcome();
                return (client, nick);
            }
            BUSY if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            line => panic!("expected Hello, got {line:?}"),
        }
    }
}

#[test]
fn server2_relays_among_three_clients() {
    relays_among_three_clients(SERVER2);
}

#[test]
fn server3_relays_among_three_clients() {
    relays_among_three_clients(SERVER3);
}

/// Three clients join, one takes a nick, one asks who is on, one speaks;
/// then one says `bye` and one just disconnects. Everyone sees what the
/// protocol says they see, and the transcript has the room's events.
fn relays_among_three_clients(bin: &str) {
    let server = Server::start(bin, &[]);
    let (mut a, nick) = ChatClient::join(server.addr());
    assert_eq!(nick, "user1");
    let (mut b, nick) = ChatClient::join(server.addr());
    assert_eq!(nick, "user2");
    a.expect_line("* user2 joined");
    let (mut c, nick) = ChatClient::join(server.addr());
    assert_eq!(nick, "user3");
    a.expect_line("* user3 joined");
    b.expect_line("* user3 joined");

    a.send("/nick alice");
    for client in [&mut a, &mut b, &mut c] {
        client.expect_line("* user1 is now alice");
    }
    b.send("/who");
    b.expect_line("* 3 online: alice, user2, user3");
    c.send("hello, room");
    a.expect_line("<user3> hello, room");
    b.expect_line("<user3> hello, room");

    a.send("bye");
    a.expect_line("Bye");
    a.expect_eof();
    b.expect_line("* alice left");
    c.expect_line("* alice left");
    // b goes without a word. c's next line is that leave: c never got its
    // own message back.
    drop(b);
    c.expect_line("* user2 left");
    c.send("/who");
    c.expect_line("* 1 online: user3");

    for line in [
        "* user1 joined",
        "* user2 joined",
        "* user3 joined",
        "* user1 is now alice",
        "<user3> hello, room",
        "* alice left",
        "* user2 left",
    ] {
        server.expect_transcript(line);
    }
}

#[test]
fn server3_answers_telnet_after_ctrl_c_and_relays_only_the_text() {
    let server = Server::start(SERVER3, &[]);
    let (mut other, _) = ChatClient::join(server.addr());
    // telnet, byte for byte: it ends its lines with `\r\n`.
    let mut telnet = connect(server.addr());
    telnet.write_all(b"Hi\r\n").expect("write");
    let welcome =
        b"Hello\n* welcome, you are user2; lines up to 4096 bytes; /help lists commands\n";
    expect_bytes(&mut telnet, welcome, TIMEOUT);
    other.expect_line("* user2 joined");

    // Ctrl-C: `IAC IP`, `IAC DO TIMING-MARK`; telnet shows nothing more
    // until it is answered `IAC WILL TIMING-MARK`.
    telnet.write_all(b"\xff\xf4\xff\xfd\x06").expect("write");
    expect_bytes(&mut telnet, b"\xff\xfb\x06", TIMEOUT);
    telnet.write_all(b"after ctrl-c\r\n").expect("write");
    other.expect_line("<user2> after ctrl-c");
    server.expect_transcript("* user1 joined");
    server.expect_transcript("* user2 joined");
    server.expect_transcript("<user2> after ctrl-c");

    other.send("still there?");
    expect_bytes(&mut telnet, b"<user1> still there?\n", TIMEOUT);
}

#[test]
fn over_the_announce_limit_joins_and_leaves_go_to_the_transcript_only() {
    let server = Server::start(SERVER3, &["--announce-limit", "1"]);
    let (mut a, _) = ChatClient::join(server.addr());
    let (b, _) = ChatClient::join(server.addr());
    drop(b);
    server.expect_transcript("* user1 joined");
    server.expect_transcript("* user2 joined");
    server.expect_transcript("* user2 left");
    // a's next line is its own question's answer: no notice came before it.
    a.send("/who");
    a.expect_line("* 1 online: user1");
}

#[test]
fn a_line_as_long_as_the_highest_max_line_is_relayed() {
    // 65,536 bytes and its `\r\n`: past the loop's 64 KiB input buffer, so
    // the chat servers make room for a whole line (`ChatArgs::loop_config`).
    for bin in [SERVER2, SERVER3] {
        let server = Server::start(bin, &["--max-line", "65536"]);
        let (mut a, nick) = ChatClient::join(server.addr());
        let (mut b, b_nick) = ChatClient::join(server.addr());
        a.expect_line(&format!("* {b_nick} joined"));
        let long = "y".repeat(65_536);
        a.send_bytes(format!("{long}\r\n").as_bytes());
        b.expect_line(&format!("<{nick}> {long}"));
    }
}

#[test]
fn server2_is_not_stalled_by_a_client_that_never_reads() {
    a_client_that_never_reads_does_not_stall_the_others(SERVER2);
}

#[test]
fn server3_is_not_stalled_by_a_client_that_never_reads() {
    a_client_that_never_reads_does_not_stall_the_others(SERVER3);
}

/// Lines in the flood, and the length of each, `\n` included: 20 MiB in all,
/// far more than the sockets' buffers and the server's output limit (1 MiB)
/// can hold for a client that does not read.
const FLOOD_LINES: usize = 20 * 1024;
const FLOOD_LINE_LEN: usize = 1024;
/// The flood is sent in batches of this many lines (256 KiB)…
const BATCH_LINES: usize = 256;
/// …and at most this many lines (512 KiB) ahead of what the reader has
/// received. The server queues what the reader has not read yet, and cuts
/// the reader off past 1 MiB too: on a busy machine the test's reader could
/// fall that far behind a sender that is not held back.
const AHEAD_LINES: usize = 2 * BATCH_LINES;

/// Flood line `i`, without its `\n`: its number, then filler.
fn flood_line(i: usize) -> String {
    format!("{i:06} {}", "x".repeat(FLOOD_LINE_LEN - 8))
}

/// A client joins and then never reads, while another floods the room and
/// a third reads everything. The reader gets every line, in order and in
/// time; the sleeper is cut off, and the room is told it left.
fn a_client_that_never_reads_does_not_stall_the_others(bin: &str) {
    // Flood control off: the flood is what fills the reader's queue.
    let server = Server::start(bin, &["--flood-rate", "0"]);
    let (mut sleeper, _) = ChatClient::join(server.addr());
    let (mut flooder, _) = ChatClient::join(server.addr());
    let (mut reader, _) = ChatClient::join(server.addr());
    flooder.expect_line("* user3 joined");

    // The reader reports how many lines it has received; the flooder waits
    // for those reports to stay within AHEAD_LINES.
    let (received, reports) = mpsc::channel();
    let started = Instant::now();
    let flooding = thread::spawn(move || {
        let mut acknowledged = 0;
        for first in (0..FLOOD_LINES).step_by(BATCH_LINES) {
            while first + BATCH_LINES - acknowledged > AHEAD_LINES {
                acknowledged = reports
                    .recv_timeout(TIMEOUT)
                    .expect("the reader is reading");
            }
            let batch: String = (first..first + BATCH_LINES)
                .map(|i| flood_line(i) + "\n")
                .collect();
            flooder.send_bytes(batch.as_bytes());
        }
        // Kept open: closing a socket with unread input (`* user1 left`)
        // resets the connection, and the end of the flood with it.
        flooder
    });

    let deadline = started + TIMEOUT;
    let mut sleeper_left = false;
    let mut next = 0;
    while next < FLOOD_LINES {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {next} lines within {TIMEOUT:?}");
        let line = reader.line_within(left);
        if line == "* user1 left" && !sleeper_left {
            sleeper_left = true;
            continue;
        }
        assert_eq!(line, format!("<user2> {}", flood_line(next)));
        next += 1;
        if next % BATCH_LINES == 0 {
            // The flooder is done once the last batch is sent.
            let _ = received.send(next);
        }
    }
    if !sleeper_left {
        reader.expect_line("* user1 left");
    }
    let took = started.elapsed();
    let _flooder = flooding.join().expect("the flood is sent");

    // The sleeper got what fitted in the buffers, then the end.
    let got = sleeper.count_to_end(TIMEOUT);
    assert!(got < FLOOD_LINES * FLOOD_LINE_LEN, "{got} bytes");
    eprintln!("{bin}: 20 MiB relayed in {took:?}; the sleeper got {got} bytes");
}

#[test]
fn server1_console_reaches_the_client_and_quit_stops_it() {
    the_console_speaks_and_quit_stops(SERVER1);
}

#[test]
fn server2_console_reaches_the_clients_and_quit_stops_it() {
    the_console_speaks_and_quit_stops(SERVER2);
}

#[test]
fn server3_console_reaches_the_clients_and_quit_stops_it() {
    the_console_speaks_and_quit_stops(SERVER3);
}

/// A line typed on the console reaches the client from `server`, and
/// `/quit` stops the server as a signal would.
fn the_console_speaks_and_quit_stops(bin: &str) {
    let mut server = Server::start(bin, &[]);
    let (mut client, _) = ChatClient::join(server.addr());
    server.expect_transcript("* user1 joined");

    server.console("maintenance at noon");
    client.expect_line("<server> maintenance at noon");
    server.expect_transcript("<server> maintenance at noon");

    server.console("/quit");
    client.expect_line("* server shutting down");
    client.expect_eof();
    // The server waits for the client to close its end too.
    drop(client);
    server.expect_transcript("* server shutting down");
    server.expect_exit_success();
}

#[test]
fn server1_tells_its_client_when_sigterm_stops_it() {
    sigterm_tells_the_clients(SERVER1);
}

#[test]
fn server2_tells_its_clients_when_sigterm_stops_it() {
    sigterm_tells_the_clients(SERVER2);
}

#[test]
fn server3_tells_its_clients_when_sigterm_stops_it() {
    sigterm_tells_the_clients(SERVER3);
}

/// SIGTERM: the client is told `* server shutting down`, then the
/// connection ends, and the server exits with status 0.
fn sigterm_tells_the_clients(bin: &str) {
    let mut server = Server::start(bin, &[]);
    let (mut client, _) = ChatClient::join(server.addr());
    server.sigterm();
    client.expect_line("* server shutting down");
    client.expect_eof();
    drop(client);
    server.expect_exit_success();
}

#[test]
fn the_welcome_states_the_line_limit_and_the_transcript_who_broke_it() {
    let server = Server::start(SERVER3, &["--max-line", "16"]);
    let mut alice = ChatClient::connect(server.addr());
    alice.send("Hi");
    alice.expect_line("Hello");
    alice.expect_line("* welcome, you are user1; lines up to 16 bytes; /help lists commands");
    server.expect_transcript("* user1 joined");
    let (mut bob, _) = ChatClient::join(server.addr());
    server.expect_transcript("* user2 joined");
    alice.expect_line("* user2 joined");

    bob.send(&"x".repeat(17));
    bob.expect_line("ERR line too long (max 16 bytes)");
    bob.expect_eof();
    // The room is told who left, the operator also why.
    alice.expect_line("* user2 left");
    server.expect_transcript("* user2 left (line too long)");
}

#[test]
fn the_transcript_says_when_a_client_was_cut_off_for_idling() {
    let server = Server::start(SERVER3, &["--idle-timeout", "1"]);
    let (mut alice, _) = ChatClient::join(server.addr());
    server.expect_transcript("* user1 joined");
    alice.expect_eof();
    server.expect_transcript("* user1 left (idle)");
}
