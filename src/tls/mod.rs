//! TLS both ways: the rustls server configuration compiled from a
//! listener's `tls` table (certificate chain, key, and for mTLS the CA
//! client certificates must chain to), the client configuration compiled
//! from a cluster's (the CA upstreams must chain to, an optional client
//! certificate, and the name or SPIFFE IDs upstreams must prove), the TLS
//! stream that drives a rustls session over a monoio socket, and service
//! identities (SPIFFE IDs) with the principal patterns that authorise them.

mod conn;
mod identity;
mod sni;
mod stream;
mod verify;

pub use conn::Stream;
pub use identity::{spiffe_id, Principals};
pub use sni::NamePattern;
pub use stream::{is_alert_from_peer, TlsStream};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::SystemTime;

/// What a file looked like: modification time, size, inode, and change
/// time. The inode catches a file replaced by rename, as rotation tools
/// write, within the clock's granularity; the change time, which no tool
/// can set back, catches one rewritten in place at the same size with its
/// modification time restored (`cp -p`, `rsync -t --inplace`). None: it
/// could not be read.
pub type FileStamp = Option<(SystemTime, u64, u64, (i64, i64))>;

pub fn stamp(path: impl AsRef<std::path::Path>) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.modified().ok()?,
        meta.len(),
        meta.ino(),
        (meta.ctime(), meta.ctime_nsec()),
    ))
}

fn stamps(paths: &[&str]) -> Vec<FileStamp> {
    paths.iter().map(stamp).collect()
}

/// A listener's compiled TLS settings, and the files they came from (read
/// again when they change: certificates rotate).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// Client certificates are verified (mTLS); see `require_client_cert`.
    pub verifies_clients: bool,
    files: ServerTlsFiles,
    /// Of `paths()`, taken before they were read.
    stamps: Vec<FileStamp>,
    client_ca_digest: Option<u64>,
}

impl ServerTls {
    pub fn paths(&self) -> Vec<&str> {
        self.files.paths()
    }

    /// The settings as the config gave them.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// The client CA certificates' fingerprint, if there is a client CA: a
    /// new bundle changes whom the listener trusts (a file rewritten with
    /// the same certificates, as secret mounts do on every rotation, does
    /// not).
    pub fn client_ca_digest(&self) -> Option<u64> {
        self.client_ca_digest
    }

    /// The files now look different from when these settings were built.
    pub fn files_changed(&self) -> bool {
        stamps(&self.paths()) != self.stamps
    }

    /// The same settings built from the files as they are now.
    pub fn reload(&self) -> Result<ServerTls, String> {
        server_config(self.files.clone()).map_err(|(_, e)| e)
    }
}

/// What a listener's `tls` table names, as read from the config.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
    /// With `client_ca`: refuse clients that present no certificate.
    pub require_client_cert: bool,
    /// Certificates served instead of the default for the names they list.
    pub sni: Vec<SniFiles>,
    /// An HTTP listener: ALPN names HTTP/1.x. A tcp listener relays a
    /// protocol it does not know, and so names none.
    pub carries_http: bool,
}

/// A certificate chain and key served for some names.
#[derive(Debug, Clone)]
pub struct SniFiles {
    pub names: Vec<NamePattern>,
    pub cert: String,
    pub key: String,
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<&str> {
        let sni = self.sni.iter().flat_map(|s| [&s.cert, &s.key]);
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.client_ca.as_ref())
            .chain(sni)
            .map(String::as_str)
            .collect()
    }
}

/// Which file of the `tls` table a problem is about, so that the config
/// error can point at that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    Ca,
    ServerName,
    /// The certificate or key of the `sni` entry at this index.
    Sni(usize),
}

/// Load the files and build the server configuration: TLS 1.2 and 1.3;
/// for HTTP, ALPN `http/1.1` or `http/1.0` (a client that offers only h2
/// is refused in the handshake rather than misread later).
pub fn server_config(files: ServerTlsFiles) -> Result<ServerTls, (TlsFile, String)> {
    let stamps = stamps(&files.paths());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = certified_key(&files.cert, &files.key, &provider)?;
    let mut by_name = Vec::new();
    for (i, entry) in files.sni.iter().enumerate() {
        let key = certified_key(&entry.cert, &entry.key, &provider).map_err(|(_, e)| (TlsFile::Sni(i), e))?;
        by_name.extend(entry.names.iter().map(|name| (name.clone(), key.clone())));
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Cert, e.to_string()))?;
    let mut client_ca_digest = None;
    let builder = match &files.client_ca {
        Some(ca) => {
            let (roots, digest) = load_roots(ca)?;
            client_ca_digest = Some(digest);
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
    let mut config = builder.with_cert_resolver(Arc::new(sni::SniResolver { default, by_name }));
    if files.carries_http {
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    }
    if files.client_ca.is_some() {
        // A resumed session brings back the identity its client proved
        // once, with no look at the certificate since: one expired or
        // no longer trusted would still be let in. Every handshake checks.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(ServerTls {
        config: Arc::new(config),
        verifies_clients: files.client_ca.is_some(),
        files,
        stamps,
        client_ca_digest,
    })
}

/// A cluster's compiled TLS settings for its upstream connections, and the
/// files they came from.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// For HTTP: ALPN offers `http/1.1`.
    pub config: Arc<rustls::ClientConfig>,
    /// For bytes of any protocol (tcp listeners): no ALPN, so a server that
    /// selects by it (or requires its own, as PostgreSQL does) is not told
    /// the stream is HTTP.
    stream_config: Arc<rustls::ClientConfig>,
    /// SNI and the DNS name to verify; None: the endpoint's IP address.
    server_name: Option<ServerName<'static>>,
    files: ClientTlsFiles,
    /// Of `paths()`, taken before they were read.
    stamps: Vec<FileStamp>,
    ca_digest: u64,
}

/// What a TLS connection to an upstream will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    Http,
    /// Bytes of whatever protocol the client speaks.
    Bytes,
}

impl ClientTls {
    pub fn config_for(&self, carries: Carries) -> Arc<rustls::ClientConfig> {
        match carries {
            Carries::Http => self.config.clone(),
            Carries::Bytes => self.stream_config.clone(),
        }
    }

    /// The name to ask `addr` for and hold its certificate to.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    pub fn paths(&self) -> Vec<&str> {
        self.files.paths()
    }

    /// The files now look different from when these settings were built.
    pub fn files_changed(&self) -> bool {
        stamps(&self.paths()) != self.stamps
    }

    /// The settings as the config gave them.
    pub fn files(&self) -> &ClientTlsFiles {
        &self.files
    }

    /// The CA certificates' fingerprint: a new trust bundle, unlike a
    /// rotated client certificate (or the same bundle written again),
    /// changes which upstream connections may be trusted.
    pub fn ca_digest(&self) -> u64 {
        self.ca_digest
    }

    /// Built from the same settings and the same files as they were: what a
    /// reload compiles anew when neither changed.
    pub fn same_source(&self, other: &ClientTls) -> bool {
        self.files == other.files && self.stamps == other.stamps
    }

    /// The same settings built from the files as they are now.
    pub fn reload(&self) -> Result<ClientTls, String> {
        client_config(self.files.clone()).map_err(|(_, e)| e)
    }
}

/// What a cluster's `tls` table names, as read from the config: also what
/// tells apart connections made under different TLS expectations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientTlsFiles {
    pub ca: String,
    /// A client certificate and key, for upstreams that require mTLS.
    pub identity: Option<(String, String)>,
    pub server_name: Option<String>,
    /// Verify the upstream's SPIFFE ID against these instead of its name.
    pub principals: Option<Principals>,
}

impl ClientTlsFiles {
    fn paths(&self) -> Vec<&str> {
        let identity = self.identity.as_ref();
        [Some(&self.ca), identity.map(|i| &i.0), identity.map(|i| &i.1)]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

/// Load the files and build the client configuration: TLS 1.2 and 1.3,
/// ALPN `http/1.1`, the upstream verified against `ca` and either its name
/// (`server_name`, else the endpoint's IP address) or its SPIFFE ID.
pub fn client_config(files: ClientTlsFiles) -> Result<ClientTls, (TlsFile, String)> {
    let stamps = stamps(&files.paths());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_name = files
        .server_name
        .as_ref()
        .map(|name| {
            ServerName::try_from(name.clone()).map_err(|_| {
                (
                    TlsFile::ServerName,
                    format!("server_name {name:?} is not a DNS name or IP address"),
                )
            })
        })
        .transpose()?;
    let (roots, ca_digest) = load_roots(&files.ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Ca, e.to_string()))?;
    let builder = match &files.principals {
        Some(principals) => {
            let verifier = verify::SpiffeServerVerifier::new(Arc::new(roots), principals.clone(), provider)
                .map_err(|e| (TlsFile::Ca, e))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        }
        None => builder.with_root_certificates(roots),
    };
    let mut config = match &files.identity {
        Some((cert, key)) => {
            let chain = load_certs(cert).map_err(|e| (TlsFile::Cert, e))?;
            builder
                .with_client_auth_cert(chain, load_key(key)?)
                .map_err(unusable_pair)?
        }
        None => builder.with_no_client_auth(),
    };
    if files.principals.is_some() {
        // As on mTLS listeners: a resumed session would skip the look at
        // the upstream's certificate, and so whether its identity holds.
        config.resumption = rustls::client::Resumption::disabled();
    }
    let stream_config = Arc::new(config.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ClientTls {
        config: Arc::new(config),
        stream_config,
        server_name,
        files,
        stamps,
        ca_digest,
    })
}

/// A certificate chain and the key that goes with it.
fn certified_key(
    cert: &str,
    key: &str,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, (TlsFile, String)> {
    let chain = load_certs(cert).map_err(|e| (TlsFile::Cert, e))?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, load_key(key)?, provider).map_err(unusable_pair)?;
    Ok(Arc::new(certified))
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, (TlsFile, String)> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        (
            TlsFile::Key,
            format!("cannot read a PEM private key from {path:?}: {}", pem_error(&e)),
        )
    })
}

/// The CA certificates in `path`, and a fingerprint of them (of their DER,
/// so the same certificates written again, however laid out, match).
fn load_roots(path: &str) -> Result<(rustls::RootCertStore, u64), (TlsFile, String)> {
    use std::hash::{Hash, Hasher};
    let mut roots = rustls::RootCertStore::empty();
    // Fixed keys: fingerprints compare across reloads.
    let mut digest = std::hash::DefaultHasher::new();
    for cert in load_certs(path).map_err(|e| (TlsFile::Ca, e))? {
        cert.as_ref().hash(&mut digest);
        roots
            .add(cert)
            .map_err(|e| (TlsFile::Ca, format!("CA certificate in {path:?}: {e}")))?;
    }
    Ok((roots, digest.finish()))
}

fn unusable_pair(e: rustls::Error) -> (TlsFile, String) {
    (
        TlsFile::Key,
        format!("certificate and key do not make a usable pair: {e}"),
    )
}

/// A PEM error as text: the parser's own message shows the marker lines
/// it names as byte lists.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => {
            let label = String::from_utf8_lossy(end_marker);
            format!("no \"-----END {label}-----\" line (a file cut short?)")
        }
        Error::IllegalSectionStart { line } => {
            format!(
                "malformed section start \"{}\"",
                String::from_utf8_lossy(line).trim_end()
            )
        }
        Error::NoItemsFound => "none in it".to_string(),
        other => other.to_string(),
    }
}

/// Why `path` cannot be read as a file, if it cannot: it is missing, or
/// is a directory or something else.
fn not_a_file(path: &str) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some(format!("cannot read {path:?}: it is a directory")),
        Ok(_) => Some(format!("cannot read {path:?}: not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!("cannot read {path:?}: no such file")),
        Err(e) => Some(format!("cannot read {path:?}: {e}")),
    }
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if let Some(not_a_file) = not_a_file(path) {
        return Err(not_a_file);
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from {path:?}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}
