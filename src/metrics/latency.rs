//! Request durations for one label set: an hdrhistogram in microseconds plus
//! the exact sum, and the fixed Prometheus `le` buckets derived from it at
//! scrape time.
//!
//! Precision is two significant digits (bucket edges within 1/128 of the true
//! value; a value just past an `le` bound is recorded past the histogram
//! bucket that holds the bound, so the `le` counts are exact), which keeps
//! one histogram near 27 KiB; it is allocated on the first
//! recorded request, so routes that never see traffic cost nothing. Durations
//! past [`MAX_US`] are recorded as `MAX_US` (they only ever land in `+Inf`);
//! the sum stays exact.

use hdrhistogram::Histogram;
use std::time::Duration;

/// Longest duration the histogram tells apart: one hour, in microseconds.
pub const MAX_US: u64 = 3_600_000_000;
const SIGFIG: u8 = 2;

/// The `le` bounds: microseconds and the label text, 100µs to 30s. `+Inf` is
/// implicit.
pub const BUCKETS: [(u64, &str); 17] = [
    (100, "0.0001"),
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
];

#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// `None` until the first record (and, in theory, if creation failed).
    hist: Option<Histogram<u64>>,
    /// Exact sum of what was recorded, unclamped.
    sum_us: u64,
}

fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).ok()
}

/// `us`, or, when it lies just above an `le` bound but in the histogram
/// bucket holding that bound (which would count it as within the bound),
/// the first value of the next bucket: moved by less than the histogram's
/// precision, so that a 500.3 ms request is never counted `le="0.5"`.
fn beyond_bound(hist: &Histogram<u64>, us: u64) -> u64 {
    let low = hist.lowest_equivalent(us);
    match BUCKETS.iter().find(|&&(le, _)| le >= low) {
        Some(&(le, _)) if le < us => hist.highest_equivalent(le) + 1,
        _ => us,
    }
}

impl Latency {
    pub fn record(&mut self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        if self.hist.is_none() {
            self.hist = new_histogram();
        }
        let Some(hist) = &mut self.hist else { return };
        if hist.record(beyond_bound(hist, us.min(MAX_US))).is_ok() {
            self.sum_us = self.sum_us.saturating_add(us);
        }
    }

    pub fn merge(&mut self, other: &Latency) {
        let Some(theirs) = &other.hist else { return };
        match &mut self.hist {
            None => self.hist = Some(theirs.clone()),
            Some(ours) => {
                // Both come from `new_histogram`, so `add` cannot fail; should the
                // layouts ever differ, fall back to re-recording value by value.
                if ours.add(theirs).is_err() {
                    for v in theirs.iter_recorded() {
                        let _ = ours.record_n(v.value_iterated_to().min(MAX_US), v.count_at_value());
                    }
                }
            }
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Number of recorded requests (`_count`).
    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Cumulative counts for each of [`BUCKETS`]: values whose histogram bucket
    /// starts at or below the bound. The `+Inf` count is [`Latency::count`].
    pub fn cumulative(&self) -> [u64; BUCKETS.len()] {
        let mut counts = [0u64; BUCKETS.len()];
        let Some(hist) = &self.hist else { return counts };
        for v in hist.iter_recorded() {
            let low = hist.lowest_equivalent(v.value_iterated_to());
            if let Some(i) = BUCKETS.iter().position(|&(le, _)| low <= le) {
                counts[i] += v.count_at_value();
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_valid_and_small() {
        let h = new_histogram().expect("constant bounds");
        // Two significant digits over 1µs..1h: about 3,500 u64 counters.
        assert!(h.distinct_values() < 4_000, "{}", h.distinct_values());
        assert!(BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
        for (us, le) in BUCKETS {
            let secs: f64 = le.parse().expect("numeric le");
            assert_eq!((secs * 1e6).round() as u64, us, "{le}");
        }
    }

    #[test]
    fn buckets_count_values_at_or_below_the_bound() {
        let mut l = Latency::default();
        for us in [50, 100, 101, 250, 999, 1_000, 40_000_000, 7_200_000_000] {
            l.record(Duration::from_micros(us));
        }
        let c = l.cumulative();
        assert_eq!(c[0], 2, "50 and 100 are <= 100µs");
        assert_eq!(c[1], 4, "101 and 250 are <= 250µs");
        assert_eq!(c[3], 6, "999 and 1000 are <= 1ms");
        assert_eq!(c[16], 6, "40s and 2h only in +Inf");
        assert_eq!(l.count(), 8);
        assert_eq!(
            l.sum_us(),
            50 + 100 + 101 + 250 + 999 + 1_000 + 40_000_000 + 7_200_000_000
        );
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn values_just_past_a_bound_are_not_within_it() {
        for (i, &(le, _)) in BUCKETS.iter().enumerate() {
            let mut l = Latency::default();
            l.record(Duration::from_micros(le));
            l.record(Duration::from_micros(le + 1));
            l.record(Duration::from_micros(le + 1 + le / 500));
            let c = l.cumulative();
            assert_eq!(c[i], 1, "only {le}µs itself is <= {le}µs");
            if let Some(&next) = c.get(i + 1) {
                assert_eq!(next, 3, "all three are <= the next bound");
            }
            assert_eq!(l.sum_us(), 3 * le + 2 + le / 500, "the sum stays exact");
        }
    }

    #[test]
    fn merge_adds_counts_and_sums() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for i in 1..=100 {
            a.record(Duration::from_millis(i));
            b.record(Duration::from_millis(i * 3));
        }
        let mut m = Latency::default();
        m.merge(&a);
        m.merge(&b);
        m.merge(&Latency::default());
        assert_eq!(m.count(), 200);
        assert_eq!(m.sum_us(), a.sum_us() + b.sum_us());
        let (ca, cb, cm) = (a.cumulative(), b.cumulative(), m.cumulative());
        for i in 0..BUCKETS.len() {
            assert_eq!(cm[i], ca[i] + cb[i]);
        }
    }
}
