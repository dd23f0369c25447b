//! The read side of a connection: a stream plus the bytes read from it but not
//! yet consumed. The buffer comes from the worker's pool only while there is
//! work to do and goes back as soon as nothing is pending.

use crate::sys::HeadAndBody;
pub use crate::tls::Stream;
use crate::worker::BufferPool;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{CancelableAsyncReadRent, Canceller};
use monoio::net::TcpStream;
use std::io;
use std::time::{Duration, Instant};

/// The longest a reset waits for what was written before it to arrive.
const RESET_DRAIN: Duration = Duration::from_secs(5);

/// Make the socket's close reset the connection, once what was written to
/// it has reached its peer (or `RESET_DRAIN` passes): a reset discards the
/// bytes still queued, and they may be all of an answer that came whole
/// before its sender reset (as a server does that closes with input unread).
/// A connection already gone (its peer reset it) is not waited for; and a
/// wait cut short (a drain, an idle timeout) still leaves the reset set.
pub async fn reset_when_delivered(socket: &impl std::os::fd::AsRawFd) {
    let _reset = ResetOnDrop(socket.as_raw_fd());
    let deadline = Instant::now() + RESET_DRAIN;
    let mut pause = Duration::from_millis(1);
    while matches!(crate::sys::unacked_bytes(socket), Ok(n) if n > 0)
        && !crate::sys::connection_gone(socket)
        && Instant::now() < deadline
    {
        monoio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sets the reset when dropped; the socket outlives it (the wait above
/// borrows it).
struct ResetOnDrop(std::os::fd::RawFd);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        let _ = crate::sys::reset_on_close(&self.0);
    }
}

/// What a read returns when it was cancelled (Linux errno).
const ECANCELED: i32 = 125;

/// Leave at least this much room for each read.
const MIN_READ: usize = 4096;

pub struct Inbound {
    pub stream: Stream,
    buf: Vec<u8>,
    start: usize,
    /// Kept while the connection is busy, so that the read posted between
    /// its requests does not allocate one each time; dropped when it idles.
    canceller: Option<Canceller>,
}

impl Inbound {
    pub fn new(stream: TcpStream) -> Self {
        Self::with_stream(Stream::Plain(stream))
    }

    pub fn with_stream(stream: Stream) -> Self {
        Inbound {
            stream,
            buf: Vec::new(),
            start: 0,
            canceller: None,
        }
    }

    /// Bytes read but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    pub fn has_pending(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Mark the first `n` pending bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Take bytes read from the stream by other means (before any read of
    /// this one's) as pending; an empty `bytes` goes back to the pool.
    pub fn push_read(&mut self, bytes: Vec<u8>, pool: &BufferPool) {
        if bytes.is_empty() {
            if bytes.capacity() > 0 {
                pool.give(bytes);
            }
        } else if self.has_pending() {
            self.buf.extend_from_slice(&bytes);
            pool.give(bytes);
        } else {
            if self.buf.capacity() > 0 {
                pool.give(std::mem::take(&mut self.buf));
            }
            self.buf = bytes;
            self.start = 0;
        }
    }

    /// Read more bytes after the pending ones; Ok(0) is end of stream. The
    /// buffer may grow up to `max` pending bytes (for heads larger than one
    /// pool buffer); beyond that the caller has already refused the message.
    pub async fn fill(&mut self, pool: &BufferPool, max: usize) -> io::Result<usize> {
        self.prepare(pool, max);
        self.read().await
    }

    /// Read into the room `prepare` made.
    async fn read(&mut self) -> io::Result<usize> {
        self.stream.read(&mut self.buf).await
    }

    /// Make room after the pending bytes for the next read.
    fn prepare(&mut self, pool: &BufferPool, max: usize) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        }
        if self.start > 0 {
            // Within the buffer even after a write from it was cancelled.
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            let room = max.saturating_sub(self.buf.len()).max(MIN_READ);
            self.buf.reserve(room.min(self.buf.capacity().max(MIN_READ)));
        }
    }

    /// Like `fill`, with room for a read of up to `want` bytes (a large body
    /// passing through takes fewer, larger reads).
    pub async fn fill_at_least(&mut self, pool: &BufferPool, want: usize) -> io::Result<usize> {
        if want > pool.buffer_size() && !self.has_pending() && self.buf.capacity() < want {
            // Swap for a large buffer: growing this one would copy it.
            let standard = std::mem::replace(&mut self.buf, pool.take_large());
            pool.give(standard);
            self.start = 0;
        }
        self.prepare(pool, want);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        self.read().await
    }

    /// Write `head`, then the first `n` pending bytes straight from this
    /// buffer, with one writev, and consume them. Returns `head` for reuse.
    pub async fn write_after(&mut self, head: Vec<u8>, n: usize, dst: &mut Stream) -> (io::Result<()>, Vec<u8>) {
        let part = self.start..(self.start + n).min(self.buf.len());
        let bufs = match HeadAndBody::new(head, std::mem::take(&mut self.buf), part) {
            Ok(bufs) => bufs,
            Err((head, body)) => {
                self.buf = body;
                return (Err(io::ErrorKind::InvalidInput.into()), head);
            }
        };
        let (result, bufs) = dst.write_vectored_all(bufs).await;
        let (head, body) = bufs.into_parts();
        self.buf = body;
        if result.is_ok() {
            self.consume(n);
        }
        (result.map(|_| ()), head)
    }

    /// Write the first `n` pending bytes to `dst` straight from this buffer
    /// (no copy) and consume them.
    pub async fn write_pending(&mut self, n: usize, dst: &mut Stream) -> io::Result<()> {
        let end = (self.start + n).min(self.buf.len());
        let start = self.start;
        let buf = std::mem::take(&mut self.buf);
        let (result, slice) = dst.write_all(buf.slice(start..end)).await;
        self.buf = slice.into_inner();
        result?;
        self.consume(end - start);
        Ok(())
    }

    /// Like `fill`, but wait at most `window`: None when nothing arrived in
    /// time. Cancel-safe: a read that completes as it is being cancelled
    /// keeps its bytes.
    pub async fn fill_within(&mut self, pool: &BufferPool, window: Duration) -> Option<io::Result<usize>> {
        self.prepare(pool, pool.buffer_size());
        let tcp = match &mut self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => {
                // TLS reads are cancel-safe: a plain timeout will do.
                let deadline = Instant::now() + window;
                return monoio::time::timeout_at(deadline.into(), tls.read(&mut self.buf))
                    .await
                    .ok();
            }
        };
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let handle = self.canceller.get_or_insert_with(Canceller::new).handle();
        let mut read = std::pin::pin!(tcp.cancelable_read(buf.slice_mut(len..), handle));
        let finished = monoio::select! {
            r = &mut read => Some(r),
            _ = monoio::time::sleep(window) => None,
        };
        let (result, slice) = match finished {
            Some(r) => r,
            None => {
                // A cancelled canceller stays cancelled: the next read gets a new one.
                if let Some(canceller) = self.canceller.take() {
                    canceller.cancel();
                }
                read.await
            }
        };
        self.buf = slice.into_inner();
        match result {
            Ok(n) => Some(Ok(n)),
            Err(e) if e.raw_os_error() == Some(ECANCELED) || e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// After a wake-up on readiness: take what the socket holds now, without
    /// posting a read. Ok(None) when it holds nothing after all. A buffer is
    /// kept only if bytes arrived.
    pub fn fill_ready(&mut self, pool: &BufferPool) -> io::Result<Option<usize>> {
        self.prepare(pool, pool.buffer_size());
        let read = match &mut self.stream {
            Stream::Plain(tcp) => crate::sys::read_ready(tcp, &mut self.buf),
            Stream::Tls(tls) => tls.read_ready(&mut self.buf),
        };
        if !matches!(read, Ok(Some(n)) if n > 0) {
            self.release(pool);
        }
        read
    }

    /// Give the buffer back to the pool if nothing is pending in it.
    pub fn release(&mut self, pool: &BufferPool) {
        self.canceller = None;
        self.stream.release();
        if !self.has_pending() && self.buf.capacity() > 0 {
            pool.give(std::mem::take(&mut self.buf));
            self.start = 0;
        }
    }

    pub fn into_parts(self) -> (Stream, Vec<u8>) {
        (self.stream, self.buf)
    }
}
