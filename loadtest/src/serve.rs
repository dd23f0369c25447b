//! `serve`: a minimal, fast fixed-response HTTP/1.1 upstream for benchmarks
//! and tests. One monoio runtime per thread, each with its own SO_REUSEPORT
//! listener on the same port. Responses are serialized once at start; a
//! connection handles pipelined requests in order, reads and discards their
//! bodies (Content-Length or chunked), answers a whole batch with one write,
//! and closes after a request that asked for `Connection: close` (or an
//! HTTP/1.0 one that did not ask for keep-alive).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent, Canceller};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio::time::Instant;
use socket2::{Domain, Protocol, Socket, Type};

use crate::framing::{head_info, ChunkedDecoder};
use crate::options::ServeOptions;
use crate::runtime::{self, StopSignal};

const READ_BUF: usize = 16 * 1024;
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const MAX_HEADERS: usize = 64;
/// How long a stopping thread waits for its connections to wind down.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// A running `serve`; stops (and joins its threads) on [`ServeHandle::stop`] or drop.
#[derive(Debug)]
pub struct ServeHandle {
    local_addr: SocketAddr,
    stop: Arc<StopSignal>,
    threads: Vec<JoinHandle<()>>,
}

impl ServeHandle {
    /// The address every thread listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes the connections and joins the threads.
    pub fn stop(self) {}

    /// Blocks until the server stops (for the command line: forever).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.stop.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a connection does after a response, which its head must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// HTTP/1.1 persists by default: no Connection field needed.
    KeepAlive,
    /// HTTP/1.0 persists only when the response says so (RFC 9112 §9.3):
    /// without `Connection: keep-alive` the client waits for the close.
    KeepAlive10,
    /// `Connection: close`, then the connection is closed.
    Close,
}

/// One pre-serialized response, head and body.
#[derive(Clone)]
struct Canned {
    bytes: Vec<u8>,
    head_len: usize,
}

/// The pre-serialized responses, one per [`Persist`].
#[derive(Clone)]
struct Responses {
    keep_alive: Canned,
    keep_alive_10: Canned,
    close: Canned,
}

impl Responses {
    fn get(&self, persist: Persist) -> &Canned {
        match persist {
            Persist::KeepAlive => &self.keep_alive,
            Persist::KeepAlive10 => &self.keep_alive_10,
            Persist::Close => &self.close,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn build_responses(opts: &ServeOptions) -> Responses {
    let no_body = opts.status == 204 || opts.status == 304;
    let body: Vec<u8> = if no_body {
        Vec::new()
    } else {
        b"Hello, world!\n"
            .iter()
            .copied()
            .cycle()
            .take(opts.body_size)
            .collect()
    };
    let build = |connection: Option<&str>| {
        let mut head = format!("HTTP/1.1 {} {}\r\n", opts.status, reason(opts.status));
        if !no_body {
            head.push_str(&format!(
                "content-length: {}\r\ncontent-type: text/plain\r\n",
                body.len()
            ));
        }
        if let Some(name) = &opts.name {
            head.push_str(&format!("x-served-by: {name}\r\n"));
        }
        if let Some(connection) = connection {
            head.push_str(&format!("connection: {connection}\r\n"));
        }
        head.push_str("\r\n");
        let head_len = head.len();
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        Canned { bytes, head_len }
    };
    Responses {
        keep_alive: build(None),
        keep_alive_10: build(Some("keep-alive")),
        close: build(Some("close")),
    }
}

fn check(opts: &ServeOptions) -> io::Result<()> {
    let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
    if opts.threads == 0 {
        return bad("serve needs at least one thread");
    }
    if !(200..=599).contains(&opts.status) {
        return bad("the status must be between 200 and 599");
    }
    if let Some(name) = &opts.name {
        if name.is_empty() || name.chars().any(|c| c.is_ascii_control()) {
            return bad("the name must be non-empty printable text");
        }
    }
    Ok(())
}

/// Binds `addr` without SO_REUSEPORT, without listening, and returns that
/// socket with its address (the port the kernel picked when 0 was asked).
///
/// Every thread's listener sets SO_REUSEPORT so that they share the port,
/// but so may another process's (a stale `serve`): the kernel would let
/// ours join its group, and the two would split a benchmark's connections.
/// A socket without the option cannot bind where anything listens, so this
/// turns that case into "address in use". Held until the listeners are
/// bound (SO_REUSEADDR lets them bind beside a socket that does not
/// listen), it keeps the port from being taken in between.
fn claim_port(addr: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let bound = socket.local_addr()?.as_socket();
    let bound = bound.ok_or_else(|| io::Error::other("bound to a non-IP address"))?;
    Ok((socket, bound))
}

/// Starts serving on `opts.threads` threads; returns once every thread listens.
pub fn spawn_serve(opts: ServeOptions) -> io::Result<ServeHandle> {
    check(&opts)?;
    let (claim, address) = claim_port(opts.address)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", opts.address)))?;
    let responses = Arc::new(build_responses(&opts));
    let mut handle = ServeHandle {
        local_addr: address,
        stop: Arc::new(StopSignal::default()),
        threads: Vec::with_capacity(opts.threads),
    };
    for t in 0..opts.threads {
        let (tx, rx) = mpsc::channel();
        let (addr, stop, responses) = (handle.local_addr, handle.stop.clone(), responses.clone());
        let delay = opts.delay;
        let thread = std::thread::Builder::new()
            .name(format!("ringway-serve-{t}"))
            .spawn(move || serve_thread(addr, &responses, delay, &stop, &tx))?;
        handle.threads.push(thread);
        match rx.recv() {
            Ok(Ok(bound)) => handle.local_addr = bound,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("a serve thread exited while starting")),
        }
    }
    drop(claim);
    Ok(handle)
}

fn serve_thread(
    addr: SocketAddr,
    responses: &Arc<Responses>,
    delay: Duration,
    stop: &Arc<StopSignal>,
    ready: &mpsc::Sender<io::Result<SocketAddr>>,
) {
    let mut rt = match runtime::build_runtime(1024) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
        let listener = match TcpListener::bind_with_config(addr, &opts).and_then(|l| {
            let a = l.local_addr()?;
            Ok((l, a))
        }) {
            Ok((l, bound)) => {
                let _ = ready.send(Ok(bound));
                l
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let responses = Rc::new(Responses::clone(responses));
        let canceller = Canceller::new();
        let active = Rc::new(Cell::new(0usize));
        let accept_loop = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let conn = serve_conn(stream, responses.clone(), canceller.handle(), delay);
                        let active = active.clone();
                        active.set(active.get() + 1);
                        monoio::spawn(async move {
                            conn.await;
                            active.set(active.get() - 1);
                        });
                    }
                    // Out of file descriptors and the like: back off, keep serving.
                    Err(_) => monoio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        monoio::select! {
            _ = accept_loop => {},
            _ = stop.wait() => {},
        }
        drop(listener);
        let _ = canceller.cancel();
        let deadline = Instant::now() + STOP_GRACE;
        while active.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

/// Where a connection is within the current request.
enum Req {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// A request head's outcome: its length, body framing and response flags.
struct Parsed {
    len: usize,
    /// Body framing, `None` when there is no body.
    body: Option<Req>,
    persist: Persist,
    head: bool,
    expect_continue: bool,
}

/// Parses a request head; `Err` carries the error response to send.
fn parse_request(buf: &[u8]) -> Result<Option<Parsed>, &'static [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(_) => return Err(BAD_REQUEST),
    };
    let info = head_info(req.version.unwrap_or(1), req.headers).map_err(|_| BAD_REQUEST)?;
    let body = match (info.has_transfer_encoding, info.chunked, info.content_length) {
        (true, _, Some(_)) | (true, false, None) => return Err(BAD_REQUEST),
        (true, true, None) => Some(Req::Chunked(ChunkedDecoder::default())),
        (false, _, Some(n)) if n > 0 => Some(Req::Length(n)),
        _ => None,
    };
    let expect_continue = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue"));
    Ok(Some(Parsed {
        len,
        body,
        persist: match (info.keep_alive, req.version) {
            (false, _) => Persist::Close,
            (true, Some(0)) => Persist::KeepAlive10,
            (true, _) => Persist::KeepAlive,
        },
        head: req.method == Some("HEAD"),
        expect_continue,
    }))
}

/// Answers gathered past this much are written before more are made.
const OUT_FLUSH: usize = 256 * 1024;

async fn serve_conn(mut stream: TcpStream, resp: Rc<Responses>, cancel: CancelHandle, delay: Duration) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut pos = 0;
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut state = Req::Head;
    let (mut persist, mut head_only) = (Persist::KeepAlive, false);
    // When the last read completed; kept only with a delay to wait.
    let mut read_at = Instant::now();
    loop {
        let mut close = false;
        // Answers to write before the rest of a pipelined batch is parsed.
        let mut full = false;
        loop {
            let rest = &buf[pos..];
            let complete = match &mut state {
                Req::Head => match parse_request(rest) {
                    Ok(Some(p)) => {
                        pos += p.len;
                        (persist, head_only) = (p.persist, p.head);
                        if p.expect_continue && p.body.is_some() && pos == buf.len() {
                            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                        match p.body {
                            Some(body) => {
                                state = body;
                                false
                            }
                            None => true,
                        }
                    }
                    Ok(None) => break,
                    Err(error_response) => {
                        out.extend_from_slice(error_response);
                        close = true;
                        break;
                    }
                },
                Req::Length(left) => {
                    let take = (*left).min(rest.len() as u64);
                    pos += take as usize;
                    *left -= take;
                    *left == 0
                }
                Req::Chunked(dec) => match dec.decode(rest) {
                    Ok(p) => {
                        pos += p.consumed;
                        p.done
                    }
                    Err(_) => {
                        out.extend_from_slice(BAD_REQUEST);
                        close = true;
                        break;
                    }
                },
            };
            if !complete {
                if pos == buf.len() {
                    break;
                }
                continue;
            }
            state = Req::Head;
            // Due `delay` after the read that completed the request. The
            // requests of one read (pipelined) are due together, so only the
            // first of them waits, with nothing of this batch held back yet;
            // waiting `delay` for each in turn held the first response N×D.
            let due = read_at + delay;
            if !delay.is_zero() && due > Instant::now() {
                monoio::time::sleep_until(due).await;
            }
            let canned = resp.get(persist);
            let bytes = &canned.bytes;
            out.extend_from_slice(if head_only { &bytes[..canned.head_len] } else { bytes });
            if persist == Persist::Close {
                close = true;
                break;
            }
            // A batch of pipelined requests for large bodies would hold
            // them all at once: write what is gathered first.
            if out.len() >= OUT_FLUSH {
                full = true;
                break;
            }
        }
        if !out.is_empty() {
            let (res, b) = stream.write_all(out).await;
            out = b;
            out.clear();
            if res.is_err() {
                return;
            }
        }
        if close {
            return;
        }
        if full {
            continue;
        }
        if pos >= buf.len() {
            buf.clear();
        } else if pos > 0 {
            buf.copy_within(pos.., 0);
            buf.truncate(buf.len() - pos);
        }
        pos = 0;
        if buf.len() >= buf.capacity() {
            // A head that does not fit in the buffer.
            let _ = stream.write_all(TOO_LARGE).await;
            return;
        }
        let len = buf.len();
        let (res, slice) = stream.cancelable_read(buf.slice_mut(len..), cancel.clone()).await;
        buf = slice.into_inner();
        if !delay.is_zero() {
            read_at = Instant::now();
        }
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persist(head: &str) -> Option<Persist> {
        match parse_request(head.as_bytes()) {
            Ok(Some(p)) => Some(p.persist),
            _ => None,
        }
    }

    #[test]
    fn what_the_connection_does_after_the_response() {
        assert_eq!(persist("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Persist::KeepAlive));
        assert_eq!(
            persist("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            Some(Persist::Close)
        );

        assert_eq!(persist("GET / HTTP/1.0\r\n\r\n"), Some(Persist::Close));
        let ab_k = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(persist(ab_k), Some(Persist::KeepAlive10));
        let responses = build_responses(&ServeOptions::default());
        let text = |p: Persist| String::from_utf8_lossy(&responses.get(p).bytes).into_owned();
        assert!(text(Persist::KeepAlive10).contains("\r\nconnection: keep-alive\r\n"));
        assert!(text(Persist::Close).contains("\r\nconnection: close\r\n"));
        assert!(!text(Persist::KeepAlive).contains("connection:"));
    }
}
