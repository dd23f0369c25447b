//! Field semantics shared by requests and responses: body framing from
//! Content-Length / Transfer-Encoding (RFC 9112 §6), Connection options, and
//! the Host / Expect / Upgrade facts a request needs. One pass over the parsed
//! headers collects the facts; `framing` then applies the strict rules.

use super::rewrite::HOP_BY_HOP;
use super::scan::list_items;
use super::{Framing, HeaderRef, HttpError};

/// What the framing- and connection-relevant fields said.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub content_length: Option<u64>,
    pub transfer_encoding: bool,
    /// Codings across all Transfer-Encoding fields, in order.
    pub codings: usize,
    pub chunked: usize,
    pub last_is_chunked: bool,
    pub conn_close: bool,
    pub conn_keep_alive: bool,
    pub conn_upgrade: bool,
    /// Some Connection option names a field that is not hop-by-hop anyway:
    /// that field is dropped on the way too.
    pub conn_names_fields: bool,
    pub upgrade_field: bool,
    pub hosts: usize,
    /// Index into the header list of the first Host field.
    pub host_index: Option<usize>,
    pub expect_continue: bool,
    pub expect_other: bool,
}

impl Facts {
    /// Collects facts; rejects a malformed or repeated Content-Length at once,
    /// since no later field can make it acceptable.
    pub(crate) fn collect(buf: &[u8], headers: &[HeaderRef]) -> Result<Facts, HttpError> {
        let mut f = Facts::default();
        for (idx, h) in headers.iter().enumerate() {
            let name = h.name(buf);
            let value = h.value(buf);
            if name.eq_ignore_ascii_case(b"content-length") {
                if f.content_length.is_some() {
                    return Err(HttpError::DuplicateContentLength);
                }
                f.content_length = Some(parse_content_length(value)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                f.transfer_encoding = true;
                for coding in list_items(value) {
                    f.codings += 1;
                    f.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
                    if f.last_is_chunked {
                        f.chunked += 1;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for opt in list_items(value) {
                    f.conn_close |= opt.eq_ignore_ascii_case(b"close");
                    f.conn_keep_alive |= opt.eq_ignore_ascii_case(b"keep-alive");
                    f.conn_upgrade |= opt.eq_ignore_ascii_case(b"upgrade");
                    f.conn_names_fields |= !opt.eq_ignore_ascii_case(b"close")
                        && !HOP_BY_HOP.iter().any(|h| opt.eq_ignore_ascii_case(h.as_bytes()));
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                f.upgrade_field = true;
            } else if name.eq_ignore_ascii_case(b"host") {
                f.hosts += 1;
                f.host_index.get_or_insert(idx);
            } else if name.eq_ignore_ascii_case(b"expect") {
                // `#expectation`: a list, over any number of field lines
                // (RFC 9110 §10.1.1); an empty one expects nothing.
                for expectation in list_items(value) {
                    if expectation.eq_ignore_ascii_case(b"100-continue") {
                        f.expect_continue = true;
                    } else {
                        f.expect_other = true;
                    }
                }
            }
        }
        Ok(f)
    }

    /// Framing from the fields alone (the caller handles status/method rules
    /// first). `None` means no framing field: empty for a request, read until
    /// close for a response. The same strictness applies to both directions.
    pub(crate) fn framing(&self, minor_version: u8) -> Result<Option<Framing>, HttpError> {
        if !self.transfer_encoding {
            return Ok(self.content_length.map(Framing::Length));
        }
        // RFC 9112 §6.1 lets a recipient drop Content-Length and use chunked,
        // but a proxy that forwards it cannot know its peer does the same:
        // refuse instead of guessing (request smuggling).
        if self.content_length.is_some() {
            return Err(HttpError::AmbiguousFraming);
        }
        if minor_version == 0 {
            return Err(HttpError::TransferEncodingHttp10);
        }
        if self.codings == 0 {
            return Err(HttpError::BadTransferEncoding);
        }
        if self.chunked > 1 {
            return Err(HttpError::DuplicateChunked);
        }
        if !self.last_is_chunked {
            return Err(HttpError::ChunkedNotFinal);
        }
        if self.codings > 1 {
            // e.g. "gzip, chunked": framed, but we would have to decode gzip
            // before stripping the hop-by-hop Transfer-Encoding field.
            return Err(HttpError::UnsupportedTransferCoding);
        }
        Ok(Some(Framing::Chunked))
    }

    /// RFC 9112 §9.3: 1.1 is persistent unless "close"; 1.0 only with "keep-alive".
    pub(crate) fn keep_alive(&self, minor_version: u8) -> bool {
        !self.conn_close && (minor_version >= 1 || self.conn_keep_alive)
    }
}

/// `Content-Length = 1*DIGIT`, checked for overflow. A comma list (even of
/// equal values, which RFC 9110 §8.6 tolerates) is refused: some peers take
/// the first value, some the last.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    if value.is_empty() {
        return Err(HttpError::BadContentLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(HttpError::BadContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HttpError::BadContentLength)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_syntax() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b"007"), Ok(7));
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+5",
            b"-1",
            b"5,5",
            b"5 5",
            b"0x10",
            b"1e3",
        ] {
            assert_eq!(
                parse_content_length(bad),
                Err(HttpError::BadContentLength),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn te(codings: &[&str], minor: u8) -> Result<Option<Framing>, HttpError> {
        let mut f = Facts {
            transfer_encoding: true,
            ..Facts::default()
        };
        for c in codings {
            f.codings += 1;
            f.last_is_chunked = c.eq_ignore_ascii_case("chunked");
            f.chunked += usize::from(f.last_is_chunked);
        }
        f.framing(minor)
    }

    #[test]
    fn transfer_coding_rules() {
        assert_eq!(te(&["chunked"], 1), Ok(Some(Framing::Chunked)));
        assert_eq!(te(&["Chunked"], 1), Ok(Some(Framing::Chunked)));
        assert_eq!(te(&["chunked"], 0), Err(HttpError::TransferEncodingHttp10));
        assert_eq!(te(&[], 1), Err(HttpError::BadTransferEncoding));
        assert_eq!(te(&["gzip"], 1), Err(HttpError::ChunkedNotFinal));
        assert_eq!(te(&["chunked", "gzip"], 1), Err(HttpError::ChunkedNotFinal));
        assert_eq!(te(&["chunked", "chunked"], 1), Err(HttpError::DuplicateChunked));
        assert_eq!(te(&["gzip", "chunked"], 1), Err(HttpError::UnsupportedTransferCoding));
        assert_eq!(te(&["chunked;x=1"], 1), Err(HttpError::ChunkedNotFinal));
    }

    #[test]
    fn keep_alive_rules() {
        let mut f = Facts::default();
        assert!(f.keep_alive(1) && !f.keep_alive(0));
        f.conn_keep_alive = true;
        assert!(f.keep_alive(0));
        f.conn_close = true;
        assert!(!f.keep_alive(0) && !f.keep_alive(1));
    }
}
