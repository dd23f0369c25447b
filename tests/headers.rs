//! Head rewriting as the upstream and the client see it: hop-by-hop fields
//! (and fields nominated by Connection) removed both ways, Host kept,
//! X-Forwarded-For / X-Forwarded-Proto / Via recorded, HTTP/1.1 upstream.

mod common;

use common::*;

fn echo_proxy() -> (Upstream, ringway::worker::Server, std::net::SocketAddr) {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    (up, server, addr)
}

/// All values of a list header, split on commas and trimmed, across lines.
fn list(values: Vec<&str>) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let (up, server, addr) = echo_proxy();
    let resp = request(
        addr,
        b"GET /hop HTTP/1.1\r\nHost: h.test\r\nConnection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x-checksum\r\nx-secret: s3cr3t\r\nx-kept: yes\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let seen = up.last();
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "x-secret",
    ] {
        assert!(
            seen.header(name).is_none(),
            "{name} must not be forwarded: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-kept"), Some("yes"), "end-to-end headers pass");
    stop(server);
}

#[test]
fn every_header_named_in_connection_is_removed() {
    let (up, server, addr) = echo_proxy();
    let resp = request(
        addr,
        b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: x-a\r\nConnection: X-B , x-c\r\n\
          x-a: 1\r\nx-b: 2\r\nX-C: 3\r\nx-d: 4\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let seen = up.last();
    for name in ["x-a", "x-b", "x-c", "connection"] {
        assert!(
            seen.header(name).is_none(),
            "{name} must not be forwarded: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-d"), Some("4"));
    stop(server);
}

#[test]
fn host_is_kept_verbatim() {
    let (up, server, addr) = echo_proxy();
    assert_eq!(get(addr, "api.local:8080", "/").status, 200);
    assert_eq!(up.last().header_all("host"), ["api.local:8080"]);
    stop(server);
}

#[test]
fn request_target_and_query_are_forwarded_verbatim() {
    let (up, server, addr) = echo_proxy();
    assert_eq!(get(addr, "h.test", "/a/b%20c?x=1&y=%2F").status, 200);
    assert_eq!(up.last().path, "/a/b%20c?x=1&y=%2F");
    stop(server);
}

#[test]
fn x_forwarded_for_is_set_or_appended() {
    let (up, server, addr) = echo_proxy();
    assert_eq!(get(addr, "h.test", "/").status, 200);
    assert_eq!(list(up.last().header_all("x-forwarded-for")), ["127.0.0.1"]);

    let resp = Client::connect(addr).get_with("h.test", "/", &["X-Forwarded-For: 1.2.3.4"]);
    assert_eq!(resp.status, 200);
    assert_eq!(list(up.last().header_all("x-forwarded-for")), ["1.2.3.4", "127.0.0.1"]);

    let resp = Client::connect(addr).get_with("h.test", "/", &["X-Forwarded-For: 1.2.3.4, 5.6.7.8"]);
    assert_eq!(resp.status, 200);
    assert_eq!(
        list(up.last().header_all("x-forwarded-for")),
        ["1.2.3.4", "5.6.7.8", "127.0.0.1"]
    );
    stop(server);
}

/// A client's X-Forwarded-Proto is kept when it is one line of http or
/// https (the default, for a proxy behind an ingress); a listener facing
/// clients directly can overwrite it with its own scheme.
#[test]
fn x_forwarded_proto_is_kept_or_overwritten() {
    let (up, server, addr) = echo_proxy();
    assert_eq!(get(addr, "h.test", "/").status, 200);
    assert_eq!(up.last().header_all("x-forwarded-proto"), ["http"]);
    let said = |addr, lines: &[&str]| {
        let resp = Client::connect(addr).get_with("h.test", "/", lines);
        assert_eq!(resp.status, 200);
        up.last()
            .header_all("x-forwarded-proto")
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        said(addr, &["X-Forwarded-Proto: https"]),
        ["https"],
        "a client's word is kept"
    );
    assert_eq!(
        said(addr, &["X-Forwarded-Proto: https", "X-Forwarded-Proto: javascript"]),
        ["http"],
        "two lines are no one's word"
    );
    stop(server);

    let (server, addr) = proxy(&simple_config(&[&up], "forwarded_proto = \"overwrite\"", ""));
    assert_eq!(said(addr, &["X-Forwarded-Proto: https"]), ["http"], "overwritten");
    stop(server);
}

#[test]
fn via_is_added_to_requests() {
    let (up, server, addr) = echo_proxy();
    assert_eq!(get(addr, "h.test", "/").status, 200);
    assert_eq!(list(up.last().header_all("via")), ["1.1 ringway"]);
    let resp = Client::connect(addr).get_with("h.test", "/", &["Via: 1.0 fred"]);
    assert_eq!(resp.status, 200);
    assert_eq!(list(up.last().header_all("via")), ["1.0 fred", "1.1 ringway"]);
    // The entry names the version the request came in with.
    assert_eq!(request(addr, b"GET / HTTP/1.0\r\nHost: h.test\r\n\r\n").status, 200);
    assert_eq!(list(up.last().header_all("via")), ["1.0 ringway"]);
    stop(server);
}

#[test]
fn via_is_added_to_responses() {
    let plain = Upstream::start(Behavior::Named("plain".into()));
    let (server, addr) = proxy(&simple_config(&[&plain], "", ""));
    let resp = get(addr, "h.test", "/");
    assert_eq!(list(resp.header_all("via")), ["1.1 ringway"]);
    stop(server);

    let via = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"x".to_vec(),
        headers: vec![("Via".into(), "1.1 backend".into())],
    });
    let (server, addr) = proxy(&simple_config(&[&via], "", ""));
    let resp = get(addr, "h.test", "/");
    assert_eq!(list(resp.header_all("via")), ["1.1 backend", "1.1 ringway"]);
    stop(server);

    // The entry names the version the response came in with.
    let old = Upstream::start(Behavior::Malformed(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
    ));
    let (server, addr) = proxy(&simple_config(&[&old], "", ""));
    let resp = get(addr, "h.test", "/");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hi"[..]));
    assert_eq!(list(resp.header_all("via")), ["1.0 ringway"]);
    stop(server);
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let up = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"body".to_vec(),
        headers: vec![
            ("Connection".into(), "x-resp-secret".into()),
            ("Keep-Alive".into(), "timeout=5".into()),
            ("Proxy-Connection".into(), "keep-alive".into()),
            ("Trailer".into(), "x-checksum".into()),
            ("Upgrade".into(), "h2c".into()),
            ("x-resp-secret".into(), "1".into()),
            ("x-resp-kept".into(), "2".into()),
        ],
    });
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let resp = client.get("h.test", "/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"body");
    for name in ["keep-alive", "proxy-connection", "trailer", "upgrade", "x-resp-secret"] {
        assert!(
            resp.header(name).is_none(),
            "{name} must not reach the client: {:?}",
            resp.headers
        );
    }
    for value in resp.header_all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-resp-secret"),
            "the upstream's Connection options are not relayed: {value}"
        );
    }
    assert_eq!(resp.header("x-resp-kept"), Some("2"));
    assert_eq!(client.get("h.test", "/again").status, 200, "keep-alive unaffected");
    stop(server);
}

#[test]
fn upstream_request_is_http11_even_for_http10_clients() {
    let (up, server, addr) = echo_proxy();
    let resp = request(addr, b"GET /v HTTP/1.0\r\nHost: h.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().version, 1);
    let echoed = Echoed::parse(&resp.body);
    assert_eq!(echoed.request_line, "GET /v HTTP/1.1");
    stop(server);
}

#[test]
fn other_headers_pass_unchanged_in_order() {
    let (up, server, addr) = echo_proxy();
    let resp = Client::connect(addr).get_with(
        "h.test",
        "/",
        &[
            "X-One: 1",
            "Accept: */*",
            "X-Dup: a",
            "X-Dup: b",
            "Cookie: k=v; k2=v2",
            "X-Empty:",
        ],
    );
    assert_eq!(resp.status, 200);
    let seen = up.last();
    assert_eq!(seen.header_all("x-dup"), ["a", "b"], "repeated fields keep their order");
    assert_eq!(seen.header("cookie"), Some("k=v; k2=v2"));
    assert_eq!(seen.header("accept"), Some("*/*"));
    assert_eq!(seen.header("x-empty"), Some(""));
    let names: Vec<String> = seen.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    let pos = |n: &str| names.iter().position(|x| x == n).expect("present");
    assert!(
        pos("x-one") < pos("accept") && pos("accept") < pos("x-dup"),
        "order kept: {names:?}"
    );
    stop(server);
}

#[test]
fn x_forwarded_for_across_several_header_lines_keeps_order() {
    let (up, server, addr) = echo_proxy();
    let resp = Client::connect(addr).get_with(
        "h.test",
        "/",
        &["X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 2.2.2.2, 3.3.3.3"],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        list(up.last().header_all("x-forwarded-for")),
        ["1.1.1.1", "2.2.2.2", "3.3.3.3", "127.0.0.1"]
    );
    stop(server);
}

/// Absolute-form target (RFC 9112 §3.2.2): the authority in the target
/// replaces Host, routing uses it, and the origin gets origin-form.
#[test]
fn absolute_form_target_is_forwarded_in_origin_form() {
    let abs = Upstream::start(Behavior::Echo);
    let other = Upstream::start(Behavior::Echo);
    let config = format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
  [[listener.route]]
  match = {{ host = \"abs.test\" }}
  cluster = \"abs\"
  [[listener.route]]
  match = {{ path_prefix = \"/\" }}
  cluster = \"other\"

[[cluster]]
name = \"abs\"
endpoints = {}

[[cluster]]
name = \"other\"
endpoints = {}
",
        endpoints(&[&abs]),
        endpoints(&[&other])
    );
    let (server, addr) = proxy(&config);
    let resp = request(addr, b"GET http://abs.test/x?y=1 HTTP/1.1\r\nHost: abs.test\r\n\r\n");
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(abs.requests(), 1, "routed by the target's authority");
    let seen = abs.last();
    assert_eq!(seen.path, "/x?y=1", "origin-form upstream");
    assert_eq!(seen.header_all("host"), ["abs.test"]);
    stop(server);
}

/// Heads larger than one I/O buffer but under the limit pass intact, both
/// ways.
#[test]
fn large_heads_under_the_limit_pass_intact() {
    let big_response_header = "c".repeat(30_000);
    let up = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"ok".to_vec(),
        headers: vec![("Set-Cookie".into(), big_response_header.clone())],
    });
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let mut client = Client::connect(addr);
    let values: Vec<String> = (0..6).map(|i| format!("{i}{}", "v".repeat(9_000))).collect();
    let lines: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("X-Big-{i}: {v}"))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let resp = client.get_with("h.test", "/", &refs);
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(resp.header("set-cookie"), Some(big_response_header.as_str()));
    let seen = up.last();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(seen.header(&format!("x-big-{i}")), Some(v.as_str()), "header {i}");
    }
    assert_eq!(client.get("h.test", "/again").status, 200);
    stop(server);
}

/// Field values may carry obs-text (bytes 0x80-0xFF): forwarded as is.
#[test]
fn obs_text_in_header_values_is_forwarded_byte_for_byte() {
    let (up, server, addr) = echo_proxy();
    let resp = request(
        addr,
        b"GET / HTTP/1.1\r\nHost: h.test\r\nX-Latin: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    let raw = up.last().raw_head;
    let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"caf\xe9\r\n"),
        "latin-1 byte kept: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(has(b"caf\xc3\xa9\r\n"), "utf-8 bytes kept");
    stop(server);
}

/// A route's `rewrite`, `request_headers` and `response_headers`: the
/// upstream sees the new path, Host and fields; the client sees the edited
/// response; a client's own copies of set or removed fields never pass.
#[test]
fn route_rewrites_path_host_and_fields_both_ways() {
    let up = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"ok".to_vec(),
        headers: vec![
            ("Server".into(), "upstream/1.0".into()),
            ("Cache-Control".into(), "max-age=60".into()),
            ("X-Kept".into(), "yes".into()),
        ],
    });
    let route = "rewrite = { path_prefix = \"/v1/\", host = \"api.internal:8443\" }
  request_headers = { set = { X-Env = \"prod\" }, add = { X-Tag = \"edge\" }, remove = [\"X-Debug\"] }
  response_headers = { set = { Cache-Control = \"no-store\" }, remove = [\"server\"] }";
    let (server, addr) = proxy(&config_with(&endpoints(&[&up]), "", route, ""));
    let resp = request(
        addr,
        b"GET /users/7?full=1 HTTP/1.1\r\nHost: public.test\r\nX-Env: dev\r\nX-Debug: 1\r\n\
          X-Tag: client\r\nx-debug: 2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header_all("cache-control").len(), 1);
    assert_eq!(resp.header("server"), None);
    assert_eq!(resp.header("x-kept"), Some("yes"));
    assert_eq!(resp.body, b"ok");

    let seen = up.last();
    assert_eq!(seen.path, "/v1/users/7?full=1");
    assert_eq!(seen.header_all("host"), vec!["api.internal:8443"]);
    assert_eq!(seen.header_all("x-env"), vec!["prod"]);
    assert_eq!(seen.header_all("x-tag"), vec!["client", "edge"]);
    assert!(seen.header("x-debug").is_none(), "{:?}", seen.headers);
    assert!(seen.header("x-forwarded-for").is_some(), "the hop is still recorded");
    stop(server);
}

/// A client cannot pass a route's set or removed field by spelling it with
/// `_` for `-`, which CGI-style servers read as the same name.
#[test]
fn underscore_spellings_of_set_or_removed_fields_do_not_pass() {
    let up = Upstream::start(Behavior::Echo);
    let route = "request_headers = { set = { x-user = \"anon\" }, remove = [\"x-secret\"] }";
    let (server, addr) = proxy(&config_with(&endpoints(&[&up]), "", route, ""));
    let resp = request(
        addr,
        b"GET / HTTP/1.1\r\nHost: h.test\r\nX_User: root\r\nX_Secret: s\r\nx_other: kept\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    let seen = up.last();
    assert_eq!(seen.header_all("x-user"), vec!["anon"], "{:?}", seen.headers);
    let names: Vec<String> = seen.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    assert!(!names.iter().any(|n| n == "x_user" || n == "x_secret"), "{names:?}");
    assert_eq!(seen.header("x_other"), Some("kept"));
    stop(server);
}

/// A client cannot hand the upstream a try number: x-ringway-attempts is
/// Ringway's own, written only by a retry policy.
#[test]
fn a_clients_attempts_field_is_dropped() {
    let (up, server, addr) = echo_proxy();
    let resp = request(
        addr,
        b"GET / HTTP/1.1\r\nHost: h.test\r\nx-ringway-attempts: 3\r\nX_Ringway_Attempts: 4\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.error_reason());
    let seen = up.last();
    let names: Vec<String> = seen.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    assert!(!names.iter().any(|n| n.contains("attempts")), "{names:?}");
    stop(server);
}

/// Each of `targets` is refused with 400 `bad-target`.
fn refused_as_bad_targets(addr: std::net::SocketAddr, targets: &[&str]) {
    for target in targets {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: h.test\r\n\r\n");
        let resp = request(addr, raw.as_bytes());
        assert_eq!(
            (resp.status, resp.error_reason()),
            (400, Some("bad-target")),
            "{target}"
        );
    }
}

/// On a route that rewrites its prefix, a dot segment (literal or encoded)
/// that the upstream would resolve out of the new prefix is refused.
#[test]
fn dot_segments_cannot_step_out_of_a_rewritten_prefix() {
    let up = Upstream::start(Behavior::Echo);
    let route = "rewrite = { path_prefix = \"/internal/\" }";
    let (server, addr) = proxy(&config_with(&endpoints(&[&up]), "", route, ""));
    refused_as_bad_targets(addr, &["/x/../admin", "/%2e%2e/admin", "/x/./y", "/x/..;/admin"]);
    assert_eq!(up.requests(), 0);
    let resp = request(addr, b"GET /x/..y HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().path, "/internal/x/..y");
    // Encoded characters after the prefix go through as sent.
    let resp = request(addr, b"GET /%7Euser/file%2Ejson HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().path, "/internal/%7Euser/file%2Ejson");
    stop(server);
}

/// A redirect that replaces a prefix refuses dot segments as a rewrite
/// does: the client would resolve them out of the new prefix, back to the
/// old one (a loop) or elsewhere.
#[test]
fn dot_segments_cannot_step_out_of_a_redirected_prefix() {
    let config = format!(
        "{RUNTIME_1}\n[[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\nmatch = {{ path_prefix = \"/old/\" }}\n\
         redirect = {{ path_prefix = \"/new/\" }}\n"
    );
    let (server, addr) = proxy(&config);
    refused_as_bad_targets(
        addr,
        &[
            "/old/../old/a",
            "/old/x/../../old/y",
            "/old/%2e%2e/old/a",
            "/old/./a",
            "/old/x/..;/y",
        ],
    );
    let moved = get(addr, "h.test", "/old/x/..y");
    assert_eq!(moved.status, 301, "{:?}", moved.error_reason());
    assert_eq!(moved.header("location"), Some("http://h.test/new/x/..y"));
    stop(server);
}

/// A path that matches a rewritten or redirected prefix only once
/// normalised (`/%61pi/` for `/api/`) does not start with it as sent: it is
/// refused rather than forwarded unrewritten or redirected to itself.
#[test]
fn a_prefix_matched_only_once_normalised_is_not_rewritten_or_redirected() {
    let up = Upstream::start(Behavior::Echo);
    let config = format!(
        "{RUNTIME_1}\n[[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\nmatch = {{ path_prefix = \"/api/\" }}\ncluster = \"a\"\n\
         rewrite = {{ path_prefix = \"/internal/\" }}\n\
         [[listener.route]]\nmatch = {{ path_prefix = \"/old/\" }}\n\
         redirect = {{ path_prefix = \"/new/\" }}\n\
         [[cluster]]\nname = \"a\"\nendpoints = {}\n",
        endpoints(&[&up])
    );
    let (server, addr) = proxy(&config);
    refused_as_bad_targets(addr, &["/%61pi/x", "/%6Fld/x"]);
    assert_eq!(up.requests(), 0);
    assert_eq!(get(addr, "h.test", "/api/%7Eu").status, 200);
    assert_eq!(up.last().path, "/internal/%7Eu");
    let moved = get(addr, "h.test", "/old/x");
    assert_eq!(
        moved.header("location").map(|l| l.ends_with("/new/x")),
        Some(true),
        "{:?}",
        moved.headers
    );
    stop(server);
}
