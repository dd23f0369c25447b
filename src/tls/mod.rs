//! TLS termination for listeners: the rustls server configuration compiled
//! from a listener's `tls` table (certificate chain, key, and for mTLS the CA
//! client certificates must chain to), the TLS stream that drives a rustls
//! session over a monoio socket, and service identities (SPIFFE IDs) with
//! the principal patterns routes authorise.

mod identity;
mod stream;

pub use identity::{spiffe_id, Principals};
pub use stream::TlsStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::Path;
use std::sync::Arc;

/// A listener's compiled TLS settings.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// Client certificates are verified (mTLS); see `require_client_cert`.
    pub verifies_clients: bool,
}

/// What a listener's `tls` table names, as read from the config.
pub struct ServerTlsFiles<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub client_ca: Option<&'a str>,
    /// With `client_ca`: refuse clients that present no certificate.
    pub require_client_cert: bool,
}

/// Which file of the `tls` table a problem is about, so that the config
/// error can point at that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    ClientCa,
}

/// Load the files and build the server configuration: TLS 1.2 and 1.3,
/// ALPN `http/1.1` (a client that offers only h2 is refused in the
/// handshake rather than misread later).
pub fn server_config(files: &ServerTlsFiles<'_>) -> Result<ServerTls, (TlsFile, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = load_certs(files.cert).map_err(|e| (TlsFile::Cert, e))?;
    let key = PrivateKeyDer::from_pem_file(files.key).map_err(|e| {
        (
            TlsFile::Key,
            format!("cannot read a PEM private key from {:?}: {e}", files.key),
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Cert, e.to_string()))?;
    let builder = match files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca).map_err(|e| (TlsFile::ClientCa, e))? {
                roots
                    .add(cert)
                    .map_err(|e| (TlsFile::ClientCa, format!("CA certificate in {ca:?}: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| (TlsFile::ClientCa, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        (
            TlsFile::Key,
            format!("certificate and key do not make a usable pair: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        verifies_clients: files.client_ca.is_some(),
    })
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if !Path::new(path).is_file() {
        return Err(format!("cannot read {path:?}: no such file"));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from {path:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}
