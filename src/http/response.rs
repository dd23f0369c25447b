//! Response heads: `parse_response` reads what an upstream sent and decides
//! how its body is delimited (RFC 9112 §6.3). The same strictness as for
//! requests applies; a malformed response is the upstream's fault and the
//! pipeline answers the client 502, logging our reason.

use super::fields::Facts;
use super::request::version_error;
use super::scan::{scan_head_from, span_of, HeadProgress, Scanned};
use super::{find_header, Framing, HeaderList, HeaderRef, HttpError, Limits, Method, ParseStatus, MAX_HEADERS_CEILING};
use std::mem::MaybeUninit;
use std::ops::Range;

/// A parsed response head; ranges index the buffer given to `parse_response`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Reason phrase (may be empty), forwarded as-is.
    pub reason: Range<usize>,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    pub minor_version: u8,
    pub headers: HeaderList,
    pub framing: Framing,
    /// The upstream connection may be reused after this response.
    pub keep_alive: bool,
}

impl ResponseHead {
    fn reset(&mut self) {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        *self = ResponseHead {
            headers,
            ..ResponseHead::default()
        };
    }

    /// First field named `name` (case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        find_header(&self.headers, buf, name)
    }

    pub fn reason_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.reason.clone()).unwrap_or(&[])
    }

    /// An interim response (1xx other than 101): forward or skip it, then
    /// read the final response from the same connection.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses the response head at the start of `buf`, refilling `out`.
/// `request_method` matters because a response to HEAD never has a body.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    request_method: Method,
    out: &mut ResponseHead,
) -> Result<ParseStatus, HttpError> {
    parse_response_from(buf, limits, request_method, out, &mut HeadProgress::default())
}

/// [`parse_response`] for a head read piece by piece into `buf`, going on
/// from where the last call stopped (see `parse_request_from`).
pub fn parse_response_from(
    buf: &[u8],
    limits: &Limits,
    request_method: Method,
    out: &mut ResponseHead,
    progress: &mut HeadProgress,
) -> Result<ParseStatus, HttpError> {
    out.reset();
    let Some(scanned) = scan_head_from(buf, limits, progress)? else {
        return Ok(ParseStatus::Partial);
    };
    fill_from_httparse(&buf[..scanned.end], &scanned, limits, out)?;
    if !(100..=599).contains(&out.status) {
        return Err(HttpError::BadStatus);
    }

    // Framing fields are validated even when the status says "no body": a
    // response that contradicts itself is not one to trust either way.
    let facts = Facts::collect(buf, &out.headers)?;
    let by_fields = facts.framing(out.minor_version)?;
    let no_body =
        request_method == Method::Head || (100..200).contains(&out.status) || out.status == 204 || out.status == 304;
    out.framing = if no_body {
        Framing::Empty
    } else {
        by_fields.unwrap_or(Framing::UntilClose)
    };
    // A close-delimited body ends the connection; after 101 it is not HTTP.
    out.keep_alive = facts.keep_alive(out.minor_version) && out.framing != Framing::UntilClose && out.status != 101;
    Ok(ParseStatus::Complete(scanned.end))
}

fn fill_from_httparse(
    head: &[u8],
    scanned: &Scanned,
    limits: &Limits,
    out: &mut ResponseHead,
) -> Result<(), HttpError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CEILING];
    let n = limits.max_headers.min(MAX_HEADERS_CEILING);
    let mut res = httparse::Response::new(&mut []);
    let line = &head[scanned.start..scanned.start_line_end];
    let config = httparse::ParserConfig::default();
    match config.parse_response_with_uninit_headers(&mut res, head, &mut slots[..n]) {
        Ok(httparse::Status::Complete(len)) if len == scanned.end => {}
        Ok(_) => return Err(HttpError::Malformed),
        Err(e) => return Err(status_line_error(e, line)),
    }
    let (Some(minor), Some(code)) = (res.version, res.code) else {
        return Err(HttpError::Malformed);
    };
    out.minor_version = minor;
    out.status = code;
    // httparse returns "" for a reason with obs-text, not a sub-slice, so
    // take the reason from the line: "HTTP/1.1 200 " is 13 bytes.
    let reason_start = (scanned.start + 13).min(scanned.start_line_end);
    out.reason = reason_start..scanned.start_line_end;
    for h in res.headers.iter() {
        let name = span_of(head, h.name.as_bytes());
        let value = span_of(head, h.value);
        let r = name
            .zip(value)
            .and_then(|(n, v)| HeaderRef::new(n, v))
            .ok_or(HttpError::Malformed)?;
        out.headers.push(r);
    }
    Ok(())
}

fn status_line_error(e: httparse::Error, line: &[u8]) -> HttpError {
    match e {
        httparse::Error::Version => version_error(line.split(|&b| b == b' ').next().unwrap_or(&[])),
        httparse::Error::Status | httparse::Error::Token | httparse::Error::NewLine => HttpError::BadStatus,
        httparse::Error::HeaderName => HttpError::BadHeaderName,
        httparse::Error::HeaderValue => HttpError::ControlChar,
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
    }
}

#[cfg(test)]
mod tests;
