//! Live config swaps under steady load: 50 swaps (route changes, a weighted
//! split moving 90/10 → 50/50 → 0/100 and back, an endpoint joining and
//! leaving a cluster) while eight keep-alive connections run closed loop
//! through the proxy. No request may fail, no connection may drop, each new
//! split must show in the traffic that follows it, and a removed endpoint
//! must get no new request once the swap returned and every worker serves
//! the new generation.
//!
//! Upstreams are `ringway-load serve` instances named v1, v2 and v3; each
//! answers with `x-served-by: NAME`, which is what both the load generator
//! and the measuring client count.

mod common;

use common::{Client, Response, RUNTIME_2};
use ringway::worker::Server;
use ringway_load::{run_load, spawn_serve, ErrorCounts, LoadOptions, Report, ServeHandle, ServeOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Connections of the steady load.
const LOAD_CONNECTIONS: usize = 8;
/// The load runs as back-to-back runs of this length, so it can end soon
/// after the swaps do; each run's connections stay open across many swaps.
const LOAD_RUN: Duration = Duration::from_millis(750);
const SWAPS: u64 = 50;
/// Requests per measurement window after a split or membership change.
const WINDOW: usize = 300;
/// Allowed distance of a window's count from its expectation, in binomial
/// standard deviations. About 20 windows × 3 counts are checked per run; at
/// 5σ a correct proxy fails one of them far less than once in 10,000 runs,
/// while a split stuck on the previous weights (at least 40 points away,
/// i.e. 120 requests of 300) is still more than 8σ out.
const SIGMAS: f64 = 5.0;
/// Bound on the wait for every worker to take a new generation.
const READY_LIMIT: Duration = Duration::from_secs(5);
/// Split weights (v1, v2) in order; the split moves one step every 4th swap.
const SPLITS: [(u32, u32); 4] = [(90, 10), (50, 50), (0, 100), (50, 50)];

/// What one generation of the config says.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    split: (u32, u32),
    /// v3's address while it is an endpoint of cluster v2.
    v3: Option<SocketAddr>,
    /// Which of the route tables in [`routes`] is in force.
    routes: u64,
}

/// The config for `shape`. The route tables differ in match kinds, order,
/// names and extra routes, but all send the load's `GET /api/...` to the
/// split; each sends `/probe/x` to a known cluster, so a probe shows that
/// the route change took effect.
fn config(v1: SocketAddr, v2: SocketAddr, shape: &Shape) -> String {
    let (w1, w2) = shape.split;
    let split = format!("split = [ {{ cluster = \"v1\", weight = {w1} }}, {{ cluster = \"v2\", weight = {w2} }} ]");
    let route = |name: &str, matcher: &str, target: &str| {
        format!("  [[listener.route]]\n  name = \"{name}\"\n  match = {{ {matcher} }}\n  {target}\n\n")
    };
    let routes = match shape.routes % 4 {
        0 => [
            route("probe", "path_prefix = \"/probe/\"", "cluster = \"v1\""),
            route("api", "path_prefix = \"/api/\"", &split),
        ]
        .concat(),
        1 => [
            route("api-regex", "path_regex = \"/api/.*\"", &split),
            route("probe-exact", "path = \"/probe/x\"", "cluster = \"v2\""),
            route("fallback", "path_prefix = \"/\"", "cluster = \"v1\""),
        ]
        .concat(),
        2 => [
            route(
                "canary-by-header",
                "path_prefix = \"/api/\", headers = { \"x-canary\" = \"1\" }",
                "cluster = \"v2\"",
            ),
            route("api-get", "path_prefix = \"/api/\", method = \"GET\"", &split),
            route("probe", "path_prefix = \"/probe/\"", "cluster = \"v1\""),
        ]
        .concat(),
        _ => [
            route("api-host", "host = \"127.0.0.1\", path_prefix = \"/api/\"", &split),
            route("probe-regex", "path_regex = \"/probe/.*\"", "cluster = \"v2\""),
        ]
        .concat(),
    };
    let mut v2_endpoints = format!("{{ address = \"{v2}\" }}");
    if let Some(v3) = shape.v3 {
        v2_endpoints.push_str(&format!(", {{ address = \"{v3}\" }}"));
    }
    format!(
        "{RUNTIME_2}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"

{routes}
[[cluster]]
name = \"v1\"
lb = \"random\"
endpoints = [ {{ address = \"{v1}\" }} ]

[[cluster]]
name = \"v2\"
lb = \"random\"
endpoints = [ {v2_endpoints} ]
"
    )
}

/// The cluster `/probe/x` goes to under route table `routes`.
fn probe_cluster(routes: u64) -> &'static str {
    if routes.is_multiple_of(2) {
        "v1"
    } else {
        "v2"
    }
}

fn serve(name: &str) -> ServeHandle {
    spawn_serve(ServeOptions::named(name)).unwrap_or_else(|e| panic!("start upstream {name}: {e}"))
}

/// Apply `toml` as the next generation and wait, with a bounded poll, until
/// every worker serves it (what GET /ready reports). Returns how long that took.
fn swap(server: &Server, toml: &str, expected_generation: u64) -> Duration {
    let started = Instant::now();
    let generation = ringway::admin::apply(server, toml, "swap.toml")
        .unwrap_or_else(|e| panic!("swap to generation {expected_generation} refused:\n{e}\n---\n{toml}"));
    assert_eq!(
        generation, expected_generation,
        "each swap publishes the next generation"
    );
    let deadline = started + READY_LIMIT;
    while !server.shared().ready() {
        assert!(
            Instant::now() < deadline,
            "workers did not all take generation {generation} within {READY_LIMIT:?}"
        );
        thread::sleep(Duration::from_micros(50));
    }
    assert_eq!(server.shared().generation(), generation);
    started.elapsed()
}

fn served_by(resp: &Response, what: &str) -> String {
    assert_eq!(
        resp.status,
        200,
        "{what}: status {} ({:?})",
        resp.status,
        resp.error_reason()
    );
    resp.header("x-served-by")
        .unwrap_or_else(|| panic!("{what}: response without x-served-by"))
        .to_string()
}

/// Whether `count` of `n` draws with probability `p` lies within [`SIGMAS`]
/// binomial standard deviations of `n·p` (exactly `n·p` when `p` is 0 or 1).
fn within_binomial(count: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= SIGMAS * sd + 1e-9
}

/// After a change: send [`WINDOW`] requests on a fresh connection and check
/// where they went against `shape`'s weights (a removed endpoint: nowhere).
fn measure(addr: SocketAddr, shape: &Shape, what: &str) {
    let mut client = Client::connect(addr);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..WINDOW {
        let name = served_by(&client.get("127.0.0.1", &format!("/api/measure/{i}")), what);
        *counts.entry(name).or_default() += 1;
    }
    let (w1, w2) = shape.split;
    let to_v2 = f64::from(w2) / f64::from(w1 + w2);
    // While v3 is in cluster v2 the two share its traffic evenly. The
    // clusters balance at random so that every request of this client is an
    // independent draw: a round-robin cursor shared with the load's requests
    // would give this client's subsequence a phase-dependent bias.
    let per_v2_endpoint = if shape.v3.is_some() { to_v2 / 2.0 } else { to_v2 };
    let expected = [
        ("v1", 1.0 - to_v2),
        ("v2", per_v2_endpoint),
        ("v3", if shape.v3.is_some() { per_v2_endpoint } else { 0.0 }),
    ];
    let total: usize = counts.values().sum();
    assert_eq!(
        counts
            .keys()
            .filter(|k| !["v1", "v2", "v3"].contains(&k.as_str()))
            .count(),
        0,
        "{what}: unknown upstream in {counts:?}"
    );
    for (name, p) in expected {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            within_binomial(got, total, p),
            "{what}: {name} served {got} of {total}, expected {:.1} ± {SIGMAS}σ for split {w1}/{w2} \
             (v3 {}); all: {counts:?}",
            p * total as f64,
            if shape.v3.is_some() { "in" } else { "out" },
        );
    }
}

/// What the steady load saw over all its runs.
#[derive(Default, Debug)]
struct LoadTotals {
    runs: u32,
    requests: u64,
    errors: ErrorCounts,
    status: BTreeMap<u16, u64>,
    served_by: BTreeMap<String, u64>,
    reconnects: u64,
    /// Requests of the emptiest run, to show the load never stalled.
    fewest_in_a_run: u64,
}

impl LoadTotals {
    fn add(&mut self, r: &Report) {
        self.fewest_in_a_run = if self.runs == 0 {
            r.requests
        } else {
            self.fewest_in_a_run.min(r.requests)
        };
        self.runs += 1;
        self.requests += r.requests;
        self.errors.connect += r.errors.connect;
        self.errors.timeout += r.errors.timeout;
        self.errors.reset += r.errors.reset;
        self.errors.parse += r.errors.parse;
        self.reconnects += r.reconnects;
        for (&code, &n) in &r.status {
            *self.status.entry(code).or_default() += n;
        }
        for (name, &n) in r.header_counts.iter().flatten() {
            *self.served_by.entry(name.clone()).or_default() += n;
        }
    }
}

/// Closed-loop load on `url` until `stop` is set; `started` fires just
/// before the first run.
fn steady_load(url: String, stop: Arc<AtomicBool>, started: mpsc::Sender<()>) -> LoadTotals {
    let mut totals = LoadTotals::default();
    let _ = started.send(());
    loop {
        let report = run_load(LoadOptions {
            url: url.clone(),
            connections: LOAD_CONNECTIONS,
            threads: 1,
            duration: LOAD_RUN,
            timeout: Duration::from_secs(2),
            count_header: Some("x-served-by".into()),
            ..Default::default()
        })
        .expect("run the load");
        totals.add(&report);
        if stop.load(Ordering::Acquire) {
            return totals;
        }
    }
}

#[test]
fn fifty_swaps_under_load_lose_no_request_and_follow_the_new_weights() {
    let v1 = serve("v1");
    let v2 = serve("v2");
    let (a1, a2) = (v1.local_addr(), v2.local_addr());
    let mut shape = Shape {
        split: SPLITS[0],
        v3: None,
        routes: 0,
    };
    let snapshot = ringway::config::parse(&config(a1, a2, &shape), "swap.toml", 1).expect("valid config");
    let server = Server::start(snapshot).expect("start the proxy");
    let addr = server.local_addr("ingress").expect("listener ingress is bound");

    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    let load = {
        let (url, stop) = (format!("http://{addr}/api/load"), stop.clone());
        thread::Builder::new()
            .name("steady-load".into())
            .spawn(move || steady_load(url, stop, started_tx))
            .expect("spawn the load thread")
    };
    started_rx.recv().expect("the load thread starts");
    measure(addr, &shape, "generation 1 (before any swap)");

    let mut v3: Option<ServeHandle> = None;
    let mut v3_joins = 0;
    let mut slowest_ready = Duration::ZERO;
    let began = Instant::now();
    for i in 1..=SWAPS {
        let previous = shape;
        shape.routes = i;
        shape.split = SPLITS[(i / 4) as usize % SPLITS.len()];
        match i % 10 {
            3 => {
                let joining = serve("v3");
                shape.v3 = Some(joining.local_addr());
                v3 = Some(joining);
                v3_joins += 1;
            }
            8 => shape.v3 = None,
            _ => {}
        }
        let generation = i + 1;
        let what = format!("swap {i} (generation {generation}, {shape:?})");
        slowest_ready = slowest_ready.max(swap(&server, &config(a1, a2, &shape), generation));

        let probe = served_by(&Client::connect(addr).get("127.0.0.1", "/probe/x"), &what);
        let probe = if probe == "v3" { "v2" } else { probe.as_str() };
        assert_eq!(
            probe,
            probe_cluster(shape.routes),
            "{what}: /probe/x went to the wrong cluster"
        );

        if shape.split != previous.split || shape.v3 != previous.v3 {
            measure(addr, &shape, &what);
        }
        if previous.v3.is_some() && shape.v3.is_none() {
            // The window above got nothing from v3, and meanwhile every load
            // connection finished many requests on the new generation. Stop
            // v3 now: a load request still sent to it would come back as a 502
            // and fail the every-response-is-a-200 check below.
            drop(v3.take());
        }
    }
    let swapping = began.elapsed();
    stop.store(true, Ordering::Release);
    let totals = load.join().expect("the load thread");
    eprintln!(
        "{SWAPS} swaps in {swapping:.2?} (slowest apply-to-ready {slowest_ready:.2?}); load: {} requests in {} runs, \
         by upstream {:?}",
        totals.requests, totals.runs, totals.served_by
    );

    assert_eq!(v3_joins, 5);
    assert_eq!(
        totals.errors.total(),
        0,
        "failed requests during the swaps: {:?}",
        totals.errors
    );
    assert_eq!(
        totals.status,
        BTreeMap::from([(200, totals.requests)]),
        "every response is a 200"
    );
    assert_eq!(totals.reconnects, 0, "a swap closed a load connection");
    assert!(
        totals.runs >= 2 && totals.fewest_in_a_run > 0,
        "the load ran throughout: {totals:?}"
    );
    assert_eq!(
        totals.served_by.values().sum::<u64>(),
        totals.requests,
        "every response names its upstream: {:?}",
        totals.served_by
    );
    for name in ["v1", "v2", "v3"] {
        assert!(
            totals.served_by.get(name).is_some_and(|&n| n > 0),
            "{name} got none of the load: {:?}",
            totals.served_by
        );
    }
    assert_eq!(totals.served_by.len(), 3, "unknown upstream: {:?}", totals.served_by);

    server.drain();
    server.wait();
    drop(v3);
}
