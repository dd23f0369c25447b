//! Tests across policies through the public `Balancer` API: weight shares, load and
//! latency steering, state carried over swaps, and the eligibility contract as a
//! property. Per-algorithm details are tested next to each algorithm.

use super::*;
use proptest::prelude::*;
use std::{cell::Cell, collections::VecDeque};

fn specs(weights: &[u32]) -> Vec<EndpointSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| EndpointSpec {
            key: 1_000 + i as u64,
            weight,
        })
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Share of `picks` sequential picks per endpoint, each request completing at once.
fn idle_shares(policy: LbPolicy, weights: &[u32], hashed: bool) -> Vec<f64> {
    let t0 = Instant::now();
    let mut b = Balancer::new(policy, &specs(weights), t0);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut hits = vec![0u32; weights.len()];
    for i in 0..10_000u64 {
        let now = t0 + ms(i);
        let hash = hashed.then_some(i);
        if let Some(idx) = b.pick(now, hash, &mut rng, &|_| true) {
            hits[idx] += 1;
            b.on_start(idx);
            b.on_end(idx, ms(10), now);
        }
    }
    hits.iter().map(|&h| f64::from(h) / 10_000.0).collect()
}

/// Share of picks per endpoint with `concurrency` requests kept in flight, completed
/// oldest first, one pick per simulated millisecond; `rtt(idx)` is what each reports.
fn loaded_shares(policy: LbPolicy, weights: &[u32], concurrency: usize, rtt: &dyn Fn(usize) -> Duration) -> Vec<f64> {
    let t0 = Instant::now();
    let mut b = Balancer::new(policy, &specs(weights), t0);
    let mut rng = fastrand::Rng::with_seed(0x10ad);
    let mut in_flight = VecDeque::new();
    let mut hits = vec![0u32; weights.len()];
    for i in 0..10_000u64 {
        let now = t0 + ms(i);
        if in_flight.len() >= concurrency {
            if let Some(done) = in_flight.pop_front() {
                b.on_end(done, rtt(done), now);
            }
        }
        if let Some(idx) = b.pick(now, None, &mut rng, &|_| true) {
            hits[idx] += 1;
            b.on_start(idx);
            in_flight.push_back(idx);
        }
    }
    hits.iter().map(|&h| f64::from(h) / 10_000.0).collect()
}

fn assert_shares(got: &[f64], want: &[f64], tolerance: f64) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tolerance,
            "shares {got:?}, want {want:?} ± {tolerance}"
        );
    }
}

#[test]
fn policy_names_round_trip() {
    for p in LbPolicy::ALL {
        assert_eq!(p.as_str().parse::<LbPolicy>(), Ok(p));
    }
    let err = "p2c".parse::<LbPolicy>().unwrap_err().to_string();
    assert!(err.contains("\"p2c\"") && err.contains("ring_hash"), "{err}");
}

#[test]
fn round_robin_ignores_weights() {
    assert_shares(&idle_shares(LbPolicy::RoundRobin, &[1, 3], false), &[0.5, 0.5], 0.0);
}

/// Two lanes (priority levels) picking in turns: each shares its own
/// endpoints evenly. With one cursor for both, the first endpoint of each
/// level took most of its level's share.
#[test]
fn round_robin_is_even_within_each_lane() {
    let t0 = Instant::now();
    let mut b = Balancer::new(LbPolicy::RoundRobin, &specs(&[1; 4]), t0);
    let mut rng = fastrand::Rng::with_seed(3);
    let mut hits = [0u32; 4];
    for _ in 0..4_000 {
        let lane = u64::from(rng.u8(0..10) < 3);
        let in_lane = move |i: usize| (i >= 2) == (lane == 1);
        if let Some(i) = b.pick_in(lane, t0, None, &mut rng, &in_lane) {
            hits[i] += 1;
        }
    }
    assert!(hits[0].abs_diff(hits[1]) <= 1, "{hits:?}");
    assert!(hits[2].abs_diff(hits[3]) <= 1, "{hits:?}");
}

#[test]
fn weighted_round_robin_is_exact() {
    assert_shares(
        &idle_shares(LbPolicy::WeightedRoundRobin, &[1, 3], false),
        &[0.25, 0.75],
        0.0,
    );
}

#[test]
fn random_follows_weights() {
    assert_shares(&idle_shares(LbPolicy::Random, &[1, 3], false), &[0.25, 0.75], 0.02);
    assert_shares(
        &idle_shares(LbPolicy::Random, &[2, 1, 1], false),
        &[0.5, 0.25, 0.25],
        0.02,
    );
}

#[test]
fn ring_hash_follows_weights() {
    // With a key: shares are the endpoints' arc lengths, whose spread is ~1/sqrt(points)
    // (see `ring`), hence the wider tolerance. Without a key it is weighted random.
    assert_shares(&idle_shares(LbPolicy::RingHash, &[1, 3], true), &[0.25, 0.75], 0.05);
    assert_shares(&idle_shares(LbPolicy::RingHash, &[1, 3], false), &[0.25, 0.75], 0.02);
}

#[test]
fn least_request_follows_weights() {
    // Idle: every cost ties at zero and the weighted tie-break decides.
    assert_shares(
        &idle_shares(LbPolicy::LeastRequest, &[1, 3], false),
        &[0.25, 0.75],
        0.02,
    );
    let loaded = loaded_shares(LbPolicy::LeastRequest, &[1, 3], 100, &|_| ms(10));
    assert_shares(&loaded, &[0.25, 0.75], 0.02);
}

#[test]
fn p2c_ewma_follows_weights_under_load() {
    // Equal latency: cost ∝ (outstanding + 1) / weight, so in-flight (and, completing
    // in order, pick) shares settle near the weights; the +1 pulls them in slightly.
    let loaded = loaded_shares(LbPolicy::P2cEwma, &[1, 3], 200, &|_| ms(10));
    assert_shares(&loaded, &[0.25, 0.75], 0.02);
}

#[test]
fn least_request_avoids_the_loaded_endpoint() {
    let t0 = Instant::now();
    let mut b = Balancer::new(LbPolicy::LeastRequest, &specs(&[1, 1, 1, 1]), t0);
    for _ in 0..50 {
        b.on_start(2);
    }
    let mut rng = fastrand::Rng::with_seed(9);
    // It always meets a candidate with nothing in flight, so it never wins.
    assert!((0..1_000).all(|_| b.pick(t0, None, &mut rng, &|_| true) != Some(2)));
    // Alone, it still gets picked.
    assert_eq!(b.pick(t0, None, &mut rng, &|i| i == 2), Some(2));
}

#[test]
fn p2c_ewma_avoids_the_slow_endpoint() {
    let t0 = Instant::now();
    let mut b = Balancer::new(LbPolicy::P2cEwma, &specs(&[1, 1, 1, 1]), t0);
    for idx in 0..4 {
        b.on_start(idx);
        b.on_end(idx, if idx == 1 { ms(500) } else { ms(10) }, t0);
    }
    let mut rng = fastrand::Rng::with_seed(9);
    assert!((0..1_000).all(|_| b.pick(t0 + ms(1), None, &mut rng, &|_| true) != Some(1)));

    // Under load the slow endpoint still gets a little: cost grows with the others'
    // queues, so it is probed rather than abandoned.
    let slow = |i: usize| if i == 1 { ms(500) } else { ms(10) };
    let s = loaded_shares(LbPolicy::P2cEwma, &[1, 1, 1, 1], 200, &slow);
    assert!(s[1] > 0.0 && s[1] < 0.05, "{s:?}");
}

#[test]
fn failure_penalty_steers_away_at_once() {
    let t0 = Instant::now();
    let mut b = Balancer::new(LbPolicy::P2cEwma, &specs(&[1, 1]), t0);
    for idx in 0..2 {
        b.on_start(idx);
        b.on_end(idx, ms(10), t0);
    }
    b.on_start(0);
    b.on_end(0, Duration::from_secs(1), t0 + ms(5));
    assert_eq!(b.ewma_ms(0, t0 + ms(5)), 1_000.0);
    let mut rng = fastrand::Rng::with_seed(2);
    assert!((0..100).all(|_| b.pick(t0 + ms(6), None, &mut rng, &|_| true) == Some(1)));
}

/// A request that ended without telling the endpoint's latency (the client
/// stalled or left) frees its slot and leaves the estimate as it was.
#[test]
fn an_abandoned_request_frees_its_slot_and_teaches_nothing() {
    let t0 = Instant::now();
    let mut b = Balancer::new(LbPolicy::P2cEwma, &specs(&[1, 1]), t0);
    b.on_start(0);
    b.on_end(0, ms(10), t0);
    b.on_start(0);
    b.on_start(1);
    let later = t0 + Duration::from_secs(15);
    b.on_abandon(0);
    b.on_abandon(1);
    assert_eq!((b.outstanding(0), b.outstanding(1)), (0, 0));
    assert!(b.ewma_ms(0, later) <= 10.0, "{}", b.ewma_ms(0, later));
    assert!(!b.observed(1), "nothing measured");
    b.on_abandon(1);
    assert_eq!(b.outstanding(1), 0, "never below zero");
}

#[test]
fn rebuild_keeps_surviving_state_and_drops_removed() {
    let t0 = Instant::now();
    let old_specs = [
        EndpointSpec { key: 1, weight: 5 },
        EndpointSpec { key: 2, weight: 1 },
        EndpointSpec { key: 3, weight: 1 },
    ];
    let mut b = Balancer::new(LbPolicy::WeightedRoundRobin, &old_specs, t0);
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..3 {
        let _ = b.pick(t0, None, &mut rng, &|_| true); // a a b: currents become 1, -4, 3
    }
    let currents: Vec<i64> = b.endpoints.iter().map(|e| e.wrr_current).collect();
    b.on_start(0);
    b.on_start(0);
    b.on_start(1);
    b.on_start(2);
    b.on_end(2, ms(70), t0 + ms(1));
    b.on_start(2);

    // Key 2 removed, key 4 added, order changed, weight of key 1 changed.
    let new_specs = [
        EndpointSpec { key: 3, weight: 1 },
        EndpointSpec { key: 4, weight: 1 },
        EndpointSpec { key: 1, weight: 2 },
    ];
    let later = t0 + ms(2);
    let b2 = b.rebuild(LbPolicy::P2cEwma, &new_specs, later);
    assert_eq!((b2.len(), b2.policy()), (3, LbPolicy::P2cEwma));
    assert_eq!(b2.index_of(3), Some(0));
    assert_eq!(b2.key(2), Some(1));
    assert_eq!(b2.index_of(2), None);

    assert_eq!(b2.outstanding(0), 1);
    assert_eq!(b2.ewma_ms(0, later), b.ewma_ms(2, later));
    assert_eq!(b2.endpoints[0].wrr_current, currents[2]);
    assert_eq!(b2.outstanding(2), 2);
    assert_eq!(b2.endpoints[2].wrr_current, currents[0]);
    assert_eq!(b2.endpoints[2].weight, 2);
    // Fresh: nothing in flight, default RTT, no WRR history.
    assert_eq!(b2.outstanding(1), 0);
    assert_eq!(b2.ewma_ms(1, later), 30.0);
    assert_eq!(b2.endpoints[1].wrr_current, 0);

    // A removed key that comes back later starts over.
    let b3 = b2.rebuild(LbPolicy::P2cEwma, &old_specs, later);
    assert_eq!(b3.outstanding(1), 0);
    assert_eq!(b3.ewma_ms(1, later), 30.0);
    assert_eq!(b3.outstanding(0), 2);
}

#[test]
fn duplicate_keys_inherit_once() {
    let t0 = Instant::now();
    let one = [EndpointSpec { key: 7, weight: 1 }];
    let mut b = Balancer::new(LbPolicy::LeastRequest, &one, t0);
    b.on_start(0);
    let twice = [one[0], one[0]];
    let b2 = b.rebuild(LbPolicy::LeastRequest, &twice, t0);
    assert_eq!((b2.outstanding(0), b2.outstanding(1)), (1, 0));
}

#[test]
fn bad_indices_and_empty_clusters_are_harmless() {
    let t0 = Instant::now();
    let mut rng = fastrand::Rng::with_seed(1);
    for policy in LbPolicy::ALL {
        let mut b = Balancer::new(policy, &[], t0);
        assert!(b.is_empty());
        assert_eq!(b.pick(t0, Some(1), &mut rng, &|_| true), None);
        b.on_start(3);
        b.on_end(3, ms(1), t0);
        assert_eq!((b.outstanding(3), b.ewma_ms(3, t0)), (0, 0.0));
    }
    // Completions never underflow, even for a request started on an older balancer.
    let mut b = Balancer::new(LbPolicy::LeastRequest, &specs(&[0]), t0);
    b.on_end(0, ms(1), t0);
    assert_eq!(b.outstanding(0), 0);
    assert_eq!(b.pick(t0, None, &mut rng, &|_| true), Some(0), "weight 0 treated as 1");
}

#[test]
fn all_eligible_picks_cost_constant_filter_calls() {
    let t0 = Instant::now();
    let weights = vec![1u32; 1_000];
    let mut rng = fastrand::Rng::with_seed(8);
    for policy in LbPolicy::ALL {
        if policy == LbPolicy::WeightedRoundRobin {
            continue; // O(n) by design, see `wrr`.
        }
        let mut b = Balancer::new(policy, &specs(&weights), t0);
        let calls = Cell::new(0u32);
        let eligible = |_: usize| {
            calls.set(calls.get() + 1);
            true
        };
        for h in 0..100 {
            let _ = b.pick(t0, Some(h), &mut rng, &eligible);
        }
        assert!(calls.get() <= 200, "{policy}: {} filter calls", calls.get());
    }
}

proptest! {
    #[test]
    fn every_policy_respects_eligibility(
        endpoints in proptest::collection::vec((0u32..=10, any::<bool>()), 0..12),
        policy in proptest::sample::select(LbPolicy::ALL.to_vec()),
        hash in proptest::option::of(any::<u64>()),
        seed in any::<u64>(),
    ) {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.0).collect();
        let mask: Vec<bool> = endpoints.iter().map(|e| e.1).collect();
        let any_eligible = mask.contains(&true);
        let t0 = Instant::now();
        let mut b = Balancer::new(policy, &specs(&weights), t0);
        let mut rng = fastrand::Rng::with_seed(seed);
        let eligible = |i: usize| mask[i];
        for step in 0..20u64 {
            let now = t0 + ms(step);
            match b.pick(now, hash, &mut rng, &eligible) {
                Some(i) => {
                    prop_assert!(i < mask.len() && mask[i], "{} picked ineligible {}", policy, i);
                    // Some requests stay in flight so P2C sees unequal loads.
                    b.on_start(i);
                    if step.is_multiple_of(3) {
                        b.on_end(i, ms(step * 7 % 50), now);
                    }
                }
                None => prop_assert!(!any_eligible, "{} found nothing among {:?}", policy, mask),
            }
        }
    }
}

#[test]
fn new_endpoint_is_probed_one_request_at_a_time_not_flooded() {
    let t0 = Instant::now();
    let specs: Vec<EndpointSpec> = (1..=3).map(|key| EndpointSpec { key, weight: 1 }).collect();
    let mut b = Balancer::new(LbPolicy::P2cEwma, &specs, t0);
    let mut rng = fastrand::Rng::with_seed(7);
    // Endpoints 0 and 1 are warm and fast; endpoint 2 has never answered.
    for idx in [0, 1] {
        b.on_start(idx);
        b.on_end(idx, Duration::from_micros(300), t0);
    }
    let all = |_: usize| true;
    let mut probed = 0;
    for _ in 0..300 {
        let idx = b.pick(t0, None, &mut rng, &all).expect("eligible");
        if idx == 2 {
            probed += 1;
            // While its probe is out, it must not be chosen again.
            b.on_start(2);
            for _ in 0..50 {
                assert_ne!(b.pick(t0, None, &mut rng, &all), Some(2), "flooded before answering");
            }
            b.on_end(2, Duration::from_micros(300), t0);
            break;
        }
    }
    assert_eq!(probed, 1, "an idle unmeasured endpoint is chosen when drawn");
}
