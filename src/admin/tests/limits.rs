//! The admin endpoint's protocol edges: auth, framing, body and head limits,
//! keep-alive, deadlines, the connection cap and stop.

use super::*;
use std::time::Instant;

#[test]
fn a_configured_token_is_required_on_every_route() {
    let (server, fake) = start(Some("let-me-in"), Limits::default());
    let mut client = Client::connect(server.local_addr());
    for (method, path) in [
        ("GET", "/ready"),
        ("GET", "/config"),
        ("POST", "/drain"),
        ("GET", "/nowhere"),
    ] {
        let reply = client.request(method, path, &[], b"");
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let reply = client.request("GET", "/ready", &[("authorization", "Bearer let-me-i")], b"");
    assert_eq!(reply.status, 401);
    let reply = client.request("GET", "/ready", &[("authorization", "Basic let-me-in")], b"");
    assert_eq!(reply.status, 401);
    let reply = client.request("GET", "/ready", &[("authorization", "Bearer let-me-in")], b"");
    assert_eq!(reply.status, 200);
    let reply = client.request("POST", "/drain", &[("Authorization", "bearer let-me-in")], b"");
    assert_eq!(reply.status, 202);
    assert!(fake.drained.load(Ordering::SeqCst));

    let (open, _fake) = start_default();
    assert_eq!(
        Client::connect(open.local_addr()).get("/ready").status,
        200,
        "no token, no auth"
    );
    let no_token = AdminServer::start(loopback(), Some(String::new()), Arc::new(Fake::default()));
    assert!(no_token.is_err(), "an empty token is refused, not treated as none");
}

#[test]
fn a_body_over_the_limit_gets_413_and_a_close() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    };
    let (server, fake) = start(None, limits);
    let mut client = Client::connect(server.local_addr());
    let reply = client.request("PUT", "/config", &[], &[b'#'; 1024]);
    assert_eq!(reply.status, 200, "exactly the limit is fine");
    let reply = client.request("PUT", "/config", &[], &vec![b'#'; 64 * 1024]);
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed());
    assert_eq!(fake.generation.load(Ordering::SeqCst), 1);
}

#[test]
fn chunked_and_ambiguous_bodies_are_refused() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    client.send(b"PUT /config HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let reply = client.reply(false);
    assert_eq!(reply.status, 411);
    assert!(reply.text().contains("send content-length"), "{}", reply.text());
    assert!(client.closed());

    let mut client = Client::connect(server.local_addr());
    client.send(b"PUT /config HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nhello");
    assert_eq!(client.reply(false).status, 400);
    assert!(client.closed());

    let mut client = Client::connect(server.local_addr());
    client.send(b"PUT /config HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!");
    assert_eq!(client.reply(false).status, 400);
    assert!(fake.config.lock().expect("lock").is_none());
}

#[test]
fn malformed_and_oversized_heads() {
    let (server, _fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    client.send(b"GET /ready HTTP/1.1\r\nbad header\r\n\r\n");
    assert_eq!(client.reply(false).status, 400);
    assert!(client.closed());

    let mut client = Client::connect(server.local_addr());
    let big = "x".repeat(20 * 1024);
    client.send(format!("GET /ready HTTP/1.1\r\nx-big: {big}\r\n\r\n").as_bytes());
    assert_eq!(client.reply(false).status, 431);

    // Far past the limit: the rest of the head is read away, so the answer
    // is not lost to a reset, nor the client's writes.
    let mut client = Client::connect(server.local_addr());
    let mut writer = client.stream.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        let huge = "x".repeat(16 << 20);
        writer
            .write_all(format!("PUT /config HTTP/1.1\r\nx-huge: {huge}\r\n\r\n").as_bytes())
            .is_ok()
    });
    assert_eq!(client.reply(false).status, 431);
    assert!(
        sending.join().expect("writer"),
        "the client's head was taken, not reset"
    );
}

#[test]
fn keep_alive_serves_sequential_and_pipelined_requests() {
    let (server, _fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    assert_eq!(client.get("/ready").status, 200);
    let reply = client.request("PUT", "/config", &[], b"[runtime]\n");
    assert_eq!((reply.status, reply.header("connection")), (200, None));
    let mut two = request_bytes("GET", "/config", &[], b"");
    two.extend(request_bytes("GET", "/ready", &[("connection", "close")], b""));
    client.send(&two);
    assert_eq!(client.reply(false).text(), "[runtime]\n");
    let last = client.reply(false);
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    assert!(client.closed());

    let mut old = Client::connect(server.local_addr());
    old.send(b"GET /ready HTTP/1.0\r\n\r\n");
    assert_eq!(old.reply(false).status, 200);
    assert!(old.closed(), "HTTP/1.0 without keep-alive closes");
}

/// RFC 9112 §3.2: an HTTP/1.1 request has one Host field; a target in
/// absolute form is taken as its path (§3.2.2).
#[test]
fn host_fields_and_absolute_targets() {
    let (server, _fake) = start_default();
    for head in [
        &b"GET /ready HTTP/1.1\r\n\r\n"[..],
        b"GET /ready HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        let mut client = Client::connect(server.local_addr());
        client.send(head);
        assert_eq!(client.reply(false).status, 400, "{}", String::from_utf8_lossy(head));
        assert!(client.closed());
    }
    let mut client = Client::connect(server.local_addr());
    for target in ["http://127.0.0.1:9901/ready", "HTTP://admin/ready?x=1"] {
        client.send(format!("GET {target} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes());
        assert_eq!(client.reply(false).status, 200, "{target}");
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    client.send(b"PUT /config HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n");
    assert_eq!(client.reply(false).status, 100);
    client.send(b"[runtime]\n");
    assert_eq!(client.reply(false).status, 200);
    assert_eq!(fake.generation.load(Ordering::SeqCst), 1);
}

/// On loopback, only an address or localhost names the endpoint: a page
/// that rebound its own name to 127.0.0.1 cannot read it with a GET, which
/// carries no Origin.
#[test]
fn a_loopback_endpoint_refuses_hosts_that_name_another_server() {
    let (server, _fake) = start_default();
    let port = server.local_addr().port();
    let mut client = Client::connect(server.local_addr());
    for host in [
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
        format!("LocalHost:{port}"),
        "app.localhost".to_string(),
        format!("[::1]:{port}"),
        "10.1.2.3".to_string(),
    ] {
        let raw = format!("GET /config HTTP/1.1\r\nhost: {host}\r\n\r\n");
        client.send(raw.as_bytes());
        assert_eq!(client.reply(false).status, 200, "{host}");
    }
    for host in [
        format!("rebind.attacker.example:{port}"),
        "localhost.attacker.example".to_string(),
        "[::1".to_string(),
    ] {
        let raw = format!("GET /config HTTP/1.1\r\nhost: {host}\r\n\r\n");
        let mut fresh = Client::connect(server.local_addr());
        fresh.send(raw.as_bytes());
        assert_eq!(fresh.reply(false).status, 403, "{host}");
    }
}

/// Which addresses the Host rule guards: loopback in either family, an
/// IPv4-mapped one included.
#[test]
fn the_host_rule_guards_every_loopback_address() {
    for (address, guarded) in [
        ("127.0.0.1:9901", true),
        ("[::1]:9901", true),
        ("[::ffff:127.0.0.1]:9901", true),
        ("10.0.0.1:9901", false),
        ("[::ffff:10.0.0.1]:9901", false),
        ("0.0.0.0:9901", false),
    ] {
        let address = address.parse().expect("address");
        assert_eq!(super::super::http::on_loopback(address), guarded, "{address}");
    }
}

#[test]
fn browser_requests_are_refused() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let reply = client.request("POST", "/drain", &[("origin", "http://evil.example")], b"");
    assert_eq!(reply.status, 403);
    assert!(!fake.drained.load(Ordering::SeqCst));
}

#[test]
fn a_slow_head_times_out_without_holding_up_others() {
    let limits = Limits {
        head_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (server, _fake) = start(None, limits);
    let started = Instant::now();
    let mut slow = Client::connect(server.local_addr());
    slow.send(b"GET /ready HTTP/1.1\r\nhost: adm");
    let mut other = Client::connect(server.local_addr());
    assert_eq!(other.get("/ready").status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "served while the slow head waits"
    );
    let reply = slow.reply(false);
    assert_eq!((reply.status, reply.header("connection")), (408, Some("close")));
    assert!(slow.closed());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(other.get("/ready").status, 200, "the other connection is still served");
}

/// At the cap a newcomer takes the slot of the oldest connection waiting
/// for a request, so sockets that send nothing (or nothing authorized)
/// cannot lock callers out; only when every slot is answering a request
/// does it get a 503.
#[test]
fn the_cap_makes_room_unless_every_slot_is_answering() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (server, _fake) = start(Some("t"), limits);
    let address = server.local_addr();
    let auth = [("authorization", "Bearer t")];
    let mut first = Client::connect(address);
    let mut second = Client::connect(address);
    assert_eq!(first.request("GET", "/ready", &auth, b"").status, 200);
    assert_eq!(second.request("GET", "/ready", &auth, b"").status, 200);
    let mut third = Client::connect(address);
    assert_eq!(third.request("GET", "/ready", &auth, b"").status, 200);
    assert!(first.closed(), "the oldest waiting connection gave its slot up");
    assert_eq!(second.request("GET", "/ready", &auth, b"").status, 200);

    // Silent sockets, and one refused for its token, are waiting too.
    let _silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(address).expect("connect")).collect();
    let mut unauthorized = Client::connect(address);
    assert_eq!(unauthorized.get("/ready").status, 401);
    assert_eq!(
        Client::connect(address).request("GET", "/ready", &auth, b"").status,
        200
    );

    // Requests under way keep their slots: the 100 says each is answering.
    let expecting = [("authorization", "Bearer t"), ("expect", "100-continue")];
    let mut busy: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = Client::connect(address);
            // The head alone: its body of 5 bytes comes after the 100.
            let mut head = request_bytes("PUT", "/config", &expecting, b"hello");
            head.truncate(head.len() - 5);
            client.send(&head);
            assert_eq!(client.reply(false).status, 100);
            client
        })
        .collect();
    let mut refused = Client::connect(address);
    let reply = refused.reply(false);
    assert_eq!((reply.status, reply.header("connection")), (503, Some("close")));
    assert!(refused.closed());
    for client in &mut busy {
        client.send(b"hello");
        assert_eq!(client.reply(false).status, 200, "the requests under way finish");
    }
}

#[test]
fn stop_closes_idle_connections_and_the_port() {
    let (server, _fake) = start_default();
    let address = server.local_addr();
    let mut idle = Client::connect(address);
    assert_eq!(idle.get("/ready").status, 200);
    let started = Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop waited {:?}",
        started.elapsed()
    );
    assert!(idle.closed());
    assert!(TcpStream::connect(address).is_err(), "nothing listens after stop");
}

/// The write timeout bounds a whole response, not each write: a client
/// reading a large one a little at a time does not keep its connection
/// (and with it one of the few admin slots) open for ever.
#[test]
fn a_client_reading_a_trickle_loses_its_connection_at_the_write_timeout() {
    let limits = Limits {
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (server, fake) = start(None, limits);
    let large = "#".repeat(32 * 1024 * 1024);
    *fake.config.lock().expect("lock") = Some(Arc::from(large.as_str()));
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream
        .write_all(&request_bytes("GET", "/config", &[], b""))
        .expect("send");
    let started = Instant::now();
    let mut received = 0;
    let mut chunk = [0u8; 64 * 1024];
    // Far slower than the response could be written in the time allowed,
    // but never quiet for the write timeout: each write makes progress.
    let ended = loop {
        std::thread::sleep(Duration::from_millis(20));
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break true,
            Ok(n) => received += n,
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(ended, "still sending after 20 s ({received} bytes read)");
    assert!(received < large.len(), "the whole response went out ({received} bytes)");
}
