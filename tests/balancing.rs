//! Load balancing as observed by three real upstreams: the traffic share of
//! each policy over ~1,500 requests, ring-hash stickiness, and that
//! least_request / p2c_ewma steer around a slow endpoint under concurrency.
//!
//! One worker and one keep-alive client make the sequential runs see a single
//! balancer, so the expected shares are those of the policy itself.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const N: usize = 1500;
const NAMES: [&str; 3] = ["e0", "e1", "e2"];

struct Pool {
    upstreams: Vec<Upstream>,
}

impl Pool {
    fn named() -> Pool {
        Pool::with(|_, name| Upstream::start(Behavior::Named(name.to_string())))
    }

    fn with(make: impl Fn(usize, &str) -> Upstream) -> Pool {
        Pool {
            upstreams: NAMES.iter().enumerate().map(|(i, n)| make(i, n)).collect(),
        }
    }

    fn config(&self, lb: &str, weights: [u32; 3], extra: &str) -> String {
        let eps: Vec<String> = self.upstreams.iter().zip(weights).map(|(u, w)| u.endpoint(w)).collect();
        format!(
            "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
  [[listener.route]]
  match = {{ path_prefix = \"/\" }}
  cluster = \"c\"

[[cluster]]
name = \"c\"
lb = \"{lb}\"
{extra}
endpoints = [ {} ]
",
            eps.join(", ")
        )
    }

    fn counts(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.upstreams[i].requests())
    }
}

/// Send `n` sequential GETs on one connection; the endpoint index of each.
fn sequence(lb: &str, weights: [u32; 3], n: usize) -> (Vec<usize>, [usize; 3]) {
    let pool = Pool::named();
    let (server, addr) = proxy(&pool.config(lb, weights, ""));
    let mut client = Client::connect(addr);
    let picks: Vec<usize> = (0..n)
        .map(|i| {
            let resp = client.get("lb.test", &format!("/{i}"));
            assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
            let name = resp.header("x-upstream").expect("named upstream");
            NAMES.iter().position(|n| *n == name).expect("known endpoint")
        })
        .collect();
    let counts = pool.counts();
    assert_eq!(counts.iter().sum::<usize>(), n, "every request reached one upstream");
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(
            *c,
            picks.iter().filter(|p| **p == i).count(),
            "x-upstream agrees with the upstream's count"
        );
    }
    stop(server);
    (picks, counts)
}

fn share(count: usize, n: usize) -> f64 {
    count as f64 * 100.0 / n as f64
}

fn assert_shares(lb: &str, counts: [usize; 3], expected_pct: [f64; 3], tolerance_pts: f64) {
    let n: usize = counts.iter().sum();
    for i in 0..3 {
        let got = share(counts[i], n);
        assert!(
            (got - expected_pct[i]).abs() <= tolerance_pts,
            "{lb}: endpoint {i} got {got:.1}% ({counts:?}), expected {:.1} ± {tolerance_pts}",
            expected_pct[i]
        );
    }
}

#[test]
fn round_robin_rotates_evenly() {
    let (picks, counts) = sequence("round_robin", [1, 1, 1], N);
    assert_eq!(counts, [N / 3; 3], "round robin over {N} requests");
    for w in picks.windows(3) {
        let distinct: HashSet<_> = w.iter().collect();
        assert_eq!(
            distinct.len(),
            3,
            "every three consecutive picks cover all endpoints: {w:?}"
        );
    }
}

#[test]
fn round_robin_ignores_weights() {
    let (_, counts) = sequence("round_robin", [1, 2, 5], N);
    assert_eq!(counts, [N / 3; 3], "round robin treats weights as equal");
}

#[test]
fn weighted_round_robin_follows_weights_exactly() {
    let (picks, counts) = sequence("weighted_round_robin", [1, 2, 3], N);
    assert_eq!(counts, [N / 6, N / 3, N / 2], "weights 1:2:3 over {N} requests");
    // Smooth WRR interleaves: the heaviest endpoint never runs 3 times in a row.
    for w in picks.windows(4) {
        assert!(w.iter().any(|p| *p != w[0]), "picks are interleaved, not bursts: {w:?}");
    }
}

#[test]
fn random_follows_weights() {
    let (_, counts) = sequence("random", [1, 2, 3], N);
    // ±6.5 points: 5σ at N = 1500 (the rng is seeded from the OS).
    assert_shares("random", counts, [100.0 / 6.0, 100.0 / 3.0, 50.0], 6.5);
}

#[test]
fn random_with_equal_weights_is_even() {
    let (_, counts) = sequence("random", [1, 1, 1], N);
    assert_shares("random", counts, [100.0 / 3.0; 3], 6.5);
}

#[test]
fn least_request_spreads_sequential_traffic() {
    // Sequentially every endpoint is idle at pick time: ties must not pin
    // traffic to one endpoint.
    let (_, counts) = sequence("least_request", [1, 1, 1], N);
    assert_shares("least_request", counts, [100.0 / 3.0; 3], 5.0);
}

/// Peak-EWMA remembers a latency spike for a while by design (the decay time
/// constant), so with one request in flight a briefly slow endpoint sits out;
/// under concurrency the outstanding-request factor brings it back. What must
/// hold: with several requests in flight, every equally fast endpoint serves.
#[test]
fn p2c_ewma_uses_every_healthy_endpoint() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 200;
    let pool = Pool::named();
    let (server, addr) = proxy(&pool.config("p2c_ewma", [1, 1, 1], ""));
    parallel(CLIENTS, |c| {
        let mut client = Client::connect(addr);
        for i in 0..PER_CLIENT {
            assert_eq!(client.get("lb.test", &format!("/{c}/{i}")).status, 200);
        }
    });
    let counts = pool.counts();
    stop(server);
    for (i, c) in counts.iter().enumerate() {
        assert!(
            share(*c, CLIENTS * PER_CLIENT) >= 5.0,
            "p2c_ewma starved endpoint {i}: {counts:?}"
        );
    }
}

/// Ring hash: many distinct keys spread over all endpoints; each key sticks.
#[test]
fn ring_hash_spreads_keys_and_each_key_sticks() {
    let pool = Pool::named();
    let (server, addr) = proxy(&pool.config("ring_hash", [1, 1, 1], "hash_header = \"x-user\""));
    let mut client = Client::connect(addr);
    let mut owner: HashMap<String, String> = HashMap::new();
    for i in 0..N {
        let user = format!("user-{i}");
        let resp = client.get_with("lb.test", "/", &[&format!("x-user: {user}")]);
        assert_eq!(resp.status, 200);
        owner.insert(user, resp.header("x-upstream").expect("named").to_string());
    }
    let counts = pool.counts();
    for (i, c) in counts.iter().enumerate() {
        assert!(
            share(*c, N) >= 15.0,
            "ring_hash: endpoint {i} owns too few keys: {counts:?}"
        );
    }
    // Replay a sample of keys on other connections: same endpoint every time.
    for i in (0..N).step_by(25) {
        let user = format!("user-{i}");
        for _ in 0..3 {
            let resp = Client::connect(addr).get_with("lb.test", "/again", &[&format!("x-user: {user}")]);
            assert_eq!(
                resp.header("x-upstream"),
                Some(owner[&user].as_str()),
                "{user} moved to another endpoint"
            );
        }
    }
    stop(server);
}

/// Stickiness must not depend on which worker took the connection.
#[test]
fn ring_hash_is_consistent_across_workers() {
    let pool = Pool::named();
    let config = pool
        .config("ring_hash", [1, 1, 1], "hash_header = \"x-user\"")
        .replace(RUNTIME_1, RUNTIME_2);
    let (server, addr) = proxy(&config);
    for i in 0..40 {
        let header = format!("x-user: sticky-{i}");
        let seen: HashSet<String> = (0..6)
            .map(|_| {
                let resp = Client::connect(addr).get_with("lb.test", "/", &[&header]);
                resp.header("x-upstream").expect("named").to_string()
            })
            .collect();
        assert_eq!(seen.len(), 1, "sticky-{i} went to {seen:?}");
    }
    stop(server);
}

/// Without the hash header the key is the client IP: each address sticks to
/// one endpoint, and headerless clients spread instead of sharing one. A
/// header the client names in `Connection` is dropped on the way, so it is
/// no key either.
#[test]
fn ring_hash_falls_back_to_client_ip() {
    let pool = Pool::named();
    let (server, addr) = proxy(&pool.config("ring_hash", [1, 1, 1], "hash_header = \"x-user\""));
    let endpoint_of = |source: &str, headers: &[&str]| {
        let source = source.parse().expect("address");
        let resp = Client::connect_from(addr, source).get_with("lb.test", "/", headers);
        resp.header("x-upstream").expect("named").to_string()
    };
    let mut used = HashSet::new();
    for i in 2..32 {
        let source = format!("127.0.0.{i}");
        let first = endpoint_of(&source, &[]);
        for _ in 0..2 {
            assert_eq!(endpoint_of(&source, &[]), first, "{source} moved without the header");
        }
        let hidden = endpoint_of(&source, &["Connection: x-user", &format!("x-user: key-{i}")]);
        assert_eq!(hidden, first, "{source}: a key named in Connection is no key");
        used.insert(first);
    }
    assert!(used.len() > 1, "30 client addresses all hashed to {used:?}");
    stop(server);
}

/// Endpoint 2 answers after 50 ms, the others at once. With 8 requests in
/// flight, a load-aware policy sends it far less than its fair third.
fn slow_endpoint_share(lb: &str) -> (f64, [usize; 3]) {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 60;
    let pool = Pool::with(|i, name| {
        let b = Upstream::builder(Behavior::Named(name.to_string()));
        if i == 2 {
            b.delay(Duration::from_millis(50)).start()
        } else {
            b.start()
        }
    });
    let (server, addr) = proxy(&pool.config(lb, [1, 1, 1], ""));
    parallel(CLIENTS, |c| {
        let mut client = Client::connect(addr);
        for i in 0..PER_CLIENT {
            let resp = client.get("lb.test", &format!("/{c}/{i}"));
            assert_eq!(resp.status, 200, "{lb}: client {c} request {i}");
        }
    });
    let counts = pool.counts();
    assert_eq!(counts.iter().sum::<usize>(), CLIENTS * PER_CLIENT);
    stop(server);
    (share(counts[2], CLIENTS * PER_CLIENT), counts)
}

#[test]
fn least_request_avoids_a_slow_endpoint_under_concurrency() {
    let (slow, counts) = slow_endpoint_share("least_request");
    assert!(
        slow < 20.0,
        "least_request sent {slow:.1}% to the slow endpoint: {counts:?}"
    );
}

#[test]
fn p2c_ewma_avoids_a_slow_endpoint_under_concurrency() {
    let (slow, counts) = slow_endpoint_share("p2c_ewma");
    assert!(slow < 20.0, "p2c_ewma sent {slow:.1}% to the slow endpoint: {counts:?}");
}

/// Control for the two tests above: a load-blind policy keeps sending the
/// slow endpoint its full third, so the scenario does discriminate.
#[test]
fn round_robin_keeps_sending_the_slow_endpoint_its_share() {
    let (slow, counts) = slow_endpoint_share("round_robin");
    assert!(
        (30.0..=37.0).contains(&slow),
        "round_robin gave the slow endpoint {slow:.1}%: {counts:?}"
    );
}
