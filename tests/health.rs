//! Active health checks: endpoints that fail their checks leave the pick set
//! and return when they pass again; with none healthy the proxy fails open
//! (panic mode); priorities fail over to the next level and back.

mod common;

use common::*;
use ringway::worker::Server;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const CHECK: &str = "health_check = { path = \"/healthz\", interval = \"50ms\", timeout = \"500ms\", unhealthy_threshold = 2, healthy_threshold = 2 }";

fn config(endpoints: &str, check: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\ncluster = \"c\"\n\
         [[cluster]]\nname = \"c\"\nlb = \"round_robin\"\nendpoints = [ {endpoints} ]\n{check}\n"
    )
}

/// Wait until the health thread has published `healthy` for `addr`.
fn wait_health(server: &Server, addr: SocketAddr, healthy: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = server.shared().health.all();
        if now.iter().any(|(_, a, h)| *a == addr && *h == healthy) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never became healthy={healthy}: {now:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn upstream_names(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut client = Client::connect(addr);
    (0..n)
        .map(|i| {
            let resp = client.get("h.test", &format!("/{i}"));
            assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
            resp.header("x-upstream").unwrap_or("?").to_string()
        })
        .collect()
}

#[test]
fn failing_endpoint_leaves_and_returns() {
    let good = Upstream::start(Behavior::Named("good".into()));
    let flaky = Upstream::start(Behavior::Named("flaky".into()));
    let (server, addr) = proxy(&config(&format!("{}, {}", good.endpoint(1), flaky.endpoint(1)), CHECK));
    flaky.set_failing(true);
    wait_health(&server, flaky.addr, false);
    let names = upstream_names(addr, 40);
    assert!(
        names.iter().all(|n| n == "good"),
        "only the healthy endpoint serves: {names:?}"
    );

    flaky.set_failing(false);
    wait_health(&server, flaky.addr, true);
    let names = upstream_names(addr, 40);
    assert!(
        names.iter().any(|n| n == "flaky"),
        "the recovered endpoint serves again: {names:?}"
    );
    stop(server);
}

#[test]
fn tcp_check_marks_a_closed_port_down() {
    let good = Upstream::start(Behavior::Named("good".into()));
    let closed: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr")
    };
    let tcp =
        "health_check = { protocol = \"tcp\", interval = \"50ms\", timeout = \"200ms\", unhealthy_threshold = 1 }";
    let (server, addr) = proxy(&config(
        &format!("{}, {{ address = \"{closed}\" }}", good.endpoint(1)),
        tcp,
    ));
    wait_health(&server, closed, false);
    assert!(upstream_names(addr, 20).iter().all(|n| n == "good"));
    stop(server);
}

#[test]
fn all_unhealthy_fails_open() {
    let a = Upstream::start(Behavior::Named("a".into()));
    let (server, addr) = proxy(&config(&a.endpoint(1), CHECK));
    a.set_failing(true);
    wait_health(&server, a.addr, false);
    // No endpoint is healthy: rather than refusing everything, every endpoint
    // is eligible (panic mode). The request reaches the upstream, whose own
    // 503 comes back, not a proxy-generated no-healthy-endpoint.
    let before = a.requests();
    let resp = get(addr, "h.test", "/");
    assert_eq!(
        (resp.status, resp.error_reason()),
        (503, None),
        "forwarded in panic mode"
    );
    assert!(a.requests() > before, "the upstream saw the request");
    stop(server);
}

#[test]
fn priority_levels_fail_over_and_back() {
    let local = Upstream::start(Behavior::Named("local".into()));
    let remote = Upstream::start(Behavior::Named("remote".into()));
    let endpoints = format!(
        "{{ address = \"{}\", priority = 0 }}, {{ address = \"{}\", priority = 1 }}",
        local.addr, remote.addr
    );
    let (server, addr) = proxy(&config(&endpoints, CHECK));
    assert!(
        upstream_names(addr, 20).iter().all(|n| n == "local"),
        "priority 0 takes all traffic"
    );

    local.set_failing(true);
    wait_health(&server, local.addr, false);
    assert!(
        upstream_names(addr, 20).iter().all(|n| n == "remote"),
        "fails over to priority 1"
    );

    local.set_failing(false);
    wait_health(&server, local.addr, true);
    assert!(
        upstream_names(addr, 20).iter().all(|n| n == "local"),
        "fails back to priority 0"
    );
    stop(server);
}
