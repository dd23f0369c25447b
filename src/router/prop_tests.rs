//! Property test: the indexed lookup must answer exactly what a linear
//! first-match scan over the same specs answers.
//!
//! The reference below re-implements the matching rules straight from
//! DESIGN.md §4 without sharing code with the table, so a bug in the index
//! (a missed candidate source, a wrong early exit, a wildcard off by one)
//! shows up as a disagreement. Values come from small pools so random routes
//! and requests actually collide on hosts, paths and headers; `é` and `è`
//! share their first byte, so trie edges also split inside a character.

use super::*;
use proptest::prelude::*;
use proptest::sample::select;

const ROUTE_HOSTS: &[&str] = &["a.com", "x.a.com", "y.x.a.com", "B.org", "a.b.org", "com"];
const SUFFIXES: &[&str] = &["a.com", "x.a.com", "com", "b.org", "A.COM"];
const REQUEST_HOSTS: &[&str] = &[
    "a.com",
    "x.a.com",
    "y.x.a.com",
    "z.a.com",
    ".a.com",
    "xa.com",
    "b.org",
    "a.b.org",
    "com",
    "q.com",
    "",
];
const PATH_PIECES: &[&str] = &["/", "a", "b", "é", "è", "/a", "/b"];
const REGEXES: &[&str] = &["/a.*", "/[ab]+", "/a/b", ".*", "/é?", "/a|/b", "(?:/[a-z]+)+/?"];
const METHODS: &[&str] = &["GET", "POST", "get"];
const HEADER_NAMES: &[&str] = &["x-a", "X-B", "x-c"];
const HEADER_VALUES: &[&[u8]] = &[b"1", b"2", b""];

/// Request headers as a list, possibly with repeats, names in mixed case.
#[derive(Debug, Clone)]
struct Headers(Vec<(String, Vec<u8>)>);

impl HeaderLookup for Headers {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Clone)]
struct Request {
    host: Option<String>,
    path: String,
    method: String,
    headers: Headers,
}

fn path_text() -> impl Strategy<Value = String> {
    prop::collection::vec(select(PATH_PIECES), 0..5).prop_map(|pieces| pieces.concat())
}

fn spec(target: usize) -> impl Strategy<Value = RouteSpec<usize>> {
    let host = prop_oneof![
        2 => Just(None),
        1 => select(ROUTE_HOSTS).prop_map(|h| Some(HostMatch::Exact(h.to_owned()))),
        1 => select(SUFFIXES).prop_map(|s| Some(HostMatch::Suffix(s.to_owned()))),
    ];
    let path = prop_oneof![
        1 => Just(PathMatch::Any),
        1 => path_text().prop_map(PathMatch::Exact),
        2 => path_text().prop_map(PathMatch::Prefix),
        1 => select(REGEXES).prop_map(|r| PathMatch::Regex(r.to_owned())),
    ];
    let method = prop::option::weighted(0.3, select(METHODS).prop_map(str::to_owned));
    let header = (
        select(HEADER_NAMES).prop_map(str::to_owned),
        prop_oneof![
            Just(HeaderMatch::Present),
            select(HEADER_VALUES).prop_map(|v| HeaderMatch::Exact(v.to_vec())),
        ],
    );
    let headers = prop::collection::vec(header, 0..3);
    (host, path, method, headers).prop_map(move |(host, path, method, headers)| RouteSpec {
        host,
        path,
        method,
        headers,
        target,
    })
}

fn specs() -> impl Strategy<Value = Vec<RouteSpec<usize>>> {
    (0usize..60).prop_flat_map(|n| (0..n).map(spec).collect::<Vec<_>>())
}

fn request() -> impl Strategy<Value = Request> {
    let header = (
        select(HEADER_NAMES).prop_map(str::to_owned),
        select(HEADER_VALUES).prop_map(<[u8]>::to_vec),
    );
    (
        prop::option::weighted(0.8, select(REQUEST_HOSTS).prop_map(str::to_owned)),
        path_text(),
        select(METHODS).prop_map(str::to_owned),
        prop::collection::vec(header, 0..4),
    )
        .prop_map(|(host, path, method, headers)| Request {
            host,
            path,
            method,
            headers: Headers(headers),
        })
}

/// The spec's rules applied literally, route after route.
fn linear_scan(specs: &[RouteSpec<usize>], regexes: &[Regex], req: &Request) -> Option<usize> {
    specs.iter().position(|spec| {
        let host = match (&spec.host, req.host.as_deref()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostMatch::Exact(want)), Some(got)) => got == want.to_ascii_lowercase(),
            (Some(HostMatch::Suffix(want)), Some(got)) => {
                let dotted = format!(".{}", want.to_ascii_lowercase());
                got.ends_with(&dotted) && got.len() > dotted.len()
            }
        };
        let path = match &spec.path {
            PathMatch::Any => true,
            PathMatch::Exact(want) => req.path == *want,
            PathMatch::Prefix(want) => req.path.starts_with(want.as_str()),
            PathMatch::Regex(want) => REGEXES
                .iter()
                .position(|r| r == want)
                .is_some_and(|i| regexes[i].is_match(&req.path)),
        };
        let method = spec.method.as_deref().is_none_or(|m| m == req.method);
        let headers = spec.headers.iter().all(|(name, want)| {
            let got = req.headers.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
            match (want, got) {
                (_, None) => false,
                (HeaderMatch::Present, Some(_)) => true,
                (HeaderMatch::Exact(want), Some((_, got))) => got == want,
            }
        });
        host && path && method && headers
    })
}

proptest! {
    #[test]
    fn index_agrees_with_linear_first_match(
        specs in specs(),
        requests in prop::collection::vec(request(), 1..24),
    ) {
        let regexes: Vec<Regex> = REGEXES
            .iter()
            .map(|r| Regex::new(&format!("^(?:{r})$")))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let table = RouteTable::compile(specs.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(table.len(), specs.len());
        for req in &requests {
            let got = table.lookup(&RouteRequest {
                host: req.host.as_deref(),
                path: &req.path,
                method: &req.method,
                headers: &req.headers,
            });
            let want = linear_scan(&specs, &regexes, req);
            prop_assert_eq!(got.map(|(i, _)| i), want, "request {:?}", req);
            // The target travels with its route.
            prop_assert!(got.is_none_or(|(i, target)| i == *target));
        }
    }
}
