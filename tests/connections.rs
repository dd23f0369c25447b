//! Connection management on both sides: client keep-alive, pooled upstream
//! reuse, pipelining, HTTP/1.0 semantics, Connection: close, the stale
//! pooled connection retry, the idle timeout, the connection cap, connection
//! life limits on both sides, and the L4 (tcp) listener: verbatim bytes, half-close, idle timeout, caps,
//! connection metrics and outlier ejection.

mod common;

use common::*;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn keep_alive_client_reuses_one_upstream_connection() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..20 {
        let resp = client.get("ka.test", &format!("/{i}"));
        assert_eq!(resp.status, 200);
        assert!(
            !resp.announces_close(),
            "request {i}: keep-alive response must not close"
        );
        assert_eq!(Echoed::parse(&resp.body).request_line, format!("GET /{i} HTTP/1.1"));
    }
    assert_eq!(up.requests(), 20);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests share one pooled upstream connection"
    );
    stop(server);
}

#[test]
fn pooled_upstream_connections_are_shared_across_client_connections() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    for i in 0..10 {
        assert_eq!(get(addr, "ka.test", &format!("/{i}")).status, 200);
    }
    assert_eq!(up.requests(), 10);
    assert!(
        up.connections() < 10,
        "10 sequential client connections opened {} upstream connections",
        up.connections()
    );
    stop(server);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(
        b"GET /one HTTP/1.1\r\nHost: p.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: p.test\r\nContent-Length: 5\r\n\r\nhello\
          POST /three HTTP/1.1\r\nHost: p.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /four HTTP/1.1\r\nHost: p.test\r\n\r\n",
    );
    for (path, method, body) in [
        ("/one", "GET", &b""[..]),
        ("/two", "POST", b"hello"),
        ("/three", "POST", b"abc"),
        ("/four", "GET", b""),
    ] {
        let resp = client.read_final_response();
        assert_eq!(resp.status, 200, "{path}");
        let echoed = Echoed::parse(&resp.body);
        assert_eq!(echoed.request_line, format!("{method} {path} HTTP/1.1"));
        assert_eq!(echoed.body, body, "{path} body");
    }
    assert_eq!(up.requests(), 4);
    // The connection is still usable after the pipeline.
    assert_eq!(client.get("p.test", "/five").status, 200);
    stop(server);
}

#[test]
fn http10_client_gets_one_response_then_close() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.request(b"GET /old HTTP/1.0\r\nHost: old.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(
        Echoed::parse(&resp.body).request_line,
        "GET /old HTTP/1.1",
        "the proxy speaks HTTP/1.1 upstream"
    );
    client.expect_closed();
    stop(server);
}

#[test]
fn http10_client_without_host_is_served() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.request(b"GET /nohost HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200, "Host is optional in HTTP/1.0: {}", resp.text());
    client.expect_closed();
    stop(server);
}

#[test]
fn http10_keep_alive_when_asked() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client
            .request(format!("GET /ka{i} HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        assert_eq!(resp.status, 200, "request {i}");
        assert!(
            resp.header_all("connection")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("keep-alive")),
            "an HTTP/1.0 keep-alive response must say so: {:?}",
            resp.headers
        );
        assert!(
            resp.header("content-length").is_some(),
            "a 1.0 keep-alive response needs a length"
        );
    }
    // Without the token, the 1.0 default (close) applies again.
    let resp = client.request(b"GET /last HTTP/1.0\r\nHost: old.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    client.expect_closed();
    stop(server);
}

/// Ringway's own error answers tell an HTTP/1.0 client the connection
/// stays, as forwarded answers do: without the token the client would wait
/// for a close that never comes.
#[test]
fn http10_keep_alive_error_answers_say_so() {
    let up = Upstream::start(Behavior::Malformed(b"HTTP/1.1 999 X\r\n\r\n".to_vec()));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..2 {
        let resp = client
            .request(format!("GET /e{i} HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        assert_eq!(
            (resp.status, resp.error_reason()),
            (502, Some("bad-response")),
            "request {i}"
        );
        assert_eq!(
            resp.header("connection"),
            Some("keep-alive"),
            "request {i}: {:?}",
            resp.headers
        );
    }
    let resp = client.request(b"GET /last HTTP/1.0\r\nHost: old.test\r\n\r\n");
    assert_eq!(resp.status, 502);
    client.expect_closed();
    stop(server);
}

#[test]
fn connection_close_is_honoured() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("c.test", "/first").status, 200);
    let resp = client.request(b"GET /bye HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(
        resp.announces_close(),
        "the response announces the close: {:?}",
        resp.headers
    );
    client.expect_closed();
    stop(server);
}

/// The upstream closes each connection after one response, without saying
/// so, leaving the proxy a stale pooled connection. The next idempotent
/// request must be retried on a fresh connection rather than fail.
#[test]
fn stale_pooled_connection_is_retried_for_idempotent_requests() {
    let up = Upstream::builder(Behavior::Echo).close_after(1).start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..5 {
        let resp = client.get("stale.test", &format!("/{i}"));
        assert_eq!(
            resp.status,
            200,
            "request {i} on a stale pooled connection: {:?} {}",
            resp.error_reason(),
            resp.text()
        );
        // Make sure the upstream really closed the one it served before the
        // next request, so that every later request meets a stale connection.
        up.wait_closed(i + 1);
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(up.connections(), 5, "each request needed a fresh upstream connection");
    stop(server);
}

#[test]
fn stale_pooled_connection_retry_for_a_new_client_connection() {
    let up = Upstream::builder(Behavior::Echo).close_after(1).start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    assert_eq!(get(addr, "stale.test", "/a").status, 200);
    up.wait_closed(1);
    let resp = get(addr, "stale.test", "/b");
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(Echoed::parse(&resp.body).request_line, "GET /b HTTP/1.1");
    stop(server);
}

#[test]
fn idle_client_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "idle_timeout = \"300ms\"", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("idle.test", "/").status, 200);
    // Nothing more is sent: the proxy must close the idle connection.
    client.expect_closed();
    // A connection that never sent anything is idle too.
    let mut silent = Client::connect(addr);
    silent.expect_closed();
    stop(server);
}

#[test]
fn max_connections_caps_concurrent_client_connections() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_connections = 2", ""));
    let mut first = Client::connect(addr);
    let mut second = Client::connect(addr);
    // A completed exchange proves each is accepted and counted.
    assert_eq!(first.get("cap.test", "/1").status, 200);
    assert_eq!(second.get("cap.test", "/2").status, 200);

    // Over the cap: reset on arrival (a FIN would read as a server that
    // took it and hung up), whether or not the client sent anything yet.
    Client::expect_refused(addr);
    // The reset may come before the connect is seen through.
    if let Ok(mut third) = Client::try_connect(addr) {
        let _ = third.try_send(b"GET /3 HTTP/1.1\r\nHost: cap.test\r\n\r\n");
        let got = third.read_to_close();
        assert!(
            got.is_empty(),
            "a connection over the cap must be closed unserved, got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(up.requests(), 2, "the refused request never reached the upstream");
    assert_eq!(
        scraped(&server, "ringway_downstream_cx_overflow_total{listener=\"ingress\"}"),
        2.0
    );

    // The two admitted connections keep working.
    assert_eq!(first.get("cap.test", "/1b").status, 200);
    assert_eq!(second.get("cap.test", "/2b").status, 200);

    // Closing one frees a slot. The proxy releases it after its side of the
    // close, which has no external signal: retry for a bounded time.
    let resp = first.request(b"GET /bye HTTP/1.1\r\nHost: cap.test\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 200);
    first.expect_closed();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Ok(mut fourth) = Client::try_connect(addr) {
            if fourth.try_send(b"GET /4 HTTP/1.1\r\nHost: cap.test\r\n\r\n").is_ok() {
                if let Ok(resp) = fourth.try_read_response(false) {
                    assert_eq!(resp.status, 200);
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "no slot freed after a connection closed");
        thread::sleep(Duration::from_millis(20));
    }
    stop(server);
}

/// Two workers share one process-wide cap.
#[test]
fn max_connections_holds_across_workers() {
    let up = Upstream::start(Behavior::Echo);
    let config = simple_config(&[&up], "max_connections = 3", "").replace(RUNTIME_1, RUNTIME_2);
    let (server, addr) = proxy(&config);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        // The reset may come before the connect is seen through.
        let Ok(mut c) = Client::try_connect(addr) else {
            refused += 1;
            continue;
        };
        let _ = c.try_send(format!("GET /{i} HTTP/1.1\r\nHost: cap.test\r\n\r\n").as_bytes());
        match c.try_read_response(false) {
            Ok(resp) => {
                assert_eq!(resp.status, 200);
                admitted.push(c);
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ),
                    "refused connection: {e}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(admitted.len(), 3, "exactly the cap is admitted across both workers");
    assert_eq!(refused, 5);
    stop(server);
}

/// The L4 listener copies bytes both ways untouched: no HTTP rewriting.
#[test]
fn tcp_listener_proxies_bytes_verbatim() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&tcp_config(&endpoints(&[&up]), "", ""));
    let raw = b"GET /l4 HTTP/1.1\r\nHost: l4.test\r\nConnection: x-hop\r\nx-hop: 1\r\n\r\n";
    let mut client = Client::connect(addr);
    let resp = client.request(raw);
    assert_eq!(resp.status, 200);
    assert!(resp.header("via").is_none(), "an L4 proxy adds no Via");
    assert_eq!(
        up.last().raw_head,
        raw.to_vec(),
        "the upstream saw the exact bytes sent"
    );
    // Keep-alive passes straight through on the same upstream connection.
    let resp = client.get("l4.test", "/again");
    assert_eq!(resp.status, 200);
    assert_eq!(up.connections(), 1);
    drop(client);
    // Raw, non-HTTP bytes pass too: the upstream answers them with its own 400.
    let bytes = |direction: &str| {
        let series = format!("ringway_tcp_bytes_total{{listener=\"ingress\",cluster=\"a\",direction=\"{direction}\"}}");
        scraped(&server, &series)
    };
    let before = (bytes("from_client"), bytes("from_upstream"));
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let not_http = b"\x00\x01 not http\r\n\r\n";
    std::io::Write::write_all(&mut stream, not_http).expect("write");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "the upstream's own answer comes back: {:?}",
        String::from_utf8_lossy(&got)
    );
    // Counted as they moved, so by the time the client has read them.
    assert_eq!(
        (bytes("from_client") - before.0, bytes("from_upstream") - before.1),
        (not_http.len() as f64, got.len() as f64),
        "the relay's bytes each way"
    );
    drop(stream);
    stop(server);
}

/// L4 half-close: the client finishes sending (FIN) but keeps reading; the
/// upstream must see the end of the stream, and its reply and close must
/// come back.
#[test]
fn tcp_listener_propagates_half_close() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&tcp_config(&endpoints(&[&up]), "", ""));
    let mut client = Client::connect(addr);
    client.send(b"GET /half HTTP/1.1\r\nHost: l4.test\r\n\r\n");
    client.stream().shutdown(std::net::Shutdown::Write).expect("half-close");
    let resp = client.read_response();
    assert_eq!(resp.status, 200);
    // The upstream closes once it reads the client's FIN through the proxy.
    up.wait_closed(1);
    client.expect_closed();
    stop(server);
}

/// A reset passes through an L4 relay as a reset, either way: a FIN would
/// tell the other peer its stream ended whole.
#[test]
fn tcp_listener_passes_a_reset_on_as_a_reset() {
    use std::io::{Read, Write};
    // The upstream resets: the client's read fails, not ends.
    let (up_addr, _ended) = resetting_upstream();
    let (server, addr) = proxy(&tcp_config(&format!("[ {{ address = \"{up_addr}\" }} ]"), "", ""));
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"hello").expect("send");
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).expect("echo");
    client.write_all(b"RESET").expect("send");
    let mut rest = Vec::new();
    let got = client.read_to_end(&mut rest);
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the client saw {got:?}"
    );
    stop(server);

    // The client resets: the upstream's read fails, not ends.
    let (up_addr, ended) = resetting_upstream();
    let (server, addr) = proxy(&tcp_config(&format!("[ {{ address = \"{up_addr}\" }} ]"), "", ""));
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"hello").expect("send");
    client.read_exact(&mut echo).expect("echo");
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(client);
    let got = ended.recv_timeout(IO_TIMEOUT * 2).expect("the upstream's read ended");
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the upstream saw {got:?}"
    );
    stop(server);
}

/// An upstream that sends all of its answer and then closes with input
/// unread resets the connection, though its answer went out whole: the
/// reset passed on waits until what the relay took from the upstream has
/// reached the client, so a client slower than the upstream loses nothing.
#[test]
fn tcp_listener_delivers_what_came_before_a_reset() {
    use std::io::{Read, Write};
    const ANSWER: usize = 1 << 20; // past the client's first receive window
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let served = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        let mut hello = [0u8; 5];
        tcp.read_exact(&mut hello).expect("hello");
        tcp.write_all(&vec![b'a'; ANSWER]).expect("answer");
        // Input left unread: the close is a reset.
        thread::sleep(Duration::from_millis(100));
        drop(tcp);
        let _ = closed_tx.send(());
    });
    let (server, addr) = proxy(&tcp_config(&format!("[ {{ address = \"{up_addr}\" }} ]"), "", ""));
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"hello, and more").expect("send");
    closed.recv_timeout(IO_TIMEOUT).expect("the upstream closed");
    // Give the relay a moment to see the reset before reading (the test
    // only loses its edge if it does not).
    thread::sleep(Duration::from_millis(200));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    served.join().expect("upstream");
    assert_eq!(got.len(), ANSWER, "the answer reached the client whole");
    stop(server);
}

/// A reset passed on stays a reset when the wait for delivery before it is
/// cut short, here by the listener's idle timeout: the client, which has
/// not read for longer, still ends with a reset, not a clean end.
#[test]
fn a_reset_cut_short_is_still_a_reset() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let served = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        let mut hello = [0u8; 5];
        tcp.read_exact(&mut hello).expect("hello");
        tcp.write_all(&vec![b'a'; 1 << 20]).expect("answer");
        // Input left unread: the close is a reset.
    });
    let (server, addr) = proxy(&tcp_config(
        &format!("[ {{ address = \"{up_addr}\" }} ]"),
        "idle_timeout = \"300ms\"",
        "",
    ));
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"hello, and more").expect("send");
    served.join().expect("upstream");
    // Not reading past the idle timeout, which ends the wait.
    thread::sleep(Duration::from_millis(900));
    let mut buf = vec![0u8; 64 << 10];
    let ended = loop {
        match client.read(&mut buf) {
            Ok(0) => break Ok(0),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    assert!(
        matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{ended:?}"
    );
    stop(server);
}

/// The value of one exact series in the proxy's /metrics, 0 when absent.
fn scraped(server: &ringway::worker::Server, series: &str) -> f64 {
    let text = server.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Poll /metrics until `series` reads `want` (a worker reports when asked,
/// and a connection's end lands a moment after the client sees it).
fn wait_scraped(server: &ringway::worker::Server, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while scraped(server, series) != want {
        assert!(
            Instant::now() < deadline,
            "{series} is {}, expected {want}",
            scraped(server, series)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// An L4 connection that passes no bytes for the listener's idle timeout is
/// closed on both sides; one that keeps talking is not.
#[test]
fn tcp_listener_closes_quiet_connections_after_the_idle_timeout() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&tcp_config(&endpoints(&[&up]), "idle_timeout = \"1s\"", ""));
    let mut client = Client::connect(addr);
    // Talking every 100 ms for 1.5 s, longer than the timeout, keeps it open.
    let talking = Instant::now();
    while talking.elapsed() < Duration::from_millis(1500) {
        assert_eq!(client.get("l4.test", "/talk").status, 200);
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up.connections(), 1, "one connection all along");
    // Then quiet: the proxy cuts the client and the upstream, with a reset:
    // it ended the stream, neither peer did.
    client.expect_reset();
    up.wait_closed(1);
    stop(server);
}

/// Bytes a slow reader takes are bytes moving: a relay whose client takes
/// longer than the idle timeout to drain what was relayed is not cut.
#[test]
fn tcp_relay_to_a_slow_reader_is_not_idle() {
    // More than the kernel holds for the client: the relay has bytes of
    // its own waiting to be written while the client reads.
    const SENT: usize = 8 << 20;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    thread::spawn(move || {
        use std::io::Write;
        let Ok((mut tcp, _)) = upstream.accept() else { return };
        let _ = tcp.write_all(&pattern(0, SENT));
    });
    let (server, addr) = proxy(&tcp_config(
        &format!("[ {{ address = \"{up_addr}\" }} ]"),
        "idle_timeout = \"1s\"",
        "",
    ));
    // A small receive window, so that the relay's writes wait on the reader.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.connect(&addr.into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // About 20 KiB a second for three seconds: the relay has read and
    // written everything long before (the kernel holds it), and only the
    // reader's progress shows the relay is not idle.
    let mut got = Vec::new();
    let mut chunk = [0u8; 2048];
    let slow = Instant::now();
    while slow.elapsed() < Duration::from_secs(3) {
        use std::io::Read;
        let n = client.read(&mut chunk).expect("still relaying");
        assert!(n > 0, "cut after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
        thread::sleep(Duration::from_millis(100));
    }
    use std::io::Read;
    let rest = client.read_to_end(&mut got);
    assert!(rest.is_ok(), "cut after {} bytes: {rest:?}", got.len());
    assert_eq!(got.len(), SENT);
    assert!(got == pattern(0, SENT), "the bytes arrive as sent");
    stop(server);
}

/// The cluster's circuit-breaker caps hold for L4 connections, and they are
/// counted in the upstream connection metrics like HTTP's.
#[test]
fn tcp_listener_respects_connection_caps_and_counts_connections() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&tcp_config(
        &endpoints(&[&up]),
        "",
        "circuit_breaker = { max_connections = 1 }",
    ));
    let active = format!("ringway_upstream_cx_active{{cluster=\"a\",endpoint=\"{}\"}}", up.addr);
    let total = format!("ringway_upstream_cx_total{{cluster=\"a\",endpoint=\"{}\"}}", up.addr);
    let overflow = "ringway_upstream_rq_overflow_total{cluster=\"a\"}";

    let mut first = Client::connect(addr);
    assert_eq!(first.get("l4.test", "/one").status, 200);
    wait_scraped(&server, &active, 1.0);
    // Over the cap: accepted, then reset without reaching the upstream.
    Client::expect_refused(addr);
    assert_eq!(up.connections(), 1);
    wait_scraped(&server, overflow, 1.0);

    drop(first);
    wait_scraped(&server, &active, 0.0);
    let mut third = Client::connect(addr);
    assert_eq!(third.get("l4.test", "/three").status, 200, "the cap is free again");
    assert_eq!(scraped(&server, &total), 2.0);
    drop(third);
    // How each connection ended: two relays the client closed, one refusal.
    let ended = |reason: &str| {
        format!("ringway_tcp_connections_total{{listener=\"ingress\",cluster=\"a\",reason=\"{reason}\"}}")
    };
    wait_scraped(&server, &ended("closed"), 2.0);
    assert_eq!(scraped(&server, &ended("overflow")), 1.0);
    stop(server);
}

/// Of `n` L4 connections one after another, each carrying a request, how
/// many got no answer (a live endpoint echoes a 200).
fn connections_failed(addr: std::net::SocketAddr, n: usize) -> usize {
    let mut failed = 0;
    for i in 0..n {
        let Ok(mut client) = Client::try_connect(addr) else {
            failed += 1;
            continue;
        };
        let raw = format!("GET /{i} HTTP/1.1\r\nHost: l4.test\r\n\r\n");
        match client
            .try_send(raw.as_bytes())
            .and_then(|()| client.try_read_response(false))
        {
            Ok(resp) => assert_eq!(resp.status, 200),
            Err(_) => failed += 1,
        }
    }
    failed
}

/// L4 connect failures feed outlier detection: with
/// `consecutive_connect_failures = 1`, the dead endpoint fails one client
/// connection, is ejected, and every later connection reaches the live one.
#[test]
fn tcp_connect_failures_eject_the_dead_endpoint() {
    let live = Upstream::start(Behavior::Echo);
    let dead = closed_port();
    let endpoints = format!("[ {{ address = \"{dead}\" }}, {} ]", live.endpoint(1));
    let (server, addr) = proxy(&tcp_config(
        &endpoints,
        "",
        "outlier = { consecutive_connect_failures = 1, max_ejection_percent = 50 }",
    ));
    let failed = connections_failed(addr, 8);
    assert_eq!(failed, 1, "one connection meets the dead endpoint, then it is ejected");
    assert_eq!(live.connections(), 7);
    let dead_series = |name: &str| format!("{name}{{cluster=\"a\",endpoint=\"{dead}\"}}");
    assert_eq!(
        scraped(&server, &dead_series("ringway_upstream_cx_connect_fail_total")),
        1.0
    );
    assert_eq!(scraped(&server, &dead_series("ringway_outlier_ejections_total")), 1.0);
    stop(server);
}

/// A client L4 cannot relay (its upstream refused the connect) is reset:
/// a FIN would read as an upstream that took the connection and hung up.
#[test]
fn a_tcp_client_without_an_upstream_is_reset() {
    let (server, addr) = proxy(&tcp_config(
        &format!("[ {{ address = \"{}\" }} ]", closed_port()),
        "",
        "",
    ));
    Client::expect_refused(addr);
    stop(server);
}

/// A failed L4 connect costs the endpoint the failure penalty in p2c_ewma,
/// so that without outlier detection the balancer still steers away from
/// a dead endpoint (a refused connect is fast: timed as it was, it would
/// look like the best endpoint of all).
#[test]
fn tcp_connect_failures_teach_p2c_ewma_to_avoid_the_endpoint() {
    let live = Upstream::start(Behavior::Echo);
    let dead = closed_port();
    let endpoints = format!("[ {{ address = \"{dead}\" }}, {} ]", live.endpoint(1));
    let (server, addr) = proxy(&tcp_config(&endpoints, "", "lb = \"p2c_ewma\""));
    let failed = connections_failed(addr, 16);
    assert!(failed <= 1, "{failed} connections met the dead endpoint");
    assert!(live.connections() >= 15);
    stop(server);
}

/// A WebSocket handshake reaches the upstream with its upgrade fields; the
/// 101 comes back with them, and from then on the connection is a tunnel:
/// bytes either side sent early arrive first, then everything moves both
/// ways, byte-exact, until the client closes.
#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    let up = Upstream::start(Behavior::WebSocketEcho);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    // The first frame goes out right behind the handshake, before the 101.
    client.send(&[WEBSOCKET_HANDSHAKE, b"early|"].concat());
    let resp = client.read_response();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    assert_eq!(resp.header("connection"), Some("Upgrade"));
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let seen = up.last();
    assert_eq!(seen.header("upgrade"), Some("websocket"), "{:?}", seen.headers);
    assert_eq!(seen.header("connection"), Some("Upgrade"), "{:?}", seen.headers);
    assert_eq!(seen.header("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    // The upstream's greeting, sent right behind its 101, then the early frame.
    assert_eq!(client.read_bytes(12), b"hello\nearly|");
    for message in [&b"ping"[..], &pattern(0, 256 * 1024)] {
        client.send(message);
        assert_eq!(client.read_bytes(message.len()), message);
    }
    client.stream().shutdown(std::net::Shutdown::Write).expect("half-close");
    client.expect_closed();
    up.wait_closed(1);
    stop(server);
}

/// Only a GET without a body may ask for WebSocket; an upstream that does
/// not switch answers as usual and the connection stays HTTP.
#[test]
fn websocket_handshake_rules_and_refusals() {
    let up = Upstream::start(Behavior::WebSocketEcho);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let post = b"POST /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let resp = request(addr, post);
    assert_eq!((resp.status, resp.error_reason()), (501, Some("upgrade-not-supported")));
    assert_eq!(up.requests(), 0, "refused before any upstream");
    // The upstream ignores an offer it does not take: a plain 200, and the
    // connection goes on as HTTP.
    let mut client = Client::connect(addr);
    let offer = b"GET /x HTTP/1.1\r\nHost: ws.test\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
    assert_eq!(client.request(offer).status, 200);
    assert_eq!(up.last().header("upgrade"), None, "other offers are stripped");
    assert_eq!(client.get("ws.test", "/after").text(), "plain");
    // RFC 9110 §7.8: an HTTP/1.0 request's Upgrade is ignored. It goes up
    // as a plain GET, and what follows it is never tunnelled.
    let before = up.requests();
    let http10 = [
        &b"GET /chat HTTP/1.0\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"[..],
        b"GET /behind HTTP/1.1\r\nHost: ws.test\r\n\r\n",
    ]
    .concat();
    let resp = request(addr, &http10);
    assert_eq!((resp.status, resp.text()), (200, "plain".to_string()));
    let seen = up.last();
    assert_eq!((seen.path.as_str(), seen.header("upgrade")), ("/chat", None));
    assert_eq!(up.requests(), before + 1, "nothing behind it went upstream");
    // A GET that states an empty body has none: it may ask.
    let mut client = Client::connect(addr);
    client.send(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let resp = client.read_response();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(client.read_bytes(6), b"hello\n");
    stop(server);
}

/// A handshake that lists WebSocket among other offers goes upstream
/// offering WebSocket alone: a switch to another protocol (h2c) would carry
/// the client's later requests past routing and policy.
#[test]
fn only_websocket_is_offered_upstream() {
    let up = Upstream::start(Behavior::WebSocketEcho);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: h2c, WebSocket/13\r\nConnection: Upgrade\r\n\
          HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    );
    let resp = client.read_response();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(up.last().header_all("upgrade"), ["websocket"]);
    assert_eq!(client.read_bytes(6), b"hello\n");
    // The same offers on two field lines are the same list (RFC 9110 §5.3).
    let mut client = Client::connect(addr);
    client.send(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: h2c\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let resp = client.read_response();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(up.last().header_all("upgrade"), ["websocket"]);
    assert_eq!(client.read_bytes(6), b"hello\n");
    stop(server);
}

/// A 101 is forwarded only as the switch to WebSocket the client asked
/// for. One the client did not ask for would leave it waiting for a final
/// answer; one to another protocol would tunnel it. Both are 502.
#[test]
fn a_switch_the_client_did_not_ask_for_is_refused() {
    for (switch, request) in [
        (
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            &b"GET /plain HTTP/1.1\r\nHost: ws.test\r\n\r\n"[..],
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"GET /plain HTTP/1.1\r\nHost: ws.test\r\n\r\n",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            WEBSOCKET_HANDSHAKE,
        ),
        // HTTP/1.0 has no protocol switch.
        (
            b"HTTP/1.0 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            WEBSOCKET_HANDSHAKE,
        ),
    ] {
        let up = Upstream::start(Behavior::Raw(switch.to_vec()));
        let (server, addr) = proxy(&simple_config(&[&up], "", ""));
        let mut client = Client::connect(addr);
        let resp = client.request(request);
        let shown = String::from_utf8_lossy(switch);
        assert_eq!(
            (resp.status, resp.error_reason()),
            (502, Some("bad-response")),
            "{shown}"
        );
        stop(server);
    }
}

/// The upstream reads the second request on each connection and closes
/// without answering. The POST may have been acted on, so it must not be
/// replayed: the client gets 502 and the upstream saw it exactly once.
#[test]
fn non_idempotent_request_is_not_replayed_after_a_reset() {
    let up = Upstream::builder(Behavior::Echo).drop_request(2).start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("r.test", "/first").status, 200);
    let resp = client.request(b"POST /pay HTTP/1.1\r\nHost: r.test\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        (resp.status, resp.error_reason()),
        (502, Some("upstream-reset")),
        "{}",
        resp.text()
    );
    let paths: Vec<String> = up.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/first", "/pay"], "the POST was delivered once, not replayed");
    stop(server);
}

/// Same upstream, idempotent request: failing on the reused connection
/// before any response byte, it is retried once on a fresh connection.
#[test]
fn idempotent_request_is_retried_after_a_reset_on_a_reused_connection() {
    let up = Upstream::builder(Behavior::Echo).drop_request(2).start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("r.test", "/first").status, 200);
    let resp = client.get("r.test", "/second");
    assert_eq!(resp.status, 200, "{:?} {}", resp.error_reason(), resp.text());
    assert_eq!(Echoed::parse(&resp.body).request_line, "GET /second HTTP/1.1");
    let paths: Vec<String> = up.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/first", "/second", "/second"],
        "one retry, on a new connection"
    );
    assert_eq!(up.connections(), 2);
    stop(server);
}

/// An upstream that announces `Connection: close` and closes must not have
/// its connection pooled. POSTs are not retried, so reuse would show as 502.
#[test]
fn upstream_connection_close_is_not_pooled() {
    let up = Upstream::builder(Behavior::Fixed {
        status: 200,
        body: b"bye".to_vec(),
        headers: vec![("Connection".into(), "close".into())],
    })
    .close_after(1)
    .start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client.request(b"POST / HTTP/1.1\r\nHost: r.test\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(resp.status, 200, "POST {i}: {:?} {}", resp.error_reason(), resp.text());
        assert!(!resp.announces_close(), "the upstream's close is not the client's");
        up.wait_closed(i + 1);
    }
    assert_eq!(up.connections(), 3);
    stop(server);
}

/// An HTTP/1.0 upstream response without keep-alive ends its connection.
#[test]
fn http10_upstream_response_is_not_pooled() {
    let up = Upstream::start(Behavior::Malformed(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client.request(b"POST / HTTP/1.1\r\nHost: r.test\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(resp.status, 200, "POST {i}: {:?} {}", resp.error_reason(), resp.text());
        assert_eq!(resp.body, b"ok");
        up.wait_closed(i + 1);
    }
    stop(server);
}

/// Bytes after the end of a response are not the next response: an
/// upstream connection with leftover bytes must not be reused.
#[test]
fn upstream_connection_with_bytes_after_the_response_is_not_reused() {
    let up = Upstream::start(Behavior::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp = client.get("r.test", &format!("/{i}"));
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (200, &b"ok"[..]),
            "request {i}: {}",
            resp.text()
        );
    }
    stop(server);
}

#[test]
fn pipeline_stops_at_connection_close() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: p.test\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: p.test\r\n\r\n",
    );
    assert_eq!(
        Echoed::parse(&client.read_final_response().body).request_line,
        "GET /1 HTTP/1.1"
    );
    let second = client.read_final_response();
    assert_eq!(Echoed::parse(&second.body).request_line, "GET /2 HTTP/1.1");
    assert!(second.announces_close());
    client.expect_closed();
    let paths: Vec<String> = up.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/1", "/2"], "nothing after the close is forwarded");
    stop(server);
}

/// The idle timeout is for idle connections: a request waiting on a slow
/// upstream longer than it is not cut off.
#[test]
fn idle_timeout_does_not_cut_an_in_flight_request() {
    let up = Upstream::start(Behavior::Delay(Duration::from_millis(800)));
    let (server, addr) = proxy(&simple_config(&[&up], "idle_timeout = \"200ms\"", ""));
    let resp = get(addr, "i.test", "/");
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(resp.body, b"slow");
    stop(server);
}

/// The upstream closes the idle pooled connection (FIN) before the next
/// request. The proxy has been told the connection is gone, so even a POST,
/// which it must not replay, should go out on a live connection.
#[test]
fn request_after_upstream_closed_idle_pooled_connection_succeeds_even_if_not_idempotent() {
    let up = Upstream::builder(Behavior::Echo).close_after(1).start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let resp =
            client.request(format!("POST /{i} HTTP/1.1\r\nHost: r.test\r\nContent-Length: 1\r\n\r\nx").as_bytes());
        assert_eq!(
            resp.status,
            200,
            "POST {i} after the upstream closed the pooled connection: {:?} {}",
            resp.error_reason(),
            resp.text()
        );
        up.wait_closed(i + 1);
    }
    stop(server);
}

/// Bytes that arrive on an idle pooled connection are not a response to
/// the next request (response queue poisoning): such a connection must be
/// discarded, and the next request answered by the upstream for real.
#[test]
fn bytes_arriving_on_an_idle_pooled_connection_are_not_the_next_response() {
    let up = Upstream::builder(Behavior::Named("real".into()))
        .late_bytes(b"HTTP/1.1 200 OK\r\nx-upstream: smuggled\r\nContent-Length: 8\r\n\r\nsmuggled")
        .start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("r.test", "/1").header("x-upstream"), Some("real"));
    // Now the upstream writes an unsolicited response on the idle connection.
    up.release();
    up.wait_late(1);
    let resp = client.get("r.test", "/2");
    assert_eq!(
        (resp.status, resp.header("x-upstream")),
        (200, Some("real")),
        "the second request got {:?}",
        resp.text()
    );
    stop(server);
}

/// Every split of a request across reads gives the same result.
#[test]
fn request_sent_one_byte_at_a_time() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    client.send_bytewise(b"POST /slowly HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\n\r\nhello");
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    assert_eq!(Echoed::parse(&resp.body).body, b"hello");
    client.send_bytewise(
        b"POST /chunks HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n",
    );
    let resp = client.read_final_response();
    assert_eq!(resp.status, 200);
    assert_eq!(Echoed::parse(&resp.body).body, b"abcde");
    stop(server);
}

/// Hundreds of small pipelined requests in one write, more than one read
/// buffer's worth: all answered, in order, bodies intact.
#[test]
fn long_pipeline_spanning_several_buffers() {
    const N: usize = 500;
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let mut batch = Vec::new();
    for i in 0..N {
        if i % 3 == 0 {
            let body = format!("body-{i}");
            batch.extend_from_slice(
                format!(
                    "POST /{i} HTTP/1.1\r\nHost: p.test\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        } else {
            batch.extend_from_slice(
                format!("GET /{i} HTTP/1.1\r\nHost: p.test\r\nX-Pad: {}\r\n\r\n", "p".repeat(40)).as_bytes(),
            );
        }
    }
    assert!(batch.len() > 32 * 1024, "the pipeline spans several buffers");
    // Write from a helper thread so a proxy that answers while we are still
    // writing cannot deadlock the test on full socket buffers.
    let mut writer = client.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &batch));
    for i in 0..N {
        let resp = client.read_final_response();
        assert_eq!(resp.status, 200, "response {i}");
        let echoed = Echoed::parse(&resp.body);
        let method = if i % 3 == 0 { "POST" } else { "GET" };
        assert_eq!(echoed.request_line, format!("{method} /{i} HTTP/1.1"));
        if i % 3 == 0 {
            assert_eq!(echoed.body, format!("body-{i}").as_bytes());
        }
    }
    sender.join().expect("writer thread").expect("pipeline written");
    stop(server);
}

/// As above, with the connection idle for over a second before reuse: the
/// common case of an upstream keep-alive timeout shorter than the pool's.
/// (The sleep is the idle time under test, not a synchronisation.)
#[test]
fn post_after_upstream_closed_a_long_idle_pooled_connection_succeeds() {
    let up = Upstream::builder(Behavior::Echo).close_after(1).start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let post = b"POST / HTTP/1.1\r\nHost: r.test\r\nContent-Length: 1\r\n\r\nx";
    assert_eq!(client.request(post).status, 200);
    up.wait_closed(1);
    thread::sleep(Duration::from_millis(1100));
    let resp = client.request(post);
    assert_eq!(resp.status, 200, "{:?} {}", resp.error_reason(), resp.text());
    stop(server);
}

#[test]
fn bytes_arriving_on_a_long_idle_pooled_connection_are_not_the_next_response() {
    let up = Upstream::builder(Behavior::Named("real".into()))
        .late_bytes(b"HTTP/1.1 200 OK\r\nx-upstream: smuggled\r\nContent-Length: 8\r\n\r\nsmuggled")
        .start();
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("r.test", "/1").header("x-upstream"), Some("real"));
    up.release();
    up.wait_late(1);
    thread::sleep(Duration::from_millis(1100));
    let resp = client.get("r.test", "/2");
    assert_eq!(
        (resp.status, resp.header("x-upstream")),
        (200, Some("real")),
        "{:?}",
        resp.text()
    );
    stop(server);
}

/// Keep-alive requests with client think times swept across a few tens of
/// milliseconds, so the next request lands at every point of the proxy's
/// switch from a busy to an idle connection. (The sleeps are the think
/// time under test.)
#[test]
fn keep_alive_requests_with_varied_think_times() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    for i in 0..24u64 {
        thread::sleep(Duration::from_millis(i * 2));
        // Half of them arrive split, the second part after another pause.
        let raw = format!("GET /t{i} HTTP/1.1\r\nHost: t.test\r\n\r\n");
        if i % 2 == 1 {
            let (first, second) = raw.split_at(10);
            client.send(first.as_bytes());
            thread::sleep(Duration::from_millis(i));
            client.send(second.as_bytes());
        } else {
            client.send(raw.as_bytes());
        }
        let resp = client.read_final_response();
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(Echoed::parse(&resp.body).request_line, format!("GET /t{i} HTTP/1.1"));
    }
    stop(server);
}

/// More connections go quiet at once than a worker keeps buffers for: the
/// ones past that wait for readability without a buffer, and every one of
/// them is still served when its next request comes, including one sent a
/// byte at a time after the wait.
#[test]
fn many_connections_idle_at_once_are_all_served_afterwards() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut clients: Vec<Client> = (0..200).map(|_| Client::connect(addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.get("idle.test", &format!("/first/{i}")).status, 200);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let resp = client.get("idle.test", &format!("/second/{i}"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            Echoed::parse(&resp.body).request_line,
            format!("GET /second/{i} HTTP/1.1")
        );
    }
    let last = clients.last_mut().expect("clients");
    last.send_bytewise(b"GET /split HTTP/1.1\r\nHost: idle.test\r\n\r\n");
    let resp = last.read_response();
    assert_eq!(Echoed::parse(&resp.body).request_line, "GET /split HTTP/1.1");
    assert_eq!(up.requests(), 401);
    stop(server);
}

// ---------------------------------------------------------------------------
// Connection life: max_requests_per_connection, max_connection_duration
// ---------------------------------------------------------------------------

/// The listener's last request on a connection is answered with
/// `Connection: close` and the connection ends, pipelined requests behind
/// it unanswered; a new connection starts a new count.
#[test]
fn client_connections_end_after_max_requests_per_connection() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_requests_per_connection = 3", ""));
    let mut client = Client::connect(addr);
    for i in 1..=3 {
        let resp = client.get("life.test", &format!("/{i}"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.announces_close(), i == 3, "request {i}");
    }
    client.expect_closed();

    let mut client = Client::connect(addr);
    client.send(
        b"GET /a HTTP/1.1\r\nHost: life.test\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: life.test\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: life.test\r\n\r\n\
          GET /d HTTP/1.1\r\nHost: life.test\r\n\r\n",
    );
    for path in ["/a", "/b", "/c"] {
        let resp = client.read_response();
        assert_eq!(Echoed::parse(&resp.body).request_line, format!("GET {path} HTTP/1.1"));
    }
    client.expect_closed();
    assert_eq!(up.requests(), 6, "the pipelined fourth request never went upstream");
    stop(server);
}

/// A connection older than max_connection_duration is closed: after an
/// answer that comes once its time is up (which says so), or when idle.
#[test]
fn client_connections_end_after_max_connection_duration() {
    // The answer takes longer than the connection may live.
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(400)));
    let (server, addr) = proxy(&simple_config(&[&slow], "max_connection_duration = \"300ms\"", ""));
    let mut client = Client::connect(addr);
    let resp = client.get("life.test", "/slow");
    assert_eq!(resp.status, 200);
    assert!(resp.announces_close(), "answered after the connection's time was up");
    client.expect_closed();
    stop(server);

    // Answered in time, it stays open; idle, it is closed when its time is
    // up (the idle timeout is 60 s).
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "max_connection_duration = \"1s\"", ""));
    let connected = Instant::now();
    let mut client = Client::connect(addr);
    let resp = client.get("life.test", "/fast");
    assert_eq!(resp.status, 200);
    assert!(!resp.announces_close());
    client.expect_closed();
    assert!(connected.elapsed() >= Duration::from_secs(1), "closed before its time");
    stop(server);
}

/// Upstream connections are reused for at most max_requests_per_connection
/// requests, and not once they are older than max_connection_duration.
#[test]
fn upstream_connections_end_after_their_pool_limits() {
    let up = Upstream::start(Behavior::Echo);
    let pool = "pool = { max_requests_per_connection = 2 }";
    let (server, addr) = proxy(&simple_config(&[&up], "", pool));
    let mut client = Client::connect(addr);
    for i in 0..5 {
        assert_eq!(client.get("life.test", &format!("/{i}")).status, 200);
    }
    let conns: Vec<usize> = up.received().into_iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 0, 1, 1, 2]);
    up.wait_closed(2);
    stop(server);

    // Each answer takes longer than a connection may be reused for.
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(250)));
    let pool = "pool = { max_connection_duration = \"200ms\" }";
    let (server, addr) = proxy(&simple_config(&[&slow], "", pool));
    let mut client = Client::connect(addr);
    for i in 0..2 {
        assert_eq!(client.get("life.test", &format!("/{i}")).status, 200);
    }
    assert_eq!(slow.connections(), 2);
    stop(server);

    // One that ages while pooled is closed, and not reused.
    let up = Upstream::start(Behavior::Echo);
    let pool = "pool = { max_connection_duration = \"300ms\" }";
    let (server, addr) = proxy(&simple_config(&[&up], "", pool));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("life.test", "/first").status, 200);
    up.wait_closed(1);
    assert_eq!(client.get("life.test", "/second").status, 200);
    assert_eq!(up.connections(), 2);
    stop(server);
}

/// A tcp listener cuts a relay at max_connection_duration, busy or not.
#[test]
fn tcp_listener_cuts_connections_at_max_connection_duration() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&tcp_config(&endpoints(&[&up]), "max_connection_duration = \"1s\"", ""));
    let connected = Instant::now();
    let mut client = Client::connect(addr);
    assert_eq!(client.get("l4.test", "/").status, 200);
    client.expect_closed();
    assert!(connected.elapsed() >= Duration::from_secs(1), "cut before its time");
    up.wait_closed(1);
    stop(server);
}

/// A relay cut part-way (here at max_connection_duration) resets both
/// connections: a FIN would tell each peer that the other ended its
/// stream whole.
#[test]
fn a_cut_tcp_relay_resets_both_connections() {
    use std::io::{Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let served = thread::spawn(move || {
        let (mut tcp, _) = upstream.accept().expect("accept");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        tcp.write_all(b"partial").expect("write");
        // Neither side ends its stream: the proxy cuts the relay.
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).map_err(|e| e.kind())
    });
    let endpoints = format!("[ {{ address = \"{up_addr}\" }} ]");
    let (server, addr) = proxy(&tcp_config(&endpoints, "max_connection_duration = \"300ms\"", ""));
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut got = [0; 7];
    client.read_exact(&mut got).expect("the upstream's bytes");
    assert_eq!(&got, b"partial");
    let mut rest = Vec::new();
    let ended = client.read_to_end(&mut rest).map_err(|e| e.kind());
    assert_eq!(ended, Err(ErrorKind::ConnectionReset), "the client's end");
    let upstream_ended = served.join().expect("upstream");
    assert_eq!(upstream_ended, Err(ErrorKind::ConnectionReset), "the upstream's end");
    stop(server);
}

/// The pooled connection takes a request whose body streamed through from
/// the client, then closes unanswered. The body is gone, so the request is
/// not sent again on a fresh connection (it would go without its body): the
/// client gets a 502.
#[test]
fn a_request_whose_body_streamed_is_not_sent_again_after_a_stale_connection() {
    let up = Upstream::builder(Behavior::Echo).drop_request(2).start();
    let (server, addr) = proxy(&config_with(&endpoints(&[&up]), "", "timeout = \"5s\"", ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("s.test", "/first").status, 200);
    // Sent after the 100, the body is not there when the request is prepared.
    client.send(b"PUT /x HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(client.read_response().status, 100);
    client.send(b"hello");
    let resp = client.read_final_response();
    assert_eq!(resp.status, 502, "{:?} {}", resp.error_reason(), resp.text());
    assert_eq!(resp.error_reason(), Some("upstream-reset"));
    assert_eq!(
        up.connections(),
        1,
        "no second connection for a request that cannot be sent whole"
    );
    stop(server);
}

/// `response_header_timeout` counts from the end of the request: a client
/// that takes longer than it to upload its body still gets the answer.
#[test]
fn response_header_timeout_starts_when_the_request_ends() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", "response_header_timeout = \"500ms\""));
    let mut client = Client::connect(addr);
    client.send(b"POST /upload HTTP/1.1\r\nHost: u.test\r\nContent-Length: 10\r\n\r\nhello");
    // A slow upload: the rest comes twice the timeout later.
    thread::sleep(Duration::from_millis(1000));
    client.send(b"world");
    let resp = client.read_response();
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(up.last().body, b"helloworld");
    stop(server);
}

/// An upstream that reads one request head, answers 413 at once and
/// closes with the body unread, so that the proxy's writes then fail.
fn refusing_upstream() -> (SocketAddr, thread::JoinHandle<()>) {
    let refusing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = refusing.local_addr().expect("address");
    let upstream = thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = refusing.accept().expect("accept");
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).expect("read the head");
            assert!(n > 0, "the head ended early");
            head.extend_from_slice(&chunk[..n]);
        }
        assert!(head.starts_with(b"PUT /upload "), "{}", String::from_utf8_lossy(&head));
        Write::write_all(
            &mut stream,
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big\n",
        )
        .expect("answer");
    });
    (addr, upstream)
}

fn upload(client: &mut Client, len: usize) -> Response {
    let mut request = format!("PUT /upload HTTP/1.1\r\nHost: u.test\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    request.extend_from_slice(&pattern(0, len));
    client.request(&request)
}

/// An upstream that answers before the body is in (a 413) and closes
/// without reading the rest: the client gets that answer, not a 502, and
/// the connection closes, since the rest of its body was never read.
#[test]
fn an_answer_before_the_whole_body_reaches_the_client() {
    let (refusing, upstream) = refusing_upstream();
    let endpoint = format!("[ {{ address = \"{refusing}\" }} ]");
    let (server, addr) = proxy(&config_with(&endpoint, "", "", ""));
    let mut client = Client::connect(addr);
    let resp = upload(&mut client, 16 * 1024 * 1024);
    assert_eq!((resp.status, resp.error_reason()), (413, None), "{}", resp.text());
    assert_eq!(resp.text(), "too big\n");
    assert!(resp.announces_close(), "{:?}", resp.headers);
    client.expect_closed();
    upstream.join().expect("upstream thread");
    stop(server);
}

/// The same with the body held whole first (a retry policy): the answer
/// still reaches the client, and as the whole body was read, its
/// connection stays open for the next request.
#[test]
fn an_answer_before_a_held_body_is_written_reaches_the_client() {
    let (refusing, upstream) = refusing_upstream();
    let endpoints = format!("[ {{ address = \"{refusing}\" }} ]");
    let retry = "retry = { attempts = 2, on = [\"connect-failure\"], max_replay_bytes = \"32MiB\" }";
    let (server, addr) = proxy(&config_with(&endpoints, "", retry, ""));
    let mut client = Client::connect(addr);
    let resp = upload(&mut client, 16 * 1024 * 1024);
    assert_eq!((resp.status, resp.error_reason()), (413, None), "{}", resp.text());
    assert!(!resp.announces_close(), "the whole body was read: {:?}", resp.headers);
    upstream.join().expect("upstream thread");
    stop(server);
}
