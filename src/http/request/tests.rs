//! Request parsing: the happy paths, every rejected malformation class, and
//! split / pipelined input.

use super::*;

fn parse(buf: &[u8]) -> Result<(ParseStatus, RequestHead), HttpError> {
    let mut head = RequestHead::default();
    parse_request(buf, &Limits::default(), &mut head).map(|s| (s, head))
}

fn complete(buf: &[u8]) -> RequestHead {
    match parse(buf) {
        Ok((ParseStatus::Complete(_), head)) => head,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn err(buf: &[u8]) -> HttpError {
    match parse(buf) {
        Err(e) => e,
        Ok(ok) => panic!("{:?} accepted: {ok:?}", String::from_utf8_lossy(buf)),
    }
}

fn text<'a>(buf: &'a [u8], r: &Range<usize>) -> &'a str {
    std::str::from_utf8(&buf[r.clone()]).expect("ascii")
}

#[test]
fn simple_get() {
    let buf = b"GET /a/b?x=1 HTTP/1.1\r\nHost: api.local\r\nX-Canary:  1 \r\nEmpty:\r\n\r\n";
    let (status, h) = parse(buf).expect("valid");
    assert_eq!(status, ParseStatus::Complete(buf.len()));
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.method_bytes(buf), b"GET");
    assert_eq!(h.target_bytes(buf), b"/a/b?x=1");
    assert_eq!(text(buf, &h.origin), "/a/b?x=1");
    assert_eq!(h.path_bytes(buf), b"/a/b");
    assert_eq!(h.host_bytes(buf), Some(&b"api.local"[..]));
    assert_eq!(h.minor_version, 1);
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.keep_alive && !h.expect_continue && !h.upgrade && !h.absolute_form);
    assert_eq!(h.headers.len(), 3);
    assert_eq!(h.header(buf, "x-canary"), Some(&b"1"[..]));
    assert_eq!(h.header(buf, "EMPTY"), Some(&b""[..]));
    assert_eq!(h.header(buf, "missing"), None);
    assert_eq!(h.headers[1].name(buf), b"X-Canary");
}

#[test]
fn extension_method_text_comes_from_the_buffer() {
    let buf = b"PROPFIND /x HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = complete(buf);
    assert_eq!((h.method, h.method_bytes(buf)), (Method::Other, &b"PROPFIND"[..]));
}

#[test]
fn pipelined_requests_parse_one_at_a_time() {
    let first = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
    let second = b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
    let buf = [&first[..], second].concat();
    let (status, h) = parse(&buf).expect("valid");
    assert_eq!(status, ParseStatus::Complete(first.len()));
    assert_eq!(h.path_bytes(&buf), b"/1");
    let rest = &buf[first.len()..];
    let (status, h) = parse(rest).expect("valid");
    assert_eq!(status, ParseStatus::Complete(second.len() - 2));
    assert_eq!((h.method, h.framing), (Method::Post, Framing::Length(2)));
}

#[test]
fn every_prefix_is_partial() {
    for buf in [
        &b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"\r\nPOST http://h:1/x?y HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nA: \t\r\n\r\n",
        b"OPTIONS * HTTP/1.0\r\n\r\n",
    ] {
        for n in 0..buf.len() {
            assert_eq!(
                parse(&buf[..n]).map(|(s, _)| s),
                Ok(ParseStatus::Partial),
                "prefix {n} of {:?}",
                String::from_utf8_lossy(buf)
            );
        }
        assert_eq!(parse(buf).map(|(s, _)| s), Ok(ParseStatus::Complete(buf.len())));
    }
}

#[test]
fn leading_empty_lines_are_skipped_and_counted() {
    let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let (status, h) = parse(buf).expect("valid");
    assert_eq!(status, ParseStatus::Complete(buf.len()));
    assert_eq!(h.method_span, 4..7);
    assert_eq!(h.target_bytes(buf), b"/");
}

#[test]
fn framing_from_fields() {
    let f = |fields: &str| {
        let buf = format!("POST / HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
        complete(buf.as_bytes()).framing
    };
    assert_eq!(f(""), Framing::Empty);
    assert_eq!(f("Content-Length: 0\r\n"), Framing::Length(0));
    assert_eq!(f("content-length: 42\r\n"), Framing::Length(42));
    assert_eq!(f("Transfer-Encoding: chunked\r\n"), Framing::Chunked);
    assert_eq!(f("Transfer-Encoding: ,CHUNKED ,\r\n"), Framing::Chunked);
}

#[test]
fn keep_alive_matrix() {
    let ka = |version: &str, conn: &str| {
        let buf = format!("GET / HTTP/1.{version}\r\nHost: h\r\n{conn}\r\n");
        complete(buf.as_bytes()).keep_alive
    };
    assert!(ka("1", ""));
    assert!(!ka("1", "Connection: close\r\n"));
    assert!(!ka("1", "Connection: foo, Close\r\n"));
    assert!(!ka("0", ""));
    assert!(ka("0", "Connection: Keep-Alive\r\n"));
    assert!(!ka("0", "Connection: keep-alive\r\nConnection: close\r\n"));
}

#[test]
fn expect_continue() {
    let buf = b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
    assert!(complete(buf).expect_continue);
    // RFC 9110 §10.1.1: a 1.0 client cannot understand an interim response.
    let buf = b"PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    assert!(!complete(buf).expect_continue);
    // A list, on one line or several; empty members expect nothing.
    for fields in [
        "Expect: 100-continue, 100-continue\r\n",
        "Expect: 100-continue\r\nExpect: 100-continue\r\n",
        "Expect: ,100-continue,\r\n",
    ] {
        let buf = format!("PUT /x HTTP/1.1\r\nHost: h\r\n{fields}Content-Length: 5\r\n\r\n");
        assert!(complete(buf.as_bytes()).expect_continue, "{fields:?}");
    }
    let buf = b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect:\r\nContent-Length: 5\r\n\r\n";
    assert!(!complete(buf).expect_continue);
    for fields in [
        "Expect: 100-continue, foo\r\n",
        "Expect: 100-continue\r\nExpect: bar\r\n",
    ] {
        let buf = format!("PUT /x HTTP/1.1\r\nHost: h\r\n{fields}Content-Length: 5\r\n\r\n");
        let mut head = RequestHead::default();
        assert_eq!(
            parse_request(buf.as_bytes(), &Limits::default(), &mut head),
            Err(HttpError::ExpectationFailed),
            "{fields:?}"
        );
    }
}

#[test]
fn upgrade_needs_both_fields() {
    let up = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert!(complete(up).upgrade);
    let stray = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
    assert!(!complete(stray).upgrade);
    let token_only = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n";
    assert!(!complete(token_only).upgrade);
    // RFC 9110 §7.8: ignored in an HTTP/1.0 request.
    let http10 = b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert!(!complete(http10).upgrade);
}

#[test]
fn forwarded_header_is_none_when_connection_names_it() {
    let named = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Request-Id\r\nx-request-id: a\r\n\r\n";
    let h = complete(named);
    assert_eq!(h.header(named, "x-request-id"), Some(&b"a"[..]));
    assert_eq!(h.forwarded_header(named, "x-request-id"), None);
    let kept = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nx-request-id: a\r\n\r\n";
    assert_eq!(complete(kept).forwarded_header(kept, "x-request-id"), Some(&b"a"[..]));
}

#[test]
fn fields_named_in_connection_are_known() {
    let plain = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, close\r\nx-a: 1\r\n\r\n";
    let h = complete(plain);
    assert!(!h.connection_names_fields);
    assert!(!h.named_in_connection(plain, "x-a"));
    let named = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nConnection: X-A, host\r\nx-a: 1\r\n\r\n";
    let h = complete(named);
    assert!(h.connection_names_fields);
    assert!(h.named_in_connection(named, "x-a"));
    assert!(!h.named_in_connection(named, "x-b"));
    // Host is never dropped, and hop-by-hop fields are the proxy's to decide.
    assert!(!h.named_in_connection(named, "host"));
    assert!(!h.named_in_connection(named, "upgrade"));
}

#[test]
fn only_forwarded_header_wants_one_line_that_goes_on() {
    let one = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\ntraceparent: t\r\n\r\n";
    assert_eq!(complete(one).only_forwarded_header(one, "traceparent"), Some(&b"t"[..]));
    let two = b"GET / HTTP/1.1\r\nHost: h\r\ntraceparent: t\r\nTraceparent: u\r\n\r\n";
    assert_eq!(complete(two).only_forwarded_header(two, "traceparent"), None);
    let named = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, TraceParent\r\ntraceparent: t\r\n\r\n";
    assert_eq!(complete(named).only_forwarded_header(named, "traceparent"), None);
}

#[test]
fn absolute_form_takes_authority_and_path_from_the_target() {
    let buf = b"GET HTTP://Example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let h = complete(buf);
    assert!(h.absolute_form);
    assert_eq!(h.host_bytes(buf), Some(&b"Example.com:8080"[..]));
    assert_eq!(h.path_bytes(buf), b"/a/b");
    assert_eq!(text(buf, &h.origin), "/a/b?q=1");

    let buf = b"GET https://h HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = complete(buf);
    assert_eq!((h.path_bytes(buf), text(buf, &h.origin)), (&b"/"[..], ""));

    let buf = b"GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = complete(buf);
    assert_eq!((h.path_bytes(buf), text(buf, &h.origin)), (&b"/"[..], "?x"));

    // A 1.0 client may omit Host; the target still names the authority.
    let buf = b"GET http://[::1]:81/ HTTP/1.0\r\n\r\n";
    assert_eq!(complete(buf).host_bytes(buf), Some(&b"[::1]:81"[..]));
}

#[test]
fn parameters_and_a_query_with_backslashes_stay_where_they_are() {
    let buf = b"GET /a;v=1/b?x=\\..;/ HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = complete(buf);
    assert_eq!(h.path_bytes(buf), b"/a;v=1/b");
    assert_eq!(text(buf, &h.origin), "/a;v=1/b?x=\\..;/");
}

#[test]
fn asterisk_form_with_options() {
    let buf = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = complete(buf);
    assert_eq!((h.path_bytes(buf), text(buf, &h.origin)), (&b"*"[..], "*"));
}

#[test]
fn http10_without_host_is_fine() {
    let buf = b"GET / HTTP/1.0\r\n\r\n";
    let h = complete(buf);
    assert_eq!((h.minor_version, h.host), (0, None));
    // An empty Host is valid (RFC 9112 §3.2) and routes nowhere.
    let buf = b"GET / HTTP/1.1\r\nHost:\r\n\r\n";
    assert_eq!(complete(buf).host_bytes(buf), Some(&b""[..]));
}

#[test]
fn head_is_reused_and_fully_reset() {
    let mut head = RequestHead::default();
    let l = Limits::default();
    let a = b"POST http://h/x HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    parse_request(a, &l, &mut head).expect("valid");
    let cap = head.headers.capacity();
    let b = b"GET /y HTTP/1.0\r\n\r\n";
    parse_request(b, &l, &mut head).expect("valid");
    assert_eq!(head.headers.capacity(), cap);
    assert!(head.headers.is_empty() && !head.absolute_form && !head.expect_continue);
    assert_eq!((head.host.clone(), head.framing), (None, Framing::Empty));
    // A failed parse starts from a clean head too.
    parse_request(a, &l, &mut head).expect("valid");
    assert!(parse_request(b"GET / HTTP/1.1\r\n\r\n", &l, &mut head).is_err());
    assert!(!head.absolute_form && !head.expect_continue && head.host.is_none());
}

/// Every malformation class, each with the reason the client will see.
#[test]
fn malformed_requests_are_rejected_with_their_reason() {
    let h = "Host: h\r\n";
    let cases: Vec<(String, HttpError)> = vec![
        // line endings and bytes
        ("GET / HTTP/1.1\nHost: h\n\n".into(), HttpError::BareCrLf),
        (format!("GET / HTTP/1.1\r\n{h}X: a\nY: b\r\n\r\n"), HttpError::BareCrLf),
        (format!("GET / HTTP/1.1\r\n{h}X: a\rb\r\n\r\n"), HttpError::BareCrLf),
        ("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n".into(), HttpError::BareCrLf),
        (format!("GET / HTTP/1.1\r\n{h}X: a\0b\r\n\r\n"), HttpError::ControlChar),
        (format!("GET /\0 HTTP/1.1\r\n{h}\r\n"), HttpError::ControlChar),
        (format!("GET / HTTP/1.1\r\n{h}X\x01: a\r\n\r\n"), HttpError::ControlChar),
        (format!("GET / HTTP/1.1\r\n{h}X: a\x1b\r\n\r\n"), HttpError::ControlChar),
        (format!("GET / HTTP/1.1\r\n{h}X: a\r\n b\r\n\r\n"), HttpError::ObsFold),
        (format!("GET / HTTP/1.1\r\n {h}\r\n"), HttpError::ObsFold),
        (
            format!("GET / HTTP/1.1\r\n{h}X : a\r\n\r\n"),
            HttpError::SpaceBeforeColon,
        ),
        (
            format!("GET / HTTP/1.1\r\n{h}X\t: a\r\n\r\n"),
            HttpError::SpaceBeforeColon,
        ),
        (format!("GET / HTTP/1.1\r\n{h}NoColon\r\n\r\n"), HttpError::MissingColon),
        (
            format!("GET / HTTP/1.1\r\n{h}X[1]: a\r\n\r\n"),
            HttpError::BadHeaderName,
        ),
        (
            format!("GET / HTTP/1.1\r\n{h}\"x\": a\r\n\r\n"),
            HttpError::BadHeaderName,
        ),
        (format!("GET / HTTP/1.1\r\n{h}: a\r\n\r\n"), HttpError::BadHeaderName),
        // start line
        (format!("G(T / HTTP/1.1\r\n{h}\r\n"), HttpError::BadMethod),
        (format!(" GET / HTTP/1.1\r\n{h}\r\n"), HttpError::BadMethod),
        (format!("GET  / HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET /a\tb HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET /a#frag HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET /caf\u{e9} HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET a/b HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET h:80 HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET http://u@h/ HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET http:/// HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET http:/x HTTP/1.1\r\n{h}\r\n"), HttpError::BadTarget),
        (format!("GET ftp://h/ HTTP/1.1\r\n{h}\r\n"), HttpError::BadScheme),
        (format!("GET ws://h/ HTTP/1.1\r\n{h}\r\n"), HttpError::BadScheme),
        (format!("GET * HTTP/1.1\r\n{h}\r\n"), HttpError::AsteriskForm),
        (format!("GET / HTTP/1.2\r\n{h}\r\n"), HttpError::UnsupportedVersion),
        (format!("GET / HTTP/2.0\r\n{h}\r\n"), HttpError::UnsupportedVersion),
        (format!("GET / HTTP/0.9\r\n{h}\r\n"), HttpError::UnsupportedVersion),
        (format!("GET / http/1.1\r\n{h}\r\n"), HttpError::BadVersion),
        (format!("GET / HTTP/1.10\r\n{h}\r\n"), HttpError::BadVersion),
        (format!("GET / HTTP/1.1 \r\n{h}\r\n"), HttpError::BadVersion),
        (format!("GET /\r\n{h}\r\n"), HttpError::BadVersion),
        (
            format!("CONNECT h:443 HTTP/1.1\r\n{h}\r\n"),
            HttpError::ConnectNotSupported,
        ),
        // host
        ("GET / HTTP/1.1\r\n\r\n".into(), HttpError::MissingHost),
        ("GET http://h/ HTTP/1.1\r\n\r\n".into(), HttpError::MissingHost),
        (
            format!("GET / HTTP/1.1\r\n{h}host: h\r\n\r\n"),
            HttpError::DuplicateHost,
        ),
        (format!("GET / HTTP/1.0\r\n{h}{h}\r\n"), HttpError::DuplicateHost),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n".into(), HttpError::BadHost),
        ("GET / HTTP/1.1\r\nHost: u@h\r\n\r\n".into(), HttpError::BadHost),
        ("GET / HTTP/1.1\r\nHost: h/x\r\n\r\n".into(), HttpError::BadHost),
        ("GET / HTTP/1.1\r\nHost: h, g\r\n\r\n".into(), HttpError::BadHost),
        // framing
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::AmbiguousFraming,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"),
            HttpError::AmbiguousFraming,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            HttpError::DuplicateContentLength,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\n"),
            HttpError::BadContentLength,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length:\r\n\r\n"),
            HttpError::BadContentLength,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\n"),
            HttpError::BadContentLength,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 5a\r\n\r\n"),
            HttpError::BadContentLength,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 99999999999999999999\r\n\r\n"),
            HttpError::BadContentLength,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\n\r\n"),
            HttpError::ChunkedNotFinal,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\n\r\n"),
            HttpError::ChunkedNotFinal,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\n\r\n"),
            HttpError::ChunkedNotFinal,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n"),
            HttpError::UnsupportedTransferCoding,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked, chunked\r\n\r\n"),
            HttpError::DuplicateChunked,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::DuplicateChunked,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding:\r\n\r\n"),
            HttpError::BadTransferEncoding,
        ),
        (
            format!("POST / HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n"),
            HttpError::TransferEncodingHttp10,
        ),
        // expectations
        (
            format!("PUT / HTTP/1.1\r\n{h}Expect: 200-ok\r\n\r\n"),
            HttpError::ExpectationFailed,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(err(input.as_bytes()), want, "{input:?}");
    }
}

#[test]
fn status_codes_for_rejections() {
    let s = |b: &[u8]| err(b).status();
    assert_eq!(s(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(s(b"CONNECT h:1 HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
    assert_eq!(s(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: x\r\n\r\n"), 417);
    assert_eq!(
        s(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: br, chunked\r\n\r\n"),
        501
    );
    assert_eq!(s(b"GET / HTTP/3.0\r\nHost: h\r\n\r\n"), 505);
}

#[test]
fn head_too_large() {
    let l = Limits {
        max_header_bytes: 64,
        max_headers: 100,
    };
    let mut head = RequestHead::default();
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    buf.resize(63, b'a');
    assert_eq!(parse_request(&buf, &l, &mut head), Ok(ParseStatus::Partial));
    buf.push(b'a');
    assert_eq!(parse_request(&buf, &l, &mut head), Err(HttpError::HeadTooLarge));
    // Complete but one byte over.
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    buf.resize(61, b'a');
    buf.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request(&buf, &l, &mut head), Err(HttpError::HeadTooLarge));
    assert_eq!(HttpError::HeadTooLarge.status(), 431);
    // The request line alone over the limit: the target is too long.
    let mut buf = b"GET /".to_vec();
    buf.resize(64, b'a');
    assert_eq!(parse_request(&buf, &l, &mut head), Err(HttpError::UriTooLong));
    assert_eq!(HttpError::UriTooLong.status(), 414);
}

#[test]
fn too_many_headers_including_above_the_ceiling() {
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..300 {
        buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    let mut head = RequestHead::default();
    let big = Limits {
        max_header_bytes: 1 << 20,
        max_headers: 1000,
    };
    assert_eq!(parse_request(&buf, &big, &mut head), Err(HttpError::TooManyHeaders));
    let fits = Limits {
        max_headers: 301,
        ..big
    };
    let capped = parse_request(&buf, &fits, &mut head);
    assert_eq!(capped, Err(HttpError::TooManyHeaders), "301 > ceiling");
    let ok = Limits {
        max_headers: MAX_HEADERS_CEILING,
        ..big
    };
    let buf = [&b"GET / HTTP/1.1\r\nHost: h\r\n"[..], &b"A: b\r\n".repeat(255), b"\r\n"].concat();
    assert!(matches!(
        parse_request(&buf, &ok, &mut head),
        Ok(ParseStatus::Complete(_))
    ));
    assert_eq!(head.headers.len(), 256);
}

/// A head read piece by piece and parsed from where the last call stopped
/// reads as the whole head does, whatever the pieces: valid heads, leading
/// empty lines split mid-CRLF, and malformations arriving late.
#[test]
fn a_head_parsed_as_it_arrives_reads_as_the_whole_head() {
    let heads: [&[u8]; 9] = [
        b"GET /a HTTP/1.1\r\nHost: h\r\nX-Long-Name: some value here\r\n\r\nnext",
        b"\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad\nField: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n Folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nA : 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r",
    ];
    let limits = Limits {
        max_headers: 4,
        ..Limits::default()
    };
    for whole in heads {
        let mut head = RequestHead::default();
        let expected = parse_request(whole, &limits, &mut head);
        let expected_path = head.path_bytes(whole).to_vec();
        for piece in [1, 2, 3, 7] {
            let mut progress = HeadProgress::default();
            let mut head = RequestHead::default();
            let mut got = Ok(ParseStatus::Partial);
            let mut end = 0;
            while end < whole.len() && got == Ok(ParseStatus::Partial) {
                end = (end + piece).min(whole.len());
                got = parse_request_from(&whole[..end], &limits, &mut head, &mut progress);
            }
            let shown = String::from_utf8_lossy(whole);
            assert_eq!(got, expected, "{shown:?} in pieces of {piece}");
            if let Ok(ParseStatus::Complete(_)) = got {
                assert_eq!(head.path_bytes(whole), expected_path, "{shown:?} in pieces of {piece}");
            }
        }
    }
}

#[test]
fn refused_heads_are_named_by_a_well_formed_request_line_only() {
    let named = b"GET /a?b=1 HTTP/1.1\r\nHost: a\x01\r\n\r\n";
    assert_eq!(refused_request_line(named), Some((&b"GET"[..], &b"/a"[..])));
    for line in [
        &b"GET /a HTTP/1.1"[..],    // no CRLF yet (a 414 or 408)
        b"GET  /a HTTP/1.1\r\n",    // two spaces
        b"GET /a\x01 HTTP/1.1\r\n", // control character in the target
        b"G(T /a HTTP/1.1\r\n",     // not a token
        b"GET /a HTTP/2.0\r\n",     // not HTTP/1.x
        b"GET /a HTTP/1.1 x\r\n",   // a fourth part
        b"\r\nGET /a HTTP/1.1\r\n", // empty line first
    ] {
        assert_eq!(refused_request_line(line), None, "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn a_request_line_without_a_version_is_refused_at_its_end() {
    assert_eq!(err(b"GET /x\r\n"), HttpError::BadVersion, "HTTP/0.9: no fields follow");
    assert_eq!(err(b"GET /x\r\n\r\n"), HttpError::BadVersion);
    assert!(matches!(parse(b"GET /x HTTP/1.1\r\n"), Ok((ParseStatus::Partial, _))));
    assert!(
        matches!(parse(b"GET /x"), Ok((ParseStatus::Partial, _))),
        "the line goes on"
    );
}
