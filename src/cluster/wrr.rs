//! Round robin, plain and smooth-weighted (nginx's `ngx_http_upstream_get_peer`).
//!
//! Plain round robin keeps a cursor and hands out the next eligible endpoint after it,
//! ignoring weights. Smooth WRR gives every eligible endpoint `current += weight`,
//! picks the largest `current` and takes the eligible total back off the winner. Over
//! any run of `sum(weights)` picks each endpoint gets exactly its weight, and heavy
//! endpoints are interleaved with light ones rather than sent in bursts (5,1,1 gives
//! a a b a c a a, not a a a a a b c).
//!
//! Ineligible endpoints are skipped entirely: their `current` is frozen, as nginx does
//! for down or failed peers, so they rejoin where they left off.
//!
//! Cost: smooth WRR must look at every endpoint to find the maximum, so its pick is
//! O(n) even when all are eligible, like nginx's; clusters are small (tens of
//! endpoints) and the loop is a few adds per endpoint. Round robin is O(1) while the
//! endpoint after the cursor is eligible and walks past ineligible ones otherwise.

use super::Endpoint;

/// Next eligible index at or after `*cursor`, moving the cursor past it.
///
/// A cursor of `None` is placed at random on first use: every worker builds its
/// balancers at the same moment, and without this they would all send their first
/// requests to endpoint 0 together.
pub(super) fn round_robin(
    cursor: &mut Option<usize>,
    n: usize,
    rng: &mut fastrand::Rng,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = match *cursor {
        Some(c) => c % n,
        None => rng.usize(0..n),
    };
    for step in 0..n {
        let i = (start + step) % n;
        if eligible(i) {
            *cursor = Some((i + 1) % n);
            return Some(i);
        }
    }
    *cursor = Some(start);
    None
}

/// nginx's smooth weighted round robin over the eligible endpoints.
pub(super) fn smooth(endpoints: &mut [Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<(usize, i64)> = None;
    for (i, ep) in endpoints.iter_mut().enumerate() {
        if !eligible(i) {
            continue;
        }
        let w = i64::from(ep.weight);
        // Saturating: currents stay within a few totals of zero in practice, but a
        // long-frozen endpoint carried across swaps must never be able to overflow.
        ep.wrr_current = ep.wrr_current.saturating_add(w);
        total = total.saturating_add(w);
        // Strictly greater: on a tie the first endpoint wins, as in nginx, which is
        // what makes the sequence reproducible.
        if best.is_none_or(|(_, cur)| ep.wrr_current > cur) {
            best = Some((i, ep.wrr_current));
        }
    }
    let (chosen, _) = best?;
    let ep = endpoints.get_mut(chosen)?;
    ep.wrr_current = ep.wrr_current.saturating_sub(total);
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::EndpointSpec;
    use std::time::Instant;

    fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        let now = Instant::now();
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Endpoint::fresh(EndpointSpec { key: i as u64, weight }, now))
            .collect()
    }

    fn letters(seq: &[usize]) -> String {
        seq.iter().map(|&i| (b'a' + i as u8) as char).collect()
    }

    #[test]
    fn smooth_sequence_matches_nginx() {
        let mut eps = endpoints(&[5, 1, 1]);
        let seq: Vec<usize> = (0..14).filter_map(|_| smooth(&mut eps, &|_| true)).collect();
        assert_eq!(letters(&seq), "aabacaaaabacaa");
        // A full cycle returns every current to zero: the schedule repeats exactly.
        assert!(eps.iter().all(|e| e.wrr_current == 0));
    }

    #[test]
    fn smooth_skips_ineligible_and_freezes_them() {
        let mut eps = endpoints(&[5, 1, 1]);
        let _ = smooth(&mut eps, &|_| true); // a: 5-7 = -2, b: 1, c: 1
        let seq: Vec<usize> = (0..4).filter_map(|_| smooth(&mut eps, &|i| i != 1)).collect();
        assert_eq!(letters(&seq), "acaa");
        assert_eq!(eps[1].wrr_current, 1, "b untouched while ineligible");
        assert_eq!(smooth(&mut eps, &|_| false), None);
    }

    #[test]
    fn smooth_gives_exact_shares_per_cycle() {
        let mut eps = endpoints(&[1, 3]);
        let mut hits = [0u32; 2];
        for _ in 0..10_000 {
            if let Some(i) = smooth(&mut eps, &|_| true) {
                hits[i] += 1;
            }
        }
        assert_eq!(hits, [2_500, 7_500]);
    }

    #[test]
    fn round_robin_cycles_eligible_fairly() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut cursor = Some(0);
        let eligible = |i: usize| i != 1 && i != 2;
        let seq: Vec<usize> = (0..6)
            .filter_map(|_| round_robin(&mut cursor, 5, &mut rng, &eligible))
            .collect();
        assert_eq!(seq, [0, 3, 4, 0, 3, 4]);
        assert_eq!(round_robin(&mut cursor, 5, &mut rng, &|_| false), None);
        assert_eq!(round_robin(&mut cursor, 0, &mut rng, &|_| true), None);
    }

    #[test]
    fn round_robin_starts_at_a_random_place() {
        let starts: std::collections::HashSet<usize> = (0..64)
            .filter_map(|seed| {
                let mut rng = fastrand::Rng::with_seed(seed);
                round_robin(&mut None, 8, &mut rng, &|_| true)
            })
            .collect();
        assert!(starts.len() > 4, "{starts:?}");
    }

    #[test]
    fn stale_cursor_beyond_len_wraps() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut cursor = Some(17);
        assert_eq!(round_robin(&mut cursor, 4, &mut rng, &|_| true), Some(1));
    }
}
