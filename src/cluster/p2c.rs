//! Power-of-two-choices: draw two distinct eligible endpoints uniformly, keep the
//! cheaper one (linkerd2-proxy's `gen_pair`, Mitzenmacher's result: two random
//! choices give exponentially better balance than one, at O(1) cost per pick).
//!
//! The caller's eligibility filter is honoured by rejection sampling: a few random
//! draws, which cost O(1) while most endpoints are eligible, then an exact O(n) scan
//! only when the draws keep hitting ineligible endpoints. Both paths give every
//! eligible endpoint the same chance, so mixing them keeps the draw uniform.
//!
//! Costs live with the caller (`Balancer`); this file only picks candidates and breaks
//! ties.

use std::cmp::Ordering;

/// Random draws before falling back to a scan. With half the endpoints ineligible the
/// scan runs for 1 pick in 2^4; with 9 in 10 eligible, 1 in 10^4.
pub(super) const SAMPLE_TRIES: usize = 4;

/// The endpoints a P2C pick compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Candidates {
    None,
    One(usize),
    Two(usize, usize),
}

/// Draws two distinct eligible indices in `0..n`, or as many as exist.
pub(super) fn candidates(n: usize, rng: &mut fastrand::Rng, eligible: &dyn Fn(usize) -> bool) -> Candidates {
    let Some(a) = uniform_eligible(n, None, rng, eligible) else {
        return Candidates::None;
    };
    match uniform_eligible(n, Some(a), rng, eligible) {
        Some(b) => Candidates::Two(a, b),
        None => Candidates::One(a),
    }
}

/// One eligible index in `0..n` other than `exclude`, uniformly at random.
///
/// `eligible` is expected to be a pure function of the index during one pick; the
/// scan calls it twice per endpoint (count, then select without allocating).
pub(super) fn uniform_eligible(
    n: usize,
    exclude: Option<usize>,
    rng: &mut fastrand::Rng,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let pool = n.saturating_sub(usize::from(exclude.is_some_and(|x| x < n)));
    if pool == 0 {
        return None;
    }
    // Drawing from `0..pool` and stepping over `exclude` makes the second candidate
    // distinct by construction instead of by redrawing.
    let skip = |r: usize| match exclude {
        Some(x) if r >= x => r + 1,
        _ => r,
    };
    for _ in 0..SAMPLE_TRIES {
        let i = skip(rng.usize(0..pool));
        if eligible(i) {
            return Some(i);
        }
    }
    let allowed = |i: &usize| Some(*i) != exclude && eligible(*i);
    let count = (0..n).filter(allowed).count();
    if count == 0 {
        return None;
    }
    (0..n).filter(allowed).nth(rng.usize(0..count))
}

/// Keeps the cheaper of `a` and `b` (`order` compares cost(a) with cost(b)).
///
/// Ties are common (all idle, or two endpoints never yet answered), and a fixed
/// tie-break would pin traffic to one of them. Breaking ties by a coin weighted by
/// endpoint weight makes weights count even at low load, where every cost is equal.
pub(super) fn choose(a: (usize, u32), b: (usize, u32), order: Ordering, rng: &mut fastrand::Rng) -> usize {
    match order {
        Ordering::Less => a.0,
        Ordering::Greater => b.0,
        Ordering::Equal => {
            let (wa, wb) = (u64::from(a.1), u64::from(b.1));
            if rng.u64(0..(wa + wb).max(1)) < wa {
                a.0
            } else {
                b.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    proptest! {
        #[test]
        fn candidates_are_distinct_and_eligible(
            mask in proptest::collection::vec(any::<bool>(), 1..40),
            seed in any::<u64>(),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let eligible = |i: usize| mask[i];
            let count = mask.iter().filter(|e| **e).count();
            match candidates(mask.len(), &mut rng, &eligible) {
                Candidates::None => prop_assert_eq!(count, 0),
                Candidates::One(a) => {
                    prop_assert_eq!(count, 1);
                    prop_assert!(mask[a]);
                }
                Candidates::Two(a, b) => {
                    prop_assert!(count >= 2);
                    prop_assert_ne!(a, b);
                    prop_assert!(mask[a] && mask[b]);
                }
            }
        }
    }

    #[test]
    fn draw_stays_uniform_across_the_scan_fallback() {
        // 3 eligible of 30: most picks go through the scan, some through sampling.
        let eligible = |i: usize| i.is_multiple_of(10);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut hits = [0u32; 30];
        for _ in 0..30_000 {
            if let Some(i) = uniform_eligible(30, None, &mut rng, &eligible) {
                hits[i] += 1;
            }
        }
        for i in [0, 10, 20] {
            assert!((9_500..10_500).contains(&hits[i]), "{i}: {}", hits[i]);
        }
        assert_eq!(hits.iter().sum::<u32>(), 30_000);
    }

    #[test]
    fn all_eligible_costs_constant_filter_calls() {
        let calls = Cell::new(0u32);
        let eligible = |_: usize| {
            calls.set(calls.get() + 1);
            true
        };
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let _ = candidates(10_000, &mut rng, &eligible);
        }
        assert_eq!(calls.get(), 200);
    }

    #[test]
    fn exclude_out_of_range_is_harmless() {
        let mut rng = fastrand::Rng::with_seed(3);
        let got = uniform_eligible(2, Some(5), &mut rng, &|_| true);
        assert!(matches!(got, Some(0 | 1)));
        assert_eq!(uniform_eligible(1, Some(0), &mut rng, &|_| true), None);
    }

    #[test]
    fn ties_split_by_weight() {
        let mut rng = fastrand::Rng::with_seed(11);
        let a_wins = (0..10_000)
            .filter(|_| choose((0, 1), (1, 3), Ordering::Equal, &mut rng) == 0)
            .count();
        assert!((2_300..2_700).contains(&a_wins), "{a_wins}");
        assert_eq!(choose((0, 1), (1, 3), Ordering::Less, &mut rng), 0);
        assert_eq!(choose((0, 1), (1, 3), Ordering::Greater, &mut rng), 1);
    }
}
