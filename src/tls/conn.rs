//! A connection's byte stream, plain or TLS, behind one set of calls the
//! request path uses for clients and upstreams alike.

use super::TlsStream;
use crate::sys::HeadAndBody;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// Plain TCP, or a TLS session (terminated here, or originated to an
/// upstream). The session is behind a pointer so a plain connection costs
/// no more than its socket, and a counted one so that two tasks may share
/// it (see [`Stream::share`]).
pub enum Stream {
    Plain(TcpStream),
    Tls(Rc<TlsStream>),
}

impl Stream {
    /// The peer's verified SPIFFE ID (TLS only).
    pub fn identity(&self) -> Option<&str> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls.identity(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// A second handle on the same connection, for one task to read while
    /// another writes: a second descriptor for plain TCP, the same session
    /// for TLS. While both live, TLS writes wait for room on the socket
    /// rather than handing it a buffer, and the connection closes when the
    /// last handle goes. None if no descriptor could be made.
    pub fn share(&self) -> Option<Stream> {
        match self {
            Stream::Plain(tcp) => Stream::duplicate(tcp),
            Stream::Tls(tls) => Some(Stream::Tls(tls.clone())),
        }
    }

    /// A plain stream on a second descriptor for `socket`: [`Stream::share`]
    /// for a plain socket known only by its descriptor.
    pub fn duplicate(socket: &impl AsRawFd) -> Option<Stream> {
        let second = crate::sys::duplicate(socket).ok()?;
        TcpStream::from_std(second).ok().map(Stream::Plain)
    }

    pub async fn write_all<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(buf).await,
            Stream::Tls(tls) => {
                let written = write_tls(tls, &[crate::sys::io_buf_bytes(&buf)]).await;
                (written.map(|()| buf.bytes_init()), buf)
            }
        }
    }

    pub async fn write_vectored_all(&mut self, bufs: HeadAndBody) -> BufResult<usize, HeadAndBody> {
        match self {
            Stream::Plain(tcp) => tcp.write_vectored_all(bufs).await,
            Stream::Tls(tls) => {
                let parts = bufs.parts();
                let total = parts[0].len() + parts[1].len();
                let written = write_tls(tls, &parts).await;
                (written.map(|()| total), bufs)
            }
        }
    }

    /// Append what arrives to `buf`, up to its spare capacity; Ok(0) is end
    /// of stream.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => {
                let len = buf.len();
                let owned = std::mem::take(buf);
                let (result, slice) = tcp.read(owned.slice_mut(len..)).await;
                *buf = slice.into_inner();
                result
            }
            Stream::Tls(tls) => tls.read(buf).await,
        }
    }

    /// Wait until a read would find something (or the end of the stream).
    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.readable(false).await,
            // Boxed: an idle plain connection's wait stays the size of a poll.
            Stream::Tls(tls) => Box::pin(tls.readable()).await,
        }
    }

    /// Without waiting, append what the stream holds now to `buf`: Some(n)
    /// (0 at end of stream), None when nothing (or no whole TLS record) is
    /// there yet.
    pub fn read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        match self {
            Stream::Plain(tcp) => crate::sys::read_ready(tcp, buf),
            Stream::Tls(tls) => tls.read_ready(buf),
        }
    }

    /// The socket underneath, to wait for it to be readable or writable.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.tcp(),
        }
    }

    /// Whether a TLS session holds decrypted bytes (or a close) that no
    /// socket readiness will announce.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.has_plaintext(),
        }
    }

    /// After end of stream: whether the peer closed properly (always for
    /// plain TCP; for TLS, with close_notify rather than a bare FIN).
    pub fn closed_cleanly(&mut self) -> bool {
        match self {
            Stream::Plain(_) => true,
            Stream::Tls(tls) => tls.closed_cleanly(),
        }
    }

    /// Without waiting: write as much of `data` as the stream takes now (on
    /// TLS, as much as the session buffers). Ok(0): nothing for now.
    pub fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => match crate::sys::send_ready(tcp, data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                sent => sent,
            },
            Stream::Tls(tls) => tls.write_now(data),
        }
    }

    /// Without waiting: send what a TLS session has queued.
    pub fn flush_now(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tls) => tls.flush_now(),
        }
    }

    /// Bytes taken that are not on the socket yet (TLS records).
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.wants_write(),
        }
    }

    /// The first step of ending the write direction without waiting: TLS
    /// queues close_notify (then flush, then [`Stream::shutdown_socket`]).
    pub fn queue_close(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.queue_close();
        }
    }

    /// End the socket's write direction (FIN).
    pub async fn shutdown_socket(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.shutdown().await,
            Stream::Tls(tls) => match Rc::get_mut(tls) {
                Some(tls) => tls.shutdown_socket().await,
                None => crate::sys::shutdown_write(tls.tcp()),
            },
        }
    }

    /// End the write direction: FIN, after close_notify on TLS.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.shutdown().await,
            Stream::Tls(tls) => Box::pin(close_tls(tls)).await,
        }
    }

    /// For a pooled connection: still open, and nothing arrived unasked
    /// (neither a close nor a byte to peek at).
    pub fn idle_alive(&mut self) -> bool {
        match self {
            Stream::Plain(tcp) => crate::sys::peer_closed(tcp).is_none(),
            Stream::Tls(tls) => tls.idle_alive(),
        }
    }

    /// Drop what a TLS session holds only while busy (its scratch buffer).
    pub fn release(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.release();
        }
    }

    /// End a TLS session with close_notify; a plain stream needs nothing.
    pub async fn close(&mut self) {
        if let Stream::Tls(tls) = self {
            let _ = close_tls(tls).await;
        }
    }
}

/// Write to a TLS session: through the ring when this handle is its only
/// one; without handing the socket a buffer while another task shares it.
async fn write_tls(tls: &mut Rc<TlsStream>, parts: &[&[u8]]) -> io::Result<()> {
    match Rc::get_mut(tls) {
        Some(only) => only.write_all(parts).await,
        None => tls.write_all_shared(parts).await,
    }
}

/// Send close_notify and end the write direction, as [`write_tls`] writes.
async fn close_tls(tls: &mut Rc<TlsStream>) -> io::Result<()> {
    match Rc::get_mut(tls) {
        Some(only) => only.close().await,
        None => tls.close_shared().await,
    }
}
