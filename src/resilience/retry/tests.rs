//! Retry-policy tests: parsing `retry.on`, what each word matches, the attempt and
//! idempotency rules, and the full-jitter backoff's range.

use super::*;
use proptest::prelude::*;

fn on(words: &[&str]) -> RetryOn {
    RetryOn::parse(words.iter().copied()).unwrap_or_default()
}

fn policy(attempts: u32, words: &[&str]) -> RetryPolicy {
    RetryPolicy {
        attempts,
        on: on(words),
        ..RetryPolicy::default()
    }
}

const OUTCOMES: [Outcome; 10] = [
    Outcome::ConnectFailure,
    Outcome::Reset,
    Outcome::Timeout,
    Outcome::Status(200),
    Outcome::Status(404),
    Outcome::Status(409),
    Outcome::Status(500),
    Outcome::Status(502),
    Outcome::Status(503),
    Outcome::Status(504),
];

/// Which of `OUTCOMES` each word matches, in order.
#[test]
fn each_word_matches_its_table_row() {
    let table: [(&str, [bool; 10]); 7] = [
        (
            "connect-failure",
            [true, false, false, false, false, false, false, false, false, false],
        ),
        (
            "reset",
            [true, true, false, false, false, false, false, false, false, false],
        ),
        (
            "timeout",
            [false, false, true, false, false, false, false, false, false, false],
        ),
        ("5xx", [true, true, true, false, false, false, true, true, true, true]),
        (
            "gateway-error",
            [true, true, true, false, false, false, false, true, true, true],
        ),
        (
            "retriable-4xx",
            [false, false, false, false, false, true, false, false, false, false],
        ),
        (
            "503",
            [false, false, false, false, false, false, false, false, true, false],
        ),
    ];
    for (word, expected) in table {
        let set = on(&[word]);
        let got: Vec<bool> = OUTCOMES.iter().map(|&o| set.matches(o)).collect();
        assert_eq!(got, expected, "{word}");
    }
    assert!(OUTCOMES.iter().all(|&o| !RetryOn::default().matches(o)));
}

#[test]
fn parses_lists_codes_and_rejects_the_rest() {
    let set = RetryOn::parse(["connect-failure", " reset ", "503", "503", "429"]);
    assert_eq!(set.as_ref().map(|s| s.codes.clone()), Ok(vec![429, 503]));
    assert_eq!(set, "connect-failure, reset,503,429,".parse::<RetryOn>());
    for bad in [
        "",
        "5XX",
        "gateway_error",
        "99",
        "600",
        "0503",
        "+503",
        "50",
        "retriable-5xx",
    ] {
        let err = RetryOn::parse([bad]);
        assert_eq!(err, Err(ParseRetryOnError(bad.trim().to_owned())), "{bad:?}");
    }
    let message = RetryOn::parse(["nope"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("\"nope\"") && message.contains("gateway-error"),
        "{message}"
    );
    assert!(RetryOn::default().is_empty() && !on(&["409"]).is_empty());
}

#[test]
fn attempts_count_the_first_try() {
    let p = policy(3, &["5xx"]);
    assert!(p.should_retry(Outcome::Status(500), 1, true, false));
    assert!(p.should_retry(Outcome::Status(500), 2, true, false));
    assert!(!p.should_retry(Outcome::Status(500), 3, true, false));
    assert!(!RetryPolicy::default().should_retry(Outcome::ConnectFailure, 1, true, true));
    assert!(!p.should_retry(Outcome::Status(404), 1, true, false));
}

#[test]
fn non_idempotent_requests_retry_only_what_never_reached_the_upstream() {
    let p = policy(2, &["5xx"]);
    assert!(p.should_retry(Outcome::ConnectFailure, 1, false, false));
    for o in [Outcome::Reset, Outcome::Timeout, Outcome::Status(503)] {
        assert!(!p.should_retry(o, 1, false, false), "{o:?}");
        assert!(p.should_retry(o, 1, false, true), "{o:?} allowed by the route");
        assert!(p.should_retry(o, 1, true, false), "{o:?} idempotent");
    }
}

#[test]
fn backoff_grows_exponentially_to_the_cap_with_full_jitter() {
    let p = RetryPolicy {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    let ms = 1_000_000;
    let ceilings: Vec<u64> = (0..8).map(|a| p.backoff_ceiling(a) / ms).collect();
    assert_eq!(ceilings, [10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(p.backoff_ceiling(64), 300 * ms);
    assert_eq!(p.backoff_ceiling(u32::MAX), 300 * ms);

    // Uniform over [0, ceiling]: spans the range, mean about half of it.
    let mut rng = fastrand::Rng::with_seed(1);
    let samples: Vec<u64> = (0..20_000)
        .map(|_| u64::try_from(p.backoff(3, &mut rng).as_nanos()).unwrap_or(u64::MAX))
        .collect();
    let (lo, hi) = (samples.iter().min(), samples.iter().max());
    assert!(lo.is_some_and(|&l| l < 80 * ms / 100) && hi.is_some_and(|&h| h > 80 * ms * 99 / 100));
    let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
    assert!((mean / (80 * ms) as f64 - 0.5).abs() < 0.02, "mean {mean}");

    let zero = RetryPolicy {
        backoff_base: Duration::ZERO,
        ..RetryPolicy::default()
    };
    assert_eq!(zero.backoff(100, &mut rng), Duration::ZERO);
}

proptest! {
    #[test]
    fn backoff_never_leaves_its_range(base_ms in 0u64..10_000, max_ms in 0u64..100_000, attempt in 0u32..200, seed in any::<u64>()) {
        let p = RetryPolicy {
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            ..RetryPolicy::default()
        };
        let d = p.backoff(attempt, &mut fastrand::Rng::with_seed(seed));
        prop_assert!(d <= Duration::from_millis(max_ms));
        let grown = (u128::from(base_ms) * 1_000_000).saturating_mul(1u128 << attempt.min(100));
        prop_assert!(d.as_nanos() <= grown);
    }

    #[test]
    fn parsing_never_panics_and_accepts_every_status_code(word in "\\PC{0,12}", code in 100u16..600) {
        let _ = RetryOn::parse([word.as_str()]);
        let set = RetryOn::parse([code.to_string().as_str()]);
        prop_assert!(set.is_ok_and(|s| s.matches(Outcome::Status(code))));
    }
}
