//! Head rewriting: exact output for the common shapes, every hop-by-hop rule,
//! X-Forwarded-* / Via combining, and that what we write parses back.

use super::*;
use crate::http::{parse_request, parse_response, Limits, Method, ParseStatus};
use std::net::{Ipv4Addr, Ipv6Addr};

const FWD: Forwarded<'static> = Forwarded {
    client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
    proto: "https",
    keep_client_proto: true,
    via: "1.1 ringway",
    client_identity: None,
    new_trace: false,
};

fn req(raw: &str) -> (Vec<u8>, RequestHead) {
    let mut head = RequestHead::default();
    let st = parse_request(raw.as_bytes(), &Limits::default(), &mut head);
    assert!(matches!(st, Ok(ParseStatus::Complete(_))), "{raw:?}: {st:?}");
    (raw.as_bytes().to_vec(), head)
}

fn rewrite_req(raw: &str, body: Framing, fwd: &Forwarded<'_>, extra: &[(&str, &[u8])]) -> String {
    edit_req(raw, body, fwd, extra, &RouteEdits::default())
}

fn edit_req(raw: &str, body: Framing, fwd: &Forwarded<'_>, extra: &[(&str, &[u8])], edits: &RouteEdits<'_>) -> String {
    let (buf, head) = req(raw);
    let mut out = Vec::new();
    write_request_head(&buf, &head, fwd, body, extra, edits, &mut out);
    // Whatever we send must itself be a valid, strict request.
    let mut again = RequestHead::default();
    let st = parse_request(&out, &Limits::default(), &mut again);
    assert_eq!(
        st,
        Ok(ParseStatus::Complete(out.len())),
        "{}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8(out).expect("ascii in tests")
}

fn fwd_req(raw: &str) -> String {
    rewrite_req(raw, Framing::Empty, &FWD, &[])
}

#[test]
fn plain_request() {
    let out = fwd_req("GET /a?b HTTP/1.1\r\nHost: api.local\r\nAccept: */*\r\n\r\n");
    assert_eq!(
        out,
        "GET /a?b HTTP/1.1\r\nHost: api.local\r\nAccept: */*\r\n\
         X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\nVia: 1.1 ringway\r\n\r\n"
    );
}

#[test]
fn absolute_form_becomes_origin_form_with_authority_as_host() {
    let out = fwd_req("GET http://Up.Local:8080/p?q HTTP/1.1\r\nHost: ignored\r\nA: 1\r\n\r\n");
    assert!(
        out.starts_with("GET /p?q HTTP/1.1\r\nHost: Up.Local:8080\r\nA: 1\r\n"),
        "{out}"
    );
    assert!(!out.contains("ignored"));
    let out = fwd_req("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
    let out = fwd_req("GET https://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("GET /?x=1 HTTP/1.1\r\n"), "{out}");
    let out = fwd_req("GET http://h:1/ HTTP/1.0\r\n\r\n");
    assert!(out.contains("\r\nHost: h:1\r\n"), "{out}");
}

#[test]
fn start_line_is_http11_and_keeps_method_text() {
    let out = fwd_req("PROPFIND /d HTTP/1.0\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("PROPFIND /d HTTP/1.1\r\n"), "{out}");
    let out = fwd_req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
    let out = fwd_req("OPTIONS http://h:1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\nHost: h:1\r\n"), "{out}");
    let out = fwd_req("OPTIONS http://h:1/ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("OPTIONS / HTTP/1.1\r\n"), "{out}");
}

#[test]
fn host_fallbacks() {
    // HTTP/1.0 without Host: upstream speaks 1.1 and needs one (may be empty).
    let out = fwd_req("GET / HTTP/1.0\r\n\r\n");
    assert!(out.contains("\r\nHost: \r\n"), "{out}");
    let extra: &[(&str, &[u8])] = &[("Host", b"backend.internal")];
    let out = rewrite_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", Framing::Empty, &FWD, extra);
    assert_eq!(out.matches("Host:").count(), 1, "{out}");
    assert!(out.contains("Host: backend.internal\r\n\r\n"), "{out}");
}

#[test]
fn hop_by_hop_fields_are_dropped() {
    let out = fwd_req(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: websocket\r\n\
         Expect: 100-continue\r\nKept: yes\r\n\r\n",
    );
    for gone in [
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE:",
        "Trailer",
        "Upgrade",
        "Expect",
    ] {
        assert!(!out.contains(gone), "{gone} leaked: {out}");
    }
    assert!(out.contains("Kept: yes\r\n"));
}

#[test]
fn fields_named_by_connection_are_dropped_but_never_host() {
    let out = fwd_req(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, host\r\nconnection: x-other\r\n\
         x-secret: 1\r\nX-Other: 2\r\nX-Kept: 3\r\n\r\n",
    );
    assert!(!out.to_ascii_lowercase().contains("x-secret"), "{out}");
    assert!(!out.contains("X-Other"), "{out}");
    assert!(out.contains("Host: h\r\n") && out.contains("X-Kept: 3\r\n"), "{out}");
    // Naming X-Forwarded-For or Via drops the client's values, not ours.
    let out = fwd_req(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-forwarded-for, via, x-forwarded-proto\r\n\
         X-Forwarded-For: 6.6.6.6\r\nVia: 1.0 evil\r\nX-Forwarded-Proto: http\r\n\r\n",
    );
    assert!(out.contains("X-Forwarded-For: 10.0.0.9\r\n"), "{out}");
    assert!(out.contains("Via: 1.1 ringway\r\n") && out.contains("X-Forwarded-Proto: https\r\n"));
    assert!(!out.contains("6.6.6.6") && !out.contains("evil") && !out.contains(": http\r"));
}

#[test]
fn framing_is_redeclared_from_body() {
    let chunked = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let out = rewrite_req(chunked, Framing::Length(11), &FWD, &[]);
    assert!(
        out.contains("Content-Length: 11\r\n") && !out.contains("Transfer-Encoding"),
        "{out}"
    );
    let sized = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    let out = rewrite_req(sized, Framing::Chunked, &FWD, &[]);
    assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    assert!(!out.contains("Content-Length"), "{out}");
    let out = rewrite_req(sized, Framing::Length(5), &FWD, &[]);
    assert_eq!(out.matches("Content-Length: 5\r\n").count(), 1, "{out}");
    let out = rewrite_req(sized, Framing::Empty, &FWD, &[]);
    assert!(!out.contains("Content-Length") && !out.contains("Transfer-Encoding"));
}

#[test]
fn x_forwarded_for_combines_and_appends() {
    let out = fwd_req("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n");
    assert!(out.contains("X-Forwarded-For: 1.1.1.1, 10.0.0.9\r\n"), "{out}");
    let out = fwd_req(
        "GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-for: a, b\r\nA: 1\r\nX-Forwarded-For: c,,\r\n\
         X-Forwarded-For:\r\n\r\n",
    );
    assert_eq!(out.matches("orwarded-For").count(), 1, "{out}");
    assert!(out.contains("X-Forwarded-For: a, b, c, 10.0.0.9\r\n"), "{out}");

    let mapped = Forwarded {
        client_ip: IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
        ..FWD
    };
    let out = rewrite_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", Framing::Empty, &mapped, &[]);
    assert!(out.contains("X-Forwarded-For: 192.0.2.1\r\n"), "{out}");
    let v6 = Forwarded {
        client_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ..FWD
    };
    let out = rewrite_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", Framing::Empty, &v6, &[]);
    assert!(out.contains("X-Forwarded-For: 2001:db8::1\r\n"), "{out}");
}

#[test]
fn client_cert_field_is_never_the_clients_own() {
    let spoof = "GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-client-cert: URI=spiffe://td/admin\r\n\r\n";
    let out = fwd_req(spoof);
    assert!(!out.to_ascii_lowercase().contains("x-forwarded-client-cert"), "{out}");
    let verified = Forwarded {
        client_identity: Some("spiffe://td/ns/web/sa/frontend"),
        ..FWD
    };
    let out = rewrite_req(spoof, Framing::Empty, &verified, &[]);
    assert_eq!(
        out.to_ascii_lowercase().matches("x-forwarded-client-cert").count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("X-Forwarded-Client-Cert: URI=spiffe://td/ns/web/sa/frontend\r\n"),
        "{out}"
    );
}

/// Read with `_` as `-` (CGI-style servers do: `HTTP_X_FORWARDED_...`), a
/// field that names one Ringway vouches for could forge it: dropped.
#[test]
fn underscore_lookalikes_of_vouched_fields_are_dropped() {
    let spoof = "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_Client_Cert: URI=spiffe://td/admin\r\n\
                 x_forwarded_for: 10.0.0.1\r\nX-Forwarded_Proto: https\r\nx_custom: kept\r\n\r\n";
    let out = fwd_req(spoof);
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("x_forwarded") && !lower.contains("forwarded_proto"),
        "{out}"
    );
    assert!(!out.contains("10.0.0.1") && !out.contains("spiffe"), "{out}");
    assert!(out.contains("x_custom: kept\r\n"), "other underscores pass: {out}");
    // Nor a body length: the upstream sees only the framing Ringway read.
    let framing = "POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\n\r\n";
    let out = fwd_req(framing).to_ascii_lowercase();
    assert!(
        !out.contains("transfer_encoding") && !out.contains("content_length"),
        "{out}"
    );
}

/// Only Ringway numbers tries: a client's x-ringway-attempts (in any
/// spelling) never passes, whether or not the proxy writes its own.
#[test]
fn client_attempts_field_is_never_forwarded() {
    let raw = "GET / HTTP/1.1\r\nHost: h\r\nx-ringway-attempts: 7\r\nX_Ringway_Attempts: 8\r\n\r\n";
    let out = fwd_req(raw);
    assert!(!out.to_ascii_lowercase().contains("attempts"), "{out}");
    let ours: &[(&str, &[u8])] = &[("x-ringway-attempts", b"1 ")];
    let out = rewrite_req(raw, Framing::Empty, &FWD, ours);
    assert_eq!(out.to_ascii_lowercase().matches("attempts").count(), 1, "{out}");
    assert!(out.ends_with("\r\nx-ringway-attempts: 1 \r\n\r\n"), "{out}");
}

#[test]
fn x_forwarded_proto_kept_or_set() {
    let proto = |raw: &str, fwd: &Forwarded| -> Vec<String> {
        let out = rewrite_req(raw, Framing::Empty, fwd, &[]);
        out.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-proto:"))
            .map(str::to_string)
            .collect()
    };
    let overwrite = Forwarded {
        keep_client_proto: false,
        ..FWD
    };
    for (raw, kept) in [
        ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", "https"),
        ("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\n\r\n", "http"),
        ("GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-proto: HTTP\r\n\r\n", "http"),
        // Only one line reading http or https is anyone's word.
        (
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: javascript\r\n\r\n",
            "https",
        ),
        (
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http, https\r\n\r\n",
            "https",
        ),
        (
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Proto: http\r\n\r\n",
            "https",
        ),
    ] {
        let expected = [format!("X-Forwarded-Proto: {kept}")];
        assert_eq!(proto(raw, &FWD), expected, "{raw:?}");
        assert_eq!(
            proto(raw, &overwrite),
            ["X-Forwarded-Proto: https"],
            "overwrite: {raw:?}"
        );
    }
}

#[test]
fn via_appends_to_existing() {
    let out = fwd_req("GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 fred, 1.1 p.example\r\nvia: 2 x\r\n\r\n");
    assert!(
        out.contains("Via: 1.0 fred, 1.1 p.example, 2 x, 1.1 ringway\r\n"),
        "{out}"
    );
    assert_eq!(out.to_ascii_lowercase().matches("via:").count(), 1, "{out}");
}

#[test]
fn extra_fields_come_last() {
    let extra: &[(&str, &[u8])] = &[("x-request-id", b"r1"), ("traceparent", b"00-ab-cd-01")];
    let out = rewrite_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", Framing::Empty, &FWD, extra);
    assert!(
        out.ends_with("Via: 1.1 ringway\r\nx-request-id: r1\r\ntraceparent: 00-ab-cd-01\r\n\r\n"),
        "{out}"
    );
}

fn prefix_edit<'a>(matched: &'a str, replacement: &'a str) -> RouteEdits<'a> {
    RouteEdits {
        path_prefix: Some((matched, replacement)),
        ..RouteEdits::default()
    }
}

fn target_after(raw: &str, edits: &RouteEdits<'_>) -> String {
    let out = edit_req(raw, Framing::Empty, &FWD, &[], edits);
    out.split(' ').nth(1).unwrap_or_default().to_string()
}

#[test]
fn path_prefix_is_replaced_and_the_query_kept() {
    let api = prefix_edit("/api/", "/");
    assert_eq!(
        target_after("GET /api/users?id=1 HTTP/1.1\r\nHost: h\r\n\r\n", &api),
        "/users?id=1"
    );
    assert_eq!(target_after("GET /api/ HTTP/1.1\r\nHost: h\r\n\r\n", &api), "/");
    let v2 = prefix_edit("/api", "/v2");
    assert_eq!(target_after("GET /api HTTP/1.1\r\nHost: h\r\n\r\n", &v2), "/v2");
    assert_eq!(
        target_after("GET /api/x?a=/api HTTP/1.1\r\nHost: h\r\n\r\n", &v2),
        "/v2/x?a=/api"
    );
    // As in Envoy: the replacement is literal, a doubled slash stays.
    let root = prefix_edit("/api", "/");
    assert_eq!(target_after("GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", &root), "//x");
    // Absolute-form: its path (`/` when empty) is what the route matched.
    let all = prefix_edit("/", "/base/");
    assert_eq!(
        target_after("GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", &all),
        "/base/?q=1"
    );
    assert_eq!(
        target_after("GET http://h/a/b HTTP/1.1\r\nHost: h\r\n\r\n", &all),
        "/base/a/b"
    );
    // A path without the prefix (never routed here) is sent as it came.
    assert_eq!(target_after("GET /other HTTP/1.1\r\nHost: h\r\n\r\n", &api), "/other");
    assert_eq!(target_after("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &all), "*");
    assert_eq!(target_after("OPTIONS http://h HTTP/1.1\r\nHost: h\r\n\r\n", &all), "*");
}

#[test]
fn route_fields_are_dropped_set_added_and_host_replaced() {
    let drop = ["x-debug".to_string(), "x-env".to_string()];
    let append = [
        ("x-env".to_string(), b"prod".to_vec()),
        ("x-tag".to_string(), b"a b".to_vec()),
        ("Host".to_string(), b"api.internal:8080".to_vec()),
    ];
    let edits = RouteEdits {
        drop: &drop,
        append: &append,
        path_prefix: None,
    };
    let raw = "GET /x HTTP/1.1\r\nHost: h\r\nX-Debug: 1\r\nX-Env: dev\r\nx-tag: client\r\nx-debug: 2\r\n\r\n";
    let extra: &[(&str, &[u8])] = &[("traceparent", b"00-ab-cd-01")];
    let out = edit_req(raw, Framing::Empty, &FWD, extra, &edits);
    assert!(!out.to_ascii_lowercase().contains("x-debug"), "{out}");
    assert!(!out.contains("dev"), "a set field replaces the client's: {out}");
    assert!(
        out.contains("x-tag: client\r\n"),
        "an added field keeps the client's: {out}"
    );
    assert_eq!(out.matches("Host:").count(), 1, "{out}");
    assert!(
        out.ends_with("traceparent: 00-ab-cd-01\r\nx-env: prod\r\nx-tag: a b\r\nHost: api.internal:8080\r\n\r\n"),
        "{out}"
    );
    // The proxy's own fields win over the route's (a mirror's shadow Host).
    let shadow: &[(&str, &[u8])] = &[("Host", b"h-shadow")];
    let out = edit_req(
        "GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
        Framing::Empty,
        &FWD,
        shadow,
        &edits,
    );
    assert_eq!(out.matches("Host:").count(), 1, "{out}");
    assert!(out.contains("Host: h-shadow\r\n"), "{out}");
    // Absolute-form: the configured Host wins over the target's authority.
    let out = edit_req(
        "GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Framing::Empty,
        &FWD,
        &[],
        &edits,
    );
    assert!(
        out.starts_with("GET /x HTTP/1.1\r\n") && !out.contains("a.test"),
        "{out}"
    );
}

/// A route's set or removed field, spelled with `_` for `-` (which
/// CGI-style servers read as the same, `HTTP_X_USER`), does not pass either;
/// other underscores do, and responses keep exact names.
#[test]
fn underscore_spellings_of_route_dropped_fields_are_dropped() {
    let drop = ["x-user".to_string(), "x-secret".to_string(), "x_legacy".to_string()];
    let append = [("x-user".to_string(), b"anon".to_vec())];
    let edits = RouteEdits {
        drop: &drop,
        append: &append,
        path_prefix: None,
    };
    let raw = "GET / HTTP/1.1\r\nHost: h\r\nX_User: root\r\nX_Secret: s\r\nx_SECRET: t\r\n\
               X-Legacy: l\r\nx_users: kept\r\nx__user: kept\r\n\r\n";
    let out = edit_req(raw, Framing::Empty, &FWD, &[], &edits);
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("root") && !lower.contains("secret") && !lower.contains("legacy"),
        "{out}"
    );
    assert!(
        out.contains("x_users: kept\r\n") && out.contains("x__user: kept\r\n"),
        "{out}"
    );
    assert!(out.ends_with("x-user: anon\r\n\r\n"), "{out}");
    let raw = "HTTP/1.1 200 OK\r\nX_Secret: s\r\nContent-Length: 0\r\n\r\n";
    let out = edit_resp(raw, Method::Get, Framing::Empty, false, false, &edits);
    assert!(out.contains("X_Secret: s\r\n"), "{out}");
}

#[test]
fn response_fields_are_edited_after_framing_and_via() {
    let drop = ["server".to_string(), "cache-control".to_string()];
    let append = [("cache-control".to_string(), b"no-store".to_vec())];
    let edits = RouteEdits {
        drop: &drop,
        append: &append,
        path_prefix: Some(("/", "/ignored")),
    };
    let raw = "HTTP/1.1 200 OK\r\nServer: up\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\n";
    let out = edit_resp(raw, Method::Get, Framing::Length(2), false, false, &edits);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 ringway\r\ncache-control: no-store\r\n\r\n"
    );
}

fn resp(raw: &str, method: Method) -> (Vec<u8>, ResponseHead) {
    let mut head = ResponseHead::default();
    let st = parse_response(raw.as_bytes(), &Limits::default(), method, &mut head);
    assert!(matches!(st, Ok(ParseStatus::Complete(_))), "{raw:?}: {st:?}");
    (raw.as_bytes().to_vec(), head)
}

fn rewrite_resp(raw: &str, method: Method, body: Framing, close: bool, ka10: bool) -> String {
    edit_resp(raw, method, body, close, ka10, &RouteEdits::default())
}

fn edit_resp(raw: &str, method: Method, body: Framing, close: bool, ka10: bool, edits: &RouteEdits<'_>) -> String {
    let (buf, head) = resp(raw, method);
    let mut out = Vec::new();
    write_response_head(&buf, &head, "1.1 ringway", body, close, ka10, &[], edits, &mut out);
    let mut again = ResponseHead::default();
    let st = parse_response(&out, &Limits::default(), method, &mut again);
    assert_eq!(
        st,
        Ok(ParseStatus::Complete(out.len())),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        (again.status, again.reason_bytes(&out)),
        (head.status, head.reason_bytes(&buf))
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn plain_response() {
    let raw =
        "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: up\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Length(5), false, false);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 5\r\nVia: 1.1 ringway\r\n\r\n"
    );
}

#[test]
fn response_hop_by_hop_and_connection_named() {
    let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Up-Secret\r\nX-Up-Secret: 1\r\n\
               Trailer: X-Sum\r\nUpgrade: h2c\r\nProxy-Connection: close\r\nVia: 1.1 inner\r\nSet-Cookie: a=b\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Chunked, false, false);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nTransfer-Encoding: chunked\r\nVia: 1.1 inner, 1.1 ringway\r\n\r\n"
    );
}

#[test]
fn response_connection_flags() {
    let raw = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Length(0), true, true);
    assert!(
        out.ends_with("Connection: close\r\n\r\n") && !out.contains("keep-alive"),
        "{out}"
    );
    let out = rewrite_resp(raw, Method::Get, Framing::Length(0), false, true);
    assert!(out.ends_with("Connection: keep-alive\r\n\r\n"), "{out}");
    // Until-close upstream bodies are re-framed or closed by the caller.
    let out = rewrite_resp("HTTP/1.0 200 OK\r\n\r\n", Method::Get, Framing::UntilClose, true, false);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nVia: 1.1 ringway\r\nConnection: close\r\n\r\n");
}

#[test]
fn no_body_responses_keep_or_drop_content_length() {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    let out = rewrite_resp(raw, Method::Head, Framing::Empty, false, false);
    assert!(
        out.contains("Content-Length: 1234\r\n"),
        "HEAD keeps the GET length: {out}"
    );
    let raw = "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"e\"\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Empty, false, false);
    assert!(out.contains("Content-Length: 99\r\n"), "{out}");
    let raw = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Empty, false, false);
    assert!(!out.contains("Content-Length"), "{out}");
    let raw = "HTTP/1.1 100 Continue\r\n\r\n";
    assert_eq!(
        rewrite_resp(raw, Method::Get, Framing::Empty, false, false),
        "HTTP/1.1 100 Continue\r\nVia: 1.1 ringway\r\n\r\n"
    );
    // A body-bearing response sent without its body still tells the client so.
    let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Empty, false, false);
    assert!(
        out.contains("Content-Length: 0\r\n") && !out.contains("Transfer"),
        "{out}"
    );
}

#[test]
fn response_reason_is_preserved_byte_for_byte() {
    let raw = "HTTP/1.1 599 Custom \u{e9}\tReason\r\nContent-Length: 0\r\n\r\n";
    let out = rewrite_resp(raw, Method::Get, Framing::Length(0), false, false);
    assert!(out.starts_with("HTTP/1.1 599 Custom \u{e9}\tReason\r\n"), "{out}");
    let out = rewrite_resp(
        "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        Method::Get,
        Framing::Length(0),
        false,
        false,
    );
    assert!(out.starts_with("HTTP/1.1 200 \r\n"), "{out}");
}

#[test]
fn status_codes_and_lengths_are_written_digit_for_digit() {
    for status in [100, 101, 200, 204, 304, 404, 503, 599] {
        let raw = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        let out = rewrite_resp(&raw, Method::Head, Framing::Empty, false, false);
        assert!(out.starts_with(&format!("HTTP/1.1 {status} X\r\n")), "{out}");
    }
    for n in [0, 7, 10, 65_536, u64::MAX] {
        let out = rewrite_resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Get,
            Framing::Length(n),
            false,
            false,
        );
        assert!(out.contains(&format!("\r\nContent-Length: {n}\r\n")), "{out}");
    }
}
