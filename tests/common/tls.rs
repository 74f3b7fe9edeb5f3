//! Certificates for the TLS tests, made at test time with rcgen: a CA of
//! our own and a server certificate it signed for `localhost` and
//! 127.0.0.1, as PEM files in a directory of their own (for the binaries'
//! `--ca`, `--tls-cert` and `--tls-key`), and the rustls configurations for
//! TLS servers and clients written in a test.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};

use super::Server;

/// A blocking TLS client connection.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` for `localhost` with `config`; its handshake
/// happens with the first read or write.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let tcp = super::connect(addr);
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(
        ClientConnection::new(Arc::clone(config), name).unwrap(),
        tcp,
    )
}

/// The names the server certificate is valid for.
pub const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA and a server certificate signed by it, written as PEM files into a
/// fresh directory that is removed when this is dropped.
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Makes a CA (`ca.pem`) and a server certificate for [`NAMES`]
    /// (`cert.pem`, with its key in `key.pem`). Each call makes new keys, so
    /// two `Certs` do not trust each other.
    pub fn new() -> Certs {
        Certs::for_names(&NAMES)
    }

    /// Like [`new`](Certs::new), with a server certificate valid for
    /// `names` (DNS names or IP addresses) instead.
    pub fn for_names(names: &[&str]) -> Certs {
        let dir = unique_dir();
        fs::create_dir_all(&dir).expect("create the certificates' directory");

        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, as two real CAs have: with the same name, a
        // CA would be taken for the other's issuer, and its certificates
        // refused for a bad signature rather than an unknown issuer.
        let ca_name = format!("netchat test CA {}", dir.display());
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let names = names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>();
        let leaf = CertificateParams::new(names).expect("valid names");
        let leaf_key = KeyPair::generate().expect("a server key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("the server certificate");

        let certs = Certs { dir };
        write(&certs.ca(), &ca_cert.pem());
        write(&certs.cert(), &leaf_cert.pem());
        write(&certs.key(), &leaf_key.serialize_pem());
        certs
    }

    /// The CA's certificate, for `client --ca`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate, for `--tls-cert`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server's private key, for `--tls-key`.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Starts `bin` (as [`Server::start`] does) with TLS on a free port
    /// beside the plain one, serving this certificate; `more` are further
    /// arguments.
    pub fn serve(&self, bin: &str, more: &[&str]) -> Server {
        let (cert, key) = (self.cert(), self.key());
        let (cert, key) = (cert.to_str().expect("UTF-8"), key.to_str().expect("UTF-8"));
        let mut args = vec!["--tls-port", "0", "--tls-cert", cert, "--tls-key", key];
        args.extend_from_slice(more);
        Server::start(bin, &args)
    }

    /// A rustls server configuration with the server certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let chain = CertificateDer::pem_file_iter(self.cert())
            .expect("read cert.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse cert.pem");
        let key = PrivateKeyDer::from_pem_file(self.key()).expect("read key.pem");
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the provider's versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a certificate and its key");
        Arc::new(config)
    }

    /// A rustls client configuration that trusts only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(self.ca()).expect("read ca.pem");
        roots.add(ca).expect("a CA certificate");
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the provider's versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The crypto provider the binaries use.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A directory no other test, in this process or another, is using.
fn unique_dir() -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("netchat-tls-{}-{n}", std::process::id()))
}

fn write(path: &Path, pem: &str) {
    fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
