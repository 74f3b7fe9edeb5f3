//! Endpoints on both drivers, against real sockets on 127.0.0.1: several
//! listeners with policies of their own, TLS listeners (the handshake, its
//! deadline, refusals and failures), outbound connections
//! (`Context::connect`) and streams handed over through a `Handle`. Every
//! test runs once per driver (the `on_both_drivers!` list at the end). Every
//! wait is a read, an accept after the handler has seen the connection, or
//! a `recv` with a timeout; nothing sleeps to synchronize.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reactor::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use reactor::rustls::{self, ClientConnection, StreamOwned};
use reactor::threaded::Threaded;
use reactor::{
    CloseReason, Config, ConnId, Connect, Context, Driver, Endpoint, Handle, Handler, Input,
    ListenerId, Origin, Reactor, Refusal,
};

const WAIT: Duration = Duration::from_secs(10);

/// What the test handler saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Open(ConnId, Option<Origin>),
    Data(ConnId, Vec<u8>),
    Close(ConnId, CloseReason),
    /// What `Context::connect` returned.
    Dialed(Result<ConnId, io::ErrorKind>),
}

/// Posted to the handler.
enum Msg {
    /// Connect to this, and send it these bytes at once (before the
    /// connection is established).
    Dial(Connect, &'static [u8]),
    /// Close this connection.
    Close(ConnId),
}

/// Echoes what its clients send (not what the far ends of its own outbound
/// connections do: two echoes would talk forever), closes on `quit`, and
/// reports every callback to the test.
struct Probe {
    seen: Sender<Seen>,
    /// Connect to this as the driver starts (`on_start`).
    dial_at_start: Option<SocketAddr>,
}

impl Handler for Probe {
    type Message = Msg;
    type Conn = ();

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut ()) {
        self.seen.send(Seen::Open(id, cx.origin(id))).unwrap();
    }

    fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut Input<'_>) {
        self.seen.send(Seen::Data(id, input.to_vec())).unwrap();
        if &input[..] == b"quit" {
            cx.close(id);
        } else if cx.origin(id) != Some(Origin::Connected) {
            cx.send(id, input);
        }
        input.clear();
    }

    fn on_close(&mut self, _cx: &mut dyn Context, id: ConnId, _conn: (), reason: CloseReason) {
        self.seen.send(Seen::Close(id, reason)).unwrap();
    }

    fn on_start(&mut self, cx: &mut dyn Context) {
        if let Some(to) = self.dial_at_start {
            let dialed = cx.connect(Connect::new(to)).map_err(|e| e.kind());
            self.seen.send(Seen::Dialed(dialed)).unwrap();
        }
    }

    fn on_wake(&mut self, cx: &mut dyn Context, msg: Msg) {
        match msg {
            Msg::Dial(to, greeting) => {
                let dialed = cx.connect(to).map_err(|e| e.kind());
                if let Ok(id) = dialed {
                    assert!(cx.send(id, greeting));
                }
                self.seen.send(Seen::Dialed(dialed)).unwrap();
            }
            Msg::Close(id) => cx.close(id),
        }
    }

    fn refusal(&self, listener: ListenerId, why: Refusal) -> Option<Bytes> {
        Some(match why {
            Refusal::Full => Bytes::from(format!("ERR busy on {listener:?}\n")),
            Refusal::FromAddress => Bytes::from_static(b"ERR too many from your address\n"),
        })
    }
}

/// Which driver a test runs on.
#[derive(Clone, Copy)]
enum Which {
    Reactor,
    Threads,
}

/// A server on fresh ports, one per endpoint.
struct Running {
    addrs: Vec<SocketAddr>,
    listeners: Vec<ListenerId>,
    handle: Handle<Msg>,
    seen: Receiver<Seen>,
    thread: Option<JoinHandle<()>>,
}

fn serve(which: Which, config: Config, endpoints: Vec<Endpoint>) -> Running {
    serve_probe(which, config, endpoints, None)
}

/// As `serve`, with the handler connecting to `dial_at_start` as it starts.
fn serve_probe(
    which: Which,
    config: Config,
    endpoints: Vec<Endpoint>,
    dial_at_start: Option<SocketAddr>,
) -> Running {
    match which {
        Which::Reactor => serve_on::<Reactor<Probe>>(config, endpoints, dial_at_start),
        Which::Threads => serve_on::<Threaded<Msg>>(config, endpoints, dial_at_start),
    }
}

fn serve_on<D: Driver<Probe> + Send + 'static>(
    config: Config,
    endpoints: Vec<Endpoint>,
    dial_at_start: Option<SocketAddr>,
) -> Running {
    let mut server = D::new(config).unwrap();
    let (mut addrs, mut listeners) = (Vec::new(), Vec::new());
    for endpoint in endpoints {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.push(listener.local_addr().unwrap());
        listeners.push(server.listen_on(listener, endpoint).unwrap());
    }
    let (tx, seen) = channel();
    let handle = server.handle();
    let mut probe = Probe {
        seen: tx,
        dial_at_start,
    };
    let thread = thread::spawn(move || server.run(&mut probe).unwrap());
    Running {
        addrs,
        listeners,
        handle,
        seen,
        thread: Some(thread),
    }
}

impl Running {
    /// The next event the handler saw that `want` accepts, skipping others.
    fn expect(&self, want: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let seen = self.seen.recv_timeout(WAIT).expect("handler event");
            if want(&seen) {
                return seen;
            }
        }
    }

    fn opened(&self) -> (ConnId, Option<Origin>) {
        match self.expect(|s| matches!(s, Seen::Open(..))) {
            Seen::Open(id, origin) => (id, origin),
            _ => unreachable!(),
        }
    }

    fn closed(&self) -> (ConnId, CloseReason) {
        match self.expect(|s| matches!(s, Seen::Close(..))) {
            Seen::Close(id, reason) => (id, reason),
            _ => unreachable!(),
        }
    }

    fn dialed(&self) -> Result<ConnId, io::ErrorKind> {
        match self.expect(|s| matches!(s, Seen::Dialed(_))) {
            Seen::Dialed(result) => result,
            _ => unreachable!(),
        }
    }

    /// Asks the handler to connect to `to` and send `greeting`.
    fn dial(&self, to: Connect, greeting: &'static [u8]) -> Result<ConnId, io::ErrorKind> {
        self.handle.post(Msg::Dial(to, greeting)).unwrap();
        self.dialed()
    }

    fn connect(&self, endpoint: usize) -> TcpStream {
        timeouts(TcpStream::connect(self.addrs[endpoint]).unwrap())
    }

    /// Stops the server and returns what the handler saw that the test
    /// had not taken yet.
    fn stop(mut self) -> Vec<Seen> {
        self.handle.stop().unwrap();
        self.thread.take().unwrap().join().unwrap();
        self.seen.try_iter().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.stop();
            let _ = thread.join();
        }
    }
}

fn timeouts(stream: TcpStream) -> TcpStream {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// A self-signed certificate for `localhost`, made now: the server's
/// configuration and a client's that trusts it.
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    // No process-wide default provider is installed: name it.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A TLS client of `addr`, its handshake done.
fn tls_connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsClient {
    let socket = timeouts(TcpStream::connect(addr).unwrap());
    let session = ClientConnection::new(Arc::clone(config), "localhost".try_into().unwrap());
    let mut client = StreamOwned::new(session.unwrap(), socket);
    while client.conn.is_handshaking() {
        client.conn.complete_io(&mut client.sock).unwrap();
    }
    client
}

fn read_exact_n(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// Reads until the peer ends the stream. For a TLS client this is `Ok`
/// only if the server said `close_notify` before its TCP end.
fn read_to_eof(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).map(|_| buf)
}

/// Whether the peer has ended the connection (end of stream or reset),
/// as opposed to the read timing out.
fn ended(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                )
            }
        }
    }
}

fn tls_echoes_and_says_close_notify_before_it_closes(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let server = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let mut client = tls_connect(server.addrs[0], &client_tls);
    let (id, origin) = server.opened();
    assert_eq!(origin, Some(Origin::Accepted(server.listeners[0])));
    client.write_all(b"hello").unwrap();
    assert_eq!(read_exact_n(&mut client, 5), b"hello");
    client.write_all(b"quit").unwrap();
    // `Ok`: the stream ended with `close_notify`, not a bare FIN.
    assert_eq!(read_to_eof(&mut client).unwrap(), b"");
    assert_eq!(server.closed(), (id, CloseReason::Requested));
}

fn a_client_that_stalls_in_the_handshake_is_closed_at_the_deadline_unannounced(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let endpoint = Endpoint {
        handshake_timeout: Duration::from_millis(300),
        ..Endpoint::tls(server_tls)
    };
    let server = serve(which, Config::default(), vec![endpoint]);
    let started = Instant::now();
    let mut stalled = server.connect(0);
    // Served meanwhile: the stalled one holds no lock and no thread but its own.
    let mut client = tls_connect(server.addrs[0], &client_tls);
    let (id, _) = server.opened();
    client.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut client, 4), b"ping");
    assert!(ended(&mut stalled), "closed, not left waiting");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < WAIT, "{waited:?}");
    drop(client);
    assert_eq!(server.closed(), (id, CloseReason::PeerClosed));
    // The handler never heard of the stalled client.
    assert_eq!(server.stop(), vec![]);
}

fn plaintext_sent_to_the_tls_port_costs_only_that_client(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let server = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let mut plain = server.connect(0);
    plain
        .write_all(b"Hi there, this is no TLS record\r\n")
        .unwrap();
    // Told why, in a TLS alert record (content type 21), then closed.
    let mut alert = [0; 1];
    plain.read_exact(&mut alert).unwrap();
    assert_eq!(alert, [21]);
    assert!(ended(&mut plain), "closed at once");
    let mut client = tls_connect(server.addrs[0], &client_tls);
    let (id, _) = server.opened();
    client.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut client, 4), b"ping");
    drop(client);
    assert_eq!(server.closed(), (id, CloseReason::PeerClosed));
    assert_eq!(server.stop(), vec![]);
}

fn a_refusal_over_the_listeners_limit_arrives_through_tls(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let endpoint = Endpoint {
        max_connections: 1,
        ..Endpoint::tls(server_tls)
    };
    // A plain listener beside it, unlimited: its clients do not count.
    let server = serve(which, Config::default(), vec![endpoint, Endpoint::plain()]);
    let mut plain = server.connect(1);
    assert_eq!(
        server.opened().1,
        Some(Origin::Accepted(server.listeners[1]))
    );
    let mut first = tls_connect(server.addrs[0], &client_tls);
    first.write_all(b"hi").unwrap();
    assert_eq!(read_exact_n(&mut first, 2), b"hi");
    assert_eq!(
        server.opened().1,
        Some(Origin::Accepted(server.listeners[0]))
    );
    let mut second = tls_connect(server.addrs[0], &client_tls);
    assert_eq!(
        read_to_eof(&mut second).unwrap(),
        b"ERR busy on listener 0\n"
    );
    first.write_all(b"ok").unwrap();
    assert_eq!(read_exact_n(&mut first, 2), b"ok");
    plain.write_all(b"ok").unwrap();
    assert_eq!(read_exact_n(&mut plain, 2), b"ok");
}

fn an_outbound_connection_is_served_outside_the_limits_and_not_idle_timed_out(which: Which) {
    let config = Config {
        max_connections: 1,
        idle_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let server = serve(which, config, vec![Endpoint::plain()]);
    let remote = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = server
        .dial(Connect::new(remote.local_addr().unwrap()), b"hello\n")
        .unwrap();
    assert_eq!(server.opened(), (id, Some(Origin::Connected)));
    // Established, so already in the listen queue: this does not wait.
    let (link, _) = remote.accept().unwrap();
    let mut link = timeouts(link);
    // Sent before it was established: queued until then.
    assert_eq!(read_exact_n(&mut link, 6), b"hello\n");
    // It takes no client's place: a client is served, not refused...
    let mut client = server.connect(0);
    let (client_id, _) = server.opened();
    client.write_all(b"hi").unwrap();
    assert_eq!(read_exact_n(&mut client, 2), b"hi");
    // ...and is idle-timed-out, while the older outbound link is not.
    assert_eq!(server.closed(), (client_id, CloseReason::Idle));
    link.write_all(b"ping").unwrap();
    assert_eq!(
        server.expect(|s| matches!(s, Seen::Data(..))),
        Seen::Data(id, b"ping".to_vec())
    );
    drop(link);
    assert_eq!(server.closed(), (id, CloseReason::PeerClosed));
}

fn a_handler_connects_out_as_the_driver_starts_before_any_client(which: Which) {
    let remote = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = remote.local_addr().unwrap();
    let server = serve_probe(which, Config::default(), vec![Endpoint::plain()], Some(to));
    let id = server.dialed().unwrap();
    assert_eq!(server.opened(), (id, Some(Origin::Connected)));
    let (link, _) = remote.accept().unwrap();
    let mut link = timeouts(link);
    link.write_all(b"from afar").unwrap();
    assert_eq!(
        server.expect(|s| matches!(s, Seen::Data(..))),
        Seen::Data(id, b"from afar".to_vec())
    );
}

fn an_outbound_connection_nobody_accepts_fails_refused(which: Which) {
    let port_nobody_listens_on = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    let id = server
        .dial(Connect::new(port_nobody_listens_on), b"hello\n")
        .unwrap();
    assert_eq!(
        server.closed(),
        (
            id,
            CloseReason::ConnectFailed(io::ErrorKind::ConnectionRefused)
        )
    );
    // Never opened.
    assert_eq!(server.stop(), vec![]);
}

/// A listener that never accepts, its queue full: Linux then drops new
/// SYNs, so a connect to it hangs until its deadline. Loopback only. The
/// connections that fill the queue are returned with it, to keep it full.
fn unanswering_listener() -> (socket2::Socket, SocketAddr, Vec<TcpStream>) {
    let remote = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    remote
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    remote.listen(0).unwrap();
    let addr = remote.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => queued.push(stream),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
            Err(e) => panic!("filling the listen queue: {e}"),
        }
        assert!(queued.len() < 16, "the listen queue never filled");
    }
    (remote, addr, queued)
}

fn an_outbound_connection_that_is_not_answered_in_time_fails_timed_out(which: Which) {
    let (_remote, addr, _queued) = unanswering_listener();
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    let started = Instant::now();
    let to = Connect::new(addr).timeout(Duration::from_millis(300));
    let id = server.dial(to, b"hello\n").unwrap();
    assert_eq!(
        server.closed(),
        (id, CloseReason::ConnectFailed(io::ErrorKind::TimedOut))
    );
    // The threaded driver's connect waits in poll(2), whose timeout is whole
    // milliseconds, rounded down by socket2: up to one early.
    assert!(started.elapsed() >= Duration::from_millis(299));
    assert_eq!(server.stop(), vec![]);
}

fn an_outbound_connection_over_tls_is_served_once_its_handshake_is_done(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    // The far end is another threaded server with a TLS listener.
    let remote = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    let to = Connect::new(remote.addrs[0]).tls(client_tls, "localhost".try_into().unwrap());
    let id = server.dial(to, b"hello").unwrap();
    assert_eq!(server.opened(), (id, Some(Origin::Connected)));
    let (far, _) = remote.opened();
    // The greeting, queued during the handshake, reaches the far end,
    // whose echo comes back through TLS.
    assert_eq!(
        remote.expect(|s| matches!(s, Seen::Data(..))),
        Seen::Data(far, b"hello".to_vec())
    );
    assert_eq!(
        server.expect(|s| matches!(s, Seen::Data(..))),
        Seen::Data(id, b"hello".to_vec())
    );
}

fn streams_handed_over_are_served_and_pipes_are_not(which: Which) {
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    // A pipe: the reactor watches it like a socket; blocking threads
    // cannot serve it (a thread blocked reading it could not be woken to
    // close it), so the threaded driver drops it, which the next stream
    // handed over, opened after it, shows.
    let (pipe_reader, pipe_writer) = io::pipe().unwrap();
    let mut pipe_writer = Some(pipe_writer);
    server
        .handle
        .attach(File::from(OwnedFd::from(pipe_reader)))
        .unwrap();
    if let Which::Reactor = which {
        let (pipe_id, origin) = server.opened();
        assert_eq!(origin, Some(Origin::Attached));
        let mut writer = pipe_writer.take().unwrap();
        writer.write_all(b"pipe").unwrap();
        drop(writer);
        server.expect(|s| matches!(s, Seen::Data(id, d) if *id == pipe_id && d == b"pipe"));
        // Its echo cannot be written to a pipe's reading end: that, or
        // the end of the pipe, closes it.
        assert_eq!(server.closed().0, pipe_id);
    }
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(WAIT)).unwrap();
    server.handle.attach(theirs).unwrap();
    let (unix_id, origin) = server.opened();
    assert_eq!(origin, Some(Origin::Attached));
    if let Which::Threads = which {
        let broken = pipe_writer.as_mut().unwrap().write_all(b"x").unwrap_err();
        assert_eq!(broken.kind(), io::ErrorKind::BrokenPipe);
    }
    ours.write_all(b"unix").unwrap();
    assert_eq!(read_exact_n(&mut ours, 4), b"unix");
    // A TCP connection made elsewhere.
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut near = timeouts(TcpStream::connect(elsewhere.local_addr().unwrap()).unwrap());
    let (far, _) = elsewhere.accept().unwrap();
    server.handle.attach(far).unwrap();
    let (tcp_id, origin) = server.opened();
    assert_eq!(origin, Some(Origin::Attached));
    near.write_all(b"tcp").unwrap();
    assert_eq!(read_exact_n(&mut near, 3), b"tcp");
    drop(ours);
    assert_eq!(server.closed(), (unix_id, CloseReason::PeerClosed));
    drop(near);
    assert_eq!(server.closed(), (tcp_id, CloseReason::PeerClosed));
}

fn tls_input_that_completes_a_record_begun_before_is_answered_at_once(which: Which) {
    // A read of ciphertext can complete a large record begun in the read
    // before and hold small ones after it: more plaintext than it read.
    // Were what did not fit left in rustls until the next read, the client,
    // which waits for its answer before it sends more, would wait forever.
    let (server_tls, client_tls) = tls_configs();
    let server = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let mut client = tls_connect(server.addrs[0], &client_tls);
    server.opened();
    for round in 0..20u8 {
        // One record each, all in one write: 1,000 bytes, 16,000, then ten
        // of 100. The server's first read of 16 KiB ends inside the large
        // record; its second completes it and holds the ten small ones.
        let mut sent = Vec::new();
        let pieces = [vec![round; 1_000], vec![round ^ 0x55; 16_000]]
            .into_iter()
            .chain((0..10u8).map(|small| vec![round ^ small; 100]));
        for piece in pieces {
            // rustls makes each write a record of its own.
            client.conn.writer().write_all(&piece).unwrap();
            sent.extend_from_slice(&piece);
        }
        client.conn.complete_io(&mut client.sock).unwrap();
        assert!(
            read_exact_n(&mut client, sent.len()) == sent,
            "round {round}"
        );
    }
}

fn tls_records_with_nothing_for_the_handler_do_not_keep_a_client_from_idling(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let config = Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let server = serve(which, config, vec![Endpoint::tls(server_tls)]);
    let mut client = tls_connect(server.addrs[0], &client_tls);
    let (id, _) = server.opened();
    // A KeyUpdate every 100 ms, paced by a read that times out: TLS
    // records, but no input. (rustls takes 32 of them, then fails.)
    client
        .sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(2), "never idle");
        client.conn.refresh_traffic_keys().unwrap();
        while client.conn.wants_write() {
            client.conn.write_tls(&mut client.sock).unwrap();
        }
        match client.read(&mut [0; 64]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(0) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.closed(), (id, CloseReason::Idle));
}

fn a_tls_error_after_the_handshake_closes_with_tls_after_an_alert(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let server = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let mut client = tls_connect(server.addrs[0], &client_tls);
    let (id, _) = server.opened();
    client.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut client, 4), b"ping");
    // Bytes that are no record, under the session.
    client.sock.write_all(b"no record\r\n").unwrap();
    assert_eq!(server.closed(), (id, CloseReason::Tls));
    let told = client.read(&mut [0; 16]).unwrap_err();
    assert!(
        told.to_string().contains("received fatal alert"),
        "an alert, not a bare close: {told}"
    );
}

fn an_outbound_connection_is_idle_timed_out_when_asked(which: Which) {
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    let remote = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = Connect::new(remote.local_addr().unwrap()).idle_timeout(Duration::from_millis(200));
    let id = server.dial(to, b"hello\n").unwrap();
    server.opened();
    let (_link, _) = remote.accept().unwrap();
    assert_eq!(server.closed(), (id, CloseReason::Idle));
}

fn an_outbound_connection_closed_while_it_connects_is_told_once(which: Which) {
    let (_remote, addr, _queued) = unanswering_listener();
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    let to = Connect::new(addr).timeout(Duration::from_millis(500));
    let id = server.dial(to, b"hello\n").unwrap();
    server.handle.post(Msg::Close(id)).unwrap();
    assert_eq!(server.closed(), (id, CloseReason::Requested));
    // The stop waits for the connect to give up; it says nothing more.
    assert_eq!(server.stop(), vec![]);
}

fn tls_echoes_a_mebibyte_byte_exact(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let server = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let mut client = tls_connect(server.addrs[0], &client_tls);
    server.opened();
    // In rounds of 64 KiB, each read back before the next is sent: the
    // client is single-threaded, and the echo must not wait for it.
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    for round in data.chunks(64 * 1024) {
        client.write_all(round).unwrap();
        assert!(read_exact_n(&mut client, round.len()) == round);
    }
}

fn an_outbound_connection_over_tls_to_the_wrong_name_fails_with_tls(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let remote = serve(which, Config::default(), vec![Endpoint::tls(server_tls)]);
    let server = serve(which, Config::default(), vec![Endpoint::plain()]);
    let wrong = ServerName::try_from("example.org").unwrap();
    let to = Connect::new(remote.addrs[0]).tls(client_tls, wrong);
    let id = server.dial(to, b"").unwrap();
    assert_eq!(server.closed(), (id, CloseReason::Tls));
}

fn one_address_is_held_to_its_limit_from_the_accept(which: Which) {
    let (server_tls, client_tls) = tls_configs();
    let config = Config {
        max_per_address: 2,
        ..Config::default()
    };
    let server = serve(which, config, vec![Endpoint::tls(server_tls)]);
    // Two clients that never begin their handshake hold the address's two
    // places: the handler has not heard of them, but the limit has.
    let stalled = server.connect(0);
    let _other = server.connect(0);
    let mut third = tls_connect(server.addrs[0], &client_tls);
    assert_eq!(
        read_to_eof(&mut third).unwrap(),
        b"ERR too many from your address\n"
    );
    // One goes; its place comes back (once the server has seen it go,
    // which a refusal answered at once bounds the retrying of).
    drop(stalled);
    for _ in 0..100 {
        let mut next = tls_connect(server.addrs[0], &client_tls);
        next.write_all(b"in").unwrap();
        let mut answer = [0; 2];
        next.read_exact(&mut answer).unwrap();
        if &answer == b"in" {
            return;
        }
        assert_eq!(&answer, b"ER", "served or refused, nothing else");
    }
    panic!("the address's place never came back");
}

/// Runs each test once on each driver.
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod reactor_driver {
            $( #[test] fn $name() { super::$name(super::Which::Reactor) } )*
        }
        mod threaded_driver {
            $( #[test] fn $name() { super::$name(super::Which::Threads) } )*
        }
    };
}

on_both_drivers!(
    tls_echoes_and_says_close_notify_before_it_closes,
    a_client_that_stalls_in_the_handshake_is_closed_at_the_deadline_unannounced,
    plaintext_sent_to_the_tls_port_costs_only_that_client,
    a_refusal_over_the_listeners_limit_arrives_through_tls,
    an_outbound_connection_is_served_outside_the_limits_and_not_idle_timed_out,
    an_outbound_connection_nobody_accepts_fails_refused,
    a_handler_connects_out_as_the_driver_starts_before_any_client,
    an_outbound_connection_that_is_not_answered_in_time_fails_timed_out,
    an_outbound_connection_over_tls_is_served_once_its_handshake_is_done,
    streams_handed_over_are_served_and_pipes_are_not,
    tls_input_that_completes_a_record_begun_before_is_answered_at_once,
    tls_records_with_nothing_for_the_handler_do_not_keep_a_client_from_idling,
    a_tls_error_after_the_handshake_closes_with_tls_after_an_alert,
    an_outbound_connection_is_idle_timed_out_when_asked,
    an_outbound_connection_closed_while_it_connects_is_told_once,
    tls_echoes_a_mebibyte_byte_exact,
    an_outbound_connection_over_tls_to_the_wrong_name_fails_with_tls,
    one_address_is_held_to_its_limit_from_the_accept,
);
