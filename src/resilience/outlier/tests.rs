//! Outlier-ejection tests on a simulated clock: both detectors, what resets them,
//! growing and decaying ejection times, the ejection cap, coming back by itself, and
//! state kept by key across endpoint-list changes.

use super::*;
use proptest::prelude::*;

const S503: Outcome = Outcome::Status(503);
const S200: Outcome = Outcome::Status(200);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cfg(pct: u32) -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 3,
        consecutive_connect_failures: 2,
        base_ejection: secs(30),
        max_ejection: secs(100),
        max_ejection_percent: pct,
    }
}

fn keys(n: u64) -> Vec<u64> {
    (0..n).map(|i| 100 + i).collect()
}

/// Feeds `outcome` to `idx` until it is ejected; how many it took (capped at 100).
fn fail_until_ejected(d: &mut OutlierDetector, idx: usize, outcome: Outcome, now: Instant) -> usize {
    (1..=100).find(|_| d.record(idx, outcome, now)).unwrap_or(usize::MAX)
}

#[test]
fn consecutive_5xx_eject_and_a_success_resets_the_run() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(50), &keys(4));
    for o in [S503, S503, S200, S503, S503] {
        assert!(!d.record(0, o, t0));
    }
    assert!(!d.is_ejected(0, t0));
    assert!(d.record(0, S503, t0));
    assert!(d.is_ejected(0, t0));
    // Resets and timeouts are 5xx-class too; 4xx are not failures.
    assert_eq!(fail_until_ejected(&mut d, 1, Outcome::Reset, t0), 3);
    d.record(2, Outcome::Timeout, t0);
    d.record(2, Outcome::Status(404), t0);
    d.record(2, Outcome::Timeout, t0);
    d.record(2, Outcome::Timeout, t0);
    assert!(!d.is_ejected(2, t0));
}

#[test]
fn connect_failures_are_counted_on_their_own() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(50), &keys(4));
    // A 5xx response means the connection worked: the connect run restarts.
    for o in [Outcome::ConnectFailure, S503, Outcome::ConnectFailure] {
        assert!(!d.record(0, o, t0));
    }
    assert!(d.record(0, Outcome::ConnectFailure, t0));
    // Connect failures do not break a 5xx run either.
    for o in [S503, S503, Outcome::ConnectFailure] {
        assert!(!d.record(1, o, t0));
    }
    assert!(d.record(1, S503, t0));
}

#[test]
fn ejected_endpoints_come_back_by_themselves_and_need_a_fresh_run() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(50), &keys(2));
    fail_until_ejected(&mut d, 0, S503, t0);
    assert_eq!(d.ejected_until(0, t0), Some(t0 + secs(30)));
    assert!(d.is_ejected(0, t0 + secs(29)));
    // Late results from requests sent earlier change nothing while out.
    for _ in 0..10 {
        assert!(!d.record(0, S503, t0 + secs(1)));
    }
    let back = t0 + secs(30);
    assert!(!d.is_ejected(0, back));
    assert_eq!(d.ejected_until(0, back), None);
    assert!(!d.record(0, S503, back));
    assert!(!d.record(0, S503, back));
    assert!(d.record(0, S503, back));
}

#[test]
fn ejection_time_grows_to_the_cap_and_decays_while_healthy() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(50), &keys(2));
    let mut now = t0;
    for expected in [30, 60, 90, 100, 100] {
        fail_until_ejected(&mut d, 0, S503, now);
        assert_eq!(d.ejected_until(0, now), Some(now + secs(expected)));
        now += secs(expected);
    }
    assert_eq!(d.times_ejected(0), 4, "multiplier capped at ceil(max / base)");
    // 65 s back in rotation: two base periods, the multiplier drops 4 → 2, then 3.
    now += secs(65);
    fail_until_ejected(&mut d, 0, S503, now);
    assert_eq!(d.ejected_until(0, now), Some(now + secs(90)));
    // Long healthy: back to the base time.
    now += secs(90) + secs(3_600);
    fail_until_ejected(&mut d, 0, S503, now);
    assert_eq!(d.ejected_until(0, now), Some(now + secs(30)));
}

#[test]
fn never_more_than_the_percentage_and_never_all() {
    let t0 = Instant::now();
    let cases = [
        // (endpoints, percent, most ejected at once)
        (10, 30, 3),
        (10, 10, 1),
        (5, 10, 1), // at least one, as Envoy
        (10, 100, 9),
        (2, 100, 1), // one always stays
        (2, 50, 1),
        (1, 10, 1), // a cluster of one can lose its endpoint
        (1, 0, 0),
        (10, 0, 0),
        (0, 50, 0),
    ];
    for (n, pct, most) in cases {
        let mut d = OutlierDetector::new(cfg(pct), &keys(n));
        assert_eq!(d.max_ejected(), most, "{n} endpoints at {pct}%");
        for idx in 0..n as usize {
            for _ in 0..5 {
                d.record(idx, S503, t0);
            }
        }
        assert_eq!(d.ejected_count(t0), most, "{n} endpoints at {pct}%");
    }
}

#[test]
fn an_endpoint_held_back_by_the_cap_goes_once_there_is_room() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(10), &keys(5));
    fail_until_ejected(&mut d, 0, S503, t0);
    for _ in 0..5 {
        assert!(!d.record(1, S503, t0));
    }
    let later = t0 + secs(30);
    assert!(!d.is_ejected(0, later));
    assert!(
        d.record(1, S503, later),
        "still over its threshold: the next failure ejects"
    );
}

#[test]
fn rebuild_keeps_state_by_key_and_starts_new_keys_fresh() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(50), &[1, 2, 3, 4]);
    fail_until_ejected(&mut d, 1, S503, t0); // key 2 out
    d.record(2, S503, t0);
    d.record(2, S503, t0); // key 3 one failure short
                           // The new config applies too: up to 2 of the 3 may be out.
    let d = d.rebuild(cfg(100), &[3, 9, 2], t0);
    assert_eq!(d.max_ejected(), 2);
    assert_eq!(d.len(), 3);
    assert!(d.is_ejected(2, t0), "key 2 moved to index 2 and is still out");
    assert!(!d.is_ejected(1, t0), "key 9 is new");
    let mut d = d;
    assert!(d.record(0, S503, t0), "key 3 kept its run");
    // Out-of-range indices are ignored rather than panicking.
    assert!(!d.record(7, S503, t0));
    assert!(!d.is_ejected(7, t0));
    assert_eq!(d.times_ejected(7), 0);
}

#[test]
fn rebuild_holds_carried_ejections_to_the_new_limits() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(cfg(100), &keys(4));
    for idx in 0..3 {
        fail_until_ejected(&mut d, idx, S503, t0);
    }
    assert_eq!(d.ejected_count(t0), 3);
    // Shorter ejections: none lasts past the new max_ejection.
    let shorter = OutlierConfig {
        base_ejection: secs(5),
        max_ejection: secs(10),
        ..cfg(100)
    };
    let later = t0 + secs(1);
    let d2 = d.rebuild(shorter, &keys(4), later);
    assert_eq!(d2.ejected_count(later), 3);
    assert_eq!(d2.ejected_until(0, later), Some(later + secs(10)));
    // A lower cap: those beyond it come back at once.
    let d3 = d.rebuild(cfg(50), &keys(4), later);
    assert_eq!(d3.ejected_count(later), 2);
    // Ejection turned off: all come back.
    let d4 = d.rebuild(cfg(0), &keys(4), later);
    assert_eq!(d4.ejected_count(later), 0);
}

proptest! {
    /// Any mix of outcomes and times: the cap holds at every instant, and a cluster
    /// of two or more always keeps an endpoint in rotation.
    #[test]
    fn the_cap_always_holds(
        n in 1u64..12,
        pct in 0u32..=100,
        events in proptest::collection::vec((0usize..12, 0u8..4, 0u64..20), 0..500),
    ) {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(pct), &keys(n));
        let mut now = t0;
        for (idx, kind, gap) in events {
            now += secs(gap);
            let outcome = match kind {
                0 => S200,
                1 => Outcome::ConnectFailure,
                2 => Outcome::Reset,
                _ => S503,
            };
            d.record(idx % n as usize, outcome, now);
            let out = d.ejected_count(now);
            prop_assert!(out <= d.max_ejected());
            prop_assert!(n == 1 || out < n as usize);
        }
    }
}
