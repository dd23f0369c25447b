//! Breaker tests on a simulated clock: both triggers, the rolling window, the
//! Open → HalfOpen → Closed/Open cycle with growing open times, lost probes, and the
//! state machine's invariants as a property.

use super::*;
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> BreakerConfig {
    BreakerConfig {
        failure_ratio: 0.5,
        min_requests: 10,
        window: ms(10_000),
        consecutive_failures: 0,
        open_for: ms(1_000),
        max_open_for: ms(5_000),
        probes: 1,
    }
}

/// Sends one request at `now` if allowed and reports `success`; whether it was sent.
fn send(b: &mut EndpointBreaker, now: Instant, success: bool) -> bool {
    let allowed = b.allow(now);
    if allowed {
        b.on_result(now, success);
    }
    allowed
}

/// Trips `b` at `now` by failing requests until it opens.
fn trip(b: &mut EndpointBreaker, now: Instant) {
    while b.state() == BreakerState::Closed {
        send(b, now, false);
    }
}

#[test]
fn new_settings_shorten_an_open_breaker() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    trip(&mut b, t0);
    assert_eq!(b.open_until(), Some(t0 + ms(1_000)));
    let shorter = BreakerConfig {
        open_for: ms(100),
        max_open_for: ms(200),
        ..cfg()
    };
    let later = t0 + ms(10);
    b.set_config(shorter, later);
    assert_eq!(b.open_until(), Some(later + ms(200)));
    // Longer settings do not lengthen it.
    b.set_config(cfg(), later);
    assert_eq!(b.open_until(), Some(later + ms(200)));
}

/// Foresees, without changing anything, whether one more failure opens it.
#[test]
fn tells_whether_one_more_failure_opens_it() {
    let t0 = Instant::now();
    let consecutive = BreakerConfig {
        consecutive_failures: 2,
        ..cfg()
    };
    let mut b = EndpointBreaker::new(consecutive, t0);
    assert!(!b.open_after_failure(t0));
    assert!(send(&mut b, t0, false));
    assert!(b.open_after_failure(t0));
    assert_eq!(b.state(), BreakerState::Closed, "only foreseen");
    assert!(send(&mut b, t0, false));
    assert!(b.open_after_failure(t0), "open stays open");
    // Half-open: a failed probe opens it again.
    assert!(b.allow(t0 + ms(1_000)));
    assert!(b.open_after_failure(t0 + ms(1_000)));
}

#[test]
fn opens_on_the_failure_ratio_once_there_are_enough_requests() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    // 4 failures of 8: 50%, but under min_requests.
    for i in 0..8 {
        assert!(send(&mut b, t0, i % 2 == 0));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(send(&mut b, t0, true)); // 4 of 9
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(send(&mut b, t0, false)); // 5 of 10: ≥ 50%
    assert_eq!(b.state(), BreakerState::Open);
    assert!(!b.allow(t0 + ms(999)));
}

#[test]
fn stays_closed_below_the_ratio() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    for i in 0..1_000u64 {
        // 40% failures, spread over 100 s.
        assert!(send(&mut b, t0 + ms(i * 100), i % 5 < 3));
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn old_failures_age_out_of_the_window() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    for _ in 0..9 {
        send(&mut b, t0, false);
    }
    // 9 failures, one short of min_requests; 10 s later they are gone.
    send(&mut b, t0 + ms(10_000), false);
    assert_eq!(b.state(), BreakerState::Closed);
    // Within the window they still count.
    let mut b = EndpointBreaker::new(cfg(), t0);
    for _ in 0..9 {
        send(&mut b, t0, false);
    }
    send(&mut b, t0 + ms(8_999), false);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn opens_on_consecutive_failures_and_a_success_resets_the_run() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        consecutive_failures: 3,
        min_requests: 1_000,
        ..cfg()
    };
    let mut b = EndpointBreaker::new(cfg, t0);
    for ok in [false, false, true, false, false, true] {
        send(&mut b, t0, ok);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..3 {
        send(&mut b, t0, false);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn half_open_lets_probes_through_and_closes_on_success() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(BreakerConfig { probes: 2, ..cfg() }, t0);
    trip(&mut b, t0);
    assert_eq!(b.open_until(), Some(t0 + ms(1_000)));
    let t1 = t0 + ms(1_000);
    assert!(b.allow(t1));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.allow(t1));
    assert!(!b.allow(t1), "only two probes");
    b.on_result(t1, true);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.on_result(t1, true);
    assert_eq!(b.state(), BreakerState::Closed);
    // Closing forgot the old window: one failure does not reopen it.
    assert!(send(&mut b, t1, false));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    trip(&mut b, t0);
    let mut now = t0;
    for expected in [2_000, 4_000, 5_000, 5_000] {
        now = b.open_until().unwrap_or(now);
        assert!(send(&mut b, now, false));
        assert_eq!(b.open_until(), Some(now + ms(expected)));
    }
    // A close resets the backoff.
    now = b.open_until().unwrap_or(now);
    assert!(send(&mut b, now, true));
    assert_eq!(b.state(), BreakerState::Closed);
    trip(&mut b, now);
    assert_eq!(b.open_until(), Some(now + ms(1_000)));
}

#[test]
fn a_lost_probe_is_replaced_after_open_for() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    trip(&mut b, t0);
    let t1 = t0 + ms(1_000);
    assert!(b.allow(t1)); // this probe's result never comes
    assert!(!b.allow(t1 + ms(999)));
    assert!(b.allow(t1 + ms(1_000)));
    b.on_result(t1 + ms(1_000), true);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn results_from_before_opening_are_ignored_while_open() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    trip(&mut b, t0);
    for _ in 0..100 {
        b.on_result(t0 + ms(10), true);
    }
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.open_until(), Some(t0 + ms(1_000)));
}

#[test]
fn out_of_range_settings_disable_triggers_instead_of_misbehaving() {
    let t0 = Instant::now();
    for ratio in [0.0, -1.0, 1.5, f64::NAN] {
        let cfg = BreakerConfig {
            failure_ratio: ratio,
            probes: 0,
            ..cfg()
        };
        let mut b = EndpointBreaker::new(cfg, t0);
        for _ in 0..100 {
            send(&mut b, t0, false);
        }
        assert_eq!(b.state(), BreakerState::Closed, "ratio {ratio}");
    }
    // probes = 0 behaves as 1.
    let mut b = EndpointBreaker::new(
        BreakerConfig {
            probes: 0,
            consecutive_failures: 1,
            ..cfg()
        },
        t0,
    );
    trip(&mut b, t0);
    assert!(b.allow(t0 + ms(1_000)));
    assert!(!b.allow(t0 + ms(1_000)));
}

proptest! {
    /// Whatever happens: an Open breaker refuses until its time; a HalfOpen one lets
    /// at most `probes` requests through per `open_for`; Closed lets everything through.
    #[test]
    fn invariants_hold(
        probes in 1u32..4,
        consecutive in 0u32..6,
        events in proptest::collection::vec((0u64..400, any::<bool>(), any::<bool>()), 1..400),
    ) {
        let t0 = Instant::now();
        let cfg = BreakerConfig { probes, consecutive_failures: consecutive, min_requests: 5, ..cfg() };
        let mut b = EndpointBreaker::new(cfg, t0);
        let mut now = t0;
        let mut round: Option<(Instant, u32)> = None;
        for (gap, report, success) in events {
            now += ms(gap);
            let before = b.state();
            let until = b.open_until();
            let allowed = b.allow(now);
            match before {
                BreakerState::Closed => prop_assert!(allowed),
                BreakerState::Open => prop_assert_eq!(allowed, until.is_some_and(|u| now >= u)),
                BreakerState::HalfOpen => {}
            }
            if allowed && b.state() == BreakerState::HalfOpen {
                let (start, n) = match round {
                    Some((start, n)) if now - start < cfg.open_for => (start, n + 1),
                    _ => (now, 1),
                };
                prop_assert!(n <= probes);
                round = Some((start, n));
            } else if b.state() != BreakerState::HalfOpen {
                round = None;
            }
            if allowed && report {
                b.on_result(now, success);
            }
        }
    }
}

#[test]
fn an_open_breaker_whose_time_is_up_reads_half_open() {
    let t0 = Instant::now();
    let mut b = EndpointBreaker::new(cfg(), t0);
    assert_eq!(b.state_at(t0), BreakerState::Closed);
    trip(&mut b, t0);
    assert_eq!(b.state_at(t0 + ms(999)), BreakerState::Open);
    assert_eq!(b.state_at(t0 + ms(1_000)), BreakerState::HalfOpen);
    assert_eq!(b.state(), BreakerState::Open, "reading it changes nothing");
}
