//! TLS for loadgen's connections (`--tls`): a rustls `ClientConnection` per
//! connection, driven sans-IO by `net`'s loop. rustls never touches the
//! socket; `net` reads ciphertext with its one read per readiness and hands
//! it to [`Session::receive`], which returns the plaintext, and writes what
//! [`Session::write_to`] has encrypted when the socket has room — the same
//! non-blocking reads and writes as a plain connection, with rustls in
//! between. Every mode that speaks TLS (echo, chat, handshake) goes through
//! this one module.
//!
//! Certificates are checked as a real client checks them: against `--ca`
//! (benchmarks use self-signed certificates, hence no system roots) and for
//! the name `--tls-name`. Session resumption is off, so that every
//! connection costs the server a full handshake, as a first visit does, and
//! `--mode handshake` measures that.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use chatapp::cli::describe;
use reactor::rustls;
use rustls::client::Resumption;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// What every TLS connection of a run shares: whom to trust and which name
/// to expect.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// A client that trusts the certificates in the PEM file `ca` and
    /// expects the server to be `name`, with the `ring` provider the reactor
    /// is built with. The error is a sentence for `error: …`.
    pub fn new(ca: &Path, name: &str) -> Result<Client, String> {
        let shown = ca.display();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| match e {
                pem::Error::Io(e) => format!("cannot read {shown}: {}", describe(&e)),
                e => format!("{shown}: not a PEM certificate: {e:?}"),
            })?;
        if certs.is_empty() {
            return Err(format!(
                "{shown}: no certificate in this file (PEM `BEGIN CERTIFICATE` expected)"
            ));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{shown}: cannot trust this certificate: {e}"))?;
        }
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("--tls-name {name:?} is neither a DNS name nor an IP address"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(Client {
            config: Arc::new(config),
            name,
        })
    }

    /// A new connection's TLS state: its ClientHello is ready to be written.
    pub fn session(&self) -> io::Result<Session> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map(|conn| Session { conn })
            .map_err(|e| io::Error::other(format!("cannot start TLS: {e}")))
    }
}

/// One connection's TLS state.
pub struct Session {
    conn: ClientConnection,
}

/// What one [`Session::receive`] brought.
pub struct Received {
    /// The handshake completed during it: the connection may now be used.
    pub established: bool,
    /// The server closed its side, with close_notify or by closing.
    pub closed: bool,
}

impl Session {
    /// The protocol version and cipher suite the handshake settled on, as
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`; `None` before it is done.
    pub fn negotiated(&self) -> Option<String> {
        let version = self.conn.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?.suite();
        Some(format!("{version:?} {suite:?}"))
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Takes `ciphertext`, just read from the socket (empty: the server
    /// closed it), and appends the plaintext it holds to `plaintext`.
    /// Afterwards rustls may have something to write (the rest of the
    /// handshake, an alert): see [`write_to`](Session::write_to).
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> io::Result<Received> {
        let was_handshaking = self.conn.is_handshaking();
        if ciphertext.is_empty() && was_handshaking {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the TLS handshake",
            ));
        }
        let mut closed = ciphertext.is_empty();
        // rustls takes at most a few KiB per `read_tls` and holds at most
        // 16 KiB of plaintext: feed it in turns, taking the plaintext out
        // after each.
        while !ciphertext.is_empty() && !closed {
            self.conn.read_tls(&mut ciphertext)?;
            let state = self.conn.process_new_packets().map_err(|e| {
                let what = if self.conn.is_handshaking() {
                    "the TLS handshake failed"
                } else {
                    "the TLS connection failed"
                };
                io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
            })?;
            let len = state.plaintext_bytes_to_read();
            if len > 0 {
                let start = plaintext.len();
                plaintext.resize(start + len, 0);
                self.conn.reader().read_exact(&mut plaintext[start..])?;
            }
            closed = state.peer_has_closed();
        }
        Ok(Received {
            established: was_handshaking && !self.conn.is_handshaking(),
            closed,
        })
    }

    /// Encrypts as much of `data` as rustls will buffer (64 KiB) and
    /// returns how much that was; [`write_to`](Session::write_to) sends it.
    pub fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    /// Writes what rustls has to send to `stream` until all is written or
    /// the socket is full; returns whether some is left.
    pub fn write_to(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Says close_notify, as a client that is done should, if the socket
    /// takes it at once; the connection is closed after it either way.
    pub fn close(&mut self, stream: &mut TcpStream) {
        self.conn.send_close_notify();
        let _ = self.write_to(stream);
    }
}
