//! `HttpError`: every way a message can be malformed or unsupported, each with
//! the status the proxy answers a client with and the short kebab-case reason
//! that goes into `x-ringway-error` and the access log.
//!
//! For responses the pipeline answers 502 whatever the variant says; the reason
//! still names what the upstream got wrong.

use std::fmt;

/// Declares `HttpError` with each variant's reason beside it, and `ALL`, so
/// that a new variant cannot miss its reason or the tests that walk them.
macro_rules! http_errors {
    ($($(#[$doc:meta])* $variant:ident => $reason:literal,)*) => {
        /// One distinct variant per malformation class, so metrics and logs can tell
        /// a smuggling attempt (`AmbiguousFraming`) from a sloppy client (`MissingHost`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HttpError {
            $($(#[$doc])* $variant,)*
        }

        impl HttpError {
            /// Every variant, in declaration order.
            pub const ALL: &'static [HttpError] = &[$(HttpError::$variant,)*];

            /// Short kebab-case reason for `x-ringway-error` and the access log.
            pub fn reason(&self) -> &'static str {
                match self {
                    $(HttpError::$variant => $reason,)*
                }
            }
        }
    };
}

http_errors! {
    // --- line and byte level ---
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareCrLf => "bare-cr-lf",
    /// NUL, DEL or another control byte (HTAB is allowed only in values).
    ControlChar => "control-char",
    /// A field line starting with whitespace (obsolete line folding).
    ObsFold => "obs-fold",
    /// A field line without a colon.
    MissingColon => "missing-colon",
    /// Whitespace between a field name and its colon.
    SpaceBeforeColon => "space-before-colon",
    /// A field name that is empty or has a byte outside `tchar`.
    BadHeaderName => "bad-header-name",
    /// Head bytes beyond `Limits::max_header_bytes`.
    HeadTooLarge => "head-too-large",
    /// A request line alone past `Limits::max_header_bytes` (a request
    /// target that long, as RFC 9112 §3 has it: 414).
    UriTooLong => "uri-too-long",
    /// More field lines than `Limits::max_headers`.
    TooManyHeaders => "too-many-headers",
    /// httparse disagreed with the strictness pass; should not happen.
    Malformed => "malformed-head",

    // --- start line ---
    BadMethod => "bad-method",
    BadTarget => "bad-target",
    /// Absolute-form with a scheme other than http or https.
    BadScheme => "bad-scheme",
    /// Asterisk-form (`*`) with a method other than OPTIONS.
    AsteriskForm => "asterisk-form",
    /// Not `HTTP/DIGIT.DIGIT`.
    BadVersion => "bad-version",
    /// Well-formed but not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion => "unsupported-version",
    /// Response status line: code not three digits in 100..=599.
    BadStatus => "bad-status",

    // --- host ---
    MissingHost => "missing-host",
    DuplicateHost => "duplicate-host",
    BadHost => "bad-host",

    // --- framing ---
    /// Content-Length not `1*DIGIT` (empty, sign, comma list, overflow, ...).
    BadContentLength => "bad-content-length",
    /// More than one Content-Length field, even with equal values.
    DuplicateContentLength => "duplicate-content-length",
    /// Content-Length and Transfer-Encoding together.
    AmbiguousFraming => "ambiguous-framing",
    /// Transfer-Encoding present but chunked is not the final coding.
    ChunkedNotFinal => "chunked-not-final",
    /// chunked listed more than once.
    DuplicateChunked => "duplicate-chunked",
    /// A transfer coding other than chunked (we cannot decode it).
    UnsupportedTransferCoding => "unsupported-transfer-coding",
    /// Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1: treat as faulty).
    TransferEncodingHttp10 => "te-in-http10",
    /// Transfer-Encoding with no codings at all.
    BadTransferEncoding => "bad-transfer-encoding",

    // --- semantics the proxy refuses ---
    ConnectNotSupported => "connect-not-supported",
    UpgradeNotSupported => "upgrade-not-supported",
    ExpectationFailed => "expectation-failed",
    /// A response switching protocols (101) to anything but the WebSocket
    /// the request asked for.
    UnexpectedSwitch => "unexpected-switch",
    /// Interim (1xx) answers before the final one past their allowance (a
    /// head's worth, and more as the wait goes on).
    TooManyInterim => "too-many-interim",

    // --- chunked body ---
    BadChunkSize => "bad-chunk-size",
    BadChunkExt => "bad-chunk-ext",
    /// Chunk data not followed by CRLF, or use after a previous error.
    BadChunk => "bad-chunk",
    TrailersTooLarge => "trailers-too-large",
}

impl HttpError {
    /// The status the proxy sends a client for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::UriTooLong => 414,
            HttpError::UnsupportedTransferCoding | HttpError::ConnectNotSupported | HttpError::UpgradeNotSupported => {
                501
            }
            HttpError::UnsupportedVersion => 505,
            HttpError::ExpectationFailed => 417,
            _ => 400,
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

    #[test]
    fn reasons_are_distinct_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for e in HttpError::ALL {
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
