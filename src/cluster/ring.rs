//! Consistent hash ring (ketama style) for `ring_hash`.
//!
//! Each endpoint owns `VNODES_PER_WEIGHT × weight` points on a 64-bit circle; a
//! request hash belongs to the first point at or after it, clockwise, found by binary
//! search: O(log points). Point positions depend only on the endpoint's stable key, so
//! adding or removing one of N endpoints moves only the ~1/N of keys that land on its
//! points, and a config swap that keeps an endpoint keeps its keys.
//!
//! An ineligible owner is skipped by walking clockwise to the next eligible endpoint,
//! which is exactly where the key would go if that endpoint were removed: ejecting an
//! endpoint and deleting it remap the same keys, and nothing else moves.
//!
//! Memory: 12 bytes per point (hash and owner in separate arrays, which also keeps
//! the binary search on densely packed hashes), capped at `MAX_POINTS` per ring.

use super::hash::{fmix64, hash_bytes};

/// Points per unit of weight. Arc sizes vary like a sum of exponentials, so an
/// endpoint's share has a relative spread of about `1/sqrt(points)`: 100 points
/// gives ~10%, the usual ketama trade-off between balance and ring size.
pub(super) const VNODES_PER_WEIGHT: u64 = 100;

/// Upper bound on points per ring (each worker holds its own copy of every ring).
/// Above it, point counts are scaled down in proportion to weight, every endpoint
/// keeping at least one point; such a rescale happens only when the total weight
/// crosses the cap, and then more than 1/N of keys can move on that swap.
pub(super) const MAX_POINTS: u64 = 65_536;

/// Steps walked clockwise before checking, by a scan over the endpoints, that any
/// endpoint is eligible at all; without that check an all-ineligible cluster would
/// walk the whole ring on every request.
const WALK_BEFORE_SCAN: usize = 64;

#[derive(Clone, Debug, Default)]
pub(super) struct Ring {
    /// Point positions, sorted ascending.
    hashes: Vec<u64>,
    /// `owners[j]` is the endpoint index owning `hashes[j]`.
    owners: Vec<u32>,
}

impl Ring {
    /// Builds the ring for `(key, weight)` pairs given in endpoint index order.
    pub(super) fn new(endpoints: &[(u64, u32)]) -> Self {
        let total_weight: u64 = endpoints.iter().map(|&(_, w)| u64::from(w)).sum();
        let scaled = total_weight.saturating_mul(VNODES_PER_WEIGHT) > MAX_POINTS;
        let mut points: Vec<(u64, u64, u32)> = Vec::new();
        for (idx, &(key, weight)) in endpoints.iter().enumerate() {
            // Indices past u32 cannot occur in a real cluster; skip rather than wrap.
            let Ok(owner) = u32::try_from(idx) else { break };
            let w = u64::from(weight);
            let count = if scaled {
                (w * MAX_POINTS / total_weight.max(1)).max(1)
            } else {
                w * VNODES_PER_WEIGHT
            };
            for vnode in 0..count {
                points.push((point_hash(key, vnode), key, owner));
            }
        }
        // Ties on position are broken by key, not index, so a point's owner does not
        // depend on where the endpoint sits in the config list.
        points.sort_unstable();
        Self {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.2).collect(),
        }
    }

    /// The endpoint owning `hash`, walking clockwise past ineligible owners.
    ///
    /// `n` is the endpoint count, used only for the all-ineligible check.
    pub(super) fn pick(&self, hash: u64, n: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        // Callers may pass raw small or sequential numbers; re-mixing (a bijection)
        // spreads them over the circle instead of crowding the first arc.
        let h = fmix64(hash);
        let start = self.hashes.partition_point(|&p| p < h) % len;
        for step in 0..len {
            if step == WALK_BEFORE_SCAN && !(0..n).any(eligible) {
                return None;
            }
            let owner = self.owners.get((start + step) % len).map(|&o| o as usize)?;
            if eligible(owner) {
                return Some(owner);
            }
        }
        None
    }
}

/// Position of virtual node `vnode` of the endpoint with identity `key`.
fn point_hash(key: u64, vnode: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&key.to_le_bytes());
    bytes[8..].copy_from_slice(&vnode.to_le_bytes());
    hash_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: u64 = 10_000;

    fn ring(keys: &[u64]) -> Ring {
        Ring::new(&keys.iter().map(|&k| (k, 1)).collect::<Vec<_>>())
    }

    /// Owner *key* (not index) for each request hash, so rings built from different
    /// endpoint lists can be compared.
    fn owners(keys: &[u64], eligible: &dyn Fn(usize) -> bool) -> Vec<Option<u64>> {
        let r = ring(keys);
        (0..KEYS)
            .map(|h| r.pick(h, keys.len(), eligible).map(|i| keys[i]))
            .collect()
    }

    #[test]
    fn same_hash_same_endpoint() {
        let keys: Vec<u64> = (100..110).collect();
        assert_eq!(owners(&keys, &|_| true), owners(&keys, &|_| true));
    }

    #[test]
    fn owner_does_not_depend_on_list_order() {
        let keys: Vec<u64> = (100..110).collect();
        let mut reversed = keys.clone();
        reversed.reverse();
        assert_eq!(owners(&keys, &|_| true), owners(&reversed, &|_| true));
    }

    #[test]
    fn removal_remaps_only_the_removed_endpoints_keys() {
        let keys: Vec<u64> = (100..110).collect();
        let before = owners(&keys, &|_| true);
        let without: Vec<u64> = keys.iter().copied().filter(|&k| k != 104).collect();
        let after = owners(&without, &|_| true);
        for (b, a) in before.iter().zip(&after) {
            if *b != Some(104) {
                assert_eq!(a, b);
            }
        }
        assert!(before.contains(&Some(104)));
        // Ejecting it (ineligible) sends its keys exactly where removal does.
        assert_eq!(owners(&keys, &|i| keys[i] != 104), after);
    }

    #[test]
    fn adding_one_of_n_moves_about_one_in_n_plus_one() {
        let n = 10u64;
        let keys: Vec<u64> = (0..n).map(|i| i * 7919).collect();
        let before = owners(&keys, &|_| true);
        let mut grown = keys.clone();
        grown.push(424_242);
        let after = owners(&grown, &|_| true);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        // Every moved key moved to the new endpoint, never between old ones.
        assert!(before.iter().zip(&after).all(|(b, a)| b == a || *a == Some(424_242)));
        let expected = KEYS as f64 / (n + 1) as f64;
        let ratio = moved as f64 / expected;
        assert!((0.7..1.3).contains(&ratio), "moved {moved}, expected ~{expected}");
    }

    #[test]
    fn points_follow_weight_and_respect_the_cap() {
        assert_eq!(Ring::new(&[(1, 1), (2, 3)]).hashes.len(), 400);
        let big: Vec<(u64, u32)> = (0..2_000).map(|k| (k, 1_000)).collect();
        let r = Ring::new(&big);
        assert!(r.hashes.len() as u64 <= MAX_POINTS + 2_000, "{}", r.hashes.len());
        // Extreme weight ratio: the light endpoint keeps a point and stays reachable.
        let skewed = Ring::new(&[(1, u32::MAX), (2, 1)]);
        assert!(skewed.owners.contains(&1));
    }

    #[test]
    fn all_ineligible_or_empty_is_none() {
        let keys: Vec<u64> = (0..50).collect();
        let r = ring(&keys);
        assert_eq!(r.pick(123, keys.len(), &|_| false), None);
        assert_eq!(Ring::default().pick(123, 0, &|_| true), None);
        // Only one eligible endpoint, far around the ring: still found.
        assert!((0..1_000).all(|h| r.pick(h, keys.len(), &|i| i == 49) == Some(49)));
    }
}
