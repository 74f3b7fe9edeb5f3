//! The server programs against an unkind environment: a stderr nobody
//! reads, a terminal that closes (SIGHUP), and options out of range.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{ChatClient, Server, TIMEOUT};

const SERVER1: &str = env!("CARGO_BIN_EXE_server1");
const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// How many clients join and leave while stderr is full: each join is a log
/// line, and before the log had a writer thread of its own the servers
/// stopped after about 718 of them, once the 64 KiB pipe was full.
const JOINS: usize = 2000;

/// How many clients join at the same time.
const AT_ONCE: usize = 4;

#[test]
fn server3_serves_on_with_a_stderr_nobody_reads() {
    serves_on_with_a_stderr_nobody_reads(SERVER3);
}

#[test]
fn server2_serves_on_with_a_stderr_nobody_reads() {
    serves_on_with_a_stderr_nobody_reads(SERVER2);
}

/// [`JOINS`] clients join and leave, a few at a time, with the server's
/// stderr a full pipe; then two clients still chat, and SIGTERM still stops
/// the server with status 0 within a few seconds.
fn serves_on_with_a_stderr_nobody_reads(bin: &str) {
    let (mut server, _stderr) = Server::start_with_stderr_unread(bin, &[]);
    let addr = server.addr();
    let started = Instant::now();
    let joiners: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..JOINS / AT_ONCE {
                    let (mut client, _) = ChatClient::join(addr);
                    client.send("bye");
                    // Before it, the others' joins and leaves.
                    while client.line() != "Bye" {}
                }
            })
        })
        .collect();
    for joiner in joiners {
        joiner.join().expect("every client is served");
    }
    let joined = started.elapsed();

    let (mut a, a_nick) = ChatClient::join(addr);
    let (mut b, b_nick) = ChatClient::join(addr);
    a.expect_line(&format!("* {b_nick} joined"));
    a.send("still there?");
    b.expect_line(&format!("<{a_nick}> still there?"));
    b.send("yes");
    a.expect_line(&format!("<{b_nick}> yes"));

    let asked = Instant::now();
    server.sigterm();
    for client in [&mut a, &mut b] {
        client.expect_line("* server shutting down");
        client.expect_eof();
    }
    drop((a, b));
    let status = server.wait_with_timeout(TIMEOUT);
    let took = asked.elapsed();
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM"
    );
    println!(
        "stderr unread: {JOINS} joins and leaves in {joined:?}; exit 0 {took:?} after SIGTERM"
    );
}

#[test]
fn server3_stops_gracefully_on_sighup() {
    stops_gracefully_on_sighup(SERVER3);
}

#[test]
fn server2_stops_gracefully_on_sighup() {
    stops_gracefully_on_sighup(SERVER2);
}

/// SIGHUP, what a closing terminal sends, stops the server as SIGTERM does:
/// the notice, the end of stream, status 0.
fn stops_gracefully_on_sighup(bin: &str) {
    let mut server = Server::start(bin, &[]);
    let (mut client, _) = ChatClient::join(server.addr());
    let asked = Instant::now();
    server.sighup();
    client.expect_line("* server shutting down");
    client.expect_eof();
    drop(client);
    server.expect_exit_success();
    println!("SIGHUP: exit 0 {:?} after the signal", asked.elapsed());
}

/// Options every server takes, each with a value just out of its range.
const SERVER_OPTIONS: &[[&str; 2]] = &[
    ["--max-clients", "0"],
    ["--max-clients", "1000001"],
    ["--idle-timeout", "0"],
    ["--idle-timeout", "604801"],
    ["--idle-timeout", "18446744073709551615"],
    ["--shutdown-timeout", "0"],
    ["--shutdown-timeout", "301"],
    ["--linger-timeout", "0"],
    ["--linger-timeout", "61"],
];

/// Options the chat servers add, each with a value out of its range.
const CHAT_OPTIONS: &[[&str; 2]] = &[
    ["--greeting-timeout", "0"],
    ["--greeting-timeout", "3601"],
    // Accepted once: every connection then panicked (`Instant` overflow).
    ["--greeting-timeout", "18446744073709551615"],
    ["--max-line", "15"],
    ["--max-line", "65537"],
    ["--max-per-ip", "0"],
    ["--max-per-ip", "1000001"],
    ["--announce-limit", "1000001"],
    ["--announce-limit", "-1"],
];

#[test]
fn out_of_range_options_are_usage_errors() {
    for (bin, chat) in [
        (SERVER1, true),
        (SERVER2, true),
        (SERVER3, true),
        (SERVER4, false),
    ] {
        let options = SERVER_OPTIONS
            .iter()
            .chain(if chat { CHAT_OPTIONS } else { &[] });
        for [option, value] in options {
            expect_usage_error(bin, option, value);
        }
    }
    // In range for the others, but server1 serves one client at a time.
    expect_usage_error(SERVER1, "--max-clients", "2");
}

/// Runs `bin 127.0.0.1 0 OPTION VALUE` and checks that it ends at once with
/// status 2 and an `error: …` line, without listening and without a panic.
fn expect_usage_error(bin: &str, option: &str, value: &str) {
    let out = common::run(bin, &["127.0.0.1", "0", option, value], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{bin} {option} {value}");
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: it listened");
}

/// `bin --help`, as text.
fn help(bin: &str) -> String {
    let out = common::run(bin, &["--help"], b"");
    assert_eq!(out.status.code(), Some(0), "{bin} --help");
    String::from_utf8(out.stdout).expect("help is text")
}

#[test]
fn help_says_what_each_server_does_and_no_more() {
    // server1 used to offer `--max-clients (default 10000)` and then refuse
    // anything but 1; server4 promised a stop by `/quit` it has no console for.
    let server1 = help(SERVER1);
    assert!(server1.contains("Always 1"), "{server1}");
    assert!(!server1.contains("default 10000"), "{server1}");
    let server4 = help(SERVER4);
    assert!(!server4.contains("/quit"), "{server4}");
    for bin in [SERVER1, SERVER2, SERVER3] {
        let text = help(bin);
        assert!(text.contains("/quit on the console"), "{bin}: {text}");
    }
    for bin in [SERVER1, SERVER2, SERVER3, SERVER4] {
        let text = help(bin);
        assert!(
            text.contains("Exit status: 0") && text.contains("2 on a usage error"),
            "{bin}: {text}"
        );
    }
}
