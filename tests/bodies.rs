//! Message bodies: chunked both ways, re-framing for HTTP/1.0 clients,
//! 10 MiB bodies in both directions kept byte-exact, Expect: 100-continue,
//! and flat proxy memory across large transfers (measured on the binary).

mod common;

use common::*;
use std::io::Write;

const BIG: u64 = 10 << 20;

#[test]
fn chunked_request_body_is_forwarded_chunked_and_intact() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.request(
        b"POST /up HTTP/1.1\r\nHost: b.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let received = up.last();
    assert_eq!(received.body, b"hello 0123456789");
    assert_eq!(
        received.body_kind,
        BodyKind::Chunked,
        "a chunked body stays chunked upstream"
    );
    assert!(received.header("content-length").is_none());
    // The next request on the connection is still in sync.
    assert_eq!(client.get("b.test", "/after").status, 200);
    stop(server);
}

#[test]
fn chunked_request_body_with_trailers() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.request(
        b"POST /t HTTP/1.1\r\nHost: b.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\nx-checksum: 1\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().body, b"abc");
    assert_eq!(client.get("b.test", "/after").status, 200, "trailers fully consumed");
    stop(server);
}

#[test]
fn chunked_response_reaches_http11_client_intact() {
    let parts: Vec<Vec<u8>> = vec![
        b"hello ".to_vec(),
        b"chunked ".to_vec(),
        pattern(0, 40_000),
        b"!".to_vec(),
    ];
    let expected = parts.concat();
    let up = Upstream::start(Behavior::ChunkedResponse(parts));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for _ in 0..2 {
        let resp = client.get("b.test", "/");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body_kind, BodyKind::Chunked);
        assert_eq!(resp.body, expected);
    }
    stop(server);
}

#[test]
fn chunked_response_is_dechunked_for_http10_client_and_closed() {
    let up = Upstream::start(Behavior::ChunkedResponse(vec![b"hello ".to_vec(), b"world".to_vec()]));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.request(b"GET / HTTP/1.0\r\nHost: b.test\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("transfer-encoding").is_none(),
        "HTTP/1.0 has no chunked coding: {:?}",
        resp.headers
    );
    assert_eq!(resp.body, b"hello world");
    // Without a length, the end of the body is the close (even though
    // keep-alive was asked for); reading it already needed the close.
    assert_eq!(resp.body_kind, BodyKind::UntilClose);
    stop(server);
}

#[test]
fn large_content_length_request_body_streams_intact() {
    let up = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"got it".to_vec(),
        headers: vec![],
    });
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(format!("PUT /big HTTP/1.1\r\nHost: b.test\r\nContent-Length: {BIG}\r\n\r\n").as_bytes());
    send_pattern(&mut client, BIG, false);
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    let received = up.last();
    assert_eq!(received.body_len, BIG);
    assert_eq!(received.body_fnv, pattern_fnv(BIG), "request body corrupted in transit");
    stop(server);
}

#[test]
fn large_chunked_request_body_streams_intact() {
    let up = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"got it".to_vec(),
        headers: vec![],
    });
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(b"POST /big HTTP/1.1\r\nHost: b.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    send_pattern(&mut client, BIG, true);
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    let received = up.last();
    assert_eq!(received.body_len, BIG);
    assert_eq!(received.body_fnv, pattern_fnv(BIG), "request body corrupted in transit");
    stop(server);
}

#[test]
fn large_response_body_streams_intact() {
    let up = Upstream::start(Behavior::BigResponse(BIG));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.get("b.test", "/big");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len() as u64, BIG);
    assert_eq!(
        Fnv::of(&resp.body),
        pattern_fnv(BIG),
        "response body corrupted in transit"
    );
    // And the connection is reusable afterwards.
    let resp = client.get("b.test", "/big-again");
    assert_eq!(Fnv::of(&resp.body), pattern_fnv(BIG));
    stop(server);
}

/// POST 4 MiB to an echo upstream through `addr` and check every byte of
/// the echo; returns the client, connection still open.
fn echo_4_mib(addr: std::net::SocketAddr) -> Client {
    let len: u64 = 4 << 20;
    let mut client = Client::connect(addr);
    client.send(format!("POST /echo HTTP/1.1\r\nHost: b.test\r\nContent-Length: {len}\r\n\r\n").as_bytes());
    send_pattern(&mut client, len, false);
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    let echoed = Echoed::parse(&resp.body);
    assert_eq!(echoed.body.len() as u64, len);
    assert_eq!(Fnv::of(&echoed.body), pattern_fnv(len));
    client
}

#[test]
fn large_body_echoed_both_ways() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    echo_4_mib(addr);
    stop(server);
}

/// The same through an L4 listener: the relay waits for room whenever a
/// socket is full and moves every byte, in order, both ways.
#[test]
fn large_body_echoed_both_ways_through_a_tcp_listener() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&tcp_config(&endpoints(&[&up]), "", ""));
    // Closing ends the relay; a drain would otherwise wait for it.
    drop(echo_4_mib(addr));
    up.wait_closed(1);
    stop(server);
}

fn send_pattern(client: &mut Client, len: u64, chunked: bool) {
    let mut at = 0;
    let mut stream = client.stream();
    while at < len {
        let n = (len - at).min(64 * 1024);
        let block = pattern(at, n as usize);
        if chunked {
            stream.write_all(format!("{n:x}\r\n").as_bytes()).expect("chunk size");
            stream.write_all(&block).expect("chunk data");
            stream.write_all(b"\r\n").expect("chunk end");
        } else {
            stream.write_all(&block).expect("body");
        }
        at += n;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").expect("last chunk");
    }
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(b"POST /e HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    // Nothing of the body is sent until the interim response arrives.
    let interim = client.read_response();
    assert_eq!(interim.status, 100, "expected 100 Continue first, got {interim:?}");
    assert_eq!(interim.version, 1);
    client.send(b"hello");
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    let received = up.last();
    assert_eq!(received.body, b"hello");
    assert!(
        received.header("expect").is_none(),
        "Expect is stripped: {:?}",
        received.headers
    );
    // The exchange left the connection in sync.
    assert_eq!(client.get("b.test", "/after").status, 200);
    stop(server);
}

#[test]
fn expect_100_continue_with_body_already_sent() {
    // A client that does not wait for 100 must work too, and must not find a
    // stray interim response in front of the next one.
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(b"POST /e HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello");
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().body, b"hello");
    let next = client.get("b.test", "/after");
    assert_eq!(next.status, 200);
    assert_eq!(Echoed::parse(&next.body).request_line, "GET /after HTTP/1.1");
    stop(server);
}

/// Allowed growth of the proxy's RSS: well under one body, so that holding
/// even a single 10 MiB body in memory fails (pages a buffered body touches
/// count in full), while buffer pools and allocator slack pass.
const MAX_GROWTH_KIB: u64 = 4 * 1024;

/// Peak RSS (VmHWM) of the proxy process across 10 MiB transfers in both
/// directions must stay well below the body size: bodies are streamed, not
/// buffered.
#[test]
fn proxy_memory_stays_flat_across_large_transfers() {
    let sink = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"stored".to_vec(),
        headers: vec![],
    });
    let source = Upstream::start(Behavior::BigResponse(BIG));
    let config = format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
  [[listener.route]]
  match = {{ path_prefix = \"/up\" }}
  cluster = \"sink\"
  [[listener.route]]
  match = {{ path_prefix = \"/down\" }}
  cluster = \"source\"

[[cluster]]
name = \"sink\"
endpoints = {}

[[cluster]]
name = \"source\"
endpoints = {}
",
        endpoints(&[&sink]),
        endpoints(&[&source])
    );
    let proxy = RunningBinary::start(&config);
    let addr = proxy.addr;

    // Warm up every path once with a small transfer so pools and buffers exist.
    let mut client = Client::connect(addr);
    client.send(b"POST /up HTTP/1.1\r\nHost: m.test\r\nContent-Length: 70000\r\n\r\n");
    send_pattern(&mut client, 70_000, false);
    assert_eq!(client.read_final_response().status, 200);
    client.send(b"POST /up HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    send_pattern(&mut client, 70_000, true);
    assert_eq!(client.read_final_response().status, 200);
    let baseline = hwm_kib(proxy.pid());
    let rss_before = proxy.rss_kib();

    for _ in 0..2 {
        client.send(format!("POST /up HTTP/1.1\r\nHost: m.test\r\nContent-Length: {BIG}\r\n\r\n").as_bytes());
        send_pattern(&mut client, BIG, false);
        assert_eq!(client.read_final_response().status, 200);
        client.send(b"POST /up HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n");
        send_pattern(&mut client, BIG, true);
        assert_eq!(client.read_final_response().status, 200);
        let resp = client.get("m.test", "/down");
        assert_eq!(resp.body.len() as u64, BIG);
        assert_eq!(Fnv::of(&resp.body), pattern_fnv(BIG));
    }
    assert_eq!(sink.last().body_fnv, pattern_fnv(BIG));

    let peak_growth = hwm_kib(proxy.pid()).saturating_sub(baseline);
    let rss_growth = proxy.rss_kib().saturating_sub(rss_before);
    assert!(
        peak_growth < MAX_GROWTH_KIB,
        "peak RSS grew by {peak_growth} KiB over 10 MiB transfers: bodies are being buffered"
    );
    assert!(rss_growth < MAX_GROWTH_KIB, "RSS grew by {rss_growth} KiB and stayed");
}

/// Peak resident set size in KiB, from /proc/PID/status.
fn hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value")
}

#[test]
fn head_response_has_no_body_and_keeps_the_connection_in_sync() {
    let up = Upstream::start(Behavior::BigResponse(1000));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(b"HEAD /h HTTP/1.1\r\nHost: b.test\r\n\r\n");
    let head = client.try_read_response(true).expect("HEAD response");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some("1000"),
        "HEAD keeps the announced length"
    );
    let resp = client.get("b.test", "/after");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, pattern(0, 1000), "no stray bytes between the two responses");
    stop(server);
}

#[test]
fn not_modified_with_content_length_has_no_body() {
    let up = Upstream::start(Behavior::Raw(
        b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n".to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client.get_with("b.test", "/", &["If-None-Match: \"v1\""]);
        assert_eq!(resp.status, 304, "request {i}");
        assert!(resp.body.is_empty());
    }
    assert_eq!(up.connections(), 1, "the upstream connection stayed usable");
    stop(server);
}

#[test]
fn no_content_response_keeps_the_connection_in_sync() {
    let up = Upstream::start(Behavior::Raw(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client.get("b.test", "/");
        assert_eq!(resp.status, 204, "request {i}");
        assert_eq!(resp.header("x-a"), Some("1"));
    }
    stop(server);
}

/// A response delimited by the upstream's close reaches the client whole,
/// however the proxy frames it.
#[test]
fn close_delimited_upstream_response_is_relayed_whole() {
    let mut raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n".to_vec();
    raw.extend_from_slice(&pattern(0, 100_000));
    let up = Upstream::start(Behavior::Malformed(raw));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let resp = get(addr, "b.test", "/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 100_000);
    assert_eq!(resp.body, pattern(0, 100_000));
    stop(server);
}

#[test]
fn interim_upstream_responses_do_not_replace_the_final_one() {
    let up = Upstream::start(Behavior::Raw(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
            .to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..2 {
        let resp = client.get("b.test", "/");
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"final"[..]), "request {i}");
    }
    stop(server);
}

/// Interim answers reach an HTTP/1.1 client as they come (103 Early Hints
/// with its links), but for 100 Continue, which Ringway answers itself;
/// an HTTP/1.0 client gets none (RFC 9110 §15.2).
#[test]
fn interim_answers_are_forwarded_to_http11_clients() {
    use std::io::Read;
    let up = Upstream::start(Behavior::Raw(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
            .to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    for (version, forwarded) in [("1.1", true), ("1.0", false)] {
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        client
            .write_all(format!("GET / HTTP/{version}\r\nHost: b.test\r\nConnection: close\r\n\r\n").as_bytes())
            .expect("request");
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("100 Continue"), "{text}");
        assert!(text.ends_with("\r\n\r\nfinal"), "{text}");
        match forwarded {
            true => {
                let (interim, last) = text.split_once("\r\n\r\n").expect("two heads");
                assert!(interim.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{text}");
                assert!(interim.contains("\r\nLink: </a.css>; rel=preload"), "{text}");
                assert!(last.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            }
            false => assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}"),
        }
    }
    stop(server);
}

/// An upstream that floods interim answers is cut off past a head's worth
/// of them (64 KiB, and more as the wait goes on) and answered 502, rather
/// than holding the try to its timeout (spinning through them for an
/// HTTP/1.0 client, which gets none).
#[test]
fn a_flood_of_interim_answers_is_a_bad_response() {
    let interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n";
    let final_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal";
    let within = interim.repeat(60 * 1024 / interim.len());
    let up = Upstream::start(Behavior::Raw([&within[..], final_answer].concat()));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    assert_eq!(get(addr, "b.test", "/").status, 200, "60 KiB of interim answers pass");
    stop(server);
    let over = interim.repeat(66 * 1024 / interim.len());
    let up = Upstream::start(Behavior::Raw([&over[..], final_answer].concat()));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    for version in ["1.0", "1.1"] {
        let mut client = Client::connect(addr);
        let resp = client.request(format!("GET / HTTP/{version}\r\nHost: b.test\r\n\r\n").as_bytes());
        assert_eq!(
            (resp.status, resp.error_reason()),
            (502, Some("bad-response")),
            "HTTP/{version}"
        );
    }
    stop(server);
}

/// A body the proxy will refuse is not invited with 100 Continue.
#[test]
fn expect_100_continue_over_the_body_limit_gets_413_not_100() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_body_bytes = \"1KiB\"", ""));
    let mut client = Client::connect(addr);
    client.send(b"POST / HTTP/1.1\r\nHost: b.test\r\nContent-Length: 2048\r\nExpect: 100-continue\r\n\r\n");
    let resp = client.read_response();
    assert_eq!(resp.status, 413, "got {} {:?}", resp.status, resp.error_reason());
    assert_eq!(resp.error_reason(), Some("body-too-large"));
    client.expect_closed();
    assert_eq!(up.bytes_received(), 0);
    stop(server);
}

/// No route: answered at once, without inviting the body.
#[test]
fn expect_100_continue_without_a_route_gets_404_not_100() {
    let up = Upstream::start(Behavior::Echo);
    let config = config_with(&endpoints(&[&up]), "", "", "").replace("path_prefix = \"/\"", "path_prefix = \"/api/\"");
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    client.send(b"POST /other HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let resp = client.read_response();
    assert_eq!((resp.status, resp.error_reason()), (404, Some("no-route")));
    stop(server);
}

#[test]
fn chunked_response_with_extensions_and_trailers_keeps_sync() {
    let up = Upstream::start(Behavior::Raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
            .to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client.get("b.test", "/");
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (200, &b"hello world"[..]),
            "request {i}"
        );
    }
    assert_eq!(up.connections(), 1, "the upstream connection stayed in sync");
    stop(server);
}

/// Transfer coding names are case-insensitive (RFC 9112 §7).
#[test]
fn transfer_encoding_name_is_case_insensitive() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let resp = request(
        addr,
        b"POST / HTTP/1.1\r\nHost: b.test\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(up.last().body, b"hello");
    stop(server);
}

/// `Content-Length = 1*DIGIT`: leading zeros are valid.
#[test]
fn content_length_with_leading_zeros_is_valid() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let resp = request(
        addr,
        b"POST / HTTP/1.1\r\nHost: b.test\r\nContent-Length: 005\r\n\r\nhello",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(up.last().body, b"hello");
    stop(server);
}

/// A request refused at its head (over the body limit) while its body keeps
/// coming: the 413 reaches the client whole each time, and the client's
/// writes end without a reset, because the proxy reads and drops what
/// still arrives, for a while, before it closes, rather than closing on
/// unread bytes (which resets the connection under its own answer).
#[test]
fn an_answer_given_before_the_body_is_not_lost_to_a_reset() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_body_bytes = \"1KiB\"", ""));
    const BODY: usize = 8 << 20;
    for attempt in 0..3 {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        let mut writer = stream.try_clone().expect("clone");
        let pusher = std::thread::spawn(move || -> std::io::Result<()> {
            writer.write_all(
                format!("PUT /upload HTTP/1.1\r\nHost: b.test\r\nContent-Length: {BODY}\r\n\r\n").as_bytes(),
            )?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..BODY / chunk.len() {
                writer.write_all(&chunk)?;
            }
            writer.shutdown(std::net::Shutdown::Write)
        });
        let mut wire = Wire::new(stream);
        let resp = wire
            .read_response(false)
            .unwrap_or_else(|e| panic!("attempt {attempt}: no 413: {e}"));
        assert_eq!((resp.status, resp.error_reason()), (413, Some("body-too-large")));
        let pushed = pusher.join().expect("writer thread");
        assert!(pushed.is_ok(), "attempt {attempt}: the body was cut: {pushed:?}");
    }
    assert_eq!(up.requests(), 0);
    stop(server);
}

/// Malformed chunks that arrive with the head are found before anything
/// goes to the client: it gets a 502, not a connection closed on it.
#[test]
fn malformed_chunks_behind_the_head_get_a_502() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    ] {
        let up = Upstream::start(Behavior::Malformed(raw.to_vec()));
        let (server, addr) = proxy(&simple_config(&[&up], "", ""));
        let resp = get(addr, "b.test", "/");
        assert_eq!(
            (resp.status, resp.error_reason()),
            (502, Some("bad-response")),
            "{}",
            String::from_utf8_lossy(raw)
        );
        stop(server);
    }
}

/// An answer cut short after it began ends in a reset, not a FIN: to a
/// client reading a body delimited by the close, a FIN would say "whole".
#[test]
fn a_cut_answer_ends_in_a_reset() {
    use std::io::Read;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let served = std::thread::spawn(move || {
        let (mut tcp, _) = upstream.accept().expect("accept");
        read_request_head(&mut tcp);
        tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nhello").expect("answer");
        // Reset, mid-body: the body was to end with the close.
        socket2::SockRef::from(&tcp)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("linger");
    });
    let (server, addr) = proxy(&config_with(&format!("[ {{ address = \"{up_addr}\" }} ]"), "", "", ""));
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n")
        .expect("request");
    let mut got = Vec::new();
    let ended = client.read_to_end(&mut got);
    served.join().expect("upstream");
    assert!(
        matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{ended:?} after {:?}",
        String::from_utf8_lossy(&got)
    );
    stop(server);
}

/// Starts an upstream for the early-answer tests: its first connection
/// gets `first` (on the head and the body it reads), and with `next` a
/// second one a 200 "next" to a GET. The returned sender lets the first
/// connection go.
fn early_answer_upstream(
    first: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
    next: bool,
) -> (
    std::net::SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = upstream.local_addr().expect("addr");
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let served = std::thread::spawn(move || {
        let (mut tcp, _) = upstream.accept().expect("accept");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        read_request_head(&mut tcp);
        first(&mut tcp);
        // Neither reading nor closing until the test is done.
        let _ = done_rx.recv_timeout(IO_TIMEOUT * 3);
        drop(tcp);
        if !next {
            return;
        }
        if let Ok((mut next, _)) = upstream.accept() {
            read_request_head(&mut next);
            let _ = next.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
        }
    });
    (addr, done_tx, served)
}

/// A proxy to `upstream` whose route allows 60 s: an answer the client
/// reads within IO_TIMEOUT did not wait for the route's timeout.
fn patient_proxy(upstream: std::net::SocketAddr) -> (ringway::worker::Server, std::net::SocketAddr) {
    let endpoints = format!("[ {{ address = \"{upstream}\" }} ]");
    proxy(&config_with(&endpoints, "", "timeout = \"60s\"", ""))
}

/// A chunked upload whose end never comes: what the upstream answers
/// meanwhile is answered while the body streams.
const OPEN_UPLOAD: &[u8] = b"POST /upload HTTP/1.1\r\nHost: b.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n";

/// Sends a POST of `len` bytes through `client` from another thread.
fn upload(client: &mut Client, len: usize) -> std::thread::JoinHandle<()> {
    client.send(format!("POST /upload HTTP/1.1\r\nHost: b.test\r\nContent-Length: {len}\r\n\r\n").as_bytes());
    let mut writer = client.stream().try_clone().expect("clone");
    std::thread::spawn(move || {
        let chunk = vec![b'b'; 1 << 16];
        for _ in 0..len / chunk.len() {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    })
}

const UPLOAD: usize = 20 << 20; // well past what the sockets buffer

/// An upstream that refuses the body with an early answer and then
/// neither reads nor closes (as some servers do with a 413): its answer
/// reaches the client at once, not after the route's timeout behind a
/// body it will never take; and as the body stopped part-way, neither
/// connection takes another request.
#[test]
fn an_early_refusal_is_not_kept_waiting_behind_the_body() {
    let (up_addr, done, served) = early_answer_upstream(
        |tcp| {
            // Let the body back up first, so that a write of it is in flight.
            std::thread::sleep(std::time::Duration::from_millis(300));
            tcp.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n\r\nno")
                .expect("answer");
        },
        true,
    );
    let (server, addr) = patient_proxy(up_addr);
    let mut client = Client::connect(addr);
    let sending = upload(&mut client, UPLOAD);
    // Read within IO_TIMEOUT, well inside the route's 60 s.
    let resp = client.read_final_response();
    assert_eq!((resp.status, resp.body.as_slice()), (413, &b"no"[..]));
    assert_eq!(resp.header("connection"), Some("close"));
    // The next request goes on a new upstream connection: the first one,
    // its body cut, is not pooled. A POST, which is not replayed: a reset
    // on a reused connection would show as a 502, not be retried away.
    let _ = done.send(());
    let next = request(
        addr,
        b"POST /next HTTP/1.1\r\nHost: b.test\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(next.text(), "next");
    served.join().expect("upstream");
    stop(server);
    let _ = sending.join();
}

/// An upstream that refuses a body with 413 after it has all arrived, and
/// keeps the connection open without reading it: the body still waits in
/// the connection (and would be read as the next request, were it one).
/// The connection is not pooled, so the next request goes on a new one
/// rather than waiting behind that body until the route's timeout.
#[test]
fn a_connection_whose_body_was_refused_with_413_is_not_reused() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let served = std::thread::spawn(move || {
        let (mut refused, _) = upstream.accept().expect("accept");
        refused.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        read_request_head(&mut refused);
        refused
            .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\n\r\nno")
            .expect("answer");
        // The refused connection stays open, its body unread.
        let (mut next, _) = upstream.accept().expect("the next request's connection");
        next.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        read_request_head(&mut next);
        next.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
            .expect("answer");
        drop(refused);
    });
    let (server, addr) = patient_proxy(up_addr);
    let body = "x".repeat(1000);
    let refused = request(
        addr,
        format!(
            "POST /upload HTTP/1.1\r\nHost: b.test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!((refused.status, refused.text()), (413, "no".to_string()));
    let next = request(addr, b"GET /next HTTP/1.1\r\nHost: b.test\r\n\r\n");
    assert_eq!((next.status, next.text()), (200, "next".to_string()));
    served.join().expect("upstream");
    stop(server);
}

/// An upstream that answers 200 at once and streams its answer while it
/// reads the body (an upload with progress), or sends interim answers
/// first: the whole body still reaches it, and the 103 the client.
#[test]
fn an_early_success_or_interim_answer_gets_the_whole_body() {
    use std::io::Read;
    for interim in [false, true] {
        let (up_addr, done, served) = early_answer_upstream(
            move |tcp| {
                let first: &[u8] = match interim {
                    true => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                    false => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                };
                tcp.write_all(first).expect("early answer");
                let mut body = vec![0; UPLOAD];
                tcp.read_exact(&mut body).expect("the whole body");
                let last: &[u8] = match interim {
                    true => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nall",
                    false => b"3\r\nall\r\n0\r\n\r\n",
                };
                tcp.write_all(last).expect("the rest of the answer");
            },
            false,
        );
        let (server, addr) = patient_proxy(up_addr);
        let mut client = Client::connect(addr);
        let sending = upload(&mut client, UPLOAD);
        if interim {
            // Read while the body streamed: forwarded, if only once it is sent.
            let hints = client.read_response();
            assert_eq!((hints.status, hints.header("link")), (103, Some("</a.css>")));
        }
        let resp = client.read_final_response();
        let expected: &[u8] = if interim { b"all" } else { b"firstall" };
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (200, expected),
            "interim: {interim}"
        );
        let _ = done.send(());
        served.join().expect("upstream");
        stop(server);
        let _ = sending.join();
    }
}

/// An upstream that answers 200 at once and echoes the body back as it
/// reads it, past what the sockets buffer both ways: the answer reaches
/// the client while the body still streams, or neither side could move
/// until the route's timeout.
#[test]
fn a_full_duplex_answer_streams_while_the_body_does() {
    use std::io::Read;
    const ECHOED: usize = 64 << 20;
    let (up_addr, done, served) = early_answer_upstream(
        |tcp| {
            tcp.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .expect("head");
            let mut buf = vec![0; 1 << 16];
            let mut left = ECHOED;
            while left > 0 {
                let want = left.min(buf.len());
                let n = tcp.read(&mut buf[..want]).expect("body");
                assert!(n > 0, "the body ended {left} bytes short");
                left -= n;
                tcp.write_all(format!("{n:x}\r\n").as_bytes()).expect("chunk");
                tcp.write_all(&buf[..n]).expect("chunk");
                tcp.write_all(b"\r\n").expect("chunk");
            }
            tcp.write_all(b"0\r\n\r\n").expect("last chunk");
        },
        false,
    );
    let (server, addr) = patient_proxy(up_addr);
    let mut client = Client::connect(addr);
    let sending = upload(&mut client, ECHOED);
    // Read within IO_TIMEOUT, well inside the route's 60 s.
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), ECHOED);
    assert!(resp.body.iter().all(|&b| b == b'b'), "the echo came back changed");
    // Answered before its body ended, the connection closes after it.
    assert_eq!(resp.header("connection"), Some("close"));
    client.expect_closed();
    let _ = done.send(());
    served.join().expect("upstream");
    stop(server);
    let _ = sending.join();
}

/// An upstream that answers 200 whole before it reads the body and then
/// neither reads nor closes: the answer reaches the client at once though
/// the client has not finished its body (a chunked one it keeps open), and
/// neither connection takes another request.
#[test]
fn a_whole_success_answer_before_the_body_ends_goes_out_at_once() {
    let (up_addr, done, served) = early_answer_upstream(
        |tcp| {
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("answer");
        },
        true,
    );
    let (server, addr) = patient_proxy(up_addr);
    let mut client = Client::connect(addr);
    client.send(OPEN_UPLOAD);
    // Read within IO_TIMEOUT, well inside the route's 60 s.
    let resp = client.read_final_response();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(resp.header("connection"), Some("close"));
    client.expect_closed();
    // A POST, which is not replayed: a reused cut connection would show as
    // a 502.
    let _ = done.send(());
    let next = request(
        addr,
        b"POST /next HTTP/1.1\r\nHost: b.test\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(next.text(), "next");
    served.join().expect("upstream");
    stop(server);
}

/// A 101 while a body streams is no switch the client asked for (a
/// handshake has no body): refused with a 502, as after a whole body.
#[test]
fn a_switch_while_the_body_streams_is_refused() {
    let (up_addr, done, served) = early_answer_upstream(
        |tcp| {
            tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .expect("answer");
        },
        false,
    );
    let (server, addr) = patient_proxy(up_addr);
    let mut client = Client::connect(addr);
    client.send(OPEN_UPLOAD);
    let resp = client.read_final_response();
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.error_reason(), Some("bad-response"));
    let _ = done.send(());
    served.join().expect("upstream");
    stop(server);
}

/// A keep-alive client whose answer came beside its body (and so closes
/// the connection) may have pipelined its next request behind the body:
/// the close lingers, and the client reads its whole answer, then the end
/// of the stream, not a reset.
#[test]
fn a_pipelined_request_behind_a_body_answered_both_ways_gets_a_lingering_close() {
    use std::io::Read;
    let (last_tx, last_rx) = std::sync::mpsc::channel::<()>();
    let (up_addr, done, served) = early_answer_upstream(
        move |tcp| {
            tcp.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .expect("head");
            let mut body = [0; 5];
            tcp.read_exact(&mut body).expect("the body");
            tcp.write_all(b"5\r\nfirst\r\n").expect("echo");
            // The rest of the answer once the client has pipelined more.
            last_rx.recv_timeout(IO_TIMEOUT).expect("the client's go");
            tcp.write_all(b"4\r\nlast\r\n0\r\n\r\n").expect("last chunk");
        },
        false,
    );
    let (server, addr) = patient_proxy(up_addr);
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // The head first, then the body alone: the answer begins while the
    // body is still to come, and no read of the body takes what follows.
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\n\r\n")
        .expect("head");
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).expect("the answer's head");
        assert!(n > 0, "closed before the answer's head");
        got.extend_from_slice(&buf[..n]);
    }
    client.write_all(b"first").expect("body");
    // The echo of the body's last byte means the proxy read all of it.
    while !got.windows(5).any(|w| w == b"first") {
        let n = client.read(&mut buf).expect("the echo");
        assert!(n > 0, "closed before the echo");
        got.extend_from_slice(&buf[..n]);
    }
    client
        .write_all(b"GET /next HTTP/1.1\r\nHost: b.test\r\n\r\n")
        .expect("pipelined");
    let _ = last_tx.send(());
    let ended = client.read_to_end(&mut got).map_err(|e| e.kind());
    let text = String::from_utf8_lossy(&got);
    assert!(ended.is_ok(), "{ended:?} after {text:?}");
    assert!(text.ends_with("4\r\nlast\r\n0\r\n\r\n"), "{text:?}");
    assert!(text.contains("Connection: close"), "{text:?}");
    let _ = done.send(());
    served.join().expect("upstream");
    stop(server);
}

/// A body that streams, to an upstream that answers once it has all of
/// it: that answer is no early one, however close behind the body's last
/// write it comes, so the connections stay kept alive and pooled.
#[test]
fn an_answer_right_behind_a_streamed_body_keeps_both_connections() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..40 {
        // The 100 says the proxy is waiting for the body: it streams.
        client.send(b"POST /up HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(client.read_response().status, 100);
        client.send(b"hello");
        let resp = client.read_final_response();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), None, "answer {i} closed the connection");
    }
    assert_eq!(up.connections(), 1, "the upstream connection was not kept");
    stop(server);
}
