//! Malformed requests: each class must be answered 400 by the proxy itself
//! (with `x-ringway-error`), the connection closed, and nothing of it may
//! reach the upstream. Every variant is sent in one write on its own
//! connection; afterwards a well-formed sentinel request proves the upstream
//! was reachable all along and saw only the sentinel.

mod common;

use common::*;
use std::net::SocketAddr;

struct Harness {
    up: Upstream,
    server: ringway::worker::Server,
    addr: SocketAddr,
}

impl Harness {
    fn new() -> Harness {
        let up = Upstream::start(Behavior::Echo);
        let (server, addr) = proxy(&simple_config(&[&up], "", ""));
        Harness { up, server, addr }
    }

    /// Send `raw` on a fresh connection; the proxy must answer `status` with
    /// a reason header, then close.
    fn rejects(&self, raw: &[u8], status: u16) -> Response {
        let mut client = Client::connect(self.addr);
        // The proxy may answer and close before reading all of it.
        let _ = client.try_send(raw);
        let resp = client
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
        assert_eq!(
            resp.status,
            status,
            "{:?} → {} {:?} {}",
            String::from_utf8_lossy(raw),
            resp.status,
            resp.error_reason(),
            resp.text()
        );
        let reason = resp.error_reason().unwrap_or_default();
        assert!(
            !reason.is_empty(),
            "{:?}: a proxy-generated {status} carries x-ringway-error: {:?}",
            String::from_utf8_lossy(raw),
            resp.headers
        );
        assert!(!resp.body.is_empty(), "a proxy error has a text body");
        client.expect_closed();
        resp
    }

    /// The request never reached the upstream: after a valid sentinel
    /// request, the upstream has seen exactly the sentinel's bytes.
    fn upstream_saw_nothing(self) {
        let resp = get(self.addr, "m.test", "/sentinel");
        assert_eq!(resp.status, 200, "the sentinel must pass: {}", resp.text());
        self.up.wait_requests(1);
        let seen = self.up.received();
        let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/sentinel"],
            "the upstream received requests it should not have"
        );
        assert_eq!(
            self.up.bytes_received(),
            seen[0].raw_head.len() as u64,
            "bytes beyond the sentinel reached the upstream"
        );
        stop(self.server);
    }

    /// For body-level errors the head may legitimately have been forwarded
    /// already when the bad body bytes arrive; no complete request may have.
    fn upstream_got_no_complete_request(self) {
        let resp = get(self.addr, "m.test", "/sentinel");
        assert_eq!(resp.status, 200, "the sentinel must pass: {}", resp.text());
        self.up.wait_requests(1);
        let paths: Vec<String> = self.up.received().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/sentinel"], "a malformed body was forwarded as a request");
        stop(self.server);
    }
}

/// Each of `variants` is rejected with 400 and never forwarded.
fn head_rejected(variants: &[&[u8]]) {
    let h = Harness::new();
    for raw in variants {
        h.rejects(raw, 400);
    }
    h.upstream_saw_nothing();
}

fn body_rejected(variants: &[&[u8]]) {
    let h = Harness::new();
    for raw in variants {
        h.rejects(raw, 400);
    }
    h.upstream_got_no_complete_request();
}

/// Control: the baseline request used below is accepted and forwarded, so
/// each rejection is due to the single defect introduced.
#[test]
fn baseline_requests_are_accepted() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: 1\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: m.test\r\n\r\n",
    ] {
        let resp = request(addr, raw);
        assert_eq!(resp.status, 200, "{:?}: {}", String::from_utf8_lossy(raw), resp.text());
    }
    assert_eq!(up.requests(), 4);
    stop(server);
}

/// An HTTP/0.9 request line (no version) is refused as it ends, without
/// waiting for fields that will never come.
#[test]
fn a_request_line_without_a_version() {
    head_rejected(&[b"GET /x\r\n", b"GET /x\r\n\r\n"]);
}

#[test]
fn content_length_with_transfer_encoding() {
    head_rejected(&[
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]);
}

#[test]
fn duplicate_content_length_even_equal() {
    head_rejected(&[
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ]);
}

#[test]
fn invalid_content_length_values() {
    head_rejected(&[
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 12a\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: -1\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: \r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 1,1\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
    ]);
}

#[test]
fn transfer_encoding_not_ending_in_chunked() {
    head_rejected(&[
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]);
}

#[test]
fn bad_chunk_sizes() {
    body_rejected(&[
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ]);
}

#[test]
fn obs_fold() {
    head_rejected(&[
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: 1\r\n\tfolded\r\n\r\n",
    ]);
}

#[test]
fn bare_cr_in_header() {
    head_rejected(&[
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: ab\r\r\n\r\n",
    ]);
}

#[test]
fn bare_lf_line_endings_in_head() {
    head_rejected(&[
        b"GET / HTTP/1.1\nHost: m.test\n\n",
        b"GET / HTTP/1.1\r\nHost: m.test\nX-A: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: 1\n\r\n",
    ]);
}

#[test]
fn bare_lf_in_chunked_framing() {
    body_rejected(&[
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n",
    ]);
}

#[test]
fn nul_in_header_value() {
    head_rejected(&[b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A: a\0b\r\n\r\n"]);
}

#[test]
fn whitespace_before_colon() {
    head_rejected(&[
        b"GET / HTTP/1.1\r\nHost : m.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A : 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A\t: 1\r\n\r\n",
    ]);
}

#[test]
fn header_line_without_colon() {
    head_rejected(&[b"GET / HTTP/1.1\r\nHost: m.test\r\nX-A 1\r\n\r\n"]);
}

#[test]
fn invalid_header_name_characters() {
    head_rejected(&[
        b"GET / HTTP/1.1\r\nHo(st: m.test\r\nHost: m.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nX\"A: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\n: empty-name\r\n\r\n",
    ]);
}

#[test]
fn http11_without_host() {
    head_rejected(&[b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"]);
}

#[test]
fn two_host_headers() {
    head_rejected(&[
        b"GET / HTTP/1.1\r\nHost: m.test\r\nHost: other.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nHost: m.test\r\n\r\n",
    ]);
}

#[test]
fn http10_with_two_host_headers() {
    head_rejected(&[b"GET / HTTP/1.0\r\nHost: m.test\r\nHost: other.test\r\n\r\n"]);
}

/// Malformed requests after a good one on a keep-alive connection: the good
/// one is served, the bad one rejected and the connection closed.
#[test]
fn malformed_request_after_a_good_one_on_the_same_connection() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("m.test", "/good").status, 200);
    let _ = client.try_send(b"POST /bad HTTP/1.1\r\nHost: m.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
    let resp = client.read_response();
    assert_eq!(resp.status, 400);
    assert!(resp.error_reason().is_some());
    client.expect_closed();
    let paths: Vec<String> = up.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/good"]);
    stop(server);
}

/// Smuggling shape: a request hidden in a body must not be forwarded as a
/// second request when the framing is ambiguous.
#[test]
fn smuggled_request_behind_ambiguous_framing_is_not_forwarded() {
    let h = Harness::new();
    h.rejects(
        b"POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: m.test\r\n\r\n",
        400,
    );
    h.upstream_saw_nothing();
}
