//! TLS both ways: the rustls server configuration compiled from a
//! listener's `tls` table (certificate chain, key, and for mTLS the CA
//! client certificates must chain to), the client configuration compiled
//! from a cluster's (the CA upstreams must chain to, an optional client
//! certificate, and the name or SPIFFE IDs upstreams must prove), the TLS
//! stream that drives a rustls session over a monoio socket, and service
//! identities (SPIFFE IDs) with the principal patterns that authorise them.

mod conn;
mod identity;
mod stream;
mod verify;

pub use conn::Stream;
pub use identity::{spiffe_id, Principals};
pub use stream::TlsStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
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
    Ca,
    ServerName,
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
            for cert in load_certs(ca).map_err(|e| (TlsFile::Ca, e))? {
                roots
                    .add(cert)
                    .map_err(|e| (TlsFile::Ca, format!("CA certificate in {ca:?}: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| (TlsFile::Ca, e.to_string()))?;
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

/// A cluster's compiled TLS settings for its upstream connections.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and the DNS name to verify; None: the endpoint's IP address.
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// The name to ask `addr` for and hold its certificate to.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}

/// What a cluster's `tls` table names, as read from the config.
pub struct ClientTlsFiles<'a> {
    pub ca: &'a str,
    /// A client certificate and key, for upstreams that require mTLS.
    pub identity: Option<(&'a str, &'a str)>,
    pub server_name: Option<&'a str>,
    /// Verify the upstream's SPIFFE ID against these instead of its name.
    pub principals: Option<Principals>,
}

/// Load the files and build the client configuration: TLS 1.2 and 1.3,
/// ALPN `http/1.1`, the upstream verified against `ca` and either its name
/// (`server_name`, else the endpoint's IP address) or its SPIFFE ID.
pub fn client_config(files: ClientTlsFiles<'_>) -> Result<ClientTls, (TlsFile, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_name = files
        .server_name
        .map(|name| {
            ServerName::try_from(name.to_string()).map_err(|_| {
                (
                    TlsFile::ServerName,
                    format!("server_name {name:?} is not a DNS name or IP address"),
                )
            })
        })
        .transpose()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(files.ca).map_err(|e| (TlsFile::Ca, e))? {
        roots
            .add(cert)
            .map_err(|e| (TlsFile::Ca, format!("CA certificate in {:?}: {e}", files.ca)))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Ca, e.to_string()))?;
    let builder = match files.principals {
        Some(principals) => builder.dangerous().with_custom_certificate_verifier(Arc::new(
            verify::SpiffeServerVerifier::new(Arc::new(roots), principals, provider).map_err(|e| (TlsFile::Ca, e))?,
        )),
        None => builder.with_root_certificates(roots),
    };
    let mut config = match files.identity {
        Some((cert, key)) => {
            let chain = load_certs(cert).map_err(|e| (TlsFile::Cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| (TlsFile::Key, format!("cannot read a PEM private key from {key:?}: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    TlsFile::Key,
                    format!("certificate and key do not make a usable pair: {e}"),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
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
