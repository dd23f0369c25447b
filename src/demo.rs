//! `ringway demo`: a self-contained tour. It starts two versions of a service
//! on loopback, runs the proxy with `config/demo.toml` (a 90/10 canary split
//! plus a header route to the canary), drives a few seconds of load through
//! it with the bundled load generator, and prints what happened.

use crate::config;
use crate::worker::Server;
use ringway_load::{run_load, spawn_serve, LoadOptions, Report, ServeOptions};
use std::time::Duration;

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

pub fn run() -> Result<(), String> {
    let serve = |name: &str| {
        spawn_serve(ServeOptions::named(name)).map_err(|e| format!("demo: cannot start upstream {name}: {e}"))
    };
    let v1 = serve("v1")?;
    let v2 = serve("v2")?;

    let mut snapshot = config::parse(DEMO_CONFIG, "config/demo.toml", 1).map_err(|e| e.to_string())?;
    // Use the upstreams just started and any free port, so the demo never
    // collides with something already listening.
    for cluster in &mut snapshot.clusters {
        let upstream = if cluster.name == "shop-v1" {
            v1.local_addr()
        } else {
            v2.local_addr()
        };
        for endpoint in &mut cluster.endpoints {
            endpoint.address = upstream;
        }
    }
    for listener in &mut snapshot.listeners {
        listener.address.set_port(0);
    }
    let server = Server::start(snapshot).map_err(|e| format!("demo: cannot start the proxy: {e}"))?;
    let proxy = server.local_addr("ingress").ok_or("demo: listener missing")?;

    crate::stdout_line!("Ringway demo");
    crate::stdout_line!(
        "  upstreams: shop-v1 on {}, shop-v2 on {}",
        v1.local_addr(),
        v2.local_addr()
    );
    crate::stdout_line!(
        "  proxy:     {proxy} with {} workers, config/demo.toml",
        server.worker_count()
    );
    crate::stdout_line!("  routes:    x-canary: 1 → shop-v2; everything else split 90% shop-v1 / 10% shop-v2");
    crate::stdout_line!();

    let load = |seconds: u64, headers: Vec<(String, String)>| {
        run_load(LoadOptions {
            url: format!("http://{proxy}/products"),
            connections: 32,
            threads: 1,
            duration: Duration::from_secs(seconds),
            headers,
            count_header: Some("x-served-by".to_string()),
            ..Default::default()
        })
        .map_err(|e| format!("demo: load run failed: {e}"))
    };
    crate::stdout_line!("Running 3 s of load (32 connections) through the canary split...");
    let split = load(3, Vec::new())?;
    crate::stdout_line!("Running 1 s of load with `x-canary: 1`...");
    let canary = load(1, vec![("x-canary".to_string(), "1".to_string())])?;

    server.drain();
    server.wait();
    crate::stdout_line!();
    print_section("Canary split (expect ~90% v1 / ~10% v2)", &split);
    print_section("Header route x-canary: 1 (expect 100% v2)", &canary);
    let failures = split.errors.total() + canary.errors.total();
    if failures > 0 {
        return Err(format!("demo: {failures} requests failed"));
    }
    Ok(())
}

fn print_section(title: &str, report: &Report) {
    let latency = report.latency();
    crate::stdout_line!("{title}");
    crate::stdout_line!(
        "  requests {}  ({:.0} req/s)  errors {}",
        report.requests,
        report.rps(),
        report.errors.total()
    );
    let total: u64 = report.header_counts.iter().flat_map(|m| m.values()).sum();
    for (version, count) in report.header_counts.iter().flatten() {
        let share = 100.0 * *count as f64 / total.max(1) as f64;
        crate::stdout_line!("  served by {version:<4} {count:>8}  {share:5.1}%");
    }
    crate::stdout_line!(
        "  latency  p50 {}  p99 {}  p99.9 {}  max {}",
        fmt_us(latency.p50),
        fmt_us(latency.p99),
        fmt_us(latency.p999),
        fmt_us(latency.max)
    );
    crate::stdout_line!();
}

fn fmt_us(us: u64) -> String {
    ringway_load::report::fmt_us(us)
}
