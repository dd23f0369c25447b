//! `HttpError`: every way a message can be malformed or unsupported, each with
//! the status the proxy answers a client with and the short kebab-case reason
//! that goes into `x-ringway-error` and the access log.
//!
//! For responses the pipeline answers 502 whatever the variant says; the reason
//! still names what the upstream got wrong.

use std::fmt;

/// One distinct variant per malformation class, so metrics and logs can tell
/// a smuggling attempt (`AmbiguousFraming`) from a sloppy client (`MissingHost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpError {
    // --- line and byte level ---
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareCrLf,
    /// NUL, DEL or another control byte (HTAB is allowed only in values).
    ControlChar,
    /// A field line starting with whitespace (obsolete line folding).
    ObsFold,
    /// A field line without a colon.
    MissingColon,
    /// Whitespace between a field name and its colon.
    SpaceBeforeColon,
    /// A field name that is empty or has a byte outside `tchar`.
    BadHeaderName,
    /// Head bytes beyond `Limits::max_header_bytes`.
    HeadTooLarge,
    /// More field lines than `Limits::max_headers`.
    TooManyHeaders,
    /// httparse disagreed with the strictness pass; should not happen.
    Malformed,

    // --- start line ---
    BadMethod,
    BadTarget,
    /// Absolute-form with a scheme other than http or https.
    BadScheme,
    /// Asterisk-form (`*`) with a method other than OPTIONS.
    AsteriskForm,
    /// Not `HTTP/DIGIT.DIGIT`.
    BadVersion,
    /// Well-formed but not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// Response status line: code not three digits in 100..=599.
    BadStatus,

    // --- host ---
    MissingHost,
    DuplicateHost,
    BadHost,

    // --- framing ---
    /// Content-Length not `1*DIGIT` (empty, sign, comma list, overflow, ...).
    BadContentLength,
    /// More than one Content-Length field, even with equal values.
    DuplicateContentLength,
    /// Content-Length and Transfer-Encoding together.
    AmbiguousFraming,
    /// Transfer-Encoding present but chunked is not the final coding.
    ChunkedNotFinal,
    /// chunked listed more than once.
    DuplicateChunked,
    /// A transfer coding other than chunked (we cannot decode it).
    UnsupportedTransferCoding,
    /// Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1: treat as faulty).
    TransferEncodingHttp10,
    /// Transfer-Encoding with no codings at all.
    BadTransferEncoding,

    // --- semantics the proxy refuses ---
    ConnectNotSupported,
    UpgradeNotSupported,
    ExpectationFailed,
    /// A response switching protocols (101) to anything but the WebSocket
    /// the request asked for.
    UnexpectedSwitch,

    // --- chunked body ---
    BadChunkSize,
    BadChunkExt,
    /// Chunk data not followed by CRLF, or use after a previous error.
    BadChunk,
    TrailersTooLarge,
}

impl HttpError {
    /// The status the proxy sends a client for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::UnsupportedTransferCoding | HttpError::ConnectNotSupported | HttpError::UpgradeNotSupported => {
                501
            }
            HttpError::UnsupportedVersion => 505,
            HttpError::ExpectationFailed => 417,
            _ => 400,
        }
    }

    /// Short kebab-case reason for `x-ringway-error` and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::BareCrLf => "bare-cr-lf",
            HttpError::ControlChar => "control-char",
            HttpError::ObsFold => "obs-fold",
            HttpError::MissingColon => "missing-colon",
            HttpError::SpaceBeforeColon => "space-before-colon",
            HttpError::BadHeaderName => "bad-header-name",
            HttpError::HeadTooLarge => "head-too-large",
            HttpError::TooManyHeaders => "too-many-headers",
            HttpError::Malformed => "malformed-head",
            HttpError::BadMethod => "bad-method",
            HttpError::BadTarget => "bad-target",
            HttpError::BadScheme => "bad-scheme",
            HttpError::AsteriskForm => "asterisk-form",
            HttpError::BadVersion => "bad-version",
            HttpError::UnsupportedVersion => "unsupported-version",
            HttpError::BadStatus => "bad-status",
            HttpError::MissingHost => "missing-host",
            HttpError::DuplicateHost => "duplicate-host",
            HttpError::BadHost => "bad-host",
            HttpError::BadContentLength => "bad-content-length",
            HttpError::DuplicateContentLength => "duplicate-content-length",
            HttpError::AmbiguousFraming => "ambiguous-framing",
            HttpError::ChunkedNotFinal => "chunked-not-final",
            HttpError::DuplicateChunked => "duplicate-chunked",
            HttpError::UnsupportedTransferCoding => "unsupported-transfer-coding",
            HttpError::TransferEncodingHttp10 => "te-in-http10",
            HttpError::BadTransferEncoding => "bad-transfer-encoding",
            HttpError::ConnectNotSupported => "connect-not-supported",
            HttpError::UpgradeNotSupported => "upgrade-not-supported",
            HttpError::ExpectationFailed => "expectation-failed",
            HttpError::UnexpectedSwitch => "unexpected-switch",
            HttpError::BadChunkSize => "bad-chunk-size",
            HttpError::BadChunkExt => "bad-chunk-ext",
            HttpError::BadChunk => "bad-chunk",
            HttpError::TrailersTooLarge => "trailers-too-large",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::HttpError::*;
    use super::*;

    const ALL: [HttpError; 34] = [
        BareCrLf,
        ControlChar,
        ObsFold,
        MissingColon,
        SpaceBeforeColon,
        BadHeaderName,
        HeadTooLarge,
        TooManyHeaders,
        Malformed,
        BadMethod,
        BadTarget,
        BadScheme,
        AsteriskForm,
        BadVersion,
        UnsupportedVersion,
        BadStatus,
        MissingHost,
        DuplicateHost,
        BadHost,
        BadContentLength,
        DuplicateContentLength,
        AmbiguousFraming,
        ChunkedNotFinal,
        DuplicateChunked,
        UnsupportedTransferCoding,
        TransferEncodingHttp10,
        BadTransferEncoding,
        ConnectNotSupported,
        UpgradeNotSupported,
        ExpectationFailed,
        BadChunkSize,
        BadChunkExt,
        BadChunk,
        TrailersTooLarge,
    ];

    #[test]
    fn reasons_are_distinct_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for e in ALL {
            let r = e.reason();
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()));
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(HeadTooLarge.status(), 431);
        assert_eq!(TooManyHeaders.status(), 431);
        assert_eq!(UnsupportedTransferCoding.status(), 501);
        assert_eq!(UpgradeNotSupported.status(), 501);
        assert_eq!(ConnectNotSupported.status(), 501);
        assert_eq!(ExpectationFailed.status(), 417);
        assert_eq!(UnsupportedVersion.status(), 505);
        assert_eq!(AmbiguousFraming.status(), 400);
        assert_eq!(AmbiguousFraming.to_string(), "ambiguous-framing (400)");
    }
}
