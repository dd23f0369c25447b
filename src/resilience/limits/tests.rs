//! Cap tests: never over `max` for the whole process, refusal slack within 1%,
//! conservation of permits through caches, small caps without stranding, config
//! swaps that keep counting permits already out, and real threads racing.

use super::*;
use proptest::prelude::*;
use std::sync::atomic::AtomicUsize;

fn limits(max: u32) -> ClusterLimits {
    ClusterLimits {
        max_connections: max,
        max_pending: max,
        max_requests: max,
        max_retries: max,
    }
}

fn setup(max: u32, workers: usize) -> (Arc<SharedLimits>, Vec<Leases>) {
    let shared = Arc::new(SharedLimits::new(limits(max), workers));
    let leases = (0..workers).map(|_| Leases::new(shared.clone())).collect();
    (shared, leases)
}

fn cached(leases: &[Leases], kind: LimitKind) -> u64 {
    leases.iter().map(|l| u64::from(l.idle(kind))).sum()
}

#[test]
fn batches_keep_the_slack_within_one_percent() {
    assert_eq!(batch(10_000, 4), 25);
    assert_eq!(batch(10_000, 100), 1);
    assert_eq!(batch(1_000, 16), 0);
    assert_eq!(batch(3, 1), 0);
    for workers in 1..=64usize {
        for max in [0, 1, 3, 99, 100, 1_000, 10_000, 123_456, u32::MAX] {
            assert!(u64::from(batch(max, workers)) * workers as u64 <= u64::from(max) / 100);
        }
    }
}

#[test]
fn one_worker_stops_at_the_cap_and_resumes_on_release() {
    let (shared, leases) = setup(10, 1);
    let mut held: Vec<Permit> = (0..10)
        .map_while(|_| leases[0].try_acquire(LimitKind::Requests))
        .collect();
    assert_eq!(held.len(), 10);
    assert!(leases[0].try_acquire(LimitKind::Requests).is_none());
    // Other kinds are separate pools.
    assert!(leases[0].try_acquire(LimitKind::Connections).is_some());
    held.pop();
    assert!(leases[0].try_acquire(LimitKind::Requests).is_some());
    drop(held);
    assert_eq!(shared.free(LimitKind::Requests), 10);
}

#[test]
fn a_small_cap_is_never_stranded_on_an_idle_worker() {
    let (_, leases) = setup(3, 16);
    let a = leases[0].try_acquire(LimitKind::Retries);
    let b = leases[1].try_acquire(LimitKind::Retries);
    let c = leases[2].try_acquire(LimitKind::Retries);
    assert!(a.is_some() && b.is_some() && c.is_some());
    assert!(leases[3].try_acquire(LimitKind::Retries).is_none());
    drop(a);
    assert_eq!(
        leases[0].idle(LimitKind::Retries),
        0,
        "uncached: straight back to the pool"
    );
    assert!(leases[3].try_acquire(LimitKind::Retries).is_some());
}

#[test]
fn a_large_cap_costs_one_pool_access_per_half_batch() {
    let (shared, leases) = setup(100_000, 4);
    assert_eq!(shared.batch(LimitKind::Requests), 250);
    let held: Vec<Permit> = (0..250)
        .map_while(|_| leases[0].try_acquire(LimitKind::Requests))
        .collect();
    assert_eq!(shared.free(LimitKind::Requests), 100_000 - 250, "one batch taken");
    drop(held);
    // Releasing all 250 leaves at most one batch cached; the rest went back at once.
    assert!(leases[0].idle(LimitKind::Requests) <= 250);
    assert_eq!(
        shared.free(LimitKind::Requests) + i64::from(leases[0].idle(LimitKind::Requests)),
        100_000
    );
}

#[test]
fn a_config_swap_keeps_counting_permits_already_out() {
    let (shared, leases) = setup(10, 2);
    let held: Vec<Permit> = (0..8)
        .map_while(|_| leases[0].try_acquire(LimitKind::Connections))
        .collect();
    assert_eq!(held.len(), 8);
    // Shrink below what is out: nobody gets one until enough come back.
    shared.set(limits(5));
    assert_eq!(shared.max(LimitKind::Connections), 5);
    assert!(leases[1].try_acquire(LimitKind::Connections).is_none());
    drop(held);
    assert_eq!(shared.free(LimitKind::Connections), 5);
    // Grow: the new room is there at once.
    shared.set(limits(12));
    let held: Vec<Permit> = (0..20)
        .map_while(|_| leases[1].try_acquire(LimitKind::Connections))
        .collect();
    assert_eq!(held.len(), 12);
}

#[test]
fn dropping_or_flushing_leases_returns_cached_permits() {
    let (shared, leases) = setup(100_000, 1);
    drop(leases[0].try_acquire(LimitKind::Pending));
    assert!(leases[0].idle(LimitKind::Pending) > 0);
    leases[0].flush();
    assert_eq!(shared.free(LimitKind::Pending), 100_000);
    let permit = leases[0].try_acquire(LimitKind::Pending);
    drop(leases);
    assert!(shared.free(LimitKind::Pending) < 100_000, "the permit still holds");
    drop(permit);
    assert_eq!(
        shared.free(LimitKind::Pending),
        100_000,
        "last permit out closes the leases"
    );
}

#[test]
fn threads_racing_never_exceed_the_cap() {
    const MAX: u32 = 1_000;
    let shared = Arc::new(SharedLimits::new(limits(MAX), 2));
    let out = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2u64)
        .map(|seed| {
            let (shared, out) = (shared.clone(), out.clone());
            std::thread::spawn(move || {
                let leases = Leases::new(shared);
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut held = Vec::new();
                let mut max_seen = 0;
                for _ in 0..200_000 {
                    if rng.bool() {
                        if let Some(p) = leases.try_acquire(LimitKind::Requests) {
                            // Counted after taking, uncounted before releasing: the
                            // count never exceeds the permits really out.
                            max_seen = max_seen.max(out.fetch_add(1, Relaxed) + 1);
                            held.push(p);
                        }
                    } else if let Some(p) = held.pop() {
                        out.fetch_sub(1, Relaxed);
                        drop(p);
                    }
                }
                out.fetch_sub(held.len(), Relaxed);
                max_seen
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap_or(usize::MAX) <= MAX as usize);
    }
    assert_eq!(shared.free(LimitKind::Requests), i64::from(MAX));
}

proptest! {
    /// Any interleaving of acquires and releases over any number of workers: permits
    /// are conserved (pool + caches + held = max), never more than `max` are held, and
    /// a refusal happens only when all but the other workers' caches (≤ 1%) is held.
    #[test]
    fn conserved_capped_and_refused_only_when_full(
        max in 0u32..3_000,
        workers in 1usize..9,
        ops in proptest::collection::vec((0usize..8, 0u8..3), 0..3_000),
    ) {
        let kind = LimitKind::Requests;
        let (shared, leases) = setup(max, workers);
        let mut held: Vec<Vec<Permit>> = (0..workers).map(|_| Vec::new()).collect();
        for (w, op) in ops {
            let w = w % workers;
            if op < 2 {
                match leases[w].try_acquire(kind) {
                    Some(p) => held[w].push(p),
                    None => {
                        let total: u64 = held.iter().map(|h| h.len() as u64).sum();
                        let others = cached(&leases, kind);
                        prop_assert_eq!(leases[w].idle(kind), 0);
                        prop_assert!(total + others >= u64::from(max));
                        prop_assert!(others <= u64::from(max) / 100);
                    }
                }
            } else {
                held[w].pop();
            }
            let total: i64 = held.iter().map(|h| h.len() as i64).sum();
            prop_assert!(total <= i64::from(max));
            let conserved = shared.free(kind) + i64::try_from(cached(&leases, kind)).unwrap_or(0) + total;
            prop_assert_eq!(conserved, i64::from(max));
        }
    }
}
