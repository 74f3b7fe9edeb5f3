//! Running out of file descriptors: the reactor stops watching the
//! listener for a moment instead of spinning on an `accept` that keeps
//! failing, serves whom it has meanwhile, and takes the waiting clients in
//! once descriptors are free again.
//!
//! A test binary of its own, with one test: it lowers its own process's
//! open-file limit, which would starve any test running beside it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use reactor::{Config, ConnId, Context, Handler, Input, Reactor};
use rlimit::Resource;

const WAIT: Duration = Duration::from_secs(10);
const CLIENTS: usize = 30;
/// Descriptors left free when the limit is lowered: fewer than the clients.
const SPARE: u64 = 10;

/// Echoes, and notes the address of every client it opens.
struct Echo {
    opened: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl Handler for Echo {
    type Message = ();
    type Conn = ();

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut ()) {
        let addr = cx.peer_addr(id).expect("a TCP peer");
        self.opened.lock().unwrap().insert(addr);
    }

    fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut Input<'_>) {
        cx.send(id, input);
        input.clear();
    }
}

fn open_files() -> u64 {
    fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

/// Whether every descriptor the limit allows is taken: listing them needs
/// one more.
fn out_of_descriptors() -> bool {
    fs::read_dir("/proc/self/fd").is_err()
}

/// User and system CPU time of this process, from `stat` (opened as
/// `/proc/self/stat` beforehand: there is no descriptor to open it with).
fn cpu_time(stat: &File) -> Duration {
    let mut buf = [0; 1024];
    let n = stat.read_at(&mut buf, 0).expect("/proc/self/stat");
    let stat = std::str::from_utf8(&buf[..n]).expect("text");
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a number"))
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

fn echoed(stream: &mut TcpStream) {
    let mut answer = [0; 5];
    stream.read_exact(&mut answer).expect("the echo");
    assert_eq!(&answer, b"ping\n");
}

#[test]
fn out_of_descriptors_the_reactor_keeps_serving_without_spinning_and_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut reactor = Reactor::new(Config::default()).unwrap();
    reactor.listen(listener).unwrap();
    let handle = reactor.handle();

    // The clients connect before the loop runs: the kernel completes their
    // handshakes and queues them, connected, on the listener.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(WAIT)).unwrap();
            client
        })
        .collect();
    let stat = File::open("/proc/self/stat").unwrap();
    let (soft, hard) = Resource::NOFILE.get().unwrap();
    let limit = open_files() + SPARE;
    Resource::NOFILE.set(limit, hard).unwrap();

    let opened = Arc::new(Mutex::new(HashSet::new()));
    let mut echo = Echo {
        opened: Arc::clone(&opened),
    };
    let server = thread::spawn(move || reactor.run(&mut echo).unwrap());

    // The loop takes clients until it has no descriptor left.
    let deadline = Instant::now() + WAIT;
    while !out_of_descriptors() {
        assert!(Instant::now() < deadline, "never ran out of descriptors");
        thread::sleep(Duration::from_millis(10));
    }
    let (mut served, mut waiting): (Vec<TcpStream>, Vec<TcpStream>) = clients
        .drain(..)
        .partition(|c| opened.lock().unwrap().contains(&c.local_addr().unwrap()));
    assert!(!served.is_empty() && !waiting.is_empty());

    // Saturated: the listener stays readable and `accept` keeps failing,
    // yet the loop sleeps, and serves whom it has.
    let before = cpu_time(&stat);
    thread::sleep(Duration::from_secs(1));
    let cpu = cpu_time(&stat) - before;
    assert!(cpu < Duration::from_millis(300), "spinning: {cpu:?} in 1 s");
    for client in &mut served {
        client.write_all(b"ping\n").unwrap();
        echoed(client);
    }

    // Descriptors free up: the waiting clients are taken in and served.
    drop(served);
    for client in &mut waiting {
        client.write_all(b"ping\n").unwrap();
        echoed(client);
    }
    Resource::NOFILE.set(soft, hard).unwrap();
    handle.stop().unwrap();
    drop(waiting);
    server.join().unwrap();
}
