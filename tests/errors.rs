//! Every error response the proxy generates itself: status, the
//! `x-ringway-error` reason, a text body, and (for the upstream side) that
//! the failure is reported without hanging the client.

mod common;

use common::*;
use std::time::Duration;

/// The checks every proxy-generated error shares.
fn assert_error(resp: &Response, status: u16, reason: &str) {
    assert_eq!(
        (resp.status, resp.error_reason()),
        (status, Some(reason)),
        "unexpected response: {} {:?} {:?}",
        resp.status,
        resp.headers,
        resp.text()
    );
    assert!(!resp.body.is_empty(), "a proxy error has a text body");
    assert!(
        resp.header("content-type").is_some_and(|v| v.starts_with("text/plain")),
        "the error body is plain text: {:?}",
        resp.headers
    );
}

#[test]
fn no_route_is_404() {
    let up = Upstream::start(Behavior::Echo);
    let config = simple_config(&[&up], "", "").replace("path_prefix = \"/\"", "path_prefix = \"/api/\"");
    let (server, addr) = proxy(&config);
    let refused = get(addr, "e.test", "/other");
    assert_error(&refused, 404, "no-route");
    // Named like any other request, for the client to quote.
    let id = refused.header("x-request-id").expect("request id returned");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(get(addr, "e.test", "/api/x").status, 200);
    assert_eq!(up.requests(), 1);
    stop(server);
}

#[test]
fn connect_failure_is_502() {
    let dead = closed_port();
    let config = config_with(&format!("[ {{ address = \"{dead}\" }} ]"), "", "", "");
    let (server, addr) = proxy(&config);
    assert_error(&get(addr, "e.test", "/"), 502, "connect-failure");
    stop(server);
}

#[test]
fn upstream_closing_without_response_is_502_reset() {
    let up = Upstream::start(Behavior::CloseWithoutResponse);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let resp = get(addr, "e.test", "/");
    assert_error(&resp, 502, "upstream-reset");
    assert!(up.requests() >= 1, "the request did reach the upstream");
    // The request id Ringway made comes back with its error, as with any
    // answer: the one the upstream saw and the access log has.
    let id = resp.header("x-request-id").expect("request id returned");
    assert_eq!(up.last().header("x-request-id"), Some(id));
    stop(server);
}

#[test]
fn upstream_closing_mid_head_is_502_reset() {
    let up = Upstream::start(Behavior::Malformed(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    assert_error(&get(addr, "e.test", "/"), 502, "upstream-reset");
    stop(server);
}

/// Once the head went out, the status cannot change: the client must see the
/// body cut short (connection closed before Content-Length bytes), never a
/// silently truncated "complete" response on a live connection.
#[test]
fn upstream_closing_mid_body_truncates_and_closes() {
    let up = Upstream::start(Behavior::Malformed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten!!".to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: e.test\r\n\r\n");
    let got = client.read_to_close();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the head was already relayed: {text:?}"
    );
    let (_, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(body.len() < 100, "the body is cut short, not padded: {text:?}");
    stop(server);
}

/// Same, with a chunked response whose last chunk never comes.
#[test]
fn upstream_closing_mid_chunked_body_truncates_and_closes() {
    let up = Upstream::start(Behavior::Malformed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: e.test\r\n\r\n");
    let got = client.read_to_close();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the proxy must not invent the last chunk: {text:?}"
    );
    stop(server);
}

#[test]
fn malformed_upstream_responses_are_502_bad_response() {
    let cases: [&[u8]; 5] = [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n",
    ];
    for raw in cases {
        let up = Upstream::start(Behavior::Malformed(raw.to_vec()));
        let (server, addr) = proxy(&simple_config(&[&up], "", ""));
        let resp = get(addr, "e.test", "/");
        assert_eq!(
            (resp.status, resp.error_reason()),
            (502, Some("bad-response")),
            "upstream sent {:?}, client got {} {:?}",
            String::from_utf8_lossy(raw),
            resp.status,
            resp.text()
        );
        stop(server);
    }
}

#[test]
fn empty_cluster_is_503() {
    let config = config_with("[]", "", "", "");
    let (server, addr) = proxy(&config);
    assert_error(&get(addr, "e.test", "/"), 503, "no-healthy-endpoint");
    stop(server);
}

#[test]
fn route_timeout_is_504() {
    let up = Upstream::start(Behavior::Hold);
    let config = config_with(&endpoints(&[&up]), "", "timeout = \"300ms\"", "");
    let (server, addr) = proxy(&config);
    assert_error(&get(addr, "e.test", "/"), 504, "upstream-timeout");
    up.release();
    stop(server);
}

#[test]
fn response_header_timeout_is_504() {
    let up = Upstream::start(Behavior::Hold);
    let (server, addr) = proxy(&simple_config(&[&up], "", "response_header_timeout = \"300ms\""));
    assert_error(&get(addr, "e.test", "/"), 504, "upstream-timeout");
    up.release();
    stop(server);
}

/// A slow (not stuck) upstream within the budget is fine: the timeout is a
/// bound, not a fixed delay.
#[test]
fn upstream_within_the_route_timeout_succeeds() {
    let up = Upstream::start(Behavior::Delay(Duration::from_millis(100)));
    let config = config_with(&endpoints(&[&up]), "", "timeout = \"5s\"", "");
    let (server, addr) = proxy(&config);
    let resp = get(addr, "e.test", "/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"slow");
    stop(server);
}

#[test]
fn stalled_request_head_is_408() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "header_read_timeout = \"300ms\"", ""));
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: e.test\r\n");
    let resp = client.read_response();
    assert_error(&resp, 408, "header-read-timeout");
    client.expect_closed();
    assert_eq!(up.bytes_received(), 0);
    stop(server);
}

#[test]
fn content_length_over_max_body_is_413() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_body_bytes = \"1KiB\"", ""));
    let mut client = Client::connect(addr);
    let body = pattern(0, 2048);
    let mut raw = b"POST / HTTP/1.1\r\nHost: e.test\r\nContent-Length: 2048\r\n\r\n".to_vec();
    raw.extend_from_slice(&body);
    let _ = client.try_send(&raw);
    let resp = client.try_read_response(false).expect("a 413 response");
    assert_error(&resp, 413, "body-too-large");
    client.expect_closed();
    assert_eq!(up.bytes_received(), 0, "a refused body never reaches the upstream");
    // At the limit exactly is allowed.
    let mut raw = b"POST / HTTP/1.1\r\nHost: e.test\r\nContent-Length: 1024\r\n\r\n".to_vec();
    raw.extend_from_slice(&body[..1024]);
    assert_eq!(request(addr, &raw).status, 200);
    stop(server);
}

#[test]
fn chunked_body_over_max_body_is_413() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_body_bytes = \"1KiB\"", ""));
    let mut client = Client::connect(addr);
    let mut raw = b"POST / HTTP/1.1\r\nHost: e.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..4 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&pattern(i * 512, 512));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let _ = client.try_send(&raw);
    let resp = client.try_read_response(false).expect("a 413 response");
    assert_error(&resp, 413, "body-too-large");
    let id = resp.header("x-request-id").expect("the id the access log has");
    assert_eq!(id.len(), 36, "{id}");
    client.expect_closed();
    assert_eq!(up.requests(), 0, "no complete over-limit request reached the upstream");
    // Two 512-byte chunks make exactly 1 KiB: allowed.
    let mut raw = b"POST / HTTP/1.1\r\nHost: e.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..2 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&pattern(i * 512, 512));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(request(addr, &raw).status, 200);
    assert_eq!(up.last().body_len, 1024);
    stop(server);
}

/// A head over the limit is refused before anything goes upstream: 431,
/// or 414 when the request line alone overruns it (the target is too
/// long, RFC 9112 §3, not the header fields).
#[test]
fn head_over_max_header_bytes_is_431_or_414() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_header_bytes = \"1KiB\"", ""));
    let big = "a".repeat(2000);
    for (raw, status, reason) in [
        (
            format!("GET / HTTP/1.1\r\nHost: e.test\r\nX-Big: {big}\r\n\r\n"),
            431,
            "head-too-large",
        ),
        (
            format!("GET /{big} HTTP/1.1\r\nHost: e.test\r\n\r\n"),
            414,
            "uri-too-long",
        ),
    ] {
        let mut client = Client::connect(addr);
        let _ = client.try_send(raw.as_bytes());
        let resp = client.try_read_response(false).expect("an error response");
        assert_error(&resp, status, reason);
        client.expect_closed();
    }
    assert_eq!(up.bytes_received(), 0);
    // A head under the limit passes.
    let raw = format!("GET / HTTP/1.1\r\nHost: e.test\r\nX-Big: {}\r\n\r\n", "a".repeat(500));
    assert_eq!(request(addr, raw.as_bytes()).status, 200);
    stop(server);
}

#[test]
fn too_many_headers_is_431() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: e.test\r\n");
    for i in 0..300 {
        raw.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    raw.push_str("\r\n");
    let mut client = Client::connect(addr);
    let _ = client.try_send(raw.as_bytes());
    let resp = client.try_read_response(false).expect("a 431 response");
    assert_eq!(resp.status, 431, "{:?} {}", resp.error_reason(), resp.text());
    assert!(resp.error_reason().is_some());
    client.expect_closed();
    assert_eq!(up.bytes_received(), 0);
    stop(server);
}

/// A WebSocket handshake carries no body (RFC 6455 §4.1): one that does is
/// refused before it reaches an upstream, whose reading of it could differ.
#[test]
fn websocket_handshake_with_a_body_is_501() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let resp = request(
        addr,
        b"GET /chat HTTP/1.1\r\nHost: e.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_error(&resp, 501, "upgrade-not-supported");
    assert_eq!(up.bytes_received(), 0);
    stop(server);
}

#[test]
fn connect_method_is_501() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let resp = request(addr, b"CONNECT e.test:443 HTTP/1.1\r\nHost: e.test:443\r\n\r\n");
    assert_eq!(resp.status, 501, "{:?} {}", resp.error_reason(), resp.text());
    assert!(resp.error_reason().is_some());
    assert_eq!(up.bytes_received(), 0);
    stop(server);
}

#[test]
fn unknown_transfer_coding_is_501() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let _ = client.try_send(
        b"POST / HTTP/1.1\r\nHost: e.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let resp = client.try_read_response(false).expect("a 501 response");
    assert_eq!(resp.status, 501, "{:?} {}", resp.error_reason(), resp.text());
    assert!(resp.error_reason().is_some());
    client.expect_closed();
    assert_eq!(up.bytes_received(), 0);
    stop(server);
}

/// An error the proxy answers without closing leaves the connection usable.
#[test]
fn upstream_error_keeps_the_client_connection_usable() {
    let dead = closed_port();
    let good = Upstream::start(Behavior::Echo);
    let config = format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
  [[listener.route]]
  match = {{ path_prefix = \"/dead\" }}
  cluster = \"dead\"
  [[listener.route]]
  match = {{ path_prefix = \"/\" }}
  cluster = \"good\"

[[cluster]]
name = \"dead\"
endpoints = [ {{ address = \"{dead}\" }} ]

[[cluster]]
name = \"good\"
endpoints = {}
",
        endpoints(&[&good])
    );
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    let resp = client.get("e.test", "/dead");
    assert_error(&resp, 502, "connect-failure");
    if !resp.announces_close() {
        assert_eq!(
            client.get("e.test", "/ok").status,
            200,
            "connection still in sync after a 502"
        );
    }
    stop(server);
}

/// A proxy-generated error answering HEAD has no body (RFC 9110 §9.3.2);
/// on a kept-alive connection a body would be read as the next response.
#[test]
fn error_response_to_head_has_no_body() {
    let up = Upstream::start(Behavior::Echo);
    let config = simple_config(&[&up], "", "").replace("path_prefix = \"/\"", "path_prefix = \"/api/\"");
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    client.send(b"HEAD /nowhere HTTP/1.1\r\nHost: e.test\r\n\r\n");
    let resp = client.try_read_response(true).expect("a response to HEAD");
    assert_eq!((resp.status, resp.error_reason()), (404, Some("no-route")));
    if resp.announces_close() {
        // Closing is also a way to stay correct; nothing may follow.
        assert!(client.read_to_close().is_empty(), "bytes after a HEAD response");
    } else {
        let next = client.get("e.test", "/api/x");
        assert_eq!(next.status, 200, "the connection is in sync after the HEAD error");
        assert_eq!(Echoed::parse(&next.body).request_line, "GET /api/x HTTP/1.1");
    }
    stop(server);
}
