//! One admin connection, served on its own thread with blocking reads: heads
//! parsed with httparse, Content-Length bodies only, keep-alive, and every
//! read under a deadline (idle, head, body) so a slow client costs one slot
//! for a bounded time. What each route does is `api`'s business.

use super::api::{self, Method, Response, Route};
use super::auth;
use super::http::Shared;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Headers beyond this count get a 431.
const MAX_HEADERS: usize = 64;
/// How long a closing connection keeps reading a rejected body, so the client
/// sees the response rather than a reset.
const LINGER: Duration = Duration::from_secs(2);

/// The facts of a request head the server acts on, copied out of the buffer.
struct Head {
    method: Method,
    target: String,
    http10: bool,
    content_length: u64,
    /// A head refused as a whole: a framing problem (bad or conflicting
    /// length, transfer-encoding), after which the next request cannot be
    /// found, or a Host missing or repeated (RFC 9112 §3.2). The request
    /// is refused and the connection closed.
    framing: Option<(u16, &'static str)>,
    close: bool,
    /// The `authorization` value when exactly one was sent.
    authorization: Option<Vec<u8>>,
    expect: Expect,
    from_browser: bool,
    /// Host names the server by a name, neither an address nor localhost:
    /// what a page whose own name was rebound to 127.0.0.1 (DNS rebinding)
    /// sends, with no Origin on a GET.
    host_by_name: bool,
}

#[derive(PartialEq, Eq)]
enum Expect {
    Nothing,
    Continue,
    Unknown,
}

enum HeadError {
    /// EOF, or nothing arrived before the deadline: close quietly.
    Closed,
    /// Part of a head arrived, not all of it, before the deadline.
    Timeout,
    TooLarge,
    Malformed,
}

struct Conn<'a> {
    stream: &'a TcpStream,
    shared: &'a Shared,
    /// Its place in the server's registry.
    id: u64,
    /// Bytes read and not yet consumed: the rest of a head, a body, or
    /// pipelined requests.
    buf: Vec<u8>,
}

/// Serve requests on `stream` until the client closes, a deadline passes, a
/// response says `connection: close`, or the server stops.
pub(crate) fn serve(stream: &TcpStream, shared: &Shared, id: u64) {
    let _ = stream.set_nodelay(true);
    if stream.set_write_timeout(Some(shared.limits.write_timeout)).is_err() {
        return;
    }
    let mut conn = Conn {
        stream,
        shared,
        id,
        buf: Vec::new(),
    };
    let mut first = true;
    while !shared.stopping.load(Ordering::Acquire) {
        let head = match conn.read_head(first) {
            Ok(head) => head,
            Err(HeadError::Closed) => return,
            Err(HeadError::Timeout) => return conn.finish(Response::text(408, "request head timeout\n"), false, 0),
            // More of the refused head may be on its way: read it away (until
            // the client stops or LINGER passes) so that the answer is not
            // lost to a reset.
            Err(HeadError::TooLarge) => {
                return conn.finish(Response::text(431, "request head too large\n"), false, u64::MAX)
            }
            Err(HeadError::Malformed) => {
                return conn.finish(Response::text(400, "malformed request head\n"), false, u64::MAX)
            }
        };
        first = false;
        let calls = shared.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(reply) = conn.answer(&head, calls) else {
            return;
        };
        let omit_body = head.method == Method::Head;
        if reply.close {
            return conn.finish(reply.response, omit_body, reply.unread);
        }
        if conn.write(reply.response, false, head.http10, omit_body).is_err() {
            return;
        }
        shared.set_answering(id, false);
    }
}

/// What to send for one request and what happens to the connection after it.
struct Reply {
    response: Response,
    close: bool,
    /// Body bytes the client may still send that were not read (a refusal
    /// before the body); the closing connection reads them away.
    unread: u64,
}

impl Conn<'_> {
    /// The response to one request, and whether the connection closes after it.
    /// Refusals before the body is read close the connection when a body follows.
    fn answer(&mut self, head: &Head, calls: u64) -> io::Result<Reply> {
        let limits = &self.shared.limits;
        let unread = head.content_length.saturating_sub(self.buf.len() as u64);
        let close = |response: Response, unread: u64| Reply {
            response,
            close: true,
            unread,
        };
        let refuse = |response: Response| {
            Ok(Reply {
                response,
                close: head.close || head.content_length > 0,
                unread,
            })
        };
        if let Some((status, reason)) = head.framing {
            return Ok(close(Response::text(status, reason), limits.max_body_bytes as u64));
        }
        if head.from_browser {
            return refuse(Response::text(403, "requests with an origin header are refused\n"));
        }
        if head.host_by_name && self.shared.on_loopback {
            return refuse(Response::text(
                403,
                "the admin endpoint listens on loopback: name it by address or as localhost\n",
            ));
        }
        if let Some(token) = &self.shared.token {
            if !auth::authorized(token, head.authorization.as_deref()) {
                return refuse(Response::text(401, "unauthorized\n").with_header("www-authenticate", "Bearer"));
            }
        }
        // Authorized (or no token is set): this request keeps its slot
        // against newcomers until it is answered.
        self.shared.set_answering(self.id, true);
        let Some(route) = Route::parse(&head.target) else {
            return refuse(Response::text(404, "not found\n"));
        };
        if !route.allows(head.method) {
            return refuse(Response::text(405, "method not allowed\n").with_header("allow", route.allow()));
        }
        let length = match usize::try_from(head.content_length) {
            Ok(length) if length <= limits.max_body_bytes => length,
            _ => return Ok(close(Response::text(413, "request body too large\n"), unread)),
        };
        match head.expect {
            Expect::Unknown => return refuse(Response::text(417, "only 100-continue is supported\n")),
            Expect::Continue if !head.http10 && self.buf.len() < length => {
                self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            _ => {}
        }
        let body = match self.read_body(length) {
            Ok(body) => body,
            Err(e) if is_timeout(&e) => return Ok(close(Response::text(408, "request body timeout\n"), 0)),
            Err(e) => return Err(e),
        };
        if self.shared.stopping.load(Ordering::Acquire) {
            return Ok(close(Response::text(503, "the admin endpoint is stopping\n"), 0));
        }
        let response = api::dispatch(&*self.shared.backend, route, head.method, &body, calls);
        Ok(Reply {
            response,
            close: head.close || self.shared.stopping.load(Ordering::Acquire),
            unread: 0,
        })
    }

    /// Read until one whole head is buffered. The first head must arrive within
    /// the head timeout; later ones may wait the idle timeout for their first
    /// byte, then get the head timeout from there.
    fn read_head(&mut self, first: bool) -> Result<Head, HeadError> {
        let limits = &self.shared.limits;
        let started = first || !self.buf.is_empty();
        let mut deadline = started.then(|| Instant::now() + limits.head_timeout);
        let idle_deadline = Instant::now() + limits.idle_timeout;
        loop {
            if !self.buf.is_empty() {
                if let Some((head, length)) = parse_head(&self.buf, limits.max_head_bytes)? {
                    self.buf.drain(..length);
                    return Ok(head);
                }
                if self.buf.len() >= limits.max_head_bytes {
                    return Err(HeadError::TooLarge);
                }
            }
            match self.read_some(deadline.unwrap_or(idle_deadline)) {
                Ok(0) => return Err(HeadError::Closed),
                Ok(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout);
                }
                Err(e) if is_timeout(&e) && !self.buf.is_empty() => return Err(HeadError::Timeout),
                Err(_) => return Err(HeadError::Closed),
            }
        }
    }

    /// Read a `length`-byte body (some of it may be buffered already) within
    /// the body timeout.
    fn read_body(&mut self, length: usize) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.shared.limits.body_timeout;
        self.buf.reserve(length.saturating_sub(self.buf.len()));
        while self.buf.len() < length {
            if self.read_some(deadline)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let rest = self.buf.split_off(length);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One read into `buf`, waiting no later than `deadline`.
    fn read_some(&mut self, deadline: Instant) -> io::Result<usize> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(remaining))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Write a whole response within the write timeout: a client reading
    /// a large one a few bytes at a time must not hold its slot for ever.
    fn write(&mut self, response: Response, close: bool, http10: bool, omit_body: bool) -> io::Result<()> {
        let bytes = encode(response, close, http10, omit_body);
        let deadline = Instant::now() + self.shared.limits.write_timeout;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_write_timeout(Some(left))?;
            match self.stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send the last response with `connection: close`. When the client may
    /// still be sending (`unread` body bytes), stop writing and read those
    /// bytes away for a moment, so the response is not lost to a reset.
    fn finish(mut self, response: Response, omit_body: bool, unread: u64) {
        if self.write(response, true, false, omit_body).is_err() || unread == 0 {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut left = unread;
        while left > 0 {
            self.buf.clear();
            match self.read_some(deadline) {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Parse a complete head at the start of `buf`: the head and its length in
/// bytes, or None while more bytes are needed.
fn parse_head(buf: &[u8], max_head_bytes: usize) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length > max_head_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let http10 = request.version == Some(0);
    let mut head = Head {
        method: Method::parse(request.method.unwrap_or("")),
        target: origin_form(request.path.unwrap_or("")).to_string(),
        http10,
        content_length: 0,
        framing: None,
        close: http10,
        authorization: None,
        expect: Expect::Nothing,
        from_browser: false,
        host_by_name: false,
    };
    let mut lengths: Option<u64> = None;
    let mut authorizations = 0;
    let mut hosts = 0;
    for header in request.headers.iter() {
        let value = header.value.trim_ascii();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, lengths) {
                (Some(n), None) => lengths = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => head.framing = Some((400, "invalid or conflicting content-length\n")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.framing.get_or_insert((
                411,
                "transfer-encoding (chunked) request bodies are not supported; send content-length\n",
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    head.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            authorizations += 1;
            head.authorization = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect = if value.eq_ignore_ascii_case(b"100-continue") {
                Expect::Continue
            } else {
                Expect::Unknown
            };
        } else if name.eq_ignore_ascii_case("origin") {
            head.from_browser = true;
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            head.host_by_name = !names_address_or_localhost(value);
        }
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        head.framing
            .get_or_insert((400, "an HTTP/1.1 request needs one host field\n"));
    }
    if authorizations > 1 {
        head.authorization = None;
    }
    if head.framing.is_some_and(|(status, _)| status == 411) && lengths.is_some() {
        head.framing = Some((400, "both content-length and transfer-encoding were sent\n"));
    }
    head.content_length = lengths.unwrap_or(0);
    Ok(Some((head, length)))
}

/// Whether a Host value names its server by an IP address or as localhost
/// (RFC 6761: `localhost` and names under it are loopback), port or not.
fn names_address_or_localhost(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    if let Some(bracketed) = text.strip_prefix('[') {
        return bracketed.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port.starts_with(':'))
        });
    }
    let host = text
        .rsplit_once(':')
        .map_or(text, |(host, _)| host)
        .to_ascii_lowercase();
    host.parse::<std::net::Ipv4Addr>().is_ok() || host == "localhost" || host.ends_with(".localhost")
}

/// The path and query of a target in absolute form (`http://host/ready`),
/// which a server must accept (RFC 9112 §3.2.2); other forms as they are.
fn origin_form(target: &str) -> &str {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"]
        .iter()
        .find(|scheme| lower.starts_with(**scheme))
        .map(|scheme| &target[scheme.len()..])
    else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => &rest[at..],
        // No path: the origin's root, query and all.
        _ => "/",
    }
}

/// Frame a response: status line, content-type, cache-control, its own
/// fields, content-length (always, also for HEAD, where the body is left
/// out), connection, then the body.
pub(crate) fn encode(response: Response, close: bool, http10: bool, omit_body: bool) -> Vec<u8> {
    let mut fields: Vec<(&str, &[u8])> = vec![
        ("content-type", response.content_type.as_bytes()),
        ("cache-control", b"no-store"),
    ];
    fields.extend(response.headers.iter().map(|(name, value)| (*name, value.as_bytes())));
    let mut out = Vec::with_capacity(256 + if omit_body { 0 } else { response.body.len() });
    crate::http::write_local_response(
        &mut out,
        response.status,
        &fields,
        &response.body,
        close,
        http10,
        omit_body,
    );
    out
}
