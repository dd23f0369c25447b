//! Weighted random choice among eligible endpoints.
//!
//! Cumulative weights are built once per endpoint list, so a draw is one random
//! number and a binary search: O(log n). An ineligible result is redrawn a few times
//! (O(1) while most endpoints are eligible), then an exact scan over the eligible
//! weights takes over. Rejection sampling keeps the draw proportional to weight among
//! the eligible endpoints, so the two paths agree on the distribution.

use super::p2c::SAMPLE_TRIES;

#[derive(Clone, Debug, Default)]
pub(super) struct WeightedRandom {
    /// `cumulative[i]` = sum of weights `0..=i`; strictly increasing since weights ≥ 1.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    pub(super) fn new(weights: impl Iterator<Item = u32>) -> Self {
        let cumulative = weights
            .scan(0u64, |sum, w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        Self { cumulative }
    }

    pub(super) fn pick(&self, rng: &mut fastrand::Rng, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        for _ in 0..SAMPLE_TRIES {
            let r = rng.u64(0..total);
            // First index whose cumulative weight exceeds r; always < len because
            // r < total = the last cumulative weight.
            let i = self.cumulative.partition_point(|&c| c <= r);
            if eligible(i) {
                return Some(i);
            }
        }
        self.scan(rng, eligible)
    }

    fn weight(&self, i: usize) -> u64 {
        let below = if i == 0 {
            0
        } else {
            self.cumulative.get(i - 1).copied().unwrap_or(0)
        };
        self.cumulative.get(i).copied().unwrap_or(0).saturating_sub(below)
    }

    fn scan(&self, rng: &mut fastrand::Rng, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.cumulative.len();
        let total: u64 = (0..n).filter(|&i| eligible(i)).map(|i| self.weight(i)).sum();
        if total == 0 {
            return None;
        }
        let mut r = rng.u64(0..total);
        for i in (0..n).filter(|&i| eligible(i)) {
            let w = self.weight(i);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(weights: &[u32], eligible: &dyn Fn(usize) -> bool, picks: u32) -> Vec<f64> {
        let wr = WeightedRandom::new(weights.iter().copied());
        let mut rng = fastrand::Rng::with_seed(42);
        let mut hits = vec![0u32; weights.len()];
        for _ in 0..picks {
            if let Some(i) = wr.pick(&mut rng, eligible) {
                hits[i] += 1;
            }
        }
        hits.iter().map(|&h| f64::from(h) / f64::from(picks)).collect()
    }

    #[test]
    fn follows_weights() {
        let s = shares(&[1, 3], &|_| true, 10_000);
        assert!((s[0] - 0.25).abs() < 0.02 && (s[1] - 0.75).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn follows_weights_among_eligible_through_the_scan() {
        // The heavy endpoint is ineligible, so most draws miss and the scan decides.
        let s = shares(&[100, 1, 3], &|i| i != 0, 10_000);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 0.25).abs() < 0.02 && (s[2] - 0.75).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn empty_or_all_ineligible_is_none() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(WeightedRandom::new([].into_iter()).pick(&mut rng, &|_| true), None);
        assert_eq!(WeightedRandom::new([2, 2].into_iter()).pick(&mut rng, &|_| false), None);
    }
}
