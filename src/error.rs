//! The one error type of the data path and the one place errors become HTTP
//! responses. Every response Ringway generates itself carries
//! `x-ringway-error: <reason>` and a short plain-text body.

pub use crate::http::status_phrase;
use crate::http::HttpError;
use std::fmt;

/// Whose fault an error is: decides logging and whether a response is possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client's request broke HTTP/1.1 framing or syntax rules.
    Malformed(HttpError),
    HeaderReadTimeout,
    /// The client did not send the body held for retries or a mirror
    /// within the route's timeout.
    BodyReadTimeout,
    BodyTooLarge,
    NoRoute,
    /// The route does not allow the client's identity (or it has none).
    Forbidden,
    NoEndpoint,
    /// Ringway itself ran out of descriptors or memory for a new upstream
    /// connection: not the endpoint's failure.
    ResourcesExhausted,
    ConnectFailed,
    ConnectTimeout,
    /// The TLS handshake with the upstream failed (its certificate, our
    /// client certificate, or the protocol).
    UpstreamTls,
    /// The upstream closed or reset the connection before a full response.
    UpstreamReset,
    /// The upstream's response broke HTTP/1.1 rules.
    BadResponse(HttpError),
    UpstreamTimeout,
    /// Over a rate limit; a retry may succeed after this many seconds.
    RateLimited {
        retry_after_secs: u64,
    },
    /// Over a cluster's circuit-breaker cap (connections, pending, requests).
    Overflow,
    /// Every endpoint's breaker is open.
    CircuitOpen,
    /// The upstream's status asked for a retry that could not be made.
    RetryFailed(u16),
    /// The client went away or its socket failed; no response can be sent.
    ClientIo,
    /// The route's fault injection answered with this status.
    FaultAbort(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    /// Whether a fresh attempt could succeed (nothing of the request was used up).
    pub retryable: bool,
}

impl ProxyError {
    pub fn new(kind: ErrorKind) -> Self {
        let side = match kind {
            ErrorKind::Malformed(_)
            | ErrorKind::HeaderReadTimeout
            | ErrorKind::BodyReadTimeout
            | ErrorKind::BodyTooLarge
            | ErrorKind::ClientIo => Side::Downstream,
            ErrorKind::NoRoute
            | ErrorKind::Forbidden
            | ErrorKind::NoEndpoint
            | ErrorKind::ResourcesExhausted
            | ErrorKind::RateLimited { .. }
            | ErrorKind::Overflow
            | ErrorKind::CircuitOpen
            | ErrorKind::FaultAbort(_) => Side::Internal,
            _ => Side::Upstream,
        };
        let retryable = matches!(
            kind,
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls
        );
        ProxyError { kind, side, retryable }
    }

    pub fn status(&self) -> u16 {
        match &self.kind {
            ErrorKind::Malformed(e) => e.status(),
            ErrorKind::HeaderReadTimeout | ErrorKind::BodyReadTimeout => 408,
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::NoRoute => 404,
            ErrorKind::Forbidden => 403,
            ErrorKind::NoEndpoint | ErrorKind::ResourcesExhausted => 503,
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::UpstreamTls
            | ErrorKind::UpstreamReset => 502,
            ErrorKind::BadResponse(_) => 502,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::RateLimited { .. } => 429,
            ErrorKind::Overflow | ErrorKind::CircuitOpen => 503,
            ErrorKind::RetryFailed(_) => 502,
            // Nothing is answered: NGINX's "client closed request", for
            // the access log and the request metrics.
            ErrorKind::ClientIo => 499,
            ErrorKind::FaultAbort(status) => *status,
        }
    }

    /// The `x-ringway-error` value and access-log reason.
    pub fn reason(&self) -> &'static str {
        match &self.kind {
            ErrorKind::Malformed(e) => e.reason(),
            ErrorKind::HeaderReadTimeout => "header-read-timeout",
            ErrorKind::BodyReadTimeout => "body-read-timeout",
            ErrorKind::BodyTooLarge => "body-too-large",
            ErrorKind::NoRoute => "no-route",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NoEndpoint => "no-healthy-endpoint",
            ErrorKind::ResourcesExhausted => "resources-exhausted",
            ErrorKind::ConnectFailed => "connect-failure",
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::UpstreamTls => "upstream-tls-failure",
            ErrorKind::UpstreamReset => "upstream-reset",
            ErrorKind::BadResponse(_) => "bad-response",
            ErrorKind::UpstreamTimeout => "upstream-timeout",
            ErrorKind::RateLimited { .. } => "rate-limited",
            ErrorKind::Overflow => "overflow",
            ErrorKind::CircuitOpen => "circuit-open",
            ErrorKind::RetryFailed(_) => "retry-failed",
            ErrorKind::ClientIo => "client-io",
            ErrorKind::FaultAbort(_) => "fault-abort",
        }
    }

    /// Whether a failed connect reached the endpoint at all: one that Ringway
    /// could not begin (out of descriptors) tells nothing of it, and must
    /// not count against it.
    pub fn reached_endpoint(&self) -> bool {
        self.kind != ErrorKind::ResourcesExhausted
    }

    /// Whether a response can still be written: not when the client is gone.
    pub fn can_respond(&self) -> bool {
        self.kind != ErrorKind::ClientIo
    }

    /// Render the response for this error into `out`, as `to` says the
    /// request it answers needs. Errors that leave the stream
    /// unsynchronised (malformed framing, timeouts) always close.
    pub fn write_response(&self, to: Answering<'_>, out: &mut Vec<u8>) {
        let status = self.status();
        let reason = self.reason();
        let body = format!("{}: {reason}\n", status_phrase(status));
        let retry_after = match self.kind {
            ErrorKind::RateLimited { retry_after_secs } => Some(retry_after_secs.max(1).to_string()),
            _ => None,
        };
        let mut fields: Vec<(&str, &[u8])> =
            vec![("content-type", b"text/plain"), ("x-ringway-error", reason.as_bytes())];
        fields.extend(retry_after.as_ref().map(|secs| ("retry-after", secs.as_bytes())));
        fields.extend(to.request_id.map(|id| ("x-request-id", id)));
        let close = to.close || self.must_close();
        // An HTTP/1.0 client keeps the connection only when told so.
        let keep_alive_10 = to.http10 && !close;
        crate::http::write_local_response(
            out,
            status,
            &fields,
            body.as_bytes(),
            close,
            keep_alive_10,
            to.head_request,
        );
    }

    /// After these the connection cannot be trusted to be at a message boundary.
    pub fn must_close(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Malformed(_)
                | ErrorKind::HeaderReadTimeout
                | ErrorKind::BodyReadTimeout
                | ErrorKind::BodyTooLarge
                | ErrorKind::ClientIo
        )
    }
}

/// What an error answer must fit about the request it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answering<'a> {
    /// The connection closes after it (`connection: close`).
    pub close: bool,
    /// A HEAD request: the length is stated, no body sent.
    pub head_request: bool,
    /// An HTTP/1.0 request.
    pub http10: bool,
    /// The x-request-id Ringway made for the request, which its answer
    /// carries as a forwarded one would.
    pub request_id: Option<&'a [u8]>,
}

impl From<ErrorKind> for ProxyError {
    fn from(kind: ErrorKind) -> Self {
        ProxyError::new(kind)
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Malformed(e) | ErrorKind::BadResponse(e) => write!(f, "{} ({e})", self.reason()),
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            (ErrorKind::NoRoute, 404, "no-route"),
            (ErrorKind::Forbidden, 403, "forbidden"),
            (ErrorKind::HeaderReadTimeout, 408, "header-read-timeout"),
            (ErrorKind::BodyTooLarge, 413, "body-too-large"),
            (ErrorKind::ConnectFailed, 502, "connect-failure"),
            (ErrorKind::UpstreamTls, 502, "upstream-tls-failure"),
            (ErrorKind::UpstreamReset, 502, "upstream-reset"),
            (ErrorKind::NoEndpoint, 503, "no-healthy-endpoint"),
            (ErrorKind::ResourcesExhausted, 503, "resources-exhausted"),
            (ErrorKind::UpstreamTimeout, 504, "upstream-timeout"),
            (ErrorKind::FaultAbort(418), 418, "fault-abort"),
            (ErrorKind::ClientIo, 499, "client-io"),
        ];
        for (kind, status, reason) in cases {
            let e = ProxyError::new(kind);
            assert_eq!((e.status(), e.reason()), (status, reason));
        }
    }

    #[test]
    fn response_is_well_formed() {
        let mut out = Vec::new();
        ProxyError::new(ErrorKind::NoRoute).write_response(Answering::default(), &mut out);
        let text = String::from_utf8(out).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head end");
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains("x-ringway-error: no-route"));
        assert!(!head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let mut out = Vec::new();
        ProxyError::new(ErrorKind::BodyTooLarge).write_response(Answering::default(), &mut out);
        assert!(String::from_utf8_lossy(&out).contains("connection: close"));
        // An HTTP/1.0 client is told when the connection stays, and only then.
        let http10 = Answering {
            http10: true,
            ..Answering::default()
        };
        let mut out = Vec::new();
        ProxyError::new(ErrorKind::NoRoute).write_response(http10, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("connection: keep-alive\r\n"));
        let mut out = Vec::new();
        ProxyError::new(ErrorKind::BodyTooLarge).write_response(http10, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("connection: close") && !text.contains("keep-alive"),
            "{text}"
        );
        let named = Answering {
            request_id: Some(b"4a1e"),
            ..Answering::default()
        };
        let mut out = Vec::new();
        ProxyError::new(ErrorKind::UpstreamTimeout).write_response(named, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("\r\nx-request-id: 4a1e\r\n"));
        let mut out = Vec::new();
        let head = Answering {
            head_request: true,
            ..Answering::default()
        };
        ProxyError::new(ErrorKind::NoRoute).write_response(head, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            text.ends_with("\r\n\r\n") && text.contains("content-length: 20"),
            "{text}"
        );
    }
}
