//! TLS configuration from PEM files: what `--tls-cert` and `--tls-key`
//! become, with errors that name the file and say what is wrong with it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reactor::rustls;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that cannot be used, as one sentence for `error: …`.
#[derive(Debug)]
pub struct TlsError {
    file: PathBuf,
    what: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.what)
    }
}

impl std::error::Error for TlsError {}

/// The server side of TLS: the certificate chain in `cert` (the server's
/// own certificate first), its private key in `key`, TLS 1.2 and 1.3, and
/// the `ring` crypto provider the reactor is built with.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert, "certificate", e))?;
    if chain.is_empty() {
        return Err(TlsError {
            file: cert.into(),
            what: "no certificate in this file (PEM `BEGIN CERTIFICATE` expected)".into(),
        });
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private)
        })
        .map(Arc::new)
        .map_err(|e| TlsError {
            file: key.into(),
            what: format!("cannot use this key with the certificate: {e}"),
        })
}

fn pem_error(file: &Path, what: &str, err: pem::Error) -> TlsError {
    let what = match err {
        pem::Error::Io(e) => format!("cannot read the {what}: {}", crate::cli::describe(&e)),
        pem::Error::NoItemsFound => format!("no {what} in this file (PEM expected)"),
        e => format!("not a PEM {what}: {e:?}"),
    };
    TlsError {
        file: file.into(),
        what,
    }
}
