//! Keyed-limit tests on a simulated clock: each key's process-wide rate on one and on
//! four workers, independence of keys, bounded per-worker memory, debt that survives
//! eviction, and what a crowded table does (never looser than one key's rate).

use super::*;
use proptest::prelude::*;

const PER_KEY: RateLimit = RateLimit::new(200, 20);
const SEED: u64 = 0x5eed;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn setup(slots: usize, workers: usize, capacity: usize, t0: Instant) -> (Arc<KeyedReservoir>, Vec<KeyedLimiter>) {
    let shared = Arc::new(KeyedReservoir::with_seed(PER_KEY, slots, workers, t0, SEED));
    let limiters = (0..workers)
        .map(|_| KeyedLimiter::new(shared.clone(), capacity))
        .collect();
    (shared, limiters)
}

/// `keys` clients each offering `rate` rps for `secs` s; client `k`'s request `i`
/// goes to worker `route(k, i)`. Returns admitted counts per client.
fn offer(
    limiters: &mut [KeyedLimiter],
    t0: Instant,
    keys: usize,
    rate: u64,
    secs: u64,
    route: &mut dyn FnMut(usize, u64) -> usize,
) -> Vec<u64> {
    let gap = 1_000_000_000 / rate;
    let mut admitted = vec![0; keys];
    for i in 0..rate * secs {
        let now = t0 + Duration::from_nanos(i * gap);
        for (k, count) in admitted.iter_mut().enumerate() {
            let key = format!("10.0.0.{k}");
            if limiters[route(k, i)].try_acquire(key.as_bytes(), now) {
                *count += 1;
            }
        }
    }
    admitted
}

fn assert_key_rate(admitted: &[u64]) {
    let expected = 200 * 5 + 20;
    for (k, &got) in admitted.iter().enumerate() {
        let ok = (expected as f64 * 0.9..=expected as f64 * 1.1).contains(&(got as f64));
        assert!(ok && got <= expected, "key {k}: {got} admitted, wanted {expected} ±10%");
    }
}

#[test]
fn each_key_gets_its_rate_on_one_worker() {
    let t0 = Instant::now();
    let (_, mut limiters) = setup(4_096, 1, 1_000, t0);
    assert_key_rate(&offer(&mut limiters, t0, 8, 1_000, 5, &mut |_, _| 0));
}

#[test]
fn each_key_gets_its_rate_process_wide_on_four_workers() {
    let t0 = Instant::now();
    // Every client's connections on one worker (a different one per client).
    let (_, mut limiters) = setup(4_096, 4, 1_000, t0);
    assert_key_rate(&offer(&mut limiters, t0, 8, 1_000, 5, &mut |k, _| k % 4));
    // Every client spread over all workers.
    let (_, mut limiters) = setup(4_096, 4, 1_000, t0);
    let mut rng = fastrand::Rng::with_seed(9);
    assert_key_rate(&offer(&mut limiters, t0, 8, 1_000, 5, &mut |_, _| rng.usize(0..4)));
}

#[test]
fn one_key_over_its_limit_does_not_touch_another() {
    let t0 = Instant::now();
    let (_, mut limiters) = setup(64, 2, 16, t0);
    let flood = (0..1_000).filter(|_| limiters[0].try_acquire(b"flood", t0)).count();
    assert_eq!(flood, 20);
    assert!(!limiters[1].try_acquire(b"flood", t0), "the burst is process-wide");
    let calm = (0..20).filter(|_| limiters[1].try_acquire(b"calm", t0)).count();
    assert_eq!(calm, 20);
}

#[test]
fn memory_per_worker_stays_bounded_by_the_lru() {
    let t0 = Instant::now();
    let (_, mut limiters) = setup(1_024, 1, 100, t0);
    for i in 0..10_000u32 {
        assert!(limiters[0].try_acquire(&i.to_be_bytes(), t0 + ms(u64::from(i))));
        assert!(limiters[0].len() <= 100);
    }
    assert_eq!((limiters[0].len(), limiters[0].capacity()), (100, 100));
}

#[test]
fn an_evicted_key_keeps_its_debt_in_the_shared_table() {
    let t0 = Instant::now();
    let (shared, mut limiters) = setup(4_096, 1, 4, t0);
    while limiters[0].try_acquire(b"greedy", t0) {}
    for i in 0..10u32 {
        limiters[0].try_acquire(&i.to_be_bytes(), t0);
    }
    assert!(limiters[0].len() <= 4);
    assert!(
        !limiters[0].try_acquire(b"greedy", t0 + ms(1)),
        "eviction must not refill a bucket"
    );
    // Its retry-after is the time to earn half a batch (batch 4 at 200 rps: 10 ms).
    assert_eq!(shared.batch(), 4);
    assert_eq!(limiters[0].retry_after(b"greedy", t0), ms(10));
    assert!(limiters[0].try_acquire(b"greedy", t0 + ms(10)));
}

#[test]
fn eviction_and_flush_give_unspent_tokens_back() {
    let t0 = Instant::now();
    let (shared, mut limiters) = setup(4_096, 1, 1, t0);
    let a = shared.hash_key(b"a");
    assert!(limiters[0].try_acquire(b"a", t0));
    assert_eq!(shared.available(a, t0), 20 - 4);
    assert!(limiters[0].try_acquire(b"b", t0));
    assert_eq!(shared.available(a, t0), 19, "a's 3 cached tokens went back on eviction");
    drop(limiters);
    assert_eq!(shared.available(shared.hash_key(b"b"), t0), 19);
}

#[test]
fn a_full_bucket_is_free_for_another_key_to_claim() {
    let t0 = Instant::now();
    let shared = KeyedReservoir::with_seed(PER_KEY, 64, 1, t0, SEED);
    // Fill the table with keys that each drained their burst.
    let hashes: Vec<u64> = (0..1_000u32).map(|i| shared.hash_key(&i.to_be_bytes())).collect();
    for &h in &hashes {
        let _ = shared.take_between(h, 20, 20, t0);
    }
    let newcomer = shared.hash_key(b"newcomer");
    assert_eq!(
        shared.available(newcomer, t0),
        0,
        "both its slots are drained and owned"
    );
    // 100 ms later every bucket is full again (20 tokens at 200 rps), so any key,
    // new or old, finds its whole burst, and a newcomer can claim a slot.
    let later = t0 + ms(100);
    for &h in &hashes {
        assert_eq!(shared.available(h, later), 20);
    }
    assert_eq!(shared.take_between(newcomer, 20, 20, later), Ok(20));
    assert_eq!(shared.available(newcomer, later), 0);
}

#[test]
fn a_crowded_table_never_admits_more_than_its_slots_can_earn() {
    // 500 clients flooding a 64-slot table: keys share slots, so some get less than
    // their rate, and the table as a whole never gives more than 64 buckets' worth.
    let t0 = Instant::now();
    let (shared, mut limiters) = setup(64, 2, 1_000, t0);
    let mut admitted = 0u64;
    for i in 0..1_000u64 {
        let now = t0 + ms(i);
        for k in 0..500u32 {
            if limiters[(k % 2) as usize].try_acquire(&k.to_be_bytes(), now) {
                admitted += 1;
            }
        }
    }
    let per_slot = 20 + 200;
    assert!(admitted <= shared.slots() as u64 * per_slot, "{admitted}");
}

proptest! {
    /// With few keys in a large table (no sharing), no key ever exceeds its burst
    /// plus what its rate earned, whatever the routing and gaps.
    #[test]
    fn no_key_beats_its_rate(
        workers in 1usize..5,
        seed in any::<u64>(),
        events in proptest::collection::vec((0u8..6, 0u64..20_000_000), 1..1_500),
    ) {
        let t0 = Instant::now();
        let (_, mut limiters) = setup(1 << 16, workers, 64, t0);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut now = t0;
        let mut admitted = [0u64; 6];
        for (key, gap) in events {
            now += Duration::from_nanos(gap);
            if limiters[rng.usize(0..workers)].try_acquire(&[key], now) {
                admitted[usize::from(key)] += 1;
            }
        }
        let earned = 200 * (now - t0).as_nanos() / 1_000_000_000;
        for got in admitted {
            prop_assert!(u128::from(got) <= 20 + earned + 1);
        }
    }
}
