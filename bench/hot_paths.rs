//! The per-request hot paths outside the kernel: head parsing, the forwarded
//! head rewrite, and a load-balancer decision.
//!
//! - `parse_request`: a typical browser request (about 300 bytes) and a
//!   minimal curl one; `parse_response`: a typical API response head.
//! - `write_request_head`: the rewrite of the parsed browser request for the
//!   upstream (hop-by-hop fields dropped, X-Forwarded-*, Via).
//! - `balancer`: one request's worth of balancer work for each policy, i.e.
//!   `pick` + `on_start` + `on_end`, at 3 and at 100 endpoints, with eight
//!   requests kept in flight so the least-loaded policies see non-zero counts.
//! - `rate_limit`: one token taken from a worker's bucket that draws from a
//!   process-wide reservoir (the common case is a local decrement), and from
//!   a keyed limiter (a hash and an LRU lookup).
//!
//! Compare results between commits on the same machine; absolute nanoseconds
//! mean little across hosts.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringway::cluster::{hash_bytes, Balancer, EndpointSpec, LbPolicy};
use ringway::http::{
    parse_request, parse_response, write_request_head, Forwarded, Framing, Limits, Method, ParseStatus, RequestHead,
    ResponseHead, RouteEdits,
};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// What a browser sends for a page: a query string, a long User-Agent, Accept lists.
const BROWSER: &[u8] = b"GET /shop/cart?item=1234&ref=home HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
\r\n";

/// `curl http://localhost:8080/`.
const CURL: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// A typical API response head.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1234\r\n\
Date: Tue, 15 Oct 2024 12:00:00 GMT\r\n\
Server: api/1.4\r\n\
Cache-Control: no-cache\r\n\
\r\n";

fn parsed_request(buf: &[u8]) -> RequestHead {
    let mut head = RequestHead::default();
    match parse_request(buf, &Limits::default(), &mut head) {
        Ok(ParseStatus::Complete(n)) if n == buf.len() => head,
        other => panic!("bench request must parse completely, got {other:?}"),
    }
}

fn parsing(c: &mut Criterion) {
    assert!(
        (280..=320).contains(&BROWSER.len()),
        "browser request is {} bytes",
        BROWSER.len()
    );
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse");
    for (name, buf) in [("request_browser", BROWSER), ("request_curl", CURL)] {
        parsed_request(buf);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        let mut head = RequestHead::default();
        group.bench_function(name, |b| {
            b.iter(|| {
                let status = parse_request(black_box(buf), &limits, &mut head);
                (status, head.headers.len())
            })
        });
    }
    let mut head = ResponseHead::default();
    assert_eq!(
        parse_response(RESPONSE, &limits, Method::Get, &mut head),
        Ok(ParseStatus::Complete(RESPONSE.len()))
    );
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    group.bench_function("response", |b| {
        b.iter(|| {
            let status = parse_response(black_box(RESPONSE), &limits, Method::Get, &mut head);
            (status, head.status)
        })
    });
    group.finish();
}

fn rewriting(c: &mut Criterion) {
    let head = parsed_request(BROWSER);
    let fwd = Forwarded {
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        proto: "http",
        keep_client_proto: true,
        via: "1.1 ringway",
        client_identity: None,
        new_trace: false,
    };
    let mut out = Vec::with_capacity(1024);
    write_request_head(
        BROWSER,
        &head,
        &fwd,
        Framing::Empty,
        &[],
        &RouteEdits::default(),
        &mut out,
    );
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(
        text.contains("x-forwarded-for: 10.1.2.3\r\n") && !text.contains("connection:"),
        "{text}"
    );

    let mut group = c.benchmark_group("rewrite");
    group.throughput(Throughput::Bytes(BROWSER.len() as u64));
    group.bench_function("write_request_head_browser", |b| {
        b.iter(|| {
            out.clear();
            write_request_head(
                black_box(BROWSER),
                black_box(&head),
                &fwd,
                Framing::Empty,
                &[],
                &RouteEdits::default(),
                &mut out,
            );
            out.len()
        })
    });
    group.finish();
}

/// Requests kept in flight: `on_end` completes the pick from this many iterations ago.
const IN_FLIGHT: usize = 8;

fn balancing(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer");
    for n in [3usize, 100] {
        let specs: Vec<EndpointSpec> = (0..n)
            .map(|i| EndpointSpec {
                key: hash_bytes(format!("10.0.{}.{}:8080", i / 250, i % 250).as_bytes()),
                weight: 1 + (i % 4) as u32,
            })
            .collect();
        // Client addresses for ring_hash; other policies ignore the hash.
        let keys: Vec<u64> = (0..256u32)
            .map(|i| hash_bytes(format!("192.168.{}.{}", i / 16, i % 16).as_bytes()))
            .collect();
        for policy in LbPolicy::ALL {
            let t0 = Instant::now();
            let mut balancer = Balancer::new(policy, &specs, t0);
            let mut rng = fastrand::Rng::with_seed(7);
            let mut in_flight = [usize::MAX; IN_FLIGHT];
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(policy.as_str(), n), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    // A clock that moves 10 µs per request, without reading one.
                    let now = t0 + Duration::from_micros((i % 1_000_000) as u64 * 10);
                    let hash = Some(keys[i % keys.len()]);
                    let picked = balancer.pick(now, hash, &mut rng, &|_| true);
                    let slot = &mut in_flight[i % IN_FLIGHT];
                    if *slot != usize::MAX {
                        let rtt = Duration::from_micros(800 + (i % 7) as u64 * 100);
                        balancer.on_end(*slot, rtt, now);
                    }
                    *slot = picked.unwrap_or(usize::MAX);
                    if let Some(idx) = picked {
                        balancer.on_start(idx);
                    }
                    picked
                })
            });
            assert!(
                (0..n).map(|e| balancer.outstanding(e)).sum::<u32>() as usize <= IN_FLIGHT,
                "{policy}: outstanding counts leaked"
            );
        }
    }
    group.finish();
}

fn rate_limiting(c: &mut Criterion) {
    use ringway::resilience::{KeyedLimiter, KeyedReservoir, LocalBucket, RateLimit, Reservoir};
    use std::sync::Arc;
    let mut group = c.benchmark_group("rate_limit");
    group.throughput(Throughput::Elements(1));
    // A rate far above what the loop can take, so every take is admitted and
    // the figure is the cost of admitting, not of refusing.
    let limit = RateLimit::new(u32::MAX / 2, u32::MAX / 2);
    let start = Instant::now();
    let mut bucket = LocalBucket::new(Arc::new(Reservoir::new(limit, 2, start)));
    group.bench_function("take", |b| {
        b.iter(|| black_box(bucket.try_acquire(black_box(Instant::now()))))
    });
    let mut keyed = KeyedLimiter::new(Arc::new(KeyedReservoir::new(limit, 1024, 2, start)), 1024);
    let keys: Vec<Vec<u8>> = (0..256).map(|i| format!("client-{i}").into_bytes()).collect();
    let mut i = 0usize;
    group.bench_function("take_keyed", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(keyed.try_acquire(&keys[i], black_box(Instant::now())))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = parsing, rewriting, balancing, rate_limiting
}
criterion_main!(benches);
