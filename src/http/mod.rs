//! HTTP/1.1 codec: pure, sans-IO functions over byte buffers.
//!
//! Heads are parsed with httparse into offsets ([`HeaderRef`], `Range<usize>`) that
//! point back into the caller's read buffer, so a parse of a head with up to
//! [`INLINE_HEADERS`] fields allocates nothing (a [`HeaderList`] keeps them
//! inline; longer heads spill to the heap). On top of httparse sits a
//! strictness layer (RFC 9112): anything two parsers could read differently
//! (bare CR or LF, obs-fold, conflicting framing, ...) is rejected with its own
//! [`HttpError`] reason. Bodies are framed by [`Framing`] and de-chunked by the
//! [`ChunkedDecoder`] state machine. Heads are rewritten for forwarding by
//! [`write_request_head`] / [`write_response_head`].
//!
//! Nothing here does I/O, touches monoio, reads a clock or logs: the pipeline
//! in `proxy/` owns the sockets and decides what to do with each error.

mod chunked;
mod error;
mod fields;
mod host;
mod local;
mod path;
mod request;
mod response;
mod rewrite;
mod scan;

#[cfg(test)]
mod props;

pub use chunked::{whole_body_len, write_chunk_header, Chunk, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
pub use error::HttpError;
pub(crate) use host::valid_authority;
pub use host::{host_for_routing, ipv6_literal, split_host_port};
pub use local::{status_phrase, write_local_response};
pub use path::{has_dot_segment, lax_readings, normalize_path};
pub use request::{parse_request, parse_request_from, refused_request_line, RequestHead};
pub use response::{parse_response, parse_response_from, ResponseHead};
pub use rewrite::{write_request_head, write_response_head, Forwarded, RouteEdits, HOP_BY_HOP};
pub use scan::HeadProgress;

use std::ops::Range;

/// Hard ceiling on header lines per head: httparse fills a stack array of this
/// size, so `Limits::max_headers` above it is clamped to it.
pub const MAX_HEADERS_CEILING: usize = 256;

/// Per-listener bounds on what a head may cost us before it is rejected (431).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes from the first byte of the head up to and including the final CRLFCRLF.
    pub max_header_bytes: usize,
    /// Header field lines (clamped to [`MAX_HEADERS_CEILING`]).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Request method. Extension methods are `Other`; their text is read back from
/// the buffer with [`RequestHead::method_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    Connect,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is an extension method.
    pub fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// The canonical text, or `None` for `Other` (read it from the buffer instead).
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Other => return None,
        })
    }

    /// RFC 9110 §9.2.2: safe to retry after a failure mid-request.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Trace | Method::Put | Method::Delete
        )
    }
}

/// Fields a head holds without allocating: more than common requests and
/// responses carry (browsers send 10-20), at 16 bytes each.
pub const INLINE_HEADERS: usize = 24;

/// A head's fields, in order.
pub type HeaderList = smallvec::SmallVec<[HeaderRef; INLINE_HEADERS]>;

/// One header field as offsets into the buffer it was parsed from. u32 keeps it
/// at 16 bytes; heads are bounded far below 4 GiB by `Limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderRef {
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
}

impl HeaderRef {
    pub(crate) fn new(name: Range<usize>, value: Range<usize>) -> Option<HeaderRef> {
        Some(HeaderRef {
            name_start: u32::try_from(name.start).ok()?,
            name_end: u32::try_from(name.end).ok()?,
            value_start: u32::try_from(value.start).ok()?,
            value_end: u32::try_from(value.end).ok()?,
        })
    }

    /// The name as received (original case). Empty if `buf` is not the parsed buffer.
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.name_range()).unwrap_or(&[])
    }

    /// The value without surrounding whitespace. Empty if `buf` is not the parsed buffer.
    pub fn value<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.value_range()).unwrap_or(&[])
    }

    pub fn name_range(&self) -> Range<usize> {
        self.name_start as usize..self.name_end as usize
    }

    pub fn value_range(&self) -> Range<usize> {
        self.value_start as usize..self.value_end as usize
    }

    /// Case-insensitive name comparison (field names are case-insensitive).
    pub fn is(&self, buf: &[u8], name: &str) -> bool {
        self.name(buf).eq_ignore_ascii_case(name.as_bytes())
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body at all.
    #[default]
    Empty,
    /// Exactly this many bytes (may be 0 when the peer said `Content-Length: 0`).
    Length(u64),
    /// Chunked transfer coding, decoded with [`ChunkedDecoder`].
    Chunked,
    /// Responses only: the body runs until the upstream closes the connection.
    UntilClose,
}

/// Outcome of a head parse that found no error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseStatus {
    /// The head is complete; its length in bytes, including the final CRLFCRLF
    /// (and any empty lines skipped before the start line). The body starts here.
    Complete(usize),
    /// Read more and call again with the whole buffer.
    Partial,
}

/// Whether an `Upgrade` field value names WebSocket among its protocols
/// (`websocket`, or with a version, `websocket/13`).
pub fn names_websocket(upgrade: &[u8]) -> bool {
    scan::list_items(upgrade).any(|protocol| {
        let name = protocol.split(|&b| b == b'/').next().unwrap_or_default();
        name.eq_ignore_ascii_case(b"websocket")
    })
}

/// First header named `name` (case-insensitive), shared by request and response heads.
fn find_header<'a>(headers: &[HeaderRef], buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.is(buf, name)).map(|h| h.value(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_is_named_as_a_protocol_not_a_substring() {
        for yes in [
            &b"websocket"[..],
            b"WebSocket",
            b"h2c, websocket",
            b" websocket/13 ,foo",
        ] {
            assert!(names_websocket(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b""[..],
            b"h2c",
            b"notwebsocket",
            b"websocketx",
            b"h2c websocket",
            b"web socket",
        ] {
            assert!(!names_websocket(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn method_round_trip_and_idempotency() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT",
        ] {
            assert_eq!(Method::from_bytes(m.as_bytes()).as_str(), Some(m));
        }
        assert_eq!(Method::from_bytes(b"get"), Method::Other);
        assert_eq!(Method::from_bytes(b"PROPFIND").as_str(), None);
        let idem: Vec<_> = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Delete,
            Method::Options,
            Method::Trace,
            Method::Patch,
            Method::Connect,
            Method::Other,
        ]
        .into_iter()
        .filter(|m| m.is_idempotent())
        .collect();
        assert_eq!(
            idem,
            [
                Method::Get,
                Method::Head,
                Method::Put,
                Method::Delete,
                Method::Options,
                Method::Trace
            ]
        );
    }

    #[test]
    fn header_ref_is_safe_on_a_foreign_buffer() {
        let h = HeaderRef::new(0..4, 6..9).expect("small offsets fit");
        assert_eq!(h.name(b"Host: a.b"), b"Host");
        assert_eq!(h.value(b"Host: a.b"), b"a.b");
        assert_eq!(h.value(b"short"), b"");
        assert!(h.is(b"hOsT: a.b", "host"));
    }

    #[test]
    fn limits_defaults() {
        let l = Limits::default();
        assert_eq!((l.max_header_bytes, l.max_headers), (65536, 100));
    }
}
