//! Retry-budget tests: a storm of failures cannot multiply upstream tries beyond
//! `(1 + ratio) · requests + floor`, ordinary failure rates are retried in full, a
//! quiet worker still gets its minimum, and deposits expire.

use super::super::{Outcome, RetryOn, RetryPolicy};
use super::*;
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(ratio: f64, min_retries_per_sec: u32) -> RetryBudgetConfig {
    RetryBudgetConfig {
        ratio,
        min_retries_per_sec,
        ttl: Duration::from_secs(10),
    }
}

/// A budget with its own floor, as one worker of one process has.
fn with_floor(cfg: RetryBudgetConfig, now: Instant) -> RetryBudget {
    RetryBudget::new(cfg, floor_of(cfg, 1, now), now)
}

/// The process-wide floor of `cfg`, shared by `workers` workers.
fn floor_of(cfg: RetryBudgetConfig, workers: usize, now: Instant) -> Option<Arc<Reservoir>> {
    cfg.floor().map(|rate| Arc::new(Reservoir::new(rate, workers, now)))
}

/// Runs `requests` requests, one every `gap`, through the pipeline's retry loop with
/// `attempts` tries allowed; a try fails when `fails(request, try)`. Returns the
/// number of upstream tries.
fn run(
    budget: &mut RetryBudget,
    t0: Instant,
    requests: u64,
    gap: Duration,
    attempts: u32,
    fails: &mut dyn FnMut(u64, u32) -> bool,
) -> u64 {
    let policy = RetryPolicy {
        attempts,
        on: RetryOn::parse(["5xx"]).unwrap_or_default(),
        ..RetryPolicy::default()
    };
    let mut tries = 0;
    for r in 0..requests {
        let now = t0 + gap * u32::try_from(r).unwrap_or(u32::MAX);
        budget.on_request(now);
        let mut attempt = 1;
        tries += 1;
        while fails(r, attempt)
            && policy.should_retry(Outcome::Status(503), attempt, true, false)
            && budget.try_start_retry(now)
        {
            attempt += 1;
            tries += 1;
            // The retry's try is over; the loop condition looks at how it ended.
            budget.end_retry();
        }
    }
    tries
}

#[test]
fn a_storm_cannot_multiply_upstream_tries_beyond_the_budget() {
    let t0 = Instant::now();
    // 10,000 requests in 10 s (one ttl), every try failing, 5 tries allowed.
    let mut budget = with_floor(cfg(0.2, 10), t0);
    let tries = run(&mut budget, t0, 10_000, ms(1), 5, &mut |_, _| true);
    // The floor: 100 at once, and 10 a second for the 10 s.
    let bound = 10_000 + 2_000 + 100 + 100;
    assert!(tries <= bound, "{tries} tries");
    assert!(tries >= bound - 1, "the budget is spent, not hoarded: {tries}");
    let c = budget.counters();
    assert_eq!((c.requests, c.active_retries), (10_000, 0));
    assert!((2_198..=2_200).contains(&c.retries), "{} retries", c.retries);
    assert!(c.denied >= 9_000);

    // A minute-long storm: the floor's 100 at once and 10 a second on top
    // of the ratio.
    let mut budget = with_floor(cfg(0.2, 10), t0);
    let tries = run(&mut budget, t0, 60_000, ms(1), 5, &mut |_, _| true);
    assert!(tries <= 60_000 + 12_000 + 100 + 60 * 10, "{tries} tries");
}

#[test]
fn ordinary_failure_rates_are_retried_in_full() {
    let t0 = Instant::now();
    let mut budget = with_floor(cfg(0.2, 10), t0);
    let mut rng = fastrand::Rng::with_seed(5);
    // 5% of first tries fail, retries succeed.
    let tries = run(&mut budget, t0, 10_000, ms(1), 3, &mut |_, attempt| {
        attempt == 1 && rng.u8(0..100) < 5
    });
    let c = budget.counters();
    assert_eq!(c.denied, 0);
    assert_eq!(tries, 10_000 + c.retries);
    assert!((400..600).contains(&c.retries), "{}", c.retries);
}

#[test]
fn a_quiet_worker_still_gets_its_minimum() {
    let t0 = Instant::now();
    let mut budget = with_floor(cfg(0.2, 10), t0);
    // Ten requests in ten seconds, all failing: the floor (10/s, 100 at once) covers them.
    let tries = run(&mut budget, t0, 10, Duration::from_secs(1), 3, &mut |_, _| true);
    assert_eq!(tries, 30);
    // The deposits (10 · 0.2) paid two retries; the floor, which refills 10
    // a second, is full again but for the one taken at 9 s.
    assert_eq!(budget.available(t0 + Duration::from_secs(9)), 99);
}

#[test]
fn deposits_and_withdrawals_expire_after_ttl() {
    let t0 = Instant::now();
    let mut budget = with_floor(cfg(0.5, 0), t0);
    for _ in 0..100 {
        budget.on_request(t0);
    }
    assert_eq!(budget.available(t0), 50);
    assert!(budget.try_start_retry(t0));
    assert_eq!(budget.available(t0 + ms(9_999)), 49);
    assert_eq!(budget.available(t0 + ms(10_000)), 0);
    assert!(!budget.try_start_retry(t0 + ms(10_000)));
}

#[test]
fn no_ratio_and_no_minimum_means_no_retries() {
    let t0 = Instant::now();
    for ratio in [0.0, -1.0, f64::NAN] {
        let mut budget = with_floor(cfg(ratio, 0), t0);
        assert_eq!(run(&mut budget, t0, 1_000, ms(1), 5, &mut |_, _| true), 1_000);
    }
}

proptest! {
    /// Within one ttl, retries never exceed `ratio · requests + floor`, whatever
    /// the mix of requests and retry attempts.
    #[test]
    fn retries_within_ratio_plus_floor(
        ratio in 0.0f64..2.0,
        min in 0u32..20,
        events in proptest::collection::vec((any::<bool>(), 0u64..5), 0..2_000),
    ) {
        let t0 = Instant::now();
        let mut budget = with_floor(cfg(ratio, min), t0);
        let mut now = t0;
        for (is_request, gap) in events {
            now += ms(gap);
            if is_request {
                budget.on_request(now);
            } else if budget.try_start_retry(now) {
                budget.end_retry();
            }
        }
        prop_assume!(now - t0 < Duration::from_secs(9));
        let c = budget.counters();
        let deposit = (ratio * 1_000.0).round() / 1_000.0;
        // The floor: min · ttl at once, then min a second.
        let elapsed = (now - t0).as_secs_f64();
        let allowed = deposit * c.requests as f64 + f64::from(min) * (10.0 + elapsed);
        prop_assert!(c.retries as f64 <= allowed + 1e-9, "{} > {}", c.retries, allowed);
    }
}

/// A reload's new settings apply at once; what was deposited stays.
#[test]
fn reconfigured_budgets_take_the_new_settings_and_keep_deposits() {
    let t0 = Instant::now();
    let mut budget = with_floor(cfg(0.2, 10), t0);
    assert_eq!(budget.available(t0), 100, "10 a second over a 10 s window");
    budget.reconfigure(cfg(0.0, 0), None, t0);
    assert_eq!(budget.available(t0), 0, "no floor and no deposits any more");
    assert!(!budget.try_start_retry(t0));

    let mut budget = with_floor(cfg(0.5, 0), t0);
    for _ in 0..10 {
        budget.on_request(t0);
    }
    budget.reconfigure(cfg(0.0, 1), floor_of(cfg(0.0, 1), 1, t0), t0);
    assert_eq!(budget.available(t0), 5 + 10, "earlier deposits plus the new floor");
    budget.on_request(t0);
    assert_eq!(budget.available(t0), 15, "new requests deposit nothing");
}

/// The floor holds for the process: workers that share it, however many,
/// draw on one floor once their own deposits are spent.
#[test]
fn the_floor_is_one_for_the_process() {
    let t0 = Instant::now();
    let shared = cfg(0.2, 10);
    let floor = floor_of(shared, 4, t0);
    let mut workers: Vec<RetryBudget> = (0..4).map(|_| RetryBudget::new(shared, floor.clone(), t0)).collect();
    assert_eq!(workers[0].available(t0), 100, "min_retries_per_sec · ttl at once");
    let mut retried = 0;
    for i in 0..400 {
        if workers[i % 4].try_start_retry(t0) {
            retried += 1;
        }
    }
    assert_eq!(retried, 100, "one floor for all four");
    // A worker's own deposits come first and leave the floor alone.
    let mut own = RetryBudget::new(shared, floor_of(shared, 1, t0), t0);
    for _ in 0..10 {
        own.on_request(t0);
    }
    assert!(own.try_start_retry(t0) && own.try_start_retry(t0));
    assert_eq!(own.available(t0), 100, "two retries paid by 10 requests at 0.2");
    assert!(cfg(0.2, 0).floor().is_none());
}
