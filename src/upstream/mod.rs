//! Upstream connections: connecting with a timeout, and the per-worker idle
//! pool per endpoint. Workers connect to resolved `SocketAddr`s only.

mod pool;

pub use pool::{ConnToken, EndpointPool};

use crate::error::{ErrorKind, ProxyError};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::time::Duration;

/// Open a new connection to `addr`, failing after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            // Heads and small bodies go out in one write; don't let Nagle hold them.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(_)) => Err(ErrorKind::ConnectFailed.into()),
        Err(_) => Err(ErrorKind::ConnectTimeout.into()),
    }
}
