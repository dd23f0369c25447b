//! Response parsing: status-driven framing (HEAD, 1xx, 204, 304), connection
//! reuse, and the framing strictness shared with requests.

use super::*;

fn parse_for(method: Method, buf: &[u8]) -> Result<(ParseStatus, ResponseHead), HttpError> {
    let mut head = ResponseHead::default();
    parse_response(buf, &Limits::default(), method, &mut head).map(|s| (s, head))
}

fn complete_for(method: Method, buf: &[u8]) -> ResponseHead {
    match parse_for(method, buf) {
        Ok((ParseStatus::Complete(n), head)) => {
            assert_eq!(n, buf.len());
            head
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn complete(buf: &[u8]) -> ResponseHead {
    complete_for(Method::Get, buf)
}

fn err(buf: &[u8]) -> HttpError {
    match parse_for(Method::Get, buf) {
        Err(e) => e,
        Ok(ok) => panic!("{:?} accepted: {ok:?}", String::from_utf8_lossy(buf)),
    }
}

#[test]
fn simple_ok() {
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nServer: up\r\n\r\n";
    let h = complete(buf);
    assert_eq!((h.status, h.minor_version), (200, 1));
    assert_eq!(h.reason_bytes(buf), b"OK");
    assert_eq!(h.framing, Framing::Length(13));
    assert!(h.keep_alive && !h.is_informational());
    assert_eq!(h.header(buf, "server"), Some(&b"up"[..]));
}

#[test]
fn reason_phrase_variants() {
    let buf = b"HTTP/1.1 404 Not \xffFound\tx\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(complete(buf).reason_bytes(buf), b"Not \xffFound\tx");
    let buf = b"HTTP/1.1 204 \r\n\r\n";
    assert_eq!(complete(buf).reason_bytes(buf), b"");
    let buf = b"HTTP/1.1 204\r\n\r\n";
    assert_eq!(complete(buf).reason_bytes(buf), b"");
}

#[test]
fn status_and_method_decide_when_there_is_no_body() {
    let with_len = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(complete_for(Method::Head, with_len).framing, Framing::Empty);
    assert!(complete_for(Method::Head, with_len).keep_alive);
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(complete_for(Method::Head, chunked).framing, Framing::Empty);
    for status in ["100", "103", "204", "304"] {
        let buf = format!("HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n");
        let h = complete(buf.as_bytes());
        assert_eq!(h.framing, Framing::Empty, "{status}");
        assert!(h.keep_alive, "{status}");
    }
    // Without any framing field, no-body statuses stay reusable.
    let h = complete(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
}

#[test]
fn informational_responses() {
    let h = complete(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(h.is_informational());
    let h = complete(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    assert!(h.is_informational());
    let h = complete(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
    assert!(!h.is_informational() && !h.keep_alive);
    assert_eq!(h.framing, Framing::Empty);
}

#[test]
fn body_until_close_ends_the_connection() {
    let h = complete(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
    let h = complete(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
    let h = complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
}

#[test]
fn keep_alive_by_version_and_connection() {
    let ka = |v: &str, conn: &str| {
        let buf = format!("HTTP/1.{v} 200 OK\r\nContent-Length: 1\r\n{conn}\r\n");
        complete(buf.as_bytes()).keep_alive
    };
    assert!(ka("1", ""));
    assert!(!ka("1", "Connection: close\r\n"));
    assert!(!ka("0", ""));
    assert!(ka("0", "Connection: keep-alive\r\n"));
}

#[test]
fn pipelined_and_split_responses() {
    let first = b"HTTP/1.1 204 No Content\r\nA: b\r\n\r\n";
    let buf = [&first[..], b"HTTP/1.1 200 OK\r\n\r\n"].concat();
    let (status, _) = parse_for(Method::Get, &buf).expect("valid");
    assert_eq!(status, ParseStatus::Complete(first.len()));
    for n in 0..first.len() {
        let got = parse_for(Method::Get, &first[..n]).map(|(s, _)| s);
        assert_eq!(got, Ok(ParseStatus::Partial), "prefix {n}");
    }
}

#[test]
fn malformed_responses_are_rejected_with_their_reason() {
    let cases: &[(&[u8], HttpError)] = &[
        (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", HttpError::BareCrLf),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HttpError::ObsFold),
        (b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n", HttpError::SpaceBeforeColon),
        (b"HTTP/1.1 200 OK\r\nX: \0\r\n\r\n", HttpError::ControlChar),
        (b"HTTP/1.1 200 OK\r\nX/Y: a\r\n\r\n", HttpError::BadHeaderName),
        (b"HTTP/1.1 20 OK\r\n\r\n", HttpError::BadStatus),
        (b"HTTP/1.1 2000 OK\r\n\r\n", HttpError::BadStatus),
        (b"HTTP/1.1 099 Odd\r\n\r\n", HttpError::BadStatus),
        (b"HTTP/1.1 600 Odd\r\n\r\n", HttpError::BadStatus),
        (b"HTTP/1.1  200 OK\r\n\r\n", HttpError::BadStatus),
        (b"HTTP/1.2 200 OK\r\n\r\n", HttpError::UnsupportedVersion),
        (b"HTTP/2 200 OK\r\n\r\n", HttpError::BadVersion),
        (b"ICY 200 OK\r\n\r\n", HttpError::BadVersion),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::AmbiguousFraming,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            HttpError::DuplicateContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3,3\r\n\r\n",
            HttpError::BadContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            HttpError::BadContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            HttpError::ChunkedNotFinal,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HttpError::UnsupportedTransferCoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,chunked\r\n\r\n",
            HttpError::DuplicateChunked,
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::TransferEncodingHttp10,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(err(input), *want, "{:?}", String::from_utf8_lossy(input));
    }
    // A no-body status does not excuse contradictory framing fields.
    let both = b"HTTP/1.1 304 X\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(err(both), HttpError::AmbiguousFraming);
}

#[test]
fn head_is_reused() {
    let mut head = ResponseHead::default();
    let l = Limits::default();
    let a = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 1\r\n\r\n";
    parse_response(a, &l, Method::Get, &mut head).expect("valid");
    let cap = head.headers.capacity();
    parse_response(b"HTTP/1.0 204 \r\n\r\n", &l, Method::Get, &mut head).expect("valid");
    assert_eq!(head.headers.capacity(), cap);
    assert!(head.headers.is_empty() && !head.keep_alive);
    assert_eq!((head.status, head.minor_version), (204, 0));
}

/// A response head read piece by piece, parsed from where the last call
/// stopped, reads as the whole head does.
#[test]
fn a_head_parsed_as_it_arrives_reads_as_the_whole_head() {
    let heads: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
        b"HTTP/1.1 204 No Content\r\nBad\nField: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: \x7f\r\n\r\n",
    ];
    for whole in heads {
        let mut head = ResponseHead::default();
        let expected = parse_response(whole, &Limits::default(), Method::Get, &mut head);
        for piece in [1, 2, 5] {
            let mut progress = HeadProgress::default();
            let mut head = ResponseHead::default();
            let mut got = Ok(ParseStatus::Partial);
            let mut end = 0;
            while end < whole.len() && got == Ok(ParseStatus::Partial) {
                end = (end + piece).min(whole.len());
                got = parse_response_from(&whole[..end], &Limits::default(), Method::Get, &mut head, &mut progress);
            }
            assert_eq!(
                got,
                expected,
                "{:?} in pieces of {piece}",
                String::from_utf8_lossy(whole)
            );
        }
    }
}
