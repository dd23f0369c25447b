//! Service discovery: an endpoints file re-read when it changes and a DNS
//! source, both publishing new generations without touching the workers'
//! loops; removed endpoints stop taking new requests while in-flight ones finish.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

fn config(source: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\ncluster = \"c\"\n\
         [[cluster]]\nname = \"c\"\n{source}\n"
    )
}

/// Wait until a generation after `generation` is published and every worker
/// serves it (what /ready reports), with a deadline.
fn wait_generation_after(server: &ringway::worker::Server, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.shared().generation() <= generation || !server.shared().ready() {
        assert!(Instant::now() < deadline, "no new generation after {generation}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn endpoints_file_changes_move_traffic_and_drain_removed_endpoints() {
    let first = Upstream::builder(Behavior::Hold).name("first").start();
    let second = Upstream::start(Behavior::Named("second".into()));
    let file = std::env::temp_dir().join(format!("ringway-endpoints-{}.json", std::process::id()));
    std::fs::write(&file, format!("[{{\"address\": \"{}\"}}]", first.addr)).expect("write");
    let (server, addr) = proxy(&config(&format!("endpoints_file = \"{}\"", file.display())));

    // A request held in flight on the first endpoint.
    let in_flight = thread::spawn(move || Client::connect(addr).get("d.test", "/slow"));
    first.wait_requests(1);

    // The file now lists only the second endpoint.
    let before = server.shared().generation();
    std::fs::write(&file, format!("[{{\"address\": \"{}\", \"weight\": 2}}]", second.addr)).expect("rewrite");
    wait_generation_after(&server, before);
    for _ in 0..10 {
        assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("second"));
    }
    assert_eq!(first.requests(), 1, "the removed endpoint takes no new requests");
    first.release();
    let held = in_flight.join().expect("in-flight client");
    assert_eq!(
        held.status, 200,
        "the in-flight request on the removed endpoint completes"
    );

    // A broken file keeps the endpoints in force.
    std::fs::write(&file, "[ {\"address\": ").expect("break");
    let generation = server.shared().generation();
    thread::sleep(Duration::from_millis(600)); // past two discovery polls
    assert_eq!(server.shared().generation(), generation, "nothing published");
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("second"));
    stop(server);
    let _ = std::fs::remove_file(file);
}

#[test]
fn dns_source_resolves_on_the_control_side() {
    let up = Upstream::start(Behavior::Named("dns".into()));
    let (server, addr) = proxy(&config(&format!("dns = \"{}\"\ndns_refresh = \"100ms\"", up.addr)));
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("dns"));
    let cluster = &server.shared().load().clusters[0];
    assert_eq!(cluster.endpoints.len(), 1);
    assert_eq!(cluster.endpoints[0].address, up.addr);
    stop(server);
}

#[test]
fn a_cluster_takes_one_endpoint_source() {
    let err = ringway::config::parse(&config("endpoints = []\ndns = \"localhost:80\""), "t.toml", 1)
        .expect_err("two sources");
    assert!(
        err.to_string().contains("one of endpoints, endpoints_file or dns"),
        "{err}"
    );
}
