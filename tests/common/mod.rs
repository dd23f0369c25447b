//! Shared harness for the integration tests: a controllable HTTP/1.1 upstream
//! on std threads, blocking clients with timeouts, and helpers to start the
//! proxy in-process or as the `ringway` binary.
//!
//! Every blocking socket operation here carries [`IO_TIMEOUT`], so a proxy
//! bug fails a test instead of hanging it, and every thread the harness
//! spawns ends on its own (timeouts, EOF, or the owner's `Drop`).

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ringway::worker::Server;

/// Bound on every blocking socket operation and every wait in the harness.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the upstream keeps an idle connection. Longer than
/// [`IO_TIMEOUT`], so a test waiting for the proxy to close an upstream
/// connection cannot be satisfied by the upstream giving up on its own.
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(30);

/// Most header lines either side of the harness parses.
const MAX_HEADERS: usize = 256;

// ---------------------------------------------------------------------------
// Deterministic body data
// ---------------------------------------------------------------------------

/// Byte `i` of the test pattern. The period (251, prime) does not divide any
/// buffer size, so a dropped, duplicated or reordered block changes the data.
pub fn pattern_byte(i: u64) -> u8 {
    ((i % 251) ^ ((i / 251) % 7)) as u8
}

/// `len` pattern bytes starting at offset `start`.
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(start + i)).collect()
}

/// Incremental 64-bit FNV-1a, to compare large bodies without keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv::default();
        h.update(bytes);
        h.0
    }
}

/// FNV-1a of `len` pattern bytes from offset 0.
pub fn pattern_fnv(len: u64) -> u64 {
    let mut h = Fnv::default();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(64 * 1024);
        h.update(&pattern(at, n as usize));
        at += n;
    }
    h.0
}

// ---------------------------------------------------------------------------
// Buffered wire reader shared by the upstream and the clients
// ---------------------------------------------------------------------------

/// A stream (a TCP socket, or a TLS session over one) plus bytes read from
/// it but not consumed yet.
pub struct Wire<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
    /// Incremented by every byte read, when set.
    counter: Option<Arc<AtomicU64>>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("set write timeout");
        let _ = stream.set_nodelay(true);
        Wire::over(stream)
    }
}

impl<S: Read> Wire<S> {
    /// Over a stream already set up (timeouts included).
    pub fn over(stream: S) -> Wire<S> {
        Wire {
            stream,
            buf: Vec::new(),
            counter: None,
        }
    }

    /// Bytes received but not consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Read more bytes; Ok(0) at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if let Some(counter) = &self.counter {
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_or_eof(&mut self, what: &str) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("end of stream in {what}"),
            ));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// A line up to and including CRLF, returned without it.
    fn read_line(&mut self, what: &str) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let mut line = self.take(i + 2);
                line.truncate(i);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(invalid(format!("{what}: line over 64 KiB")));
            }
            self.fill_or_eof(what)?;
        }
    }

    pub fn read_exact_vec(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_eof(what)?;
        }
        Ok(self.take(n))
    }

    /// Feed exactly `n` body bytes to `sink` without holding them all.
    fn stream_exact(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() {
                self.fill_or_eof("body")?;
            }
            let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let data = self.take(take);
            sink(&data);
            n -= take as u64;
        }
        Ok(())
    }

    /// Decode a chunked body (RFC 9112 §7.1) into `sink`; trailers are dropped.
    fn stream_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            let line = self.read_line("chunk size")?;
            let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
            let size_text = std::str::from_utf8(size_text).map_err(|_| invalid("chunk size not ascii"))?;
            let size = u64::from_str_radix(size_text.trim(), 16)
                .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailer section, ended by an empty line.
                while !self.read_line("trailers")?.is_empty() {}
                return Ok(());
            }
            self.stream_exact(size, sink)?;
            if !self.read_line("chunk end")?.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    fn stream_until_close(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                let data = std::mem::take(&mut self.buf);
                sink(&data);
            }
            match self.fill() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read the next response, interim (1xx) ones included.
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let (head_len, status, version, reason, headers) = loop {
            if !self.buf.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut slots);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        break (
                            len,
                            resp.code.unwrap_or_default(),
                            resp.version.unwrap_or_default(),
                            resp.reason.unwrap_or_default().to_string(),
                            owned_headers(resp.headers),
                        );
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        let text = String::from_utf8_lossy(&self.buf);
                        return Err(invalid(format!("bad response head ({e}): {text:?}")));
                    }
                }
            }
            self.fill_or_eof("response head")?;
        };
        self.take(head_len);
        let body_kind = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            BodyKind::None
        } else if is_chunked(&headers) {
            BodyKind::Chunked
        } else {
            match content_length(&headers)? {
                Some(n) => BodyKind::Length(n),
                None => BodyKind::UntilClose,
            }
        };
        let mut body = Vec::new();
        let mut sink = |data: &[u8]| body.extend_from_slice(data);
        match body_kind {
            BodyKind::None => {}
            BodyKind::Length(n) => self.stream_exact(n, &mut sink)?,
            BodyKind::Chunked => self.stream_chunked(&mut sink)?,
            BodyKind::UntilClose => self.stream_until_close(&mut sink)?,
        }
        Ok(Response {
            status,
            version,
            reason,
            headers,
            body_kind,
            body,
        })
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Whether a comma-separated header (e.g. Connection) lists `token`.
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header_values(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .next_back()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
}

fn content_length(headers: &[(String, String)]) -> io::Result<Option<u64>> {
    match header_values(headers, "content-length").first() {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("bad content-length {v:?}"))),
    }
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// The controllable upstream
// ---------------------------------------------------------------------------

/// What the upstream does with each request it has read in full.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 whose body is the request head exactly as received followed by the
    /// decoded request body; see [`Echoed`]. Headers `x-echo-body-length` and
    /// `x-echo-body-fnv` summarise the body.
    Echo,
    /// A fixed response.
    Fixed {
        status: u16,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// 200 with body `name` and header `x-upstream: name`.
    Named(String),
    /// Wait this long, then 200 with body "slow".
    Delay(Duration),
    /// Wait until [`Upstream::release`] (at most [`IO_TIMEOUT`]), then 200 with
    /// body "released". Lets a test act while a request is certainly in flight.
    Hold,
    /// Read the request, then close the connection without a byte of response.
    CloseWithoutResponse,
    /// 200 with `Transfer-Encoding: chunked`, one chunk per part.
    ChunkedResponse(Vec<Vec<u8>>),
    /// 200 with Content-Length n and n bytes of [`pattern`], written as produced.
    BigResponse(u64),
    /// Write these bytes as the response, then close.
    Malformed(Vec<u8>),
    /// Write these bytes as the response and keep the connection, for
    /// well-formed responses the other behaviours cannot shape.
    Raw(Vec<u8>),
    /// A WebSocket server in outline: a handshake (`Upgrade: websocket`) is
    /// answered 101 with `hello\n` straight behind it, then every byte
    /// that arrives is echoed until the peer closes. Anything else gets 200
    /// "plain".
    WebSocketEcho,
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Sequence number of the upstream connection it arrived on (0-based).
    pub conn: usize,
    pub method: String,
    pub path: String,
    /// Minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    /// The head exactly as received, through the blank line.
    pub raw_head: Vec<u8>,
    pub body_kind: BodyKind,
    /// Decoded body; in [`Upstream::received`] only its first [`KEEP_BODY`]
    /// bytes (`body_len` and `body_fnv` always cover all of it).
    pub body: Vec<u8>,
    pub body_len: u64,
    pub body_fnv: u64,
}

/// How much of each body the request log keeps.
pub const KEEP_BODY: usize = 1 << 20;

/// A WebSocket handshake (RFC 6455 §4.1) for `Behavior::WebSocketEcho`.
pub const WEBSOCKET_HANDSHAKE: &[u8] =
    b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }
}

struct Counters {
    connections: usize,
    closed: usize,
    late_sent: usize,
    log: Vec<Received>,
}

struct UpstreamState {
    behavior: Behavior,
    name: Option<String>,
    delay: Duration,
    close_after: Option<usize>,
    drop_request: Option<usize>,
    late_bytes: Option<Vec<u8>>,
    stop: AtomicBool,
    /// While set, every request gets a 503 (see [`Upstream::set_failing`]).
    failing: AtomicBool,
    requests: AtomicUsize,
    bytes: Arc<AtomicU64>,
    counters: Mutex<Counters>,
    changed: Condvar,
    released: Mutex<bool>,
    release_cv: Condvar,
    /// Clones of open connections by sequence number, shut down when the
    /// upstream is dropped. A connection's thread removes its own on exit
    /// (the clone would otherwise keep the socket open).
    open: Mutex<HashMap<usize, TcpStream>>,
}

impl UpstreamState {
    fn counters(&self) -> MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until [`Upstream::release`] is called, at most [`IO_TIMEOUT`].
    fn wait_released(&self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        while !*released && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            released = self
                .release_cv
                .wait_timeout(released, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn open(&self) -> MutexGuard<'_, HashMap<usize, TcpStream>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Options for an upstream beyond its behaviour.
pub struct UpstreamBuilder {
    behavior: Behavior,
    address: Option<SocketAddr>,
    name: Option<String>,
    delay: Duration,
    close_after: Option<usize>,
    drop_request: Option<usize>,
    late_bytes: Option<Vec<u8>>,
}

impl UpstreamBuilder {
    /// Listen on this address instead of a fresh port: an upstream dropped
    /// and started again on the same address looks restarted to the proxy.
    /// Binding is retried (within [`IO_TIMEOUT`]) while the address is still
    /// held by a listener that is closing.
    pub fn address(mut self, addr: SocketAddr) -> Self {
        self.address = Some(addr);
        self
    }

    /// Add `x-upstream: name` to every response.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Wait this long after reading a request before answering it.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Close each connection (without announcing it) after `n` responses, so
    /// the proxy is left holding a stale pooled connection.
    pub fn close_after(mut self, n: usize) -> Self {
        self.close_after = Some(n);
        self
    }

    /// On every connection, read request number `n` (1-based) in full and
    /// then close without answering it: the request reached the upstream,
    /// the proxy got nothing back.
    pub fn drop_request(mut self, n: usize) -> Self {
        self.drop_request = Some(n);
        self
    }

    /// After each response, wait for [`Upstream::release`], then write these
    /// bytes on the now idle connection (see [`Upstream::wait_late`]).
    pub fn late_bytes(mut self, bytes: &[u8]) -> Self {
        self.late_bytes = Some(bytes.to_vec());
        self
    }

    pub fn start(self) -> Upstream {
        let listener = match self.address {
            None => TcpListener::bind("127.0.0.1:0").expect("bind test upstream"),
            Some(addr) => bind_when_free(addr),
        };
        let addr = listener.local_addr().expect("upstream address");
        let name = match &self.behavior {
            Behavior::Named(n) => self.name.or_else(|| Some(n.clone())),
            _ => self.name,
        };
        let state = Arc::new(UpstreamState {
            behavior: self.behavior,
            name,
            delay: self.delay,
            close_after: self.close_after,
            drop_request: self.drop_request,
            late_bytes: self.late_bytes,
            stop: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            bytes: Arc::new(AtomicU64::new(0)),
            counters: Mutex::new(Counters {
                connections: 0,
                closed: 0,
                late_sent: 0,
                log: Vec::new(),
            }),
            changed: Condvar::new(),
            released: Mutex::new(false),
            release_cv: Condvar::new(),
            open: Mutex::new(HashMap::new()),
        });
        let accept_state = state.clone();
        thread::Builder::new()
            .name(format!("upstream-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, accept_state))
            .expect("spawn upstream accept thread");
        Upstream { addr, state }
    }
}

/// A test HTTP/1.1 server on 127.0.0.1 with a thread per connection.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    pub fn start(behavior: Behavior) -> Upstream {
        Upstream::builder(behavior).start()
    }

    pub fn builder(behavior: Behavior) -> UpstreamBuilder {
        UpstreamBuilder {
            behavior,
            address: None,
            name: None,
            delay: Duration::ZERO,
            close_after: None,
            drop_request: None,
            late_bytes: None,
        }
    }

    /// Answer every request (health checks included) with 503 while set.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.counters().connections
    }

    /// Connections that have ended (either side closed).
    pub fn closed(&self) -> usize {
        self.state.counters().closed
    }

    /// Complete requests read so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Bytes received over all connections, parsed or not.
    pub fn bytes_received(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// Every complete request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.counters().log.clone()
    }

    /// The most recent complete request.
    pub fn last(&self) -> Received {
        self.state
            .counters()
            .log
            .last()
            .cloned()
            .expect("the upstream received a request")
    }

    /// Block until at least `n` requests have been read in full.
    pub fn wait_requests(&self, n: usize) {
        self.wait_for(&format!("{n} requests"), |c| c.log.len() >= n);
    }

    /// Block until the late bytes have been written `n` times.
    pub fn wait_late(&self, n: usize) {
        self.wait_for(&format!("{n} late writes"), |c| c.late_sent >= n);
    }

    /// Block until at least `n` connections have ended.
    pub fn wait_closed(&self, n: usize) {
        self.wait_for(&format!("{n} closed connections"), |c| c.closed >= n);
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Counters) -> bool) {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut counters = self.state.counters();
        while !done(&counters) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "upstream {}: timed out waiting for {what}", self.addr);
            counters = self
                .state
                .changed
                .wait_timeout(counters, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Let every held ([`Behavior::Hold`]) request, present and future, answer.
    pub fn release(&self) {
        *self.state.released.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.state.release_cv.notify_all();
    }

    /// `{ address = "127.0.0.1:PORT", weight = W }` for a config.
    pub fn endpoint(&self, weight: u32) -> String {
        format!("{{ address = \"{}\", weight = {weight} }}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.release();
        for (_, s) in self.state.open.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept thread so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Bind `addr`, waiting (at most [`IO_TIMEOUT`]) for a previous listener on it
/// to finish closing: a dropped [`Upstream`]'s accept thread releases its
/// listener shortly after the drop returns.
fn bind_when_free(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                // The kernel gives no notice when a port is released; poll.
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("bind test upstream on {addr}: {e}"),
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<UpstreamState>) {
    for (index, stream) in listener.incoming().enumerate() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        {
            let mut c = state.counters();
            c.connections += 1;
        }
        state.changed.notify_all();
        if let Ok(clone) = stream.try_clone() {
            state.open().insert(index, clone);
        }
        let conn_state = state.clone();
        let spawned = thread::Builder::new()
            .name(format!("upstream-conn-{index}"))
            .spawn(move || {
                // Returns with the stream dropped; then drop the clone too, so
                // the socket is really closed before it is counted as such.
                let _ = serve_connection(stream, index, &conn_state);
                conn_state.open().remove(&index);
                conn_state.counters().closed += 1;
                conn_state.changed.notify_all();
            });
        if spawned.is_err() {
            state.open().remove(&index);
            state.counters().closed += 1;
        }
    }
}

fn serve_connection(stream: TcpStream, conn: usize, state: &UpstreamState) -> io::Result<()> {
    let mut wire = Wire::new(stream);
    wire.stream.set_read_timeout(Some(UPSTREAM_IDLE))?;
    wire.counter = Some(state.bytes.clone());
    let mut served = 0;
    loop {
        let Some(mut request) = read_request(&mut wire, conn)? else {
            return Ok(());
        };
        let keep_alive = request_keep_alive(&request);
        {
            let mut c = state.counters();
            let body = std::mem::take(&mut request.body);
            let mut logged = request.clone();
            logged.body = body[..body.len().min(KEEP_BODY)].to_vec();
            request.body = body;
            c.log.push(logged);
            state.requests.store(c.log.len(), Ordering::SeqCst);
        }
        state.changed.notify_all();
        if state.stop.load(Ordering::SeqCst) || state.drop_request == Some(served + 1) {
            let _ = wire.stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        if !state.delay.is_zero() {
            thread::sleep(state.delay);
        }
        if matches!(state.behavior, Behavior::WebSocketEcho) && has_token(&request.headers, "upgrade", "websocket") {
            return echo_upgraded(&mut wire);
        }
        let more = respond(&mut wire.stream, &request, keep_alive, state)?;
        served += 1;
        if let Some(late) = &state.late_bytes {
            state.wait_released();
            wire.stream.write_all(late)?;
            state.counters().late_sent += 1;
            state.changed.notify_all();
        }
        if !more || !keep_alive || state.close_after.is_some_and(|n| served >= n) {
            let _ = wire.stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// The 101 and greeting, then echo: bytes that came behind the handshake
/// first, then all that follows, until the peer closes.
fn echo_upgraded(wire: &mut Wire) -> io::Result<()> {
    wire.stream.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello\n",
    )?;
    let early = std::mem::take(&mut wire.buf);
    wire.stream.write_all(&early)?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match wire.stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => wire.stream.write_all(&chunk[..n])?,
        }
    }
    let _ = wire.stream.shutdown(Shutdown::Both);
    Ok(())
}

fn request_keep_alive(r: &Received) -> bool {
    if has_token(&r.headers, "connection", "close") {
        return false;
    }
    r.version >= 1 || has_token(&r.headers, "connection", "keep-alive")
}

/// Read one request; Ok(None) on a clean end of stream before any byte.
fn read_request(wire: &mut Wire, conn: usize) -> io::Result<Option<Received>> {
    let (head_len, method, path, version, headers) = loop {
        if !wire.buf.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&wire.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    break (
                        len,
                        req.method.unwrap_or_default().to_string(),
                        req.path.unwrap_or_default().to_string(),
                        req.version.unwrap_or_default(),
                        owned_headers(req.headers),
                    );
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    let _ = wire
                        .stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    return Err(invalid(format!("upstream could not parse a request: {e}")));
                }
            }
        }
        match wire.fill() {
            Ok(0) if wire.buf.is_empty() => return Ok(None),
            Ok(0) => return Err(invalid("end of stream inside a request head")),
            Ok(_) => {}
            // An idle keep-alive connection that outlived the test's patience.
            Err(e) if is_timeout(&e) && wire.buf.is_empty() => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let raw_head = wire.take(head_len);
    let body_kind = if is_chunked(&headers) {
        BodyKind::Chunked
    } else {
        match content_length(&headers)? {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::None,
        }
    };
    let mut body = Vec::new();
    let mut fnv = Fnv::default();
    let mut len = 0u64;
    let mut sink = |data: &[u8]| {
        len += data.len() as u64;
        fnv.update(data);
        body.extend_from_slice(data);
    };
    match body_kind {
        BodyKind::Chunked => wire.stream_chunked(&mut sink)?,
        BodyKind::Length(n) => wire.stream_exact(n, &mut sink)?,
        BodyKind::None | BodyKind::UntilClose => {}
    }
    Ok(Some(Received {
        conn,
        method,
        path,
        version,
        headers,
        raw_head,
        body_kind,
        body,
        body_len: len,
        body_fnv: fnv.0,
    }))
}

fn respond(out: &mut TcpStream, req: &Received, keep_alive: bool, state: &UpstreamState) -> io::Result<bool> {
    let mut head = String::new();
    let connection = if keep_alive { "" } else { "connection: close\r\n" };
    let name = state
        .name
        .as_ref()
        .map(|n| format!("x-upstream: {n}\r\n"))
        .unwrap_or_default();
    // A response to HEAD has the head only, whatever it announces.
    let head_only = req.method == "HEAD";
    let simple = |status: u16, body: &[u8], extra: &[(String, String)]| {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", phrase(status));
        for (n, v) in extra {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        let _ = write!(head, "content-length: {}\r\n{name}{connection}\r\n", body.len());
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(body);
        }
        bytes
    };
    if state.failing.load(Ordering::SeqCst) {
        out.write_all(&simple(503, b"failing on command\n", &[]))?;
        return Ok(true);
    }
    match &state.behavior {
        Behavior::Echo => {
            let mut body = req.raw_head.clone();
            body.extend_from_slice(&req.body);
            let extra = [
                ("x-echo-body-length".to_string(), req.body_len.to_string()),
                ("x-echo-body-fnv".to_string(), format!("{:016x}", req.body_fnv)),
                ("x-echo-conn".to_string(), req.conn.to_string()),
            ];
            out.write_all(&simple(200, &body, &extra))?;
        }
        Behavior::Fixed { status, body, headers } => out.write_all(&simple(*status, body, headers))?,
        Behavior::Named(n) => out.write_all(&simple(200, n.as_bytes(), &[]))?,
        Behavior::Delay(d) => {
            thread::sleep(*d);
            out.write_all(&simple(200, b"slow", &[]))?;
        }
        Behavior::Hold => {
            state.wait_released();
            out.write_all(&simple(200, b"released", &[]))?;
        }
        Behavior::CloseWithoutResponse => return Ok(false),
        Behavior::ChunkedResponse(parts) => {
            let _ = write!(
                head,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{name}{connection}\r\n"
            );
            out.write_all(head.as_bytes())?;
            if head_only {
                return Ok(true);
            }
            for part in parts.iter().filter(|p| !p.is_empty()) {
                out.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
                out.write_all(part)?;
                out.write_all(b"\r\n")?;
            }
            out.write_all(b"0\r\n\r\n")?;
        }
        Behavior::BigResponse(n) => {
            let _ = write!(head, "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n{name}{connection}\r\n");
            out.write_all(head.as_bytes())?;
            let mut at = if head_only { *n } else { 0 };
            while at < *n {
                let len = (*n - at).min(64 * 1024);
                out.write_all(&pattern(at, len as usize))?;
                at += len;
            }
        }
        Behavior::Malformed(raw) => {
            out.write_all(raw)?;
            return Ok(false);
        }
        Behavior::Raw(raw) => out.write_all(raw)?,
        Behavior::WebSocketEcho => out.write_all(&simple(200, b"plain", &[]))?,
    }
    Ok(true)
}

pub fn phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// The request an [`Behavior::Echo`] upstream saw, read back from the body.
#[derive(Debug, Clone)]
pub struct Echoed {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Echoed {
    pub fn parse(body: &[u8]) -> Echoed {
        let end = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("echo body holds a request head");
        let head = std::str::from_utf8(&body[..end]).expect("echoed head is utf-8");
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("echoed header line has a colon");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        Echoed {
            request_line,
            headers,
            body: body[end + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// A response as a client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Minor version of the status line.
    pub version: u8,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body_kind: BodyKind,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// Whether `Connection: close` was announced.
    pub fn announces_close(&self) -> bool {
        has_token(&self.headers, "connection", "close")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `x-ringway-error`, the reason the proxy gives for a response it made.
    pub fn error_reason(&self) -> Option<&str> {
        self.header("x-ringway-error")
    }
}

/// A blocking client connection with read and write timeouts.
pub struct Client {
    wire: Wire,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// For a connection the proxy may refuse: a reset can come before the
    /// connect is seen through.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        Ok(Client {
            wire: Wire::new(stream),
        })
    }

    /// Assert the proxy resets a connection to `addr` without a byte: at
    /// once, or once connected.
    pub fn expect_refused(addr: SocketAddr) {
        match Client::try_connect(addr) {
            Ok(mut client) => client.expect_reset(),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
    }

    /// Connect from `source` (another loopback address, say), to look like
    /// a different client.
    pub fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .expect("client socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        socket
            .connect_timeout(&addr.into(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
        Client {
            wire: Wire::new(socket.into()),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.wire.stream
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.wire.stream.local_addr().expect("client address")
    }

    /// A second handle on the connection, to write on from another thread
    /// while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.wire
            .stream
            .try_clone()
            .expect("a second handle on the client socket")
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)?;
        self.wire.stream.flush()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("send to the proxy: {e}"));
    }

    /// Send one byte per write (TCP_NODELAY is on), so the proxy sees every
    /// possible split of the message.
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(std::slice::from_ref(b));
        }
    }

    /// Read the next response, interim (1xx) ones included.
    pub fn try_read_response(&mut self, head_request: bool) -> io::Result<Response> {
        self.wire.read_response(head_request)
    }

    /// The next response, interim ones included; panics on error.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("read a response from the proxy: {e}"))
    }

    /// The next final (non-1xx) response.
    pub fn read_final_response(&mut self) -> Response {
        loop {
            let r = self.read_response();
            if !(100..200).contains(&r.status) {
                return r;
            }
        }
    }

    /// Send `raw` and read the final response to it.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_final_response()
    }

    /// A keep-alive GET.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
    }

    /// A keep-alive GET with extra header lines (each "Name: value").
    pub fn get_with(&mut self, host: &str, path: &str, headers: &[&str]) -> Response {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for h in headers {
            raw.push_str(h);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        self.request(raw.as_bytes())
    }

    /// As [`Client::expect_closed`], and the close must be a reset: the
    /// stream was cut, not ended.
    pub fn expect_reset(&mut self) {
        assert!(
            self.wire.buf.is_empty(),
            "unexpected bytes before the reset: {:?}",
            String::from_utf8_lossy(&self.wire.buf)
        );
        let mut rest = Vec::new();
        let ended = self.wire.stream.read_to_end(&mut rest).map_err(|e| e.kind());
        assert_eq!(
            ended,
            Err(ErrorKind::ConnectionReset),
            "after {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Read at least `n` bytes (of a cut answer), then a reset.
    pub fn expect_reset_after_bytes(&mut self, n: usize) {
        let mut got = std::mem::take(&mut self.wire.buf);
        let ended = self.wire.stream.read_to_end(&mut got).map_err(|e| e.kind());
        assert_eq!(ended, Err(ErrorKind::ConnectionReset), "after {} bytes", got.len());
        assert!(got.len() >= n, "only {} bytes before the reset", got.len());
    }

    /// Assert the peer closes the connection (EOF or reset) within
    /// [`IO_TIMEOUT`] without sending any further byte.
    pub fn expect_closed(&mut self) {
        assert!(
            self.wire.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.wire.buf)
        );
        let mut byte = [0u8; 1024];
        match self.wire.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&byte[..n])
            ),
            Err(e) if is_timeout(&e) => panic!("the connection is still open after {IO_TIMEOUT:?}"),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {}
            Err(e) => panic!("unexpected read error waiting for close: {e}"),
        }
    }

    /// The next `n` bytes of the stream past what was parsed so far (the
    /// stream of an upgraded connection, say).
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.wire.buf.len() < n {
            let have = self.wire.buf.len();
            self.wire
                .fill_or_eof("raw bytes")
                .unwrap_or_else(|e| panic!("read {n} bytes (have {have}): {e}"));
        }
        self.wire.take(n)
    }

    /// Read until the peer closes, returning every byte received.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.wire.buf);
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match self.wire.stream.read(&mut chunk) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return all,
                Err(e) => panic!("read until close: {e} (got {} bytes)", all.len()),
            }
        }
    }
}

/// One request on a fresh connection: send `raw`, read the final response.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Response {
    Client::connect(addr).request(raw)
}

/// A GET on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    Client::connect(addr).get(host, path)
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// A loopback address nothing listens on (its port was free a moment ago):
/// for a listener a reload adds, or an endpoint that refuses.
pub fn free_address() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("addr")
}

/// `[runtime]` for in-process tests: one unpinned worker, a short drain.
pub const RUNTIME_1: &str = "[runtime]\nworkers = 1\npin_cores = false\ndrain_timeout = \"5s\"\n";
/// As [`RUNTIME_1`] with two workers.
pub const RUNTIME_2: &str = "[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n";

/// Start the proxy in-process from config text; returns once every worker
/// listens, with the bound address of the listener named "ingress".
pub fn proxy(config_toml: &str) -> (Server, SocketAddr) {
    let snapshot = ringway::config::parse(config_toml, "test.toml", 1)
        .unwrap_or_else(|e| panic!("invalid test config:\n{e}\n---\n{config_toml}"));
    let server = Server::start(snapshot).expect("start the proxy");
    let addr = server.local_addr("ingress").expect("listener ingress is bound");
    (server, addr)
}

/// Graceful stop: drain and join the workers.
pub fn stop(server: Server) {
    server.drain();
    server.wait();
}

/// `[ {endpoint}, ... ]` for a cluster, every weight 1.
pub fn endpoints(upstreams: &[&Upstream]) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| u.endpoint(1)).collect();
    format!("[ {} ]", list.join(", "))
}

/// A config with one HTTP listener "ingress" whose only route sends
/// everything to cluster "a" over `upstreams`. `listener_extra` and
/// `cluster_extra` are extra `key = value` lines for those tables.
pub fn simple_config(upstreams: &[&Upstream], listener_extra: &str, cluster_extra: &str) -> String {
    config_with(&endpoints(upstreams), listener_extra, "", cluster_extra)
}

/// As [`simple_config`], with the endpoint list as config text and extra
/// lines for the route too.
pub fn config_with(endpoints: &str, listener_extra: &str, route_extra: &str, cluster_extra: &str) -> String {
    format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
{listener_extra}
  [[listener.route]]
  name = \"all\"
  match = {{ path_prefix = \"/\" }}
  cluster = \"a\"
  {route_extra}

[[cluster]]
name = \"a\"
endpoints = {endpoints}
{cluster_extra}
"
    )
}

/// One tcp listener "ingress" in front of cluster "a" (1 worker).
pub fn tcp_config(endpoints: &str, listener_extra: &str, cluster_extra: &str) -> String {
    format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
protocol = \"tcp\"
cluster = \"a\"
{listener_extra}

[[cluster]]
name = \"a\"
endpoints = {endpoints}
{cluster_extra}
"
    )
}

/// A loopback port with nothing listening on it. It stays bound (never
/// listening) for the rest of the test process, so that no other test's
/// listener can be given it meanwhile: connecting to it is refused.
pub fn closed_port() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind a probe port");
    let addr = socket
        .local_addr()
        .expect("probe address")
        .as_socket()
        .expect("an inet address");
    // Held, not closed: see above.
    std::mem::forget(socket);
    addr
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

/// A config written to a unique temporary file, removed on drop.
pub struct TempConfig {
    pub path: std::path::PathBuf,
}

impl TempConfig {
    pub fn new(text: &str) -> TempConfig {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ringway-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write the test config");
        TempConfig { path }
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The `ringway` binary running a config; killed on drop if still running.
pub struct RunningBinary {
    pub child: Child,
    pub addr: SocketAddr,
    /// Stderr lines after the ready line (and all before it in `early`).
    pub stderr: mpsc::Receiver<String>,
    pub early: Vec<String>,
    _config: TempConfig,
}

pub fn binary_path() -> &'static str {
    env!("CARGO_BIN_EXE_ringway")
}

impl RunningBinary {
    /// Run `ringway -c FILE` and wait for its "workers ready" line.
    pub fn start(config_toml: &str) -> RunningBinary {
        RunningBinary::start_seeing(config_toml, |_, _| {})
    }

    /// As `start`, showing `early_line` each stderr line up to the ready
    /// line as it comes, with the process id.
    pub fn start_seeing(config_toml: &str, mut early_line: impl FnMut(&str, u32)) -> RunningBinary {
        let config = TempConfig::new(config_toml);
        let mut child = Command::new(binary_path())
            .arg("-c")
            .arg(&config.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the ringway binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut early = Vec::new();
        let mut addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("ringway did not report ready; stderr so far: {early:#?}");
                }
            };
            if let Some(rest) = line.strip_prefix("ringway: listener ingress on ") {
                addr = Some(rest.trim().parse::<SocketAddr>().expect("listener address parses"));
            }
            let ready = line.starts_with("ringway: ") && line.ends_with(" workers ready");
            early_line(&line, child.id());
            early.push(line);
            if ready {
                break;
            }
        }
        let addr = addr.unwrap_or_else(|| panic!("no 'listener ingress on' line in {early:#?}"));
        RunningBinary {
            child,
            addr,
            stderr: rx,
            early,
            _config: config,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("VmRSS value in kB")
    }

    /// Send SIGTERM through kill(1).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Send the signal `name` (`HUP`, `TERM`...) through kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The config file it was started with (a SIGHUP reloads it).
    pub fn config_path(&self) -> &std::path::Path {
        &self._config.path
    }

    /// Wait for a stderr line containing `needle`; the line.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {needle:?}"),
            }
        }
    }

    /// Wait up to `limit` for the process to exit; its status, or None.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // No exit notification exists for a child without a reaper thread;
            // polling try_wait is the readiness check here.
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `f` on `n` threads at once and collect the results; panics in any
/// thread are re-raised here (a scoped thread joins before returning).
pub fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    })
}

/// Exposition text must pass `promtool check metrics`; skipped (with a note)
/// where promtool is not installed (CI installs it before the tests).
pub fn promtool_accepts(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("promtool not installed: exposition check skipped");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw upstream for the reset tests: accepts one connection, echoes what
/// arrives until it sees `RESET` (then resets) or the stream ends; sends
/// how its reading ended.
pub fn resetting_upstream() -> (SocketAddr, mpsc::Receiver<io::Result<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else { return };
        let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
        let mut buf = [0u8; 4096];
        let ended = loop {
            match tcp.read(&mut buf) {
                Ok(0) => break Ok(0),
                Ok(n) if buf[..n].ends_with(b"RESET") => {
                    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                    break Ok(n);
                }
                Ok(n) => {
                    let _ = tcp.write_all(&buf[..n]);
                }
                Err(e) => break Err(e),
            }
        };
        let _ = tx.send(ended);
    });
    (addr, rx)
}

/// Read a request head off `tcp` a byte at a time, through its blank line
/// (or until the stream ends), leaving what follows unread: for raw
/// upstreams that answer without reading the body. Returns what it read.
pub fn read_request_head(tcp: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    head
}
