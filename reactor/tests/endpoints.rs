//! Endpoints on the reactor, on real sockets on 127.0.0.1: several
//! listeners with policies of their own, TLS, and connections the handler
//! opens itself. Every wait is a read or a `recv` with a timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reactor::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use reactor::rustls::{self, ClientConfig, ClientConnection, ServerConfig, StreamOwned};
use reactor::{
    CloseReason, Config, ConnId, Connect, Context, Endpoint, Handle, Handler, ListenerId, Origin,
    Reactor,
};

const WAIT: Duration = Duration::from_secs(10);

/// What the test handler saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Open(ConnId, Origin),
    Data(ConnId, Vec<u8>),
    Close(ConnId, CloseReason),
    Dialed(ConnId),
}

/// Echoes, reports every callback, and connects out when posted an address.
struct Probe {
    seen: Sender<Seen>,
}

impl Handler for Probe {
    type Message = Connect;
    type Conn = ();

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut ()) {
        let origin = cx.origin(id).expect("open");
        self.seen.send(Seen::Open(id, origin)).unwrap();
        if origin == Origin::Connected {
            cx.send(id, Bytes::from_static(b"hello from the loop\n"));
        }
    }

    fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut BytesMut) {
        self.seen.send(Seen::Data(id, input.to_vec())).unwrap();
        cx.send(id, input.split().freeze());
    }

    fn on_close(&mut self, _cx: &mut dyn Context, id: ConnId, _conn: (), reason: CloseReason) {
        self.seen.send(Seen::Close(id, reason)).unwrap();
    }

    fn on_wake(&mut self, cx: &mut dyn Context, to: Connect) {
        let id = cx.connect(to).expect("a socket");
        self.seen.send(Seen::Dialed(id)).unwrap();
    }

    fn refusal(&self, listener: ListenerId) -> Option<Bytes> {
        Some(Bytes::from(format!("busy on {listener:?}\n")))
    }
}

/// A reactor serving a `Probe` on the listeners given.
struct Running {
    addrs: Vec<SocketAddr>,
    handle: Handle<Connect>,
    seen: Receiver<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(endpoints: Vec<Endpoint>) -> Running {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let addrs = endpoints
            .into_iter()
            .map(|endpoint| {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let id = reactor.listen_on(listener, endpoint).unwrap();
                reactor.local_addr(id).unwrap()
            })
            .collect();
        let (tx, seen) = channel();
        let handle = reactor.handle();
        let thread = thread::spawn(move || reactor.run(&mut Probe { seen: tx }).unwrap());
        Running {
            addrs,
            handle,
            seen,
            thread: Some(thread),
        }
    }

    fn expect(&self, want: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let seen = self.seen.recv_timeout(WAIT).expect("the handler's report");
            if want(&seen) {
                return seen;
            }
        }
    }

    fn dial(&self, to: Connect) -> ConnId {
        self.handle.post(to).unwrap();
        match self.expect(|s| matches!(s, Seen::Dialed(_))) {
            Seen::Dialed(id) => id,
            _ => unreachable!(),
        }
    }

    fn closed(&self, id: ConnId) -> CloseReason {
        match self.expect(|s| matches!(s, Seen::Close(c, _) if *c == id)) {
            Seen::Close(_, reason) => reason,
            _ => unreachable!(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while stream.read(&mut byte).expect("a line") == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8(line).unwrap()
}

/// A certificate for `localhost`, the server's configuration with it, and
/// a client's that trusts it.
fn tls_pair() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
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

fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(Arc::clone(config), name).unwrap();
    StreamOwned::new(session, connect(addr))
}

#[test]
fn listeners_each_keep_their_own_limit_and_refusal() {
    let one = Endpoint {
        max_connections: 1,
        ..Endpoint::plain()
    };
    let loop_ = Running::start(vec![one, Endpoint::plain()]);
    let mut first = connect(loop_.addrs[0]);
    let Seen::Open(_, origin) = loop_.expect(|s| matches!(s, Seen::Open(..))) else {
        unreachable!()
    };
    assert_eq!(origin, Origin::Accepted(ListenerId::nth(0)));

    // The first listener is full; the second is not.
    let mut second = connect(loop_.addrs[0]);
    assert_eq!(read_line(&mut second), "busy on listener 0\n");
    let mut other = connect(loop_.addrs[1]);
    let Seen::Open(_, origin) = loop_.expect(|s| matches!(s, Seen::Open(..))) else {
        unreachable!()
    };
    assert_eq!(origin, Origin::Accepted(ListenerId::nth(1)));
    for stream in [&mut first, &mut other] {
        stream.write_all(b"ping\n").unwrap();
        assert_eq!(read_line(stream), "ping\n");
    }
}

#[test]
fn tls_and_plain_clients_are_served_alike() {
    let (server, client) = tls_pair();
    let loop_ = Running::start(vec![Endpoint::plain(), Endpoint::tls(server)]);
    let mut plain = connect(loop_.addrs[0]);
    let mut secure = tls_connect(loop_.addrs[1], &client);
    // Larger than a TLS record, a read and the write budget: all of it
    // comes back, in order.
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    secure.write_all(&big).unwrap();
    let mut back = vec![0; big.len()];
    secure.read_exact(&mut back).unwrap();
    assert!(back == big, "the echo over TLS differs");
    let Seen::Open(_, origin) = loop_.expect(|s| matches!(s, Seen::Open(..))) else {
        unreachable!()
    };
    assert_eq!(origin, Origin::Accepted(ListenerId::nth(0)));
    plain.write_all(b"plain\n").unwrap();
    assert_eq!(read_line(&mut plain), "plain\n");

    // A clean close from the client is a `close_notify` and then a FIN.
    secure.conn.send_close_notify();
    secure.flush().unwrap();
    let mut rest = Vec::new();
    // The server answers with its own `close_notify`: a clean end, not a
    // truncation (which rustls reports as an error).
    secure.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn a_client_that_stalls_in_the_handshake_is_closed_at_the_deadline_unheard_of() {
    let (server, client) = tls_pair();
    let endpoint = Endpoint {
        handshake_timeout: Duration::from_millis(300),
        ..Endpoint::tls(server)
    };
    let loop_ = Running::start(vec![endpoint]);
    // Half a ClientHello, then nothing; and plaintext to the TLS port.
    let started = Instant::now();
    let mut stalled = connect(loop_.addrs[0]);
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01])
        .unwrap();
    let mut confused = connect(loop_.addrs[0]);
    confused.write_all(b"Hi\n").unwrap();

    let mut secure = tls_connect(loop_.addrs[0], &client);
    secure.write_all(b"still served\n").unwrap();
    assert_eq!(read_line(&mut secure), "still served\n");

    // The plaintext client gets an alert and the end; the stalled one the
    // end, at the deadline.
    let mut rest = Vec::new();
    let _ = confused.read_to_end(&mut rest);
    assert!(!rest.starts_with(b"Hi"), "plaintext went through: {rest:?}");
    assert_eq!(stalled.read(&mut [0; 64]).unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The handler heard of the one that finished its handshake, only.
    drop(secure);
    let Seen::Open(id, _) = loop_.expect(|s| matches!(s, Seen::Open(..))) else {
        unreachable!()
    };
    let next = loop_.expect(|s| matches!(s, Seen::Open(..) | Seen::Close(..)));
    assert!(matches!(next, Seen::Close(c, _) if c == id), "{next:?}");
}

#[test]
fn a_refusal_over_tls_arrives_after_the_handshake() {
    let (server, client) = tls_pair();
    let endpoint = Endpoint {
        max_connections: 0,
        ..Endpoint::tls(server)
    };
    let loop_ = Running::start(vec![endpoint]);
    let mut refused = tls_connect(loop_.addrs[0], &client);
    assert_eq!(read_line(&mut refused), "busy on listener 0\n");
}

#[test]
fn an_outbound_connection_is_established_and_served_like_any_other() {
    let loop_ = Running::start(vec![]);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = loop_.dial(Connect::new(peer.local_addr().unwrap()));
    let (mut stream, _) = peer.accept().unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        loop_.expect(|s| matches!(s, Seen::Open(..))),
        Seen::Open(id, Origin::Connected)
    );
    assert_eq!(read_line(&mut stream), "hello from the loop\n");
    stream.write_all(b"echo me\n").unwrap();
    assert_eq!(read_line(&mut stream), "echo me\n");
    drop(stream);
    assert_eq!(loop_.closed(id), CloseReason::PeerClosed);
}

#[test]
fn an_outbound_connection_over_tls_checks_the_server() {
    let (server, client) = tls_pair();
    let loop_ = Running::start(vec![Endpoint::tls(server)]);
    let name = ServerName::try_from("localhost").unwrap();
    let id = loop_.dial(Connect::new(loop_.addrs[0]).tls(Arc::clone(&client), name));
    // Both ends are this loop's: the outbound one says hello, the accepted
    // one echoes it, and the outbound one echoes that back, forever; two
    // rounds are enough.
    assert_eq!(
        loop_.expect(|s| matches!(s, Seen::Open(c, _) if *c == id)),
        Seen::Open(id, Origin::Connected)
    );
    loop_.expect(|s| matches!(s, Seen::Data(c, d) if *c == id && d == b"hello from the loop\n"));

    // A name the certificate is not for: the handshake fails.
    let wrong = ServerName::try_from("example.org").unwrap();
    let id = loop_.dial(Connect::new(loop_.addrs[0]).tls(client, wrong));
    assert_eq!(loop_.closed(id), CloseReason::Tls);
}

#[test]
fn an_outbound_connection_that_is_refused_is_reported() {
    let loop_ = Running::start(vec![]);
    // A port nobody listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let id = loop_.dial(Connect::new(addr));
    assert_eq!(
        loop_.closed(id),
        CloseReason::ConnectFailed(io::ErrorKind::ConnectionRefused)
    );
}

#[test]
fn an_outbound_connection_that_takes_too_long_times_out() {
    // A listener with a full backlog: the kernel drops further SYNs, so a
    // connect neither succeeds nor fails until it gives up.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut filling = Vec::new();
    let loop_ = Running::start(vec![]);
    let started = Instant::now();
    let id = loop {
        // Each connect that completes fills the backlog further; the one
        // the kernel no longer answers is the one that must time out.
        let id = loop_.dial(Connect::new(addr).timeout(Duration::from_millis(300)));
        match loop_.expect(|s| matches!(s, Seen::Open(c, _) | Seen::Close(c, _) if *c == id)) {
            Seen::Open(..) => filling.push(id),
            Seen::Close(_, reason) => {
                assert_eq!(reason, CloseReason::ConnectFailed(io::ErrorKind::TimedOut));
                break id;
            }
            _ => unreachable!(),
        }
        assert!(filling.len() < 16, "the backlog never filled");
    };
    assert!(started.elapsed() >= Duration::from_millis(300), "{id:?}");
}

#[test]
fn a_stream_handed_over_from_another_thread_is_served() {
    let loop_ = Running::start(vec![]);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ours = connect(peer.local_addr().unwrap());
    let (theirs, _) = peer.accept().unwrap();
    loop_.handle.attach(theirs).unwrap();
    let Seen::Open(_, origin) = loop_.expect(|s| matches!(s, Seen::Open(..))) else {
        unreachable!()
    };
    assert_eq!(origin, Origin::Attached);
    ours.write_all(b"handed over\n").unwrap();
    assert_eq!(read_line(&mut ours), "handed over\n");
}
