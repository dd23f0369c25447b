//! Route matching over real sockets: every match key (host exact and
//! wildcard, path exact / prefix / regex, method, header exact and present),
//! first-match order, weighted splits and header-based canary routing.
//! Each cluster is a named upstream, so `x-upstream` tells where a request went.

mod common;

use common::*;
use std::collections::HashMap;

/// One named upstream per cluster name, plus the config text that declares
/// the clusters.
struct Clusters {
    upstreams: HashMap<String, Upstream>,
}

impl Clusters {
    fn new(names: &[&str]) -> Clusters {
        let upstreams = names
            .iter()
            .map(|n| (n.to_string(), Upstream::start(Behavior::Named(n.to_string()))))
            .collect();
        Clusters { upstreams }
    }

    fn toml(&self) -> String {
        let mut names: Vec<&String> = self.upstreams.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                format!(
                    "[[cluster]]\nname = \"{n}\"\nendpoints = [ {} ]\n\n",
                    self.upstreams[n].endpoint(1)
                )
            })
            .collect()
    }

    fn requests(&self, name: &str) -> usize {
        self.upstreams[name].requests()
    }
}

fn listener(routes: &str) -> String {
    format!("[[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n{routes}\n")
}

fn route(name: &str, matcher: &str, cluster: &str) -> String {
    format!("  [[listener.route]]\n  name = \"{name}\"\n  match = {{ {matcher} }}\n  cluster = \"{cluster}\"\n\n")
}

/// Where the proxy sent a request: the `x-upstream` name, or the error reason.
fn target(resp: &Response) -> String {
    match resp.status {
        200 => resp
            .header("x-upstream")
            .expect("200 from a named upstream")
            .to_string(),
        404 => {
            assert_eq!(
                resp.error_reason(),
                Some("no-route"),
                "404 must be the proxy's no-route"
            );
            "404".to_string()
        }
        other => panic!("unexpected status {other}: {}", resp.text()),
    }
}

/// The routing table most tests share. No catch-all: anything unmatched is 404.
fn table() -> (Clusters, String) {
    let clusters = Clusters::new(&["exact", "regex", "api", "wild", "post", "canary", "flag", "prefix"]);
    let routes = [
        route("exact-path", "path = \"/exact\"", "exact"),
        route("regex", "path_regex = \"^/v[0-9]+/x$\"", "regex"),
        route("host-exact", "host = \"api.local\"", "api"),
        route("host-wild", "host = \"*.example.com\"", "wild"),
        route("method", "method = \"POST\", path_prefix = \"/m/\"", "post"),
        route(
            "hdr-exact",
            "path_prefix = \"/h/\", headers = { \"x-canary\" = \"1\" }",
            "canary",
        ),
        route(
            "hdr-present",
            "path_prefix = \"/h/\", headers = { \"x-flag\" = \"*\" }",
            "flag",
        ),
        route("prefix", "path_prefix = \"/p/\"", "prefix"),
    ]
    .concat();
    let config = format!("{RUNTIME_1}{}{}", listener(&routes), clusters.toml());
    (clusters, config)
}

fn raw_get(host: &str, path: &str, headers: &[&str]) -> Vec<u8> {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// Run `(method, host, path, headers, expected target)` cases on one connection.
fn check(cases: &[(&str, &str, &str, &[&str], &str)]) {
    let (clusters, config) = table();
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    for (method, host, path, headers, expected) in cases {
        let mut raw = String::from_utf8(raw_get(host, path, headers)).expect("ascii");
        raw.replace_range(..3, method);
        if *method == "POST" {
            raw = raw.replacen("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n", 1);
        }
        let resp = client.request(raw.as_bytes());
        assert_eq!(
            target(&resp),
            *expected,
            "{method} {path} Host: {host} {headers:?} went to the wrong place"
        );
        if resp.status == 404 {
            // A 404 may close the connection; carry on with a fresh one.
            client = Client::connect(addr);
        }
    }
    let total: usize = clusters.upstreams.values().map(Upstream::requests).sum();
    let routed = cases.iter().filter(|c| c.4 != "404").count();
    assert_eq!(total, routed, "every routed request reached exactly one upstream");
    stop(server);
}

#[test]
fn exact_path_matches_only_that_path() {
    check(&[
        ("GET", "other.test", "/exact", &[], "exact"),
        ("GET", "other.test", "/exact/", &[], "404"),
        ("GET", "other.test", "/exactly", &[], "404"),
        ("GET", "other.test", "/EXACT", &[], "404"),
    ]);
}

/// Paths are matched as an RFC 3986 upstream reads them (encoded
/// unreserved characters decoded, dot segments resolved), so that those
/// spellings of a path do not escape the route, and its rules, that it
/// reaches upstream; the path itself goes upstream as sent.
#[test]
fn paths_match_as_an_upstream_reads_them() {
    check(&[
        ("GET", "other.test", "/%65xact", &[], "exact"),
        ("GET", "other.test", "/x/../exact", &[], "exact"),
        ("GET", "other.test", "/p/./a", &[], "prefix"),
        ("GET", "other.test", "/q/%2e%2E/p/a", &[], "prefix"),
        ("GET", "other.test", "/p/../exact", &[], "exact"),
        ("GET", "other.test", "/p%2Fa", &[], "404"),
    ]);
    let (clusters, config) = table();
    let (server, addr) = proxy(&config);
    assert_eq!(target(&get(addr, "other.test", "/x/../%65xact")), "exact");
    let received = clusters.upstreams["exact"].last();
    assert_eq!(received.path, "/x/../%65xact", "forwarded as sent");
    stop(server);
}

#[test]
fn exact_path_ignores_the_query_string() {
    check(&[("GET", "other.test", "/exact?debug=1", &[], "exact")]);
}

#[test]
fn path_prefix_matches_paths_under_it() {
    check(&[
        ("GET", "other.test", "/p/", &[], "prefix"),
        ("GET", "other.test", "/p/a/b/c", &[], "prefix"),
        ("GET", "other.test", "/p", &[], "404"),
        ("GET", "other.test", "/pp/", &[], "404"),
    ]);
}

#[test]
fn path_regex_must_match_the_whole_path() {
    check(&[
        ("GET", "other.test", "/v1/x", &[], "regex"),
        ("GET", "other.test", "/v2024/x", &[], "regex"),
        ("GET", "other.test", "/v/x", &[], "404"),
        ("GET", "other.test", "/va/x", &[], "404"),
        ("GET", "other.test", "/v1/x/y", &[], "404"),
        ("GET", "other.test", "/a/v1/x", &[], "404"),
    ]);
}

#[test]
fn exact_host_matches_any_path_and_ignores_port_and_case() {
    check(&[
        ("GET", "api.local", "/", &[], "api"),
        ("GET", "api.local", "/anything/at/all", &[], "api"),
        ("GET", "api.local:8080", "/", &[], "api"),
        ("GET", "API.Local", "/", &[], "api"),
        ("GET", "api.local.evil", "/", &[], "404"),
        ("GET", "xapi.local", "/", &[], "404"),
    ]);
}

#[test]
fn wildcard_host_matches_subdomains_only() {
    check(&[
        ("GET", "a.example.com", "/", &[], "wild"),
        ("GET", "deep.sub.example.com", "/", &[], "wild"),
        ("GET", "a.example.com:81", "/", &[], "wild"),
        ("GET", "example.com", "/", &[], "404"),
        ("GET", "xexample.com", "/", &[], "404"),
        ("GET", "a.example.com.evil", "/", &[], "404"),
    ]);
}

#[test]
fn method_condition() {
    check(&[
        ("POST", "other.test", "/m/1", &[], "post"),
        ("GET", "other.test", "/m/1", &[], "404"),
        ("PUT", "other.test", "/m/1", &[], "404"),
    ]);
}

#[test]
fn header_exact_value_and_presence() {
    check(&[
        ("GET", "other.test", "/h/1", &["x-canary: 1"], "canary"),
        ("GET", "other.test", "/h/1", &["X-Canary: 1"], "canary"),
        ("GET", "other.test", "/h/1", &["x-canary: 2"], "404"),
        ("GET", "other.test", "/h/1", &["x-canary: 10"], "404"),
        ("GET", "other.test", "/h/1", &[], "404"),
        ("GET", "other.test", "/h/1", &["x-flag: anything"], "flag"),
        ("GET", "other.test", "/h/1", &["X-FLAG: 0"], "flag"),
        // Both conditions hold: the earlier route wins.
        ("GET", "other.test", "/h/1", &["x-flag: y", "x-canary: 1"], "canary"),
        // Field lines are one value however they are written (RFC 9110
        // §5.3): `1, 2` is not `1`, on one line or on two.
        ("GET", "other.test", "/h/1", &["x-canary: 1, 2"], "404"),
        ("GET", "other.test", "/h/1", &["x-canary: 1", "x-canary: 2"], "404"),
        ("GET", "other.test", "/h/1", &["x-flag: a", "x-flag: b"], "flag"),
    ]);
}

/// A field the client names in `Connection` is dropped on the way as
/// hop-by-hop: routing does not see it either, so no route is chosen by a
/// field its upstream never gets.
#[test]
fn header_matches_ignore_fields_named_in_connection() {
    check(&[
        (
            "GET",
            "other.test",
            "/h/1",
            &["Connection: x-canary", "x-canary: 1"],
            "404",
        ),
        (
            "GET",
            "other.test",
            "/h/1",
            &["x-flag: y", "Connection: keep-alive, X-Flag"],
            "404",
        ),
        // Another field named there leaves these as they are.
        (
            "GET",
            "other.test",
            "/h/1",
            &["Connection: x-other", "x-canary: 1"],
            "canary",
        ),
        (
            "GET",
            "other.test",
            "/h/1",
            &["Connection: x-canary", "x-canary: 1", "x-flag: y"],
            "flag",
        ),
    ]);
}

/// `OPTIONS *` and `OPTIONS http://host` ask the same of the server as a
/// whole (RFC 9112 §3.2.4): both are routed by `/` and go up as `*`.
#[test]
fn options_for_the_whole_server_is_routed_by_the_root() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    for raw in [
        &b"OPTIONS * HTTP/1.1\r\nHost: o.test\r\n\r\n"[..],
        b"OPTIONS http://o.test HTTP/1.1\r\nHost: o.test\r\n\r\n",
    ] {
        let resp = request(addr, raw);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(raw));
        assert_eq!(Echoed::parse(&resp.body).request_line, "OPTIONS * HTTP/1.1");
    }
    stop(server);
}

#[test]
fn unmatched_request_is_404_no_route() {
    let (_clusters, config) = table();
    let (server, addr) = proxy(&config);
    let resp = get(addr, "other.test", "/nowhere");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.error_reason(), Some("no-route"));
    assert!(!resp.body.is_empty(), "a proxy error carries a text body");
    stop(server);
}

/// The same two overlapping routes in both orders: the first listed wins,
/// not the longest or most specific.
#[test]
fn first_match_wins_in_config_order() {
    for (first, second, expected) in [("one", "two", "one"), ("two", "one", "two")] {
        let clusters = Clusters::new(&["one", "two"]);
        let prefix_of = |c: &str| {
            if c == "one" {
                "/order/"
            } else {
                "/order/deep/"
            }
        };
        let routes = [
            route("first", &format!("path_prefix = \"{}\"", prefix_of(first)), first),
            route("second", &format!("path_prefix = \"{}\"", prefix_of(second)), second),
        ]
        .concat();
        let config = format!("{RUNTIME_1}{}{}", listener(&routes), clusters.toml());
        let (server, addr) = proxy(&config);
        let resp = get(addr, "other.test", "/order/deep/x");
        assert_eq!(target(&resp), expected, "routes listed {first} then {second}");
        stop(server);
    }
}

/// A catch-all route listed first shadows everything after it.
#[test]
fn catch_all_first_shadows_later_routes() {
    let clusters = Clusters::new(&["all", "specific"]);
    let routes = [
        route("all", "path_prefix = \"/\"", "all"),
        route("specific", "path = \"/specific\"", "specific"),
    ]
    .concat();
    let config = format!("{RUNTIME_1}{}{}", listener(&routes), clusters.toml());
    let (server, addr) = proxy(&config);
    assert_eq!(target(&get(addr, "h", "/specific")), "all");
    assert_eq!(clusters.requests("specific"), 0);
    stop(server);
}

fn split_config(clusters: &Clusters) -> String {
    let routes = format!(
        "{}  [[listener.route]]\n  name = \"api\"\n  match = {{ path_prefix = \"/api/\" }}\n  split = [ {{ cluster = \"stable\", weight = 90 }}, {{ cluster = \"canary\", weight = 10 }} ]\n\n",
        route(
            "canary-by-header",
            "path_prefix = \"/api/\", headers = { \"x-canary\" = \"1\" }",
            "canary"
        ),
    );
    format!("{RUNTIME_1}{}{}", listener(&routes), clusters.toml())
}

#[test]
fn weighted_split_90_10_within_three_points() {
    const N: usize = 2000;
    let clusters = Clusters::new(&["stable", "canary"]);
    let (server, addr) = proxy(&split_config(&clusters));
    let mut client = Client::connect(addr);
    let mut canary = 0;
    for i in 0..N {
        let resp = client.get("other.test", &format!("/api/{i}"));
        match target(&resp).as_str() {
            "canary" => canary += 1,
            "stable" => {}
            other => panic!("split sent a request to {other}"),
        }
    }
    assert_eq!(clusters.requests("stable") + clusters.requests("canary"), N);
    assert_eq!(clusters.requests("canary"), canary);
    let share = canary as f64 * 100.0 / N as f64;
    assert!(
        (7.0..=13.0).contains(&share),
        "canary got {share:.1}% of {N} requests, expected 10 ± 3"
    );
    stop(server);
}

#[test]
fn header_route_sends_every_flagged_request_to_the_canary() {
    let clusters = Clusters::new(&["stable", "canary"]);
    let (server, addr) = proxy(&split_config(&clusters));
    let mut client = Client::connect(addr);
    for i in 0..100 {
        let resp = client.get_with("other.test", &format!("/api/{i}"), &["x-canary: 1"]);
        assert_eq!(target(&resp), "canary", "request {i} with x-canary: 1");
    }
    assert_eq!(clusters.requests("canary"), 100);
    assert_eq!(clusters.requests("stable"), 0);
    stop(server);
}

/// Routes Ringway answers itself: a redirect built from the request and the
/// route's parts, and a fixed response; neither reaches an upstream, both
/// leave the connection open, and both count under their route.
#[test]
fn redirects_and_direct_responses_are_answered_here() {
    let clusters = Clusters::new(&["app"]);
    let config = format!(
        "{}{}",
        listener(
            "  [[listener.route]]\n  name = \"old-api\"\n  match = { path_prefix = \"/old/\" }\n  \
             redirect = { scheme = \"https\", path_prefix = \"/v2/\", status = 308 }\n\n  \
             [[listener.route]]\n  name = \"health\"\n  match = { path = \"/healthz\" }\n  \
             direct_response = { status = 200, body = \"ok\\n\", content_type = \"text/plain; charset=utf-8\" }\n  \
             response_headers = { set = { Cache-Control = \"no-store\" } }\n\n  \
             [[listener.route]]\n  match = { path_prefix = \"/\" }\n  cluster = \"app\"\n"
        ),
        clusters.toml()
    );
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    let moved = client.get("shop.test:8080", "/old/items?page=2");
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), Some("https://shop.test/v2/items?page=2"));
    assert_eq!(moved.header("content-length"), Some("0"));
    assert_eq!(
        moved.header("x-request-id").map(str::len),
        Some(36),
        "the request was named (a UUID)"
    );
    let health = client.get("shop.test", "/healthz");
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(health.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(health.header("cache-control"), Some("no-store"));
    client.send(b"HEAD /healthz HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    let head = client.try_read_response(true).expect("an answer to HEAD");
    assert_eq!((head.status, head.header("content-length")), (200, Some("3")));
    assert!(head.body.is_empty());
    // A small body that came with the head is passed over.
    let post = client.request(b"POST /old/orders HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!((post.status, post.header("connection")), (308, None));
    assert_eq!(client.get("shop.test", "/other").status, 200, "the connection goes on");
    let chunked = client.request(
        b"POST /old/orders HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
    );
    assert_eq!((chunked.status, chunked.header("connection")), (308, None));
    assert_eq!(
        client.get("shop.test", "/other").status,
        200,
        "also after a chunked one"
    );
    assert_eq!(clusters.requests("app"), 2);
    let metrics = server.metrics();
    for series in [
        "ringway_requests_total{listener=\"ingress\",route=\"old-api\",cluster=\"\",code=\"308\"} 3",
        "ringway_requests_total{listener=\"ingress\",route=\"health\",cluster=\"\",code=\"200\"} 2",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    stop(server);
}

/// A path that some servers read their own way (`..;` is `..` to Java
/// servers, `\` a separator to Windows ones, `%2F` to those that decode
/// first, `//` one slash to NGINX) must meet the same route whichever way
/// it is read, each server's way on its own; when the readings part, no
/// route's rules are right and it is refused. Where they agree, it goes
/// upstream as sent.
#[test]
fn paths_servers_read_differently_must_agree_on_the_route() {
    let clusters = Clusters::new(&["admin", "rest"]);
    let routes = [
        route("admin", "path_prefix = \"/admin/\"", "admin"),
        route("rest", "path_prefix = \"/\"", "rest"),
    ]
    .concat();
    let (server, addr) = proxy(&format!("{RUNTIME_1}{}{}", listener(&routes), clusters.toml()));
    for path in [
        "/public/..;/admin/x",
        "/public/%2e%2e;x/admin/x",
        "/public\\..\\admin/x",
        "/public/..%2Fadmin/x",
        "/admin;v=1/x",
        "//admin/x",
        "/admin;%2F..%2F/y",
        "//admin/x/..;/..;/public",
        "http://h.test/public/..;/admin/x",
    ] {
        let resp = request(addr, &raw_get("h.test", path, &[]));
        assert_eq!((resp.status, resp.error_reason()), (400, Some("bad-target")), "{path}");
    }
    assert_eq!(clusters.requests("admin") + clusters.requests("rest"), 0);
    for (path, to) in [
        ("/public/a;v=1/b", "rest"),
        ("/admin/x;v=1", "admin"),
        ("/admin//x", "admin"),
        ("/a\\b", "rest"),
    ] {
        let resp = request(addr, &raw_get("h.test", path, &[]));
        assert_eq!(target(&resp), to, "{path}");
    }
    stop(server);

    // A listener told its upstreams read paths as RFC 3986 does routes by
    // that reading alone.
    let forwarding = listener(&routes).replace(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nlax_paths = \"forward\"\n",
    );
    let (server, addr) = proxy(&format!("{RUNTIME_1}{forwarding}{}", clusters.toml()));
    for (path, to) in [
        ("/public/..;/admin/x", "rest"),
        ("/admin;v=1/x", "rest"),
        ("//admin/x", "rest"),
    ] {
        let resp = request(addr, &raw_get("h.test", path, &[]));
        assert_eq!(target(&resp), to, "{path}");
    }
    stop(server);
}
