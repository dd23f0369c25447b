//! Upstream connections: connecting with a timeout, and the per-worker idle
//! pool per endpoint. Workers connect to resolved `SocketAddr`s only.

mod pool;

pub use pool::{ConnToken, EndpointPool};

use crate::error::{ErrorKind, ProxyError};
use crate::tls::{Carries, ClientTls, Stream, TlsStream};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Open a new TCP connection to `addr`, failing after `timeout`.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            // Heads and small bodies go out in one write; don't let Nagle hold them.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) if is_local_exhaustion(&e) => Err(ErrorKind::ResourcesExhausted.into()),
        Ok(Err(_)) => Err(ErrorKind::ConnectFailed.into()),
        Err(_) => Err(ErrorKind::ConnectTimeout.into()),
    }
}

/// Whether a connect failed for want of our own descriptors or memory:
/// the endpoint was never reached, and must not be blamed (ejected, marked
/// down) for it.
fn is_local_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Open a new connection to `addr`, with the TLS handshake when `tls` is
/// given (set up for what the connection `carries`); `timeout` covers both.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&ClientTls>,
    carries: Carries,
) -> Result<Stream, ProxyError> {
    let deadline = Instant::now() + timeout;
    let tcp = connect_tcp(addr, timeout).await?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    // Boxed: the handshake holds a whole TLS session, and inline it would
    // swell every request's future, plain ones included.
    let handshake = Box::pin(TlsStream::connect(tcp, tls.config_for(carries), tls.server_name(addr)));
    match monoio::time::timeout_at(deadline.into(), handshake).await {
        Ok(Ok(session)) => Ok(Stream::Tls(std::rc::Rc::new(session))),
        Ok(Err(_)) => Err(ErrorKind::UpstreamTls.into()),
        Err(_) => Err(ErrorKind::ConnectTimeout.into()),
    }
}
