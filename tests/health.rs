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

/// A TCP check marks a closed port down, and an endpoint down when its
/// checks start leaves on the first failed check, not after
/// unhealthy_threshold of them: with the second check, that would take
/// three minutes.
#[test]
fn tcp_check_marks_a_closed_port_down() {
    let good = Upstream::start(Behavior::Named("good".into()));
    let closed: SocketAddr = free_address();
    for check in [
        "health_check = { protocol = \"tcp\", interval = \"50ms\", timeout = \"200ms\", unhealthy_threshold = 1 }",
        "health_check = { protocol = \"tcp\", interval = \"60s\", timeout = \"500ms\", unhealthy_threshold = 3 }",
    ] {
        let (server, addr) = proxy(&config(
            &format!("{}, {{ address = \"{closed}\" }}", good.endpoint(1)),
            check,
        ));
        wait_health(&server, closed, false);
        assert!(upstream_names(addr, 20).iter().all(|n| n == "good"), "{check}");
        stop(server);
    }
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

/// Envoy's overprovisioning: priority 0 keeps all traffic while at least 1/1.4
/// of it is healthy, and spills the rest to priority 1 as health drops
/// (3 of 5 healthy: 60% × 1.4 = 84% stays, 16% spills).
#[test]
fn priority_spills_in_proportion_to_lost_health() {
    let local: Vec<Upstream> = (0..5)
        .map(|i| Upstream::start(Behavior::Named(format!("p0-{i}"))))
        .collect();
    let remote = Upstream::start(Behavior::Named("remote".into()));
    let mut endpoints: Vec<String> = local
        .iter()
        .map(|u| format!("{{ address = \"{}\", priority = 0 }}", u.addr))
        .collect();
    endpoints.push(format!("{{ address = \"{}\", priority = 1 }}", remote.addr));
    let (server, addr) = proxy(&config(&endpoints.join(", "), CHECK));

    local[0].set_failing(true);
    wait_health(&server, local[0].addr, false);
    let names = upstream_names(addr, 200);
    assert!(
        names.iter().all(|n| n != "remote"),
        "4 of 5 healthy × 1.4 ≥ 100%: nothing spills"
    );

    local[1].set_failing(true);
    wait_health(&server, local[1].addr, false);
    const N: usize = 1000;
    let names = upstream_names(addr, N);
    let spilled = names.iter().filter(|n| *n == "remote").count() as f64 / N as f64;
    // 16% expected; ±5 points is over 4 standard deviations at N = 1000.
    assert!(
        (0.11..=0.21).contains(&spilled),
        "spilled {:.1}% to priority 1",
        spilled * 100.0
    );
    stop(server);
}

/// With runtime.zone set, endpoints in the proxy's zone take the traffic while
/// they are healthy; when they are not, the other zone does.
#[test]
fn local_zone_is_preferred_while_healthy() {
    let a1 = Upstream::start(Behavior::Named("a1".into()));
    let a2 = Upstream::start(Behavior::Named("a2".into()));
    let b1 = Upstream::start(Behavior::Named("b1".into()));
    let b2 = Upstream::start(Behavior::Named("b2".into()));
    // Two of four stay healthy: under half would put the level in panic
    // (every endpoint eligible), as Envoy does.
    let endpoints = format!(
        "{{ address = \"{}\", zone = \"a\" }}, {{ address = \"{}\", zone = \"a\" }}, \
         {{ address = \"{}\", zone = \"b\" }}, {{ address = \"{}\", zone = \"b\" }}",
        a1.addr, a2.addr, b1.addr, b2.addr
    );
    let toml = config(&endpoints, CHECK).replace("pin_cores = false\n", "pin_cores = false\nzone = \"a\"\n");
    let (server, addr) = proxy(&toml);
    let names = upstream_names(addr, 60);
    assert!(names.iter().all(|n| n.starts_with('a')), "local zone only: {names:?}");
    a1.set_failing(true);
    a2.set_failing(true);
    wait_health(&server, a1.addr, false);
    wait_health(&server, a2.addr, false);
    let names = upstream_names(addr, 30);
    assert!(
        names.iter().all(|n| n.starts_with('b')),
        "other zone when the local one is down: {names:?}"
    );
    stop(server);
}

/// A removed endpoint's health is no longer reported, though a long-lived
/// connection (a WebSocket tunnel here) still holds the plan that had it.
#[test]
fn removed_endpoints_leave_the_health_metric_while_old_plans_live_on() {
    let keep = Upstream::start(Behavior::WebSocketEcho);
    let gone = Upstream::start(Behavior::WebSocketEcho);
    let both = format!("{}, {}", keep.endpoint(1), gone.endpoint(1));
    let (server, addr) = proxy(&config(&both, CHECK));
    wait_health(&server, keep.addr, true);
    wait_health(&server, gone.addr, true);
    let mut tunnel = Client::connect(addr);
    tunnel.send(WEBSOCKET_HANDSHAKE);
    assert_eq!(tunnel.read_response().status, 101);
    ringway::admin::apply(&server, &config(&keep.endpoint(1), CHECK), "reload").expect("reload");
    let series = |up: &Upstream| format!("ringway_endpoint_healthy{{cluster=\"c\",endpoint=\"{}\"}} 1", up.addr);
    let metrics = server.metrics();
    assert!(metrics.contains(&series(&keep)), "{metrics}");
    assert!(!metrics.contains(&series(&gone)), "{metrics}");
    drop(tunnel);
    stop(server);
}
