//! Rate-limit tests on a simulated clock: the process-wide rate with one and four
//! workers, with a client's traffic all on one worker or spread, caches that go stale,
//! `retry-after`, and the shared accounting under real threads.

use super::*;
use proptest::prelude::*;

const LIMIT: RateLimit = RateLimit::new(2_000, 100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn setup(limit: RateLimit, workers: usize, t0: Instant) -> (Arc<Reservoir>, Vec<LocalBucket>) {
    let reservoir = Arc::new(Reservoir::new(limit, workers, t0));
    let buckets = (0..workers).map(|_| LocalBucket::new(reservoir.clone())).collect();
    (reservoir, buckets)
}

/// Offers `rate` requests a second for `secs` seconds, request `i` going to worker
/// `route(i)`; returns how many were admitted.
fn offer(buckets: &mut [LocalBucket], t0: Instant, rate: u64, secs: u64, route: &mut dyn FnMut(u64) -> usize) -> u64 {
    let gap = 1_000_000_000 / rate;
    let mut admitted = 0;
    for i in 0..rate * secs {
        let now = t0 + Duration::from_nanos(i * gap);
        if buckets[route(i)].try_acquire(now) {
            admitted += 1;
        }
    }
    admitted
}

/// 2,000 rps for 5 s plus the burst, within ±10% — and in fact never above it, and
/// below it by no more than what the workers' caches and one half-batch can hold.
fn assert_process_rate(admitted: u64, workers: usize, reservoir: &Reservoir) {
    let expected = 2_000 * 5 + 100;
    let low = expected as f64 * 0.9;
    let high = expected as f64 * 1.1;
    assert!(
        (low..=high).contains(&(admitted as f64)),
        "{admitted} admitted, wanted {expected} ±10%"
    );
    assert!(admitted <= expected, "{admitted} admitted: over the configured rate");
    let slack = (workers as u64 + 1) * u64::from(reservoir.batch());
    assert!(
        admitted + slack >= expected,
        "{admitted} admitted: more than {slack} stranded"
    );
}

#[test]
fn batch_keeps_stranded_tokens_within_two_percent_of_a_second() {
    assert_eq!(LIMIT.batch(1), 40);
    assert_eq!(LIMIT.batch(4), 10);
    // Small bursts bound the batch too, so a full reservoir serves every worker.
    assert_eq!(RateLimit::new(100_000, 64).batch(16), 4);
    // Low rates degrade to one token at a time, never zero.
    assert_eq!(RateLimit::new(10, 5).batch(8), 1);
    for workers in 1..=64 {
        for rps in [1, 7, 100, 2_000, 50_000, 1_000_000] {
            let b = u64::from(RateLimit::new(rps, u32::MAX).batch(workers));
            assert!(b * workers as u64 <= (u64::from(rps) / 50).max(workers as u64));
        }
    }
}

#[test]
fn one_worker_holds_the_process_rate() {
    let t0 = Instant::now();
    let (reservoir, mut buckets) = setup(LIMIT, 1, t0);
    let admitted = offer(&mut buckets, t0, 10_000, 5, &mut |_| 0);
    assert_process_rate(admitted, 1, &reservoir);
}

#[test]
fn four_workers_with_every_connection_on_one_hold_the_process_rate() {
    let t0 = Instant::now();
    let (reservoir, mut buckets) = setup(LIMIT, 4, t0);
    let admitted = offer(&mut buckets, t0, 10_000, 5, &mut |_| 2);
    assert_process_rate(admitted, 4, &reservoir);
}

#[test]
fn four_workers_with_connections_spread_hold_the_process_rate() {
    let t0 = Instant::now();
    let (reservoir, mut buckets) = setup(LIMIT, 4, t0);
    let admitted = offer(&mut buckets, t0, 10_000, 5, &mut |i| (i % 4) as usize);
    assert_process_rate(admitted, 4, &reservoir);

    let (reservoir, mut buckets) = setup(LIMIT, 4, t0);
    let mut rng = fastrand::Rng::with_seed(7);
    let admitted = offer(&mut buckets, t0, 10_000, 5, &mut |_| rng.usize(0..4));
    assert_process_rate(admitted, 4, &reservoir);
}

#[test]
fn four_workers_skewed_three_to_one_hold_the_process_rate() {
    let t0 = Instant::now();
    let (reservoir, mut buckets) = setup(LIMIT, 4, t0);
    let mut rng = fastrand::Rng::with_seed(11);
    let admitted = offer(&mut buckets, t0, 10_000, 5, &mut |_| {
        if rng.u8(0..4) == 0 {
            rng.usize(1..4)
        } else {
            0
        }
    });
    assert_process_rate(admitted, 4, &reservoir);
}

#[test]
fn demand_under_the_rate_is_all_admitted_even_when_caches_expire() {
    let t0 = Instant::now();
    let mut rng = fastrand::Rng::with_seed(3);
    // 1,500 rps spread: ~375 per worker, a batch lasts ~27 ms.
    let (_, mut buckets) = setup(LIMIT, 4, t0);
    assert_eq!(offer(&mut buckets, t0, 1_500, 5, &mut |_| rng.usize(0..4)), 7_500);
    // 100 rps spread: a batch outlives LOCAL_TTL and goes back each time.
    let (reservoir, mut buckets) = setup(LIMIT, 4, t0);
    assert_eq!(offer(&mut buckets, t0, 100, 5, &mut |_| rng.usize(0..4)), 500);
    buckets.clear();
    assert_eq!(reservoir.available(t0 + ms(5_100)), 100, "nothing lost");
}

#[test]
fn a_fresh_limit_admits_its_burst_then_the_rate() {
    let t0 = Instant::now();
    let (_, mut buckets) = setup(LIMIT, 1, t0);
    let burst = (0..1_000).filter(|_| buckets[0].try_acquire(t0)).count();
    assert_eq!(burst, 100);
    // 10 ms later: 20 tokens earned, half a batch.
    let later = (0..1_000).filter(|_| buckets[0].try_acquire(t0 + ms(10))).count();
    assert_eq!(later, 20);
}

#[test]
fn stale_tokens_go_back_to_the_reservoir_instead_of_being_spent_late() {
    let t0 = Instant::now();
    let (reservoir, mut buckets) = setup(RateLimit::new(2_000, 1_000), 2, t0);
    assert_eq!(reservoir.batch(), 20);
    assert!(buckets[0].try_acquire(t0));
    assert_eq!(buckets[0].cached(), 19);
    while buckets[1].try_acquire(t0) {}
    assert_eq!(reservoir.available(t0), 0);
    // 60 ms later 120 tokens were earned; worker 0's 19 are past LOCAL_TTL.
    let t1 = t0 + ms(60);
    assert_eq!(reservoir.available(t1), 120);
    assert!(buckets[0].try_acquire(t1));
    assert_eq!(reservoir.available(t1), 120 + 19 - 20);
    // Dropping a worker's bucket returns its cache too.
    assert_eq!(buckets[0].cached(), 19);
    drop(buckets.remove(0));
    assert_eq!(reservoir.available(t1), 120 + 19 - 1);
}

#[test]
fn retry_after_says_when_the_next_half_batch_is_earned() {
    let t0 = Instant::now();
    let (_, mut buckets) = setup(LIMIT, 1, t0);
    while buckets[0].try_acquire(t0) {}
    // Half a batch (20 tokens) at 2,000 rps is 10 ms.
    assert_eq!(buckets[0].retry_after(t0), ms(10));
    assert_eq!(buckets[0].retry_after(t0 + ms(4)), ms(6));
    assert!(!buckets[0].try_acquire(t0 + ms(9)));
    assert!(buckets[0].try_acquire(t0 + ms(10)));
    assert_eq!(buckets[0].retry_after(t0 + ms(10)), Duration::ZERO);
}

#[test]
fn a_refused_worker_does_not_touch_the_reservoir_until_a_batch_can_be_there() {
    let t0 = Instant::now();
    let (reservoir, mut buckets) = setup(LIMIT, 1, t0);
    while buckets[0].try_acquire(t0) {}
    // Someone else gives tokens back; the worker's negative cache still refuses until
    // the time it was told, and takes them after.
    reservoir.give_back(40);
    assert!(!buckets[0].try_acquire(t0 + ms(1)));
    assert!(buckets[0].try_acquire(t0 + ms(10)));
}

#[test]
fn zero_rate_or_burst_is_treated_as_the_least_instead_of_dividing_by_zero() {
    let t0 = Instant::now();
    let (_, mut buckets) = setup(RateLimit::new(0, 0), 3, t0);
    assert!(buckets[0].try_acquire(t0));
    assert!(!buckets[1].try_acquire(t0));
    // One request in 1000 s.
    assert!(!buckets[2].try_acquire(t0 + ms(999_999)));
    assert!(buckets[2].try_acquire(t0 + ms(1_000_000)));
}

#[test]
fn rates_below_one_a_second_hold() {
    let t0 = Instant::now();
    // Half a request a second, two at once.
    let (_, mut buckets) = setup(RateLimit::milli(500, 2), 2, t0);
    assert!(buckets[0].try_acquire(t0) && buckets[1].try_acquire(t0));
    assert!(!buckets[0].try_acquire(t0 + ms(1_999)));
    assert_eq!(buckets[0].retry_after(t0 + ms(1_999)), ms(1));
    assert!(buckets[1].try_acquire(t0 + ms(2_000)));
    assert!(!buckets[0].try_acquire(t0 + ms(2_000)));
    assert!(buckets[0].try_acquire(t0 + ms(4_000)));
}

#[test]
fn uneven_intervals_never_let_a_burst_through_in_pieces() {
    // 3 rps: an interval of 333,333,333.3 ns rounds down per take, so a full bucket
    // of 5 yields exactly 5 and the next token comes at most a nanosecond early.
    let t0 = Instant::now();
    let reservoir = Reservoir::new(RateLimit::new(3, 5), 1, t0);
    assert_eq!(reservoir.available(t0), 5);
    assert_eq!((0..10).filter(|_| reservoir.try_take(1, t0).is_ok()).count(), 5);
    assert_eq!(reservoir.ready_at(1, t0), t0 + Duration::from_nanos(333_333_332));
    assert!(reservoir.try_take(1, t0 + Duration::from_nanos(333_333_331)).is_err());
    assert!(reservoir.try_take(1, t0 + Duration::from_nanos(333_333_332)).is_ok());
}

#[test]
fn threads_racing_on_one_reservoir_never_spend_a_token_twice() {
    let t0 = Instant::now();
    let limit = RateLimit::new(100_000, 10_000);
    let reservoir = Arc::new(Reservoir::new(limit, 4, t0));
    assert_eq!(reservoir.batch(), 500);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let reservoir = reservoir.clone();
            std::thread::spawn(move || {
                let mut bucket = LocalBucket::new(reservoir);
                (0..20_000).filter(|_| bucket.try_acquire(t0)).count()
            })
        })
        .collect();
    let admitted: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    // The clock is frozen, so exactly the burst exists to share.
    assert_eq!(admitted, 10_000);
    assert_eq!(reservoir.available(t0), 0);
}

proptest! {
    /// Whatever the rate, worker count, routing and arrival gaps, the process never
    /// admits more than the burst plus what the rate earned over the run.
    #[test]
    fn never_over_the_rate(
        rps in 1u32..20_000,
        burst in 1u32..2_000,
        workers in 1usize..9,
        seed in any::<u64>(),
        gaps in proptest::collection::vec(0u64..2_000_000, 1..2_000),
    ) {
        let t0 = Instant::now();
        let (_, mut buckets) = setup(RateLimit::new(rps, burst), workers, t0);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut now = t0;
        let mut admitted = 0u64;
        for gap in gaps {
            now += Duration::from_nanos(gap);
            if buckets[rng.usize(0..workers)].try_acquire(now) {
                admitted += 1;
            }
        }
        let earned = u128::from(rps) * (now - t0).as_nanos() / 1_000_000_000;
        prop_assert!(u128::from(admitted) <= u128::from(burst) + earned + 1);
    }
}
