//! The resilience layer over real sockets: retries (dead, failing and slow
//! endpoints, methods, bodies, the retry budget), rate limits (accuracy for
//! the whole process, response shape, keys, listener-wide), the cluster caps
//! and the per-endpoint circuit breaker, and outlier ejection (with priority
//! failover), each against the behaviour the config contract promises.
//!
//! Per-worker state (endpoint breakers, outlier counters, retry budgets) is
//! tested on a one-worker proxy, so what a test expects does not depend on
//! which core the kernel hands a connection to. Process-wide limits (rates,
//! caps) and the kill-under-load runs use two workers.
//!
//! Waits are bounded polls on something observable (a request reaching an
//! upstream, the health state, a metric). Time appears only as the proxy's own
//! configured windows: a result is asserted only where the window certainly
//! applied, measured from an instant taken before the event that opened it.

mod common;

use common::*;
use ringway::worker::Server;
use ringway_load::{run_load, LoadOptions, Report};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const RETRY_TOTAL: &str = "ringway_upstream_rq_retry_total";
const RATELIMIT_REJECTED: &str = "ringway_ratelimit_rejected_total";
const OVERFLOW_TOTAL: &str = "ringway_upstream_rq_overflow_total";
const EJECTIONS_TOTAL: &str = "ringway_outlier_ejections_total";
const LOCAL_REPLIES: &str = "ringway_local_replies_total";

/// Allowance for a proxy that reads a cached clock (timer-wheel ticks) when
/// it compares an instant against one of its windows.
const CLOCK_SLACK: Duration = Duration::from_millis(20);

/// Client threads of a [`Load`].
const LOAD_CLIENTS: usize = 4;
/// How long the kill-under-load tests keep their load running, at least.
const MIN_LOAD: Duration = Duration::from_secs(2);

/// Tests that drive sustained load take turns: on two cores, two of them at
/// once would starve each other and the proxy, and a rate measured under that
/// would measure the CPU instead of the limiter.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// A `[[listener.route]]` for path prefix `prefix` to cluster "c", with
/// `extra` lines (retry, rate_limit, timeout).
fn route(prefix: &str, extra: &str) -> String {
    format!("[[listener.route]]\nmatch = {{ path_prefix = \"{prefix}\" }}\ncluster = \"c\"\n{extra}\n")
}

/// `workers` unpinned workers, listener "ingress" (plus `listener_extra`
/// lines) with `routes`, and cluster "c" (round robin unless `cluster_extra`
/// says otherwise) over `endpoints`.
fn config(
    workers: usize,
    listener_extra: &str,
    routes: &[String],
    endpoints: &[String],
    cluster_extra: &str,
) -> String {
    format!(
        "[runtime]\nworkers = {workers}\npin_cores = false\ndrain_timeout = \"5s\"\n\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n{listener_extra}\n\n{}\n\
         [[cluster]]\nname = \"c\"\nendpoints = [ {} ]\n{cluster_extra}\n",
        routes.join("\n"),
        endpoints.join(", ")
    )
}

fn endpoint_list(upstreams: &[&Upstream]) -> Vec<String> {
    upstreams.iter().map(|u| u.endpoint(1)).collect()
}

fn named(name: &str) -> Upstream {
    Upstream::start(Behavior::Named(name.to_string()))
}

fn fixed(status: u16, body: &str) -> Upstream {
    Upstream::start(Behavior::Fixed {
        status,
        body: body.as_bytes().to_vec(),
        headers: Vec::new(),
    })
}

const HEALTH_CHECK: &str = "health_check = { path = \"/healthz\", interval = \"50ms\", timeout = \"200ms\", \
                            unhealthy_threshold = 2, healthy_threshold = 2 }";

// ---------------------------------------------------------------------------
// Observation helpers
// ---------------------------------------------------------------------------

/// Poll `done` until it holds, at most `limit`; the pause between polls only
/// paces the loop (there is no notification to wait on).
fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until the health thread has published `healthy` for `addr`.
fn wait_health(server: &Server, addr: SocketAddr, healthy: bool) {
    until(&format!("{addr} healthy={healthy}"), IO_TIMEOUT, || {
        server
            .shared()
            .health
            .all()
            .iter()
            .any(|(_, a, h)| *a == addr && *h == healthy)
    });
}

/// The sum of every sample of `name`, whatever its labels.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of the samples of `name` whose labels include `label` (`k="v"`).
fn metric_sum_with(text: &str, name: &str, label: &str) -> f64 {
    let only: String = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .map(|l| format!("{l}\n"))
        .collect();
    metric_sum(&only, name)
}

/// Wait until counter `name` (summed over labels) reads `expected`, failing
/// at once if it goes past: a worker may record a request just after its
/// response went out, so the exact value is polled for, briefly.
fn wait_metric(server: &Server, name: &str, expected: f64) {
    wait_metric_with(server, name, "", expected);
}

/// As [`wait_metric`], over the samples whose labels include `label`.
fn wait_metric_with(server: &Server, name: &str, label: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.metrics();
        let value = if label.is_empty() {
            metric_sum(&text, name)
        } else {
            metric_sum_with(&text, name, label)
        };
        if value == expected {
            return;
        }
        assert!(
            value < expected,
            "{name}{label} is {value}, expected {expected}:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "{name}{label} stayed at {value}, expected {expected}:\n{text}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One GET on `client`, with the instants it was sent and answered.
fn timed_get(client: &mut Client, path: &str) -> (Response, Instant, Instant) {
    let sent = Instant::now();
    let resp = client.get("r.test", path);
    (resp, sent, Instant::now())
}

fn upstream_of(resp: &Response) -> &str {
    resp.header("x-upstream").unwrap_or("?")
}

/// Requests an upstream received other than health checks.
fn traffic(upstream: &Upstream) -> usize {
    upstream.received().iter().filter(|r| r.path != "/healthz").count()
}

// ---------------------------------------------------------------------------
// Steady load with every request recorded
// ---------------------------------------------------------------------------

/// One request of a [`Load`], as its client saw it.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    done: Instant,
    /// The status, or the transport error.
    result: Result<u16, String>,
    /// `x-upstream` of the response.
    upstream: Option<String>,
}

impl Sample {
    fn ok(&self) -> bool {
        self.result == Ok(200)
    }
}

/// Closed-loop keep-alive GETs from [`LOAD_CLIENTS`] threads until
/// [`Load::finish`]; a failed or closed connection is replaced.
struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicUsize::new(0));
        let threads = (0..LOAD_CLIENTS)
            .map(|t| {
                let (stop, completed) = (stop.clone(), completed.clone());
                thread::spawn(move || {
                    let mut samples = Vec::new();
                    let mut client: Option<Client> = None;
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let c = client.get_or_insert_with(|| Client::connect(addr));
                        n += 1;
                        let raw = format!("GET /load/{t}/{n} HTTP/1.1\r\nHost: load.test\r\n\r\n");
                        let sent = Instant::now();
                        let result = c.try_send(raw.as_bytes()).and_then(|()| c.try_read_response(false));
                        let done = Instant::now();
                        let sample = match result {
                            Ok(resp) => {
                                if resp.announces_close() {
                                    client = None;
                                }
                                Sample {
                                    sent,
                                    done,
                                    result: Ok(resp.status),
                                    upstream: resp.header("x-upstream").map(str::to_string),
                                }
                            }
                            Err(e) => {
                                client = None;
                                Sample {
                                    sent,
                                    done,
                                    result: Err(e.to_string()),
                                    upstream: None,
                                }
                            }
                        };
                        samples.push(sample);
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    samples
                })
            })
            .collect();
        Load {
            started: Instant::now(),
            stop,
            completed,
            threads,
        }
    }

    /// Wait until `n` requests have completed in all.
    fn wait_completed(&self, n: usize) {
        until(&format!("{n} requests under load"), IO_TIMEOUT, || {
            self.completed.load(Ordering::SeqCst) >= n
        });
    }

    /// Let the load run until it has lasted at least `span` in all.
    fn last_at_least(&self, span: Duration) {
        thread::sleep((self.started + span).saturating_duration_since(Instant::now()));
    }

    /// Stop the clients (each finishes the request it has in flight) and
    /// return every sample, in order of sending.
    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all: Vec<Sample> = std::mem::take(&mut self.threads)
            .into_iter()
            .flat_map(|t| t.join().expect("load client panicked"))
            .collect();
        all.sort_by_key(|s| s.sent);
        all
    }
}

impl Drop for Load {
    /// A test that fails mid-load must not leave its clients running.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Up to a few samples, for failure messages.
fn some(samples: &[&Sample]) -> String {
    format!("{} in all, e.g. {:#?}", samples.len(), &samples[..samples.len().min(5)])
}

fn three_named() -> Vec<Upstream> {
    ["e0", "e1", "e2"].iter().map(|n| named(n)).collect()
}

// ---------------------------------------------------------------------------
// 1. An endpoint dies under steady load
// ---------------------------------------------------------------------------

/// With retries on connect failure and reset, a dead endpoint costs idempotent
/// GETs nothing: no health check or ejection is configured, so the dead one
/// stays in rotation and only retries (to a live endpoint) hide it. Restarted
/// on its port, it takes traffic again.
#[test]
fn killed_endpoint_is_invisible_with_retries() {
    let _turn = heavy();
    let mut ups = three_named();
    let retry = "retry = { attempts = 3, on = [\"connect-failure\", \"reset\", \"5xx\"], per_try_timeout = \"1s\", \
                 backoff = \"5ms\", max_backoff = \"20ms\" }";
    // Neither the budget nor the retry cap is under test here.
    let cluster = "retry_budget = { ratio = 1.0, min_retries_per_sec = 1000 }\n\
                   circuit_breaker = { max_retries = 1000 }";
    let endpoints = endpoint_list(&ups.iter().collect::<Vec<_>>());
    let (server, addr) = proxy(&config(2, "", &[route("/", retry)], &endpoints, cluster));

    let load = Load::start(addr);
    load.wait_completed(200);
    let victim = ups.remove(1);
    let port = victim.addr;
    drop(victim);
    let killed = Instant::now();
    thread::sleep(Duration::from_millis(1500)); // load runs on with one endpoint dead
    let restarted = Instant::now();
    let back = Upstream::builder(Behavior::Named("e1".into())).address(port).start();
    back.wait_requests(20);
    load.last_at_least(MIN_LOAD);
    let samples = load.finish();

    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok()).collect();
    assert!(
        failed.is_empty(),
        "every GET succeeds despite the dead endpoint: {}",
        some(&failed)
    );
    let while_dead: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= killed && s.done < restarted)
        .collect();
    assert!(
        while_dead.len() >= 100,
        "load ran on while the endpoint was dead: {}",
        while_dead.len()
    );
    assert!(
        while_dead.iter().all(|s| s.upstream.as_deref() != Some("e1")),
        "nothing came from the dead endpoint"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.sent >= restarted && s.upstream.as_deref() == Some("e1")),
        "the restarted endpoint serves clients again"
    );
    let retries = metric_sum(&server.metrics(), RETRY_TOTAL);
    assert!(
        retries >= 1.0,
        "retries hid the dead endpoint: {RETRY_TOTAL} = {retries}"
    );
    stop(server);
}

/// Without retries, requests picked for the dead endpoint fail until it is
/// taken out; once the health checker has marked it down, every request
/// succeeds. Restarted on its port, it passes its checks and serves again.
#[test]
fn killed_endpoint_without_retries_fails_only_until_removed() {
    let _turn = heavy();
    let mut ups = three_named();
    let outlier = "outlier = { consecutive_5xx = 3, consecutive_connect_failures = 2, base_ejection = \"500ms\", \
                   max_ejection = \"2s\", max_ejection_percent = 50 }";
    let endpoints = endpoint_list(&ups.iter().collect::<Vec<_>>());
    let (server, addr) = proxy(&config(
        2,
        "",
        &[route("/", "")],
        &endpoints,
        &format!("{HEALTH_CHECK}\n{outlier}"),
    ));
    for u in &ups {
        wait_health(&server, u.addr, true);
    }

    let load = Load::start(addr);
    load.wait_completed(200);
    let victim = ups.remove(1);
    let port = victim.addr;
    drop(victim);
    wait_health(&server, port, false);
    let removed = Instant::now();
    thread::sleep(Duration::from_millis(1500)); // load runs on after the removal
    let restarted = Instant::now();
    let back = Upstream::builder(Behavior::Named("e1".into())).address(port).start();
    wait_health(&server, port, true);
    until("client traffic on the restarted endpoint", IO_TIMEOUT, || {
        traffic(&back) >= 20
    });
    load.last_at_least(MIN_LOAD);
    let samples = load.finish();

    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok()).collect();
    assert!(
        !failed.is_empty(),
        "without retries the dead endpoint is visible until it is removed"
    );
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= removed).collect();
    let failed_after: Vec<&&Sample> = after.iter().filter(|s| !s.ok()).collect();
    assert!(
        failed_after.is_empty(),
        "no failure once the endpoint is marked down ({} failed before): {:#?}",
        failed.len(),
        &failed_after[..failed_after.len().min(5)]
    );
    assert!(
        after.len() >= 100,
        "load ran on after the removal: {} requests",
        after.len()
    );
    assert!(
        samples
            .iter()
            .any(|s| s.sent >= restarted && s.upstream.as_deref() == Some("e1")),
        "the restarted endpoint serves clients again"
    );
    stop(server);
}

// ---------------------------------------------------------------------------
// 2. A slow endpoint and per_try_timeout
// ---------------------------------------------------------------------------

const SLOW: Duration = Duration::from_secs(1);

/// A try to the slow endpoint ends at per_try_timeout and the retry goes to
/// a fast one: every request is answered 200 by a fast endpoint, sooner than
/// the slow one could have answered at all.
#[test]
fn slow_endpoint_is_cut_off_by_per_try_timeout() {
    let slow = Upstream::builder(Behavior::Delay(SLOW)).name("slow").start();
    let f1 = named("f1");
    let f2 = named("f2");
    let retry = "timeout = \"5s\"\nretry = { attempts = 3, on = [\"connect-failure\", \"reset\", \"timeout\"], \
                 per_try_timeout = \"200ms\", backoff = \"5ms\", max_backoff = \"20ms\" }";
    let (server, addr) = proxy(&config(
        2,
        "",
        &[route("/", retry)],
        &endpoint_list(&[&slow, &f1, &f2]),
        "",
    ));
    let mut client = Client::connect(addr);
    for i in 0..9 {
        let (resp, sent, done) = timed_get(&mut client, &format!("/slow/{i}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert!(
            ["f1", "f2"].contains(&upstream_of(&resp)),
            "request {i} answered by {}",
            upstream_of(&resp)
        );
        assert!(
            done - sent < SLOW,
            "request {i} took {:?}: it waited for the slow endpoint",
            done - sent
        );
    }
    let slow_tries = slow.requests();
    assert!(
        slow_tries >= 1,
        "round robin sent some first tries to the slow endpoint"
    );
    let fast: Vec<Received> = f1.received().into_iter().chain(f2.received()).collect();
    let retried = fast
        .iter()
        .filter(|r| r.header("x-ringway-attempts").is_some_and(|a| a != "1"))
        .count();
    assert!(
        retried >= slow_tries,
        "each timed-out try was retried on a fast endpoint: {slow_tries} slow tries, {retried} retries seen"
    );
    assert!(
        fast.iter().all(|r| r.header("x-ringway-attempts").is_some()),
        "every try carries x-ringway-attempts"
    );
    stop(server);
}

// ---------------------------------------------------------------------------
// Retry rules: methods, bodies, attempts header, a different endpoint
// ---------------------------------------------------------------------------

/// The attempts one request made, from the upstream's log past `from`.
fn attempts_since(upstream: &Upstream, from: usize) -> Vec<Received> {
    upstream.received().split_off(from)
}

/// Each try's x-ringway-attempts value as it came on the wire, padding
/// included.
fn attempt_numbers(tries: &[Received]) -> Vec<String> {
    tries
        .iter()
        .map(|r| {
            let head = String::from_utf8_lossy(&r.raw_head);
            let value = head
                .split("\r\n")
                .find_map(|line| line.strip_prefix("x-ringway-attempts:"));
            value.map_or("-".to_string(), |v| v.strip_prefix(' ').unwrap_or(v).to_string())
        })
        .collect()
}

/// A proxy whose only endpoint answers every request 503 "nope", with routes
/// that retry on 503 up to 3 tries: "/any/" for any method, "/" for
/// idempotent ones with bodies up to 1 KiB.
fn always_503() -> (Server, SocketAddr, Upstream) {
    let down = fixed(503, "nope");
    let retry = |extra: &str| {
        format!("retry = {{ attempts = 3, on = [\"503\"], backoff = \"1ms\", max_backoff = \"2ms\"{extra} }}")
    };
    let routes = [
        route("/any/", &retry(", allow_non_idempotent = true")),
        route("/", &retry(", max_replay_bytes = \"1KiB\"")),
    ];
    let (server, addr) = proxy(&config(2, "", &routes, &[down.endpoint(1)], ""));
    (server, addr, down)
}

/// Send `raw` and return the tries `down` received for it, checking that the
/// client got the last try's answer as the upstream gave it.
fn tries_for(client: &mut Client, down: &Upstream, what: &str, raw: &[u8]) -> Vec<Received> {
    let from = down.requests();
    let resp = client.request(raw);
    let tries = attempts_since(down, from);
    assert_eq!(
        (resp.status, resp.error_reason(), resp.text().as_str()),
        (503, None, "nope"),
        "{what}: the last try's answer is forwarded as is (tries: {:?})",
        attempt_numbers(&tries)
    );
    tries
}

fn with_body(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: r.test\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// `attempts` counts every try, each numbered in x-ringway-attempts;
/// idempotent requests are retried, others only where the route allows it;
/// whether retried or not, the last answer is forwarded as is.
#[test]
fn retries_follow_the_method() {
    let (server, addr, down) = always_503();
    let mut client = Client::connect(addr);

    let tries = tries_for(&mut client, &down, "GET", b"GET /g HTTP/1.1\r\nHost: r.test\r\n\r\n");
    assert_eq!(attempt_numbers(&tries), ["1", "2", "3"], "GET: three tries in all");

    let tries = tries_for(&mut client, &down, "POST", &with_body("POST", "/p", b"0123456789"));
    assert_eq!(attempt_numbers(&tries), ["1"], "POST is not retried");

    let raw = with_body("POST", "/any/p", b"0123456789");
    let tries = tries_for(&mut client, &down, "POST, non-idempotent allowed", &raw);
    assert_eq!(
        attempt_numbers(&tries),
        ["1", "2", "3"],
        "allow_non_idempotent retries POST"
    );

    wait_metric(&server, RETRY_TOTAL, 4.0);
    stop(server);
}

/// Ten tries are numbered 1 to 10, in digits alone; the tenth's longer
/// number leaves the held body whole behind the head.
#[test]
fn ten_tries_are_numbered_in_digits() {
    let down = fixed(503, "nope");
    let retry = "retry = { attempts = 10, on = [\"503\"], backoff = \"1ms\", max_backoff = \"2ms\", \
                 allow_non_idempotent = true }";
    let (server, addr) = proxy(&config(1, "", &[route("/", retry)], &[down.endpoint(1)], ""));
    let mut client = Client::connect(addr);
    let tries = tries_for(&mut client, &down, "POST", &with_body("POST", "/p", b"0123456789"));
    let expected: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
    assert_eq!(attempt_numbers(&tries), expected);
    assert!(tries.iter().all(|t| t.body == b"0123456789"), "every try's body whole");
    stop(server);
}

/// A client's own x-ringway-attempts (here ahead of ours, lower case as
/// ours is written) is dropped: each try carries the proxy's number alone.
#[test]
fn tries_are_numbered_by_the_proxy_alone() {
    let (server, addr, down) = always_503();
    let mut client = Client::connect(addr);
    let raw = b"GET /g HTTP/1.1\r\nHost: r.test\r\nx-ringway-attempts: 9\r\nX_Ringway_Attempts: 9\r\n\r\n";
    let tries = tries_for(&mut client, &down, "GET with the client's attempts", raw);
    assert_eq!(attempt_numbers(&tries), ["1", "2", "3"]);
    for t in &tries {
        let names: Vec<String> = t.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        assert_eq!(names.iter().filter(|n| n.contains("attempts")).count(), 1, "{names:?}");
    }
    wait_metric(&server, RETRY_TOTAL, 2.0);
    stop(server);
}

/// A body within max_replay_bytes is sent whole on every try; a larger one
/// is not retried (here it arrives together with the head).
#[test]
fn retries_replay_bodies_up_to_max_replay_bytes() {
    let (server, addr, down) = always_503();
    let mut client = Client::connect(addr);

    let body = pattern(0, 100);
    let tries = tries_for(&mut client, &down, "PUT", &with_body("PUT", "/u", &body));
    assert_eq!(attempt_numbers(&tries), ["1", "2", "3"], "PUT is idempotent");
    for t in &tries {
        assert_eq!(
            (t.body_len, t.body_fnv),
            (100, Fnv::of(&body)),
            "the replayed body is whole"
        );
    }

    let big = pattern(0, 2048);
    let raw = with_body("PUT", "/big", &big);
    let tries = tries_for(&mut client, &down, "PUT over max_replay_bytes", &raw);
    assert_eq!(
        attempt_numbers(&tries),
        ["1"],
        "a body over max_replay_bytes is not retried"
    );
    assert_eq!((tries[0].body_len, tries[0].body_fnv), (2048, Fnv::of(&big)));

    wait_metric(&server, RETRY_TOTAL, 2.0);
    stop(server);
}

/// With a failing and a healthy endpoint under a random balancer, a retry
/// that could land on the failing one again half the time must not: it
/// prefers the endpoint not yet tried, so every request succeeds.
#[test]
fn retry_goes_to_a_different_endpoint() {
    let bad = fixed(503, "nope");
    let good = named("good");
    let retry = "retry = { attempts = 2, on = [\"503\"], backoff = \"1ms\", max_backoff = \"2ms\" }";
    let (server, addr) = proxy(&config(
        2,
        "",
        &[route("/", retry)],
        &endpoint_list(&[&bad, &good]),
        "lb = \"random\"",
    ));
    let mut client = Client::connect(addr);
    for i in 0..40 {
        let resp = client.get("r.test", &format!("/diff/{i}"));
        assert_eq!((resp.status, upstream_of(&resp)), (200, "good"), "request {i}");
    }
    assert!(
        bad.requests() >= 1,
        "the random balancer picked the failing endpoint first at times"
    );
    for r in bad.received() {
        assert_eq!(
            r.header("x-ringway-attempts"),
            Some("1"),
            "the failing endpoint only ever saw first tries"
        );
    }
    stop(server);
}

// ---------------------------------------------------------------------------
// 3. Circuit breakers: cluster caps and the per-endpoint breaker
// ---------------------------------------------------------------------------

/// max_retries caps the retries in flight, each from its backoff to the
/// end of its try: while one retry waits on its answer, the next request's
/// 503 goes to its client rather than to a second retry.
#[test]
fn max_retries_caps_retries_until_their_try_ends() {
    use std::io::{Read, Write};
    // Answers each first try 503; holds each retry until released.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let (retried_tx, retried_rx) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Arc::new(std::sync::Mutex::new(released));
    std::thread::spawn(move || {
        for tcp in upstream.incoming() {
            let Ok(mut tcp) = tcp else { return };
            let (retried, held) = (retried_tx.clone(), held.clone());
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
                loop {
                    let head = read_request_head(&mut tcp);
                    if head.is_empty() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if text.contains("x-ringway-attempts: 1") {
                        let _ = tcp.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    }
                    let _ = retried.send(());
                    let _ = held.lock().map(|r| r.recv_timeout(IO_TIMEOUT));
                    let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nretried");
                    let mut rest = Vec::new();
                    let _ = tcp.read_to_end(&mut rest);
                    return;
                }
            });
        }
    });
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "retry = { attempts = 2, on = [\"503\"] }")],
        &[format!("{{ address = \"{up_addr}\" }}")],
        "circuit_breaker = { max_retries = 1 }",
    ));
    let mut first = Client::connect(addr);
    first.send(b"GET /first HTTP/1.1\r\nHost: r.test\r\n\r\n");
    retried_rx.recv_timeout(IO_TIMEOUT).expect("the first request's retry");
    // Its retry is in flight: the cap has no room for another.
    let second = get(addr, "r.test", "/second");
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(second.header("x-ringway-attempts"), None);
    let _ = release.send(());
    assert_eq!(first.read_final_response().text(), "retried");
    wait_metric(&server, RETRY_TOTAL, 1.0);
    stop(server);
}

/// A status whose retry the endpoint breaker would refuse (it opens on
/// that very status) is forwarded, not replaced by a 503 circuit-open.
#[test]
fn a_status_the_breaker_would_not_retry_is_forwarded() {
    let failing = fixed(503, "no");
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "retry = { attempts = 3, on = [\"503\"] }")],
        &endpoint_list(&[&failing]),
        "circuit_breaker = { consecutive_failures = 2, open_for = \"60s\" }",
    ));
    let resp = get(addr, "r.test", "/");
    assert_eq!(
        (resp.status, resp.text().as_str(), resp.header("x-ringway-error")),
        (503, "no", None),
        "the upstream's own answer"
    );
    assert_eq!(failing.requests(), 2, "the first 503 was retried");
    stop(server);
}

/// A retriable status forwarded because the retry budget is spent counts
/// as a retry the budget refused, as a refused retry after a reset does.
#[test]
fn a_status_the_budget_cannot_retry_counts_as_refused() {
    let failing = fixed(503, "no");
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "retry = { attempts = 2, on = [\"503\"] }")],
        &endpoint_list(&[&failing]),
        "retry_budget = { ratio = 0.1, min_retries_per_sec = 1 }",
    ));
    const REQUESTS: usize = 30;
    let mut client = Client::connect(addr);
    for i in 0..REQUESTS {
        assert_eq!(client.get("r.test", &format!("/{i}")).status, 503);
    }
    // The last request is counted just after its answer went out.
    let counts = || {
        let text = server.metrics();
        let made = metric_sum(&text, RETRY_TOTAL);
        (
            made,
            metric_sum(&text, "ringway_upstream_rq_retry_budget_exhausted_total"),
        )
    };
    until("each first 503 retried or refused", Duration::from_secs(5), || {
        let (made, refused) = counts();
        made + refused >= REQUESTS as f64
    });
    let (made, refused) = counts();
    assert!(refused > 0.0, "the budget never ran out: {made} retries");
    assert_eq!(made + refused, REQUESTS as f64, "each first 503 was retried or refused");
    stop(server);
}

/// A request refused by the cluster's connection cap is counted as an
/// overflow, as one refused by its request cap is.
#[test]
fn max_connections_overflow_is_counted() {
    let hold = Upstream::start(Behavior::Hold);
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "")],
        &[hold.endpoint(1)],
        "circuit_breaker = { max_connections = 1 }",
    ));
    let mut held = Client::connect(addr);
    held.send(b"GET /held HTTP/1.1\r\nHost: r.test\r\n\r\n");
    hold.wait_requests(1);
    let refused = get(addr, "r.test", "/refused");
    assert_eq!((refused.status, refused.error_reason()), (503, Some("overflow")));
    wait_metric(&server, OVERFLOW_TOTAL, 1.0);
    hold.release();
    assert_eq!(held.read_final_response().status, 200);
    stop(server);
}

/// A client that leaves while its answer is awaited ends the try: its
/// request permit and upstream connection are let go then, not when the
/// upstream answers or the route's time runs out.
#[test]
fn a_client_that_leaves_frees_what_its_request_held() {
    let hold = Upstream::start(Behavior::Hold);
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "")],
        &[hold.endpoint(1)],
        "circuit_breaker = { max_requests = 1 }",
    ));
    let upstream_open = || metric_sum(&server.metrics(), "ringway_upstream_cx_active");
    let mut leaving = Client::connect(addr);
    leaving.send(b"GET /held HTTP/1.1\r\nHost: r.test\r\n\r\n");
    hold.wait_requests(1);
    assert_eq!(upstream_open(), 1.0);
    let refused = get(addr, "r.test", "/while-held");
    assert_eq!(refused.error_reason(), Some("overflow"), "the permit is held");
    drop(leaving);
    until("the upstream connection let go", IO_TIMEOUT, || upstream_open() == 0.0);
    hold.release();
    assert_eq!(get(addr, "r.test", "/after").status, 200, "the permit is free");
    stop(server);
}

/// A client that leaves during a retry's backoff takes its retries with
/// it: no further try goes up.
#[test]
fn a_client_that_leaves_during_a_backoff_is_not_retried_for() {
    let failing = fixed(503, "no");
    let retry = "retry = { attempts = 3, on = [\"503\"], backoff = \"2s\", max_backoff = \"2s\" }";
    let (server, addr) = proxy(&config(1, "", &[route("/", retry)], &[failing.endpoint(1)], ""));
    let mut leaving = Client::connect(addr);
    leaving.send(b"GET /x HTTP/1.1\r\nHost: r.test\r\n\r\n");
    failing.wait_requests(1);
    drop(leaving);
    // Counted once the try loop has ended.
    until("the request is counted", IO_TIMEOUT, || {
        metric_sum(&server.metrics(), "ringway_requests_total") >= 1.0
    });
    assert_eq!(failing.requests(), 1, "no retry for a client that left");
    stop(server);
}

/// A client that half-closes behind pipelined requests is still owed the
/// answers to those already received: it is not taken for gone while one
/// waits behind the answer awaited, however slow the upstream (longer here
/// than the coarse clock's tick, which starts the watch).
#[test]
fn pipelined_requests_are_answered_after_a_half_close() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(600)));
    let (server, addr) = proxy(&config(1, "", &[route("/", "")], &[slow.endpoint(1)], ""));
    let mut client = Client::connect(addr);
    client.send(
        b"GET /a HTTP/1.1\r\nHost: r.test\r\n\r\nGET /b HTTP/1.1\r\nHost: r.test\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: r.test\r\n\r\n",
    );
    client.stream().shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_eq!(client.read_response().status, 200, "the first answer");
    assert_eq!(client.read_response().status, 200, "one that had another behind it");
    stop(server);
}

/// Idle pooled connections to one endpoint do not strand another: an
/// endpoint the worker holds no connection to gets one past the cap.
#[test]
fn idle_connections_elsewhere_do_not_overflow_an_endpoint() {
    let a = named("a");
    let b = named("b");
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "")],
        &endpoint_list(&[&a, &b]),
        "circuit_breaker = { max_connections = 1 }",
    ));
    let mut client = Client::connect(addr);
    for i in 0..6 {
        let resp = client.get("r.test", &format!("/{i}"));
        assert_eq!((resp.status, resp.error_reason()), (200, None), "request {i}");
    }
    assert!(a.requests() > 0 && b.requests() > 0, "both endpoints served");
    stop(server);
}

/// With max_requests = 4, four held requests fill the cluster for the whole
/// process; more requests, on either worker, get 503 overflow at once without
/// reaching the upstream. Released, the held ones complete.
#[test]
fn max_requests_overflow_is_immediate_and_process_wide() {
    let hold = Upstream::start(Behavior::Hold);
    let (server, addr) = proxy(&config(
        2,
        "",
        &[route("/", "")],
        &[hold.endpoint(1)],
        "circuit_breaker = { max_requests = 4 }",
    ));
    let mut held: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = Client::connect(addr);
            c.send(format!("GET /held/{i} HTTP/1.1\r\nHost: r.test\r\n\r\n").as_bytes());
            c
        })
        .collect();
    hold.wait_requests(4);
    let held_since = Instant::now();

    const EXTRA: usize = 8;
    let refused = parallel(EXTRA, |i| get(addr, "r.test", &format!("/extra/{i}")));
    // Hold answers on its own after IO_TIMEOUT; well before that, the four
    // are certainly still in flight.
    assert!(
        held_since.elapsed() < IO_TIMEOUT / 2,
        "the refusals came back while the held requests were in flight"
    );
    for (i, resp) in refused.iter().enumerate() {
        assert_eq!(
            (resp.status, resp.error_reason()),
            (503, Some("overflow")),
            "request {i} past max_requests: {}",
            resp.text()
        );
    }
    assert_eq!(hold.requests(), 4, "no refused request reached the upstream");
    wait_metric(&server, OVERFLOW_TOTAL, EXTRA as f64);

    hold.release();
    for (i, c) in held.iter_mut().enumerate() {
        let resp = c.read_final_response();
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "released"),
            "held request {i}"
        );
    }
    assert_eq!(get(addr, "r.test", "/after").status, 200, "the permits came back");
    stop(server);
}

const OPEN_FOR: Duration = Duration::from_secs(1);
const BREAKER: &str = "circuit_breaker = { consecutive_failures = 3, open_for = \"1s\", probes = 1 }";

/// Trips on the failing endpoint's third consecutive failure, then skips it
/// for open_for; once it is healthy again the half-open probe succeeds and it
/// takes its share again.
#[test]
fn endpoint_breaker_skips_the_failing_endpoint_and_recovers_half_open() {
    let good = named("good");
    let bad = named("bad");
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "")],
        &endpoint_list(&[&good, &bad]),
        BREAKER,
    ));
    bad.set_failing(true);
    let mut client = Client::connect(addr);

    let mut tripped_by = None;
    for i in 0..20 {
        let (resp, sent, _) = timed_get(&mut client, &format!("/trip/{i}"));
        let expected = if upstream_of(&resp) == "bad" { 503 } else { 200 };
        assert_eq!(resp.status, expected, "request {i} from {}", upstream_of(&resp));
        if bad.requests() == 3 {
            tripped_by = Some(sent);
            break;
        }
    }
    // The breaker opened after this request was sent.
    let open_from = tripped_by.expect("round robin reached the failing endpoint three times");

    let mut in_window = 0;
    while Instant::now() < open_from + OPEN_FOR / 2 && in_window < 10 {
        let (resp, _, done) = timed_get(&mut client, &format!("/open/{in_window}"));
        if done < open_from + OPEN_FOR {
            assert_eq!(
                (resp.status, upstream_of(&resp)),
                (200, "good"),
                "an open breaker's endpoint is skipped"
            );
            in_window += 1;
        }
    }
    assert!(in_window >= 4, "only {in_window} requests fit in the open window");
    assert_eq!(
        bad.requests(),
        3,
        "nothing reached the endpoint while its breaker was open"
    );

    bad.set_failing(false);
    let deadline = Instant::now() + IO_TIMEOUT;
    let probe_done = loop {
        let (resp, _, done) = timed_get(&mut client, "/probe");
        assert_eq!(resp.status, 200);
        if upstream_of(&resp) == "bad" {
            break done;
        }
        assert!(done < deadline, "the recovered endpoint never got a half-open probe");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        probe_done + CLOCK_SLACK >= open_from + OPEN_FOR,
        "a probe went through {:?} after tripping, before open_for ({OPEN_FOR:?})",
        probe_done - open_from
    );
    let names: Vec<String> = (0..20)
        .map(|i| {
            let resp = client.get("r.test", &format!("/closed/{i}"));
            assert_eq!(resp.status, 200);
            upstream_of(&resp).to_string()
        })
        .collect();
    let back = names.iter().filter(|n| *n == "bad").count();
    assert!(
        back >= 5,
        "the closed breaker's endpoint takes its share again: {names:?}"
    );
    stop(server);
}

/// The only endpoint's breaker open: 503 circuit-open without touching the
/// upstream; after open_for a probe goes through and, answered, closes it.
#[test]
fn only_endpoint_breaker_open_answers_circuit_open_then_recovers() {
    let only = named("only");
    let (server, addr) = proxy(&config(1, "", &[route("/", "")], &[only.endpoint(1)], BREAKER));
    only.set_failing(true);
    let mut client = Client::connect(addr);
    let mut open_from = Instant::now();
    for i in 0..3 {
        let (resp, sent, _) = timed_get(&mut client, &format!("/fail/{i}"));
        assert_eq!(
            (resp.status, resp.error_reason()),
            (503, None),
            "the upstream's own 503 is forwarded"
        );
        open_from = sent;
    }
    assert_eq!(only.requests(), 3);

    let mut refused = 0;
    while refused == 0 || (Instant::now() < open_from + OPEN_FOR / 2 && refused < 5) {
        let (resp, _, done) = timed_get(&mut client, &format!("/open/{refused}"));
        assert!(done < open_from + OPEN_FOR, "too slow to observe the open window");
        assert_eq!(
            (resp.status, resp.error_reason()),
            (503, Some("circuit-open")),
            "every endpoint breaker-open"
        );
        refused += 1;
    }
    assert_eq!(only.requests(), 3, "an open breaker sends nothing upstream");
    let metrics = server.metrics();
    if Instant::now() < open_from + OPEN_FOR {
        let gauge = format!("endpoint=\"{}\"}} 1", only.addr);
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ringway_circuit_breaker_open{") && l.ends_with(&gauge)),
            "an open breaker shows in the gauge: {metrics}"
        );
    }

    only.set_failing(false);
    let deadline = Instant::now() + IO_TIMEOUT;
    let probe_done = loop {
        let (resp, _, done) = timed_get(&mut client, "/probe");
        if resp.status == 200 {
            break done;
        }
        assert_eq!(resp.error_reason(), Some("circuit-open"), "{}", resp.text());
        assert!(done < deadline, "no half-open probe was let through");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        probe_done + CLOCK_SLACK >= open_from + OPEN_FOR,
        "a probe went through {:?} after tripping, before open_for ({OPEN_FOR:?})",
        probe_done - open_from
    );
    assert_eq!(only.requests(), 4, "one probe");
    for i in 0..5 {
        let resp = client.get("r.test", &format!("/closed/{i}"));
        assert_eq!(
            (resp.status, upstream_of(&resp)),
            (200, "only"),
            "closed again after the probe"
        );
    }
    stop(server);
}

// ---------------------------------------------------------------------------
// Outlier ejection
// ---------------------------------------------------------------------------

const EJECTION: Duration = Duration::from_secs(1);

/// Consecutive 5xx eject an endpoint for base_ejection; with two of three
/// failing and max_ejection_percent = 50 only one is out at a time; the
/// ejected one comes back by itself when its time is up.
#[test]
fn consecutive_5xx_eject_within_the_percent_cap_and_come_back() {
    let good = named("good");
    let bad1 = named("bad1");
    let bad2 = named("bad2");
    let outlier = "outlier = { consecutive_5xx = 3, consecutive_connect_failures = 2, base_ejection = \"1s\", \
                   max_ejection = \"10s\", max_ejection_percent = 50 }";
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "")],
        &endpoint_list(&[&good, &bad1, &bad2]),
        outlier,
    ));
    bad1.set_failing(true);
    bad2.set_failing(true);
    let mut client = Client::connect(addr);
    // Nothing is ejected before this instant, so nothing returns before
    // start + EJECTION.
    let start = Instant::now();
    let mut last_done = start;
    for i in 0..24 {
        let (resp, _, done) = timed_get(&mut client, &format!("/eject/{i}"));
        let expected = if upstream_of(&resp) == "good" { 200 } else { 503 };
        assert_eq!(resp.status, expected, "request {i} from {}", upstream_of(&resp));
        last_done = done;
    }
    assert!(last_done < start + EJECTION, "too slow to observe the ejection window");
    let counts = [bad1.requests(), bad2.requests()];
    let ejected = match counts {
        [3, n] if n > 3 => &bad1,
        [n, 3] if n > 3 => &bad2,
        _ => panic!("exactly one failing endpoint is ejected after 3 failures, the other stays (cap): {counts:?}"),
    };
    wait_metric(&server, EJECTIONS_TOTAL, 1.0);

    bad1.set_failing(false);
    bad2.set_failing(false);
    let deadline = Instant::now() + IO_TIMEOUT;
    let back_done = loop {
        let (resp, _, done) = timed_get(&mut client, "/back");
        assert_eq!(resp.status, 200);
        if ejected.requests() > 3 {
            break done;
        }
        assert!(done < deadline, "the ejected endpoint never came back");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        back_done + CLOCK_SLACK >= start + EJECTION,
        "the ejected endpoint came back {:?} after the first request, before base_ejection",
        back_done - start
    );
    stop(server);
}

/// A failure that comes back after a reload counts where the endpoint is
/// watched now: with one failure before the swap and one after, two
/// consecutive 5xx eject it.
#[test]
fn failures_that_straddle_a_reload_count_toward_ejection() {
    let bad = Upstream::builder(Behavior::Fixed {
        status: 503,
        body: b"down".to_vec(),
        headers: Vec::new(),
    })
    .delay(Duration::from_secs(1))
    .start();
    let outlier = "outlier = { consecutive_5xx = 2, base_ejection = \"30s\", max_ejection_percent = 100 }";
    let build = |listen: &str, timeout: &str| {
        config(1, "", &[route("/", timeout)], &endpoint_list(&[&bad]), outlier).replace("127.0.0.1:0", listen)
    };
    let (server, addr) = proxy(&build("127.0.0.1:0", ""));
    let mut client = Client::connect(addr);
    client.send(b"GET /before HTTP/1.1\r\nHost: s.test\r\n\r\n");
    bad.wait_requests(1);
    // While the first request waits on the upstream, a new generation.
    ringway::admin::apply(&server, &build(&addr.to_string(), "timeout = \"20s\""), "swap")
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let deadline = Instant::now() + IO_TIMEOUT;
    while !server.shared().ready() {
        assert!(Instant::now() < deadline, "workers did not take the new generation");
        thread::yield_now();
    }
    assert_eq!(client.read_response().status, 503);
    assert_eq!(client.get("s.test", "/after").status, 503);
    wait_metric(&server, EJECTIONS_TOTAL, 1.0);
    stop(server);
}

// ---------------------------------------------------------------------------
// 5. Priority failover driven by ejection
// ---------------------------------------------------------------------------

/// `local` at priority 0 and `remote` at priority 1, as config text.
fn priority_pair(local: &Upstream, remote: &Upstream) -> [String; 2] {
    [
        format!("{{ address = \"{}\", priority = 0 }}", local.addr),
        format!("{{ address = \"{}\", priority = 1 }}", remote.addr),
    ]
}

/// The priority-0 endpoint, ejected for 5xx, leaves its level empty: traffic
/// fails over to priority 1, and back once the ejection ends.
#[test]
fn ejection_fails_over_to_the_next_priority_and_back() {
    let local = named("local");
    let remote = named("remote");
    let endpoints = priority_pair(&local, &remote);
    let outlier = "outlier = { consecutive_5xx = 3, base_ejection = \"1s\", max_ejection = \"10s\", \
                   max_ejection_percent = 50 }";
    let (server, addr) = proxy(&config(1, "", &[route("/", "")], &endpoints, outlier));
    let mut client = Client::connect(addr);
    for i in 0..5 {
        assert_eq!(upstream_of(&client.get("r.test", &format!("/p0/{i}"))), "local");
    }
    local.set_failing(true);
    let mut ejected_from = Instant::now();
    for i in 0..3 {
        let (resp, sent, _) = timed_get(&mut client, &format!("/fail/{i}"));
        assert_eq!((resp.status, upstream_of(&resp)), (503, "local"), "failure {i}");
        ejected_from = sent;
    }
    wait_metric(&server, EJECTIONS_TOTAL, 1.0);
    let mut moved = 0;
    while moved == 0 || (Instant::now() < ejected_from + EJECTION / 2 && moved < 10) {
        let (resp, _, done) = timed_get(&mut client, &format!("/over/{moved}"));
        assert!(
            done < ejected_from + EJECTION,
            "too slow to observe the ejection window"
        );
        assert_eq!(
            (resp.status, upstream_of(&resp)),
            (200, "remote"),
            "failed over to priority 1"
        );
        moved += 1;
    }

    local.set_failing(false);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let resp = client.get("r.test", "/back");
        assert_eq!(resp.status, 200);
        if upstream_of(&resp) == "local" {
            break;
        }
        assert!(Instant::now() < deadline, "never failed back to priority 0");
        thread::sleep(Duration::from_millis(10));
    }
    for i in 0..10 {
        assert_eq!(
            upstream_of(&client.get("r.test", &format!("/p0again/{i}"))),
            "local",
            "failed back"
        );
    }
    stop(server);
}

/// While a half-open breaker's probe is out, the other requests of its
/// level go to the next priority rather than being refused.
#[test]
fn a_half_open_breaker_with_its_probe_out_fails_over() {
    let local = Upstream::start(Behavior::Hold);
    let remote = named("remote");
    let endpoints = priority_pair(&local, &remote);
    let breaker = "circuit_breaker = { consecutive_failures = 1, open_for = \"200ms\", probes = 1 }";
    let (server, addr) = proxy(&config(1, "", &[route("/", "timeout = \"1s\"")], &endpoints, breaker));
    // The held endpoint times out once: its breaker opens.
    let resp = get(addr, "r.test", "/first");
    assert_eq!(resp.error_reason(), Some("upstream-timeout"));
    // Requests go to priority 1 until one, once open_for is over, is the
    // probe that the held endpoint takes.
    let prober = thread::spawn(move || loop {
        if upstream_of(&get(addr, "r.test", "/until-probe")) != "remote" {
            return;
        }
    });
    local.wait_requests(2);
    let resp = get(addr, "r.test", "/during-probe");
    assert_eq!(
        (resp.status, upstream_of(&resp)),
        (200, "remote"),
        "failed over while the probe is out"
    );
    local.release();
    prober.join().expect("prober");
    stop(server);
}

/// An open endpoint breaker leaves its level as an ejection does: traffic
/// fails over to priority 1 instead of answering 503 circuit-open.
#[test]
fn an_open_breaker_fails_over_to_the_next_priority() {
    let local = named("local");
    let remote = named("remote");
    let endpoints = priority_pair(&local, &remote);
    let breaker = "circuit_breaker = { consecutive_failures = 3, open_for = \"60s\" }";
    let (server, addr) = proxy(&config(1, "", &[route("/", "")], &endpoints, breaker));
    let mut client = Client::connect(addr);
    local.set_failing(true);
    for i in 0..3 {
        let resp = client.get("r.test", &format!("/fail/{i}"));
        assert_eq!((resp.status, upstream_of(&resp)), (503, "local"), "failure {i}");
    }
    for i in 0..5 {
        let resp = client.get("r.test", &format!("/over/{i}"));
        assert_eq!(
            (resp.status, upstream_of(&resp)),
            (200, "remote"),
            "failed over to priority 1"
        );
    }
    stop(server);
}

// ---------------------------------------------------------------------------
// 4. Rate limits
// ---------------------------------------------------------------------------

const RPS: u64 = 2000;
const BURST: u64 = 100;
const WINDOW: Duration = Duration::from_secs(5);

/// Closed-loop load on a route limited to RPS (burst BURST) for WINDOW, with
/// responses counted by `count_header`.
fn rate_limited_run(connections: usize, count_header: &str) -> Report {
    let up = named("r");
    let limit = format!("rate_limit = {{ rps = {RPS}, burst = {BURST} }}");
    let (server, addr) = proxy(&config(2, "", &[route("/", &limit)], &[up.endpoint(1)], ""));
    let report = run_load(LoadOptions {
        url: format!("http://{addr}/rate"),
        connections,
        threads: connections.min(2),
        duration: WINDOW,
        timeout: Duration::from_secs(2),
        count_header: Some(count_header.to_string()),
        ..LoadOptions::default()
    })
    .expect("load run");
    let ok = report.status.get(&200).copied().unwrap_or(0);
    let limited = report.status.get(&429).copied().unwrap_or(0);
    assert_eq!(report.errors.total(), 0, "no transport errors: {:?}", report.errors);
    assert_eq!(ok + limited, report.requests, "only 200 and 429: {:?}", report.status);
    assert!(
        limited > 0,
        "the load exceeded the limit (else this measured the proxy): {:?}",
        report.status
    );
    let expected = (RPS * WINDOW.as_secs() + BURST) as f64;
    eprintln!(
        "{connections} connection(s): {ok} admitted, {limited} refused in {:?}",
        report.duration
    );
    assert!(
        (ok as f64 - expected).abs() <= expected * 0.1,
        "{ok} admitted over {:?} on {connections} connection(s); expected {expected} ± 10%",
        report.duration
    );
    assert_eq!(up.requests() as u64, ok, "only admitted requests reach the upstream");
    wait_metric(&server, RATELIMIT_REJECTED, limited as f64);
    stop(server);
    report
}

/// One keep-alive connection, so every request is on one worker: the rate is
/// the configured one for the process, not a per-worker share of it. Every
/// 429 names its reason.
#[test]
fn rate_limit_holds_on_one_connection() {
    let _turn = heavy();
    let report = rate_limited_run(1, "x-ringway-error");
    assert_eq!(
        report.reconnects, 0,
        "the connection stayed open, so one worker served it all"
    );
    let counts = report.header_counts.expect("counted");
    let expected: Vec<(String, u64)> = vec![
        ("(missing)".into(), report.status[&200]),
        ("rate-limited".into(), report.status[&429]),
    ];
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        expected,
        "429s say rate-limited"
    );
}

/// Sixteen connections, spread by the kernel over both workers (all sixteen
/// on one has odds of 1 in 32768): together they still get the configured
/// rate. Every 429 carries a retry-after of at least one whole second.
#[test]
fn rate_limit_holds_across_workers() {
    let _turn = heavy();
    let report = rate_limited_run(16, "retry-after");
    let counts = report.header_counts.expect("counted");
    assert_eq!(
        counts.get("(missing)").copied(),
        report.status.get(&200).copied(),
        "{counts:?}"
    );
    let mut with_value = 0;
    for (value, n) in &counts {
        if value == "(missing)" {
            continue;
        }
        let secs: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("retry-after {value:?} is whole seconds"));
        assert!(secs >= 1, "retry-after {value:?} is at least 1");
        with_value += n;
    }
    assert_eq!(
        with_value, report.status[&429],
        "every 429 carries retry-after: {counts:?}"
    );
}

fn check_limited(resp: &Response, what: &str) {
    assert_eq!(
        (resp.status, resp.error_reason()),
        (429, Some("rate-limited")),
        "{what}: {}",
        resp.text()
    );
    let retry_after = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no retry-after"));
    let secs: u64 = retry_after
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what}: retry-after {retry_after:?} is whole seconds"));
    assert!(secs >= 1, "{what}: retry-after {secs}");
}

/// A route's burst is served then refused with a well-formed 429 that never
/// reaches the upstream; a keyed limit gives each key (a header's value, the
/// client's address) its own bucket.
#[test]
fn route_limits_per_route_and_per_key() {
    let up = named("r");
    let routes = [
        route(
            "/keyed/",
            "rate_limit = { rps = 1, burst = 2, key = \"header:x-user\" }",
        ),
        route("/by-ip/", "rate_limit = { rps = 1, burst = 2, key = \"client_ip\" }"),
        route("/", "rate_limit = { rps = 1, burst = 3 }"),
    ];
    let (server, addr) = proxy(&config(2, "", &routes, &[up.endpoint(1)], ""));
    let mut client = Client::connect(addr);
    let statuses: Vec<u16> = (0..6)
        .map(|i| {
            let resp = client.get("r.test", &format!("/plain/{i}"));
            if resp.status == 429 {
                check_limited(&resp, &format!("request {i}"));
            }
            resp.status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "burst 3, then refused");
    assert_eq!(up.requests(), 3, "refused requests do not reach the upstream");

    let user = |client: &mut Client, who: &str, i: usize| {
        client.get_with("r.test", &format!("/keyed/{i}"), &[&format!("x-user: {who}")])
    };
    let alice: Vec<u16> = (0..3).map(|i| user(&mut client, "alice", i).status).collect();
    assert_eq!(alice, [200, 200, 429], "alice's burst of 2");
    assert_eq!(user(&mut client, "bob", 9).status, 200, "bob has his own bucket");
    check_limited(&user(&mut client, "alice", 10), "alice still limited");
    // A key the client names in `Connection` is dropped on the way as
    // hop-by-hop, so it counts as absent: not alice's spent bucket.
    let hidden = client.get_with("r.test", "/keyed/h", &["Connection: x-user", "x-user: alice"]);
    assert_eq!(hidden.status, 200, "a key named in Connection is no key");
    // A key on two lines is their combined value (RFC 9110 §5.3): `carol,
    // dave` whichever way it is written, and neither carol nor dave.
    let pair = |client: &mut Client, i: usize| {
        client.get_with("r.test", &format!("/keyed/p{i}"), &["x-user: carol", "x-user: dave"])
    };
    assert_eq!(user(&mut client, "carol, dave", 11).status, 200);
    assert_eq!(pair(&mut client, 12).status, 200);
    check_limited(&pair(&mut client, 13), "carol, dave's burst of 2, written either way");
    assert_eq!(user(&mut client, "carol", 14).status, 200, "carol alone is another key");

    let by_ip: Vec<u16> = (0..3)
        .map(|i| client.get("r.test", &format!("/by-ip/{i}")).status)
        .collect();
    assert_eq!(by_ip, [200, 200, 429], "127.0.0.1's burst of 2");
    let other_ip = "127.0.0.2".parse().expect("address");
    let mut other = Client::connect_from(addr, other_ip);
    assert_eq!(
        other.get("r.test", "/by-ip/9").status,
        200,
        "another client address has its own bucket"
    );
    check_limited(&client.get("r.test", "/by-ip/10"), "127.0.0.1 still limited");
    wait_metric(&server, RATELIMIT_REJECTED, 8.0);
    stop(server);
}

/// A listener-wide limit applies before routing: requests with no route
/// spend it too, and once it is spent even they get 429, not 404.
#[test]
fn listener_limit_applies_before_routing() {
    let up = named("r");
    let (server, addr) = proxy(&config(
        2,
        "rate_limit = { rps = 1, burst = 2 }",
        &[route("/api/", "")],
        &[up.endpoint(1)],
        "",
    ));
    let mut client = Client::connect(addr);
    for i in 0..2 {
        let resp = client.get("r.test", &format!("/nowhere/{i}"));
        assert_eq!(
            (resp.status, resp.error_reason()),
            (404, Some("no-route")),
            "request {i}"
        );
    }
    check_limited(
        &client.get("r.test", "/api/x"),
        "routable request past the listener's burst",
    );
    check_limited(&client.get("r.test", "/nowhere/2"), "unroutable request past the burst");
    assert_eq!(up.requests(), 0);
    // Counted as rate-limit refusals before any route, and as local replies.
    wait_metric_with(&server, RATELIMIT_REJECTED, "route=\"\"", 2.0);
    wait_metric_with(&server, LOCAL_REPLIES, "reason=\"rate-limited\"", 2.0);
    stop(server);
}

// ---------------------------------------------------------------------------
// 6. Retry budget
// ---------------------------------------------------------------------------

/// Every endpoint answers 503 and the route would try five times: the budget
/// (ratio 0.2 of requests plus a floor of 10 a second, 100 at once) keeps
/// the extra tries to 0.2·N + 100 + 10 a second of the storm.
#[test]
fn retry_budget_caps_a_retry_storm() {
    const N: usize = 500;
    let ups: Vec<Upstream> = (0..3).map(|_| fixed(503, "down")).collect();
    let retry = "retry = { attempts = 5, on = [\"503\"], backoff = \"1ms\", max_backoff = \"2ms\" }";
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", retry)],
        &endpoint_list(&ups.iter().collect::<Vec<_>>()),
        "retry_budget = { ratio = 0.2, min_retries_per_sec = 10 }",
    ));
    let mut client = Client::connect(addr);
    let storm = Instant::now();
    for i in 0..N {
        let resp = client.get("r.test", &format!("/storm/{i}"));
        assert_eq!(
            (resp.status, resp.error_reason(), resp.text().as_str()),
            (503, None, "down"),
            "request {i}: the last answer is forwarded"
        );
    }
    let seen: Vec<Received> = ups.iter().flat_map(|u| u.received()).collect();
    let numbers: Vec<u32> = seen
        .iter()
        .map(|r| {
            let a = r.header("x-ringway-attempts").expect("x-ringway-attempts on every try");
            a.parse().unwrap_or_else(|_| panic!("x-ringway-attempts {a:?}"))
        })
        .collect();
    assert_eq!(
        numbers.iter().filter(|n| **n == 1).count(),
        N,
        "one first try per request"
    );
    assert!(
        numbers.iter().all(|n| (1..=5).contains(n)),
        "at most 5 tries: {numbers:?}"
    );
    let total = seen.len();
    let retries = total - N;
    let refilled = 10.0 * storm.elapsed().as_secs_f64();
    let cap = N as f64 * 1.2 + 100.0 + refilled + 5.0;
    assert!(
        total as f64 <= cap,
        "{total} upstream tries for {N} requests ({retries} retries); the budget allows about {cap}"
    );
    assert!(
        retries >= 100,
        "the budget's floor allows 100 retries at once; {retries} were made"
    );
    wait_metric(&server, RETRY_TOTAL, retries as f64);
    stop(server);
}

// ---------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------

const FAULTS: &str = "ringway_faults_injected_total";

/// A route that aborts every request answers in the upstream's place, on a
/// connection that goes on serving; its neighbour route is untouched.
#[test]
fn fault_abort_answers_for_the_upstream() {
    let up = fixed(200, "real");
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/faulty", "fault = { abort = { status = 503 } }"), route("/", "")],
        &endpoint_list(&[&up]),
        "",
    ));
    let mut client = Client::connect(addr);
    for i in 0..5 {
        let resp = client.get("f.test", "/faulty/x");
        assert_eq!(
            (resp.status, resp.error_reason()),
            (503, Some("fault-abort")),
            "request {i}"
        );
    }
    assert_eq!(up.requests(), 0, "an aborted request never reaches the upstream");
    // An empty body (Content-Length: 0) leaves nothing unread: the
    // connection goes on, as after an upstream's own 503.
    let resp = client.request(b"POST /faulty HTTP/1.1\r\nHost: f.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("connection"), None, "kept open");
    let resp = client.get("f.test", "/other");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"real"[..]));
    wait_metric_with(&server, FAULTS, "kind=\"abort\"", 6.0);
    wait_metric_with(&server, LOCAL_REPLIES, "reason=\"fault-abort\"", 6.0);
    stop(server);
}

/// A delayed request is held at least the delay, then forwarded; a share of
/// requests is aborted and the rest pass.
#[test]
fn fault_delay_holds_and_partial_abort_splits() {
    let up = fixed(200, "real");
    let (server, addr) = proxy(&config(
        1,
        "",
        &[
            route("/slow", "fault = { delay = { duration = \"150ms\" } }"),
            route("/", "fault = { abort = { status = 500, percent = 50 } }"),
        ],
        &endpoint_list(&[&up]),
        "",
    ));
    let mut client = Client::connect(addr);
    let sent = Instant::now();
    let resp = client.get("f.test", "/slow");
    // A lower bound only: timers never fire early.
    assert!(sent.elapsed() >= Duration::from_millis(150), "{:?}", sent.elapsed());
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"real"[..]));
    wait_metric_with(&server, FAULTS, "kind=\"delay\"", 1.0);

    let (mut aborted, mut passed) = (0, 0);
    for _ in 0..200 {
        match client.get("f.test", "/x").status {
            500 => aborted += 1,
            200 => passed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // Half of 200 draws each way; either side empty has odds of 2^-199.
    assert!(aborted > 0 && passed > 0, "{aborted} aborted, {passed} passed");
    assert_eq!(up.requests(), 1 + passed);
    wait_metric_with(&server, FAULTS, "kind=\"abort\"", aborted as f64);
    stop(server);
}

// ---------------------------------------------------------------------------
// Request mirroring
// ---------------------------------------------------------------------------

const MIRRORED: &str = "ringway_mirror_requests_total";

/// Route "/" to cluster "c" (`primary`), mirroring `percent` of requests to
/// cluster "m" (`shadow`).
fn mirror_config(primary: &Upstream, shadow: &Upstream, percent: &str) -> String {
    format!(
        "[runtime]\nworkers = 1\npin_cores = false\ndrain_timeout = \"5s\"\n\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\n\
         [[listener.route]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"c\"\n\
         mirror = {{ cluster = \"m\", percent = {percent} }}\n\n\
         [[cluster]]\nname = \"c\"\nendpoints = [ {} ]\n\n\
         [[cluster]]\nname = \"m\"\nendpoints = [ {} ]\n",
        primary.endpoint(1),
        shadow.endpoint(1)
    )
}

/// The client gets the primary's answer; the mirror cluster gets the same
/// request, body included, with its Host marked `-shadow`, and its answer
/// is dropped.
#[test]
fn mirrored_requests_reach_the_shadow_cluster_and_never_the_client() {
    let primary = fixed(200, "primary");
    let shadow = fixed(503, "shadow");
    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "100"));
    let mut client = Client::connect(addr);
    let resp = client.request(
        b"POST /orders?x=1 HTTP/1.1\r\nHost: shop.test:8080\r\nContent-Length: 5\r\nX-Trace-Me: 1\r\n\r\nhello",
    );
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"primary"[..]));
    let resp = client.get("shop.test", "/again");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"primary"[..]));
    shadow.wait_requests(2);
    // Each copy travels on its own task and connection: in either order.
    let copies = shadow.received();
    let (first, second) = match copies[0].method.as_str() {
        "POST" => (&copies[0], &copies[1]),
        _ => (&copies[1], &copies[0]),
    };
    assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/orders?x=1"));
    assert_eq!(first.header_all("host"), vec!["shop.test-shadow:8080"]);
    assert_eq!(first.header("x-trace-me"), Some("1"));
    assert!(
        first.header("x-forwarded-for").is_some(),
        "the copy is the forwarded request"
    );
    assert_eq!(first.body, b"hello");
    assert_eq!(second.header_all("host"), vec!["shop.test-shadow"]);
    let original = primary.last();
    assert_eq!(
        original.header_all("host"),
        vec!["shop.test"],
        "the primary's copy is untouched"
    );
    wait_metric_with(&server, MIRRORED, "result=\"5xx\"", 2.0);
    stop(server);
}

/// A Host with no name to mark goes to the mirror as it came: an IPv6
/// literal (a suffix would make `[::1]-shadow:8080`, no authority at all)
/// and the empty one of an HTTP/1.0 request without Host.
#[test]
fn mirrored_hosts_without_a_name_are_left_as_they_are() {
    let primary = fixed(200, "primary");
    let shadow = fixed(200, "shadow");
    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "100"));
    let resp = request(
        addr,
        b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let resp = request(addr, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200);
    shadow.wait_requests(2);
    for copy in shadow.received() {
        let want = if copy.path == "/v6" { "[::1]:8080" } else { "" };
        assert_eq!(copy.header_all("host"), vec![want], "{}", copy.path);
    }
    wait_metric_with(&server, MIRRORED, "result=\"2xx\"", 2.0);
    stop(server);
}

/// Copies take the mirror cluster's pooled connections and give them back,
/// as requests do: one connection serves them all.
#[test]
fn mirrored_copies_reuse_pooled_connections() {
    let primary = fixed(200, "primary");
    let shadow = fixed(200, "shadow");
    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "100"));
    let mut client = Client::connect(addr);
    for i in 1..=5 {
        assert_eq!(client.get("shop.test", "/").status, 200);
        // A copy is counted after its connection went back to the pool.
        wait_metric_with(&server, MIRRORED, "result=\"2xx\"", f64::from(i));
    }
    assert_eq!(shadow.requests(), 5);
    assert_eq!(
        shadow.connections(),
        1,
        "each copy after the first reused the connection"
    );
    for copy in shadow.received() {
        assert_eq!(copy.header("connection"), None, "copies keep their connection open");
    }
    stop(server);
}

/// An answer that announces the connection's close leaves it out of the
/// pool, even when the shadow keeps it open.
#[test]
fn mirrored_copies_do_not_reuse_a_connection_announced_closed() {
    let primary = fixed(200, "primary");
    let shadow = Upstream::start(Behavior::Fixed {
        status: 200,
        body: b"shadow".to_vec(),
        headers: vec![("connection".to_string(), "close".to_string())],
    });
    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "100"));
    let mut client = Client::connect(addr);
    for i in 1..=3 {
        assert_eq!(client.get("shop.test", "/").status, 200);
        wait_metric_with(&server, MIRRORED, "result=\"2xx\"", f64::from(i));
    }
    let conns: Vec<usize> = shadow.received().into_iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1, 2], "one connection per copy");
    stop(server);
}

/// A pooled connection that the shadow closes after reading a copy, without
/// answering it, is replaced once: the copy is sent again on a new
/// connection, and counted as answered, not failed.
#[test]
fn a_mirrored_copy_on_a_stale_pooled_connection_is_sent_again() {
    let primary = fixed(200, "primary");
    let shadow = Upstream::builder(Behavior::Fixed {
        status: 200,
        body: b"shadow".to_vec(),
        headers: Vec::new(),
    })
    .drop_request(2)
    .start();
    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "100"));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("shop.test", "/one").status, 200);
    wait_metric_with(&server, MIRRORED, "result=\"2xx\"", 1.0);
    assert_eq!(client.get("shop.test", "/two").status, 200);
    wait_metric_with(&server, MIRRORED, "result=\"2xx\"", 2.0);
    assert_eq!(metric_sum_with(&server.metrics(), MIRRORED, "result=\"failed\""), 0.0);
    let copies: Vec<(String, usize)> = shadow.received().into_iter().map(|r| (r.path, r.conn)).collect();
    let want = [("/one", 0), ("/two", 0), ("/two", 1)].map(|(p, c)| (p.to_string(), c));
    assert_eq!(copies, want, "the dropped copy went again, on a new connection");
    stop(server);
}

/// A mirrored copy is never let past the mirror cluster's max_connections,
/// not even to an endpoint the worker holds no connection to: it is
/// skipped, and the request goes on.
#[test]
fn mirrored_copies_stay_within_max_connections() {
    let primary = fixed(200, "primary");
    let held = Upstream::start(Behavior::Hold);
    let idle = fixed(200, "shadow");
    let config = mirror_config(&primary, &held, "100").replace(
        &format!("endpoints = [ {} ]\n", held.endpoint(1)),
        &format!(
            "endpoints = [ {}, {} ]\nlb = \"round_robin\"\ncircuit_breaker = {{ max_connections = 1 }}\n",
            held.endpoint(1),
            idle.endpoint(1)
        ),
    );
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    assert_eq!(client.get("shop.test", "/one").status, 200);
    // The first copy holds the one connection, busy or pooled, whichever
    // endpoint it went to.
    until("the first copy arrived", IO_TIMEOUT, || {
        held.requests() + idle.requests() == 1
    });
    assert_eq!(client.get("shop.test", "/two").status, 200);
    wait_metric_with(&server, MIRRORED, "result=\"skipped\"", 1.0);
    assert_eq!(held.connections() + idle.connections(), 1, "no connection past the cap");
    held.release();
    stop(server);
}

/// No share, no copies; a body too large to copy, or one still streaming
/// in, is not copied (counted as skipped) and reaches the primary whole.
#[test]
fn mirroring_skips_what_it_cannot_copy() {
    let primary = Upstream::start(Behavior::Echo);
    let shadow = fixed(200, "shadow");
    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "0"));
    let mut client = Client::connect(addr);
    for _ in 0..20 {
        assert_eq!(client.get("shop.test", "/").status, 200);
    }
    stop(server);
    assert_eq!(shadow.requests(), 0);

    let (server, addr) = proxy(&mirror_config(&primary, &shadow, "100"));
    let mut client = Client::connect(addr);
    let body = vec![b'x'; 200 * 1024];
    let mut request = format!(
        "PUT /big HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let resp = client.request(&request);
    assert_eq!(resp.status, 200);
    assert_eq!(primary.last().body_len, body.len() as u64);
    wait_metric_with(&server, MIRRORED, "result=\"skipped\"", 1.0);
    // A streamed (chunked) body is not held back for a copy either: the
    // request goes on at once, uncopied.
    let resp = client.request(
        b"POST /stream HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(primary.last().body, b"hello");
    wait_metric_with(&server, MIRRORED, "result=\"skipped\"", 2.0);
    assert_eq!(shadow.requests(), 0);
    stop(server);
}

// ---------------------------------------------------------------------------
// Held bodies and held-back statuses
// ---------------------------------------------------------------------------

/// Send a PUT whose body stops after 3 of its 10 bytes: the route's timeout
/// must answer 408 `body-read-timeout`, announce the close and close.
fn send_a_stalled_body(addr: SocketAddr) {
    let mut client = Client::connect(addr);
    client.send(b"PUT /stalled HTTP/1.1\r\nHost: r.test\r\nContent-Length: 10\r\n\r\nabc");
    let resp = client.read_response();
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.error_reason(), Some("body-read-timeout"));
    assert!(
        resp.announces_close(),
        "the rest of the body never came: {:?}",
        resp.headers
    );
    client.expect_closed();
}

/// A body held for retries is read within the route's timeout: a client
/// that stops sending it gets a 408 and the connection closes, and nothing
/// reaches the upstream (nor holds the cluster's request cap meanwhile).
#[test]
fn a_held_body_the_client_stops_sending_gets_408() {
    let up = named("u");
    let retry = "timeout = \"300ms\"\nretry = { attempts = 2, on = [\"503\"] }";
    let (server, addr) = proxy(&config(1, "", &[route("/", retry)], &[up.endpoint(1)], ""));
    send_a_stalled_body(addr);
    assert_eq!(up.requests(), 0, "nothing was forwarded");
    stop(server);
}

/// A streamed body (no retry policy holds it) that the client stops sending
/// is the client's fault too: the route's timeout answers 408, not 504, and
/// the endpoint, which was waiting for the body, is not ejected for it.
#[test]
fn a_streamed_body_the_client_stops_sending_gets_408_and_ejects_nothing() {
    let up = named("u");
    let outlier = "outlier = { consecutive_5xx = 1, base_ejection = \"30s\", max_ejection_percent = 100 }";
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "timeout = \"300ms\"")],
        &[up.endpoint(1)],
        outlier,
    ));
    send_a_stalled_body(addr);
    assert_eq!(
        Client::connect(addr).get("r.test", "/after").status,
        200,
        "the endpoint still serves"
    );
    assert_eq!(metric_sum(&server.metrics(), EJECTIONS_TOTAL), 0.0);
    stop(server);
}

/// The other way round: an endpoint that stops reading the body it is sent
/// is the one that times out (504), and counts toward its ejection.
#[test]
fn an_endpoint_that_stops_reading_the_body_is_the_one_timed_out() {
    // Accepts and holds each connection without reading a byte.
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let deaf_addr = deaf.local_addr().expect("addr");
    let holder = thread::spawn(move || deaf.accept().map(|(held, _)| held));
    let outlier = "outlier = { consecutive_5xx = 1, base_ejection = \"30s\", max_ejection_percent = 100 }";
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", "timeout = \"500ms\"")],
        &[format!("{{ address = \"{deaf_addr}\" }}")],
        outlier,
    ));
    let mut client = Client::connect(addr);
    // More than any socket buffers hold: the pump ends up blocked writing.
    let body = vec![b'x'; 64 << 20];
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: r.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = client.writer();
    let sender = thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
    });
    let resp = client.read_response();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(resp.error_reason(), Some("upstream-timeout"));
    wait_metric(&server, EJECTIONS_TOTAL, 1.0);
    drop(client);
    let _ = sender.join();
    drop(holder.join());
    stop(server);
}

/// A retriable status is held back only while a retry can still start when
/// it arrives. Here the route's time left by then is shorter than the
/// backoff, so the upstream's own 503 (body, Retry-After) goes to the
/// client rather than an error of Ringway's.
#[test]
fn a_retriable_status_is_forwarded_once_no_retry_fits() {
    let late = Upstream::builder(Behavior::Fixed {
        status: 503,
        body: b"nope".to_vec(),
        headers: vec![("retry-after".to_string(), "7".to_string())],
    })
    .delay(Duration::from_secs(1))
    .start();
    let retry =
        "timeout = \"2s\"\nretry = { attempts = 3, on = [\"503\"], backoff = \"1500ms\", max_backoff = \"1500ms\" }";
    let (server, addr) = proxy(&config(1, "", &[route("/", retry)], &[late.endpoint(1)], ""));
    let resp = get(addr, "r.test", "/late");
    assert_eq!(resp.status, 503, "{:?} {}", resp.error_reason(), resp.text());
    assert_eq!(resp.error_reason(), None, "the upstream's answer, not Ringway's");
    assert_eq!(resp.text(), "nope");
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!(late.requests(), 1);
    stop(server);
}

/// A try cut short by its per_try_timeout while its request is still being
/// written (the endpoint accepts but never reads) leaves the whole request
/// for the retry, which carries it to the other endpoint.
#[test]
fn a_try_cut_short_mid_write_leaves_the_whole_request_for_the_retry() {
    // Never accepted: the kernel completes the handshakes and buffers what
    // arrives up to the socket's receive buffer, then the sender blocks.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_endpoint = format!("{{ address = \"{}\" }}", hung.local_addr().expect("address"));
    let echo = Upstream::start(Behavior::Echo);
    // Ample for the try that succeeds (16 MiB each way) on a slow machine;
    // the hung one never ends any other way.
    let retry = "timeout = \"30s\"\nretry = { attempts = 2, on = [\"timeout\"], per_try_timeout = \"3s\", \
                 max_replay_bytes = \"32MiB\", backoff = \"1ms\", max_backoff = \"2ms\" }";
    let (server, addr) = proxy(&config(
        1,
        "",
        &[route("/", retry)],
        &[hung_endpoint, echo.endpoint(1)],
        "",
    ));
    // Far more than the loopback socket buffers take.
    let body = pattern(0, 16 * 1024 * 1024);
    let mut client = Client::connect(addr);
    // Round robin: the hung endpoint takes a first try.
    for i in 0..2 {
        let mut request = format!(
            "PUT /big/{i} HTTP/1.1\r\nHost: r.test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let resp = client.request(&request);
        assert_eq!(resp.status, 200, "request {i}: {:?}", resp.error_reason());
        let received = echo.last();
        assert_eq!(received.path, format!("/big/{i}"));
        assert_eq!(received.body_len, body.len() as u64, "request {i} arrived whole");
        assert_eq!(received.body_fnv, Fnv::of(&body), "request {i} arrived intact");
    }
    let retried = echo
        .received()
        .iter()
        .filter(|r| r.header("x-ringway-attempts") == Some("2"))
        .count();
    assert!(retried >= 1, "a request went to the hung endpoint first");
    stop(server);
}
