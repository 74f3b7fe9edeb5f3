//! The TLS endpoint under attack, black-box: what a client on the open
//! internet can do to the built servers over TLS (records cut into single
//! bytes, garbage after the handshake, a `close_notify` that comes with the
//! last data, readers that never read, stalled handshakes, idle sessions),
//! and what it must cost the server: CPU, memory, other clients' service.
//!
//! Every wait is a read with a timeout; all traffic stays on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{self, Certs, Tls};
use common::{ChatClient, Server, TIMEOUT};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

fn path(path: PathBuf) -> String {
    path.display().to_string()
}

/// `bin --tls-port 0 --tls-cert … --tls-key … MORE…`.
fn tls_args(certs: &Certs, more: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--tls-port".to_owned(),
        "0".to_owned(),
        "--tls-cert".to_owned(),
        path(certs.cert()),
        "--tls-key".to_owned(),
        path(certs.key()),
    ];
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// Starts `bin` with TLS on a free port beside the plain one.
fn serve(certs: &Certs, bin: &str, more: &[&str]) -> Server {
    let args = tls_args(certs, more);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(bin, &args)
}

/// A server whose process can be looked at in /proc (for CPU time and
/// memory), which `common::Server` does not tell. Killed when dropped.
struct Watched {
    child: Child,
    addr: SocketAddr,
    tls_addr: SocketAddr,
}

impl Watched {
    fn start(certs: &Certs, bin: &str, more: &[&str]) -> Watched {
        let mut child = Command::new(bin)
            .args(["127.0.0.1", "0"])
            .args(tls_args(certs, more))
            .arg("--quiet")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = || {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("the server's stdout");
            line.trim_end().to_owned()
        };
        let addr = line()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        let tls_addr = line()
            .strip_prefix("listening on tls://")
            .unwrap()
            .parse()
            .unwrap();
        // Keep the pipe open but unread: the chat transcript is small.
        std::mem::forget(stdout);
        Watched {
            child,
            addr,
            tls_addr,
        }
    }

    /// CPU time used so far (user + system), in clock ticks (1/100 s).
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS connection to `addr` whose handshake is done.
fn tls_established(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let mut tls = tls::connect(addr, config);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("a handshake");
    }
    tls
}

/// Reads a line, byte by byte, from a TLS stream.
fn tls_line(tls: &mut Tls) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    loop {
        match tls.read(&mut byte) {
            Ok(1) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Ok(_) => break,
            Err(e) => panic!("reading a line over TLS after {line:?}: {e}"),
        }
    }
    String::from_utf8(line).unwrap()
}

/// Reads until the server ends the connection (`close_notify`, a FIN, or
/// a reset), returning how much plaintext came before; panics if it has
/// not within `within`.
fn tls_read_to_end(tls: &mut Tls, within: Duration) -> usize {
    tls.sock.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    let mut total = 0;
    let mut buf = vec![0; 64 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the server did not end the connection within {within:?} \
                     ({total} bytes came, {:?} passed)",
                    started.elapsed()
                )
            }
            // The end of the stream without `close_notify`, or a reset.
            Err(_) => return total,
        }
    }
}

/// The TLS records of one write of `data` followed by `close_notify`,
/// as the bytes the client would put on the wire.
fn records_with_close_notify(tls: &mut Tls, data: &[u8]) -> Vec<u8> {
    tls.conn.writer().write_all(data).unwrap();
    tls.conn.send_close_notify();
    let mut wire = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut wire).unwrap();
    }
    wire
}

/// A client that says its last line and `close_notify` in one packet, and
/// keeps its socket open to read the answer: TLS's half-close (TLS 1.3
/// lets each side end its direction with `close_notify` on its own, RFC
/// 8446 section 6.1). The server must see that end, answer, then close, as
/// it does when plain TCP ends with a FIN after the last line. rustls
/// yields the line and the end in one read; the end is then never looked
/// at again, since no more bytes come to make the socket readable.
fn the_end_that_comes_with_the_last_data_is_seen(bin: &str, line: &str, answer: &str) {
    let certs = Certs::new();
    let server = serve(&certs, bin, &[]);
    let mut tls = tls_established(server.tls_addr(), &certs.client_config());
    let wire = records_with_close_notify(&mut tls, line.as_bytes());
    // One write: the records arrive in one segment, read in one read.
    tls.sock.write_all(&wire).unwrap();
    let mut got = String::new();
    let mut buf = [0; 4096];
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let ended = loop {
        match tls.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    assert!(got.contains(answer), "no answer: {got:?}");
    assert!(
        ended,
        "answered {got:?}, but still open 3 s after the client's close_notify"
    );
}

#[test]
fn a_close_notify_with_the_last_line_ends_the_echo_on_server4() {
    the_end_that_comes_with_the_last_data_is_seen(SERVER4, "last words\n", "last words\n");
}

#[test]
fn a_close_notify_with_hi_ends_the_chat_on_server3() {
    the_end_that_comes_with_the_last_data_is_seen(SERVER3, "Hi\n", "Hello\n");
}

#[test]
fn a_close_notify_with_hi_ends_the_chat_on_server2() {
    the_end_that_comes_with_the_last_data_is_seen(SERVER2, "Hi\n", "Hello\n");
}

/// A `close_notify` alone, the socket kept open: the server answers with
/// its own and closes, within the linger timeout.
#[test]
fn a_close_notify_alone_is_answered_and_the_connection_closed() {
    let certs = Certs::new();
    for bin in [SERVER3, SERVER2, SERVER4] {
        let server = serve(&certs, bin, &[]);
        let mut tls = tls_established(server.tls_addr(), &certs.client_config());
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        tls_read_to_end(&mut tls, Duration::from_secs(5));
    }
}

/// Says `Hi` over TLS and reads `Hello` and the welcome.
fn tls_join(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let mut tls = tls::connect(addr, config);
    tls.write_all(b"Hi\n").unwrap();
    tls.flush().unwrap();
    assert_eq!(tls_line(&mut tls), "Hello\n");
    let welcome = tls_line(&mut tls);
    assert!(welcome.starts_with("* welcome"), "{welcome:?}");
    tls
}

/// Half a ClientHello, then nothing: a handshake that stalls.
fn stalled_handshake(addr: SocketAddr) -> TcpStream {
    let mut tcp = common::connect(addr);
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    tcp
}

/// Idle TLS sessions, stalled handshakes, a session whose client never read
/// the server's tickets, and one that sent `close_notify` with its line
/// (see above): none may keep the loop busy. A level-triggered writable
/// interest with nothing to write, or a readable one that is never read,
/// spins the CPU while every client is idle.
fn idle_tls_costs_no_cpu(bin: &str) {
    let certs = Certs::new();
    let config = certs.client_config();
    let server = Watched::start(&certs, bin, &["--handshake-timeout", "30"]);
    let mut keep = Vec::new();
    for _ in 0..10 {
        keep.push(tls_join(server.tls_addr, &config));
    }
    let stalled: Vec<_> = (0..10)
        .map(|_| stalled_handshake(server.tls_addr))
        .collect();
    // A client that connected with TLS and never read a byte (the server's
    // whole first flight waits in its socket) nor sent its `Finished`.
    let mut unread = Vec::new();
    for _ in 0..5 {
        let mut tls = tls::connect(server.tls_addr, &config);
        tls.conn.write_tls(&mut tls.sock).unwrap();
        unread.push(tls);
    }
    // Settled: a plain client served after all of them.
    let _ = ChatClient::join(server.addr);
    let mut silent = common::connect(server.addr);
    let before = server.cpu_ticks();
    let started = Instant::now();
    wait_quietly(&mut silent, Duration::from_secs(2));
    let used = server.cpu_ticks() - before;
    let elapsed = started.elapsed();
    assert!(
        used <= 10,
        "the server used {used} ticks of CPU in {elapsed:?} with only idle clients"
    );
    drop((keep, stalled, unread));
}

/// Waits `quiet`, as a read on `stream` that nothing answers.
fn wait_quietly(stream: &mut TcpStream, quiet: Duration) {
    stream.set_read_timeout(Some(quiet)).unwrap();
    match stream.read(&mut [0; 1]) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

#[test]
fn idle_tls_costs_no_cpu_on_server3() {
    idle_tls_costs_no_cpu(SERVER3);
}

#[test]
fn idle_tls_costs_no_cpu_on_server2() {
    idle_tls_costs_no_cpu(SERVER2);
}

/// A TLS participant that never reads while the room talks: like a plain
/// one, it is cut off at the output limit (1 MiB of plaintext queued, and
/// rustls's 64 KiB of records besides), its connection ends, and the
/// server's memory stays bounded while a reader that reads gets it all.
fn a_tls_reader_that_never_reads_is_cut_off(bin: &str) {
    let certs = Certs::new();
    let config = certs.client_config();
    let server = Watched::start(&certs, bin, &["--flood-rate", "0"]);
    let mut stuck = tls_join(server.tls_addr, &config);
    let (mut talker, _) = ChatClient::join(server.addr);
    let (mut reader, _) = ChatClient::join(server.addr);
    let baseline = server.rss_kib();
    // 8 MiB to the room in lines of 4000 bytes: eight times the limit.
    let line = "x".repeat(3990);
    let lines = 2048;
    let mut peak = baseline;
    for i in 0..lines {
        talker.send(&format!("{i:05} {line}"));
        // The reader keeps up, and paces the talker, so that the server
        // is measured while the stuck one's queue would be growing.
        while !reader.line().contains(&format!("{i:05} x")) {}
        if i % 256 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    let grew = peak.saturating_sub(baseline);
    // What the stuck client was sent, before the cut, is at most what its
    // socket buffers, rustls and the output limit hold: a few MiB, never 8.
    let got = tls_read_to_end(&mut stuck, TIMEOUT);
    assert!(got < lines * 4000, "the stuck reader got all {got} bytes");
    assert!(grew < 16 * 1024, "the server grew by {grew} KiB");
}

#[test]
fn a_tls_reader_that_never_reads_is_cut_off_on_server3() {
    a_tls_reader_that_never_reads_is_cut_off(SERVER3);
}

#[test]
fn a_tls_reader_that_never_reads_is_cut_off_on_server2() {
    a_tls_reader_that_never_reads_is_cut_off(SERVER2);
}

/// A socket that writes one byte per system call, with Nagle off: every
/// byte of every record arrives in a segment of its own.
struct Trickle(TcpStream);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match buf.first() {
            Some(&byte) => self.0.write(&[byte]),
            None => Ok(0),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The handshake and then a chat session, every byte on its own: the
/// server assembles the records, answers, and serves everyone else
/// meanwhile (a reader per byte must not mean a turn lost per byte).
fn a_client_that_sends_byte_by_byte_is_served(bin: &str) {
    let certs = Certs::new();
    let server = serve(&certs, bin, &[]);
    let (mut bob, bob_nick) = ChatClient::join(server.addr());
    let tcp = common::connect(server.tls_addr());
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(certs.client_config(), name).unwrap();
    let mut tls = StreamOwned::new(session, Trickle(tcp));
    tls.write_all(b"Hi\n").unwrap();
    tls.flush().unwrap();
    let mut lines = BufReader::new(tls);
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "Hello\n");
    let tls = lines.get_mut();
    tls.write_all(b"one byte at a time\n").unwrap();
    tls.flush().unwrap();
    loop {
        let line = bob.line();
        if line.ends_with("> one byte at a time") {
            break;
        }
    }
    bob.send("and back");
    loop {
        line.clear();
        lines.read_line(&mut line).unwrap();
        if line == format!("<{bob_nick}> and back\n") {
            break;
        }
    }
}

#[test]
fn a_client_that_sends_byte_by_byte_is_served_on_server3() {
    a_client_that_sends_byte_by_byte_is_served(SERVER3);
}

#[test]
fn a_client_that_sends_byte_by_byte_is_served_on_server2() {
    a_client_that_sends_byte_by_byte_is_served(SERVER2);
}

/// Bytes that are no TLS record, after a handshake that went well: that
/// client is closed (after an alert), and the room goes on.
fn garbage_after_the_handshake_costs_only_that_client(bin: &str) {
    let certs = Certs::new();
    let server = serve(&certs, bin, &[]);
    let config = certs.client_config();
    let (mut bob, bob_nick) = ChatClient::join(server.addr());
    let mut alice = tls_join(server.tls_addr(), &config);
    let mut vandal = tls_join(server.tls_addr(), &config);
    // A well-framed application-data record whose contents are noise (it
    // does not decrypt), then plain garbage.
    let mut noise = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    noise.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    noise.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    vandal.sock.write_all(&noise).unwrap();
    vandal.sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    // The server's alert, then the end (or a reset): no hang.
    let _ = vandal.sock.read_to_end(&mut rest);
    bob.send("still here");
    loop {
        if tls_line(&mut alice) == format!("<{bob_nick}> still here\n") {
            break;
        }
    }
}

#[test]
fn garbage_after_the_handshake_costs_only_that_client_on_server3() {
    garbage_after_the_handshake_costs_only_that_client(SERVER3);
}

#[test]
fn garbage_after_the_handshake_costs_only_that_client_on_server2() {
    garbage_after_the_handshake_costs_only_that_client(SERVER2);
}

/// A client that announces a ClientHello of 65,520 bytes (the most a
/// handshake message may be) and sends three records of it, then stalls:
/// rustls keeps what it has of the message until the handshake deadline.
/// Before its handshake a client is a stranger, and what it makes the
/// server hold must be about what a plain stranger can (a partial line,
/// about 4 KiB on the chat servers), not sixteen times as much: with the
/// default 10,000 clients, 49 KiB each is half a gigabyte. A real
/// ClientHello is a few KiB even with post-quantum key shares; one past
/// 8 KiB can be refused.
#[test]
fn a_stalled_handshake_holds_little_memory_however_big_its_clienthello() {
    let certs = Certs::new();
    let server = Watched::start(&certs, SERVER3, &["--handshake-timeout", "30"]);
    // Settled: a plain client served.
    let _ = ChatClient::join(server.addr);
    let before = server.rss_kib();
    let mut record = vec![0x16, 0x03, 0x03, 0x40, 0x00];
    record.extend_from_slice(&[0x01, 0x00, 0xff, 0xf0]);
    record.resize(5 + 16 * 1024, 0);
    let mut next = vec![0x16, 0x03, 0x03, 0x40, 0x00];
    next.resize(5 + 16 * 1024, 0);
    let clients = 100;
    let mut stalled = Vec::new();
    for _ in 0..clients {
        let mut tcp = common::connect(server.tls_addr);
        // Past 8 KiB of handshake the server closes the connection, so a
        // later write may find it reset: that is the server protecting
        // itself, and what this test is about.
        for part in [&record, &next, &next] {
            match tcp.write_all(part) {
                Ok(()) => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    break
                }
                Err(e) => panic!("writing the handshake: {e}"),
            }
        }
        stalled.push(tcp);
    }
    // Everything read: each turn reads every one of them once, 16 KiB at
    // most, and two plain clients joining one after the other take four
    // turns at least (accept, `Hi`; accept, `Hi`).
    let _ = ChatClient::join(server.addr);
    let _ = ChatClient::join(server.addr);
    let per_client = (server.rss_kib().saturating_sub(before)) * 1024 / clients;
    assert!(
        per_client < 16 * 1024,
        "each stalled handshake costs the server {per_client} bytes"
    );
    drop(stalled);
}

/// The shutdown notice and the refusal go through TLS like any line, and a
/// TLS client then reads `close_notify`: a clean end, not a truncation
/// (rustls reads a bare TCP end as `UnexpectedEof`).
fn the_last_words_over_tls_end_with_close_notify(bin: &str) {
    let certs = Certs::new();
    let config = certs.client_config();
    let server = serve(&certs, bin, &["--max-clients", "1"]);
    let mut member = tls_join(server.tls_addr(), &config);
    // Over the limit: told so through TLS, then closed cleanly.
    let mut refused = tls::connect(server.tls_addr(), &config);
    let mut said = String::new();
    refused.sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    refused
        .read_to_string(&mut said)
        .expect("the refusal, then close_notify");
    assert!(said.starts_with("ERR busy"), "{said:?}");
    server.sigterm();
    let mut rest = String::new();
    member.sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    member
        .read_to_string(&mut rest)
        .expect("the notice, then close_notify");
    assert!(rest.contains("shutting down"), "{rest:?}");
}

#[test]
fn the_last_words_over_tls_end_with_close_notify_on_server3() {
    the_last_words_over_tls_end_with_close_notify(SERVER3);
}

#[test]
fn the_last_words_over_tls_end_with_close_notify_on_server2() {
    the_last_words_over_tls_end_with_close_notify(SERVER2);
}

/// A plain connection to the chat from `source` (another loopback address
/// stands for another host), its `Hi` sent; returns what it was answered.
fn hi_from(source: [u8; 4], to: SocketAddr) -> String {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    tcp.write_all(b"Hi\n").unwrap();
    let mut answer = [0; 256];
    let n = tcp.read(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Waits until all of `silent` but two have been told they are too many
/// (on the threaded server each is opened by a thread of its own, in no
/// particular order).
fn refused_but_two(silent: &mut [TcpStream]) {
    let started = Instant::now();
    let mut told = vec![false; silent.len()];
    while told.iter().filter(|&&t| t).count() < silent.len() - 2 {
        assert!(started.elapsed() < TIMEOUT, "not refused: {told:?}");
        for (stream, told) in silent.iter_mut().zip(&mut told) {
            if !*told {
                stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                *told = matches!(stream.read(&mut [0; 256]), Ok(1..));
            }
        }
    }
}

/// `--max-per-ip` is what keeps one host from taking every place of
/// `--max-clients`. Plain connections that say nothing are held to it
/// (the chat counts a connection when it opens, before its `Hi`); TLS
/// connections must be too, in their handshake, or the limit means nothing
/// to whoever connects to the TLS port and stalls: the chat hears of them
/// only once the handshake is done, and until then every one of them
/// holds a place.
fn max_per_ip_holds_for_stalled_handshakes(bin: &str) {
    let certs = Certs::new();
    let server = serve(&certs, bin, &["--max-per-ip", "2", "--max-clients", "10"]);
    // Plain, silent, from one address: all but two are refused at once.
    let mut silent: Vec<_> = (0..10).map(|_| common::connect(server.addr())).collect();
    refused_but_two(&mut silent);
    assert!(hi_from([127, 0, 0, 2], server.addr()).starts_with("Hello"));
    drop(silent);
    // The same over TLS: connections that never begin their handshake.
    let stalled: Vec<_> = (0..10)
        .map(|_| common::connect(server.tls_addr()))
        .collect();
    // Accepted by now: a plain client from that address was answered.
    let _ = hi_from([127, 0, 0, 1], server.addr());
    let answer = hi_from([127, 0, 0, 3], server.addr());
    assert!(
        answer.starts_with("Hello"),
        "another host is turned away: {answer:?}"
    );
    drop(stalled);
}

#[test]
fn max_per_ip_holds_for_stalled_handshakes_on_server3() {
    max_per_ip_holds_for_stalled_handshakes(SERVER3);
}

#[test]
fn max_per_ip_holds_for_stalled_handshakes_on_server2() {
    max_per_ip_holds_for_stalled_handshakes(SERVER2);
}

/// TLS 1.2 from a client nobody here wrote: `openssl s_client -tls1_2`
/// chats, then asks to renegotiate (its `R` command), which rustls refuses
/// with an alert; that client's session ends and the room is served on.
/// Skipped, saying so, where openssl is not installed (tests/tls.rs makes
/// its absence a failure under CI).
#[test]
fn a_tls12_client_that_asks_to_renegotiate_costs_only_itself() {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let certs = Certs::new();
    let server = serve(&certs, SERVER3, &[]);
    let (mut bob, bob_nick) = ChatClient::join(server.addr());
    let mut openssl = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-verify_return_error"])
        .args(["-connect", &server.tls_addr().to_string()])
        .args(["-servername", "localhost", "-CAfile", &path(certs.ca())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to = openssl.stdin.take().unwrap();
    let mut from = BufReader::new(openssl.stdout.take().unwrap());
    to.write_all(b"Hi\n").unwrap();
    let mut line = String::new();
    while line != "Hello\n" {
        line.clear();
        assert!(from.read_line(&mut line).unwrap() > 0, "no Hello");
    }
    // Without -quiet, a line that is `R` asks for a renegotiation.
    to.write_all(b"R\n").unwrap();
    // The session ends: s_client exits, and its stdout closes. Read on a
    // thread of its own, so that the wait is bounded.
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = from.read_to_string(&mut rest);
        let _ = done.send(rest);
    });
    let ended = ended.recv_timeout(TIMEOUT);
    let _ = openssl.kill();
    let _ = openssl.wait();
    ended.expect("s_client still in session after asking to renegotiate");
    bob.send("after the renegotiation");
    let mut alice = tls_join(server.tls_addr(), &certs.client_config());
    bob.send("and still");
    loop {
        if tls_line(&mut alice) == format!("<{bob_nick}> and still\n") {
            break;
        }
    }
}

/// Records that carry nothing for the handler (key updates, which a TLS
/// 1.3 client may send at any time) are no input: a client that sends only
/// those is idle, and closed at `--idle-timeout` like a silent one. It
/// sends one four times a second, each asking the server to update its
/// keys too, and reads the server's answers between them.
fn key_updates_do_not_keep_a_client_from_idling(bin: &str, more: &[&str]) {
    let certs = Certs::new();
    let mut args = vec!["--idle-timeout", "1"];
    args.extend_from_slice(more);
    let server = serve(&certs, bin, &args);
    let mut tls = tls_established(server.tls_addr(), &certs.client_config());
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still open after {:?} of key updates",
            started.elapsed()
        );
        tls.conn.refresh_traffic_keys().unwrap();
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            break;
        }
        // The wait between updates: a read that times out, or the end.
        match tls.read(&mut [0; 256]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn key_updates_do_not_keep_a_client_from_idling_on_server4() {
    key_updates_do_not_keep_a_client_from_idling(SERVER4, &[]);
}

#[test]
fn key_updates_do_not_keep_a_client_from_idling_on_server2() {
    key_updates_do_not_keep_a_client_from_idling(SERVER2, &["--greeting-timeout", "60"]);
}

/// A TLS client that half-closes TCP (a FIN, no `close_notify`) after its
/// `Hi`: still answered, then closed, as a plain one is.
fn a_half_closed_tls_peer_is_answered(bin: &str) {
    let certs = Certs::new();
    let server = serve(&certs, bin, &[]);
    let mut tls = tls_established(server.tls_addr(), &certs.client_config());
    tls.write_all(b"Hi\n").unwrap();
    tls.flush().unwrap();
    tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(tls_line(&mut tls), "Hello\n");
    assert!(tls_line(&mut tls).starts_with("* welcome"));
    tls_read_to_end(&mut tls, TIMEOUT);
}

#[test]
fn a_half_closed_tls_peer_is_answered_on_server3() {
    a_half_closed_tls_peer_is_answered(SERVER3);
}

#[test]
fn a_half_closed_tls_peer_is_answered_on_server2() {
    a_half_closed_tls_peer_is_answered(SERVER2);
}

/// ClientHellos no server need wait for: a handshake message announced as
/// 16 MiB, a record longer than TLS allows, an SSLv2-format hello. Each is
/// closed at once, long before the handshake deadline.
#[test]
fn impossible_clienthellos_are_closed_at_once() {
    let certs = Certs::new();
    let server = serve(&certs, SERVER3, &["--handshake-timeout", "30"]);
    let hellos: [&[u8]; 3] = [
        &[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0x00, 0x10],
        &[
            0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
        ],
    ];
    for hello in hellos {
        let mut tcp = common::connect(server.tls_addr());
        tcp.write_all(hello).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let ended = match tcp.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        assert!(
            ended,
            "{hello:02x?}: still open after {:?}",
            started.elapsed()
        );
    }
}

/// A ClientHello trickled a byte every 100 ms: each byte is progress, but
/// the handshake deadline is one deadline, not a timeout per read.
fn a_trickled_handshake_is_closed_at_its_deadline(bin: &str) {
    let certs = Certs::new();
    let server = serve(&certs, bin, &["--handshake-timeout", "1"]);
    // A real ClientHello, to trickle.
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(certs.client_config(), name).unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    let mut tcp = common::connect(server.tls_addr());
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    for byte in hello.iter().take(hello.len() - 1) {
        if tcp.write_all(&[*byte]).is_err() {
            break;
        }
        match tcp.read(&mut [0; 256]) {
            Ok(0) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            _ => break,
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a handshake trickled for {:?} is still open",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn a_trickled_handshake_is_closed_at_its_deadline_on_server3() {
    a_trickled_handshake_is_closed_at_its_deadline(SERVER3);
}

#[test]
fn a_trickled_handshake_is_closed_at_its_deadline_on_server2() {
    a_trickled_handshake_is_closed_at_its_deadline(SERVER2);
}
