//! Hostile and broken clients, and the server's own faults, against the
//! built server3 (chat) and server4 (echo): one test per row of
//! docs/reliability.md. Every test talks to 127.0.0.1 only, bounds its
//! loops in count and time, and stops by itself.
//!
//! The tests that measure the server (its memory, its descriptors, its CPU
//! time) read `/proc`, so this file is for Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{connect, expect_bytes, signal, wait_with_timeout, Server, TIMEOUT};

const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// Flood control off, for the tests of the loop's own flow control, which
/// must hold for a server run without it (as the benchmarks run): with it
/// on, a flooder would be slowed to a few lines a second before any of
/// that was tried.
const NO_FLOOD_CONTROL: [&str; 2] = ["--flood-rate", "0"];

/// A chat (or echo) client with its socket at hand, to half-close or reset.
struct Peer {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = connect(addr);
        let reader = BufReader::new(stream.try_clone().expect("try_clone"));
        Peer { stream, reader }
    }

    /// Connects and says `Hi`; returns the peer, welcomed, and its nick.
    fn join(addr: SocketAddr) -> (Peer, String) {
        let mut peer = Peer::connect(addr);
        peer.send("Hi\n");
        assert_eq!(peer.line().as_deref(), Some("Hello"));
        let welcome = peer.line().expect("a welcome");
        let nick = welcome
            .strip_prefix("* welcome, you are ")
            .and_then(|rest| rest.split_once(';'))
            .map(|(nick, _)| nick.to_owned())
            .unwrap_or_else(|| panic!("expected the welcome, got {welcome:?}"));
        (peer, nick)
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write");
    }

    /// The next line, without its `\n`; `None` when the server has closed
    /// the connection (end of stream or reset). Panics on a timeout, and on
    /// anything that is not UTF-8: the server only ever sends text.
    fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(line.pop(), Some(b'\n'), "a line cut short: {line:?}");
                Some(String::from_utf8(line).expect("the server sends UTF-8"))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("no line within {TIMEOUT:?}: {e}"),
        }
    }

    /// Reads lines (notices of others joining and leaving, say) until
    /// `wanted`.
    fn skip_to(&mut self, wanted: &str) {
        loop {
            match self.line() {
                Some(line) if line == wanted => return,
                Some(_) => {}
                None => panic!("closed before {wanted:?}"),
            }
        }
    }

    /// Checks that `line` is the next line and the last: the server then
    /// closes the connection.
    fn expect_last(&mut self, line: &str) {
        assert_eq!(self.line().as_deref(), Some(line));
        assert_eq!(
            self.line(),
            None,
            "the connection should end after {line:?}"
        );
    }

    /// A second handle on the socket, for writing from another thread.
    fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("try_clone")
    }

    /// Closes with a reset (RST) rather than the usual FIN, as a crashed
    /// or killed client's machine may: `SO_LINGER` with a zero timeout.
    fn reset(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
    }
}

/// A server started with its process id at hand, to watch its memory,
/// descriptors and CPU time in `/proc`, and optionally with a limit on its
/// open files. (`common::Server` is for tests that need none of that.)
struct Watched {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl Watched {
    /// Starts `bin 127.0.0.1 0 ARGS…`, with at most `max_files` open files
    /// if given, and waits for it to print where it listens.
    fn start(bin: &str, args: &[&str], max_files: Option<u64>) -> Watched {
        let mut command = Command::new(bin);
        command
            .args(["127.0.0.1", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(max) = max_files {
            // Both limits: the servers raise their soft limit to the hard one.
            let limit = libc::rlimit {
                rlim_cur: max,
                rlim_max: max,
            };
            // SAFETY: runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed; setrlimit is one, and
            // `limit` is a plain value copied into the closure.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut stderr = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (first_line, line) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = first_line.send(stdout.read_line(&mut line).map(|_| line));
            // Keep the transcript drained, or the chat would block on it.
            let _ = io::copy(&mut stdout, &mut io::sink());
        });
        let mut server = Watched {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: Some(stderr),
        };
        let first = match line.recv_timeout(TIMEOUT) {
            Ok(Ok(line)) => line,
            _ => panic!("{bin} did not start; stderr:\n{}", server.stderr()),
        };
        server.addr = first
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("expected `listening on IP:PORT`, got {first:?}"));
        server
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn proc_file(&self, name: &str) -> String {
        fs::read_to_string(format!("/proc/{}/{name}", self.child.id()))
            .unwrap_or_else(|e| panic!("/proc/{}/{name}: {e}", self.child.id()))
    }

    /// Resident memory, in KiB (`VmRSS` in `/proc/PID/status`).
    fn rss_kib(&self) -> u64 {
        self.proc_file("status")
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors (entries of `/proc/PID/fd`).
    fn open_files(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// Waits for the server's descriptors to settle to at most `target`,
    /// and returns how many it has then.
    fn await_open_files(&self, target: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let open = self.open_files();
            if open <= target || Instant::now() >= deadline {
                return open;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server wrote to stderr; stops it first. Gracefully:
    /// its log is written by a thread of its own, and a SIGKILL would lose
    /// what that thread had not written yet (on a loaded machine, even the
    /// warning of the start). Killed if it has not stopped by `TIMEOUT`.
    fn stderr(&mut self) -> String {
        signal(self.child.id(), libc::SIGTERM);
        if wait_with_timeout(&mut self.child, TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stderr
            .take()
            .map(|t| t.join().expect("the stderr reader does not panic"))
            .unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `total` bytes of `byte` from another thread, ignoring errors (the
/// server may close the connection before the end); returns how many went.
fn spray(mut stream: TcpStream, byte: u8, total: usize) -> JoinHandle<usize> {
    thread::spawn(move || {
        let chunk = vec![byte; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            match stream.write(&chunk[..chunk.len().min(total - sent)]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        // Done: the server, lingering until our end of stream, may now finish.
        let _ = stream.shutdown(Shutdown::Write);
        sent
    })
}

#[test]
fn a_line_that_never_ends_is_cut_off_and_the_others_carry_on() {
    let server = Server::start(SERVER3, &[]);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, _) = Peer::join(server.addr());
    let (mut mallory, mallory_nick) = Peer::join(server.addr());

    // 8 MiB and no newline: the server answers after 4097 bytes, then
    // discards the rest until the end of the stream.
    let sending = spray(mallory.writer(), b'x', 8 * 1024 * 1024);
    mallory.expect_last("ERR line too long (max 4096 bytes)");
    bob.skip_to(&format!("* {mallory_nick} left"));
    alice.send("still here\n");
    bob.skip_to(&format!("<{alice_nick}> still here"));
    sending.join().expect("the writer does not panic");
}

#[test]
fn too_many_connections_from_one_address_are_told_so() {
    let server = Server::start(SERVER3, &["--max-per-ip", "2"]);
    let (mut first, _) = Peer::join(server.addr());
    let (_second, _) = Peer::join(server.addr());
    let mut third = Peer::connect(server.addr());
    third.send("Hi\n");
    third.expect_last("ERR busy: too many connections from your address");
    // A place comes back when a connection goes.
    first.send("bye\n");
    first.skip_to("Bye");
    assert_eq!(first.line(), None, "bye ends the connection");
    for _ in 0..100 {
        let mut again = Peer::connect(server.addr());
        again.send("Hi\n");
        match again.line().as_deref() {
            Some("Hello") => return,
            // The first connection's leave may not have been counted yet.
            Some("ERR busy: too many connections from your address") => {}
            other => panic!("expected Hello or the busy line, got {other:?}"),
        }
    }
    panic!("the address never got its place back");
}

#[test]
fn a_flood_cuts_off_the_slow_reader_not_the_fast_one_and_memory_stays_bounded() {
    const LINE: usize = 1000;
    const MAX_FLOOD: usize = 256 * 1024 * 1024;
    let server = Watched::start(SERVER3, &NO_FLOOD_CONTROL, None);
    let (flooder, flooder_nick) = Peer::join(server.addr());
    let (mut fast, _) = Peer::join(server.addr());
    let (mut slow, slow_nick) = Peer::join(server.addr());
    fast.skip_to(&format!("* {slow_nick} joined"));
    let rss_before = server.rss_kib();

    // The flooder sends numbered lines as fast as the server takes them,
    // until told to stop, then `done`.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = Arc::clone(&stop);
        let mut to = flooder.writer();
        thread::spawn(move || {
            let mut sent = 0;
            let mut batch = Vec::with_capacity(64 * (LINE + 1));
            while !stop.load(Ordering::Relaxed) && sent * LINE < MAX_FLOOD {
                batch.clear();
                for _ in 0..64 {
                    let number = format!("{sent:08} ");
                    batch.extend_from_slice(number.as_bytes());
                    batch.resize(batch.len() + LINE - number.len(), b'f');
                    batch.push(b'\n');
                    sent += 1;
                }
                to.write_all(&batch).expect("the flooder is not cut off");
            }
            to.write_all(b"done\n").expect("write");
            sent
        })
    };

    // The fast reader keeps up, and sees every line, in order, and the slow
    // reader (which never reads) leave.
    let (cut_off_tx, cut_off) = mpsc::channel();
    let reading = thread::spawn(move || {
        let (slow_left, prefix) = (format!("* {slow_nick} left"), format!("<{flooder_nick}> "));
        let done = format!("{prefix}done");
        let mut received = 0;
        loop {
            let line = fast.line().expect("the fast reader is not cut off");
            if line == slow_left {
                let _ = cut_off_tx.send(());
            } else if line == done {
                return received;
            } else {
                let number = line
                    .strip_prefix(&prefix)
                    .and_then(|text| text.split(' ').next())
                    .unwrap_or_else(|| panic!("unexpected {line:?}"));
                assert_eq!(number, format!("{received:08}"), "a line lost");
                received += 1;
            }
        }
    });

    // Meanwhile, watch the server's memory.
    let start = Instant::now();
    let mut rss_peak = rss_before;
    // (If the fast reader fails, its panic is reported by `join` below.)
    while cut_off.try_recv().is_err() && !reading.is_finished() {
        assert!(
            start.elapsed() < 4 * TIMEOUT,
            "the slow reader was not cut off"
        );
        rss_peak = rss_peak.max(server.rss_kib());
        thread::sleep(Duration::from_millis(10));
    }
    let cut_off_after = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().expect("the flooder does not panic");
    let received = reading.join().expect("the fast reader does not panic");
    rss_peak = rss_peak.max(server.rss_kib());
    assert_eq!(received, sent);

    // The slow reader gets what was in flight, then the end: less than all,
    // and (cut off in the middle of a write) maybe half a line.
    let mut slow_bytes = Vec::new();
    match slow.reader.read_to_end(&mut slow_bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the slow reader: {e}"),
    }
    let slow_bytes = slow_bytes.len();
    eprintln!(
        "flood: slow reader cut off after {cut_off_after:?}, having been sent \
         {slow_bytes} bytes; {sent} lines of {LINE} bytes relayed to the fast reader; \
         server RSS {rss_before} KiB before, {rss_peak} KiB at most"
    );
    assert!(slow_bytes < sent * LINE, "the slow reader got everything");
    assert!(rss_peak < 200 * 1024, "RSS peaked at {rss_peak} KiB");
}

#[test]
fn slowloris_clients_are_closed_at_the_greeting_deadline() {
    let server = Server::start(SERVER3, &["--greeting-timeout", "1"]);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, _) = Peer::join(server.addr());

    // Five clients that send one byte every 100 ms and never end a line.
    let start = Instant::now();
    let lorises: Vec<Peer> = (0..5).map(|_| Peer::connect(server.addr())).collect();
    let done = Arc::new(AtomicBool::new(false));
    let trickling: Vec<JoinHandle<()>> = lorises
        .iter()
        .map(|loris| {
            let mut to = loris.writer();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let deadline = Instant::now() + TIMEOUT;
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if to.write_all(b"H").is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();

    // The room is served meanwhile...
    alice.send("during\n");
    bob.skip_to(&format!("<{alice_nick}> during"));
    // ...and each loris is told and closed once its second is up.
    for mut loris in lorises {
        loris.expect_last("ERR timeout: say Hi first");
    }
    let closed_after = start.elapsed();
    done.store(true, Ordering::Relaxed);
    for t in trickling {
        t.join().expect("a loris does not panic");
    }
    eprintln!("slowloris: 5 clients closed {closed_after:?} after connecting");
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    alice.send("after\n");
    bob.skip_to(&format!("<{alice_nick}> after"));
}

#[test]
fn resets_tell_the_room_once_and_harm_no_one_else() {
    let server = Server::start(SERVER3, &[]);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, _) = Peer::join(server.addr());

    // Twenty clients join, leave things half done (a partial line, notices
    // unread), and reset.
    let mut gone = Vec::new();
    for i in 0..20 {
        let (mut peer, nick) = Peer::join(server.addr());
        peer.send(format!("half a line {i}"));
        peer.reset();
        gone.push(nick);
    }
    for nick in &gone {
        bob.skip_to(&format!("* {nick} left"));
    }
    alice.send("still here\n");
    bob.skip_to(&format!("<{alice_nick}> still here"));
}

#[test]
fn a_reset_with_output_in_flight_harms_no_one_else() {
    const LINES: usize = 300;
    let server = Server::start(SERVER3, &NO_FLOOD_CONTROL);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, _) = Peer::join(server.addr());
    let (carol, carol_nick) = Peer::join(server.addr());
    bob.skip_to(&format!("* {carol_nick} joined"));

    // Carol does not read while 300 KB is sent her way, then resets: the
    // server's next write to her, or read from her, fails.
    let text = "x".repeat(1000);
    let mut send_lines = |from: usize| {
        let batch: String = (from..from + LINES)
            .map(|i| format!("{i} {text}\n"))
            .collect();
        alice.send(batch);
    };
    send_lines(0);
    for i in 0..LINES {
        bob.skip_to(&format!("<{alice_nick}> {i} {text}"));
    }
    carol.reset();
    send_lines(LINES);
    // Bob gets every line, in order, with Carol's departure somewhere.
    let mut next = LINES;
    let mut carol_left = false;
    while next < 2 * LINES {
        let line = bob.line().expect("bob is served");
        if line == format!("* {carol_nick} left") {
            carol_left = true;
        } else {
            assert_eq!(line, format!("<{alice_nick}> {next} {text}"));
            next += 1;
        }
    }
    if !carol_left {
        bob.skip_to(&format!("* {carol_nick} left"));
    }
}

#[test]
fn the_echo_server_shrugs_off_resets() {
    let server = Server::start(SERVER4, &[]);
    let mut control = connect(server.addr());
    for i in 0..20 {
        let mut peer = Peer::connect(server.addr());
        // Its echo is never read, and the reset may come while it is queued.
        peer.send(vec![b'e'; 64 * 1024]);
        if i % 2 == 0 {
            // Make sure some of the echo is on its way before the reset.
            let mut first = [0; 1];
            peer.reader.read_exact(&mut first).expect("an echo");
        }
        peer.reset();
        control.write_all(b"ping\n").expect("write");
        expect_bytes(&mut control, b"ping\n", TIMEOUT);
    }
}

#[test]
fn a_half_closed_echo_client_gets_all_its_echo_then_the_end() {
    let server = Server::start(SERVER4, &[]);
    let mut peer = Peer::connect(server.addr());
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut to = peer.writer();
    let sent = data.clone();
    // No `bye`: the data, then the end of the client's side of the stream.
    let writing = thread::spawn(move || {
        to.write_all(&sent).expect("write");
        to.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut echoed = Vec::new();
    peer.reader
        .read_to_end(&mut echoed)
        .expect("the echo, then the end");
    writing.join().expect("the writer does not panic");
    assert!(
        echoed == data,
        "{} bytes echoed of {}",
        echoed.len(),
        data.len()
    );
}

#[test]
fn a_half_closed_chat_client_gets_its_answers_then_the_end() {
    let server = Server::start(SERVER3, &[]);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, bob_nick) = Peer::join(server.addr());
    alice.skip_to(&format!("* {bob_nick} joined"));

    // Bob asks, says something, and shuts his side without `bye`.
    bob.send("/who\nlast words\n");
    bob.stream.shutdown(Shutdown::Write).expect("shutdown");
    bob.expect_last(&format!("* 2 online: {alice_nick}, {bob_nick}"));
    alice.skip_to(&format!("<{bob_nick}> last words"));
    alice.skip_to(&format!("* {bob_nick} left"));
}

/// A thousand connections that open and vanish, in four ways (at once,
/// after a greeting, mid-line, with a reset), while a control client is
/// answered every hundred; afterwards the server holds no more descriptors
/// than before. `round_trip` checks that a client (new, or the control one)
/// is served.
fn a_thousand_vanishing_connections(bin: &str, round_trip: fn(&mut Peer)) {
    let server = Watched::start(bin, &[], None);
    let mut control = Peer::connect(server.addr());
    round_trip(&mut control);
    let baseline = server.open_files();
    let start = Instant::now();
    for i in 0..1000 {
        let mut peer = Peer::connect(server.addr());
        match i % 4 {
            0 => drop(peer),
            1 => peer.send("Hi\n"),
            2 => peer.send("Hel"),
            _ => {
                peer.send("Hi\n");
                peer.reset();
            }
        }
        if i % 100 == 99 {
            round_trip(&mut control);
        }
    }
    let took = start.elapsed();
    // The kernel queues connections for accepting in order: once a new one
    // is answered, every one before it has been accepted.
    let mut probe = Peer::connect(server.addr());
    round_trip(&mut probe);
    drop(probe);
    let open = server.await_open_files(baseline, Duration::from_secs(5));
    round_trip(&mut control);
    eprintln!(
        "{bin}: 1000 connections opened and dropped in {took:?}; \
         descriptors {baseline} before, {open} after"
    );
    assert!(open <= baseline, "{open} descriptors, {baseline} before");
}

#[test]
fn a_thousand_vanishing_connections_leave_no_trace_on_the_chat_server() {
    a_thousand_vanishing_connections(SERVER3, |control| {
        // `Hi` greets a new client, and is a plain message from one that
        // has greeted; either way `/who` is answered. The notices of the
        // others coming and going are skipped.
        control.send("Hi\n/who\n");
        loop {
            let line = control.line().expect("the control client is served");
            if line.starts_with("* ") && line.contains(" online") {
                return;
            }
        }
    });
}

#[test]
fn a_thousand_vanishing_connections_leave_no_trace_on_the_echo_server() {
    a_thousand_vanishing_connections(SERVER4, |control| {
        control.send("ping\n");
        assert_eq!(control.line().as_deref(), Some("ping"));
    });
}

#[test]
fn hostile_text_arrives_clean_under_the_true_nick() {
    let server = Server::start(SERVER3, &[]);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, _) = Peer::join(server.addr());
    let cases: [(&[u8], &str); 8] = [
        // Not 0xFF: that starts a telnet command, which is stripped.
        (b"bad \xfe\x80 utf8", "bad \u{fffd}\u{fffd} utf8"),
        (b"nul\x00byte", "nulbyte"),
        (b"\x1b[2J\x1b[31mred\x1b[0m", "[2J[31mred[0m"),
        (b"hello\rfake", "hellofake"),
        ("c1 \u{9b}31m csi".as_bytes(), "c1 31m csi"),
        (b"<bob> I am bob", "<bob> I am bob"),
        (b"* bob left", "* bob left"),
        (b"\x07bell\x08\x7f", "bell"),
    ];
    for (sent, _) in cases {
        alice.send([sent, b"\n"].concat());
    }
    for (_, shown) in cases {
        // `line` checks that what arrives is UTF-8, and here it is checked
        // for controls: only text reaches Bob's terminal.
        let line = bob.line().expect("a line");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert_eq!(line, format!("<{alice_nick}> {shown}"));
    }
    alice.send("/nick \x1b[31mbob\n");
    alice.skip_to("ERR a nick may only have letters, digits, _ and -");
}

#[test]
fn with_few_descriptors_the_client_limit_fits_them_and_the_rest_are_told_busy() {
    const MAX_FILES: u64 = 64;
    // 64 files, less the 32 a server keeps for itself, less an eighth of
    // the rest for connections that are closing.
    const FITTED: usize = 28;
    const CROWD: usize = 60;
    let mut server = Watched::start(SERVER3, &["--quiet"], Some(MAX_FILES));
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut bob, _) = Peer::join(server.addr());

    // Every one of the crowd is answered at once, one way or the other:
    // nobody waits unaccepted because the server ran out of descriptors.
    let mut crowd: Vec<Peer> = (0..CROWD)
        .map(|_| {
            let mut peer = Peer::connect(server.addr());
            peer.send("Hi\n");
            peer
        })
        .collect();
    let (mut greeted, mut refused) = (0, 0);
    for peer in &mut crowd {
        match peer.line().as_deref() {
            Some("Hello") => greeted += 1,
            // Told, or (past the refusals' share of closing places) closed
            // without a word.
            Some(line) if line.starts_with("ERR busy") => refused += 1,
            None => refused += 1,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((greeted, refused), (FITTED - 2, CROWD - (FITTED - 2)));
    assert!(server.open_files() < MAX_FILES as usize);
    alice.send("still served\n");
    bob.skip_to(&format!("<{alice_nick}> still served"));
    // Gone before the stop, which would otherwise linger for them.
    drop((alice, bob, crowd));
    let stderr = server.stderr();
    assert!(
        stderr.contains(&format!(
            "serving at most {FITTED} clients, not 10000: the open-file limit is {MAX_FILES}"
        )),
        "stderr: {stderr}"
    );
}

#[test]
fn sigterm_under_load_delivers_everything_then_the_notice_then_the_end() {
    const SENDERS: usize = 2;
    const READERS: usize = 2;
    let mut server = Server::start(SERVER3, &NO_FLOOD_CONTROL);
    let peers: Vec<(Peer, String)> = (0..SENDERS + READERS)
        .map(|_| Peer::join(server.addr()))
        .collect();
    let nicks: Vec<String> = peers.iter().map(|(_, nick)| nick.clone()).collect();

    // Every peer reads everything to the end on a thread of its own, then
    // closes its side (the server lingers until then).
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for (i, (mut peer, _)) in peers.into_iter().enumerate() {
        if i < SENDERS {
            let mut to = peer.writer();
            let stop = Arc::clone(&stop);
            senders.push(thread::spawn(move || {
                // Batches of 50 lines, 1 ms apart: load that every reader
                // keeps up with, so that nobody hits the output limit.
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    let batch: String = (n..n + 50).map(|k| format!("{k} load\n")).collect();
                    if to.write_all(batch.as_bytes()).is_err() {
                        break;
                    }
                    n += 50;
                    thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        readers.push(thread::spawn(move || {
            let mut lines = Vec::new();
            while let Some(line) = peer.line() {
                lines.push(line);
            }
            let _ = peer.stream.shutdown(Shutdown::Both);
            lines
        }));
    }

    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_with_timeout(TIMEOUT);
    let exited_after = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("a sender does not panic");
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");

    let mut relayed = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let lines = reader.join().expect("a reader does not panic");
        let (last, before) = lines.split_last().expect("some lines");
        assert_eq!(
            last, "* server shutting down",
            "the last line of {}",
            nicks[i]
        );
        // Each sender's lines arrive in order with none missing, up to
        // wherever the shutdown cut them.
        let mut next = [0; SENDERS];
        for line in before {
            if let Some((s, text)) = nicks[..SENDERS]
                .iter()
                .enumerate()
                .find_map(|(s, nick)| Some((s, line.strip_prefix(&format!("<{nick}> "))?)))
            {
                assert_eq!(text, format!("{} load", next[s]), "to {}", nicks[i]);
                next[s] += 1;
                relayed += 1;
            } else {
                assert!(line.starts_with("* "), "unexpected {line:?}");
            }
        }
        if i < SENDERS {
            assert_eq!(next[i], 0, "a sender got its own lines back");
        }
    }
    eprintln!(
        "SIGTERM under load: {relayed} lines delivered in all; exit 0 after {exited_after:?}"
    );
    assert!(relayed > 0, "there was no load");
}

/// One chat session of the soak: join, say `lines` things while reading
/// everything on another thread, and go, in one of three ways. Returns how
/// many lines the session was sent.
fn chat_session(addr: SocketAddr, lines: usize, way: usize) -> usize {
    let (mut peer, _) = Peer::join(addr);
    let mut from = peer.reader.get_ref().try_clone().expect("try_clone");
    let reading = thread::spawn(move || {
        let mut count = 0;
        let mut buf = [0; 16 * 1024];
        // Count newlines to the end (or a reset): all this session reads.
        while let Ok(n @ 1..) = from.read(&mut buf) {
            count += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
        count
    });
    for i in 0..lines {
        peer.send(format!("soak line {i}\n"));
        thread::sleep(Duration::from_millis(5));
    }
    match way {
        0 => peer.send("bye\n"),
        1 => peer.stream.shutdown(Shutdown::Write).expect("shutdown"),
        _ => {
            let _ = peer.stream.shutdown(Shutdown::Read);
            peer.reset();
        }
    }
    reading.join().expect("the reader does not panic")
}

/// One echo session of the soak: `len` bytes there and back, then `bye`.
fn echo_session(addr: SocketAddr, len: usize) {
    let mut peer = Peer::connect(addr);
    let data: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut to = peer.writer();
    let sent = data.clone();
    let writing = thread::spawn(move || to.write_all(&sent).expect("write"));
    expect_bytes(&mut peer.stream, &data, TIMEOUT);
    writing.join().expect("the writer does not panic");
    peer.send("\nbye\n");
    expect_bytes(&mut peer.stream, b"\nbye\n", TIMEOUT);
}

#[test]
#[ignore = "a soak of several minutes; see docs/reliability.md"]
fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let chat = Watched::start(SERVER3, &["--quiet"], None);
    let echo = Watched::start(SERVER4, &["--quiet"], None);
    let report = |when: &str| {
        eprintln!(
            "soak {when}: server3 RSS {} KiB, {} fds; server4 RSS {} KiB, {} fds",
            chat.rss_kib(),
            chat.open_files(),
            echo.rss_kib(),
            echo.open_files()
        );
    };
    report("start");
    let start_files = (chat.open_files(), echo.open_files());

    // One participant stays throughout and reads everything.
    let (mut witness, _) = Peer::join(chat.addr());
    let witness_reading = thread::spawn(move || {
        let mut count = 0;
        while witness.line().is_some() {
            count += 1;
        }
        count
    });

    let deadline = Instant::now() + Duration::from_secs(secs);
    let (chat_addr, echo_addr) = (chat.addr(), echo.addr());
    let chatters: Vec<JoinHandle<(usize, usize)>> = (0..8)
        .map(|w| {
            thread::spawn(move || {
                let (mut sessions, mut received) = (0, 0);
                while Instant::now() < deadline {
                    received += chat_session(chat_addr, 10 + w, sessions + w);
                    sessions += 1;
                }
                (sessions, received)
            })
        })
        .collect();
    let echoers: Vec<JoinHandle<(usize, usize)>> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                let (mut sessions, mut bytes) = (0, 0);
                while Instant::now() < deadline {
                    let len = 1 + (sessions * 7919 + w * 104_729) % (256 * 1024);
                    echo_session(echo_addr, len);
                    sessions += 1;
                    bytes += len;
                }
                (sessions, bytes)
            })
        })
        .collect();

    let (mut peak_chat, mut peak_echo) = (0, 0);
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        peak_chat = peak_chat.max(chat.rss_kib());
        peak_echo = peak_echo.max(echo.rss_kib());
        if last_report.elapsed() >= Duration::from_secs(30) {
            report("running");
            last_report = Instant::now();
        }
        thread::sleep(Duration::from_millis(100));
    }
    let (chat_sessions, chat_lines) = chatters
        .into_iter()
        .map(|t| t.join().expect("a chatter does not panic"))
        .fold((0, 0), |(s, l), (ds, dl)| (s + ds, l + dl));
    let (echo_sessions, echo_bytes) = echoers
        .into_iter()
        .map(|t| t.join().expect("an echoer does not panic"))
        .fold((0, 0), |(s, b), (ds, db)| (s + ds, b + db));

    // The witness is still served, then leaves; everything is given back.
    let (mut last, _) = Peer::join(chat.addr());
    last.send("bye\n");
    last.expect_last("Bye");
    // Closing our end ends the server's lingering close at once.
    drop(last);
    let chat_files = chat.await_open_files(start_files.0 + 1, Duration::from_secs(10));
    let echo_files = echo.await_open_files(start_files.1, Duration::from_secs(10));
    report("end");
    eprintln!(
        "soak of {secs} s: {chat_sessions} chat sessions received {chat_lines} lines; \
         {echo_sessions} echo sessions echoed {echo_bytes} bytes; peak RSS server3 \
         {peak_chat} KiB, server4 {peak_echo} KiB"
    );
    drop(chat);
    let witnessed = witness_reading.join().expect("the witness does not panic");
    eprintln!("soak: the witness read {witnessed} lines");
    assert!(chat_files <= start_files.0 + 1, "server3 kept descriptors");
    assert!(echo_files <= start_files.1, "server4 kept descriptors");
}

// --- Flow control (issue 9): what one client can no longer do to the others.

const SERVER1: &str = env!("CARGO_BIN_EXE_server1");
const SERVER2: &str = env!("CARGO_BIN_EXE_server2");

/// Watches `server`'s memory until `done` returns true (at most `within`);
/// returns the peak RSS in KiB.
fn peak_rss_until(server: &Watched, within: Duration, mut done: impl FnMut() -> bool) -> u64 {
    let deadline = Instant::now() + within;
    let mut peak = server.rss_kib();
    while !done() {
        assert!(Instant::now() < deadline, "not done within {within:?}");
        peak = peak.max(server.rss_kib());
        thread::sleep(Duration::from_millis(10));
    }
    peak.max(server.rss_kib())
}

#[test]
fn pipelined_who_from_clients_that_never_read_cannot_take_the_memory() {
    // The amplification attack: a `/who` of five bytes is answered with a
    // line of 33 KB in a room of 1,000 long nicks. Four clients that never
    // read pipeline 64 KiB of them each: 1.7 GB of answers, if the server
    // answered all it read.
    const ROOM: usize = 1000;
    let server = Watched::start(SERVER3, &NO_FLOOD_CONTROL, None);
    let mut room = Vec::with_capacity(ROOM);
    for i in 0..ROOM {
        let (mut peer, _) = Peer::join(server.addr());
        peer.send(format!("/nick n{i:031}\n"));
        room.push(peer);
    }
    let (mut witness, witness_nick) = Peer::join(server.addr());
    let (mut other, _) = Peer::join(server.addr());
    // Every rename is done once `/who` lists the 1,000 long nicks.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        witness.send("/who\n");
        let mut who = witness.line().expect("a /who answer");
        while !who.contains(" online") {
            who = witness.line().expect("a /who answer");
        }
        if who.matches(", n").count() + usize::from(who.contains(": n")) >= ROOM {
            break;
        }
        assert!(Instant::now() < deadline, "the renames did not finish");
    }
    let rss_before = server.rss_kib();

    let who = "/who\n".repeat(64 * 1024 / 5);
    let hogs: Vec<JoinHandle<()>> = (0..4)
        .map(|_| {
            let (hog, _) = Peer::join(server.addr());
            let mut to = hog.writer();
            let who = who.clone();
            thread::spawn(move || {
                // The server stops reading a hog that does not read its
                // answers: this write may block until the test ends.
                let _ = to.set_write_timeout(Some(Duration::from_secs(3)));
                let _ = to.write_all(who.as_bytes());
                drop(hog);
            })
        })
        .collect();

    // While they try, the room is live, and the memory stays put.
    let started = Instant::now();
    let mut said = 0;
    let peak = peak_rss_until(&server, 2 * TIMEOUT, || {
        witness.send(format!("still here {said}\n"));
        let wanted = format!("<{witness_nick}> still here {said}");
        loop {
            let line = other.line().expect("the room is live");
            if line == wanted {
                break;
            }
        }
        said += 1;
        started.elapsed() > Duration::from_secs(2)
    });
    for hog in hogs {
        hog.join().expect("a hog does not panic");
    }
    eprintln!(
        "/who amplification: RSS {rss_before} KiB before, {peak} KiB at most; \
         {said} round trips in the room meanwhile"
    );
    assert!(
        peak - rss_before < 64 * 1024,
        "RSS grew by {} KiB",
        peak - rss_before
    );
    drop(room);
}

/// Joins `count` clients that read everything they are sent on threads of
/// their own, each returning how many lines `<nick> x` it got before
/// `<nick> end`.
fn readers_of(addr: SocketAddr, nick: &str, count: usize) -> Vec<JoinHandle<usize>> {
    (0..count)
        .map(|_| {
            let (mut peer, _) = Peer::join(addr);
            let (x, end) = (format!("<{nick}> x"), format!("<{nick}> end"));
            thread::spawn(move || {
                let mut got = 0;
                loop {
                    let line = peer.line().expect("a reader is not cut off");
                    if line == x {
                        got += 1;
                    } else if line == end {
                        return got;
                    }
                }
            })
        })
        .collect()
}

#[test]
fn one_burst_of_tiny_lines_reaches_every_fast_reader_whole() {
    // 384 KiB of `x\n` in one write: 196,608 lines, about 2 MB to each of
    // 20 readers that keep reading. It used to cut them all off.
    const LINES: usize = 384 * 1024 / 2;
    let server = Watched::start(SERVER3, &NO_FLOOD_CONTROL, None);
    let (mut sender, nick) = Peer::join(server.addr());
    let readers = readers_of(server.addr(), &nick, 20);
    // The last reader's join, told to the sender, means all have joined.
    let mut burst = "x\n".repeat(LINES);
    burst.push_str("end\n");
    let mut joined = 0;
    while joined < 20 {
        if sender.line().expect("join notices").ends_with(" joined") {
            joined += 1;
        }
    }
    sender.send(&burst);
    for reader in readers {
        assert_eq!(reader.join().expect("a reader does not panic"), LINES);
    }
}

#[test]
fn a_private_flood_reaches_its_target_whole_and_its_nick_stays_taken() {
    // 1 MiB of `/msg alice x`: 80,659 private lines, 1.8 MB to alice. She
    // used to be cut off after 18 KB, and the sender took her nick.
    const LINES: usize = 1024 * 1024 / 13;
    let server = Watched::start(SERVER3, &NO_FLOOD_CONTROL, None);
    let (mut alice, alice_nick) = Peer::join(server.addr());
    let (mut sender, sender_nick) = Peer::join(server.addr());
    alice.skip_to(&format!("* {sender_nick} joined"));
    let line = format!("/msg {alice_nick} x\n");
    let flood = line.repeat(LINES);
    let mut to = sender.writer();
    let writing = thread::spawn(move || to.write_all(flood.as_bytes()));
    let private = format!("<{sender_nick}> (private) x");
    for i in 0..LINES {
        let got = alice.line().expect("alice is not cut off");
        assert_eq!(got, private, "line {i}");
    }
    writing.join().unwrap().expect("the sender is not cut off");
    sender.send(format!("/nick {alice_nick}\n"));
    assert_eq!(
        sender.line().as_deref(),
        Some(format!("ERR nick {alice_nick} is taken").as_str())
    );
}

#[test]
fn participants_that_never_read_cost_about_their_output_limit() {
    // 100 participants that never read, 512 KiB of `x\n` relayed to them
    // (2.6 MB owed to each, 1 MiB the limit): the server's memory grew by
    // 611 MiB when every tiny line was a queued buffer of its own.
    const LINES: usize = 512 * 1024 / 2;
    let server = Watched::start(SERVER3, &NO_FLOOD_CONTROL, None);
    let (mut sender, nick) = Peer::join(server.addr());
    let mut witness = readers_of(server.addr(), &nick, 1);
    let idle: Vec<Peer> = (0..100).map(|_| Peer::join(server.addr()).0).collect();
    let mut joined = 0;
    while joined < 101 {
        if sender.line().expect("join notices").ends_with(" joined") {
            joined += 1;
        }
    }
    let rss_before = server.rss_kib();
    let mut burst = "x\n".repeat(LINES);
    burst.push_str("end\n");
    let mut to = sender.writer();
    let writing = thread::spawn(move || to.write_all(burst.as_bytes()));
    let witness = witness.pop().expect("one");
    let peak = peak_rss_until(&server, 4 * TIMEOUT, || witness.is_finished());
    assert_eq!(witness.join().expect("the witness does not panic"), LINES);
    writing.join().unwrap().expect("the sender is not cut off");
    let grown_mib = (peak - rss_before) / 1024;
    eprintln!("100 non-readers at a 1 MiB limit: RSS grew by {grown_mib} MiB at most");
    assert!(grown_mib < 150, "RSS grew by {grown_mib} MiB");
    drop(idle);
}

#[test]
fn server1_serves_the_next_client_as_soon_as_the_last_one_has_its_bye() {
    let server = Server::start(SERVER1, &[]);
    let (mut first, _) = Peer::join(server.addr());
    first.send("bye\n");
    assert_eq!(first.line().as_deref(), Some("Bye"));
    // `first` keeps its socket open: it is lingering, no longer a client.
    let (mut next, _) = Peer::join(server.addr());
    next.send("bye\n");
    next.expect_last("Bye");
    drop(first);
}

#[test]
fn server2_lets_go_of_a_closed_client_that_keeps_its_socket() {
    // `bye`, then silence with the socket open. The reader thread of that
    // client used to stay blocked in read() forever, holding its thread, its
    // descriptor and (until it started closing counted apart) its place.
    let server = Watched::start(SERVER2, &["--max-clients", "1"], None);
    let before = server.open_files();
    let (mut first, _) = Peer::join(server.addr());
    first.send("bye\n");
    assert_eq!(first.line().as_deref(), Some("Bye"));
    // The place is free at once: the next client is served.
    let (mut next, _) = Peer::join(server.addr());
    // And the silent one's descriptor is closed at the linger deadline.
    let start = Instant::now();
    let open = server.await_open_files(before + 1, Duration::from_secs(6));
    let lingered = start.elapsed();
    eprintln!("server2: a silent closed client was let go after {lingered:?}");
    assert_eq!(open, before + 1, "the silent client's descriptor is kept");
    assert!(lingered < Duration::from_secs(4), "{lingered:?}");
    next.send("bye\n");
    next.expect_last("Bye");
    drop(first);
}

#[test]
fn refusals_for_one_address_take_no_place_from_the_others() {
    let server = Server::start(SERVER3, &["--max-clients", "5", "--max-per-ip", "1"]);
    let (_first, _) = Peer::join(server.addr());
    // Twenty more from 127.0.0.1, each refused; they keep their sockets.
    let refused: Vec<Peer> = (0..20)
        .map(|_| {
            let mut peer = Peer::connect(server.addr());
            assert_eq!(
                peer.line().as_deref(),
                Some("ERR busy: too many connections from your address")
            );
            peer
        })
        .collect();
    // Someone else, from 127.0.0.2, is served.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut other = Peer {
        reader: BufReader::new(stream.try_clone().unwrap()),
        stream,
    };
    other.send("Hi\n");
    assert_eq!(other.line().as_deref(), Some("Hello"));
    drop(refused);
}

#[test]
fn a_stop_with_silent_clients_that_keep_their_sockets_ends_within_the_linger_time() {
    for bin in [SERVER3, SERVER2] {
        let mut server = Server::start(bin, &[]);
        let peers: Vec<Peer> = (0..3).map(|_| Peer::join(server.addr()).0).collect();
        let signalled = Instant::now();
        server.sigterm();
        let status = server.wait_with_timeout(TIMEOUT);
        let took = signalled.elapsed();
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{bin}: {status:?}");
        let stderr = server.stderr();
        eprintln!("{bin}: stop with 3 silent clients: exit 0 after {took:?}");
        assert!(took < Duration::from_millis(3500), "{bin}: {took:?}");
        assert!(
            stderr.contains("waiting up to") && stderr.contains("stop now"),
            "{bin}: the wait is explained on stderr: {stderr}"
        );
        drop(peers);
    }
}

#[test]
fn with_flood_control_a_flooder_is_slowed_and_the_room_stays_live() {
    // 200 lines in one write, against a budget of 10 at once and 10 a
    // second: the flooder's lines come through at that pace, in order, none
    // dropped, and someone else's line is not stuck behind them.
    let server = Server::start(SERVER3, &["--flood-burst", "10", "--flood-rate", "10"]);
    let (mut flooder, flooder_nick) = Peer::join(server.addr());
    let (mut reader, _) = Peer::join(server.addr());
    let (mut other, other_nick) = Peer::join(server.addr());
    reader.skip_to(&format!("* {other_nick} joined"));
    let flood: String = (0..200).map(|i| format!("flood {i}\n")).collect();
    flooder.send(flood);
    other.send("meanwhile\n");
    let started = Instant::now();
    let (prefix, meanwhile) = (
        format!("<{flooder_nick}> flood "),
        format!("<{other_nick}> meanwhile"),
    );
    let mut next = 0;
    loop {
        let line = reader.line().expect("the reader is served");
        if line == meanwhile {
            break;
        }
        let n: usize = line
            .strip_prefix(&prefix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {line:?}"));
        assert_eq!(n, next, "flood lines in order, none dropped");
        next += 1;
    }
    let waited = started.elapsed();
    eprintln!("flood control: `meanwhile` came after {next} flood lines, {waited:?}");
    assert!(next < 40, "{next} flood lines went before the other's line");
    // The rest keep coming, in order: the flooder is slowed, not cut off.
    for _ in 0..15 {
        let line = reader.line().expect("the flood goes on");
        assert_eq!(line, format!("{prefix}{next}"));
        next += 1;
    }
}
