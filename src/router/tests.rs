//! Unit tests for the route table: one per match kind, plus the ordering and
//! wildcard edge cases that an index could plausibly get wrong.

use super::*;

/// A route builder so each test states only the conditions it is about.
fn route(target: &'static str) -> RouteSpec<&'static str> {
    RouteSpec {
        host: None,
        path: PathMatch::Any,
        method: None,
        headers: Vec::new(),
        target,
    }
}

fn host(mut r: RouteSpec<&'static str>, h: &str) -> RouteSpec<&'static str> {
    r.host = Some(match h.strip_prefix("*.") {
        Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
        None => HostMatch::Exact(h.to_owned()),
    });
    r
}

fn path(mut r: RouteSpec<&'static str>, p: PathMatch) -> RouteSpec<&'static str> {
    r.path = p;
    r
}

fn table(routes: Vec<RouteSpec<&'static str>>) -> RouteTable<&'static str> {
    match RouteTable::compile(routes) {
        Ok(t) => t,
        Err(e) => panic!("routes should compile: {e}"),
    }
}

/// The target chosen for a GET of `path` on `host` without headers.
fn get<'t>(t: &'t RouteTable<&'static str>, host: Option<&str>, path: &str) -> Option<&'t str> {
    let req = RouteRequest {
        host,
        path,
        method: "GET",
        headers: &NoHeaders,
    };
    t.lookup(&req).map(|(_, target)| *target)
}

#[test]
fn empty_table_matches_nothing() {
    let t = table(vec![]);
    assert!(t.is_empty());
    assert_eq!(get(&t, Some("a.com"), "/"), None);
}

#[test]
fn route_without_conditions_matches_everything() {
    let t = table(vec![route("all")]);
    assert_eq!(t.len(), 1);
    assert_eq!(get(&t, None, "/"), Some("all"));
    assert_eq!(get(&t, Some("x.y"), "/any/thing"), Some("all"));
}

#[test]
fn lookup_reports_the_route_index() {
    let t = table(vec![path(route("a"), PathMatch::Exact("/a".into())), route("b")]);
    let req = RouteRequest {
        host: None,
        path: "/zzz",
        method: "GET",
        headers: &NoHeaders,
    };
    assert_eq!(t.lookup(&req), Some((1, &"b")));
}

#[test]
fn exact_host_is_case_insensitive_and_needs_a_host() {
    let t = table(vec![host(route("api"), "API.Local")]);
    assert_eq!(get(&t, Some("api.local"), "/"), Some("api"));
    assert_eq!(get(&t, Some("api.local.evil"), "/"), None);
    assert_eq!(get(&t, Some("x.api.local"), "/"), None);
    assert_eq!(get(&t, None, "/"), None);
}

#[test]
fn wildcard_needs_at_least_one_label_before_the_suffix() {
    let t = table(vec![host(route("wild"), "*.A.com")]);
    assert_eq!(get(&t, Some("x.a.com"), "/"), Some("wild"));
    assert_eq!(get(&t, Some("y.x.a.com"), "/"), Some("wild"));
    assert_eq!(get(&t, Some("a.com"), "/"), None);
    assert_eq!(get(&t, Some(".a.com"), "/"), None);
    assert_eq!(get(&t, Some("xa.com"), "/"), None);
    assert_eq!(get(&t, Some("x.a.com.evil"), "/"), None);
    assert_eq!(get(&t, None, "/"), None);
}

#[test]
fn nested_wildcards_and_exact_host_resolve_by_config_order() {
    let t = table(vec![
        host(route("deep"), "*.x.a.com"),
        host(route("exact"), "x.a.com"),
        host(route("wide"), "*.a.com"),
    ]);
    assert_eq!(get(&t, Some("y.x.a.com"), "/"), Some("deep"));
    assert_eq!(get(&t, Some("x.a.com"), "/"), Some("exact"));
    assert_eq!(get(&t, Some("z.a.com"), "/"), Some("wide"));
}

#[test]
fn exact_path_matches_only_itself() {
    let t = table(vec![path(route("p"), PathMatch::Exact("/a/b".into()))]);
    assert_eq!(get(&t, None, "/a/b"), Some("p"));
    assert_eq!(get(&t, None, "/a/b/"), None);
    assert_eq!(get(&t, None, "/a"), None);
}

#[test]
fn prefix_is_byte_for_byte_and_longest_does_not_win() {
    let t = table(vec![
        path(route("short"), PathMatch::Prefix("/api".into())),
        path(route("long"), PathMatch::Prefix("/api/v2/".into())),
    ]);
    // Config order, not prefix length, decides.
    assert_eq!(get(&t, None, "/api/v2/users"), Some("short"));
    assert_eq!(get(&t, None, "/apis"), Some("short"));
    assert_eq!(get(&t, None, "/ap"), None);
    assert_eq!(get(&t, None, "/API"), None);
}

#[test]
fn prefix_that_splits_a_utf8_sequence_is_a_plain_miss() {
    // "/é" is 3 bytes; a 2-byte prefix cuts the é in half and must not panic.
    let t = table(vec![
        path(route("two"), PathMatch::Prefix("/x".into())),
        path(route("e"), PathMatch::Prefix("/é".into())),
    ]);
    assert_eq!(get(&t, None, "/é/x"), Some("e"));
    assert_eq!(get(&t, None, "/"), None);
}

#[test]
fn regex_must_match_the_whole_path() {
    let t = table(vec![path(route("re"), PathMatch::Regex("/u/[0-9]+".into()))]);
    assert_eq!(get(&t, None, "/u/42"), Some("re"));
    assert_eq!(get(&t, None, "/u/42/x"), None);
    assert_eq!(get(&t, None, "/x/u/42"), None);
    assert_eq!(get(&t, None, "/u/"), None);
}

#[test]
fn regex_alternation_stays_anchored() {
    let t = table(vec![path(route("re"), PathMatch::Regex("/a|/b".into()))]);
    assert_eq!(get(&t, None, "/a"), Some("re"));
    assert_eq!(get(&t, None, "/b"), Some("re"));
    assert_eq!(get(&t, None, "/ab"), None);
    assert_eq!(get(&t, None, "/x/b"), None);
}

#[test]
fn method_is_an_exact_case_sensitive_token() {
    let mut post = route("post");
    post.method = Some("POST".into());
    let t = table(vec![post]);
    let req = |method| RouteRequest {
        host: None,
        path: "/",
        method,
        headers: &NoHeaders,
    };
    assert_eq!(t.lookup(&req("POST")).map(|(i, _)| i), Some(0));
    assert_eq!(t.lookup(&req("post")), None);
    assert_eq!(t.lookup(&req("GET")), None);
}

#[test]
fn headers_match_by_exact_value_or_presence_with_any_name_case() {
    let mut r = route("canary");
    r.headers = vec![
        ("X-Canary".into(), HeaderMatch::Exact(b"1".to_vec())),
        ("x-Tenant".into(), HeaderMatch::Present),
    ];
    let t = table(vec![r]);
    let lookup = |headers: &dyn HeaderLookup| {
        let req = RouteRequest {
            host: None,
            path: "/",
            method: "GET",
            headers,
        };
        t.lookup(&req).is_some()
    };
    assert!(lookup(&[("x-canary", &b"1"[..]), ("x-tenant", &b""[..])]));
    assert!(!lookup(&[("x-canary", &b"2"[..]), ("x-tenant", &b"t"[..])]));
    assert!(!lookup(&[("x-canary", &b"1"[..])]));
    assert!(!lookup(&NoHeaders));
    // A field on two lines is their combined value: `1, 2` is not `1`.
    let tenant = ("x-tenant", &b""[..]);
    assert!(!lookup(&[("x-canary", &b"1"[..]), ("x-canary", &b"2"[..]), tenant]));
    assert!(!lookup(&[("x-canary", &b"2"[..]), ("X-Canary", &b"1"[..]), tenant]));
}

#[test]
fn router_asks_for_lowercase_header_names() {
    struct Strict;
    impl HeaderLookup for Strict {
        fn first(&self, name: &str) -> Option<&[u8]> {
            (name == "x-mixed").then_some(b"v")
        }
    }
    let mut r = route("h");
    r.headers = vec![("X-MiXeD".into(), HeaderMatch::Exact(b"v".to_vec()))];
    let t = table(vec![r]);
    let req = RouteRequest {
        host: None,
        path: "/",
        method: "GET",
        headers: &Strict,
    };
    assert!(t.lookup(&req).is_some());
}

#[test]
fn earlier_broad_route_beats_later_specific_one() {
    let mut specific = host(route("specific"), "api.local");
    specific.path = PathMatch::Exact("/api/users".into());
    specific.method = Some("GET".into());
    let t = table(vec![path(route("broad"), PathMatch::Prefix("/".into())), specific]);
    assert_eq!(get(&t, Some("api.local"), "/api/users"), Some("broad"));
}

#[test]
fn failed_method_on_an_early_candidate_falls_through_to_the_next() {
    let mut post = path(route("post"), PathMatch::Prefix("/api/".into()));
    post.method = Some("POST".into());
    let t = table(vec![
        post,
        path(route("regex"), PathMatch::Regex("/api/.*".into())),
        path(route("any"), PathMatch::Any),
    ]);
    assert_eq!(get(&t, None, "/api/x"), Some("regex"));
    assert_eq!(get(&t, None, "/other"), Some("any"));
}

#[test]
fn compile_errors_name_the_route_and_the_problem() {
    let cases: Vec<(RouteSpec<&'static str>, RouteErrorKind)> = vec![
        (host(route("x"), ""), RouteErrorKind::EmptyHost),
        (host(route("x"), "a*.com"), RouteErrorKind::BadHost("a*.com".into())),
        (host(route("x"), "*."), RouteErrorKind::EmptySuffix),
        (host(route("x"), "*..com"), RouteErrorKind::BadSuffix(".com".into())),
        (host(route("x"), "*.*.com"), RouteErrorKind::BadSuffix("*.com".into())),
        (
            RouteSpec {
                method: Some("GE T".into()),
                ..route("x")
            },
            RouteErrorKind::BadMethod("GE T".into()),
        ),
        (
            RouteSpec {
                method: Some(String::new()),
                ..route("x")
            },
            RouteErrorKind::BadMethod(String::new()),
        ),
        (
            RouteSpec {
                headers: vec![("bad name".into(), HeaderMatch::Present)],
                ..route("x")
            },
            RouteErrorKind::BadHeaderName("bad name".into()),
        ),
    ];
    for (bad, want) in cases {
        let err = RouteTable::compile(vec![route("ok"), bad]).err();
        assert_eq!(err, Some(RouteError { route: 1, kind: want }));
    }
}

#[test]
fn bad_regex_is_reported_with_its_pattern() {
    for pattern in ["(", "a)|(b", "[z-a]"] {
        let err = RouteTable::compile(vec![path(route("x"), PathMatch::Regex(pattern.into()))]);
        match err {
            Err(RouteError {
                route: 0,
                kind: RouteErrorKind::BadRegex { pattern: p, message },
            }) => {
                assert_eq!(p, pattern);
                assert!(!message.is_empty());
            }
            other => panic!("{pattern:?} should be rejected, got {other:?}"),
        }
    }
    let shown = RouteTable::compile(vec![path(route("x"), PathMatch::Regex("(".into()))])
        .err()
        .map(|e| e.to_string());
    assert!(shown.is_some_and(|s| s.starts_with("route 0: path_regex \"(\"")));
}

#[test]
fn table_is_send_and_sync_for_sharing_across_workers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable<std::sync::Arc<str>>>();
}

#[test]
fn combined_field_lines_compare_as_one_value() {
    let lines = |v: &[&'static str]| v.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
    let eq = |v: &[&'static str], want: &str| combined_equals(lines(v).into_iter(), want.as_bytes());
    assert_eq!(eq(&[], "1"), None);
    assert_eq!(eq(&["1"], "1"), Some(true));
    assert_eq!(eq(&["1"], "10"), Some(false));
    assert_eq!(eq(&["10"], "1"), Some(false));
    assert_eq!(eq(&["1", "2"], "1"), Some(false));
    assert_eq!(eq(&["1", "2"], "1, 2"), Some(true));
    assert_eq!(eq(&["1", "2"], "1,2"), Some(false));
    assert_eq!(eq(&["1, 2"], "1, 2"), Some(true));
    assert_eq!(eq(&["", ""], ", "), Some(true));
    assert_eq!(eq(&["a", "b", "c"], "a, b"), Some(false));
}
