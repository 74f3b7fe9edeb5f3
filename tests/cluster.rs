//! Servers in one cluster (`--cluster`), from the outside: two and three
//! server3s on one real `redis-server`, which each test starts on a free
//! port of its own (no persistence) and kills when it ends. Every wait is a
//! read with a deadline; nothing sleeps to let something happen.
//!
//! Without `redis-server` the tests say so and pass, except under
//! `CI=true`, where they fail: CI installs it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{signal, ChatClient, Server};

const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const REDIS: &str = "redis-server";
/// How long a test waits for something the cluster does in the background.
const DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` of the test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// A Redis on a free port; `None` (having said why) if there is no
    /// `redis-server` here and this is not CI.
    fn start() -> Option<Redis> {
        installed().then(|| Redis::start_on(free_port()))
    }

    /// A Redis on `port`, once it answers PING.
    fn start_on(port: u16) -> Redis {
        let child = Command::new(REDIS)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis { child, port };
        let deadline = Instant::now() + DEADLINE;
        while !redis.pings() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            // Waiting for a process to listen: there is nothing to read yet.
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// Whether it answers PING.
    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        stream.write_all(b"PING\r\n").is_ok()
            && BufReader::new(stream).read_line(&mut line).is_ok()
            && line == "+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A server3 in this cluster, with a presence TTL of 2 s, flood control off.
    fn server(&self, more: &[&str]) -> Server {
        let url = self.url();
        let mut args = vec!["--cluster", &url, "--cluster-ttl", "2", "--flood-rate", "0"];
        args.extend(more);
        Server::start(SERVER3, &args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `redis-server` is here; if not, says so, and fails under CI.
fn installed() -> bool {
    if Command::new(REDIS).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{REDIS} is not installed, and CI needs it"
    );
    println!("{REDIS} is not installed: cluster test skipped");
    false
}

/// A port nothing listens on (the kernel's pick, let go at once).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

/// A participant of `server` called `nick`.
fn participant(server: &Server, nick: &str) -> ChatClient {
    let (mut client, _) = ChatClient::join(server.addr());
    client.send(&format!("/nick {nick}"));
    expect_soon(&mut client, &format!(" is now {nick}"));
    client
}

/// Reads `client`'s lines until one ends with `end`, within [`DEADLINE`];
/// returns the lines before it.
fn expect_soon(client: &mut ChatClient, end: &str) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no line ending {end:?}; got {before:?}");
        let line = client.line_within(left);
        if line.ends_with(end) {
            return before;
        }
        before.push(line);
    }
}

/// Has `from` (called `nick`) say `ping` until `to`, on another server,
/// hears it: both servers' links are up and subscribed.
fn hear(from: &mut ChatClient, nick: &str, to: &mut ChatClient) {
    let deadline = Instant::now() + DEADLINE;
    let ping = format!("<{nick}> ping");
    loop {
        assert!(Instant::now() < deadline, "{nick} is not heard");
        from.send("ping");
        // A short read: a ping said before the link was up is lost.
        let heard = std::iter::from_fn(|| read_within(to, Duration::from_millis(200)))
            .any(|line| line == ping);
        if heard {
            return;
        }
    }
}

/// The next line within `timeout`, or `None`.
fn read_within(client: &mut ChatClient, timeout: Duration) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.line_within(timeout))).ok()
}

/// Sends `command` until its answer (the next line starting `prefix`) is
/// `expected`, within [`DEADLINE`]: what the other servers did reaches
/// Redis in its own time.
fn poll(client: &mut ChatClient, command: &str, prefix: &str, expected: &str) {
    let deadline = Instant::now() + DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        client.send(command);
        last = loop {
            let line = client.line();
            if line.starts_with(prefix) {
                break line;
            }
        };
        if last == expected {
            return;
        }
    }
    panic!("{command} answered {last:?}, not {expected:?}");
}

#[test]
fn lines_are_relayed_both_ways_and_default_nicks_differ() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.server(&[]), redis.server(&[]));
    let (mut one, nick_one) = ChatClient::join(a.addr());
    let (mut two, nick_two) = ChatClient::join(b.addr());
    assert_ne!(nick_one, nick_two, "default nicks are the cluster's");
    hear(&mut one, &nick_one, &mut two);
    hear(&mut two, &nick_two, &mut one);
    one.send("hello from a");
    expect_soon(&mut two, &format!("<{nick_one}> hello from a"));
    two.send("hello from b");
    expect_soon(&mut one, &format!("<{nick_two}> hello from b"));
}

#[test]
fn a_senders_lines_arrive_in_order_on_the_other_server() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.server(&[]), redis.server(&[]));
    let mut alice = participant(&a, "alice");
    let mut bob = participant(&b, "bob");
    hear(&mut alice, "alice", &mut bob);
    let lines = 500;
    for i in 0..lines {
        alice.send(&format!("line {i}"));
    }
    let mut next = 0;
    while next < lines {
        let line = bob.line();
        if let Some(n) = line.strip_prefix("<alice> line ") {
            assert_eq!(n, next.to_string(), "out of order");
            next += 1;
        }
    }
}

#[test]
fn nicks_are_unique_across_servers_and_free_once_given_up() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.server(&[]), redis.server(&[]));
    let mut alice = participant(&a, "alice");
    let (mut other, _) = ChatClient::join(b.addr());
    other.send("/nick Alice");
    expect_soon(&mut other, "ERR nick Alice is taken");
    alice.send("bye");
    expect_soon(&mut alice, "Bye");
    // Given up as alice left (server a tells Redis in its own time, so
    // until then the claim may be refused).
    let deadline = Instant::now() + DEADLINE;
    loop {
        other.send("/nick alice");
        let answer = loop {
            let line = other.line();
            if line.starts_with("ERR") || line.ends_with(" is now alice") {
                break line;
            }
        };
        if answer.ends_with(" is now alice") {
            break;
        }
        assert_eq!(answer, "ERR nick alice is taken");
        assert!(Instant::now() < deadline, "alice is never given up");
    }
}

#[test]
fn who_and_rooms_span_the_servers() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.server(&[]), redis.server(&[]));
    let mut alice = participant(&a, "alice");
    let _bob = participant(&b, "bob");
    let mut carol = participant(&b, "carol");
    carol.send("/join #rust");
    expect_soon(&mut carol, "* you are now in #rust");
    poll(&mut alice, "/who", "* ", "* 2 online: alice, bob");
    poll(
        &mut alice,
        "/rooms",
        "* ",
        "* 2 rooms: #lobby (2), #rust (1)",
    );
    poll(&mut carol, "/who", "* ", "* 1 online in #rust: carol");
}

#[test]
fn private_messages_and_kicks_reach_other_servers() {
    let Some(redis) = Redis::start() else { return };
    let (mut a, b) = (redis.server(&[]), redis.server(&[]));
    let mut alice = participant(&a, "alice");
    let mut bob = participant(&b, "bob");
    alice.send("/msg bob psst");
    expect_soon(&mut bob, "<alice> (private) psst");
    alice.send("/msg nobody psst");
    expect_soon(&mut alice, "ERR no such nick: nobody");
    a.console("/kick bob");
    expect_soon(&mut bob, "ERR kicked by the operator");
    bob.expect_eof();
}

#[test]
fn three_servers_are_one_room() {
    let Some(redis) = Redis::start() else { return };
    let servers = [redis.server(&[]), redis.server(&[]), redis.server(&[])];
    let mut clients: Vec<ChatClient> = ["a", "b", "c"]
        .iter()
        .zip(&servers)
        .map(|(nick, server)| participant(server, nick))
        .collect();
    poll(&mut clients[0], "/who", "* ", "* 3 online: a, b, c");
    let (first, rest) = clients.split_at_mut(1);
    hear(&mut first[0], "a", &mut rest[0]);
    first[0].send("to all");
    for client in rest {
        expect_soon(client, "<a> to all");
    }
}

#[test]
fn redis_lost_while_running_is_told_and_the_link_comes_back() {
    let Some(redis) = Redis::start() else { return };
    let port = redis.port;
    let (a, b) = (redis.server(&[]), redis.server(&[]));
    let mut alice = participant(&a, "alice");
    let mut carol = participant(&a, "carol");
    let mut bob = participant(&b, "bob");
    hear(&mut alice, "alice", &mut bob);
    drop(redis);
    for client in [&mut alice, &mut carol, &mut bob] {
        expect_soon(client, "* cluster link lost");
    }
    // The chat on each server goes on.
    alice.send("still here");
    expect_soon(&mut carol, "<alice> still here");
    let _redis = Redis::start_on(port);
    for client in [&mut alice, &mut carol, &mut bob] {
        expect_soon(client, "* cluster link restored");
    }
    hear(&mut alice, "alice", &mut bob);
    // Redis lost everything; the servers told it again who is where (in
    // the order they told it, now).
    let deadline = Instant::now() + DEADLINE;
    loop {
        bob.send("/who");
        let line = loop {
            let line = bob.line();
            if line.contains(" online") {
                break line;
            }
        };
        let mut nicks: Vec<&str> = line.split(": ").nth(1).unwrap_or("").split(", ").collect();
        nicks.sort_unstable();
        if nicks == ["alice", "bob", "carol"] {
            break;
        }
        assert!(Instant::now() < deadline, "/who answered {line:?}");
    }
}

#[test]
fn redis_unreachable_at_start_the_server_serves_alone_until_it_is_there() {
    if !installed() {
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = Server::start(SERVER3, &["--cluster", &url]);
    let (mut alice, _) = ChatClient::join(a.addr());
    alice.expect_line("* cluster link lost");
    let (mut bob, _) = ChatClient::join(a.addr());
    bob.expect_line("* cluster link lost");
    expect_soon(&mut alice, " joined");
    let _redis = Redis::start_on(port);
    expect_soon(&mut alice, "* cluster link restored");
    expect_soon(&mut bob, "* cluster link restored");
}

#[test]
fn a_server_killed_leaves_who_within_the_ttl_and_frees_its_nicks() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.server(&[]), redis.server(&[]));
    let mut alice = participant(&a, "alice");
    let _bob = participant(&b, "bob");
    poll(&mut alice, "/who", "* ", "* 2 online: alice, bob");
    drop(b); // SIGKILL: nothing is said to Redis.
    poll(&mut alice, "/who", "* ", "* 1 online: alice");
    let (mut other, _) = ChatClient::join(a.addr());
    other.send("/nick bob");
    expect_soon(&mut other, " is now bob");
}

#[test]
fn a_server_stopped_gracefully_says_its_participants_left_at_once() {
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    // The default TTL, 15 s: what is seen here within the deadline is the
    // stopping server's doing, not its presence expiring.
    let a = Server::start(SERVER3, &["--cluster", &url]);
    let mut b = Server::start(SERVER3, &["--cluster", &url]);
    let mut alice = participant(&a, "alice");
    let mut bob = participant(&b, "bob");
    hear(&mut bob, "bob", &mut alice);
    poll(&mut alice, "/who", "* ", "* 2 online: alice, bob");
    b.sigterm();
    b.expect_exit_success();
    expect_soon(&mut alice, "* bob left");
    alice.send("/who");
    expect_soon(&mut alice, "* 1 online: alice");
}

#[test]
fn a_slow_redis_costs_dropped_lines_counted_in_the_log_not_memory() {
    let Some(redis) = Redis::start() else { return };
    let (mut a, b) = (
        redis.server(&["--max-line", "65536"]),
        redis.server(&["--max-line", "65536"]),
    );
    let mut alice = participant(&a, "alice");
    let mut bob = participant(&b, "bob");
    hear(&mut alice, "alice", &mut bob);
    signal(redis.child.id(), libc::SIGSTOP);
    // Far more than the socket buffers between the server and Redis hold.
    let long = "x".repeat(60_000);
    for _ in 0..600 {
        alice.send(&long);
    }
    // The server kept reading alice: it answers her at once.
    alice.send("/help");
    expect_soon(&mut alice, "* bye              leave");
    signal(redis.child.id(), libc::SIGCONT);
    hear(&mut alice, "alice", &mut bob);
    a.sigterm();
    a.expect_exit_success();
    let log = a.stderr();
    assert!(log.contains("commands dropped"), "log:\n{log}");
}
