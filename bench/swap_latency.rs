//! How long a live config swap takes with a large route table.
//!
//! A 10,000-route config (100 hosts × 100 path prefixes, two clusters) runs
//! on an in-process server with two workers; 100 swaps then alternate one
//! route's target between the clusters. For each swap two figures:
//!
//! - `apply()`: the call itself, i.e. parse + validate + compile + publish;
//! - `apply() → ready`: from calling `apply()` until every worker serves the
//!   new generation (what GET /ready reports), which adds each worker's own
//!   rebuild of its plan (route index, balancers, pools).
//!
//! The second is polled with `yield_now` between checks rather than a pure
//! spin, so the polling thread does not hold a core the workers need on a
//! small machine. After each swap, outside the timed part, one request to
//! the swapped route checks that it now goes to the new cluster.
//!
//! `cargo bench --bench swap_latency`

use ringway::worker::Server;
use ringway_load::{spawn_serve, ServeHandle, ServeOptions};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const HOSTS: usize = 100;
const PREFIXES: usize = 100;
const SWAPS: usize = 100;
/// The route whose target the swaps alternate.
const SWAPPED: (usize, usize) = (57, 42);
/// Bound on one swap's wait for readiness, so a bug fails instead of hanging.
const READY_LIMIT: Duration = Duration::from_secs(30);

fn serve(name: &str) -> ServeHandle {
    spawn_serve(ServeOptions::named(name)).unwrap_or_else(|e| panic!("start upstream {name}: {e}"))
}

/// The full config, with the swapped route pointing at `target`.
fn config(v1: SocketAddr, v2: SocketAddr, target: &str) -> String {
    let mut toml = String::with_capacity(HOSTS * PREFIXES * 110);
    toml.push_str(
        "[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\n",
    );
    for h in 0..HOSTS {
        for p in 0..PREFIXES {
            let cluster = if (h, p) == SWAPPED {
                target
            } else if (h + p) % 2 == 0 {
                "v1"
            } else {
                "v2"
            };
            let _ = write!(
                toml,
                "  [[listener.route]]\n  name = \"h{h}-r{p}\"\n  \
                 match = {{ host = \"h{h}.svc.local\", path_prefix = \"/r{p}/\" }}\n  cluster = \"{cluster}\"\n\n"
            );
        }
    }
    let _ = write!(
        toml,
        "[[cluster]]\nname = \"v1\"\nendpoints = [ {{ address = \"{v1}\" }} ]\n\n\
         [[cluster]]\nname = \"v2\"\nendpoints = [ {{ address = \"{v2}\" }} ]\n"
    );
    toml
}

/// Where the proxy sends a request for the swapped route (`x-served-by`).
fn served_by(proxy: SocketAddr) -> String {
    let (h, p) = SWAPPED;
    let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).expect("connect to the proxy");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let request = format!("GET /r{p}/x HTTP/1.1\r\nHost: h{h}.svc.local\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "unexpected response: {response:?}"
    );
    response
        .lines()
        .find_map(|l| l.strip_prefix("x-served-by: "))
        .unwrap_or_else(|| panic!("no x-served-by in {response:?}"))
        .to_string()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `min p50 p99 max` in milliseconds (nearest-rank percentiles).
fn summary(label: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    format!(
        "{label:<24}{:>9.3}{:>9.3}{:>9.3}{:>9.3}",
        ms(samples[0]),
        ms(rank(0.50)),
        ms(rank(0.99)),
        ms(samples[samples.len() - 1])
    )
}

fn main() {
    let v1 = serve("v1");
    let v2 = serve("v2");
    let (a1, a2) = (v1.local_addr(), v2.local_addr());
    let initial = config(a1, a2, "v1");
    let snapshot = ringway::config::parse(&initial, "swap_latency.toml", 1).expect("valid config");
    let server = Server::start(snapshot).expect("start the proxy");
    let proxy = server.local_addr("ingress").expect("listener ingress is bound");
    assert_eq!(served_by(proxy), "v1");

    let mut apply_times = Vec::with_capacity(SWAPS);
    let mut ready_times = Vec::with_capacity(SWAPS);
    for i in 0..SWAPS {
        let target = if i % 2 == 0 { "v2" } else { "v1" };
        let toml = config(a1, a2, target);

        let started = Instant::now();
        let generation = ringway::admin::apply(&server, &toml, "swap_latency.toml")
            .unwrap_or_else(|e| panic!("swap {i} refused:\n{e}"));
        let applied = started.elapsed();
        while !server.shared().ready() {
            assert!(started.elapsed() < READY_LIMIT, "swap {i}: workers not ready");
            thread::yield_now();
        }
        let ready = started.elapsed();

        assert_eq!(server.shared().generation(), generation);
        assert_eq!(served_by(proxy), target, "swap {i} took effect");
        apply_times.push(applied);
        ready_times.push(ready);
    }

    println!(
        "swap_latency: {} routes, 2 clusters, {} workers, config {} bytes, {SWAPS} swaps",
        HOSTS * PREFIXES,
        server.worker_count(),
        initial.len()
    );
    println!("{:<24}{:>9}{:>9}{:>9}{:>9}", "(ms)", "min", "p50", "p99", "max");
    println!("{}", summary("apply()", &mut apply_times));
    println!("{}", summary("apply() -> ready", &mut ready_times));

    server.drain();
    server.wait();
}
