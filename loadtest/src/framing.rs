//! HTTP/1.1 message framing that works on partial input.
//!
//! Both sides of the crate read into a reused buffer and hand whatever the
//! kernel returned to these parsers, which report how many bytes they consumed
//! and whether the message is complete. [`ChunkedDecoder`] decodes (and
//! discards) a chunked body; [`ResponseParser`] parses a response head with
//! httparse and then follows its body framing: none, Content-Length, chunked
//! or close-delimited.

use std::fmt;
use std::mem::MaybeUninit;

/// Most response header fields the client parses; more is a parse error.
/// Generous, as wrk has no such limit: the slots are left uninitialised,
/// so a larger array costs nothing per response.
const MAX_HEADERS: usize = 256;

/// Why a message could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FramingError {}

/// How far a parser got with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this message and can be dropped.
    pub consumed: usize,
    /// The message is complete; bytes after `consumed` belong to the next one.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u32 },
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerEndLf,
    Done,
}

const CHUNK_START: Chunk = Chunk::Size { value: 0, digits: 0 };

/// Incremental decoder for a chunked body; the data itself is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: Chunk,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self { state: CHUNK_START }
    }
}

impl ChunkedDecoder {
    /// Consumes chunked-body bytes from `buf`, stopping after the final CRLF.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Progress, FramingError> {
        let mut i = 0;
        while i < buf.len() && self.state != Chunk::Done {
            if let Chunk::Data(left) = self.state {
                let take = left.min((buf.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - take)
                };
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = Self::step(self.state, b)?;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == Chunk::Done,
        })
    }

    fn step(state: Chunk, b: u8) -> Result<Chunk, FramingError> {
        let next = match (state, b) {
            (Chunk::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err(FramingError("chunk size too large"));
                }
                let d = (b as char).to_digit(16).unwrap_or(0);
                Chunk::Size {
                    value: value * 16 + u64::from(d),
                    digits: digits + 1,
                }
            }
            (Chunk::Size { digits: 0, .. }, _) => return Err(FramingError("bad chunk size")),
            (Chunk::Size { value, .. }, b';' | b' ' | b'\t') => Chunk::Ext(value),
            (Chunk::Size { value, .. }, b'\r') => Chunk::SizeLf(value),
            (Chunk::Size { value, .. } | Chunk::Ext(value) | Chunk::SizeLf(value), b'\n') => {
                if value == 0 {
                    Chunk::TrailerStart
                } else {
                    Chunk::Data(value)
                }
            }
            (Chunk::Ext(value), _) => Chunk::Ext(value),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataCr | Chunk::DataLf, b'\n') => CHUNK_START,
            (Chunk::TrailerStart, b'\r') => Chunk::TrailerEndLf,
            (Chunk::TrailerStart | Chunk::TrailerEndLf, b'\n') => Chunk::Done,
            (Chunk::TrailerLine, b'\n') => Chunk::TrailerStart,
            (Chunk::TrailerStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
            (Chunk::DataCr | Chunk::DataLf, _) => return Err(FramingError("missing CRLF after chunk data")),
            _ => return Err(FramingError("bad chunk framing")),
        };
        Ok(next)
    }
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// The framing-relevant facts of a message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadInfo {
    /// Content-Length, when given.
    pub content_length: Option<u64>,
    /// Transfer-Encoding ends in `chunked`.
    pub chunked: bool,
    /// Some Transfer-Encoding was given.
    pub has_transfer_encoding: bool,
    /// The connection stays open after this message.
    pub keep_alive: bool,
}

/// Parses a Content-Length value: `1*DIGIT` (RFC 9110 §8.6) around optional
/// spaces or tabs. `str::parse` would also take a leading `+`, which other
/// parsers on the path may read differently (or refuse).
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Reads the framing headers of a parsed head.
pub fn head_info(version: u8, headers: &[httparse::Header<'_>]) -> Result<HeadInfo, FramingError> {
    let mut info = HeadInfo {
        keep_alive: version >= 1,
        ..HeadInfo::default()
    };
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_length(h.value).ok_or(FramingError("bad content-length"))?;
            if info.content_length.is_some_and(|l| l != len) {
                return Err(FramingError("conflicting content-length"));
            }
            info.content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            info.has_transfer_encoding = true;
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            info.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    info.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    info.keep_alive = true;
                }
            }
        }
    }
    Ok(info)
}

/// Incremental parser for one HTTP/1.1 response on a client connection.
#[derive(Debug)]
pub struct ResponseParser {
    body: Body,
    head_request: bool,
    count_header: Option<String>,
    /// Status code of the response (valid once the head is parsed).
    pub status: u16,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    counted: Vec<u8>,
    has_counted: bool,
}

impl ResponseParser {
    /// A parser for responses to `HEAD` (no body) or other requests, that
    /// remembers the value of `count_header` when given.
    pub fn new(head_request: bool, count_header: Option<String>) -> Self {
        Self {
            body: Body::Head,
            head_request,
            count_header,
            status: 0,
            keep_alive: true,
            counted: Vec::new(),
            has_counted: false,
        }
    }

    /// Value of the counted header in the last head, when configured and present.
    pub fn counted(&self) -> Option<&[u8]> {
        self.has_counted.then_some(self.counted.as_slice())
    }

    /// Gets ready for the next response.
    pub fn reset(&mut self) {
        self.body = Body::Head;
        self.status = 0;
        self.keep_alive = true;
        self.counted.clear();
        self.has_counted = false;
    }

    /// True while the response head is not complete yet.
    pub fn in_head(&self) -> bool {
        self.body == Body::Head
    }

    /// Feeds the bytes read so far (not yet consumed) into the parser.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Progress, FramingError> {
        let mut consumed = 0;
        while self.body == Body::Head {
            match self.parse_head(&buf[consumed..])? {
                Some(n) => consumed += n,
                None => return Ok(Progress { consumed, done: false }),
            }
        }
        let rest = &buf[consumed..];
        let (used, done) = match &mut self.body {
            Body::Length(left) => {
                let take = (*left).min(rest.len() as u64);
                *left -= take;
                (take as usize, *left == 0)
            }
            Body::Chunked(dec) => {
                let p = dec.decode(rest)?;
                (p.consumed, p.done)
            }
            Body::Close => (rest.len(), false),
            Body::Head | Body::Done => (0, true),
        };
        if done {
            self.body = Body::Done;
        }
        Ok(Progress {
            consumed: consumed + used,
            done,
        })
    }

    /// The peer closed the connection: completes a close-delimited body.
    pub fn finish_on_eof(&mut self) -> bool {
        if self.body == Body::Close {
            self.body = Body::Done;
            true
        } else {
            false
        }
    }

    /// Parses one head; `Some(len)` when complete. Interim (1xx) heads are
    /// consumed and leave the parser waiting for the final head.
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<usize>, FramingError> {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers);
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(FramingError("malformed response head")),
        };
        let status = resp.code.unwrap_or(0);
        // Three digits, and a class HTTP defines (RFC 9110 §15).
        if !(100..600).contains(&status) {
            return Err(FramingError("status code out of range"));
        }
        if status == 101 {
            return Err(FramingError("unexpected protocol switch"));
        }
        if (100..200).contains(&status) {
            return Ok(Some(len));
        }
        let info = head_info(resp.version.unwrap_or(1), resp.headers)?;
        self.status = status;
        self.keep_alive = info.keep_alive;
        if let Some(name) = &self.count_header {
            let value = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value);
            self.counted.clear();
            self.has_counted = value.is_some();
            self.counted.extend_from_slice(value.unwrap_or_default());
        }
        self.body = if self.head_request || status == 204 || status == 304 {
            Body::Done
        } else if info.chunked {
            Body::Chunked(ChunkedDecoder::default())
        } else if info.has_transfer_encoding {
            Body::Close
        } else {
            match info.content_length {
                Some(0) => Body::Done,
                Some(n) => Body::Length(n),
                None => Body::Close,
            }
        };
        if self.body == Body::Close {
            self.keep_alive = false;
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `msg` in pieces of `step` bytes, as a socket might deliver it.
    fn feed(p: &mut ResponseParser, msg: &[u8], step: usize) -> (usize, bool) {
        let mut pending = Vec::new();
        let mut total = 0;
        for piece in msg.chunks(step) {
            pending.extend_from_slice(piece);
            let pr = p.advance(&pending).expect("valid framing");
            pending.drain(..pr.consumed);
            total += pr.consumed;
            if pr.done {
                return (total, true);
            }
        }
        (total, false)
    }

    #[test]
    fn content_length_in_any_split() {
        let msg = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Served-By: v2\r\n\r\nhelloNEXT";
        for step in 1..msg.len() {
            let mut p = ResponseParser::new(false, Some("x-served-by".into()));
            let (used, done) = feed(&mut p, msg, step);
            assert!(done, "step {step}");
            assert_eq!(used, msg.len() - 4);
            assert_eq!(p.status, 200);
            assert!(p.keep_alive);
            assert_eq!(p.counted(), Some(&b"v2"[..]));
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let msg = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;x=y\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, msg.len()] {
            let mut p = ResponseParser::new(false, None);
            let (used, done) = feed(&mut p, msg, step);
            assert!(done && used == msg.len(), "step {step}");
            assert_eq!(p.status, 503);
        }
    }

    #[test]
    fn close_delimited_and_interim() {
        let mut p = ResponseParser::new(false, None);
        let msg = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody until close";
        let pr = p.advance(msg).expect("valid");
        assert!(!pr.done && pr.consumed == msg.len());
        assert!(!p.keep_alive);
        assert!(p.finish_on_eof());
    }

    #[test]
    fn many_header_fields() {
        let head = |fields: usize| {
            let mut msg = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
            for i in 1..fields {
                msg.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
            }
            msg.extend_from_slice(b"\r\nok");
            msg
        };
        let mut p = ResponseParser::new(false, Some("x-f99".into()));
        let pr = p.advance(&head(MAX_HEADERS)).expect("256 fields are fine");
        assert!(pr.done && p.status == 200);
        assert_eq!(p.counted(), Some(&b"v"[..]));
        p.reset();
        assert!(p.advance(&head(MAX_HEADERS + 1)).is_err());
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_length(b"5"), Some(5));
        assert_eq!(parse_length(b" 007\t"), Some(7));
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in ["+5", "-5", "", " ", "5 5", "0x5", "5,5", "18446744073709551616"] {
            assert_eq!(parse_length(bad.as_bytes()), None, "{bad:?}");
        }
        let signed = b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello";
        assert!(ResponseParser::new(false, None).advance(signed).is_err());
        // Chunk sizes are hex digits only, already: no sign, no 0x.
        assert!(ChunkedDecoder::default().decode(b"+5\r\nhello\r\n").is_err());
        assert!(ChunkedDecoder::default().decode(b"0x5\r\nhello\r\n").is_err());
    }

    #[test]
    fn no_body_cases_and_errors() {
        let mut p = ResponseParser::new(true, None);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nConnection: close\r\n\r\n";
        let pr = p.advance(head).expect("valid");
        assert!(pr.done && !p.keep_alive);
        let mut p = ResponseParser::new(false, None);
        assert!(p.advance(b"HTTP/1.1 204 No Content\r\n\r\n").expect("ok").done);
        p.reset();
        assert!(p.advance(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        p.reset();
        assert!(p.advance(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
        for out_of_range in ["099", "600", "999"] {
            p.reset();
            let head = format!("HTTP/1.1 {out_of_range} X\r\nContent-Length: 0\r\n\r\n");
            assert!(p.advance(head.as_bytes()).is_err(), "{out_of_range}");
        }
        let mut d = ChunkedDecoder::default();
        assert!(d.decode(b"zz\r\n").is_err());
        let mut d = ChunkedDecoder::default();
        assert!(d.decode(b"3\r\nabcX").is_err());
    }
}
