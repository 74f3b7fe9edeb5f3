//! TLS for the client, with rustls: whom to trust (the system's roots, or
//! `--ca FILE`), which name the certificate must have (the host, or
//! `--tls-name NAME`), the handshake, and a connection that the session's
//! two threads share.
//!
//! rustls is sans-IO: a [`ClientConnection`] turns ciphertext read from the
//! socket into plaintext and plaintext into ciphertext to write, and does no
//! I/O itself. That is what lets two threads share one: the reading thread
//! waits on the socket *without* the connection's lock and takes the lock
//! only to hand over what it read, so the writing thread is never kept
//! waiting by a server that is silent.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};

use crate::cli::describe;

/// What the user asked of TLS.
pub struct TlsOptions {
    /// Trust only the certificate authority in this PEM file (`--ca FILE`)
    /// instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must be valid for (`--tls-name
    /// NAME`), if not the host connected to.
    pub name: Option<String>,
}

/// What every handshake of a `join` needs, made once before the first.
pub(super) struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// The configuration for `options`, checking `host` (or the name given
    /// instead) as a DNS name or an IP address. The errors are the user's:
    /// a CA file that cannot be read or holds no certificate, a name that
    /// is neither a DNS name nor an address.
    pub(super) fn new(options: &TlsOptions, host: &str) -> Result<Client, String> {
        let roots = match &options.ca {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        // The provider is named rather than left to rustls's process-wide
        // default, so that another crate enabling another provider in the
        // same build cannot make the default ambiguous.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = options.name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("tls: {name:?} is not a valid server name"))?;
        Ok(Client {
            config: Arc::new(config),
            name,
        })
    }

    /// Runs the handshake on `socket`, whose read timeout bounds each wait
    /// for the server, and returns the connection ready for lines.
    pub(super) fn handshake(&self, mut socket: TcpStream) -> Result<Connection, String> {
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| format!("tls: {e}"))?;
        while conn.is_handshaking() {
            // `complete_io` reads and writes until the handshake is done or
            // fails; on a failure it first sends the alert that says why.
            match conn.complete_io(&mut socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err("tls: the server closed the connection during the handshake".into())
                }
                Err(e) => return Err(self.explain(&e)),
            }
        }
        Ok(Connection {
            conn: Mutex::new(conn),
            socket,
        })
    }

    /// `e`, from the handshake, as the end of an `error: …` line.
    fn explain(&self, e: &io::Error) -> String {
        match tls_error(e) {
            Some(rustls::Error::InvalidCertificate(why)) => {
                format!("tls: {}", self.explain_certificate(why))
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                format!("tls: the server refused the handshake ({alert:?})")
            }
            Some(rustls::Error::InvalidMessage(_)) => {
                format!("tls: the server does not speak TLS on this port ({e})")
            }
            Some(other) => format!("tls: {other}"),
            None if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
            {
                "tls: no answer from the server during the handshake".into()
            }
            None => format!("tls: {}", describe(e)),
        }
    }

    /// Why the server's certificate was not accepted, in words.
    fn explain_certificate(&self, why: &CertificateError) -> String {
        match why {
            CertificateError::UnknownIssuer => "certificate is not trusted (unknown issuer)".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let name = self.name.to_str();
                format!("certificate is not valid for name \"{name}\"")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate is not valid yet".into()
            }
            CertificateError::Revoked => "certificate has been revoked".into(),
            // An issuer of the right name, but another key (or another kind
            // of key): most often a CA or a self-signed certificate made
            // again since, or an unrelated one that has the same name.
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "certificate is not trusted (bad signature)".into()
            }
            // Found by webpki: `CaUsedAsEndEntity` for a self-signed
            // certificate made as a CA, for instance.
            CertificateError::Other(why) => format!("certificate is not acceptable ({why})"),
            other => format!("certificate is not acceptable ({other})"),
        }
    }
}

/// The certificates of the PEM file at `path`: at least one.
fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let cannot = |e: pem::Error| match e {
        pem::Error::Io(e) => format!("cannot read CA file {shown}: {}", describe(&e)),
        e => format!("cannot read CA file {shown}: {e}"),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(cannot)? {
        roots
            .add(cert.map_err(cannot)?)
            .map_err(|e| format!("CA file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {shown} holds no certificate"));
    }
    Ok(roots)
}

/// The system's root certificates (those of `SSL_CERT_FILE` or
/// `SSL_CERT_DIR`, if set): at least one. Certificates that do not parse
/// are skipped, as browsers do; only finding none at all is an error.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err("tls: no root certificates on this system; give one with --ca FILE".into());
    }
    Ok(roots)
}

/// The rustls error inside `e`, if it is one.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref()
}

/// `e`, from a connection after its handshake, as the end of a message:
/// what rustls found wrong, or the I/O error.
pub(super) fn describe_error(e: &io::Error) -> String {
    match tls_error(e) {
        Some(tls) => format!("tls: {tls}"),
        None => describe(e),
    }
}

/// A TLS connection after its handshake, shared by the thread that reads
/// and the thread that writes.
pub(super) struct Connection {
    conn: Mutex<ClientConnection>,
    socket: TcpStream,
}

impl Connection {
    /// The socket underneath, for its read timeout.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Encrypts `bytes` and writes them all.
    ///
    /// The lock is held while the socket takes the ciphertext, so that two
    /// writers' records cannot be interleaved out of order. The reader needs
    /// it only after a read, so a write that blocks (the server not reading)
    /// holds up the display of what arrives, as a full send buffer would
    /// hold up any single-threaded client.
    pub(super) fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut conn = self.lock();
        conn.writer().write_all(bytes)?;
        self.flush(&mut conn)
    }

    /// Reads plaintext into `out`: `Ok(0)` once the server has closed the
    /// connection. Waits for the socket without the lock; a read timeout on
    /// the socket ends the wait with its error.
    pub(super) fn receive(&self, out: &mut [u8]) -> io::Result<usize> {
        // Ciphertext decrypts to less than itself, so 16 KiB of it never
        // fills rustls's 16 KiB of received plaintext, which `read_tls`
        // would refuse: plaintext is taken out (above) before each read.
        let mut ciphertext = [0; 16 * 1024];
        loop {
            {
                let mut conn = self.lock();
                match conn.reader().read(out) {
                    // Plaintext, or `Ok(0)`: the server's close_notify.
                    Ok(n) => return Ok(n),
                    // Nothing decrypted yet: wait for the socket below.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The socket closed without close_notify. A line client
                    // shows lines as they come, so a cut cannot make it show
                    // anything a close would not; it is taken as a close.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            let n = (&self.socket).read(&mut ciphertext)?;
            let mut conn = self.lock();
            let mut rest = &ciphertext[..n];
            loop {
                // With `rest` empty, this tells rustls the socket is at its end.
                conn.read_tls(&mut rest)?;
                let processed = conn.process_new_packets();
                // Alerts, and answers rustls owes the server (a key update).
                // A server that is gone cannot take them, and what it sent
                // before is still to be read: a failed write is for the
                // sending half to report.
                let _ = self.flush(&mut conn);
                processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if rest.is_empty() {
                    break;
                }
            }
        }
    }

    /// Writes whatever ciphertext rustls has ready.
    fn flush(&self, conn: &mut ClientConnection) -> io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(&mut &self.socket)?;
        }
        Ok(())
    }

    /// The connection, even if a thread panicked while holding it: its state
    /// is rustls's, which a panic in our code cannot leave half-changed.
    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
