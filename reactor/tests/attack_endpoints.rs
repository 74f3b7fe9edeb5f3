//! The lifecycle of connections at its edges, on both drivers: outbound
//! connections to the loop itself (plain and TLS, so that one loop drives
//! both ends of a handshake), to a closed port, to an address that never
//! answers; closed by the handler while connecting or in their handshake;
//! and a stop while some are still connecting. Whatever happens, the
//! handler must hear exactly one `on_close` for every id it was given (by
//! `connect`, or by `on_open`), after its `on_open` if it had one, and
//! nothing about an id after its `on_close`.
//!
//! Real sockets on 127.0.0.1; every wait is a `recv` or an accept with a
//! timeout.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use reactor::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use reactor::rustls::{self, ClientConfig, ServerConfig};
use reactor::threaded::Threaded;
use reactor::{
    CloseReason, Config, ConnId, Connect, Context, Driver, Endpoint, Handler, Input, Origin,
    Reactor,
};

const WAIT: Duration = Duration::from_secs(10);

/// What the handler saw, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    /// `connect` returned this id (the label says which dial it was).
    Dialed(&'static str, ConnId),
    /// `connect` returned this error.
    NotDialed(&'static str, io::ErrorKind),
    Open(ConnId, Option<Origin>),
    Data(ConnId),
    Close(ConnId, CloseReason),
}

/// What the test asks the handler to do.
enum Do {
    /// Connect, and report the id with this label.
    Dial(&'static str, Connect),
    /// Connect and close the id at once, in the same callback.
    DialAndClose(&'static str, Connect),
    /// Close this id.
    Close(ConnId),
    /// Stop the driver.
    Stop,
}

/// Reports every callback.
struct Recorder {
    seen: Sender<Seen>,
}

impl Handler for Recorder {
    type Message = Do;
    type Conn = ();

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut ()) {
        let _ = self.seen.send(Seen::Open(id, cx.origin(id)));
    }

    fn on_data(
        &mut self,
        _cx: &mut dyn Context,
        id: ConnId,
        _conn: &mut (),
        input: &mut Input<'_>,
    ) {
        input.clear();
        let _ = self.seen.send(Seen::Data(id));
    }

    fn on_close(&mut self, _cx: &mut dyn Context, id: ConnId, _conn: (), reason: CloseReason) {
        let _ = self.seen.send(Seen::Close(id, reason));
    }

    fn on_wake(&mut self, cx: &mut dyn Context, what: Do) {
        match what {
            Do::Dial(label, to) => {
                let seen = match cx.connect(to) {
                    Ok(id) => Seen::Dialed(label, id),
                    Err(e) => Seen::NotDialed(label, e.kind()),
                };
                let _ = self.seen.send(seen);
            }
            Do::DialAndClose(label, to) => {
                let id = cx.connect(to).expect("a socket");
                let _ = self.seen.send(Seen::Dialed(label, id));
                cx.close(id);
            }
            Do::Close(id) => cx.close(id),
            Do::Stop => cx.stop(),
        }
    }
}

fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A listener with a full backlog: a connect to it is neither accepted nor
/// refused, until it times out. Returns it, its address, and the
/// connections that filled it (kept open).
fn black_hole() -> (socket2::Socket, SocketAddr, Vec<std::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill it from outside the driver: connects that complete (the
    // backlog takes one or two), until one that does not.
    let mut filling = Vec::new();
    loop {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        match socket.connect_timeout(&addr.into(), Duration::from_millis(200)) {
            Ok(()) => filling.push(socket.into()),
            Err(_) => break,
        }
        assert!(filling.len() < 16, "the backlog never filled");
    }
    (socket, addr, filling)
}

/// The events, waited for one at a time.
struct Events {
    rx: Receiver<Seen>,
    all: Vec<Seen>,
}

impl Events {
    /// Waits for the first event `want` accepts, keeping all in `all`.
    fn expect(&mut self, want: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let seen = self.rx.recv_timeout(WAIT).expect("the handler's report");
            self.all.push(seen.clone());
            if want(&seen) {
                return seen;
            }
        }
    }

    fn dialed(&mut self, label: &'static str) -> ConnId {
        match self.expect(|s| matches!(s, Seen::Dialed(l, _) if *l == label)) {
            Seen::Dialed(_, id) => id,
            _ => unreachable!(),
        }
    }

    /// Takes the rest, once the driver has ended (the sender is gone).
    fn drain(&mut self) {
        while let Ok(seen) = self.rx.recv_timeout(WAIT) {
            self.all.push(seen);
        }
    }
}

/// Every id the handler was given is closed exactly once, after its open,
/// and nothing is said of it after its close.
fn check_exactly_once(all: &[Seen]) {
    #[derive(Default, Debug)]
    struct Life {
        dialed: bool,
        opens: usize,
        closes: usize,
        after_close: Vec<Seen>,
    }
    let mut lives: HashMap<ConnId, Life> = HashMap::new();
    for seen in all {
        let id = match seen {
            Seen::NotDialed(..) => continue,
            Seen::Dialed(_, id) | Seen::Open(id, _) | Seen::Data(id) | Seen::Close(id, _) => *id,
        };
        let life = lives.entry(id).or_default();
        if life.closes > 0 {
            life.after_close.push(seen.clone());
        }
        match seen {
            Seen::Dialed(..) => life.dialed = true,
            Seen::Open(..) => life.opens += 1,
            Seen::Data(_) | Seen::NotDialed(..) => {}
            Seen::Close(..) => life.closes += 1,
        }
    }
    for (id, life) in &lives {
        assert!(
            life.closes == 1 && life.opens <= 1 && life.after_close.is_empty(),
            "{id}: {life:?}\nall: {all:#?}"
        );
        assert!(life.dialed || life.opens == 1, "{id}: closed unopened");
    }
}

/// Runs the whole scenario on driver `D`.
fn every_id_is_closed_exactly_once<D: Driver<Recorder> + Send + 'static>() {
    let (server_tls, client_tls) = tls_configs();
    let mut driver = D::new(Config::default()).unwrap();
    let plain = driver
        .listen_on(TcpListener::bind("127.0.0.1:0").unwrap(), Endpoint::plain())
        .unwrap();
    let secure = driver
        .listen_on(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Endpoint::tls(server_tls),
        )
        .unwrap();
    let plain = driver.local_addr(plain).unwrap();
    let secure = driver.local_addr(secure).unwrap();
    let handle = driver.handle();
    let (tx, rx) = channel();
    let running = thread::spawn(move || {
        driver.run(&mut Recorder { seen: tx }).unwrap();
    });
    let mut events = Events {
        rx,
        all: Vec::new(),
    };
    let localhost = ServerName::try_from("localhost").unwrap();
    let tls = |to: SocketAddr| Connect::new(to).tls(Arc::clone(&client_tls), localhost.clone());
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A TLS server that accepts and never answers the handshake.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_hole, hole, _filling) = black_hole();

    // To itself, plain and TLS: both ends open.
    handle.post(Do::Dial("self", Connect::new(plain))).unwrap();
    let to_self = events.dialed("self");
    events.expect(|s| matches!(s, Seen::Open(id, _) if *id == to_self));
    handle.post(Do::Dial("self tls", tls(secure))).unwrap();
    let to_self_tls = events.dialed("self tls");
    events.expect(|s| matches!(s, Seen::Open(id, _) if *id == to_self_tls));
    // To a port nobody listens on.
    handle
        .post(Do::Dial("closed", Connect::new(closed_port)))
        .unwrap();
    let refused = events.dialed("closed");
    events.expect(|s| matches!(s, Seen::Close(id, _) if *id == refused));
    // Closed while connecting, plain and TLS, to itself and nowhere.
    handle
        .post(Do::DialAndClose("closed at once", Connect::new(plain)))
        .unwrap();
    handle
        .post(Do::DialAndClose("closed at once tls", tls(secure)))
        .unwrap();
    handle
        .post(Do::DialAndClose("closed at once, hole", Connect::new(hole)))
        .unwrap();
    // Closed in its handshake: connected, the server mute.
    handle
        .post(Do::Dial("mute", tls(mute.local_addr().unwrap())))
        .unwrap();
    let in_handshake = events.dialed("mute");
    mute.set_nonblocking(false).unwrap();
    let (_muted, _) = mute.accept().unwrap();
    handle.post(Do::Close(in_handshake)).unwrap();
    events.expect(|s| matches!(s, Seen::Close(id, _) if *id == in_handshake));
    // Still connecting when the stop comes: one to time out before the
    // stop ends, one the stop ends.
    handle
        .post(Do::Dial(
            "hole, short",
            Connect::new(hole).timeout(Duration::from_millis(100)),
        ))
        .unwrap();
    let short = events.dialed("hole, short");
    events.expect(|s| matches!(s, Seen::Close(id, _) if *id == short));
    handle
        .post(Do::Dial(
            "hole, long",
            Connect::new(hole).timeout(Duration::from_secs(2)),
        ))
        .unwrap();
    events.dialed("hole, long");
    let stopping = Instant::now();
    handle.post(Do::Stop).unwrap();
    events.drain();
    running.join().unwrap();
    assert!(stopping.elapsed() < WAIT);
    check_exactly_once(&events.all);
}

/// A connect the loop cannot even start (an address of the wrong family
/// for nothing to route, port 0) is an error from `connect` or a
/// `ConnectFailed`, never a panic nor a hang.
#[test]
fn a_connect_to_port_zero_fails_cleanly() {
    for reactor in [true, false] {
        let (tx, rx) = channel();
        let handle;
        let running = if reactor {
            let driver = Reactor::<Recorder>::new(Config::default()).unwrap();
            handle = driver.handle();
            run_on(driver, tx)
        } else {
            let driver = Threaded::<Do>::new(Config::default()).unwrap();
            handle = driver.handle();
            run_on(driver, tx)
        };
        let zero = SocketAddr::from(([127, 0, 0, 1], 0));
        handle.post(Do::Dial("zero", Connect::new(zero))).unwrap();
        let mut events = Events {
            rx,
            all: Vec::new(),
        };
        let dialed =
            events.expect(|s| matches!(s, Seen::Dialed("zero", _) | Seen::NotDialed("zero", _)));
        if let Seen::Dialed(_, id) = dialed {
            match events.expect(|s| matches!(s, Seen::Close(c, _) | Seen::Open(c, _) if *c == id)) {
                Seen::Close(_, CloseReason::ConnectFailed(kind)) => {
                    assert_ne!(kind, io::ErrorKind::TimedOut)
                }
                other => panic!("{other:?}"),
            }
        }
        handle.post(Do::Stop).unwrap();
        events.drain();
        running.join().unwrap();
        check_exactly_once(&events.all);
    }
}

fn run_on<D: Driver<Recorder> + Send + 'static>(
    mut driver: D,
    tx: Sender<Seen>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || driver.run(&mut Recorder { seen: tx }).unwrap())
}

/// A graceful stop ends within `Config::shutdown_timeout`, whatever the
/// handler's outbound connections are doing: one still connecting (to an
/// address that never answers, with a generous connect timeout) is given up
/// by the stop like any other connection.
fn a_stop_is_not_held_up_by_a_connect<D: Driver<Recorder> + Send + 'static>() {
    let config = Config {
        shutdown_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let driver = D::new(config).unwrap();
    let handle = driver.handle();
    let (tx, rx) = channel();
    let running = run_on(driver, tx);
    let mut events = Events {
        rx,
        all: Vec::new(),
    };
    let (_hole, hole, _filling) = black_hole();
    let slow = Connect::new(hole).timeout(Duration::from_secs(5));
    handle.post(Do::Dial("hole", slow)).unwrap();
    events.dialed("hole");
    let stopping = Instant::now();
    handle.post(Do::Stop).unwrap();
    events.drain();
    running.join().unwrap();
    let took = stopping.elapsed();
    check_exactly_once(&events.all);
    assert!(took < Duration::from_secs(2), "the stop took {took:?}");
}

/// Keeps all its input (a frame that never ends), and reports how much it
/// holds and how each connection ends.
struct Hoarder {
    seen: Sender<Seen>,
    held: Sender<usize>,
}

impl Handler for Hoarder {
    type Message = Do;
    type Conn = ();

    fn on_data(
        &mut self,
        _cx: &mut dyn Context,
        _id: ConnId,
        _conn: &mut (),
        input: &mut Input<'_>,
    ) {
        let _ = self.held.send(input.len());
    }

    fn on_close(&mut self, _cx: &mut dyn Context, id: ConnId, _conn: (), reason: CloseReason) {
        let _ = self.seen.send(Seen::Close(id, reason));
    }

    fn on_wake(&mut self, cx: &mut dyn Context, what: Do) {
        if let Do::Stop = what {
            cx.stop();
        }
    }
}

/// A handler may leave up to `max_input` bytes unconsumed; one byte more
/// is past the limit and closes the connection (`InputLimit`). At exactly
/// the limit, the reactor stops reading that connection but keeps it
/// watched for input (it only peeks, `event_loop/input.rs`, for an end of
/// stream behind held input): the byte that comes next makes it readable
/// for ever, each turn peeks and returns, and the loop spins at 100% CPU
/// with the connection neither read nor closed.
fn one_byte_past_the_input_limit_closes_the_connection<D>()
where
    D: Driver<Hoarder> + Send + 'static,
{
    let config = Config {
        max_input: 1024,
        ..Config::default()
    };
    let mut driver = D::new(config).unwrap();
    let listener = driver
        .listen_on(TcpListener::bind("127.0.0.1:0").unwrap(), Endpoint::plain())
        .unwrap();
    let addr = driver.local_addr(listener).unwrap();
    let handle = driver.handle();
    let (seen_tx, seen) = channel();
    let (held_tx, held) = channel();
    let running = thread::spawn(move || {
        let mut hoarder = Hoarder {
            seen: seen_tx,
            held: held_tx,
        };
        driver.run(&mut hoarder).unwrap();
    });
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut client, &[b'x'; 1024]).unwrap();
    let mut total = 0;
    while total < 1024 {
        total = held.recv_timeout(WAIT).expect("the input handed over");
    }
    std::io::Write::write_all(&mut client, b"y").unwrap();
    let closed = seen.recv_timeout(Duration::from_secs(3));
    handle.post(Do::Stop).unwrap();
    drop(client);
    running.join().unwrap();
    assert!(
        matches!(closed, Ok(Seen::Close(_, CloseReason::InputLimit))),
        "one byte past max_input: {closed:?}"
    );
}

/// An outbound TLS connection whose server accepts and never answers the
/// handshake fails at `Connect::timeout`, which bounds the handshake too.
fn a_mute_tls_server_times_the_connect_out<D: Driver<Recorder> + Send + 'static>() {
    let (_, client_tls) = tls_configs();
    let driver = D::new(Config::default()).unwrap();
    let handle = driver.handle();
    let (tx, rx) = channel();
    let running = run_on(driver, tx);
    let mut events = Events {
        rx,
        all: Vec::new(),
    };
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = Connect::new(mute.local_addr().unwrap())
        .timeout(Duration::from_millis(300))
        .tls(client_tls, ServerName::try_from("localhost").unwrap());
    let started = Instant::now();
    handle.post(Do::Dial("mute", to)).unwrap();
    let id = events.dialed("mute");
    let (_muted, _) = mute.accept().unwrap();
    let closed = events.expect(|s| matches!(s, Seen::Close(c, _) | Seen::Open(c, _) if *c == id));
    assert_eq!(
        closed,
        Seen::Close(id, CloseReason::ConnectFailed(io::ErrorKind::TimedOut))
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    handle.post(Do::Stop).unwrap();
    events.drain();
    running.join().unwrap();
    check_exactly_once(&events.all);
}

/// Runs each test, generic over its driver `D` (handler `H`), once on each
/// driver, as `NAME_on_the_reactor` and `NAME_on_the_threaded_driver`.
macro_rules! on_both_drivers {
    ($($name:ident: $handler:ty),* $(,)?) => {
        mod on_the_reactor {
            $( #[test] fn $name() { super::$name::<reactor::Reactor<$handler>>() } )*
        }
        mod on_the_threaded_driver {
            $( #[test] fn $name() { super::$name::<reactor::threaded::Threaded<super::Do>>() } )*
        }
    };
}

on_both_drivers!(
    every_id_is_closed_exactly_once: super::Recorder,
    a_stop_is_not_held_up_by_a_connect: super::Recorder,
    one_byte_past_the_input_limit_closes_the_connection: super::Hoarder,
    a_mute_tls_server_times_the_connect_out: super::Recorder,
);
