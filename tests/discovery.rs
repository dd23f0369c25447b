//! Service discovery: an endpoints file re-read when it changes and a DNS
//! source, both publishing new generations without touching the workers'
//! loops; removed endpoints stop taking new requests while in-flight ones
//! finish, then leave the metrics.

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

/// Wait until discovery has counted more than `seen` looks at cluster `c`
/// ending in `result`, with a deadline; returns the new count.
fn wait_refreshes_above(server: &ringway::worker::Server, result: &str, seen: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = server.shared().discovery_refreshes("c", result);
        if now > seen {
            return now;
        }
        assert!(Instant::now() < deadline, "no {result} refresh after {seen}");
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
    let updated = server.shared().discovery_refreshes("c", "updated");
    std::fs::write(&file, format!("[{{\"address\": \"{}\", \"weight\": 2}}]", second.addr)).expect("rewrite");
    wait_generation_after(&server, before);
    // Counted just after the publish, so it may trail the generation briefly.
    wait_refreshes_above(&server, "updated", updated);
    for _ in 0..10 {
        assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("second"));
    }
    assert_eq!(first.requests(), 1, "the removed endpoint takes no new requests");
    // The removed endpoint's series stay while its request is in flight...
    let first_active = format!(
        "ringway_upstream_cx_active{{cluster=\"c\",endpoint=\"{}\"}} 1\n",
        first.addr
    );
    let metrics = server.metrics();
    assert!(metrics.contains(&first_active), "{metrics}");
    first.release();
    let held = in_flight.join().expect("in-flight client");
    assert_eq!(
        held.status, 200,
        "the in-flight request on the removed endpoint completes"
    );
    // ...and leave the scrape once nothing holds the endpoint.
    let first_label = format!("endpoint=\"{}\"", first.addr);
    let second_label = format!("endpoint=\"{}\"", second.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server.metrics();
        assert!(metrics.contains(&second_label), "{metrics}");
        if !metrics.contains(&first_label) {
            break;
        }
        assert!(Instant::now() < deadline, "removed endpoint still scraped:\n{metrics}");
        thread::sleep(Duration::from_millis(10));
    }

    // A broken file keeps the endpoints in force, and says so in a counter.
    let generation = server.shared().generation();
    let failed = server.shared().discovery_refreshes("c", "failed");
    std::fs::write(&file, "[ {\"address\": ").expect("break");
    let failed = wait_refreshes_above(&server, "failed", failed);
    assert_eq!(server.shared().generation(), generation, "nothing published");
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("second"));
    // A write can be seen half done and counted twice, so at least `failed`.
    let metrics = server.metrics();
    let scraped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringway_discovery_refreshes_total{cluster=\"c\",result=\"failed\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(scraped >= Some(failed), "{metrics}");

    // A reload while the file is broken keeps the endpoints last read from
    // it, as discovery does: a file caught mid-write does not hold up an
    // unrelated change. A cluster that never read it has nothing to keep.
    let source = config(&format!("endpoints_file = \"{}\"", file.display()));
    let reloaded = ringway::admin::apply(&server, &source, "reload");
    assert!(reloaded.is_ok(), "{reloaded:?}");
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("second"));
    let another = format!(
        "{source}\n[[cluster]]\nname = \"d\"\nendpoints_file = \"{}\"\n",
        file.display()
    );
    let refused = ringway::admin::apply(&server, &another, "reload").expect_err("a new cluster on a broken file");
    assert!(refused.to_string().contains("reload:"), "{refused}");
    stop(server);
    let _ = std::fs::remove_file(file);
}

/// A file replaced by rename is a new file, though it has the old one's
/// size and modification time (as a copy with `touch -r` has).
#[test]
fn an_endpoints_file_replaced_by_rename_is_read() {
    let a = Upstream::start(Behavior::Named("a".into()));
    let b = Upstream::start(Behavior::Named("b".into()));
    let dir = std::env::temp_dir().join(format!("ringway-endpoints-rename-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("eps.json");
    let listing = |up: &Upstream| format!("[{{\"address\": \"{}\"}}]", up.addr);
    assert_eq!(listing(&a).len(), listing(&b).len(), "same size");
    std::fs::write(&file, listing(&a)).expect("write");
    let (server, addr) = proxy(&config(&format!("endpoints_file = \"{}\"", file.display())));
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("a"));

    let next = dir.join("eps.json.new");
    std::fs::write(&next, listing(&b)).expect("write");
    let modified = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(&next)
        .and_then(|f| f.set_modified(modified))
        .expect("same mtime");
    let before = server.shared().generation();
    std::fs::rename(&next, &file).expect("rename");
    wait_generation_after(&server, before);
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("b"));
    stop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dns_source_resolves_on_the_control_side() {
    let up = Upstream::start(Behavior::Named("dns".into()));
    let (server, addr) = proxy(&config(&format!("dns = \"{}\"\ndns_refresh = \"100ms\"", up.addr)));
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("dns"));
    let cluster = &server.shared().load().clusters[0];
    assert_eq!(cluster.endpoints.len(), 1);
    assert_eq!(cluster.endpoints[0].address, up.addr);
    // Each due re-resolution is counted; the same address is no update.
    wait_refreshes_above(&server, "unchanged", 0);
    assert_eq!(server.shared().discovery_refreshes("c", "updated"), 0);
    let metrics = server.metrics();
    let never_failed = "ringway_discovery_refreshes_total{cluster=\"c\",result=\"failed\"} 0\n";
    assert!(
        metrics.contains(never_failed),
        "shown before a first failure: {metrics}"
    );
    stop(server);
}

/// A cluster uses the family of a name's addresses its `dns_family` asks
/// for, from the first resolution on and at every refresh.
#[test]
fn dns_family_chooses_the_addresses_a_cluster_uses() {
    let up = Upstream::builder(Behavior::Named("v6".into()))
        .address("[::1]:0".parse().expect("address"))
        .start();
    let with = |family: &str| config(&format!("dns = \"{}\"\ndns_refresh = \"100ms\"\n{family}", up.addr));
    // The default prefers IPv4 but takes IPv6 where that is all there is.
    let (server, addr) = proxy(&with(""));
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("v6"));
    wait_refreshes_above(&server, "unchanged", 0);
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("v6"));
    stop(server);
    let (server, addr) = proxy(&with("dns_family = \"v4_only\""));
    let refused = get(addr, "d.test", "/");
    assert_eq!(
        (refused.status, refused.error_reason()),
        (503, Some("no-healthy-endpoint"))
    );
    wait_refreshes_above(&server, "unchanged", 0);
    assert!(server.shared().load().clusters[0].endpoints.is_empty());
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

#[test]
fn endpoints_file_errors_are_placed_in_the_file() {
    let dir = std::env::temp_dir().join(format!("ringway-endpoints-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("eps.json");
    let source = format!("endpoints_file = \"{}\"", file.display());
    let cases = [
        (
            "[{\"address\": \"127.0.0.1:1\"},\n {\"address\": \"127.0.0.1:1\"}]",
            "2:2: endpoint 127.0.0.1:1 is listed twice",
        ),
        (
            "[\n  {\"address\": \"127.0.0.1:1\", \"weight\": 0}]",
            "2:41: endpoint weight must be at least 1",
        ),
        ("[{\"address\": \"127.0.0.1\"}]", "1:25: invalid endpoint address"),
    ];
    for (listing, expected) in cases {
        std::fs::write(&file, listing).expect("write");
        let err = ringway::config::parse(&config(&source), "t.toml", 1).expect_err(expected);
        // The config names the key (t.toml:LINE:COL), then the file's own place.
        let placed = format!("t.toml:12:18: {}:{expected}", file.display());
        assert!(err.to_string().contains(&placed), "{err}\nexpected {placed}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
