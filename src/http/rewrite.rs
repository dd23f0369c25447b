//! Head rewriting for forwarding: the proxy's view of RFC 9110 §7.6 —
//! hop-by-hop fields are dropped, framing is re-declared for the next hop,
//! and X-Forwarded-For / X-Forwarded-Proto / Via record the hop.
//!
//! Both writers append to a caller-owned Vec and allocate nothing else.

use super::scan::list_items;
use super::{Framing, HeaderRef, Method, RequestHead, ResponseHead};
use crate::addr_text::IpText;
use std::net::IpAddr;

/// Facts about the client connection the request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    pub client_ip: IpAddr,
    /// "http" or "https": the scheme the client connected with.
    pub proto: &'a str,
    /// Forward the client's own X-Forwarded-Proto in place of `proto`:
    /// one field line reading `http` or `https` (an ingress in front said
    /// what the original client used). Anything else is replaced.
    pub keep_client_proto: bool,
    /// Our Via entry, e.g. "1.1 ringway".
    pub via: &'a str,
    /// The client's verified SPIFFE ID (mTLS), sent as
    /// `x-forwarded-client-cert: URI=...`.
    pub client_identity: Option<&'a str>,
    /// Ringway started a new trace (the client sent no valid
    /// traceparent): a `tracestate` that came along belongs to no trace
    /// and is not forwarded (W3C Trace Context).
    pub new_trace: bool,
}

/// What a route's config changes in the messages it forwards (validated
/// there: names are tokens Ringway does not manage, values are clean).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteEdits<'a> {
    /// Lowercase names of received fields not to forward: removed, or set anew.
    pub drop: &'a [String],
    /// Fields written after all others. A `Host` among them replaces the
    /// request's authority.
    pub append: &'a [(String, Vec<u8>)],
    /// Requests only: the path prefix the route matched, and what replaces it.
    pub path_prefix: Option<(&'a str, &'a str)>,
}

impl RouteEdits<'_> {
    /// Whether a received response field called `name` is one the route drops.
    fn drops(&self, name: &[u8]) -> bool {
        self.drop.iter().any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
    }

    /// Whether a received request field called `name` is one the route
    /// drops, also when spelled with `_` for `-` (or the other way round):
    /// CGI-style servers read both as one (`HTTP_X_USER`), so `X_User`
    /// would otherwise pass beside a set `x-user`, or in place of a removed one.
    fn drops_request_field(&self, name: &[u8]) -> bool {
        self.drop.iter().any(|d| same_as_cgi_name(name, d.as_bytes()))
    }

    fn sets_host(&self) -> bool {
        self.append.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"))
    }

    /// The appended fields, but for those `extra` (the proxy's own) replaces.
    fn write_appended(&self, out: &mut Vec<u8>, extra: &[(&str, &[u8])]) {
        for (name, value) in self.append {
            if !replaced(extra, name.as_bytes()) {
                write_field(out, name.as_bytes(), value);
            }
        }
    }
}

/// Fields that describe one connection, never the message (RFC 9110 §7.6.1),
/// plus Proxy-Connection and Keep-Alive, which old agents still send.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Decides which received fields may be forwarded.
struct HopFilter<'a> {
    buf: &'a [u8],
    headers: &'a [HeaderRef],
    /// Some Connection field names something beyond close/keep-alive.
    nominates: bool,
}

impl<'a> HopFilter<'a> {
    fn new(buf: &'a [u8], headers: &'a [HeaderRef]) -> Self {
        let nominates = connection_options(buf, headers)
            .any(|o| !o.eq_ignore_ascii_case(b"close") && !o.eq_ignore_ascii_case(b"keep-alive"));
        HopFilter {
            buf,
            headers,
            nominates,
        }
    }

    /// False for hop-by-hop fields and for any field a Connection option
    /// names. Host is exempt: a client must not be able to strip it.
    fn forwards(&self, name: &[u8]) -> bool {
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes())) {
            return false;
        }
        !(self.nominates && nominated(self.buf, self.headers, name))
    }

    /// Writes `Name: v1, v2, ..., last` joining every forwardable field
    /// called `name` (case-insensitive) with `last` appended.
    fn write_appended(&self, out: &mut Vec<u8>, name: &str, last: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        if self.forwards(name.as_bytes()) {
            for h in self.headers.iter().filter(|h| h.is(self.buf, name)) {
                for item in list_items(h.value(self.buf)) {
                    out.extend_from_slice(item);
                    out.extend_from_slice(b", ");
                }
            }
        }
        last(out);
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a `Connection` option names the field `name`. Never Host: a
/// client must not be able to strip it.
pub(super) fn nominated(buf: &[u8], headers: &[HeaderRef], name: &[u8]) -> bool {
    !name.eq_ignore_ascii_case(b"host") && connection_options(buf, headers).any(|o| o.eq_ignore_ascii_case(name))
}

fn connection_options<'a>(buf: &'a [u8], headers: &'a [HeaderRef]) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.is(buf, "connection"))
        .flat_map(move |h| list_items(h.value(buf)))
}

/// Writes the head to send upstream.
///
/// - `METHOD origin-form HTTP/1.1`: absolute-form becomes origin-form
///   (`OPTIONS http://h` becomes `OPTIONS *`).
/// - Host is kept in place; for absolute-form it becomes the target's
///   authority; when the client sent none (HTTP/1.0) an empty Host is added,
///   as RFC 9112 §3.2 prescribes. A Host in `extra` replaces all of that.
/// - Hop-by-hop fields, fields named by Connection, Expect (we answer
///   100-continue ourselves) and the client's framing fields are dropped;
///   `body` decides `Content-Length` / `Transfer-Encoding: chunked`
///   (`Empty` and `UntilClose` write neither).
/// - X-Forwarded-For gets `client_ip` appended to the client's list;
///   X-Forwarded-Proto is the connection's scheme, or the client's own when
///   `fwd.keep_client_proto` and it sent one line of `http` or `https`; Via
///   gets `fwd.via` appended.
/// - X-Forwarded-Client-Cert is never taken from the client (it would let
///   anyone claim an identity); it is written from `client_identity` alone.
///   Nor is x-ringway-attempts: only the proxy numbers tries (in `extra`).
/// - `extra` fields come next, written as given (trusted, not validated), and
///   replace any of the client's fields with the same name.
/// - The route's `edits` go last: the fields it drops are not forwarded (nor
///   their spellings with `_` for `-`), the ones it appends are written
///   (unless `extra` has them), and the path prefix it matched is replaced.
pub fn write_request_head(
    buf: &[u8],
    head: &RequestHead,
    fwd: &Forwarded<'_>,
    body: Framing,
    extra: &[(&str, &[u8])],
    edits: &RouteEdits<'_>,
    out: &mut Vec<u8>,
) {
    let filter = HopFilter::new(buf, &head.headers);
    let extra_host = extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) || edits.sets_host();

    out.extend_from_slice(head.method_bytes(buf));
    out.push(b' ');
    let origin = buf.get(head.origin.clone()).unwrap_or(&[]);
    let path = head.path_bytes(buf);
    let new_prefix = edits
        .path_prefix
        .filter(|(matched, _)| path.starts_with(matched.as_bytes()));
    if origin.is_empty() && head.method == Method::Options {
        // RFC 9112 §3.2.4: OPTIONS for a whole server is sent as `*`, on
        // any route.
        out.push(b'*');
    } else if let Some((matched, replacement)) = new_prefix {
        // The replacement starts with '/', so this is origin-form whatever
        // the client sent; the query follows unchanged.
        out.extend_from_slice(replacement.as_bytes());
        out.extend_from_slice(&path[matched.len()..]);
        out.extend_from_slice(buf.get(head.path.end..head.origin.end).unwrap_or(&[]));
    } else {
        if origin.first() != Some(&b'/') && origin != b"*" {
            out.push(b'/');
        }
        out.extend_from_slice(origin);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut host_written = extra_host;
    // The client's X-Forwarded-Proto lines: how many, and the last value.
    let mut client_proto: (u32, &[u8]) = (0, &[]);
    for h in &head.headers {
        let name = h.name(buf);
        if !filter.forwards(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            if !host_written {
                write_field(out, name, head.host_bytes(buf).unwrap_or(&[]));
                host_written = true;
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            client_proto = (client_proto.0 + 1, h.value(buf));
            continue;
        }
        if [
            "content-length",
            "expect",
            "x-forwarded-for",
            "via",
            "x-forwarded-client-cert",
            // Ringway numbers the tries itself, when a retry policy asks.
            "x-ringway-attempts",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            || replaced(extra, name)
            || edits.drops_request_field(name)
            || forges_vouched(name)
            || (fwd.new_trace && name.eq_ignore_ascii_case(b"tracestate"))
        {
            continue;
        }
        write_field(out, name, h.value(buf));
    }
    if !host_written {
        write_field(out, b"Host", head.host_bytes(buf).unwrap_or(&[]));
    }
    write_framing(out, body);
    filter.write_appended(out, "X-Forwarded-For", |out| {
        // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
        out.extend_from_slice(IpText::new(fwd.client_ip.to_canonical()).as_bytes());
    });
    let proto = match client_proto {
        (1, value) if fwd.keep_client_proto && value.eq_ignore_ascii_case(b"https") => "https",
        (1, value) if fwd.keep_client_proto && value.eq_ignore_ascii_case(b"http") => "http",
        _ => fwd.proto,
    };
    write_field(out, b"X-Forwarded-Proto", proto.as_bytes());
    filter.write_appended(out, "Via", |out| out.extend_from_slice(fwd.via.as_bytes()));
    if let Some(identity) = fwd.client_identity {
        out.extend_from_slice(b"X-Forwarded-Client-Cert: URI=");
        out.extend_from_slice(identity.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        write_field(out, name.as_bytes(), value);
    }
    edits.write_appended(out, extra);
    out.extend_from_slice(b"\r\n");
}

/// Writes the head to send the client.
///
/// - `HTTP/1.1 code reason`, hop-by-hop and Connection-named fields dropped,
///   Via gets `via` appended.
/// - `body` decides the framing field. For a response that has no body by
///   its nature (`head.framing == Empty`: HEAD, 304) with `body == Empty`, the
///   upstream's Content-Length is kept since it describes the representation;
///   1xx and 204 never carry one (RFC 9110 §8.6). `Empty` for a response
///   that would have had a body writes `Content-Length: 0`, so the client
///   never falls back to reading until close.
/// - `close` adds `Connection: close`; otherwise `keep_alive_10` adds
///   `Connection: keep-alive` for an HTTP/1.0 client we keep open.
/// - `extra`, then the route's `edits`, as for requests.
#[allow(clippy::too_many_arguments)]
pub fn write_response_head(
    buf: &[u8],
    head: &ResponseHead,
    via: &str,
    body: Framing,
    close: bool,
    keep_alive_10: bool,
    extra: &[(&str, &[u8])],
    edits: &RouteEdits<'_>,
    out: &mut Vec<u8>,
) {
    let filter = HopFilter::new(buf, &head.headers);
    let no_body_status = (100..200).contains(&head.status) || head.status == 204;
    let keep_length = body == Framing::Empty && head.framing == Framing::Empty && !no_body_status;

    out.extend_from_slice(b"HTTP/1.1 ");
    write_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason_bytes(buf));
    out.extend_from_slice(b"\r\n");

    for h in &head.headers {
        let name = h.name(buf);
        let skip = !filter.forwards(name)
            || name.eq_ignore_ascii_case(b"via")
            || (name.eq_ignore_ascii_case(b"content-length") && !keep_length)
            || replaced(extra, name)
            || edits.drops(name);
        if !skip {
            write_field(out, name, h.value(buf));
        }
    }
    match body {
        Framing::Empty if head.framing != Framing::Empty && !no_body_status => {
            write_field(out, b"Content-Length", b"0");
        }
        _ => write_framing(out, body),
    }
    filter.write_appended(out, "Via", |out| out.extend_from_slice(via.as_bytes()));
    if close {
        write_field(out, b"Connection", b"close");
    } else if keep_alive_10 {
        write_field(out, b"Connection", b"keep-alive");
    }
    for (name, value) in extra {
        write_field(out, name.as_bytes(), value);
    }
    edits.write_appended(out, extra);
    out.extend_from_slice(b"\r\n");
}

/// Whether `name` reads as a field Ringway vouches for or frames with once
/// `_` is read as `-`, as CGI-style servers read names (both become
/// `HTTP_X_FORWARDED_CLIENT_CERT`): such a field is dropped, so that a
/// client cannot forge an identity, an address or a try number past the
/// proxy that way, nor give the upstream a body length Ringway did not read.
fn forges_vouched(name: &[u8]) -> bool {
    name.contains(&b'_')
        && [
            "x-forwarded-client-cert",
            "x-forwarded-for",
            "x-forwarded-proto",
            "content-length",
            "transfer-encoding",
            "x-ringway-attempts",
        ]
        .iter()
        .any(|vouched| same_as_cgi_name(name, vouched.as_bytes()))
}

/// Whether two field names read the same to a CGI-style server: case
/// aside, and with `_` read as `-`.
fn same_as_cgi_name(a: &[u8], b: &[u8]) -> bool {
    let cgi = |c: u8| if c == b'_' { b'-' } else { c.to_ascii_lowercase() };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| cgi(x) == cgi(y))
}

/// Whether `name` is one of the `extra` fields, which replace the message's own.
fn replaced(extra: &[(&str, &[u8])], name: &[u8]) -> bool {
    extra.iter().any(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The three-digit status code, zero-padded as the status line requires; the
/// parser admits nothing wider.
fn write_status(out: &mut Vec<u8>, status: u16) {
    if status < 1000 {
        let digit = |place: u16| b'0' + ((status / place) % 10) as u8;
        out.extend_from_slice(&[digit(100), digit(10), digit(1)]);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    }
}

fn write_framing(out: &mut Vec<u8>, body: Framing) {
    match body {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => write_field(out, b"Transfer-Encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

#[cfg(test)]
mod tests;
