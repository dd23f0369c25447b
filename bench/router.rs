//! Route lookup cost at 10 and at 10,000 routes.
//!
//! The point is the ratio: the index should keep a 10,000-route lookup close
//! to a 10-route one. Both tables have the same shape (exact hosts with many
//! path prefixes and a regex each, a few wildcard hosts, host-less exact paths
//! and regexes), so only the size differs. Each is probed with a hit deep in
//! the table, a wildcard hit, a miss on a known host (the prefix walk, that
//! host's regex and the host-less regexes all run) and a miss on an unknown
//! host.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringway::router::{HeaderLookup, HeaderMatch, HostMatch, PathMatch, RouteRequest, RouteSpec, RouteTable};
use std::hint::black_box;
use std::time::Duration;

fn spec(host: Option<HostMatch>, path: PathMatch) -> RouteSpec<u32> {
    RouteSpec {
        host,
        path,
        method: None,
        headers: Vec::new(),
        target: 0,
    }
}

/// `hosts` exact hosts × `prefixes` prefix routes (plus one regex each), then
/// `wildcards` suffix hosts, `exact_paths` host-less paths and two host-less
/// regexes. Prefix lengths vary so lookups probe several lengths.
fn table(hosts: u32, prefixes: u32, wildcards: u32, exact_paths: u32) -> RouteTable<u32> {
    let mut routes = Vec::new();
    for h in 0..hosts {
        let host = || Some(HostMatch::Exact(format!("h{h}.svc.local")));
        for p in 0..prefixes {
            let pad = "x".repeat((p % 7) as usize);
            let mut r = spec(host(), PathMatch::Prefix(format!("/r{p}/{pad}")));
            // Some routes also need a method or a header, as canaries do.
            if p % 10 == 3 {
                r.method = Some("POST".into());
            }
            if p % 25 == 7 {
                r.headers = vec![("x-canary".into(), HeaderMatch::Exact(b"1".to_vec()))];
            }
            routes.push(r);
        }
        routes.push(spec(host(), PathMatch::Regex(format!("/h{h}/item/[0-9]+"))));
    }
    for t in 0..wildcards {
        let suffix = HostMatch::Suffix(format!("tenant{t}.example"));
        routes.push(spec(Some(suffix), PathMatch::Prefix("/".into())));
    }
    for n in 0..exact_paths {
        routes.push(spec(None, PathMatch::Exact(format!("/health{n}"))));
    }
    routes.push(spec(None, PathMatch::Regex("/static/[a-f0-9]{8}/.*".into())));
    routes.push(spec(None, PathMatch::Regex("/assets/.+\\.(?:js|css)".into())));
    for (i, r) in routes.iter_mut().enumerate() {
        r.target = i as u32;
    }
    match RouteTable::compile(routes) {
        Ok(t) => t,
        Err(e) => panic!("bench routes must compile: {e}"),
    }
}

struct Canary;

impl HeaderLookup for Canary {
    fn first(&self, name: &str) -> Option<&[u8]> {
        (name == "x-canary").then_some(b"0")
    }
}

fn req<'a>(host: &'a str, path: &'a str) -> RouteRequest<'a> {
    RouteRequest {
        host: Some(host),
        path,
        method: "GET",
        headers: &Canary,
    }
}

fn lookups(c: &mut Criterion) {
    // 10 = 1 host × (5 prefixes + 1 regex) + 1 wildcard + 1 path + 2 regexes.
    // 10,000 = 100 hosts × (98 prefixes + 1 regex) + 50 wildcards + 48 paths + 2 regexes.
    let tables = [(10, table(1, 5, 1, 1)), (10_000, table(100, 98, 50, 48))];
    let mut group = c.benchmark_group("router_lookup");
    for (size, table) in &tables {
        assert_eq!(table.len(), *size, "table shape drifted");
        // A late prefix on a late host, so the hit sits deep in the table.
        let (host, hit_path) = if *size == 10 {
            ("h0.svc.local", "/r4/xxxx/users/42")
        } else {
            ("h73.svc.local", "/r87/xxx/users/42")
        };
        let cases = [
            ("hit_prefix", req(host, hit_path)),
            ("hit_wildcard", req("a.b.tenant0.example", "/x")),
            ("miss_known_host", req(host, "/nope/at/all")),
            ("miss_unknown_host", req("unknown.example.org", "/nope/at/all")),
        ];
        for (name, request) in &cases {
            let expect_hit = name.starts_with("hit");
            assert_eq!(table.lookup(request).is_some(), expect_hit, "{name} at {size}");
            group.bench_with_input(BenchmarkId::new(*name, size), request, |b, r| {
                b.iter(|| table.lookup(black_box(r)).map(|(i, _)| i))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookups
}
criterion_main!(benches);
