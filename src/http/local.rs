//! Responses Ringway writes itself, from parts the caller has validated:
//! the status line with its reason phrase, fields, framing and body.

/// The reason phrase for a status Ringway answers with: the IANA
/// registry's (RFC 9110 and the extensions), else a generic one by class.
pub fn status_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ if status >= 500 => "Server Error",
        _ if status >= 400 => "Client Error",
        _ => "Status",
    }
}

/// A whole response: `fields`, then `Content-Length` for `body` (sent
/// only when `head_request` is false, as HEAD answers carry none), then
/// `Connection: close` with `close`, or `Connection: keep-alive` with
/// `keep_alive_10` (an HTTP/1.0 client kept open).
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: u16,
    fields: &[(&str, &[u8])],
    body: &[u8],
    close: bool,
    keep_alive_10: bool,
    head_request: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_response, Limits, Method, ParseStatus, ResponseHead};

    #[test]
    fn registered_statuses_have_their_own_phrase() {
        assert_eq!(status_phrase(414), "URI Too Long");
        assert_eq!(status_phrase(421), "Misdirected Request");
        assert_eq!(status_phrase(511), "Network Authentication Required");
        assert_eq!(status_phrase(499), "Client Error");
        assert_eq!(status_phrase(599), "Server Error");
    }

    #[test]
    fn local_responses_parse_back_with_their_framing() {
        let mut out = Vec::new();
        write_local_response(
            &mut out,
            308,
            &[("Location", b"https://a.test/x")],
            b"",
            false,
            false,
            false,
        );
        let mut head = ResponseHead::default();
        let parsed = parse_response(&out, &Limits::default(), Method::Get, &mut head);
        assert_eq!(parsed, Ok(ParseStatus::Complete(out.len())));
        assert_eq!(head.status, 308);
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 308 Permanent Redirect\r\n"));

        out.clear();
        write_local_response(
            &mut out,
            200,
            &[("content-type", b"text/plain")],
            b"ok",
            true,
            false,
            true,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with("content-length: 2\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
    }
}
